"""The in-context transformer's network: a causal (GPT-style, pre-norm) transformer over the
steps of a trial, whose carried state is its key-value cache.

Same inputs and heads as RL²'s recurrent policy (``InContextPolicy``); the sequence model is
attention over every earlier step of the trial instead of a recurrent state, so the memory of a
trial is exact rather than squeezed through a fixed-width vector (the transformer variants of
RL², e.g. Melo 2022; AMAGO, Grigsby et al. 2024).

The cache travels as one tensor [t, B, S], S = num_layers x 2 x model_size (each layer's keys
and values of the t steps seen so far): the samplers, the controller and the exported step
handle it like a recurrent state, and acting costs one token per step. An empty cache
([0, B, S]) starts a trial. ``memory=False`` is the domain-randomised reference: every step
attends to itself only and sees no past input, as the memoryless recurrent policy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from adaptrl.distributions import Categorical, DiagGaussian
from adaptrl.policies import InContextPolicy


def positions(start: int, count: int, size: int, device) -> torch.Tensor:
    """Sinusoidal encodings (Vaswani et al. 2017) of positions start .. start + count - 1:
    [count, size]. Fixed, so a trial longer than any seen in training still has positions."""
    pos = torch.arange(start, start + count, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, size, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / size)
    )
    enc = torch.zeros(count, size, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: size // 2])
    return enc


class Block(nn.Module):
    """One pre-norm block: causal self-attention over cache + new steps, then an MLP."""

    def __init__(self, size: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(size), nn.LayerNorm(size)
        self.qkv = nn.Linear(size, 3 * size)
        self.proj = nn.Linear(size, size)
        self.mlp = nn.Sequential(nn.Linear(size, 4 * size), nn.GELU(), nn.Linear(4 * size, size))

    def forward(
        self,
        h: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        mask: torch.Tensor | None,
        in_place: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h [T, B, D]; past_k/v [t0, B, D]; mask [T, t0 + T] (True: may attend; None: all)
        -> (h, this call's keys, values [T, B, D]). ``in_place``: past_k/v are views of a
        preallocated cache with t0 + T rows, whose last T this call writes (no copy of the
        past)."""
        T, B, D = h.shape
        q, k, v = self.qkv(self.norm1(h)).chunk(3, -1)
        if in_place:
            past_k[-T:], past_v[-T:] = k, v
            keys, values = past_k, past_v
        else:
            keys, values = torch.cat([past_k, k]), torch.cat([past_v, v])

        def heads(x: torch.Tensor) -> torch.Tensor:  # [L, B, D] -> [B, heads, L, D / heads]
            return x.reshape(x.shape[0], B, self.heads, D // self.heads).permute(1, 2, 0, 3)

        att = F.scaled_dot_product_attention(heads(q), heads(keys), heads(values), mask)
        h = h + self.proj(att.permute(2, 0, 1, 3).reshape(T, B, D))
        return h + self.mlp(self.norm2(h)), k, v


class TransformerPolicy(InContextPolicy):
    """Causal transformer over (observation, previous action, reward, done flag, progress[,
    previous observation]) with a policy head and a value head; see the module docstring."""

    state_steps = 0

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        model_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        time_input: bool = True,
        prev_obs_input: bool = False,
        memory: bool = True,
        distribution: Categorical | DiagGaussian | None = None,
        init_std: float = 0.5,
        terminal_obs_input: bool = False,
    ) -> None:
        super().__init__()
        if model_size % (2 * num_heads):
            raise ValueError(f"model_size {model_size} must be a multiple of 2 x {num_heads} heads")
        in_dim = self._init_inputs(
            obs_dim,
            action_dim,
            time_input,
            prev_obs_input,
            memory,
            distribution,
            terminal_obs_input,
        )
        self.model_size, self.num_layers = model_size, num_layers
        self.state_size = num_layers * 2 * model_size
        self.encoder = nn.Linear(in_dim, model_size)  # the token embedding of one step
        self.blocks = nn.ModuleList(Block(model_size, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(model_size)
        self.head = None  # RL²'s optional layer after the cell: the blocks' MLPs play its part
        self.policy_head = nn.Linear(model_size, action_dim)
        self.value_head = nn.Linear(model_size, 1)
        log_std = torch.full((action_dim,), math.log(init_std))
        self.log_std = nn.Parameter(log_std) if self.distribution.continuous else None

    def initial_state(self, batch: int, device) -> torch.Tensor:
        """An empty key-value cache [0, B, S]."""
        return torch.zeros(0, batch, self.state_size, device=device)

    def attend(self, features: torch.Tensor, cache: torch.Tensor):
        """Embedded steps [T, B, D] after the cached ones [t0, B, S] -> (outputs [T, B, D], the
        cache after them [t0 + T, B, S])."""
        if not self.memory:  # each step on its own: all steps as one batch, the cache stays empty
            T, B = features.shape[:2]
            empty = cache.new_zeros(0, T * B, self.state_size)
            out, _ = self.attend_causal(features.reshape(1, T * B, -1), empty)
            return out.reshape(T, B, -1), cache
        return self.attend_causal(features, cache)

    def attend_causal(self, features: torch.Tensor, cache: torch.Tensor, written: int = -1):
        """Steps [T, B, D] after the cached ones. ``written`` < 0: ``cache`` [t0, B, S] holds
        exactly the past and a new, longer cache is returned. ``written`` = t0 >= 0: ``cache``
        is preallocated, its first t0 rows the past; the new steps' keys and values are written
        into rows t0 .. t0 + T (no copy of the past) and the same tensor is returned."""
        in_place = written >= 0
        t0 = written if in_place else cache.shape[0]
        T, D = features.shape[0], self.model_size
        h = features + positions(t0, T, D, features.device).unsqueeze(1)
        mask = None  # one query may see every key up to itself
        if T > 1:
            query = torch.arange(t0, t0 + T, device=features.device).unsqueeze(1)
            mask = torch.arange(t0 + T, device=features.device).unsqueeze(0) <= query  # causal
        new = []
        for i, block in enumerate(self.blocks):
            layer = cache[: t0 + T if in_place else t0, :, 2 * i * D : (2 * i + 2) * D]
            h, k, v = block(h, layer[..., :D], layer[..., D:], mask, in_place)
            new += [k, v]
        return self.norm(h), cache if in_place else torch.cat([cache, torch.cat(new, -1)])

    def acting_state(self, steps: int, batch: int, device) -> torch.Tensor:
        """With memory, a cache with room for the whole trial, [steps, B, S], written in place
        by ``act_step``; a memoryless policy keeps no past, so its empty cache."""
        if not self.memory:
            return self.initial_state(batch, device)
        return torch.zeros(steps, batch, self.state_size, device=device)

    def act_step(self, x: torch.Tensor, cache: torch.Tensor, t: int):
        """The samplers' step x [1, B, in] after the first t rows of ``acting_state``'s cache,
        its keys and values written into row t (``forward`` instead returns a new, longer
        cache, which the controller and the exported step use) -> (logits or means [1, B, A],
        values [1, B], the same cache tensor): ``forward``'s numbers. Without memory:
        ``forward``."""
        if not self.memory:
            return self(x, cache)
        out, _ = self.attend_causal(self.encoder(x), cache, written=t)
        return self.policy_head(out), self.value_head(out).squeeze(-1), cache

    def replay(self, features: torch.Tensor, state: torch.Tensor):
        """(outputs [T, B, D], a zero-width placeholder [T, B, 0]): every chunk of a PPO update
        starts from an empty cache, so nothing per step needs keeping."""
        out, _ = self.attend(features, state)
        return out, out.new_zeros(*out.shape[:2], 0)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor):
        """x: [T, B, in], hidden (cache): [t0, B, S] -> logits or means [T, B, A], values
        [T, B], the cache [t0 + T, B, S]."""
        out, hidden = self.attend(self.encoder(x), hidden)
        return self.policy_head(out), self.value_head(out).squeeze(-1), hidden


class TransformerCategoricalPolicy(TransformerPolicy):
    """``TransformerPolicy`` with a categorical head (discrete actions)."""

    def __init__(self, obs_dim: int, num_actions: int, *args: Any, **kw: Any) -> None:
        super().__init__(obs_dim, num_actions, *args, distribution=Categorical(), **kw)


class TransformerGaussianPolicy(TransformerPolicy):
    """``TransformerPolicy`` with a diagonal Gaussian head (continuous actions)."""

    def __init__(self, obs_dim: int, act_dim: int, *args: Any, **kw: Any) -> None:
        super().__init__(obs_dim, act_dim, *args, distribution=DiagGaussian(), **kw)
