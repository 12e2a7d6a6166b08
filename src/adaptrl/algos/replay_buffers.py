"""Per-task replay buffers for off-policy meta-learners (PEARL keeps two: one for RL, one for
the context encoder).

One pre-allocated tensor per field, ``[num_tasks, capacity, ...]``, filled as a ring per task:
no Python list of transitions, no reallocation, one ``index_select`` per sampled batch. The
memory is reserved with ``torch.empty``, so pages a task never fills are never touched; the
learner refuses, before any work, a capacity that could not fit.
"""

from __future__ import annotations

import math

import torch

from adaptrl.errors import ConfigError


class ReplayBuffers:
    """``fields``: name -> (shape of one transition's entry, dtype)."""

    def __init__(
        self,
        num_tasks: int,
        capacity: int,
        fields: dict[str, tuple[tuple[int, ...], torch.dtype]],
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity <= 0:
            raise ConfigError(f"a replay buffer needs a capacity > 0, got {capacity}")
        self.num_tasks, self.capacity = num_tasks, capacity
        self.data = {
            name: torch.empty(num_tasks, capacity, *shape, dtype=dtype, device=device)
            for name, (shape, dtype) in fields.items()
        }
        self.size = torch.zeros(num_tasks, dtype=torch.long)
        self.top = torch.zeros(num_tasks, dtype=torch.long)

    @staticmethod
    def bytes_needed(
        num_tasks: int, capacity: int, fields: dict[str, tuple[tuple[int, ...], torch.dtype]]
    ) -> int:
        per_row = sum(
            math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            for shape, dtype in fields.values()
        )
        return num_tasks * capacity * per_row

    def add(self, task: int, rows: dict[str, torch.Tensor]) -> None:
        """Append ``m`` transitions (``rows[name]``: [m, ...]) to task ``task``'s ring."""
        m = next(iter(rows.values())).shape[0]
        if m == 0:
            return
        if m > self.capacity:  # only the newest fit
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            m = self.capacity
        where = (self.top[task] + torch.arange(m)) % self.capacity
        for name, value in rows.items():
            self.data[name][task, where.to(self.data[name].device)] = value.to(
                self.data[name].dtype
            )
        self.top[task] = (self.top[task] + m) % self.capacity
        self.size[task] = min(int(self.size[task]) + m, self.capacity)

    def clear(self, task: int) -> None:
        self.size[task] = 0
        self.top[task] = 0

    def sample(
        self, tasks: torch.Tensor, batch: int, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """``batch`` transitions of each task in ``tasks`` [k], uniformly with replacement:
        {name: [k, batch, ...]}."""
        sizes = self.size[tasks]
        if bool((sizes == 0).any()):
            raise RuntimeError("sampling from an empty replay buffer")
        picks = (torch.rand(len(tasks), batch, generator=generator) * sizes[:, None]).long()
        flat = (tasks[:, None] * self.capacity + picks).reshape(-1)  # one index per transition
        out = {}
        for name, store in self.data.items():
            rows = store.reshape(-1, *store.shape[2:]).index_select(0, flat.to(store.device))
            out[name] = rows.reshape(len(tasks), batch, *store.shape[2:])
        return out

    def levels(self) -> dict[str, torch.Tensor]:
        """Each task's fill level and ring position (small; the rows are ``filled``)."""
        return {"size": self.size.clone(), "top": self.top.clone()}

    def load_levels(self, levels: dict[str, torch.Tensor]) -> None:
        self.size.copy_(levels["size"])
        self.top.copy_(levels["top"])

    def filled(self) -> dict[str, torch.Tensor]:
        """Each task's filled rows as contiguous views ``"field/task"`` (no copy)."""
        return {
            f"{name}/{t}": store[t, : int(self.size[t])]
            for name, store in self.data.items()
            for t in range(self.num_tasks)
            if int(self.size[t])
        }

    def load_rows(self, key: str, rows: torch.Tensor) -> None:
        """Rows saved by ``filled`` (key ``"field/task"``), up to the task's loaded level: a
        file written after a half-done iteration may hold more, which are left out."""
        name, task = key.rsplit("/", 1)
        t = int(task)
        n = min(int(self.size[t]), rows.shape[0])
        self.data[name][t, :n] = rows[:n].to(self.data[name].device)
