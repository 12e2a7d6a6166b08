"""Conjugate gradient and the TRPO step: KL bound respected, loss improved."""

import torch
from torch.testing import assert_close

from adaptrl.distributions import DiagGaussian
from adaptrl.trust_region import (
    conjugate_gradient,
    conjugate_gradient_with_residual,
    trpo_step,
)


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + 6 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    assert_close(x, torch.linalg.solve(A, b))


def test_conjugate_gradient_residual_gives_the_quadratic_form_without_a_product():
    """TRPO's sᵀFs comes from CG's residual (F s = g - r), even when CG stops early."""
    g = torch.Generator().manual_seed(1)
    M = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    for iters in (3, 10):  # far from converged, then closer
        x, r = conjugate_gradient_with_residual(lambda v: A @ v, b, iters=iters)
        assert_close(r, b - A @ x)
        assert_close(x @ (b - r), x @ A @ x)


def _gaussian_problem(max_kl):
    """Linear surrogate on the mean of a Gaussian; KL(old || new) is the trust region."""
    torch.manual_seed(0)
    mean = torch.zeros(3, requires_grad=True)
    log_std = torch.zeros(3, requires_grad=True)
    params = [mean, log_std]
    direction = torch.tensor([1.0, -2.0, 0.5])
    old = (mean.detach().clone(), log_std.detach().clone())

    def loss_fn():
        return -(direction * mean).sum() + 0.1 * log_std.pow(2).sum()

    def kl_fn():
        return DiagGaussian().kl(old, (mean, log_std))

    def evaluate():
        with torch.no_grad():
            return float(loss_fn()), float(kl_fn())

    stats = trpo_step(params, loss_fn(), kl_fn(), evaluate, max_kl=max_kl, damping=0.0)
    return stats, mean.detach(), log_std.detach(), direction, kl_fn().item(), loss_fn().item()


def test_trpo_step_respects_kl_bound_and_improves():
    for max_kl in (0.001, 0.01, 0.1):
        stats, mean, _, direction, kl, loss = _gaussian_problem(max_kl)
        assert stats["trpo/accepted"] == 1.0
        assert kl <= max_kl * (1 + 1e-5)
        assert loss < 0.0  # started at 0
        # Fisher of the mean is I (std 1): the step is along the gradient, with 1/2 |s|^2 = max_kl.
        # (The line search may shrink it once if rounding puts the full step a hair over the bound.)
        full = direction / direction.norm() * (2 * max_kl) ** 0.5
        assert stats["trpo/step_fraction"] >= 0.8
        assert_close(mean, stats["trpo/step_fraction"] * full, rtol=1e-4, atol=1e-6)


def test_trpo_rejects_step_without_improvement_and_restores_params():
    p = torch.ones(2, requires_grad=True)
    before = p.detach().clone()

    def evaluate():
        return 1.0, 0.0  # worse than the old loss (0): every backtrack must be refused

    loss = (p - before).sum()  # value 0, non-zero gradient
    kl = (p - before).pow(2).sum()
    stats = trpo_step([p], loss, kl, evaluate, max_kl=0.01)
    assert stats["trpo/accepted"] == 0.0
    assert torch.equal(p.detach(), before)
