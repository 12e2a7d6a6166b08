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


def summary_row(main, **metrics) -> dict[str, float | list[float]]:
    """A result row: ``mean``/``ci95`` of ``main`` and ``<name>``/``<name>_ci95`` of each metric,
    over the last dimension (tasks); scalars as floats, curves ([X, N] values) as lists."""
    row: dict[str, float | list[float]] = {}
    for name, values in (("mean", main), *metrics.items()):
        mean, ci = mean_ci95(values)
        key_ci = "ci95" if name == "mean" else f"{name}_ci95"
        row[name], row[key_ci] = (
            (float(mean), float(ci)) if mean.dim() == 0 else (mean.tolist(), ci.tolist())
        )
    return row
