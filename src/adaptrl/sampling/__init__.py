"""Rollout collection behind one seam, ``Sampler.sample(agent, tasks, seed, ...)``.

Back-ends: ``InProcessSampler`` (tensor families, all rows in one process), ``ProcessSampler``
(spawned worker processes) and ``RaySampler`` (Ray actors); ``make_sampler`` picks one.
"""

from __future__ import annotations

import os

from adaptrl.config import SamplerConfig
from adaptrl.envs import Family
from adaptrl.errors import ConfigError
from adaptrl.sampling.agents import (
    Agent,
    CategoricalAgent,
    GaussianAgent,
    PolicyAgent,
    RecurrentAgent,
)
from adaptrl.sampling.base import InProcessSampler, RolloutWorker, Sampler
from adaptrl.sampling.trajectories import Trajectories

BACKENDS = SamplerConfig.BACKENDS


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def make_sampler(
    family: Family,
    backend: str = "auto",
    workers: int | None = None,
    device: str = "cpu",
    ray_address: str = "",
) -> Sampler:
    """``auto``: in-process for tensor families, worker processes for external simulators."""
    SamplerConfig(backend, workers, ray_address)  # validates each setting, in one place
    if backend == "auto":
        backend = "processes" if family.external else "inprocess"
    if backend == "inprocess":
        return InProcessSampler(family, device)
    if str(device) != "cpu":
        raise ConfigError(f"the '{backend}' sampler runs envs on the CPU; use --device cpu")
    n = workers or default_workers()
    if backend == "processes":
        from adaptrl.sampling.processes import ProcessSampler

        return ProcessSampler(family, n)
    from adaptrl.sampling.ray_sampler import RaySampler

    return RaySampler(family, n, ray_address)


__all__ = [
    "BACKENDS",
    "Agent",
    "CategoricalAgent",
    "GaussianAgent",
    "PolicyAgent",
    "InProcessSampler",
    "RecurrentAgent",
    "RolloutWorker",
    "Sampler",
    "Trajectories",
    "make_sampler",
]
