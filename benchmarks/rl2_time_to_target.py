"""Wall time for RL² to reach a target total reward per trial on held-out tasks, and env steps
per second (sampling alone and during training). Prints JSON. The target counts as reached
when two evaluations on independent draws of held-out tasks both reach it (a strict rule: two
draws of 2000 bandit tasks differ in difficulty by up to a point of the best arm's mean).
``--final-trials N`` also scores the policy left when training stops, once, on N held-out
trials: the estimate of what the time budget buys, free of picking one crossing from many.

    python benchmarks/rl2_time_to_target.py --preset rl2-bandit-k5-n10 --target 6.5
    python benchmarks/rl2_time_to_target.py --preset rl2-bandit-k5-n100 --target 77.5
    python benchmarks/rl2_time_to_target.py --preset rl2-mdp-n10 --target 150
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch

from adaptrl.algos.base import TrainContext
from adaptrl.build import build, build_run_config
from adaptrl.config import apply_overrides, load_preset
from adaptrl.protocol import meta_test
from adaptrl.stats import mean_ci95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="rl2-bandit-k5-n10")
    parser.add_argument("--target", type=float, required=True, help="total reward per trial")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds of training")
    parser.add_argument("--eval-every", type=int, default=50, help="iterations between evals")
    parser.add_argument("--eval-trials", type=int, default=2000)
    parser.add_argument(
        "--final-trials",
        type=int,
        default=0,
        help="when training stops (time limit, or target reached), score the policy once on "
        "this many held-out trials (mean ± 95%% CI): one evaluation, so no crossing is picked "
        "from many noisy ones",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = build_run_config(apply_overrides(load_preset(args.preset), args.overrides))
    built = build(config)
    family, algo = built.family, built.learner
    gen = torch.Generator().manual_seed(config.train.seed)
    eval_cfg = replace(config.evaluate, num_tasks=args.eval_trials)

    # Sampling throughput alone (no learning): one batch of trials.
    # Its own task draw, so training below draws the same tasks as `adaptrl train`.
    probe = torch.Generator().manual_seed(config.train.seed + 1)
    tasks = family.tasks.sample(algo.config.meta_batch_size, "train", probe)
    start = time.perf_counter()
    trials = algo.sample_trials(tasks, seed=0)
    sampling_rate = float(trials.mask.sum()) / (time.perf_counter() - start)

    history, steps, train_s, reached = [], 0.0, 0.0, None
    iteration = 0
    while train_s < args.time_limit:  # as the trainer does (seeds, entropy decay)
        m = algo.train_iteration(TrainContext(iteration, config.train.seed, gen))
        train_s += m["perf/iteration_s"]
        steps += m["perf/env_steps_per_s"] * m["perf/sample_s"]
        iteration += 1
        if iteration % args.eval_every == 0:
            total = meta_test(algo, family, "test", eval_cfg)["total_return"].mean().item()
            history.append(
                {
                    "iteration": iteration,
                    "train_s": round(train_s, 1),
                    "test_total_return": round(total, 3),
                }
            )
            # One noisy evaluation crossing the target is not enough: confirm on a second,
            # independent draw of held-out tasks before counting the target as reached.
            if total >= args.target:
                confirm = meta_test(algo, family, "test", eval_cfg, seed_offset=1)
                history[-1]["confirm_total_return"] = round(
                    confirm["total_return"].mean().item(), 3
                )
                if history[-1]["confirm_total_return"] >= args.target:
                    reached = train_s
            print(json.dumps(history[-1]), file=sys.stderr, flush=True)  # progress
            if reached is not None:
                break
    final = {}
    if args.final_trials:
        totals = meta_test(algo, family, "test", replace(eval_cfg, num_tasks=args.final_trials))
        mean, half = mean_ci95(totals["total_return"])
        final = {
            "final_train_s": round(train_s, 1),
            "final_trials": args.final_trials,
            "final_total_return": round(float(mean), 3),
            "final_ci95": round(float(half), 3),
        }
    print(
        json.dumps(
            {
                "benchmark": "rl2_time_to_target",
                **final,
                "preset": args.preset,
                "target": args.target,
                "reached": reached is not None,
                "train_seconds_to_target": None if reached is None else round(reached, 1),
                "iterations": iteration,
                "env_steps": int(steps),
                "env_steps_per_s_sampling": round(sampling_rate),
                "env_steps_per_s_training": round(steps / max(train_s, 1e-9)),
                "torch_threads": torch.get_num_threads(),
                "history": history,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
