"""Action distributions: the one place that knows how a policy's output becomes an action, a
log-probability, an entropy, a KL divergence and the Fisher information TRPO's products need.

A distribution is stateless; its *parameters* travel as a tuple of tensors: ``(mean, log_std)``
for the diagonal Gaussian (``log_std`` broadcasts against ``mean``), ``(logits,)`` for the
categorical. Policies name theirs (``policy.distribution``) and learners, agents and deployment
call it, so adding an action space touches this file alone.

Sampling takes the noise as an argument (``sample(params, noise)``): samplers draw it from each
row's counter-based stream (``adaptrl.rng``), so a row's actions never depend on which rows share
its batch; ``draw(params, generator)`` is the same from a ``torch.Generator`` (deployment).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from adaptrl.rng import normal_sequence, uniform_sequence

Params = tuple[torch.Tensor, ...]

_LOG_2PI = math.log(2 * math.pi)
_GAUSSIAN_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)


class DiagGaussian:
    """N(mean, diag(exp(log_std)²)), summed over the last (action) dimension."""

    continuous = True

    def params_of(self, out: Any) -> Params:
        """A Gaussian policy's output, ``(mean, log_std)``, as parameters."""
        mean, log_std = out
        return mean, log_std

    def log_prob(self, params: Params, actions: torch.Tensor) -> torch.Tensor:
        """log π(a): [..., A] -> [...]."""
        mean, log_std = params
        z = (actions - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * _LOG_2PI).sum(-1)

    def entropy(self, params: Params) -> torch.Tensor:
        mean, log_std = params
        return (log_std.expand_as(mean) + _GAUSSIAN_ENTROPY).sum(-1)

    def log_prob_entropy(self, params: Params, actions: torch.Tensor):
        """(log π(a), entropy) together, as a policy-gradient loss with a bonus takes them."""
        return self.log_prob(params, actions), self.entropy(params)

    def kl(self, p: Params, q: Params) -> torch.Tensor:
        """KL(p || q): [..., A] -> [...]."""
        (mean_p, log_std_p), (mean_q, log_std_q) = p, q
        var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
        kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5
        return kl.sum(-1)

    def noise(self, keys: torch.Tensor, num_steps: int, action_dim: int) -> torch.Tensor:
        """Standard normals [num_steps, B, A] from the rows' streams ``keys`` [B]."""
        return normal_sequence(keys, num_steps, action_dim)

    def sample(self, params: Params, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions, their log-probability) from standard normal ``noise`` [..., A]; the
        log-probability is taken from the noise itself (exact, no division by the std)."""
        mean, log_std = params
        actions = mean + noise * log_std.exp()
        log_prob = -(0.5 * noise.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)
        return actions, log_prob.expand(actions.shape[:-1])

    def draw(self, params: Params, generator: torch.Generator) -> torch.Tensor:
        mean = params[0]
        return self.sample(params, torch.randn(mean.shape, generator=generator))[0]

    def mode(self, params: Params) -> torch.Tensor:
        return params[0]

    def action_features(self, actions: torch.Tensor, size: int, dtype) -> torch.Tensor:
        """Actions as a policy's input features (RL²'s previous action): the vector itself."""
        return actions.to(dtype)

    def null_action(self, batch: int, size: int, device) -> torch.Tensor:
        """The 'previous action' before any action: zeros [batch, size]."""
        return torch.zeros(batch, size, device=device)

    def fisher(self, params: Params, weights: torch.Tensor) -> Callable[[Params], Params]:
        """u -> M u, with M the Hessian of Σ weights · KL(p || π) with respect to π's
        parameters at π = p (the Gauss–Newton middle factor of a Fisher-vector product):
        diag(w/σ²) for the mean and 2·Σw for a state-independent log σ. ``weights``: [...]."""
        mean, log_std = params
        w = weights.unsqueeze(-1)
        mean_w = w * torch.exp(-2.0 * log_std)
        log_std_w = 2.0 * w.expand_as(mean).sum_to_size(log_std.shape)
        return lambda u: (u[0] * mean_w, u[1] * log_std_w)


class Categorical:
    """Softmax over the last dimension's logits; actions are int64 indices."""

    continuous = False

    def params_of(self, out: Any) -> Params:
        """A softmax policy's output, the logits, as parameters."""
        return (out,)

    def log_prob(self, params: Params, actions: torch.Tensor) -> torch.Tensor:
        """log π(a): logits [..., K], actions [...] -> [...]."""
        log_p = torch.log_softmax(params[0], -1)
        return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, params: Params) -> torch.Tensor:
        log_p = torch.log_softmax(params[0], -1)
        return -(log_p.exp() * log_p).sum(-1)

    def log_prob_entropy(self, params: Params, actions: torch.Tensor):
        """(log π(a), entropy) from one log-softmax (one node for autograd, too)."""
        log_p = torch.log_softmax(params[0], -1)
        log_prob = log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return log_prob, -(log_p.exp() * log_p).sum(-1)

    def kl(self, p: Params, q: Params) -> torch.Tensor:
        log_p, log_q = torch.log_softmax(p[0], -1), torch.log_softmax(q[0], -1)
        return (log_p.exp() * (log_p - log_q)).sum(-1)

    def noise(self, keys: torch.Tensor, num_steps: int, num_actions: int) -> torch.Tensor:
        """Uniforms [num_steps, B] from the rows' streams ``keys`` [B]."""
        return uniform_sequence(keys, num_steps, 1)[..., 0]

    def sample(self, params: Params, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions, their log-probability) by the inverse CDF of uniform ``noise`` [...]:
        the same draw for a row whatever else is in its batch."""
        log_p = torch.log_softmax(params[0], -1)
        cdf = log_p.exp().cumsum(-1)
        actions = (cdf < noise.unsqueeze(-1)).sum(-1).clamp_max(log_p.shape[-1] - 1)
        return actions, log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def draw(self, params: Params, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(params[0].shape[:-1], generator=generator)
        return self.sample(params, u)[0]

    def mode(self, params: Params) -> torch.Tensor:
        return params[0].argmax(-1)

    def action_features(self, actions: torch.Tensor, size: int, dtype) -> torch.Tensor:
        """Actions as a policy's input features: one-hot vectors of ``size`` entries."""
        return torch.nn.functional.one_hot(actions, size).to(dtype)

    def null_action(self, batch: int, size: int, device) -> torch.Tensor:
        """The 'previous action' before any action: index 0 (RL²'s convention)."""
        return torch.zeros(batch, dtype=torch.long, device=device)

    def fisher(self, params: Params, weights: torch.Tensor) -> Callable[[Params], Params]:
        """u -> M u with M = w (diag(p) - ppᵀ) in logits (see ``DiagGaussian.fisher``)."""
        p, w = torch.softmax(params[0], -1), weights.unsqueeze(-1)

        def product(u: Params) -> Params:
            pu = p * u[0]
            return (w * (pu - p * pu.sum(-1, keepdim=True)),)

        return product


