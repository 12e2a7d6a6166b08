"""PEARL's point robot (Rakelly et al. 2019, §6; oyster ``rlkit/envs/point_robot.py``).

A point starts at the origin; the action is a displacement clipped to ``[-0.1, 0.1]^2``
(``max_action``); the observation is the position; horizon 20. Goals:

- ``goals: square``: uniform in ``[-1, 1]^2`` (oyster's ``point-robot``); reward −distance.
- ``goals: half_circle``: on the unit half circle, angle U[0, π] (``sparse-point-robot``); with
  ``sparse_radius`` > 0 the reward is ``1 − distance`` inside that radius and 0 outside (oyster:
  radius 0.2), so nothing tells the agent where the goal is until it has been there once: the
  task PEARL's posterior sampling (exploration from z) is built for.

Held-out goals: the angle (half circle) or the square is cut into cells and every k-th cell is
held out (``GridSplit``, ``interleaved``/``rings``), so test goals are new but no harder. Oyster
draws 80 train and 20 test goals from the same distribution instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from adaptrl.envs.base import GridSplit, Split, TaskDistribution, Tasks
from adaptrl.envs.navigation import PointMassEnv
from adaptrl.errors import ConfigError


@dataclass(frozen=True)
class PointRobotConfig:
    """Settings of the point-robot family (defaults: oyster's sparse point robot)."""

    horizon: int = 20
    """Steps per episode."""
    goals: str = "half_circle"
    """``half_circle`` (unit radius, angle U[0, π]) or ``square`` (U[-1, 1]^2)."""
    sparse_radius: float = 0.2
    """> 0: reward 1 − distance within this radius of the goal, else 0; 0: reward −distance."""
    max_action: float = 0.1
    """Actions are clipped to [-max_action, max_action] per coordinate."""
    test_fraction: float = 0.2
    """Fraction of goal cells held out for the test split."""

    def __post_init__(self) -> None:
        if self.horizon <= 0:
            raise ConfigError(f"env.horizon must be > 0, got {self.horizon}")
        if self.goals not in ("half_circle", "square"):
            raise ConfigError(f"env.goals must be 'half_circle' or 'square', got {self.goals!r}")
        if self.sparse_radius < 0:
            raise ConfigError(f"env.sparse_radius must be >= 0, got {self.sparse_radius}")
        if self.max_action <= 0:
            raise ConfigError(f"env.max_action must be > 0, got {self.max_action}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")


class PointRobotTasks(TaskDistribution):
    """Goals on the half circle (held-out angle cells) or in the square (held-out grid cells)."""

    def __init__(self, config: PointRobotConfig) -> None:
        self.config = config
        if config.goals == "half_circle":
            self.grid = GridSplit(0.0, math.pi, 1, 20, config.test_fraction, "interleaved")
        else:
            self.grid = GridSplit(-1.0, 1.0, 2, 10, config.test_fraction, "rings")

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        drawn = self.grid.sample(n, split, generator)
        if self.config.goals == "square":
            return {"goal": drawn}
        angle = drawn[:, 0]
        return {"goal": torch.stack([torch.cos(angle), torch.sin(angle)], -1)}

    def split_of(self, tasks: Tasks) -> list[str]:
        goal = tasks["goal"]
        if self.config.goals == "square":
            return self.grid.split_of(goal)
        return self.grid.split_of(torch.atan2(goal[:, 1], goal[:, 0]).clamp(0, math.pi)[:, None])


class PointRobotEnv(PointMassEnv):
    """All rows step with a few tensor ops; episodes never terminate early (as oyster's)."""

    def __init__(self, num_envs: int, config: PointRobotConfig | None = None, device="cpu") -> None:
        super().__init__(num_envs, device)
        self.config = config or PointRobotConfig()
        self.horizon = self.config.horizon
        self._point_mass(self.config.max_action, self.config.max_action)

    def step(self, actions):
        a = self.config.max_action
        self.pos = self.pos + actions.clamp(-a, a)
        self.t += 1
        distance = (self.pos - self.tasks["goal"]).norm(dim=-1)
        rewards = point_reward(distance, self.config.sparse_radius)
        terminated = torch.zeros_like(self.t, dtype=torch.bool)
        truncated = self.t >= self.horizon
        return self.pos.clone(), rewards, terminated, truncated, {"distance": distance}


def point_reward(distance: torch.Tensor, sparse_radius: float) -> torch.Tensor:
    """−distance, or (sparse) 1 − distance inside ``sparse_radius`` and 0 outside."""
    if not sparse_radius:
        return -distance
    return torch.where(distance <= sparse_radius, 1.0 - distance, torch.zeros_like(distance))


def dense_point_reward(next_obs: torch.Tensor, tasks: Tasks, family) -> torch.Tensor:
    """−distance to the goal, the reward the sparse one is cut from (``EnvSpec.dense_reward``;
    oyster's ``step()`` returns it and trains PEARL's critic on it)."""
    return -(next_obs[..., :2] - tasks["goal"].to(next_obs.device)).norm(dim=-1)


def point_metrics(traj, family, tasks: Tasks | None = None) -> dict[str, torch.Tensor]:
    """``final_distance`` to the goal at each episode's end and ``success`` (it ends within the
    goal radius: ``sparse_radius``, or 0.2 for the dense task; PEARL's criterion):
    [episodes_per_trial, B] each."""
    radius = family.config.sparse_radius or 0.2
    goal = tasks["goal"].to(traj.next_obs.device).repeat_interleave(traj.episodes_per_task, 0)
    distance = (traj.next_obs[..., :2] - goal[None]).norm(dim=-1)  # [T, B]
    final = traj.per_episode(distance * (traj.ends & traj.mask.bool()))
    return {"final_distance": final, "success": (final <= radius).float()}
