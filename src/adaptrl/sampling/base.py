"""The sampler seam: ``Sampler.sample(agent, tasks, ...) -> Trajectories``.

Learners never build or step an env; they hand a sampler an agent and tasks. Every back-end
returns the same trajectories for the same ``seed`` (row keys derive from (seed, task index,
episode index); see ``adaptrl.rng``), so the back-end and worker count are speed settings only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from adaptrl.envs import Family, Tasks, repeat_tasks
from adaptrl.rng import task_episode_keys
from adaptrl.sampling.trajectories import Trajectories


def num_tasks_of(tasks: Tasks) -> int:
    return next(iter(tasks.values())).shape[0]


def shard_bounds(num_tasks: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous task ranges, as even as possible; empty ranges are dropped."""
    sizes = [num_tasks // num_shards + (i < num_tasks % num_shards) for i in range(num_shards)]
    bounds, start = [], 0
    for size in sizes:
        if size:
            bounds.append((start, start + size))
        start += size
    return bounds


def shard_request(
    agent: Any,
    tasks: Tasks,
    seed: int,
    episodes_per_task: int,
    episodes_per_trial: int,
    max_steps: int | None,
    start: int,
    stop: int,
) -> dict[str, Any]:
    """What one worker needs for tasks ``start:stop``: plain, picklable values."""
    return {
        "agent": agent.shard(start, stop),
        "tasks": {k: v[start:stop].cpu() for k, v in tasks.items()},
        "task_ids": torch.arange(start, stop),
        "seed": seed,
        "episodes_per_task": episodes_per_task,
        "episodes_per_trial": episodes_per_trial,
        "max_steps": max_steps,
    }


class RolloutWorker:
    """Owns envs for a slice of rows and runs whole rollouts locally (no per-step round trip).

    The same class runs in-process, in a worker process, and as a Ray actor.
    """

    def __init__(self, family: Family, device: torch.device | str = "cpu") -> None:
        self.family, self.device = family, torch.device(device)
        self._envs: dict[int, Any] = {}

    def env(self, num_envs: int):
        if num_envs not in self._envs:
            self._envs[num_envs] = self.family.make_env(num_envs, self.device)
        return self._envs[num_envs]

    def sample(
        self,
        agent: Any,
        tasks: Tasks,
        task_ids: torch.Tensor,
        seed: int,
        episodes_per_task: int,
        episodes_per_trial: int = 1,
        max_steps: int | None = None,
    ) -> Trajectories:
        from adaptrl.sampling.rollout import rollout

        n = num_tasks_of(tasks)
        rows = repeat_tasks({k: v.to(self.device) for k, v in tasks.items()}, episodes_per_task)
        keys = task_episode_keys(seed, task_ids, episodes_per_task).to(self.device)
        env = self.env(n * episodes_per_task)
        return rollout(env, agent, rows, keys, n, episodes_per_trial, max_steps)

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class Sampler(ABC):
    """Returns whole episodes or trials for an agent on a batch of tasks."""

    num_workers: int = 1
    env_steps: int = 0
    """Env steps of every trajectory returned so far (real steps, not padding): what a learner
    has paid in samples; the trainer logs its training share as ``time/env_steps``."""

    def sample(
        self,
        agent: Any,
        tasks: Tasks,
        seed: int,
        episodes_per_task: int = 1,
        episodes_per_trial: int = 1,
        max_steps: int | None = None,
    ) -> Trajectories:
        """``episodes_per_task`` rows per task (tasks outermost), each running
        ``episodes_per_trial`` consecutive episodes; the same ``seed`` gives the same result on
        every back-end and worker count."""
        traj = self._sample(agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps)
        self.env_steps += traj.num_steps
        return traj

    @abstractmethod
    def _sample(
        self,
        agent: Any,
        tasks: Tasks,
        seed: int,
        episodes_per_task: int,
        episodes_per_trial: int,
        max_steps: int | None,
    ) -> Trajectories:
        """The back-end's own rollouts (``sample`` counts their steps)."""

    def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Stop workers and release envs; safe to call twice."""

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessSampler(Sampler):
    """Steps all rows in this process: the fast default for tensor families."""

    def __init__(self, family: Family, device: torch.device | str = "cpu") -> None:
        self.family, self.device = family, torch.device(device)
        self.worker = RolloutWorker(family, self.device)

    def _sample(self, agent, tasks, seed, episodes_per_task, episodes_per_trial, max_steps):
        n = num_tasks_of(tasks)
        return self.worker.sample(
            agent,
            tasks,
            torch.arange(n),
            seed,
            episodes_per_task,
            episodes_per_trial,
            max_steps,
        )

    def close(self) -> None:
        self.worker.close()
