"""Tabular-MDP strategies (random, greedy, ε-greedy, PSRL, myopic) over all trials at once.

Posterior used by greedy and PSRL: Dirichlet(1 + counts) transitions and, for mean rewards,
the conjugate Gaussian N(1, 1) prior with unit reward noise: mean (1 + Σr) / (1 + n), variance
1 / (1 + n). Greedy plans in the posterior-mean MDP; PSRL (Osband et al. 2013) plans in one MDP
sampled from the posterior; both re-plan at the start of every episode by finite-horizon value
iteration. Myopic is not in Duan et al.: it plays the action with the largest posterior-mean
reward in the current state, updated after every step and ignoring transitions. It shows what a
per-(state, action) running mean in memory achieves: measured here, more than greedy, since
greedy only re-plans between episodes.
"""

from __future__ import annotations

import numpy as np

MDP_STRATEGIES = ("random", "greedy", "epsilon_greedy", "psrl", "myopic")


def _plan(P: np.ndarray, R: np.ndarray, horizon: int) -> np.ndarray:
    """Finite-horizon greedy actions [H, N, S] for MDPs P [N, S, A, S], R [N, S, A]."""
    N, S, A, _ = P.shape
    V = np.zeros((N, S))
    policy = np.zeros((horizon, N, S), dtype=np.int64)
    for h in range(horizon - 1, -1, -1):
        Q = R + np.einsum("nsat,nt->nsa", P, V)
        policy[h] = Q.argmax(-1)
        V = Q.max(-1)
    return policy


def run_mdp_strategy(
    name: str,
    transitions: np.ndarray,
    mean_rewards: np.ndarray,
    num_episodes: int,
    episode_length: int,
    seed: int = 0,
    epsilon: float = 0.1,
    reward_noise: float = 1.0,
    random_start: bool = False,
) -> np.ndarray:
    """Total reward of each trial (task rows of ``transitions`` [N, S, A, S]). Episodes start
    in state 0, as the env does, or in a uniformly random state with ``random_start``."""
    if name not in MDP_STRATEGIES:
        raise ValueError(f"unknown strategy '{name}'; choose from {MDP_STRATEGIES}")
    rng = np.random.default_rng(seed)
    P_true = np.asarray(transitions, dtype=np.float64)
    R_true = np.asarray(mean_rewards, dtype=np.float64)
    N, S, A, _ = P_true.shape
    rows = np.arange(N)
    counts = np.zeros((N, S, A, S))
    r_sum = np.zeros((N, S, A))
    r_n = np.zeros((N, S, A))
    total = np.zeros(N)
    cum_p = np.cumsum(P_true, -1)
    for _ in range(num_episodes):
        if name in ("greedy", "epsilon_greedy"):
            P = (counts + 1) / (counts + 1).sum(-1, keepdims=True)
            policy = _plan(P, (1 + r_sum) / (1 + r_n), episode_length)
        elif name == "psrl":
            g = rng.gamma(counts + 1)
            P = g / g.sum(-1, keepdims=True)
            R = (1 + r_sum) / (1 + r_n) + rng.standard_normal((N, S, A)) / np.sqrt(1 + r_n)
            policy = _plan(P, R, episode_length)
        state = rng.integers(0, S, N) if random_start else np.zeros(N, dtype=np.int64)
        for h in range(episode_length):
            if name == "random":
                action = rng.integers(0, A, N)
            elif name == "myopic":
                mean = (1 + r_sum[rows, state]) / (1 + r_n[rows, state])
                action = (mean + 1e-9 * rng.random((N, A))).argmax(-1)  # random tie-break
            else:
                action = policy[h, rows, state]
                if name == "epsilon_greedy":
                    action = np.where(rng.random(N) < epsilon, rng.integers(0, A, N), action)
            reward = R_true[rows, state, action] + reward_noise * rng.standard_normal(N)
            nxt = (rng.random(N)[:, None] < cum_p[rows, state, action]).argmax(-1)
            counts[rows, state, action, nxt] += 1
            r_sum[rows, state, action] += reward
            r_n[rows, state, action] += 1
            total += reward
            state = nxt
    return total
