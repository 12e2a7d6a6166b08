"""Env steps per second of every sampler back-end and worker count, beside the raw speed of one
gymnasium env measured in the same run; and MAML-TRPO seconds per iteration at the paper's
HalfCheetah-Vel settings, split into sampling and update.

Prints JSON. Needs adaptrl[mujoco] (and adaptrl[ray] for the Ray rows; skipped without it).

    python benchmarks/sampling.py [--workers 1 2] [--rows 32] [--repeats 3] [--maml-iterations 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("RAY_DEDUP_LOGS", "0")

# isort: off
import adaptrl  # noqa: F401, E402  (first: its thread-waiting default must precede torch's loading)
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
# isort: on

from adaptrl.envs import make_family  # noqa: E402
from adaptrl.policies import GaussianMLPPolicy  # noqa: E402
from adaptrl.sampling import PolicyAgent, make_sampler  # noqa: E402


def raw_gymnasium_steps_per_s(steps: int) -> float:
    """One HalfCheetah-v5, random actions, this process (resets included when episodes end)."""
    env = gym.make("HalfCheetah-v5", max_episode_steps=200, disable_env_checker=True)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 6)).astype(np.float32)
    start = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def sampler_steps_per_s(family, backend, workers, num_tasks, episodes, repeats) -> dict:
    obs_space, act_space = family.spaces()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_space.shape[0], act_space.shape[0], (100, 100))
    agent = PolicyAgent(policy, policy.params(), False, num_tasks)
    tasks = family.tasks.sample(num_tasks, "train", torch.Generator().manual_seed(0))
    start = time.perf_counter()
    sampler = make_sampler(family, backend, workers)
    startup = time.perf_counter() - start
    try:
        sampler.sample(agent, tasks, 0, episodes)  # warm-up: envs built, workers imported
        rates = []
        for r in range(repeats):
            start = time.perf_counter()
            traj = sampler.sample(agent, tasks, r + 1, episodes)
            rates.append(traj.num_steps / (time.perf_counter() - start))
    finally:
        sampler.close()
    return {
        "backend": backend,
        "workers": workers,
        "env_steps_per_s": round(statistics.median(rates)),
        "startup_s": round(startup, 2),
    }


def maml_iteration(iterations: int, workers: int) -> dict:
    from adaptrl.algos.base import TrainContext
    from adaptrl.build import build, build_run_config
    from adaptrl.config import apply_overrides, load_preset

    data = apply_overrides(load_preset("maml-halfcheetah-vel"), [f"sampler.workers={workers}"])
    config = build_run_config(data)
    gen = torch.Generator().manual_seed(0)
    rows = []
    with build(config) as built:
        for i in range(iterations):
            m = built.learner.train_iteration(TrainContext(i, 0, gen))
            rows.append(m)
    pick = rows[1:] or rows  # the first iteration includes worker start-up
    return {
        "settings": "40 tasks x 20 episodes x 200 steps, pre + post adaptation, 2x100 ReLU",
        "workers": workers,
        "iterations_timed": len(pick),
        "seconds_per_iteration": round(statistics.median(m["perf/iteration_s"] for m in pick), 2),
        "sample_seconds": round(statistics.median(m["perf/sample_s"] for m in pick), 2),
        "update_seconds": round(statistics.median(m["perf/update_s"] for m in pick), 2),
        "env_steps_per_s": round(statistics.median(m["perf/env_steps_per_s"] for m in pick)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", type=int, default=20, help="HalfCheetah tasks per batch")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raw-steps", type=int, default=20000)
    parser.add_argument("--maml-iterations", type=int, default=2, help="0 skips MAML")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the parent only waits while workers sample
    out: dict = {"benchmark": "sampling", "cpu_cores": os.cpu_count()}
    raw = raw_gymnasium_steps_per_s(args.raw_steps)
    out["raw_gymnasium_halfcheetah_steps_per_s"] = round(raw)

    cheetah = make_family("halfcheetah_vel")
    rows = [sampler_steps_per_s(cheetah, "inprocess", 1, args.tasks, args.episodes, args.repeats)]
    backends = ["processes"]
    try:
        import ray  # noqa: F401

        backends.append("ray")
    except ImportError:
        out["ray"] = "not installed (pip install 'adaptrl[ray]')"
    for backend in backends:
        for w in args.workers:
            rows.append(
                sampler_steps_per_s(cheetah, backend, w, args.tasks, args.episodes, args.repeats)
            )
    for row in rows:
        row["fraction_of_raw_x_workers"] = round(row["env_steps_per_s"] / (raw * row["workers"]), 3)
    out["halfcheetah_vel"] = rows
    by = {(r["backend"], r["workers"]): r["env_steps_per_s"] for r in rows}
    if ("processes", 1) in by and ("processes", 2) in by:
        out["processes_2_over_1"] = round(by[("processes", 2)] / by[("processes", 1)], 2)
    for w in args.workers:
        if ("ray", w) in by and ("processes", w) in by:
            out[f"ray_over_processes_{w}"] = round(by[("ray", w)] / by[("processes", w)], 3)

    nav = make_family("navigation2d")
    out["navigation2d"] = [sampler_steps_per_s(nav, "inprocess", 1, 20, 20, args.repeats)] + [
        sampler_steps_per_s(nav, "processes", w, 20, 20, args.repeats) for w in args.workers
    ]
    if args.maml_iterations:
        out["maml_halfcheetah_vel"] = maml_iteration(args.maml_iterations, max(args.workers))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
