"""Discounted returns, GAE, advantage normalisation and the linear feature baseline.

All functions take time-major tensors ``[T, B]`` and masks that are 1 on real steps. The only
Python loop is over time. Each is tested against a slow per-episode reference in tests/.
"""

from __future__ import annotations

import torch


def discounted_returns(
    rewards: torch.Tensor, episode_end: torch.Tensor, gamma: float
) -> torch.Tensor:
    """G_t = r_t + γ G_{t+1}, restarting after ``episode_end`` (terminated | truncated).

    rewards: [T, B] float; episode_end: [T, B] bool. The value beyond the last step is 0 (the
    finite-horizon return the meta-RL papers report and fit baselines to).
    """
    cont = (~episode_end).to(rewards.dtype)
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * cont[t] * running
        out[t] = running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016).

    rewards, values, next_values: [T, B]; next_values[t] = V(s_{t+1}). terminated: [T, B] bool
    (no bootstrap); episode_end: [T, B] bool (terminated | truncated: stop accumulating; a truncated
    step still bootstraps from next_values).
    """
    not_term = (~terminated).to(rewards.dtype)
    cont = (~episode_end).to(rewards.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * cont[t] * running
        out[t] = running
    return out


def normalize_per_task(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Standardise ``x`` within each task over its masked entries.

    x, mask: [T, n, E] (task dimension 1). Masked-out entries come back as 0.
    """
    count = mask.sum((0, 2), keepdim=True).clamp_min(1.0)
    mean = (x * mask).sum((0, 2), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum((0, 2), keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * mask


def linear_features(obs: torch.Tensor) -> torch.Tensor:
    """rllab's LinearFeatureBaseline features: [o, o², t, t², t³, 1] with t = step / 100.

    obs: [T, ..., obs_dim] -> [T, ..., 2 * obs_dim + 4].
    """
    o = obs.clamp(-10, 10)
    steps = torch.arange(obs.shape[0], device=obs.device, dtype=obs.dtype) / 100.0
    t = steps.reshape(-1, *([1] * (obs.dim() - 1))).expand(*obs.shape[:-1], 1)
    return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)


def fit_linear_baseline(
    obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reg: float = 1e-5
) -> torch.Tensor:
    """Fit one linear value function per task and return its predictions.

    obs: [T, n, E, obs_dim]; returns, mask: [T, n, E]. Ridge regression solved in float64 for all
    tasks at once (one batched ``linalg.solve``); ``reg`` is rllab's regulariser.
    Returns values: [T, n, E] in the dtype of ``returns``.
    """
    feats = linear_features(obs).to(torch.float64)  # [T, n, E, F]
    w = mask.to(torch.float64).unsqueeze(-1)
    X = (feats * w).permute(1, 0, 2, 3).reshape(feats.shape[1], -1, feats.shape[-1])  # [n, M, F]
    y = (returns.to(torch.float64) * mask).permute(1, 0, 2).reshape(feats.shape[1], -1, 1)
    eye = torch.eye(feats.shape[-1], dtype=torch.float64, device=obs.device)
    A = X.transpose(1, 2) @ X + reg * eye
    coeffs = torch.linalg.solve(A, X.transpose(1, 2) @ y)  # [n, F, 1]
    values = torch.einsum("tnef,nf->tne", feats, coeffs.squeeze(-1))
    return values.to(returns.dtype) * mask
