"""The two protocols every task family implements, and the export of one task as a gymnasium Env.

* ``TaskDistribution.sample(n, split, generator)`` returns ``Tasks``: a dict of tensors with a
  leading task dimension. ``split="test"`` never yields a training task (disjoint by construction).
* ``BatchedMetaEnv`` is a gymnasium ``VectorEnv`` over torch tensors whose rows each carry their own
  task. Built-in families step all rows with a few tensor ops. Rows are not auto-reset: the sampler
  masks a row after its episode ends and calls ``reset(mask=...)`` when it wants a new episode.
  Each row draws its noise from its own counter-based stream (``adaptrl.rng.RowStreams``) keyed by
  ``reset(keys=...)``, so a row's trajectory never depends on the other rows of its batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from adaptrl.errors import ConfigError
from adaptrl.rng import RowStreams, seed_keys

Tasks = dict[str, torch.Tensor]
MAX_REJECTION_ROUNDS = 200  # HashSplit: rounds of drawing before a split counts as empty
Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")


class TaskDistribution(ABC):
    """A distribution over tasks with disjoint train and test splits (and optionally more, such as
    an out-of-distribution ``ood`` split, listed in ``splits``)."""

    splits: tuple[str, ...] = SPLITS

    @abstractmethod
    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        """Draw ``n`` tasks of ``split``; every tensor has leading dimension ``n``."""

    def split_of(self, tasks: Tasks) -> list[str]:
        """Which split each task belongs to (used to check disjointness)."""
        raise NotImplementedError


class BatchedMetaEnv(gym.vector.VectorEnv, ABC):
    """``num_envs`` rows stepped together; row ``i`` follows task ``tasks[k][i]``.

    Observations, actions, rewards and flags are torch tensors on ``device`` with leading dimension
    ``num_envs``. ``terminated`` means the episode ended in the MDP (no bootstrap); ``truncated``
    means it was cut at the horizon.
    """

    horizon: int
    deterministic: bool = True
    """False when steps draw noise from the row streams (``self.rng``)."""
    external: bool = False
    """True for adapters over external simulators (MuJoCo, a user's gymnasium env): the default
    sampler then runs them in worker processes."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu") -> None:
        if num_envs <= 0:
            raise ValueError(f"num_envs must be > 0, got {num_envs}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.tasks: Tasks | None = None
        self.rng: RowStreams | None = None  # per-row noise of stochastic families

    @classmethod
    def spaces(cls, config: Any) -> tuple[gym.Space, gym.Space]:
        """(single observation space, single action space) of a family config. The default builds
        a one-row env (cheap for tensor families); adapters over simulators override it so the
        parent process never has to build a simulator just to size a policy."""
        env = cls(1, config)
        try:
            return env.single_observation_space, env.single_action_space
        finally:
            env.close()

    def _batch_spaces(self) -> None:
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def set_tasks(self, tasks: Tasks) -> None:
        """Give every row its task; tensors must have leading dimension ``num_envs``."""
        for key, value in tasks.items():
            if value.shape[0] != self.num_envs:
                raise ValueError(
                    f"task '{key}' has {value.shape[0]} rows but the env has {self.num_envs}; "
                    "repeat tasks per episode with repeat_tasks()"
                )
        self.tasks = {k: v.to(self.device) for k, v in tasks.items()}

    def _prepare_reset(
        self, tasks: Tasks | None, keys: torch.Tensor | None, seed: int | None
    ) -> None:
        """Shared reset bookkeeping: new tasks, the tasks-required check, the row streams."""
        if tasks is not None:
            self.set_tasks(tasks)
        if self.tasks is None:
            raise RuntimeError("reset() needs tasks the first time (env.reset(tasks=...))")
        if keys is not None:
            if keys.shape != (self.num_envs,):
                raise ValueError(f"keys must be int64 [{self.num_envs}], got {tuple(keys.shape)}")
            self.rng = RowStreams(keys.to(self.device))
        elif self.rng is None or seed is not None:
            self.rng = RowStreams(seed_keys(seed, self.num_envs, self.device))

    @abstractmethod
    def reset(
        self,
        *,
        tasks: Tasks | None = None,
        mask: torch.Tensor | None = None,
        keys: torch.Tensor | None = None,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Start episodes (all rows, or rows where ``mask``); new ``tasks`` replace the old.
        ``keys`` (int64 [num_envs]) seed the rows' noise streams; ``seed`` derives them."""

    @abstractmethod
    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Returns ``obs, rewards, terminated, truncated, info`` for every row."""

    def close(self, **kwargs: Any) -> None:
        """Release simulators or buffers (tensor families hold nothing to release)."""

    def __enter__(self) -> BatchedMetaEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repeat_tasks(tasks: Tasks, times: int) -> Tasks:
    """Each task repeated ``times`` rows in a row: the tasks-outermost layout ``B = n x E``."""
    return {k: v.repeat_interleave(times, dim=0) for k, v in tasks.items()}


class GridSplit:
    """Disjoint train/test regions of a box: the box is cut into ``cells`` per side and a fixed
    fraction of cells is held out for testing.

    Both splits cover the whole box at a coarse scale, so the test split measures generalisation
    to new tasks of the same distribution, while no test task can ever coincide with (or be
    arbitrarily close to the interior of) a training cell. ``layout`` says which cells:

    - ``"random"``: a seeded random choice. With few cells it can be biased: on the 10x10
      navigation grid it held out goals 0.416 from the start on average against 0.375.
    - ``"interleaved"``: every k-th cell, evenly spread over a 1-D range.
    - ``"rings"``: cells sorted by distance from the box centre (seeded order within a ring) and
      every k-th held out, so both splits have the same distance profile, i.e. the same
      difficulty for tasks that start at the centre (0.384 against 0.382 on that grid).
    """

    LAYOUTS = ("random", "interleaved", "rings")

    def __init__(
        self,
        low: float,
        high: float,
        dim: int,
        cells: int = 10,
        test_fraction: float = 0.2,
        layout: str = "random",
    ) -> None:
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout must be one of {self.LAYOUTS}, got {layout!r}")
        self.low, self.high, self.dim, self.cells = low, high, dim, cells
        total = cells**dim
        count = max(1, round(test_fraction * total))
        seeded = torch.Generator().manual_seed(20170703)
        if layout == "interleaved":  # every k-th cell: held-out tasks spread evenly over the range
            step = max(2, round(1 / test_fraction))
            test = torch.arange(step // 2, total, step)
        elif layout == "rings":
            ids = torch.arange(total)
            coords = torch.stack([(ids // cells**d) % cells for d in range(dim)], -1)
            radius2 = ((2 * coords - (cells - 1)) ** 2).sum(-1)  # exact integer ring key
            tie = torch.randperm(total, generator=seeded)  # seeded order within a ring
            order = torch.argsort(radius2 * total + tie)  # by ring, then by the seeded order
            test = order[(2 * torch.arange(count) + 1) * total // (2 * count)]  # evenly spaced
        else:
            test = torch.randperm(total, generator=seeded)[:count]
        is_test = torch.zeros(total, dtype=torch.bool)
        is_test[test] = True
        self.cell_ids = {
            "test": torch.nonzero(is_test)[:, 0],
            "train": torch.nonzero(~is_test)[:, 0],
        }

    def sample(self, n: int, split: Split, generator: torch.Generator) -> torch.Tensor:
        if split not in self.cell_ids:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        dev = generator.device
        ids = self.cell_ids[split].to(dev)
        pick = ids[torch.randint(len(ids), (n,), generator=generator, device=dev)]
        coords = torch.stack([(pick // self.cells**d) % self.cells for d in range(self.dim)], -1)
        width = (self.high - self.low) / self.cells
        offset = torch.rand(n, self.dim, generator=generator, device=dev)
        return self.low + (coords.float() + offset) * width

    def split_of(self, points: torch.Tensor) -> list[str]:
        width = (self.high - self.low) / self.cells
        coords = ((points - self.low) / width).floor().long().clamp(0, self.cells - 1)
        ids = sum(coords[:, d] * self.cells**d for d in range(self.dim))
        test = torch.isin(ids, self.cell_ids["test"].to(ids.device))
        return ["test" if t else "train" for t in test.tolist()]


class SingleTaskEnv(gym.Env):
    """One task of a batched family as a plain ``gymnasium.Env`` (numpy in, numpy out).

    Lets users run other libraries on our tasks and our adapted policies on their own loops.
    """

    metadata = {"render_modes": []}

    def __init__(self, batched_env: BatchedMetaEnv, task: Tasks) -> None:
        if batched_env.num_envs != 1:
            raise ValueError("SingleTaskEnv wraps a batched env with num_envs=1")
        self.env = batched_env
        if any(v.shape[0] != 1 for v in task.values()):
            raise ValueError("task must hold exactly one task, as returned by sample(1, ...)")
        self.task = task
        self.observation_space = batched_env.single_observation_space
        self.action_space = batched_env.single_action_space
        self._episode = 0
        self._seed = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._episode = seed, 0
        keys = seed_keys(self._seed + 1_000_003 * self._episode, 1, self.env.device)
        self._episode += 1
        obs, info = self.env.reset(tasks=self.task, keys=keys)
        return self._np_obs(obs), {}

    def step(self, action):
        act = torch.as_tensor(np.asarray(action), device=self.env.device)
        act = act.reshape(1, *act.shape)
        obs, reward, terminated, truncated, _ = self.env.step(act)
        return (
            self._np_obs(obs),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            {},
        )

    def close(self) -> None:
        self.env.close()

    def _np_obs(self, obs: torch.Tensor) -> np.ndarray:
        dtype = self.observation_space.dtype
        return obs[0].detach().cpu().numpy().astype(dtype, copy=False)


class HashSplit:
    """Disjoint train/test splits of a task-parameter vector of any dimension.

    Each coordinate is cut into cells of ``cell_width``; the tuple of cell indices is hashed to
    [0, 1) with fixed weights, and cells hashing below ``test_fraction`` belong to the test split.
    Sampling is by rejection from the family's own prior, so each split keeps the prior's shape
    restricted to its cells. Disjoint by construction in any dimension (a grid of 50-D cells
    would not fit in memory; a hash does).
    """

    def __init__(self, dim: int, cell_width: float, test_fraction: float = 0.2) -> None:
        if not 0 < test_fraction < 1:
            raise ValueError("test_fraction must lie strictly between 0 and 1")
        self.cell_width, self.test_fraction = cell_width, test_fraction
        g = torch.Generator().manual_seed(20161109)
        self.weights = torch.randint(1, 2**31 - 1, (dim,), generator=g, dtype=torch.int64)

    def is_test(self, params: torch.Tensor) -> torch.Tensor:
        """params: [n, dim] -> bool [n]."""
        cells = torch.floor(params.double().cpu() / self.cell_width).long()
        h = (cells * self.weights).sum(-1) % 2147483647
        h = (h * 2654435761) % 4294967296  # Knuth's multiplicative mix
        return (h.double() / 4294967296.0 < self.test_fraction).to(params.device)

    def split_of(self, params: torch.Tensor) -> list[str]:
        return ["test" if t else "train" for t in self.is_test(params).tolist()]

    def sample(self, n: int, split: Split, prior, generator: torch.Generator) -> torch.Tensor:
        """Draw ``n`` vectors from ``prior(m, generator) -> [m, dim]`` restricted to ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        want_test = split == "test"
        fraction = self.test_fraction if want_test else 1 - self.test_fraction
        chunks, have = [], 0
        for _ in range(MAX_REJECTION_ROUNDS):
            draw = prior(int((n - have) / fraction * 1.5) + 16, generator)
            keep = draw[self.is_test(draw) == want_test]
            chunks.append(keep)
            have += keep.shape[0]
            if have >= n:
                return torch.cat(chunks)[:n]
        raise ConfigError(
            f"the task prior puts (almost) no mass on the {split} split's cells (cells of width "
            f"{self.cell_width}); widen the prior's range"
        )
