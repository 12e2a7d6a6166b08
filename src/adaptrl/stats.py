"""The one definition of a result's 95% interval: over tasks (or trials), normal approximation
mean ± 1.96·sd/√N, and 0 with a single task (not NaN)."""

from __future__ import annotations

import math

import torch


def mean_ci95(values) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 95% half-width over the last dimension (tasks); tensors or numpy arrays."""
    v = torch.as_tensor(values).double()
    n = v.shape[-1]
    sd = v.std(-1, unbiased=True) if n > 1 else torch.zeros_like(v.mean(-1))
    return v.mean(-1), 1.96 * sd / math.sqrt(n)
