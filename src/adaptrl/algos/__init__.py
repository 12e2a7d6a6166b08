"""Meta-learners by name. Each has a frozen Config dataclass and implements the ``Learner``
protocol of ``algos/base.py``."""

from __future__ import annotations

from typing import Any

import torch

from adaptrl.algos.base import Adaptation, Learner, Reference, TrainContext
from adaptrl.algos.maml import MAML, MAMLConfig
from adaptrl.algos.pearl import PEARL, PEARLConfig
from adaptrl.algos.rl2 import RL2, RL2Config
from adaptrl.algos.transformer import InContextTransformer, TransformerConfig
from adaptrl.config import build_dataclass
from adaptrl.envs import Family
from adaptrl.errors import ConfigError
from adaptrl.sampling import Sampler

ALGORITHMS: dict[str, tuple[type, type]] = {
    "maml": (MAMLConfig, MAML),
    "rl2": (RL2Config, RL2),
    "pearl": (PEARLConfig, PEARL),
    "transformer": (TransformerConfig, InContextTransformer),
}

DESCRIPTIONS = {
    "maml": "MAML with a TRPO meta-update, second- or first-order (Finn et al. 2017)",
    "rl2": "RL²: a recurrent policy (algo.cell: GRU or LSTM) that adapts in memory across a "
    "trial, trained by PPO or TRPO (Duan et al. 2016)",
    "pearl": "PEARL: off-policy soft actor-critic on a task variable inferred from the context "
    "of past trajectories, per-task replay buffers (Rakelly et al. 2019)",
    "transformer": "in-context transformer: RL² with a causal transformer over the trial (a "
    "key-value cache, one token per step), trained by PPO",
}


def algo_config(name: str, values: dict[str, Any]) -> Any:
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm '{name}'; available: {', '.join(ALGORITHMS)}")
    return build_dataclass(ALGORITHMS[name][0], values, "algo")


def make_algorithm(
    name: str, config: Any, family: Family, sampler: Sampler, device: torch.device | str = "cpu"
) -> Learner:
    return ALGORITHMS[name][1](config, family, sampler, device)


__all__ = [
    "ALGORITHMS",
    "InContextTransformer",
    "MAML",
    "RL2",
    "Adaptation",
    "Learner",
    "MAMLConfig",
    "PEARL",
    "PEARLConfig",
    "RL2Config",
    "Reference",
    "TrainContext",
    "TransformerConfig",
    "algo_config",
    "make_algorithm",
]
