"""A recommender adapting to a new user within a few sessions (RecSim-style interest model).

The service has one catalogue of ``num_items`` items, each with an embedding eₖ ∈ R^d and a
popularity bias bₖ (drawn once from ``catalogue_seed``, like a real catalogue). A task is a user
with latent interests u ~ N(0, user_scale² I). Each step the agent recommends an item (or, with
``slate_size`` > 1, a carousel: the chosen item and the next ones in catalogue order); the user
clicks each shown item with probability σ(eₖ·u + bₖ). Reward: clicks. An episode is a session
of ``session_length`` steps; a trial is several sessions with the same user (RL²'s memory carries
across them), so "clicks per session" over a trial is the adaptation curve.

Splits: ``test`` holds out users (hashed cells of u, disjoint from training users);
``cold_start`` holds out users *and* makes ``cold_fraction`` of the catalogue available that was
never available in training (recommending an unavailable item shows nothing). The observation
is the availability mask of the catalogue, so a policy can tell which items exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError


@dataclass(frozen=True)
class RecommenderConfig:
    """Settings of the recommender family."""

    num_items: int = 20
    """Items in the catalogue (the action space)."""
    embed_dim: int = 4
    """Dimension of item embeddings and user interests."""
    slate_size: int = 1
    """Items shown per step: the chosen one and the next slate_size - 1 in catalogue order."""
    session_length: int = 10
    """Recommendations per session (episode)."""
    user_scale: float = 1.5
    """User interests u ~ N(0, user_scale² I)."""
    bias_mean: float = -1.5
    """Mean popularity bias of items (σ(-1.5) ≈ 0.18: most items are rarely clicked)."""
    bias_sd: float = 0.5
    """Spread of item popularity biases."""
    cold_fraction: float = 0.2
    """Fraction of the catalogue never available in training, available in ``cold_start``."""
    catalogue_seed: int = 7
    """Seed of the catalogue: the same items for every task of the family."""
    horizon: int = 0
    """Alias of session_length for tools that set env.horizon (0: session_length)."""

    def __post_init__(self) -> None:
        for name in ("num_items", "embed_dim", "slate_size", "session_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"env.{name} must be > 0, got {getattr(self, name)!r}")
        if self.slate_size > self.num_items:
            raise ConfigError(
                f"env.slate_size={self.slate_size} exceeds the catalogue (num_items="
                f"{self.num_items}); show at most num_items items"
            )
        if self.user_scale <= 0 or self.bias_sd < 0:
            raise ConfigError("env.user_scale must be > 0 and env.bias_sd >= 0")
        if not 0 <= self.cold_fraction < 1:
            raise ConfigError(f"env.cold_fraction must lie in [0, 1), got {self.cold_fraction}")
        if self.horizon < 0:
            raise ConfigError("env.horizon must be >= 0")
        if self.horizon:
            object.__setattr__(self, "session_length", self.horizon)


def catalogue(config: RecommenderConfig) -> dict[str, torch.Tensor]:
    """The family's items: embeddings [K, d], biases [K], and the cold-start items [K] bool."""
    gen = torch.Generator().manual_seed(config.catalogue_seed)
    K, d = config.num_items, config.embed_dim
    embeddings = torch.randn(K, d, generator=gen) / d**0.5
    biases = config.bias_mean + config.bias_sd * torch.randn(K, generator=gen)
    cold = torch.zeros(K, dtype=torch.bool)
    cold[torch.randperm(K, generator=gen)[: round(config.cold_fraction * K)]] = True
    return {"embeddings": embeddings, "biases": biases, "cold": cold}


def click_probabilities(config: RecommenderConfig, users: torch.Tensor) -> torch.Tensor:
    """σ(eₖ·u + bₖ) of every item for every user: [n, K]."""
    items = catalogue(config)
    return torch.sigmoid(users @ items["embeddings"].T + items["biases"])


