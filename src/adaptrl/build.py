"""The build step: a validated config -> family, sampler and learner.

It sits above ``algos`` and ``sampling`` and below the trainer and evaluation, so ``config.py``
stays a leaf of dataclasses and parsing, and nothing below knows how a run is assembled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adaptrl.algos import algo_config, make_algorithm
from adaptrl.algos.base import Learner
from adaptrl.config import RunConfig, parse_run_config
from adaptrl.envs import Family, env_config
from adaptrl.errors import ConfigError
from adaptrl.sampling import Sampler, make_sampler


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Parse and validate every section, the family's and the learner's included, before any
    work starts (bad keys and impossible values fail here, with one line)."""
    config = parse_run_config(data)
    env_config(config.env)
    algo_config(config.algorithm, config.algo)
    return config


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device '{name}' is not a torch device (use cpu or cuda)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but CUDA is not available; use --device cpu")
    return device


def build_family(config: RunConfig) -> Family:
    spec, env_cfg = env_config(config.env)
    return Family(spec, env_cfg, spec.tasks_cls(env_cfg))


@dataclass
class Built:
    """A family, its sampler and a learner; ``close()`` stops the sampler's workers."""

    family: Family
    sampler: Sampler
    learner: Learner
    device: torch.device

    def close(self) -> None:
        self.sampler.close()

    def __enter__(self) -> Built:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(config: RunConfig, seed: int | None = None, sampler: Sampler | None = None) -> Built:
    """Family, sampler (unless one is shared in) and learner, parameters seeded from ``seed``
    (default: the run's seed)."""
    device = resolve_device(config.train.device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    family = build_family(config)
    algo_cfg = algo_config(config.algorithm, config.algo)
    if sampler is None:
        s = config.sampler
        sampler = make_sampler(family, s.backend, s.workers, str(device), s.ray_address)
    torch.manual_seed(config.train.seed if seed is None else seed)  # parameter initialisation
    try:
        learner = make_algorithm(config.algorithm, algo_cfg, family, sampler, device)
    except BaseException:
        sampler.close()
        raise
    return Built(family, sampler, learner, device)
