"""Any gymnasium env whose task can be set, as a task family: the adapter behind MuJoCo
locomotion, and the way users bring their own simulators.

``GymMetaEnv`` holds ``num_envs`` gymnasium envs (one per row) and steps them in a loop; it lives
in worker processes (``external = True``), where each worker owns the envs of its slice of rows.
Each row is reset with a seed drawn from its own stream (``adaptrl.rng``), so a row's episodes
are the same whichever worker runs it.

A user's family in a few lines::

    def make_env(task):                       # or: make_env() returning an env with set_task()
        return MyReachEnv(goal=task["goal"])
    family = gym_family("my-reach", make_env, MyTasks(), horizon=100)   # registered by name

``make_env`` and the task distribution must be importable (module-level), so worker processes
can rebuild them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from adaptrl.envs.base import BatchedMetaEnv, TaskDistribution, Tasks
from adaptrl.envs.registry import EnvSpec, Family, register_env
from adaptrl.errors import ConfigError
from adaptrl.rng import mix


class GymMetaEnv(BatchedMetaEnv):
    """Rows are gymnasium envs; subclasses say how to build one, set its task and score a step.

    Hooks: ``make_single(config)`` -> env; ``apply_task(env, task)`` (``task``: dict of numpy
    arrays of one task) -> env (the same env with the task set, or a new one); optionally
    ``reward(reward, info, action, task)`` to recompute the reward from ``info``.
    Rows whose episode ended are not stepped again until they are reset.
    """

    external = True

    def __init__(self, num_envs: int, config: Any, device: Any = "cpu") -> None:
        super().__init__(num_envs, device)
        self.config = config
        self.horizon = int(config.horizon)
        self.envs = [self.make_single(config) for _ in range(num_envs)]
        obs_space, act_space = self.envs[0].observation_space, self.envs[0].action_space
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self._batch_spaces()
        self._continuous = isinstance(act_space, gym.spaces.Box)
        self._row_tasks: list[dict[str, np.ndarray]] = [{} for _ in range(num_envs)]
        self._obs = np.zeros((num_envs, *obs_space.shape), dtype=np.float32)
        self._done = np.zeros(num_envs, dtype=bool)
        self._t = np.zeros(num_envs, dtype=np.int64)
        self._episodes = torch.zeros(num_envs, dtype=torch.int64)

    # ---- hooks
    @classmethod
    def make_single(cls, config: Any) -> gym.Env:
        raise NotImplementedError

    def apply_task(self, env: gym.Env, task: dict[str, np.ndarray]) -> gym.Env:
        raise NotImplementedError

    def reward(self, reward: float, info: dict, action: np.ndarray, task: dict) -> float:
        return reward

    @classmethod
    def spaces(cls, config: Any) -> tuple[gym.Space, gym.Space]:
        env = cls.make_single(config)
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    # ---- BatchedMetaEnv
    def set_tasks(self, tasks: Tasks) -> None:
        super().set_tasks(tasks)
        cpu = {k: v.cpu().numpy() for k, v in tasks.items()}
        for i in range(self.num_envs):
            row = {k: v[i] for k, v in cpu.items()}
            self._row_tasks[i] = row
            self.envs[i] = self.apply_task(self.envs[i], row)

    def _seeds(self, rows: np.ndarray) -> list[int]:
        """A 31-bit reset seed per row from (row key, episodes the row has started)."""
        keys = self.rng.keys.cpu()[rows]
        h = mix(keys ^ mix(self._episodes[rows] * 0x9E3779B1 + 0x51ED))
        self._episodes[rows] += 1
        return [int(x) for x in (h & 0x7FFFFFFF)]

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        if mask is None and (keys is not None or seed is not None):
            self._episodes.zero_()  # new row streams: episode counts start again
        self._prepare_reset(tasks, keys, seed)
        rows = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask.cpu().numpy())
        for i, s in zip(rows, self._seeds(rows)):
            obs, _ = self.envs[i].reset(seed=s)
            self._obs[i] = obs
            self._done[i] = False
            self._t[i] = 0
        return torch.as_tensor(self._obs.copy(), device=self.device), {}

    def step(self, actions: torch.Tensor):
        acts = actions.detach().cpu().numpy()
        if self._continuous:
            space = self.single_action_space
            acts = np.clip(acts, space.low, space.high)
        B = self.num_envs
        rewards = np.zeros(B, dtype=np.float32)
        terminated = np.zeros(B, dtype=bool)
        truncated = np.zeros(B, dtype=bool)
        for i in np.flatnonzero(~self._done):
            obs, r, term, trunc, info = self.envs[i].step(acts[i])
            rewards[i] = self.reward(float(r), info, acts[i], self._row_tasks[i])
            self._obs[i] = obs
            self._t[i] += 1
            terminated[i] = term
            truncated[i] = (trunc or self._t[i] >= self.horizon) and not term
            self._done[i] = terminated[i] or truncated[i]
        return self._outputs(rewards, terminated, truncated)

    def _outputs(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray):
        """A step's return value: the observation buffer (copied) and the step's arrays."""
        dev = self.device
        return (
            torch.as_tensor(self._obs.copy(), device=dev),
            torch.as_tensor(rewards, device=dev),
            torch.as_tensor(terminated, device=dev),
            torch.as_tensor(truncated, device=dev),
            {},
        )

    def close(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


# ---------------------------------------------------------------------------- user families
_USER_FAMILIES: dict[str, tuple[Any, Any, int]] = {}


@dataclass(frozen=True)
class GymFamilyConfig:
    """A user's gymnasium env as a family. ``gym_family`` registers it by ``name``, so a config
    (or ``--set``) naming the family fills in the rest; ``horizon`` may be overridden there."""

    name: str = ""
    """The registered family this config belongs to (filled in from the env section's name)."""
    make_env: Any = None
    """``make_env(task) -> env`` (a new env per task) or ``make_env() -> env`` with ``set_task``."""
    tasks: Any = None
    """A ``TaskDistribution`` instance (picklable: an instance of a module-level class)."""
    horizon: int = 0
    """Steps per episode (the env's own time limit may end it earlier; 0: as registered)."""

    def __post_init__(self) -> None:
        if self.make_env is None and self.name in _USER_FAMILIES:
            make_env, tasks, horizon = _USER_FAMILIES[self.name]
            object.__setattr__(self, "make_env", make_env)
            object.__setattr__(self, "tasks", tasks)
            object.__setattr__(self, "horizon", self.horizon or horizon)
        if not callable(self.make_env):
            raise ConfigError("gym_family needs make_env: a function returning a gymnasium.Env")
        if not isinstance(self.tasks, TaskDistribution):
            raise ConfigError("gym_family needs tasks: a TaskDistribution instance")
        if self.horizon <= 0:
            raise ConfigError(f"horizon must be > 0, got {self.horizon}")


def _takes_task(make_env: Any) -> bool:
    try:
        params = inspect.signature(make_env).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.default is inspect.Parameter.empty for p in params if p.kind <= p.KEYWORD_ONLY)


