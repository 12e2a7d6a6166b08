"""Env steps per second of the xland family, beside the library's own vmapped stepping measured in
the same run: (a) xminigrid alone (jit of vmap of the auto-resetting env, the way its own
training scripts step it; and without resets, a bound no training loop reaches),
(b) our adapter (``XLandEnv.step`` + masked resets, torch tensors out
through DLPack, one-hot observations), (c) our in-process sampler (trajectories recorded) with a
uniformly random agent, so the figure is the family and sampler, not a network.

Prints JSON. Needs adaptrl[xland]. ``--device cuda``: the library, our adapter and the sampler on
the GPU (JAX's and torch's), arrays handed over by DLPack on the card.

    python benchmarks/xland_speed.py [--rows 4096 16384] [--steps 40] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

if "cuda" not in " ".join(sys.argv[1:]):  # on the CPU, JAX must not take a GPU either
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave the card to torch too

# isort: off
import adaptrl  # noqa: F401, E402
import jax  # noqa: E402
import torch  # noqa: E402
# isort: on

from adaptrl.envs import make_family  # noqa: E402
from adaptrl.sampling import InProcessSampler  # noqa: E402


class RandomAgent:
    """Uniform random actions: the sampler's cost without a network's."""

    def __init__(self, num_actions: int) -> None:
        self.num_actions = num_actions

    def start(self, keys, num_steps):
        gen = torch.Generator(keys.device).manual_seed(int(keys[0]))
        return {"gen": gen}

    def act(self, obs, state):
        n, dev = obs.shape[0], obs.device
        actions = torch.randint(self.num_actions, (n,), generator=state["gen"], device=dev)
        return actions, torch.zeros(n, device=dev), state

    def observe(self, state, actions, rewards, ended, next_obs):
        return state

    def shard(self, start, stop):
        return self


def library_steps_per_s(
    family, tasks, rows: int, steps: int, device: str, auto_reset: bool = True
) -> float:
    with jax.default_device(_jax_device(device)):
        return _library_steps_per_s(family, tasks, rows, steps, auto_reset)


def _jax_device(device: str):
    from adaptrl.envs.xland import jax_device_beside

    return jax_device_beside(jax, torch.device(device))


def _library_steps_per_s(family, tasks, rows: int, steps: int, auto_reset: bool) -> float:
    import xminigrid
    from xminigrid.types import RuleSet
    from xminigrid.wrappers import GymAutoResetWrapper

    jnp, cfg = jax.numpy, family.config
    env, params = xminigrid.make(f"XLand-MiniGrid-{cfg.grid}")
    env = GymAutoResetWrapper(env) if auto_reset else env  # without: episodes never restart
    ruleset = RuleSet(
        *(jnp.asarray(tasks[k].numpy(), jnp.uint8) for k in ("goal", "rules", "init_tiles"))
    )
    params = params.replace(max_steps=cfg.episode_steps, view_size=cfg.view_size, ruleset=ruleset)
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    ts = reset(params, jax.random.split(jax.random.key(0), rows))
    actions = jax.random.randint(jax.random.key(1), (steps, rows), 0, 6)
    ts = step(params, ts, actions[0])  # compile
    jax.block_until_ready(ts)
    start = time.perf_counter()
    for a in actions:
        ts = step(params, ts, a)
        jax.block_until_ready(ts.observation)
    return rows * steps / (time.perf_counter() - start)


def adapter_steps_per_s(family, tasks, rows: int, steps: int, device: str) -> float:
    env = family.make_env(rows, device)
    env.reset(tasks=tasks, seed=0)
    actions = torch.randint(6, (steps + 1, rows), generator=torch.Generator().manual_seed(1))
    actions = actions.to(device)
    env.step(actions[0])  # compile
    ended = torch.zeros(rows, dtype=torch.bool, device=device)
    env.reset(mask=~ended)  # compile the masked reset
    start = time.perf_counter()
    for a in actions[1:]:
        _, _, terminated, truncated, _ = env.step(a)
        ended = terminated | truncated
        if ended.any():
            env.reset(mask=ended)
    _sync(device)
    return rows * steps / (time.perf_counter() - start)


def sampler_steps_per_s(family, tasks, rows: int, device: str) -> float:
    sampler = InProcessSampler(family, device)
    agent = RandomAgent(6)
    sampler.sample(agent, tasks, 0, 1)  # warm-up: compile
    start = time.perf_counter()
    traj = sampler.sample(agent, tasks, 1, 1)
    _sync(device)
    return traj.num_steps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    """Device work is asynchronous: wait for it before reading the clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    family = make_family("xland", horizon=args.horizon)
    out = {
        "device": args.device,
        "jax_device": str(_jax_device(args.device)),
        "cpu_threads": torch.get_num_threads(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "rows": {},
    }
    for rows in args.rows:
        tasks = family.tasks.sample(rows, "train", torch.Generator().manual_seed(0))
        row = {
            name: round(
                statistics.median(fn(family, tasks, rows, *more) for _ in range(args.repeats))
            )
            for name, fn, more in (
                ("library", library_steps_per_s, (args.steps, args.device)),
                ("library_no_reset", library_steps_per_s, (args.steps, args.device, False)),
                ("adapter", adapter_steps_per_s, (args.steps, args.device)),
                ("sampler", sampler_steps_per_s, (args.device,)),
            )
        }
        row["adapter_over_library"] = round(row["adapter"] / row["library"], 3)
        row["sampler_over_library"] = round(row["sampler"] / row["library"], 3)
        row["adapter_over_library_no_reset"] = round(row["adapter"] / row["library_no_reset"], 3)
        out["rows"][str(rows)] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
