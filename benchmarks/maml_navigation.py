"""Speed and memory of one MAML-TRPO meta-iteration at the paper's 2D-navigation settings.

Prints JSON: median seconds per meta-iteration (and its sampling/update split), env steps per
second, peak resident memory, and the *floor*: the time to just step the batched env and run the
policy forward for the same number of steps (the pre- and post-adaptation rollouts).

    python benchmarks/maml_navigation.py [--iterations 10] [--set algo.curvature_episodes=0]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

# isort: off
import adaptrl  # noqa: F401  (first: its thread-waiting default must precede torch's loading)
import torch

# isort: on
from adaptrl.algos.base import TrainContext
from adaptrl.build import build, build_run_config
from adaptrl.config import apply_overrides, load_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--per-iteration", action="store_true", help="also list every timed iteration's seconds"
    )
    parser.add_argument("--preset", default="maml-navigation2d", help="a 2D-navigation MAML preset")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = build_run_config(apply_overrides(load_preset(args.preset), args.overrides))
    built = build(config)
    family, algo = built.family, built.learner
    gen = torch.Generator().manual_seed(0)
    c = algo.config

    iteration_s, sample_s, update_s, steps = [], [], [], 0
    for i in range(args.warmup + args.iterations):
        m = algo.train_iteration(TrainContext(i, 0, gen))
        if i >= args.warmup:
            iteration_s.append(m["perf/iteration_s"])
            sample_s.append(m["perf/sample_s"])
            update_s.append(m["perf/update_s"])

    # Floor: the same rollouts (shared-θ pre-adaptation, per-task θ' post-adaptation), nothing else.
    params = {k: v.detach() for k, v in algo.policy.params().items()}
    per_task = {
        k: v.unsqueeze(0).repeat(c.meta_batch_size, *[1] * v.dim()) for k, v in params.items()
    }
    cuda = torch.device(config.train.device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)  # GPU work is asynchronous
    floor = []
    for i in range(args.warmup + args.iterations):
        tasks = family.tasks.sample(c.meta_batch_size, "train", gen)
        sync()
        start = time.perf_counter()
        steps = 0
        for k in range(c.num_inner_steps + 1):
            traj = algo._sample(
                tasks, params if k == 0 else per_task, k > 0, c.episodes_per_task, seed=i * 10 + k
            )
            steps += traj.rewards.numel()
        sync()
        if i >= args.warmup:
            floor.append(time.perf_counter() - start)

    median = statistics.median(iteration_s)
    floor_s = statistics.median(floor)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "benchmark": "maml_navigation2d",
                "settings": {
                    "meta_batch_size": c.meta_batch_size,
                    "episodes_per_task": c.episodes_per_task,
                    "horizon": family.config.horizon,
                    "curvature_episodes": c.curvature_episodes,
                    "fisher_product": c.fisher_product,
                    "hidden_sizes": list(c.hidden_sizes),
                    "activation": c.activation,
                    "first_order": c.first_order,
                    "torch_threads": torch.get_num_threads(),
                    "device": config.train.device,
                },
                "seconds_per_iteration_median": round(median, 4),
                "sample_seconds_median": round(statistics.median(sample_s), 4),
                "update_seconds_median": round(statistics.median(update_s), 4),
                "floor_seconds_median": round(floor_s, 4),
                "iteration_over_floor": round(median / floor_s, 2),
                "env_steps_per_iteration": steps,
                "env_steps_per_s_floor": round(steps / floor_s),
                "env_steps_per_s_training": round(steps / median),
                "peak_rss_mb": round(peak_mb, 1),
                **(
                    {"peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                    if cuda
                    else {}
                ),
                **(
                    {"seconds_per_iteration": [round(t, 4) for t in iteration_s]}
                    if args.per_iteration
                    else {}
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