class GymFamilyTasks(TaskDistribution):
    """The user's task distribution, as the family's."""

    def __init__(self, config: GymFamilyConfig) -> None:
        self.inner = config.tasks
        self.splits = getattr(config.tasks, "splits", ("train", "test"))

    def sample(self, n, split, generator):
        return self.inner.sample(n, split, generator)

    def split_of(self, tasks):
        return self.inner.split_of(tasks)


class GymFamilyEnv(GymMetaEnv):
    """Rows built by the user's ``make_env``: per task (factory) or once, then ``set_task``."""

    @classmethod
    def make_single(cls, config: GymFamilyConfig) -> gym.Env:
        if _takes_task(config.make_env):
            return _Placeholder(config)  # built when the row gets its task
        return config.make_env()

    @classmethod
    def spaces(cls, config: GymFamilyConfig) -> tuple[gym.Space, gym.Space]:
        if _takes_task(config.make_env):
            task = config.tasks.sample(1, "train", torch.Generator().manual_seed(0))
            env = config.make_env({k: v[0].numpy() for k, v in task.items()})
        else:
            env = config.make_env()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    def __init__(self, num_envs: int, config: GymFamilyConfig, device: Any = "cpu") -> None:
        if not _takes_task(config.make_env):
            probe = config.make_env()
            setter = getattr(probe, "set_task", None) or getattr(probe.unwrapped, "set_task", None)
            if not callable(setter):
                probe.close()
                raise ConfigError(
                    f"{type(probe.unwrapped).__name__} has no set_task(task) method; add one, "
                    "or give make_env a task argument (make_env(task) -> env)"
                )
            probe.close()
        self._factory = _takes_task(config.make_env)
        super().__init__(num_envs, config, device)
        if self._factory:  # spaces come from an env built for a real task
            obs_space, act_space = self.spaces(config)
            self.single_observation_space, self.single_action_space = obs_space, act_space
            self._batch_spaces()
            self._continuous = isinstance(act_space, gym.spaces.Box)
            self._obs = np.zeros((num_envs, *obs_space.shape), dtype=np.float32)

    def apply_task(self, env: gym.Env, task: dict[str, np.ndarray]) -> gym.Env:
        if self._factory:
            env.close()
            return self.config.make_env(task)
        target = env if hasattr(env, "set_task") else env.unwrapped
        target.set_task(task)
        return env


class _Placeholder(gym.Env):
    """Stands in for a factory-built row until its first task arrives."""

    def __init__(self, config: GymFamilyConfig) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


def gym_family(name: str, make_env: Any, tasks: TaskDistribution, horizon: int, description=""):
    """Register a user's gymnasium env (plus task distribution) as family ``name`` and return it.

    Every tool then works with it: MAML/RL², every sampler back-end, the checker."""

    _USER_FAMILIES[name] = (make_env, tasks, horizon)
    spec = register_env(
        EnvSpec(name, GymFamilyConfig, GymFamilyTasks, GymFamilyEnv, description or name)
    )
    config = GymFamilyConfig(name)
    return Family(spec, config, GymFamilyTasks(config))
