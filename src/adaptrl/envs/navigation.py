"""2D navigation (Finn, Abbeel, Levine 2017, §5.3; official code ``point_env_randgoal``).

A point starts at the origin and must reach a goal drawn uniformly from ``[-0.5, 0.5]^2``. The
observation is the position, the action a displacement clipped to ``[-0.1, 0.1]^2``, the reward the
negative *Euclidean* distance to the goal after the move (the official code's choice; the paper's
text says squared distance), and the episode terminates when both coordinates are within 0.01 of
the goal, as in the official code. Horizon 100.

Actions: the official code wraps the env in rllab's ``normalize``, so the policy acts in
``[-1, 1]^2`` (clipped) and the env scales that to ``±max_action``. With the Gaussian policy's
initial std of 1 this matters: raw actions clipped at ±0.1 would be pure bang-bang noise and the
inner policy gradient would carry little signal. ``normalized_actions=False`` gives raw actions.

Held-out tasks: goals of the test split lie in grid cells that training never samples
(``GridSplit``), so meta-test returns measure generalisation to unseen goals. The held-out cells
are spread over rings around the start, so held-out goals are no farther away than training goals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, GridSplit, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError


@dataclass(frozen=True)
class Navigation2DConfig:
    """Settings of the 2D navigation family (defaults: the paper's)."""

    horizon: int = 100
    """Steps per episode."""
    goal_low: float = -0.5
    """Lower corner of the goal box (both coordinates)."""
    goal_high: float = 0.5
    """Upper corner of the goal box."""
    max_action: float = 0.1
    """Actions are clipped to [-max_action, max_action] per coordinate."""
    normalized_actions: bool = True
    """Actions live in [-1, 1] and are scaled to ±max_action (rllab's normalize, official code)."""
    goal_tolerance: float = 0.01
    """The episode terminates when |x - goal_x| and |y - goal_y| are both below this (0 = never)."""
    test_fraction: float = 0.2
    """Fraction of goal-grid cells held out for the test split."""
    test_layout: str = "rings"
    """Which grid cells are held out (``GridSplit``): ``rings`` keeps both splits at the same
    distance from the box centre, which is the start for a box symmetric about 0 (the default),
    so held-out goals are new but not harder; ``random`` is the seeded draw used before
    2026-11-28, whose held-out goals lie farther out (0.416 vs 0.375)."""
    LEGACY_VALUES: ClassVar[dict[str, Any]] = {"test_layout": "random"}
    """Keys added after runs were made, with the value those runs used (``build.run_config``)."""

    def __post_init__(self) -> None:
        if self.horizon <= 0:
            raise ConfigError(f"env.horizon must be > 0, got {self.horizon}")
        if self.goal_high <= self.goal_low:
            raise ConfigError("env.goal_high must be greater than env.goal_low")
        if self.max_action <= 0:
            raise ConfigError(f"env.max_action must be > 0, got {self.max_action}")
        if self.goal_tolerance < 0:
            raise ConfigError("env.goal_tolerance must be >= 0")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")
        if self.test_layout not in ("rings", "random"):
            raise ConfigError(
                f"env.test_layout must be 'rings' or 'random', got {self.test_layout!r}"
            )


class Navigation2DTasks(TaskDistribution):
    """Goals uniform in a box; test goals come from held-out cells of a 10x10 grid."""

    def __init__(self, config: Navigation2DConfig) -> None:
        self.config = config
        self.grid = GridSplit(
            config.goal_low,
            config.goal_high,
            dim=2,
            test_fraction=config.test_fraction,
            layout=config.test_layout,
        )

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        return {"goal": self.grid.sample(n, split, generator)}

    def split_of(self, tasks: Tasks) -> list[str]:
        return self.grid.split_of(tasks["goal"])


class PointMassEnv(BatchedMetaEnv):
    """A point at the origin moved by clipped displacements, its position the observation: the
    shared body of the navigation and point-robot families (they differ in reward and ending)."""

    def _point_mass(self, max_action: float, action_bound: float) -> None:
        reach = max_action * self.horizon  # farthest the point can get from the origin per axis
        self.single_observation_space = spaces.Box(-reach, reach, (2,), "float32")
        self.single_action_space = spaces.Box(-action_bound, action_bound, (2,), "float32")
        self._batch_spaces()
        self.pos = torch.zeros(self.num_envs, 2, device=self.device)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        if mask is None:
            self.pos.zero_()
            self.t.zero_()
        else:
            self.pos[mask] = 0.0
            self.t[mask] = 0
        return self.pos.clone(), {}


class Navigation2DEnv(PointMassEnv):
    """Point-mass navigation; all rows step with a handful of tensor ops."""

    def __init__(
        self, num_envs: int, config: Navigation2DConfig | None = None, device: Any = "cpu"
    ) -> None:
        super().__init__(num_envs, device)
        self.config = config or Navigation2DConfig()
        self.horizon = self.config.horizon
        a = self.config.max_action
        self._point_mass(a, 1.0 if self.config.normalized_actions else a)

    def step(self, actions):
        a = self.config.max_action
        if self.config.normalized_actions:
            actions = actions.clamp(-1.0, 1.0) * a
        self.pos = self.pos + actions.clamp(-a, a)
        self.t += 1
        delta = self.pos - self.tasks["goal"]
        rewards = -delta.norm(dim=-1)
        terminated = (delta.abs() < self.config.goal_tolerance).all(dim=-1)
        truncated = (self.t >= self.horizon) & ~terminated
        return self.pos.clone(), rewards, terminated, truncated, {}
