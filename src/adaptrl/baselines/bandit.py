"""Bandit strategies, the Gittins index and the exact Bayes-optimal value (Bernoulli arms,
uniform Beta(1, 1) priors). Strategies run all trials at once (numpy), one loop over pulls."""

from __future__ import annotations

from functools import cache

import numpy as np

BANDIT_STRATEGIES = ("random", "greedy", "epsilon_greedy", "ucb1", "thompson", "gittins")


def gittins_index(
    successes: np.ndarray,
    failures: np.ndarray,
    gamma: float,
    horizon: int,
    tol: float = 1e-7,
) -> np.ndarray:
    """Gittins index of Beta(successes + 1, failures + 1) arms by calibration.

    The index is the per-step retirement reward λ at which playing the arm optimally (with the
    option to retire at any later step) is worth exactly as much as retiring now, within a
    ``horizon``-step look-ahead, discount ``gamma`` (1.0 = undiscounted, finite horizon as in
    Duan et al.'s baseline). Bisection on λ for all states at once; the look-ahead lattice of
    depth d is a [S, d + 1] array.
    """
    a = np.asarray(successes, dtype=np.float64).reshape(-1) + 1.0
    b = np.asarray(failures, dtype=np.float64).reshape(-1) + 1.0
    lo, hi = np.zeros_like(a), np.ones_like(a)
    disc = gamma ** np.arange(horizon + 1)
    remaining = np.concatenate([[0.0], np.cumsum(disc)])  # remaining[m] = Σ_{j<m} γ^j
    while np.max(hi - lo) > tol:
        lam = (lo + hi) / 2
        value = np.zeros((a.size, horizon + 1))  # depth = horizon: nothing left
        for d in range(horizon - 1, 0, -1):
            i = np.arange(d + 1)
            p = (a[:, None] + i) / (a[:, None] + b[:, None] + d)
            cont = p * (1 + gamma * value[:, 1 : d + 2]) + (1 - p) * gamma * value[:, : d + 1]
            retire = lam[:, None] * remaining[horizon - d]
            value = np.maximum(cont, retire)
        p0 = a / (a + b)
        root = p0 * (1 + gamma * value[:, 1]) + (1 - p0) * gamma * value[:, 0]
        better = root > lam * remaining[horizon]
        lo = np.where(better, lam, lo)
        hi = np.where(better, hi, lam)
    return (lo + hi) / 2


def bayes_optimal_value(num_arms: int, num_pulls: int) -> float:
    """Exact Bayes-optimal expected total reward by dynamic programming over posterior counts.

    Arms are exchangeable under the prior, so states are sorted tuples of (successes, failures);
    tractable for small k and n (k = 5, n = 10 takes seconds).
    """

    @cache
    def value(state: tuple[tuple[int, int], ...], left: int) -> float:
        if left == 0:
            return 0.0
        best = 0.0
        for i, (s, f) in enumerate(state):
            if i and state[i - 1] == (s, f):
                continue  # identical arm: same value
            p = (s + 1) / (s + f + 2)
            win = tuple(sorted(state[:i] + ((s + 1, f),) + state[i + 1 :]))
            lose = tuple(sorted(state[:i] + ((s, f + 1),) + state[i + 1 :]))
            best = max(best, p * (1 + value(win, left - 1)) + (1 - p) * value(lose, left - 1))
        return best

    return value(tuple([(0, 0)] * num_arms), num_pulls)


class _GittinsTable:
    """Lazily computed undiscounted finite-look-ahead indices keyed by (s, f, horizon)."""

    def __init__(self, lookahead: int) -> None:
        self.lookahead, self.cache = lookahead, {}

    def __call__(self, s: np.ndarray, f: np.ndarray, remaining: int) -> np.ndarray:
        h = max(1, min(remaining, self.lookahead))
        keys = list(zip(s.ravel().tolist(), f.ravel().tolist()))
        missing = sorted({k for k in keys if (k[0], k[1], h) not in self.cache})
        if missing:
            ms, mf = np.array(missing).T
            for k, v in zip(missing, gittins_index(ms, mf, 1.0, h, tol=1e-5)):
                self.cache[(k[0], k[1], h)] = v
        return np.array([self.cache[(a, b, h)] for a, b in keys]).reshape(s.shape)


def run_bandit_strategy(
    name: str,
    probs: np.ndarray,
    num_pulls: int,
    seed: int = 0,
    epsilon: float = 0.1,
    ucb_c: float = 1.0,
    gittins_lookahead: int = 100,
    return_arms: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Total reward of each trial (one row of ``probs`` [N, k] each) under strategy ``name``.

    greedy / ε-greedy use the Beta(1, 1) posterior mean; UCB1 plays each arm once, then
    mean + c·sqrt(2 ln t / n_i); Thompson samples the Beta posterior; Gittins plays the largest
    undiscounted index with look-ahead min(pulls left, ``gittins_lookahead``). Ties break at random.
    ``return_arms`` also returns the arm pulled at every step: [num_pulls, N].
    """
    if name not in BANDIT_STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; choose from {BANDIT_STRATEGIES}")
    rng = np.random.default_rng(seed)
    probs = np.asarray(probs, dtype=np.float64)
    N, k = probs.shape
    s = np.zeros((N, k), dtype=np.int64)
    f = np.zeros((N, k), dtype=np.int64)
    total = np.zeros(N)
    rows = np.arange(N)
    table = _GittinsTable(gittins_lookahead) if name == "gittins" else None
    arms = np.zeros((num_pulls, N), dtype=np.int64)
    for t in range(num_pulls):
        jitter = rng.random((N, k)) * 1e-9  # random tie-breaking
        mean = (s + 1) / (s + f + 2)
        if name == "random":
            score = jitter
        elif name in ("greedy", "epsilon_greedy"):
            score = mean + jitter
        elif name == "ucb1":
            n_i = s + f
            bonus = ucb_c * np.sqrt(2 * np.log(max(t, 1)) / np.maximum(n_i, 1))
            emp = s / np.maximum(n_i, 1)
            score = np.where(n_i == 0, np.inf, emp + bonus) + jitter
        elif name == "thompson":
            score = rng.beta(s + 1, f + 1)
        else:
            score = table(s, f, num_pulls - t) + jitter
        arm = score.argmax(1)
        if name == "epsilon_greedy":
            explore = rng.random(N) < epsilon
            arm = np.where(explore, rng.integers(0, k, N), arm)
        arms[t] = arm
        reward = rng.random(N) < probs[rows, arm]
        s[rows, arm] += reward
        f[rows, arm] += ~reward
        total += reward
    return (total, arms) if return_arms else total
