"""The in-context transformer: RL² with the recurrent cell replaced by a causal transformer over
the whole trial (the transformer variants of RL²; AMAGO, Grigsby et al. 2024, is the off-policy
relative).

Each step of a trial is one token (observation, previous action, reward, done flag, progress);
the policy attends to every earlier token of the trial, and acting costs one token per step
through a key-value cache (``transformer_policy``). Training is RL²'s PPO over whole trials,
unchanged: same advantages, value scale, entropy schedule, references and evaluation.

Why on-policy PPO rather than AMAGO's off-policy actor-critic: the families here are cheap to
simulate and their trials short (tens to a few hundred steps), so sample efficiency is not what
limits us; sharing RL²'s tested update makes the comparison between a recurrent and an attentive
memory a comparison of the memory alone. Why whole trials: a transformer has no state to carry
between truncated chunks except the cache of every earlier step, so truncation would only
shorten its memory; the context must therefore hold the trial (``context_len``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from adaptrl.algos.rl2 import RL2, InContextConfig, Trials
from adaptrl.errors import ConfigError
from adaptrl.transformer_policy import (
    TransformerCategoricalPolicy,
    TransformerGaussianPolicy,
    TransformerPolicy,
)


@dataclass(frozen=True)
class TransformerConfig(InContextConfig):
    """The transformer's settings: the shared PPO ones and the network's."""

    model_size: int = 64
    """Width of the tokens (a multiple of 2 x ``num_heads``)."""
    num_layers: int = 2
    """Transformer blocks (attention + MLP, pre-norm)."""
    num_heads: int = 4
    """Attention heads per block."""
    context_len: int = 0
    """Steps the context holds (0: the whole trial, episodes_per_trial x horizon). It must hold
    the trial: attention cost grows with its square, and a shorter one would forget the
    episodes adaptation needs."""
    lr: float = 3e-4
    """Adam step size (lower than RL²'s: attention layers train less stably at 1e-3)."""

    bptt_len: ClassVar[int] = 0  # whole trials (see the module docstring)
    optimizer: ClassVar[str] = "ppo"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("model_size", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"algo.{name} must be > 0, got {getattr(self, name)}")
        if self.model_size % (2 * self.num_heads):
            raise ConfigError(
                f"algo.model_size ({self.model_size}) must be a multiple of 2 x algo.num_heads "
                f"({self.num_heads}): each head takes an even share"
            )
        if self.context_len < 0:
            raise ConfigError(
                f"algo.context_len must be >= 0 (0: the whole trial), got {self.context_len}"
            )


class InContextTransformer(RL2):
    """Meta-learner (the ``Learner`` protocol) whose adaptation is attention over the trial so
    far: RL²'s training and evaluation with a ``TransformerPolicy``."""

    def make_policy(self, obs_space, act_space) -> TransformerPolicy:
        c = self.config
        with self.family.make_env(1) as env:
            trial = c.episodes_per_trial * env.horizon
        if c.context_len and c.context_len < trial:
            raise ConfigError(
                f"algo.context_len {c.context_len} cannot hold a trial of {c.episodes_per_trial} "
                f"episodes x {env.horizon} steps = {trial}: set it to >= {trial}, or 0 (the trial)"
            )
        layers = (c.model_size, c.num_layers, c.num_heads, c.time_input, c.prev_obs_input, c.memory)
        kw = {"terminal_obs_input": c.terminal_obs_input}
        if hasattr(act_space, "n"):
            return TransformerCategoricalPolicy(obs_space.shape[0], int(act_space.n), *layers, **kw)
        if len(act_space.shape) == 1:
            return TransformerGaussianPolicy(
                obs_space.shape[0], act_space.shape[0], *layers, init_std=c.init_std, **kw
            )
        raise ConfigError(
            f"the transformer needs a Discrete or a 1-D Box action space; env "
            f"'{self.family.spec.name}' has {act_space}"
        )

    def chunk_start_states(self, trials: Trials, L: int) -> torch.Tensor:
        """Whole trials, each from an empty cache: [0, B, S]."""
        return self.policy.initial_state(trials.rewards.shape[1], self.device)
