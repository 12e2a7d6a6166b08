"""Bernoulli multi-armed bandits (Duan et al. 2016, "RL²", §3.1).

A task is a vector of k success probabilities drawn uniformly from [0, 1]; a trial is one episode
of ``num_pulls`` pulls. The observation carries no information (a constant); everything the agent
learns about the task comes through the rewards it has seen, which RL² feeds back as input.
Held-out tasks: probability vectors whose 0.1-cells hash to the test split (``HashSplit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError


@dataclass(frozen=True)
class BanditConfig:
    """k-armed Bernoulli bandit with a budget of n pulls."""

    num_arms: int = 5
    """k: number of arms."""
    num_pulls: int = 100
    """n: pulls per trial (the episode length)."""
    test_fraction: float = 0.2
    """Share of the task space held out for testing."""

    def __post_init__(self) -> None:
        if self.num_arms < 2:
            raise ConfigError(f"env.num_arms must be >= 2, got {self.num_arms}")
        if self.num_pulls <= 0:
            raise ConfigError(f"env.num_pulls must be > 0, got {self.num_pulls}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")


class BanditTasks(TaskDistribution):
    """probs ~ U[0, 1]^k, split by hashed 0.1-cells."""

    def __init__(self, config: BanditConfig) -> None:
        self.config = config
        self.split = HashSplit(config.num_arms, 0.1, config.test_fraction)

    def _prior(self, m: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(m, self.config.num_arms, generator=generator, device=generator.device)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        return {"probs": self.split.sample(n, split, self._prior, generator)}

    def split_of(self, tasks: Tasks) -> list[str]:
        return self.split.split_of(tasks["probs"])


class BanditEnv(BatchedMetaEnv):
    """All rows pull at once: reward = Bernoulli(probs[row, action])."""

    def __init__(self, num_envs: int, config: BanditConfig | None = None, device: Any = "cpu"):
        super().__init__(num_envs, device)
        self.deterministic = False
        self.config = config or BanditConfig()
        self.horizon = self.config.num_pulls
        self.single_observation_space = spaces.Box(0.0, 1.0, (1,), "float32")  # constant 0
        self.single_action_space = spaces.Discrete(self.config.num_arms)
        self._batch_spaces()
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        if mask is None:
            self.t.zero_()
        else:
            self.t[mask] = 0
        return torch.zeros(self.num_envs, 1, device=self.device), {}

    def step(self, actions):
        p = self.tasks["probs"].gather(1, actions.long().reshape(-1, 1)).squeeze(1)
        u = self.rng.uniform(1)[:, 0]
        rewards = (u < p).float()
        self.t += 1
        truncated = self.t >= self.horizon
        terminated = torch.zeros_like(truncated)
        return torch.zeros(self.num_envs, 1, device=self.device), rewards, terminated, truncated, {}
