"""MAML with a TRPO meta-update (Finn, Abbeel, Levine 2017, "Model-Agnostic Meta-Learning for
Fast Adaptation of Deep Networks", https://arxiv.org/abs/1703.03400).

Inner loop: ``num_inner_steps`` vanilla policy-gradient steps per task with ``inner_lr``, the
advantages from rllab's linear feature baseline fitted per task (GAE with λ = 1 is the plain
Monte-Carlo advantage). Outer loop: TRPO on the post-adaptation surrogate, differentiating
through the inner update (second order) unless ``first_order``. All tasks' inner gradients are one
``vmap(grad(...))`` call; there is no Python loop over tasks. The meta-gradient and the
Fisher-vector products (the KL's exact Hessian at the old parameters, in Gauss–Newton form JᵀMJ)
come from graphs built once per meta-step (``adaptation_jacobian.AdaptationJacobian``).

Deliberate deviations from the paper, each a switch:
* ``curvature_episodes``: the Fisher-vector products of conjugate gradient use the first k
  episodes of each task (as OpenAI baselines' TRPO subsamples its FVP batch); the line search
  still checks the exact KL and loss on all episodes, so the trust region is enforced exactly.
  0 uses all episodes (the paper).
* Advantages are standardised per task (as in rllab's ``center_adv`` and pytorch-maml-rl).
* ``num_inner_steps = 0`` trains the multi-task "pretrained" reference with the same machinery.
* ``pre_update_weight`` (off by default) adds the un-adapted policy's own surrogate to the
  meta-objective, against the drift that collapses some seeds.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from adaptrl.algos.adaptation_jacobian import AdaptationJacobian
from adaptrl.algos.base import Adaptation, Reference, TrainContext, eval_settings
from adaptrl.config import EvalConfig
from adaptrl.envs import Family, Tasks
from adaptrl.errors import ConfigError
from adaptrl.policies import (
    INITS,
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    Params,
    broadcast_per_task,
    forward_params,
)
from adaptrl.returns import discounted_returns, fit_linear_baseline, gae, normalize_per_task
from adaptrl.sampling import PolicyAgent, Sampler, Trajectories
from adaptrl.sampling.step_counted import step_counted
from adaptrl.trust_region import fisher_vector_product, flat, gauss_newton_fvp, natural_step


@dataclass(frozen=True)
class MAMLConfig:
    """MAML-TRPO settings; defaults are the paper's 2D-navigation settings."""

    meta_batch_size: int = 20
    """Tasks per meta-iteration."""
    episodes_per_task: int = 20
    """Episodes sampled per task for each inner step and for the post-adaptation batch."""
    num_inner_steps: int = 1
    """Policy-gradient steps in the inner loop (0 = multi-task 'pretrained' baseline)."""
    inner_lr: float = 0.1
    """Step size of the inner policy-gradient step."""
    first_order: bool = False
    """Drop second derivatives through the inner update (first-order MAML)."""
    gamma: float = 0.99
    """Discount for returns and advantages."""
    gae_lambda: float = 1.0
    """GAE λ (1.0: Monte-Carlo returns minus the baseline, as in the paper)."""
    max_kl: float = 0.01
    """TRPO trust-region radius (mean KL of the adapted policies)."""
    max_initial_kl: float = 0.0
    """0: only the adapted policies' KL is bounded (the paper and the authors' code), so the
    un-adapted policy may move far in one update. > 0: the line search also keeps the mean KL
    of the un-adapted policy, on its own first-step samples, within this bound."""
    pre_update_weight: float = 0.0
    """0: the meta-objective is the adapted policies' return alone (the paper). > 0: plus this
    weight times the un-adapted policy's own surrogate on its first-step samples, which anchors
    it: without it the un-adapted policy can drift off (2 of 6 seeds of the authors' 2D
    navigation settings), its large observations then blow up the fixed inner step. Not part of
    MAML as published; the trust region still bounds the adapted policies' KL. The metrics
    ``loss/surrogate`` and ``trpo/improvement`` then include the term."""
    cg_iters: int = 10
    """Conjugate-gradient iterations for the natural-gradient direction."""
    cg_damping: float = 1e-5
    """Damping added to Fisher-vector products."""
    line_search_steps: int = 15
    """Backtracking steps before an update is rejected."""
    line_search_backtrack: float = 0.8
    """Step shrink factor per backtrack."""
    curvature_episodes: int = 0
    """Episodes per task in the Fisher-vector products (0 = all); see the module docstring."""
    fisher_product: str = "gauss_newton"
    """How Fisher-vector products are computed; both give the KL's exact Hessian at the old
    parameters. gauss_newton: JᵀMJ by one jvp and one vjp through the inner update (faster);
    double_backprop: the Hessian of the KL by back-propagating its gradient (pytorch-maml-rl's
    way, kept to measure against)."""
    hidden_sizes: tuple[int, ...] = (100, 100)
    """Policy MLP hidden layers (paper: two layers of 100 ReLU units)."""
    activation: str = "relu"
    """Hidden activation: relu or tanh."""
    init_std: float = 1.0
    """Initial standard deviation of the Gaussian policy."""
    init: str = "torch"
    """Policy weight initialisation: torch (PyTorch's default) or xavier (Glorot-uniform
    weights, zero biases: rllab's and the MAML authors' code)."""

    def __post_init__(self) -> None:
        for name in ("meta_batch_size", "episodes_per_task", "cg_iters", "line_search_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        for name in ("inner_lr", "max_kl", "init_std"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        if self.max_initial_kl < 0:
            raise ConfigError(f"algo.max_initial_kl must be >= 0, got {self.max_initial_kl}")
        if self.pre_update_weight < 0:
            raise ConfigError(f"algo.pre_update_weight must be >= 0, got {self.pre_update_weight}")
        if self.num_inner_steps < 0:
            raise ConfigError("algo.num_inner_steps must be >= 0")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ConfigError("algo.gamma must be in (0, 1] and algo.gae_lambda in [0, 1]")
        if not 0 < self.line_search_backtrack < 1:
            raise ConfigError("algo.line_search_backtrack must be in (0, 1)")
        if self.cg_damping < 0 or self.curvature_episodes < 0:
            raise ConfigError("algo.cg_damping and algo.curvature_episodes must be >= 0")
        if not self.hidden_sizes or any(h <= 0 for h in self.hidden_sizes):
            raise ConfigError("algo.hidden_sizes must be a non-empty list of positive sizes")
        if self.fisher_product not in ("gauss_newton", "double_backprop"):
            raise ConfigError(
                "algo.fisher_product must be gauss_newton or double_backprop, got "
                f"{self.fisher_product!r}"
            )
        if self.activation not in ("relu", "tanh"):
            raise ConfigError(f"algo.activation must be relu or tanh, got {self.activation!r}")
        if self.init not in INITS:
            raise ConfigError(f"algo.init must be one of {', '.join(INITS)}, got {self.init!r}")


def _detached(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


@dataclass(frozen=True)
class MAMLEvalSettings:
    """MAML's own keys of the ``evaluate`` section: how it adapts at meta-test."""

    inner_lrs: tuple[float, ...] = (0.1, 0.05)
    """Step size of each adaptation step; the last value repeats (paper: 0.1 then 0.05)."""
    batch_steps: int = 0
    """> 0 counts each adaptation step's batch in env steps, as rllab's samplers do (the MAML
    authors' test script: batch_size=4000): episodes, in order, until their steps reach
    ``batch_steps`` per task, drawn ``episodes_per_task`` at a time (at most 4 times, to bound
    memory). Episodes that end early (a goal reached) then make the batch hold more of them.
    0: ``episodes_per_task`` episodes."""
    tune_reference_lrs: bool = True
    """Scale the references' step-size schedule for their best return on training tasks (so a
    reference is not handicapped by the meta-learner's schedule); false gives them exactly
    ``inner_lrs``, as the MAML authors' test script does."""

    def __post_init__(self) -> None:
        if not self.inner_lrs or any(lr <= 0 for lr in self.inner_lrs):
            raise ConfigError("evaluate.inner_lrs must be a non-empty list of positive numbers")
        if self.batch_steps < 0:
            raise ConfigError("evaluate.batch_steps must be >= 0 (0: episodes_per_task)")


REFERENCE_LR_SCALES = (1.0, 0.3, 0.1, 0.03, 0.01)
"""A reference's step-size schedule is scaled by the best of these on training tasks."""


@dataclass
class PGBatch:
    """Policy-gradient data laid out per task: obs [T, n, E, d], actions [T, n, E, A],
    advantages and mask [T, n, E] (advantages standardised per task, 0 where masked)."""

    obs: torch.Tensor
    actions: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor

    def episodes(self, count: int) -> PGBatch:
        return PGBatch(
            *(x[:, :, :count] for x in (self.obs, self.actions, self.advantages, self.mask))
        )


@dataclass
class AdaptedPolicies:
    """Per-task adapted parameters; ``policy(i)`` is task i's policy as a standalone module."""

    params: Params
    """Adapted parameters with a leading task dimension (shared if no step was taken)."""
    per_task: bool
    template: torch.nn.Module

    def policy(self, task: int) -> torch.nn.Module:
        """The policy adapted to task ``task`` as a standalone module (for deployment)."""
        module = copy.deepcopy(self.template)
        params = {k: v[task] if self.per_task else v for k, v in self.params.items()}
        module.load_state_dict(params)
        return module


class MAML:
    """Meta-learner (the ``Learner`` protocol): one TRPO meta-step per ``train_iteration``."""

    x_label = "gradient steps"
    EvalSettings = MAMLEvalSettings
    trial_episodes = 1  # each adaptation point is a fresh batch of single episodes

    def __init__(
        self,
        config: MAMLConfig,
        family: Family,
        sampler: Sampler,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config, self.family, self.sampler = config, family, sampler
        self.device = torch.device(device)
        obs_space, act_space = family.spaces()
        if hasattr(act_space, "n"):  # Discrete: a softmax policy
            self.policy = CategoricalMLPPolicy(
                obs_space.shape[0],
                int(act_space.n),
                config.hidden_sizes,
                config.activation,
                config.init,
            )
        elif hasattr(act_space, "low") and len(act_space.shape) == 1:
            self.policy = GaussianMLPPolicy(
                obs_space.shape[0],
                act_space.shape[0],
                config.hidden_sizes,
                config.activation,
                config.init_std,
                config.init,
            )
        else:
            raise ConfigError(
                f"MAML needs a 1-D Box or a Discrete action space; env '{family.spec.name}' has "
                f"{act_space}"
            )
        self.policy = self.policy.to(self.device)
        self.distribution = self.policy.distribution

    # ----------------------------------------------------------------------------- sampling
    @classmethod
    def references(cls) -> dict[str, Reference]:
        return {
            "domain_randomised": Reference(
                "one policy trained on all training tasks (no inner step) for the same wall-clock "
                "time, acting without adaptation: what one would deploy instead",
                {"num_inner_steps": 0},
                adapts=False,
                trained_as="pretrained",  # old runs have it: no new training
            ),
            "pretrained": Reference(
                "the domain-randomised policy, then the same inner loop (step sizes tuned)",
                {"num_inner_steps": 0},
            ),
            "oracle": Reference(
                "one policy trained like the domain-randomised one, with the task in its "
                "observation, acting without adaptation: an upper bound",
                {"num_inner_steps": 0},
                adapts=False,
                env_overrides={"task_in_obs": True},
                added_later=True,
            ),
            "random_init": Reference("untrained policy, then the same inner loop"),
        }

    def _sample(
        self, tasks: Tasks, params: Params, per_task: bool, episodes: int, seed: int
    ) -> Trajectories:
        n = next(iter(tasks.values())).shape[0]
        agent = PolicyAgent(self.policy, params, per_task, n)
        return self.sampler.sample(agent, tasks, seed, episodes).to(self.device)

    def _pg_batch(self, traj: Trajectories) -> PGBatch:
        c = self.config
        ends = traj.terminated | traj.truncated
        returns = discounted_returns(traj.rewards, ends, c.gamma)
        values = fit_linear_baseline(
            traj.by_task(traj.obs), traj.by_task(returns), traj.by_task(traj.mask)
        ).reshape(returns.shape)
        # Value after the last step is 0: each row is one finite-horizon episode.
        next_values = torch.cat([values[1:], torch.zeros_like(values[:1])])
        adv = gae(traj.rewards, values, next_values, traj.terminated, ends, c.gamma, c.gae_lambda)
        mask = traj.by_task(traj.mask)
        return PGBatch(
            traj.by_task(traj.obs),
            traj.by_task(traj.actions),
            normalize_per_task(traj.by_task(adv), mask),
            mask,
        )

    # ----------------------------------------------------------------------------- inner loop
    def _task_pg_loss(self, params: Params, obs, actions, advantages, mask) -> torch.Tensor:
        """REINFORCE loss of one task: obs [T, E, d] -> scalar."""
        out = functional_call(self.policy, params, (obs,))
        log_prob = self.distribution.log_prob(self.distribution.params_of(out), actions)
        return -(log_prob * advantages).sum() / mask.sum().clamp_min(1.0)

    def inner_step(self, params: Params, per_task: bool, batch: PGBatch, lr: float) -> Params:
        """θ'ᵢ = θᵢ - lr ∇ L_i(θᵢ) for all tasks at once (pure: params in, params out).

        Differentiable with respect to ``params`` (second order) unless ``first_order``.
        """
        in_dims = (0 if per_task else None, 1, 1, 1, 1)
        grads = vmap(grad(self._task_pg_loss), in_dims=in_dims)(
            params, batch.obs, batch.actions, batch.advantages, batch.mask
        )
        if self.config.first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        return {k: params[k] - lr * grads[k] for k in params}

    def _adapt_through(self, batches: list[PGBatch]) -> tuple[Params, bool]:
        """The inner loop on fixed batches from the policy's own parameters."""
        params, per_task = self.policy.params(), False
        for batch in batches:
            params, per_task = self.inner_step(params, per_task, batch, self.config.inner_lr), True
        return params, per_task

    # ----------------------------------------------------------------------------- outer loss
    def _distribution(self, params: Params, per_task: bool, obs: torch.Tensor) -> tuple:
        """The parameters of the policy's distribution at ``obs``: (mean, log_std) or
        (logits,), each broadcastable against the first."""
        out = forward_params(self.policy, params, obs, per_task, task_dim=1)
        first, *rest = self.distribution.params_of(out)
        return (first, *(broadcast_per_task(p, first, per_task, task_dim=1) for p in rest))

    def _surrogate_and_kl(
        self, params, per_task, post: PGBatch, old
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """TRPO surrogate -E[π/π_old · A] and mean KL(π_old || π), per task then averaged."""
        return self._surrogate_and_kl_of(self._distribution(params, per_task, post.obs), post, old)

    def _surrogate_and_kl_of(
        self, dist: tuple, post: PGBatch, old
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_prob = self.distribution.log_prob(dist, post.actions)
        old_dist, old_log_prob = old
        ratio = torch.exp(log_prob - old_log_prob)
        count = post.mask.sum((0, 2)).clamp_min(1.0)
        surrogate = -((ratio * post.advantages).sum((0, 2)) / count).mean()
        kl = self.distribution.kl(old_dist, dist)
        return surrogate, ((kl * post.mask).sum((0, 2)) / count).mean()

    def _initial_kl(self, first: PGBatch):
        """() -> mean KL(π_θ_old || π_θ) of the un-adapted policy on its own first-step samples,
        for θ as the parameters stand at the call (θ_old: as they stand now)."""
        with torch.no_grad():
            old = self._distribution(_detached(self.policy.params()), False, first.obs)
        count = first.mask.sum((0, 2)).clamp_min(1.0)

        def kl() -> float:
            with torch.no_grad():
                new = self._distribution(self.policy.params(), False, first.obs)
                per_task = (self.distribution.kl(old, new) * first.mask).sum((0, 2)) / count
            return float(per_task.mean())

        return kl

    def pre_update_surrogate(self, first: PGBatch):
        """() -> the un-adapted policy's TRPO surrogate on its own first-step samples, for θ
        as the parameters stand at the call, importance-weighted against θ as they stand now
        (``pre_update_weight``'s term; differentiable unless called under no_grad)."""
        old = self._old_distribution(self.policy.params(), False, first)

        def surrogate() -> torch.Tensor:
            dist = self._distribution(self.policy.params(), False, first.obs)
            return self._surrogate_and_kl_of(dist, first, old)[0]

        return surrogate

    def _sample_weights(self, post: PGBatch) -> torch.Tensor:
        """Each sample's weight in the mean KL: mask / (task's sample count) / tasks."""
        count = post.mask.sum((0, 2), keepdim=True).clamp_min(1.0)
        return post.mask / count / post.mask.shape[1]

    def _new_jacobian(self, num_tasks: int) -> AdaptationJacobian:
        return AdaptationJacobian(_detached(self.policy.params()), num_tasks)

    def _jacobian_step(self, jacobian: AdaptationJacobian, batch: PGBatch) -> None:
        jacobian.step(
            lambda params, per_task: self.inner_step(params, per_task, batch, self.config.inner_lr)
        )

    def _finished_jacobian(
        self, batches: list[PGBatch], post: PGBatch, jacobian: AdaptationJacobian | None = None
    ) -> AdaptationJacobian:
        """The Jacobian through the inner loop on ``batches`` (steps already taken in
        ``jacobian`` are reused), finished with the distribution at ``post.obs``."""
        if jacobian is None:
            jacobian = self._new_jacobian(post.obs.shape[1])
            for batch in batches:
                self._jacobian_step(jacobian, batch)
        jacobian.finish(
            lambda params, per_task: tuple(self._distribution(params, per_task, post.obs))
        )
        return jacobian

    def meta_objective(
        self,
        batches: list[PGBatch],
        post: PGBatch,
        jacobian: AdaptationJacobian | None = None,
        pre_surrogate: Callable[[], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, Any]:
        """The TRPO meta-objective at the current parameters θ, differentiated through the
        inner loop on ``batches``: (surrogate loss, its flat gradient, old distribution, FVP).
        ``jacobian``: the inner steps the rollouts already took (built here if not given).
        ``pre_surrogate``: ``pre_update_surrogate(batches[0])``, when the caller's line search
        shares it (built here if not given and ``pre_update_weight`` > 0).

        Graphs from θ through the inner loop to the post-adaptation distribution are built once
        (``AdaptationJacobian``) and give both the gradient and, with ``gauss_newton``, the
        Fisher-vector products.
        """
        c = self.config
        k = c.curvature_episodes
        subsample = 0 < k < c.episodes_per_task
        jacobian = self._finished_jacobian(batches, post, jacobian)
        dist = jacobian.outputs
        old_dist = tuple(d.detach() for d in dist)
        old = (old_dist, self.distribution.log_prob(old_dist, post.actions))
        leaf = tuple(d.detach().requires_grad_() for d in dist)
        loss, _ = self._surrogate_and_kl_of(leaf, post, old)
        grad_flat = jacobian.vjp(torch.autograd.grad(loss, leaf))
        if c.pre_update_weight and batches:
            pre_loss = (pre_surrogate or self.pre_update_surrogate(batches[0]))()
            params = list(self.policy.parameters())
            grad_flat = grad_flat + c.pre_update_weight * flat(
                torch.autograd.grad(pre_loss, params)
            )
            loss = loss + c.pre_update_weight * pre_loss.detach()

        # Curvature on the first k episodes per task (see the module docstring).
        sub_batches = [b.episodes(k) for b in batches] if subsample else batches
        sub_post = post.episodes(k) if subsample else post
        if c.fisher_product == "gauss_newton":
            if subsample:
                jacobian = self._finished_jacobian(sub_batches, sub_post)
            sub_old = tuple(d.detach() for d in jacobian.outputs)
            fvp = gauss_newton_fvp(
                jacobian.jvp,
                jacobian.vjp,
                self.distribution.fisher(sub_old, self._sample_weights(sub_post)),
                c.cg_damping,
            )
        else:
            sub_adapted, per_task = self._adapt_through(sub_batches)
            sub_old = self._old_distribution(sub_adapted, per_task, sub_post)
            _, kl = self._surrogate_and_kl(sub_adapted, per_task, sub_post, sub_old)
            fvp = fisher_vector_product(kl, list(self.policy.parameters()), c.cg_damping)
        return loss.detach(), grad_flat, old, fvp

    def _old_distribution(self, params, per_task, post: PGBatch):
        with torch.no_grad():
            dist = self._distribution(_detached(params), per_task, post.obs)
            return dist, self.distribution.log_prob(dist, post.actions)

    # ----------------------------------------------------------------------------- meta-step
    def train_iteration(self, ctx: TrainContext) -> dict[str, float]:
        """Fresh training tasks, then ``meta_train_step``."""
        tasks = self.family.tasks.sample(self.config.meta_batch_size, "train", ctx.generator)
        return self.meta_train_step(tasks, ctx.seed())

    def meta_train_step(self, tasks: Tasks, seed: int = 0) -> dict[str, float]:
        """Sample → adapt → sample → TRPO meta-update. Returns detached metrics."""
        c = self.config
        start = time.perf_counter()
        # Each inner step is computed once, with its graph to θ: the rollouts use its detached
        # result and the meta-objective differentiates through the very same step.
        jacobian = self._new_jacobian(next(iter(tasks.values())).shape[0])
        batches, pre_return, steps = [], None, 0
        for k in range(c.num_inner_steps):
            traj = self._sample(tasks, *jacobian.adapted(), c.episodes_per_task, seed + k)
            steps += traj.num_steps
            pre_return = traj.task_returns().mean() if pre_return is None else pre_return
            batches.append(self._pg_batch(traj))
            self._jacobian_step(jacobian, batches[-1])
        post_traj = self._sample(
            tasks, *jacobian.adapted(), c.episodes_per_task, seed + c.num_inner_steps
        )
        post = self._pg_batch(post_traj)
        if self.device.type == "cuda":  # GPU work is asynchronous: time the phases apart
            torch.cuda.synchronize(self.device)
        sampled = time.perf_counter()

        pre_surrogate = (  # one term for the gradient and the line search
            self.pre_update_surrogate(batches[0]) if c.pre_update_weight and batches else None
        )  # no inner step (the pretrained reference): the objective is already the policy's own
        loss, grad_flat, old, fvp = self.meta_objective(batches, post, jacobian, pre_surrogate)
        initial_kl = self._initial_kl(batches[0]) if batches else None
        adapted_kl = [0.0]  # of the last parameters tried: the accepted ones, if any

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                new, new_per_task = self._adapt_through(batches)
                new_loss, new_kl = self._surrogate_and_kl(new, new_per_task, post, old)
                if pre_surrogate is not None:  # the same objective as meta_objective's
                    new_loss = new_loss + c.pre_update_weight * pre_surrogate()
            adapted_kl[0] = kl = float(new_kl)
            if c.max_initial_kl and initial_kl is not None:  # both bounds as one: KL ≤ max_kl
                kl = max(kl, initial_kl() * c.max_kl / c.max_initial_kl)
            return float(new_loss), kl

        trpo = natural_step(
            list(self.policy.parameters()),
            grad_flat,
            fvp,
            float(loss),
            evaluate,
            c.max_kl,
            c.cg_iters,
            c.line_search_backtrack,
            c.line_search_steps,
        )
        if initial_kl is not None:
            trpo["trpo/initial_kl"] = initial_kl()
            if c.max_initial_kl and trpo["trpo/accepted"]:  # report the adapted KL alone
                trpo["trpo/kl"] = adapted_kl[0]
        end = time.perf_counter()
        post_return = post_traj.task_returns().mean()
        steps += post_traj.num_steps
        return {
            "adapt/return_pre": float(pre_return if pre_return is not None else post_return),
            "adapt/return_post": float(post_return),
            "loss/surrogate": float(loss),
            **trpo,
            "perf/sample_s": sampled - start,
            "perf/update_s": end - sampled,
            "perf/iteration_s": end - start,
            "perf/env_steps_per_s": steps / max(sampled - start, 1e-9),
        }

    # ----------------------------------------------------------------------------- meta-test
    def adapt(
        self,
        tasks: Tasks,
        num_steps: int,
        inner_lrs: tuple[float, ...] | None = None,
        episodes_per_task: int | None = None,
        seed: int = 0,
        batch_steps: int = 0,
    ) -> Adaptation:
        """Adapt to ``tasks`` with ``num_steps`` policy-gradient steps, recording the return
        before adaptation and after every step. Step k uses ``inner_lrs[k]`` (last repeats).
        ``batch_steps`` > 0: each batch is counted in env steps (``MAMLEvalSettings``)."""
        lrs = inner_lrs or (self.config.inner_lr,)
        episodes = episodes_per_task or self.config.episodes_per_task
        params = _detached(self.policy.params())
        per_task, returns, trajectories = False, [], []
        for step in range(num_steps + 1):
            if batch_steps:
                traj = self._sample_steps(
                    tasks, params, per_task, episodes, batch_steps, seed + step
                )
            else:
                traj = self._sample(tasks, params, per_task, episodes, seed + step)
            returns.append(traj.task_returns())
            trajectories.append(traj)
            if step == num_steps:
                break
            lr = lrs[min(step, len(lrs) - 1)]
            params = self.inner_step(params, per_task, self._pg_batch(traj), lr)
            params, per_task = _detached(params), True
        return Adaptation(
            torch.stack(returns),
            policies=AdaptedPolicies(params, per_task, self.policy),
            trajectories=trajectories,
        )

    def _sample_steps(
        self, tasks: Tasks, params: Params, per_task: bool, episodes: int, budget: int, seed: int
    ) -> Trajectories:
        """rllab's step-counted batch of ``budget`` env steps per task (``step_counted``)."""
        return step_counted(
            lambda s: self._sample(tasks, params, per_task, episodes, s), budget, seed
        )

    def adapt_from_episodes(
        self, episodes: list[dict[str, Any]], lr: float | None = None
    ) -> torch.nn.Module:
        """One inner step from episodes collected anywhere (a user's own env, a real system):
        each episode is a dict of ``obs`` [T, d], ``actions`` [T, A] (as sampled; [T] integers
        for discrete actions), ``rewards`` [T] and optionally ``terminated`` (bool: the episode
        ended in the MDP, not by a time limit). Returns the adapted policy as a standalone
        module. Same maths as the inner loop (linear baseline, GAE, per-task advantage
        normalisation)."""
        if not episodes:
            raise ConfigError("adapt_from_episodes needs at least one episode")
        discrete = not self.distribution.continuous
        traj = Trajectories.from_episodes(episodes, discrete).to(self.device)
        params = self.inner_step(
            _detached(self.policy.params()), False, self._pg_batch(traj), lr or self.config.inner_lr
        )
        return AdaptedPolicies(_detached(params), True, self.policy).policy(0)

    def meta_test(self, tasks: Tasks, cfg: EvalConfig, seed: int = 0) -> Adaptation:
        """The evaluation protocol's entry point: the paper's step-size schedule, K steps."""
        own = eval_settings(self, cfg)
        return self.adapt(
            tasks, cfg.num_steps, own.inner_lrs, cfg.episodes_per_task, seed, own.batch_steps
        )

    def meta_test_steps(self, cfg: EvalConfig, horizon: int) -> int:
        """One batch per adaptation point; a step-counted batch draws up to 4 rounds."""
        episodes = cfg.episodes_per_task * (4 if eval_settings(self, cfg).batch_steps else 1)
        return (cfg.num_steps + 1) * episodes * horizon

    def tune_for_reference(
        self, cfg: EvalConfig, score: Callable[[EvalConfig], float]
    ) -> EvalConfig:
        """The step-size schedule scaled by the best of ``REFERENCE_LR_SCALES`` (the mean
        return after the last step on training tasks): a step size that suits the meta-learned
        initialisation can make a plain policy diverge."""
        own = eval_settings(self, cfg)
        if not own.tune_reference_lrs:
            return cfg
        best, best_return = own.inner_lrs, -math.inf
        for scale in REFERENCE_LR_SCALES:
            lrs = tuple(round(lr * scale, 8) for lr in own.inner_lrs)
            final = score(replace(cfg, adaptation=replace(own, inner_lrs=lrs)))
            if math.isfinite(final) and final > best_return:
                best, best_return = lrs, final
        return replace(cfg, adaptation=replace(own, inner_lrs=best))

    def evaluation_record(self, cfg: EvalConfig, for_reference: bool) -> dict[str, Any]:
        """The step sizes it adapted with (none when it took no step) and rllab's batches."""
        own = eval_settings(self, cfg)
        record: dict[str, Any] = {}
        if cfg.num_steps:
            record["inner_lrs"] = list(own.inner_lrs)
        if cfg.num_steps and for_reference and own.tune_reference_lrs:
            record["inner_lrs_tuned"] = "scaled for the best return on training tasks"
        if own.batch_steps:  # episodes drawn until this many steps per task and step
            record["batch_steps"] = own.batch_steps
        return record

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict()}

    def bulk_state(self) -> dict[str, torch.Tensor]:
        return {}  # on-policy: nothing kept between iterations but the networks

    def load_bulk_state(self, arrays) -> None:
        pass

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
