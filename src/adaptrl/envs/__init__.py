"""Task families and their registry: ``register_env`` adds one, ``make_family`` builds one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from adaptrl.config import build_dataclass
from adaptrl.envs.bandit import BanditConfig, BanditEnv, BanditTasks
from adaptrl.envs.base import (
    BatchedMetaEnv,
    GridSplit,
    SingleTaskEnv,
    Split,
    TaskDistribution,
    Tasks,
    repeat_tasks,
)
from adaptrl.envs.maze import MazeConfig, MazeEnv, MazeTasks
from adaptrl.envs.navigation import Navigation2DConfig, Navigation2DEnv, Navigation2DTasks
from adaptrl.envs.tabular_mdp import TabularMDPConfig, TabularMDPEnv, TabularMDPTasks
from adaptrl.errors import ConfigError

__all__ = [
    "BatchedMetaEnv",
    "EnvSpec",
    "Family",
    "GridSplit",
    "SingleTaskEnv",
    "Split",
    "TaskDistribution",
    "Tasks",
    "env_config",
    "make_family",
    "register_env",
    "registered_envs",
    "repeat_tasks",
]


@dataclass(frozen=True)
class EnvSpec:
    """How to build one task family from its config dataclass."""

    name: str
    config_cls: type
    tasks_cls: type[TaskDistribution]
    env_cls: type[BatchedMetaEnv]
    description: str = ""


_REGISTRY: dict[str, EnvSpec] = {}


def register_env(spec: EnvSpec) -> EnvSpec:
    """Make a task family available by name to configs, the CLI and the env checker."""
    _REGISTRY[spec.name] = spec
    return spec


def registered_envs() -> dict[str, EnvSpec]:
    return dict(_REGISTRY)


def env_config(section: dict[str, Any]) -> tuple[EnvSpec, Any]:
    """Validate an ``env:`` config section (``name`` plus the family's own keys)."""
    values = dict(section)
    name = values.pop("name", None)
    if name not in _REGISTRY:
        raise ConfigError(f"unknown env '{name}'; registered envs: {', '.join(sorted(_REGISTRY))}")
    spec = _REGISTRY[name]
    return spec, build_dataclass(spec.config_cls, values, "env")


@dataclass
class Family:
    """A task distribution plus a factory for batched environments of the same family."""

    spec: EnvSpec
    config: Any
    tasks: TaskDistribution

    _envs: dict = field(default_factory=dict, repr=False)

    def make_env(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedMetaEnv:
        return self.spec.env_cls(num_envs, self.config, device=device)

    def env(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedMetaEnv:
        """A cached batched env of this size: learners reuse buffers across iterations."""
        key = (num_envs, str(torch.device(device)))
        if key not in self._envs:
            self._envs[key] = self.make_env(num_envs, device)
        return self._envs[key]

    def make_single_task_env(
        self, task: Tasks, device: torch.device | str = "cpu"
    ) -> SingleTaskEnv:
        """One task (leading dimension 1) as a plain ``gymnasium.Env``."""
        return SingleTaskEnv(self.make_env(1, device), task)


def make_family(name: str, **config: Any) -> Family:
    """``make_family("navigation2d", horizon=50)`` -> tasks + env factory."""
    spec, cfg = env_config({"name": name, **config})
    return Family(spec, cfg, spec.tasks_cls(cfg))


register_env(
    EnvSpec(
        "navigation2d",
        Navigation2DConfig,
        Navigation2DTasks,
        Navigation2DEnv,
        "Point robot reaching a goal in [-0.5, 0.5]^2 (Finn et al. 2017, sec. 5.3)",
    )
)
register_env(
    EnvSpec(
        "bandit",
        BanditConfig,
        BanditTasks,
        BanditEnv,
        "Bernoulli k-armed bandit, probabilities ~ U[0, 1], n pulls per trial (Duan et al. 2016)",
    )
)
register_env(
    EnvSpec(
        "tabular_mdp",
        TabularMDPConfig,
        TabularMDPTasks,
        TabularMDPEnv,
        "Random 10-state, 5-action MDPs, Dirichlet transitions, N(1,1) rewards (Duan et al. 2016)",
    )
)
register_env(
    EnvSpec(
        "maze",
        MazeConfig,
        MazeTasks,
        MazeEnv,
        "Procedural DFS grid mazes, 3x3 egocentric view, held-out layouts (cf. Duan et al. 2016)",
    )
)
