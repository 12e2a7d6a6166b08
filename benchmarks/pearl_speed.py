"""PEARL's two speeds, each alone: gradient steps per second (the soft actor-critic and encoder
update on meta_batch_size tasks x batch_size transitions) and env steps per second of its
collection (the actor with a z per row, through the sampler), at a preset's settings.

Prints JSON. ``--device cuda`` times the updates and the collection on a GPU. ``--profile N``
also prints (to stderr) where N more gradient steps spend their time, op by op.

    python benchmarks/pearl_speed.py [--preset pearl-point-robot-sparse] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import time

# isort: off
import adaptrl  # noqa: F401  (first: its thread-waiting default must precede torch's loading)
import torch
# isort: on

from adaptrl.build import build, build_run_config
from adaptrl.config import apply_overrides, load_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="pearl-point-robot-sparse")
    parser.add_argument("--steps", type=int, default=50, help="gradient steps timed")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", type=int, default=0, help="gradient steps to profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = [*args.overrides, f"train.device={args.device}"]
    config = build_run_config(apply_overrides(load_preset(args.preset), overrides))
    with build(config) as built:
        algo = built.learner
        gen = torch.Generator().manual_seed(0)
        c = algo.config
        algo.train_tasks = algo.family.tasks.sample(c.num_train_tasks, "train", gen)
        ids = list(range(c.num_train_tasks))
        episodes = algo._episodes(c.initial_steps)
        collect = []
        for r in range(args.repeats):
            before, start = algo.sampler.env_steps, time.perf_counter()
            z = algo._prior_draws(c.num_train_tasks, episodes, gen)
            traj = algo._collect(algo.train_tasks, z, r)
            collect.append((algo.sampler.env_steps - before) / (time.perf_counter() - start))
            algo._store(ids, traj, encoder=True)
        updates = []
        algo._gradient_step(gen)  # warm-up
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                algo._gradient_step(gen)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            updates.append(args.steps / (time.perf_counter() - start))
        if args.profile:
            profile(algo, gen, args.profile, args.device)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "meta_batch_size": c.meta_batch_size,
                "batch_size": c.batch_size,
                "hidden_size": c.hidden_size,
                "gradient_steps_per_s": [round(x, 1) for x in updates],
                "env_steps_per_s": [round(x) for x in collect],
                "seconds_per_iteration_estimate": round(
                    c.gradient_steps / max(updates)
                    + c.tasks_per_iteration
                    * (c.prior_steps + c.posterior_steps + c.extra_rl_steps)
                    / max(collect),
                    1,
                ),
            }
        )
    )


def profile(algo, gen, steps: int, device: str) -> None:
    """torch.profiler over ``steps`` gradient steps: the ops that take the time (stderr)."""
    import sys

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            algo._gradient_step(gen)
        if cuda:
            torch.cuda.synchronize()
    for key in ("self_cpu_time_total",) + (("self_cuda_time_total",) if cuda else ()):
        print(prof.key_averages().table(sort_by=key, row_limit=14), file=sys.stderr)


if __name__ == "__main__":
    main()