class RecommenderTasks(TaskDistribution):
    """Users (interest vectors) and the items available to them."""

    splits = ("train", "test", "cold_start")

    def __init__(self, config: RecommenderConfig) -> None:
        self.config = config
        self.hash = HashSplit(dim=config.embed_dim, cell_width=0.5, test_fraction=0.2)
        self.cold = catalogue(config)["cold"]

    def _prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.config.user_scale * torch.randn(n, self.config.embed_dim, generator=generator)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        users = self.hash.sample(n, "train" if split == "train" else "test", self._prior, generator)
        available = (~self.cold).float().expand(n, -1).clone()
        if split == "cold_start":
            available.fill_(1.0)
        return {"user": users, "available": available}

    def split_of(self, tasks: Tasks) -> list[str]:
        labels = self.hash.split_of(tasks["user"])
        cold = (tasks["available"][:, self.cold] > 0).any(-1).tolist() if self.cold.any() else []
        return ["cold_start" if cold and cold[i] else lab for i, lab in enumerate(labels)]


class RecommenderEnv(BatchedMetaEnv):
    """All users step together: one matrix product and one uniform per shown item."""

    deterministic = False

    def __init__(
        self, num_envs: int, config: RecommenderConfig | None = None, device: Any = "cpu"
    ) -> None:
        super().__init__(num_envs, device)
        self.config = c = config or RecommenderConfig()
        self.horizon = c.session_length
        self.single_observation_space = spaces.Box(0.0, 1.0, (c.num_items,), "float32")
        self.single_action_space = spaces.Discrete(c.num_items)
        self._batch_spaces()
        items = catalogue(c)
        self.embeddings = items["embeddings"].to(self.device)
        self.biases = items["biases"].to(self.device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.probs = torch.zeros(num_envs, c.num_items, device=self.device)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        if tasks is not None or mask is None:  # new users: their click probabilities
            logits = self.tasks["user"] @ self.embeddings.T + self.biases
            self.probs = torch.sigmoid(logits) * self.tasks["available"]
        self.t = torch.zeros_like(self.t) if mask is None else torch.where(mask, 0, self.t)
        return self.tasks["available"].clone(), {}

    def shown(self, actions: torch.Tensor) -> torch.Tensor:
        """Items shown for each action: [B, slate_size] (the carousel from the chosen item)."""
        offsets = torch.arange(self.config.slate_size, device=self.device)
        return (actions.long().unsqueeze(-1) + offsets) % self.config.num_items

    def step(self, actions: torch.Tensor):
        shown = self.shown(actions)
        p = self.probs.gather(1, shown)
        clicks = (self.rng.uniform(self.config.slate_size) < p).float()
        self.t = self.t + 1
        truncated = self.t >= self.horizon
        terminated = torch.zeros_like(truncated)
        return self.tasks["available"].clone(), clicks.sum(-1), terminated, truncated, {}


def recommender_metrics(traj, family, tasks: Tasks) -> dict[str, torch.Tensor]:
    """Expected regret of every session against the oracle (the best available slate for the
    user, every step), and its running sum over the sessions of a trial: [E, B] each."""
    c = family.config
    rows = traj.rewards.shape[1] // next(iter(tasks.values())).shape[0]
    users = tasks["user"].repeat_interleave(rows, 0).to(traj.obs.device)
    available = tasks["available"].repeat_interleave(rows, 0).to(traj.obs.device)
    probs = click_probabilities(c, users).to(traj.obs.device) * available  # [B, K]
    offsets = torch.arange(c.slate_size, device=probs.device)
    window = (torch.arange(c.num_items, device=probs.device).unsqueeze(-1) + offsets) % c.num_items
    slate_value = probs[:, window].sum(-1)  # [B, K]: expected clicks of each carousel
    chosen = slate_value.gather(1, traj.actions.long().T).T  # [T, B]
    best = slate_value.max(-1).values.unsqueeze(0)  # [1, B]
    regret = traj.per_episode(best - chosen)
    return {"regret": regret, "cumulative_regret": regret.cumsum(0)}
