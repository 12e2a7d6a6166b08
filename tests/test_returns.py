"""Returns, GAE and the linear baseline against slow per-episode references and hand values."""

import numpy as np
import torch
from torch.testing import assert_close

from adaptrl.returns import (
    discounted_returns,
    fit_linear_baseline,
    gae,
    linear_features,
    normalize_per_task,
)


def _random_episodes(T=7, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, B, generator=g)
    values = torch.randn(T, B, generator=g)
    next_values = torch.randn(T, B, generator=g)
    terminated = torch.rand(T, B, generator=g) < 0.15
    truncated = (torch.rand(T, B, generator=g) < 0.15) & ~terminated
    return rewards, values, next_values, terminated, truncated


def _slow_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    T, B = rewards.shape
    out = torch.zeros(T, B)
    for b in range(B):
        for t in range(T):
            # Sum forward until the episode ends at some step k >= t.
            total, weight = 0.0, 1.0
            for k in range(t, T):
                boot = 0.0 if terminated[k, b] else gamma * next_values[k, b]
                total += weight * (rewards[k, b] + boot - values[k, b])
                if terminated[k, b] or truncated[k, b]:
                    break
                weight *= gamma * lam
            out[t, b] = total
    return out


def test_gae_matches_slow_reference_with_terminations_and_truncations():
    r, v, nv, term, trunc = _random_episodes()
    fast = gae(r, v, nv, term, term | trunc, gamma=0.9, lam=0.8)
    assert_close(fast, _slow_gae(r, v, nv, term, trunc, 0.9, 0.8))


def test_gae_hand_computed():
    # One episode of 2 steps, truncated at the end: bootstraps from V(s_2) = 4.
    r = torch.tensor([[1.0], [2.0]])
    v = torch.tensor([[0.5], [1.0]])
    nv = torch.tensor([[1.0], [4.0]])
    term = torch.tensor([[False], [False]])
    trunc = torch.tensor([[False], [True]])
    adv = gae(r, v, nv, term, term | trunc, gamma=0.5, lam=1.0)
    d1 = 2.0 + 0.5 * 4.0 - 1.0  # 3
    d0 = 1.0 + 0.5 * 1.0 - 0.5  # 1
    assert_close(adv, torch.tensor([[d0 + 0.5 * d1], [d1]]))
    # Terminated instead: no bootstrap.
    adv_term = gae(r, v, nv, trunc, trunc, gamma=0.5, lam=1.0)
    assert_close(adv_term[1], torch.tensor([2.0 - 1.0]))


def test_gae_lambda_one_zero_values_is_discounted_return():
    r, _, _, term, trunc = _random_episodes(seed=1)
    ends = term | trunc
    zeros = torch.zeros_like(r)
    assert_close(gae(r, zeros, zeros, term, ends, 0.95, 1.0), discounted_returns(r, ends, 0.95))


def test_discounted_returns_reference():
    r, _, _, term, trunc = _random_episodes(seed=2)
    ends = term | trunc
    fast = discounted_returns(r, ends, 0.9)
    slow = torch.zeros_like(r)
    for b in range(r.shape[1]):
        running = 0.0
        for t in reversed(range(r.shape[0])):
            running = r[t, b] + (0.0 if ends[t, b] else 0.9 * running)
            slow[t, b] = running
    assert_close(fast, slow)
    assert_close(
        discounted_returns(torch.ones(3, 1), torch.zeros(3, 1, dtype=torch.bool), 0.5),
        torch.tensor([[1.75], [1.5], [1.0]]),
    )


def test_linear_baseline_matches_numpy_per_task_least_squares():
    g = torch.Generator().manual_seed(3)
    T, n, E, d = 12, 3, 4, 2
    obs = torch.randn(T, n, E, d, generator=g)
    returns = torch.randn(T, n, E, generator=g)
    mask = torch.ones(T, n, E)
    mask[8:, 1, 2] = 0  # one shorter episode
    values = fit_linear_baseline(obs, returns, mask, reg=1e-5)
    feats = linear_features(obs).double().numpy()
    for i in range(n):
        rows = mask[:, i].bool().numpy()
        X = feats[:, i][rows]
        y = returns[:, i].double().numpy()[rows]
        coef = np.linalg.solve(X.T @ X + 1e-5 * np.eye(X.shape[1]), X.T @ y)
        expected = feats[:, i] @ coef * mask[:, i].numpy()
        np.testing.assert_allclose(values[:, i].numpy(), expected, rtol=1e-4, atol=1e-4)


def test_linear_features_match_rllab_layout():
    obs = torch.tensor([[[2.0, -20.0]], [[1.0, 3.0]]])  # [T=2, B=1, d=2]
    f = linear_features(obs)
    assert_close(f[1, 0], torch.tensor([1.0, 3.0, 1.0, 9.0, 0.01, 1e-4, 1e-6, 1.0]))
    assert f[0, 0, 1].item() == -10.0  # observations clipped to [-10, 10]


def test_normalize_per_task_zero_mean_unit_std_and_masks():
    x = torch.randn(5, 2, 3) * 4 + 7
    mask = torch.ones(5, 2, 3)
    mask[3:, 0, 0] = 0
    z = normalize_per_task(x, mask)
    for i in range(2):
        vals = z[:, i][mask[:, i].bool()]
        assert abs(vals.mean().item()) < 1e-5
        assert abs(vals.std(unbiased=False).item() - 1) < 1e-4
    assert (z[3:, 0, 0] == 0).all()
