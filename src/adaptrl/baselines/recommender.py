"""Classical recommenders on the very users a learner is evaluated on, over the same trial
(sessions × steps), all users at once:

- ``most_popular``: the available carousel with the highest click rate over the prior's users
  (not personalised);
- ``epsilon_greedy``: per-item click rates (started at the prior's rates), ε tuned on training
  users;
- ``linucb``: LinUCB (Li et al. 2010) on item features [eₖ, bₖ, 1], α tuned on training users;
- ``thompson (true prior)``: Thompson sampling under the true prior and the true click model,
  the posterior over the user's interests approximated by 512 samples of the prior reweighted by
  the likelihood of the clicks seen (no resampling, so late in a trial the weight sits on few
  samples);
- ``oracle``: the best available carousel for the user, every step.

Each row: total clicks per trial (mean, 95% interval over users), clicks per session
(``curve``) and the expected regret against the oracle. Every user's random draws (clicks,
exploration, posterior samples) come from its own counter-based stream, so a user's result does
not depend on which other users are evaluated with it.
"""

from __future__ import annotations

from typing import Any

import torch

from adaptrl.envs.recommender import catalogue, click_probabilities
from adaptrl.envs.registry import ClassicalStrategies, Family
from adaptrl.rng import normal, row_keys, uniform
from adaptrl.stats import summary_row

EPSILONS = (0.0, 0.05, 0.1, 0.2)
ALPHAS = (0.1, 0.3, 1.0, 2.0)
PARTICLES = 512
PRIOR_USERS = 4096


def _windows(config) -> torch.Tensor:
    """Items of each carousel: [K, slate_size]."""
    K = config.num_items
    return (torch.arange(K).unsqueeze(-1) + torch.arange(config.slate_size)) % K


def _prior_rates(config) -> torch.Tensor:
    """Mean click probability of each item over the prior's users: [K]."""
    gen = torch.Generator().manual_seed(config.catalogue_seed + 1)
    users = config.user_scale * torch.randn(PRIOR_USERS, config.embed_dim, generator=gen)
    return click_probabilities(config, users).mean(0)


class _Strategy:
    """Scores items from what it has seen; ``observe`` takes the shown items' clicks.

    An unavailable item is worth nothing (it shows nothing) and teaches nothing."""

    def __init__(self, config, available: torch.Tensor, keys: torch.Tensor) -> None:
        self.config, self.available, self.keys = config, available, keys
        self.windows = _windows(config)
        self.t = 0

    def scores(self) -> torch.Tensor:  # [n, K] per item
        raise NotImplementedError

    def uniform(self, num: int) -> torch.Tensor:
        """[n, num] uniforms from each user's own stream (agent stream; the env's clicks use
        the env stream of the same keys)."""
        return uniform(self.keys, self.t, num, "agent")

    def choose(self) -> torch.Tensor:
        item = torch.where(self.available > 0, self.scores(), 0.0)
        value = item[:, self.windows].sum(-1)  # carousels [n, K]
        showable = self.available[:, self.windows].sum(-1) > 0
        return torch.where(showable, value, -torch.inf).argmax(-1)

    def observe(self, shown: torch.Tensor, clicks: torch.Tensor) -> None:
        self.t += 1


class _MostPopular(_Strategy):
    def __init__(self, config, available, keys) -> None:
        super().__init__(config, available, keys)
        self.rates = _prior_rates(config).expand_as(available)

    def scores(self):
        return self.rates


class _EpsilonGreedy(_Strategy):
    def __init__(self, config, available, keys, epsilon: float) -> None:
        super().__init__(config, available, keys)
        self.epsilon = epsilon
        self.clicks = _prior_rates(config).expand_as(available).clone()
        self.pulls = torch.ones_like(available)

    def scores(self):
        return self.clicks / self.pulls

    def choose(self):
        greedy = super().choose()
        u = self.uniform(2)
        cdf = (self.available / self.available.sum(-1, keepdim=True)).cumsum(-1)
        random = (cdf < u[:, 1:]).sum(-1).clamp_max(self.available.shape[1] - 1)
        return torch.where(u[:, 0] < self.epsilon, random, greedy)

    def observe(self, shown, clicks):
        seen = self.available.gather(1, shown)
        self.pulls.scatter_add_(1, shown, seen)
        self.clicks.scatter_add_(1, shown, clicks * seen)
        super().observe(shown, clicks)


class _LinUCB(_Strategy):
    def __init__(self, config, available, keys, alpha: float) -> None:
        super().__init__(config, available, keys)
        items = catalogue(config)
        ones = torch.ones(config.num_items, 1)
        self.x = torch.cat([items["embeddings"], items["biases"][:, None], ones], -1)
        n, f = available.shape[0], self.x.shape[1]
        self.alpha = alpha
        self.A = torch.eye(f).expand(n, f, f).clone()
        self.b = torch.zeros(n, f)

    def scores(self):
        A_inv = torch.linalg.inv(self.A)
        theta = (A_inv @ self.b.unsqueeze(-1)).squeeze(-1)
        mean = theta @ self.x.T
        width = torch.einsum("kf,nfg,kg->nk", self.x, A_inv, self.x).clamp_min(0).sqrt()
        return mean + self.alpha * width

    def observe(self, shown, clicks):
        x = self.x[shown] * self.available.gather(1, shown).unsqueeze(-1)  # [n, s, f]
        self.A += x.transpose(1, 2) @ x
        self.b += (x * clicks.unsqueeze(-1)).sum(1)
        super().observe(shown, clicks)