class TanhGaussian(DiagGaussian):
    """tanh(u), u ~ N(mean, diag(σ²)): actions in (-1, 1), as SAC (and PEARL's actor) use.

    Log-probabilities include the change of variables, log(1 - tanh(u)²) written as
    2 (log 2 - u - softplus(-2u)) so that it stays finite where tanh saturates. The entropy and
    the KL have no closed form: SAC estimates them from samples, so they are not offered here.
    """

    def log_prob(self, params: Params, actions: torch.Tensor) -> torch.Tensor:
        """log π(a) of actions strictly inside (-1, 1) (rounded in by 1e-6)."""
        a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
        return self.log_prob_of_pre_tanh(params, torch.atanh(a))

    def log_prob_of_pre_tanh(self, params: Params, u: torch.Tensor) -> torch.Tensor:
        """log π(tanh u) from the Gaussian sample u itself (exact where tanh saturates)."""
        correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return super().log_prob(params, u) - correction.sum(-1)

    def sample(self, params: Params, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = params
        u = mean + noise * log_std.exp()
        correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        log_prob = -(0.5 * noise.pow(2) + log_std + 0.5 * _LOG_2PI).sum(-1)
        return torch.tanh(u), log_prob - correction.sum(-1)

    def mode(self, params: Params) -> torch.Tensor:
        return torch.tanh(params[0])

    def entropy(self, params: Params) -> torch.Tensor:
        raise NotImplementedError("a tanh-squashed Gaussian has no closed-form entropy")

    def kl(self, p: Params, q: Params) -> torch.Tensor:
        raise NotImplementedError("a tanh-squashed Gaussian has no closed-form KL divergence")

    def fisher(self, params: Params, weights: torch.Tensor) -> Callable[[Params], Params]:
        raise NotImplementedError("a tanh-squashed Gaussian has no closed-form Fisher product")


__all__ = ["Categorical", "DiagGaussian", "Params", "TanhGaussian"]
