"""Batched in-process rollouts: one episode per env row, the only Python loop is over time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from adaptrl.envs.base import BatchedMetaEnv
from adaptrl.policies import Params, expand_log_std, forward_params


@dataclass
class Trajectories:
    """Time-major batch of episodes, ``B = num_tasks x episodes_per_task`` (tasks outermost).

    obs: [T, B, obs_dim]; actions: [T, B, act_dim] (as sampled, before the env clips them);
    rewards, mask: [T, B] float32 (mask = 1 on real steps, 0 after the episode ended);
    terminated, truncated: [T, B] bool.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    num_tasks: int

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[1] // self.num_tasks

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum().item())

    def by_task(self, x: torch.Tensor) -> torch.Tensor:
        """[T, B, ...] -> [T, n, E, ...] (a view: tasks are outermost in B)."""
        return x.reshape(x.shape[0], self.num_tasks, self.episodes_per_task, *x.shape[2:])

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of every episode: [B]."""
        return self.rewards.sum(0)

    def task_returns(self) -> torch.Tensor:
        """Mean undiscounted episode return of each task: [n]."""
        return self.episode_returns().reshape(self.num_tasks, -1).mean(1)


class GaussianActor:
    """Samples actions from a Gaussian policy with shared or per-task parameters."""

    def __init__(
        self,
        policy: nn.Module,
        params: Params,
        per_task: bool,
        num_tasks: int,
        generator: torch.Generator,
    ) -> None:
        self.policy, self.params, self.per_task = policy, params, per_task
        self.num_tasks, self.generator = num_tasks, generator

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        if self.per_task:
            obs = obs.reshape(self.num_tasks, -1, obs.shape[-1])
        mean, log_std = forward_params(self.policy, self.params, obs, self.per_task)
        log_std = expand_log_std(log_std, mean, self.per_task, 0)
        noise = torch.randn(mean.shape, generator=self.generator, device=mean.device)
        actions = mean + noise * log_std.exp()
        return actions.reshape(-1, actions.shape[-1])


@torch.no_grad()
def rollout(
    env: BatchedMetaEnv,
    actor: Callable[[torch.Tensor], torch.Tensor],
    num_tasks: int,
    generator: torch.Generator | None = None,
    num_steps: int | None = None,
) -> Trajectories:
    """Run one episode in every row of ``env`` (its tasks already set) for up to ``num_steps``.

    Rows whose episode ended are masked, not reset; the loop stops early once all rows ended.
    """
    num_steps = num_steps or env.horizon
    obs, _ = env.reset(generator=generator)
    B, dev = env.num_envs, env.device
    obs_buf = torch.empty(num_steps, B, *obs.shape[1:], device=dev, dtype=obs.dtype)
    rewards = torch.zeros(num_steps, B, device=dev)
    mask = torch.zeros(num_steps, B, device=dev)
    terminated = torch.zeros(num_steps, B, dtype=torch.bool, device=dev)
    truncated = torch.zeros(num_steps, B, dtype=torch.bool, device=dev)
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    act_buf = None
    length = num_steps
    for t in range(num_steps):
        actions = actor(obs)
        if act_buf is None:
            act_buf = torch.empty(num_steps, *actions.shape, device=dev, dtype=actions.dtype)
        obs_buf[t] = obs
        act_buf[t] = actions
        obs, r, term, trunc, _ = env.step(actions)
        mask[t] = alive
        rewards[t] = torch.where(alive, r, 0.0)
        terminated[t] = term & alive
        truncated[t] = trunc & alive
        alive &= ~(term | trunc)
        if dev.type == "cpu" and not alive.any():  # a free check on CPU; skipped on GPU (sync)
            length = t + 1
            break
    truncated[length - 1] |= alive  # cut by num_steps before the env's own end
    return Trajectories(
        obs_buf[:length],
        act_buf[:length],
        rewards[:length],
        mask[:length],
        terminated[:length],
        truncated[:length],
        num_tasks,
    )