class _Thompson(_Strategy):
    def __init__(self, config, available, keys) -> None:
        super().__init__(config, available, keys)
        n, d = available.shape[0], config.embed_dim
        draws = normal(keys, 1 << 40, PARTICLES * d, "agent")  # a counter no step reaches
        self.users = config.user_scale * draws.reshape(n, PARTICLES, d)
        items = catalogue(config)
        self.p = torch.sigmoid(self.users @ items["embeddings"].T + items["biases"])  # [n, M, K]
        self.log_w = torch.zeros(n, PARTICLES)

    def scores(self):
        cdf = torch.softmax(self.log_w, -1).cumsum(-1)
        pick = (cdf < self.uniform(1)).sum(-1).clamp_max(PARTICLES - 1)
        return self.p[torch.arange(pick.shape[0]), pick]

    def observe(self, shown, clicks):
        p = self.p.gather(2, shown.unsqueeze(1).expand(-1, PARTICLES, -1))  # [n, M, s]
        c = clicks.unsqueeze(1)
        seen = self.available.gather(1, shown).unsqueeze(1)
        log_lik = c * p.clamp_min(1e-9).log() + (1 - c) * (1 - p).clamp_min(1e-9).log()
        self.log_w += (log_lik * seen).sum(-1)
        super().observe(shown, clicks)


class _Oracle(_Strategy):
    def __init__(self, config, available, keys, users: torch.Tensor) -> None:
        super().__init__(config, available, keys)
        self.true = click_probabilities(config, users)

    def scores(self):
        return self.true


@torch.no_grad()
def run_recommender(
    family: Family,
    tasks: dict[str, torch.Tensor],
    strategy: str,
    episodes: int,
    seed: int = 0,
    **kw,
) -> dict[str, torch.Tensor]:
    """Clicks of every session [E, n] and expected regret [E, n] of one strategy."""
    c = family.config
    users, available = tasks["user"], tasks["available"]
    n = users.shape[0]
    keys = row_keys(seed, torch.arange(n), torch.zeros(n, dtype=torch.int64))
    make = {
        "most_popular": lambda: _MostPopular(c, available, keys),
        "epsilon_greedy": lambda: _EpsilonGreedy(c, available, keys, kw.get("epsilon", 0.1)),
        "linucb": lambda: _LinUCB(c, available, keys, kw.get("alpha", 1.0)),
        "thompson (true prior)": lambda: _Thompson(c, available, keys),
        "oracle": lambda: _Oracle(c, available, keys, users),
    }[strategy]
    agent = make()
    true = click_probabilities(c, users) * available
    windows = _windows(c)
    value = true[:, windows].sum(-1)  # expected clicks of each carousel [n, K]
    clicks = torch.zeros(episodes, n)
    regret = torch.zeros(episodes, n)
    for t in range(episodes * c.session_length):
        action = agent.choose()
        shown = windows[action]  # [n, s]
        got = (uniform(keys, t, c.slate_size, "env") < true.gather(1, shown)).float()
        agent.observe(shown, got)
        e = t // c.session_length
        clicks[e] += got.sum(-1)
        regret[e] += value.max(-1).values - value.gather(1, action[:, None])[:, 0]
    return {"clicks": clicks, "regret": regret}


def _row(result: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    clicks, regret = result["clicks"], result["regret"].sum(0)
    return {**summary_row(clicks.sum(0), curve=clicks, regret=regret), **extra}


def recommender_strategies(
    family: Family,
    tasks: dict[str, torch.Tensor],
    seed: int = 0,
    tune_tasks: dict[str, torch.Tensor] | None = None,
    episodes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Every strategy on ``tasks``; ε and α tuned on ``tune_tasks`` (training users)."""
    tune = tune_tasks if tune_tasks is not None else tasks

    def tuned(strategy, name, grid):
        return max(
            grid,
            key=lambda v: float(
                run_recommender(family, tune, strategy, episodes, seed + 1, **{name: v})["clicks"]
                .sum(0)
                .mean()
            ),
        )

    eps, alpha = tuned("epsilon_greedy", "epsilon", EPSILONS), tuned("linucb", "alpha", ALPHAS)
    rows = {}
    for strategy, extra in (
        ("most_popular", {}),
        ("epsilon_greedy", {"epsilon": eps}),
        ("linucb", {"alpha": alpha}),
        ("thompson (true prior)", {}),
        ("oracle", {}),
    ):
        rows[strategy] = _row(
            run_recommender(family, tasks, strategy, episodes, seed, **extra), **extra
        )
    return rows


RECOMMENDER_STRATEGIES = ClassicalStrategies(recommender_strategies)
"""The recommender family's strategies; each row is the clicks of a trial of sessions."""
