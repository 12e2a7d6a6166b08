"""Conformance checker run over every registered task family (cf. gymnasium's env_checker).

Checks the batched contract (spaces, shapes, dtypes, bounds, termination flags), determinism,
that tasks matter, that a batch of B rows equals B runs of one row, split disjointness, and that
a single task exports as a gymnasium Env that passes gymnasium's own checker.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from adaptrl.envs.base import repeat_tasks
from adaptrl.envs.registry import Family, make_family
from adaptrl.rng import task_episode_keys


class EnvCheckError(AssertionError):
    """An environment breaks the batched meta-environment contract."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise EnvCheckError(message)


def random_actions(space: gym.Space, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """``n`` uniform actions from a single-env action space, as a tensor."""
    if isinstance(space, spaces.Discrete):
        return torch.randint(
            int(space.start), int(space.start + space.n), (n,), generator=generator, device=device
        )
    if isinstance(space, spaces.Box):
        low = torch.as_tensor(np.nan_to_num(space.low, neginf=-1.0), device=device)
        high = torch.as_tensor(np.nan_to_num(space.high, posinf=1.0), device=device)
        u = torch.rand(n, *space.shape, generator=generator, device=device)
        return (low + u * (high - low)).to(torch.float32)
    raise EnvCheckError(f"unsupported action space {space}")


def _episode(family: Family, tasks, seed: int, num_envs: int, steps: int, rows=None):
    """Rows ``rows`` (default: all) of a seeded batch, stepped with the same random actions."""
    env = family.make_env(num_envs)
    rows = torch.arange(num_envs) if rows is None else rows
    obs, _ = env.reset(tasks=tasks, keys=task_episode_keys(seed, rows, 1))
    out = {"obs": [obs], "rewards": [], "terminated": [], "truncated": []}
    env_done = torch.zeros(num_envs, dtype=torch.bool)
    act_gen = torch.Generator().manual_seed(seed + 1)
    actions = [
        random_actions(env.single_action_space, 1, act_gen, env.device) for _ in range(steps)
    ]
    for t in range(steps):
        a = actions[t].expand(num_envs, *actions[t].shape[1:]).contiguous()
        obs, r, term, trunc, info = env.step(a)
        if obs.dtype != torch.float32:
            raise EnvCheckError(
                f"{family.name}: step() returned {obs.dtype} observations, not "
                "float32 (learners would fail deep inside torch)"
            )
        r = torch.where(env_done, 0.0, r)  # rows are not stepped meaningfully after they end
        term, trunc = term & ~env_done, trunc & ~env_done
        env_done |= term | trunc
        for key, value in zip(("obs", "rewards", "terminated", "truncated"), (obs, r, term, trunc)):
            out[key].append(value)
        for key, value in info.items():  # what the env reports of a step (e.g. a distance)
            if isinstance(value, torch.Tensor) and value.shape[:1] == (num_envs,):
                out.setdefault(f"info/{key}", []).append(value)
    env.close()
    return env, {k: torch.stack(v) for k, v in out.items()}


def check_family(name: str, num_envs: int = 4, steps: int | None = None, **config) -> None:
    """Raise ``EnvCheckError`` naming the first broken part of the contract."""
    family = make_family(name, **config)
    gen = torch.Generator().manual_seed(0)

    # Splits: disjoint by construction, and each sample says which split it came from.
    for split in ("train", "test"):
        tasks = family.tasks.sample(32, split, gen)
        for key, value in tasks.items():
            _require(value.shape[0] == 32, f"{name}: task '{key}' lacks the leading task dim")
        labels = family.tasks.split_of(tasks)
        _require(set(labels) == {split}, f"{name}: sample(split={split!r}) gave {set(labels)}")

    tasks = family.tasks.sample(num_envs, "train", gen)
    env = family.make_env(num_envs)
    _require(isinstance(env.single_observation_space, gym.Space), "observation space missing")
    _require(isinstance(env.single_action_space, gym.Space), "action space missing")
    horizon = env.horizon
    steps = steps or horizon
    obs, info = env.reset(tasks=tasks, seed=0)
    _require(isinstance(info, dict), f"{name}: reset must return (obs, info)")
    _require(
        tuple(obs.shape) == (num_envs, *env.single_observation_space.shape),
        f"{name}: reset obs shape {tuple(obs.shape)}",
    )
    _require(obs.dtype == torch.float32, f"{name}: observations must be float32, got {obs.dtype}")

    env, ep = _episode(family, tasks, 0, num_envs, steps)
    ob_space = env.single_observation_space
    for o in ep["obs"].reshape(-1, *ob_space.shape)[:: max(1, steps // 10)]:
        _require(
            ob_space.contains(o.numpy().astype(ob_space.dtype)),
            f"{name}: observation {o.tolist()} outside {ob_space}",
        )
    _require(ep["rewards"].shape == (steps, num_envs), f"{name}: rewards must be [num_envs]")
    _require(ep["rewards"].dtype == torch.float32, f"{name}: rewards must be float32")
    _require(bool(torch.isfinite(ep["rewards"]).all()), f"{name}: non-finite reward")
    for flag in ("terminated", "truncated"):
        _require(ep[flag].dtype == torch.bool, f"{name}: {flag} must be bool")
    _require(
        not bool((ep["terminated"] & ep["truncated"]).any()),
        f"{name}: a step is both terminated and truncated",
    )
    if steps >= horizon:
        ended = (ep["terminated"] | ep["truncated"])[:horizon].any(0)
        _require(bool(ended.all()), f"{name}: an episode did not end within horizon {horizon}")

    # Determinism: same seed and tasks -> identical rollout.
    _, again = _episode(family, tasks, 0, num_envs, steps)
    for key in ep:
        _require(torch.equal(ep[key], again[key]), f"{name}: same seed gave different {key}")

    # Tasks matter: the same actions under other tasks give other rewards (or, for sparse-reward
    # families where random actions rarely score, other observations or other step info, such
    # as the distance to a goal that only pays within a radius).
    other = family.tasks.sample(num_envs, "train", torch.Generator().manual_seed(99))
    _, ep_other = _episode(family, other, 0, num_envs, steps)
    _require(
        any(not torch.equal(ep[k], ep_other[k]) for k in ep if k in ep_other),
        f"{name}: neither rewards nor observations nor step info depend on the task",
    )

    # A batch of B rows equals B runs of a single row with the same row key: no cross-row
    # leakage, and noise drawn per row (stochastic families included), which is what lets
    # samplers split a batch across workers without changing any trajectory.
    for i in range(num_envs):
        one = {k: v[i : i + 1] for k, v in tasks.items()}
        _, single = _episode(family, one, 0, 1, steps, rows=torch.tensor([i]))
        for key in ("rewards", "terminated", "truncated"):
            _require(
                torch.allclose(single[key][:, 0].float(), ep[key][:, i].float(), atol=1e-5),
                f"{name}: row {i} of a batch differs from a batch of one ({key})",
            )

    # Rows per episode layout helper keeps tasks outermost.
    rep = repeat_tasks(tasks, 3)
    first = next(iter(rep.values()))
    _require(first.shape[0] == 3 * num_envs, "repeat_tasks must repeat each task")

    # Export of a single task as a plain gymnasium Env passes gymnasium's checker.
    from gymnasium.utils.env_checker import check_env

    single = family.make_single_task_env({k: v[:1] for k, v in tasks.items()})
    check_env(single, skip_render_check=True)
