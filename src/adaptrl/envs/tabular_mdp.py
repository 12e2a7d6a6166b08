"""Random tabular MDPs (Duan et al. 2016, "RL²", §3.2).

10 states, 5 actions, episodes of 10 steps, a trial of n episodes in the same MDP. Each task draws
transition distributions P(·|s, a) from a flat Dirichlet(1, ..., 1) and mean rewards
r̄(s, a) ~ N(1, 1); each step's reward is r̄(s, a) + N(0, 1) noise. A random policy therefore
earns 1 per step on average (the paper's "random" row: ≈ 100 for n = 10). Observation: one-hot
state. Held-out tasks: mean-reward tables whose 0.5-cells hash to the test split.

Start state: every episode starts in state 0. The paper does not say; Duan's own environment
does (openai/gym PR #408, ``gym/envs/rl2/random_tabular_mdp.py``, and the rllab sandbox's
vectorised copy). ``random_start=True`` starts each episode in a uniformly random state instead,
which is how this family behaved before (results measured that way say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError


@dataclass(frozen=True)
class TabularMDPConfig:
    """Random-MDP family; defaults are the paper's."""

    num_states: int = 10
    """States of each random MDP."""
    num_actions: int = 5
    """Actions in every state."""
    episode_length: int = 10
    """Steps per episode (the horizon)."""
    reward_noise: float = 1.0
    """Std of the Gaussian noise added to the mean reward at every step."""
    random_start: bool = False
    """Start episodes in a uniformly random state instead of state 0 (the authors' env)."""
    test_fraction: float = 0.2
    """Fraction of tasks held out for the test split (by a hash of their reward tables)."""
    LEGACY_VALUES: ClassVar[dict[str, Any]] = {"random_start": True}
    """Keys added after runs were made, with the value those runs used (``build.run_config``):
    runs made before ``random_start`` existed started episodes in a random state."""

    def __post_init__(self) -> None:
        for name in ("num_states", "num_actions", "episode_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"env.{name} must be > 0, got {getattr(self, name)}")
        if self.reward_noise < 0:
            raise ConfigError("env.reward_noise must be >= 0")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")


class TabularMDPTasks(TaskDistribution):
    def __init__(self, config: TabularMDPConfig) -> None:
        self.config = config
        S, A = config.num_states, config.num_actions
        self.split = HashSplit(S * A, 0.5, config.test_fraction)

    def _reward_prior(self, m: int, generator: torch.Generator) -> torch.Tensor:
        S, A = self.config.num_states, self.config.num_actions
        return 1.0 + torch.randn(m, S * A, generator=generator, device=generator.device)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        S, A = self.config.num_states, self.config.num_actions
        rewards = self.split.sample(n, split, self._reward_prior, generator).reshape(n, S, A)
        # Flat Dirichlet = normalised Exp(1) draws (torch's Dirichlet takes no generator).
        e = -torch.log(
            torch.rand(n, S, A, S, generator=generator, device=generator.device).clamp_min(1e-12)
        )
        return {"transitions": e / e.sum(-1, keepdim=True), "mean_rewards": rewards}

    def split_of(self, tasks: Tasks) -> list[str]:
        return self.split.split_of(tasks["mean_rewards"].flatten(1))


class TabularMDPEnv(BatchedMetaEnv):
    """Every row samples its next state from its own transition table in one multinomial."""

    def __init__(self, num_envs: int, config: TabularMDPConfig | None = None, device: Any = "cpu"):
        super().__init__(num_envs, device)
        self.deterministic = False
        self.config = config or TabularMDPConfig()
        self.horizon = self.config.episode_length
        S = self.config.num_states
        self.single_observation_space = spaces.Box(0.0, 1.0, (S,), "float32")
        self.single_action_space = spaces.Discrete(self.config.num_actions)
        self._batch_spaces()
        self.state = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._rows = torch.arange(num_envs, device=self.device)

    def _obs(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.state, self.config.num_states).float()

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        S = self.config.num_states
        u = self.rng.uniform(1, rows=mask)[:, 0]  # drawn either way: streams stay aligned
        start = (u * S).long().clamp_max(S - 1)
        if not self.config.random_start:
            start = torch.zeros_like(start)
        if mask is None:
            self.state, self.t = start, torch.zeros_like(self.t)
        else:
            self.state = torch.where(mask, start, self.state)
            self.t = torch.where(mask, 0, self.t)
        return self._obs(), {}

    def step(self, actions):
        a = actions.long()
        mean = self.tasks["mean_rewards"][self._rows, self.state, a]
        u = self.rng.uniform(3)  # two for the reward's Box-Muller normal, one for the next state
        noise = torch.sqrt(-2.0 * torch.log(u[:, 0])) * torch.cos(2.0 * torch.pi * u[:, 1])
        rewards = mean + self.config.reward_noise * noise
        probs = self.tasks["transitions"][self._rows, self.state, a]
        # Inverse CDF: the first state whose cumulative probability exceeds the uniform.
        next_state = (probs.cumsum(-1) < u[:, 2:3]).sum(-1)
        self.state = next_state.clamp_max(self.config.num_states - 1)
        self.t += 1
        truncated = self.t >= self.horizon
        return self._obs(), rewards, torch.zeros_like(truncated), truncated, {}
