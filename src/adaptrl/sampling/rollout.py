"""The one rollout loop, shared by every back-end: in-process, worker processes and Ray actors.

Each of the B rows runs ``episodes_per_trial`` consecutive episodes of its task; the agent's state
carries across them (RL²'s memory) and a row is reset in place when one of its episodes ends.
The only Python loop is over time steps; buffers are pre-allocated.
"""

from __future__ import annotations

import torch

from adaptrl.envs.base import BatchedMetaEnv, Tasks
from adaptrl.sampling.trajectories import Trajectories


@torch.no_grad()
def rollout(
    env: BatchedMetaEnv,
    agent,
    tasks: Tasks,
    keys: torch.Tensor,
    num_tasks: int,
    episodes_per_trial: int = 1,
    max_steps: int | None = None,
) -> Trajectories:
    """Run every row of ``env`` (``tasks`` and ``keys``: one entry per row) to the end of its
    trial, or for ``max_steps`` steps. Rows whose trial ended are masked, not stepped apart."""
    E = episodes_per_trial
    T = max_steps or E * env.horizon
    obs, _ = env.reset(tasks=tasks, keys=keys)
    B, dev = env.num_envs, env.device
    state = agent.start(keys, T)
    buf: dict[str, torch.Tensor] = {}
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    episode = torch.zeros(B, dtype=torch.long, device=dev)
    length = T
    for t in range(T):
        actions, log_probs, state = agent.act(obs, state)
        next_obs, rewards, term, trunc, _ = env.step(actions)
        if not buf:
            shapes = {"obs": obs, "actions": actions, "next_obs": next_obs}
            buf = {
                k: torch.zeros(T, *v.shape, dtype=v.dtype, device=dev) for k, v in shapes.items()
            }
            for k in ("log_probs", "rewards", "mask"):
                buf[k] = torch.zeros(T, B, device=dev)
            for k in ("terminated", "truncated"):
                buf[k] = torch.zeros(T, B, dtype=torch.bool, device=dev)
        buf["obs"][t] = obs
        buf["actions"][t] = actions
        buf["log_probs"][t] = log_probs
        buf["next_obs"][t] = next_obs
        buf["mask"][t] = alive
        buf["rewards"][t] = torch.where(alive, rewards, 0.0)
        buf["terminated"][t] = term & alive
        buf["truncated"][t] = trunc & alive
        ended = (term | trunc) & alive
        state = agent.observe(state, actions, rewards, ended, next_obs)
        obs = next_obs
        if E > 1:
            episode += ended.long()
            finished = ended & (episode >= E)
            restart = ended & ~finished
            if bool(restart.any()):
                fresh, _ = env.reset(mask=restart)
                obs = torch.where(restart.view(B, *[1] * (obs.dim() - 1)), fresh, next_obs)
            alive &= ~finished
        else:
            alive &= ~ended
        if dev.type == "cpu" and not alive.any():  # a free check on CPU; skipped on GPU (sync)
            length = t + 1
            break
    buf["truncated"][length - 1] |= alive  # cut by max_steps before the env's own end
    return Trajectories(
        **{k: v[:length] for k, v in buf.items()},
        num_tasks=num_tasks,
        episodes_per_trial=E,
        budget=T,
    )
