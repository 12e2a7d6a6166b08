"""Jacobian-vector products through MAML's inner loop, on graphs built once per meta-step.

MAML's post-adaptation distribution is d(θ) = f(θ_K), θ_{k+1} = θ_k - α ∇L_k(θ_k), θ_0 = θ, so
its Jacobian is J = J_f(θ_K) · B_K ⋯ B_1 with B_k = I - α H_k (H_k: the Hessian of task i's
inner loss, per task; symmetric, so B_k is its own transpose). TRPO needs Jᵀu (the gradient)
and, in every conjugate-gradient iteration, JᵀMJv (the Fisher-vector product). Here each factor
is a retained autograd graph, built once:

* B_k x: one backward through step k's gradient graph (a Hessian-vector product, by symmetry);
* J_f x: one backward through the graph of J_fᵀu, which is linear in u (the double-vjp trick);
* J_fᵀ u: one backward through f.

Nothing is recomputed per product (a ``torch.func.jvp`` re-runs the forward and the inner
gradient each time, which cost as much again). The first step starts from per-task copies of θ,
so each task's B_1 stays separate; the products sum over tasks at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from adaptrl.policies import Params

InnerStep = Callable[[Params, bool], Params]
"""(params, per_task) -> adapted params, differentiable (one inner step on fixed data)."""


class AdaptationJacobian:
    """J of θ -> distribution(θ_K) with retained graphs; see the module docstring.

    Built as the meta-step runs: ``step()`` once per inner step (its detached result,
    ``adapted()``, is what the next rollout samples with, so the inner step is computed once),
    then ``finish()`` with the post-adaptation distribution."""

    def __init__(self, base: Params, num_tasks: int) -> None:
        self.names = list(base)
        self.shapes = {k: v.shape for k, v in base.items()}
        self.num_tasks = num_tasks
        self.steps_io: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
        self.per_task = False
        self._params = {k: v.detach() for k, v in base.items()}

    def adapted(self) -> tuple[Params, bool]:
        """The parameters after the steps so far (detached) and whether they are per task."""
        return {k: v.detach() for k, v in self._params.items()}, self.per_task

    def step(self, inner_step: InnerStep) -> None:
        """One more inner step, its graph kept (from per-task copies of θ for the first)."""
        params = self._params
        if not self.per_task:
            params = {k: v.unsqueeze(0).expand(self.num_tasks, *v.shape) for k, v in params.items()}
        leaf = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self._params, self.per_task = inner_step(leaf, True), True
        self.steps_io.append(([leaf[k] for k in self.names], [self._params[k] for k in self.names]))

    def finish(
        self, distribution: Callable[[Params, bool], tuple[torch.Tensor, ...]]
    ) -> tuple[torch.Tensor, ...]:
        """The post-adaptation distribution's parameters, with the graph the products need."""
        self.leaf = {k: v.detach().requires_grad_() for k, v in self._params.items()}
        self.outputs = distribution(self.leaf, self.per_task)
        self._u = tuple(torch.zeros_like(o, requires_grad=True) for o in self.outputs)
        self._leaf_list = [self.leaf[k] for k in self.names]
        self._jft_u: tuple[torch.Tensor, ...] | None = None
        return self.outputs

    # ----------------------------------------------------------------------------- factors
    def _through_steps(self, xs: list[torch.Tensor], order: range) -> list[torch.Tensor]:
        for k in order:  # (first-order MAML: the graph is the identity, B = I)
            inputs, outputs = self.steps_io[k]
            xs = list(torch.autograd.grad(outputs, inputs, xs, retain_graph=True))
        return xs

    def _jf(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        if self._jft_u is None:  # J_fᵀu as a graph in u (linear), built on first use
            self._jft_u = torch.autograd.grad(
                self.outputs, self._leaf_list, self._u, create_graph=True
            )
        jv = torch.autograd.grad(self._jft_u, self._u, xs, retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(u) if j is None else j for j, u in zip(jv, self._u))

    def _jft(self, cotangents: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return list(
            torch.autograd.grad(self.outputs, self._leaf_list, cotangents, retain_graph=True)
        )

    # ----------------------------------------------------------------------------- products
    def vjp(self, cotangents: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Jᵀu, flat over θ's parameters."""
        xs = self._through_steps(self._jft(cotangents), range(len(self.steps_io) - 1, -1, -1))
        return self._flat(xs)

    def jvp(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Jv for a flat v over θ's parameters."""
        xs, offset = [], 0
        for k in self.names:
            n = self.shapes[k].numel()
            x = v[offset : offset + n].view(self.shapes[k])
            offset += n
            xs.append(x.unsqueeze(0).expand(self.leaf[k].shape) if self.per_task else x)
        return self._jf(self._through_steps(xs, range(len(self.steps_io))))

    def _flat(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([(x.sum(0) if self.per_task else x).reshape(-1) for x in xs])
