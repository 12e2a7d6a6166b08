"""Raw batched stepping speed of the tensor families (no policy): env steps per second.

Prints JSON, one entry per family and batch size: the median over repeats of
(batch x steps) / seconds, with actions drawn before the clock starts.

    python benchmarks/env_steps.py [--families drone_wind recommender] [--batch 1024 8192]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from adaptrl.envs import make_family


def steps_per_second(name: str, batch: int, steps: int, repeats: int) -> float:
    family = make_family(name)
    env = family.make_env(batch)
    tasks = family.tasks.sample(batch, "train", torch.Generator().manual_seed(0))
    space = env.single_action_space
    gen = torch.Generator().manual_seed(1)
    if hasattr(space, "n"):
        actions = torch.randint(0, int(space.n), (steps, batch), generator=gen)
    else:
        actions = 0.2 * torch.randn(steps, batch, *space.shape, generator=gen)
    rates = []
    for _ in range(repeats):
        env.reset(tasks=tasks, seed=0)
        start = time.perf_counter()
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(actions[t])
            ended = terminated | truncated
            if bool(ended.any()):
                env.reset(mask=ended)
        rates.append(batch * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["drone_wind", "recommender"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1024, 8192, 32768])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out = {"torch_threads": torch.get_num_threads(), "results": []}
    for name in args.families:
        for batch in args.batch:
            rate = steps_per_second(name, batch, args.steps, args.repeats)
            out["results"].append({"family": name, "batch": batch, "env_steps_per_s": round(rate)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
