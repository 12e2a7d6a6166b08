"""The oracle's view of a family: the task's own parameters appended to every observation.

A policy trained on it knows what the others must infer, so it bounds what adaptation can reach
(the upper reference beside the domain-randomised policy). A family offers it by naming its task
keys in ``EnvSpec.task_features``; the wrapper is a ``BatchedMetaEnv`` like any other, so every
sampler back-end and learner uses it unchanged.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from adaptrl.envs.base import BatchedMetaEnv, Tasks


def task_feature_size(tasks: Tasks, keys: tuple[str, ...]) -> int:
    return sum(tasks[k][0].numel() for k in keys)


def with_task_features(obs_space: gym.Space, size: int) -> gym.Space:
    """The observation space widened by ``size`` unbounded task entries."""
    low = np.concatenate([obs_space.low, np.full(size, -np.inf, np.float32)])
    high = np.concatenate([obs_space.high, np.full(size, np.inf, np.float32)])
    return gym.spaces.Box(low, high, dtype=np.float32)


class TaskInObservation(BatchedMetaEnv):
    """``env``'s rows, each observation followed by its task's ``keys`` (flattened, float)."""

    def __init__(self, env: BatchedMetaEnv, keys: tuple[str, ...], size: int) -> None:
        super().__init__(env.num_envs, env.device)
        self.env, self.keys = env, keys
        self.horizon, self.deterministic = env.horizon, env.deterministic
        self.single_observation_space = with_task_features(env.single_observation_space, size)
        self.single_action_space = env.single_action_space
        self._batch_spaces()
        self._features: torch.Tensor | None = None

    def _with_features(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs, self._features.to(obs.dtype)], -1)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        obs, info = self.env.reset(tasks=tasks, mask=mask, keys=keys, seed=seed, options=options)
        if tasks is not None or self._features is None:
            self.tasks = self.env.tasks
            self._features = torch.cat(
                [self.tasks[k].reshape(self.num_envs, -1).float() for k in self.keys], -1
            ).to(obs.device)
        return self._with_features(obs), info

    def step(self, actions: torch.Tensor):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        return self._with_features(obs), rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)
