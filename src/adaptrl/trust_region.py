"""TRPO's natural-gradient step: conjugate gradient on Fisher-vector products and a backtracking
line search that enforces the KL bound (Schulman et al. 2015, appendix C)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def set_flat_(params: Sequence[torch.Tensor], vector: torch.Tensor) -> None:
    """Write ``vector`` into ``params`` in place (no autograd history)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(vector[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``x -> A x``."""
    return conjugate_gradient_with_residual(matvec, b, iters, residual_tol)[0]


def conjugate_gradient_with_residual(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``conjugate_gradient`` that also returns its residual r = b - A x, kept up to date by
    the iteration itself, so A x = b - r costs no extra product."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        if rr_new < residual_tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, r


def fisher_vector_product(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (∇² KL) v + damping v`` by double back-propagation through ``kl``'s graph.

    At the old parameters the Hessian of the KL is the Fisher information matrix.
    """
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(grads @ v, params, retain_graph=True)
        return flat(hv) + damping * v

    return fvp


def gauss_newton_fvp(
    jvp: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    vjp: Callable[[tuple[torch.Tensor, ...]], torch.Tensor],
    output_fisher: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]],
    damping: float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fisher-vector products in Gauss–Newton form, v -> Jᵀ M J v + damping v.

    J is the Jacobian of the map from parameters to a distribution's parameters (``jvp``: v ->
    Jv, ``vjp``: u -> Jᵀu) and ``output_fisher`` applies M, the KL's Hessian in distribution
    space at the old distribution, weighted per sample. At the old parameters the KL's gradient
    in distribution space is zero, so JᵀMJ *is* the KL's Hessian, exactly, with no third
    derivatives: no double back-propagation through the KL's gradient.
    """
    return lambda v: vjp(output_fisher(jvp(v))) + damping * v


def trpo_step(
    params: Sequence[torch.Tensor],
    loss: torch.Tensor,
    kl_for_curvature: torch.Tensor,
    evaluate: Callable[[], tuple[float, float]],
    max_kl: float,
    damping: float = 1e-5,
    cg_iters: int = 10,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> dict[str, float]:
    """One TRPO update of ``params`` (in place) minimising ``loss`` with mean KL ≤ ``max_kl``.

    loss: scalar with a graph to params; kl_for_curvature: scalar KL (zero at the current params)
    whose Hessian defines the metric (double back-propagation); evaluate(): (loss, kl) at the
    params' current values, no graph needed. See ``natural_step``.
    """
    g = flat(torch.autograd.grad(loss, params, retain_graph=True))
    fvp = fisher_vector_product(kl_for_curvature, params, damping)
    return natural_step(
        params,
        g,
        fvp,
        float(loss.detach()),
        evaluate,
        max_kl,
        cg_iters,
        backtrack_ratio,
        max_backtracks,
    )


def natural_step(
    params: Sequence[torch.Tensor],
    grad: torch.Tensor,
    fvp: Callable[[torch.Tensor], torch.Tensor],
    old_loss: float,
    evaluate: Callable[[], tuple[float, float]],
    max_kl: float,
    cg_iters: int = 10,
    backtrack_ratio: float = 0.8,
    max_backtracks: int = 15,
) -> dict[str, float]:
    """TRPO's step given the loss gradient and any Fisher-vector product (damping included).

    Conjugate gradient for F⁻¹g, a step scaled so that ½ sᵀFs = ``max_kl``, then backtracking
    until ``evaluate()`` shows a lower loss with mean KL ≤ ``max_kl``. The step is rejected
    (params restored) if no backtrack qualifies.
    """
    rejected = {
        "trpo/accepted": 0.0,
        "trpo/step_fraction": 0.0,
        "trpo/kl": 0.0,
        "trpo/improvement": 0.0,
        "trpo/grad_norm": float(grad.norm()),
    }
    direction, residual = conjugate_gradient_with_residual(fvp, grad, cg_iters)
    # sᵀFs from CG's own residual (F s = g - r): one Fisher-vector product fewer per step.
    shs = 0.5 * (direction @ (grad - residual))
    if not torch.isfinite(shs) or shs <= 0:
        return rejected
    full_step = direction * torch.sqrt(max_kl / shs)  # so that ½ sᵀFs = max_kl
    old = flat([p.detach() for p in params]).clone()
    fraction = 1.0
    for _ in range(max_backtracks):
        set_flat_(params, old - fraction * full_step)
        new_loss, new_kl = evaluate()
        if new_loss < old_loss and new_kl <= max_kl:
            return {
                "trpo/accepted": 1.0,
                "trpo/step_fraction": fraction,
                "trpo/kl": new_kl,
                "trpo/improvement": old_loss - new_loss,
                "trpo/grad_norm": float(grad.norm()),
            }
        fraction *= backtrack_ratio
    set_flat_(params, old)
    return rejected
