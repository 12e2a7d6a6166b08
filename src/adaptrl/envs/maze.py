"""Procedurally generated grid mazes (the "different maze configurations" of Duan et al. 2016,
§3.3, in a small top-down form that trains on a CPU).

A task is a perfect maze (randomised depth-first search over ``size x size`` cells, drawn as a
``(2 size + 1)^2`` wall grid), a start cell and a goal cell. The agent sees only a 3x3 egocentric
window: which neighbouring squares are walls and whether the goal is among them. Reaching the goal
gives +1 and ends the episode; every step costs ``step_cost``. A trial is several episodes in the
same maze from the same start, so an agent that remembers the way reaches the goal faster in later
episodes. Held-out mazes: layouts whose hash falls in the test split are never used in training.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adaptrl.envs.base import SPLITS, BatchedMetaEnv, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError

MOVES = torch.tensor([[-1, 0], [0, 1], [1, 0], [0, -1]])  # up, right, down, left
VIEW = torch.tensor([[dr, dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)])


@dataclass(frozen=True)
class MazeConfig:
    """Maze family settings."""

    size: int = 5
    """Cells per side (the wall grid is 2 size + 1 squares wide)."""
    horizon: int = 100
    """Maximum steps per episode."""
    step_cost: float = 0.01
    """Reward lost per step."""
    test_fraction: float = 0.2
    """Share of maze layouts held out for testing."""

    def __post_init__(self) -> None:
        if self.size < 2:
            raise ConfigError(f"env.size must be >= 2, got {self.size}")
        if self.horizon <= 0:
            raise ConfigError(f"env.horizon must be > 0, got {self.horizon}")
        if self.step_cost < 0:
            raise ConfigError("env.step_cost must be >= 0")
        if not 0 < self.test_fraction < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")


def generate_maze(size: int, seed: int) -> np.ndarray:
    """Perfect maze by randomised depth-first search: bool walls [2 size + 1, 2 size + 1]."""
    rng = random.Random(seed)
    walls = np.ones((2 * size + 1, 2 * size + 1), dtype=bool)
    stack, seen = [(0, 0)], {(0, 0)}
    walls[1, 1] = False
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1))
            if 0 <= r + dr < size and 0 <= c + dc < size and (r + dr, c + dc) not in seen
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = rng.choice(options)
        walls[r + nr + 1, c + nc + 1] = False  # the wall between the two cells
        walls[2 * nr + 1, 2 * nc + 1] = False
        seen.add((nr, nc))
        stack.append((nr, nc))
    return walls


def layout_split(walls: np.ndarray, test_fraction: float) -> str:
    """Split of a layout, a pure function of its walls (so train and test never share one)."""
    digest = hashlib.sha256(np.packbits(walls).tobytes()).digest()
    return "test" if int.from_bytes(digest[:8], "little") / 2**64 < test_fraction else "train"


def shortest_path_length(walls: np.ndarray, start, goal) -> int:
    """Breadth-first search distance in squares (-1 if unreachable)."""
    from collections import deque

    start, goal = tuple(int(x) for x in start), tuple(int(x) for x in goal)
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        if cur == goal:
            return dist[cur]
        for dr, dc in MOVES.tolist():
            nxt = (cur[0] + dr, cur[1] + dc)
            if not walls[nxt] and nxt not in dist:
                dist[nxt] = dist[cur] + 1
                queue.append(nxt)
    return -1


class MazeTasks(TaskDistribution):
    """Layouts from seeded DFS, start and goal on distinct random cells."""

    def __init__(self, config: MazeConfig) -> None:
        self.config = config

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        size, out = self.config.size, {"walls": [], "start": [], "goal": []}
        while len(out["walls"]) < n:
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            walls = generate_maze(size, seed)
            if layout_split(walls, self.config.test_fraction) != split:
                continue
            cells = torch.randperm(size * size, generator=generator, device=generator.device)[:2]
            start, goal = [(2 * (int(c) // size) + 1, 2 * (int(c) % size) + 1) for c in cells]
            out["walls"].append(torch.as_tensor(walls))
            out["start"].append(torch.tensor(start))
            out["goal"].append(torch.tensor(goal))
        dev = generator.device
        return {k: torch.stack(v).to(dev) for k, v in out.items()}

    def split_of(self, tasks: Tasks) -> list[str]:
        return [layout_split(w.cpu().numpy(), self.config.test_fraction) for w in tasks["walls"]]


class MazeEnv(BatchedMetaEnv):
    """All rows move at once; the 3x3 view is one gather into the batched wall grids."""

    def __init__(self, num_envs: int, config: MazeConfig | None = None, device: Any = "cpu"):
        super().__init__(num_envs, device)
        self.config = config or MazeConfig()
        self.horizon = self.config.horizon
        self.single_observation_space = spaces.Box(0.0, 1.0, (18,), "float32")
        self.single_action_space = spaces.Discrete(4)
        self._batch_spaces()
        self.pos = torch.zeros(num_envs, 2, dtype=torch.long, device=self.device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._rows = torch.arange(num_envs, device=self.device)
        self._moves, self._view = MOVES.to(self.device), VIEW.to(self.device)

    def _obs(self) -> torch.Tensor:
        cells = self.pos[:, None, :] + self._view  # [N, 9, 2]
        walls = self.tasks["walls"][self._rows[:, None], cells[..., 0], cells[..., 1]]
        goal = (cells == self.tasks["goal"][:, None, :]).all(-1)
        return torch.cat([walls.float(), goal.float()], -1)

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        if mask is None:
            self.pos = self.tasks["start"].clone()
            self.t.zero_()
        else:
            self.pos = torch.where(mask[:, None], self.tasks["start"], self.pos)
            self.t = torch.where(mask, 0, self.t)
        return self._obs(), {}

    def step(self, actions):
        target = self.pos + self._moves[actions.long()]
        blocked = self.tasks["walls"][self._rows, target[:, 0], target[:, 1]]
        self.pos = torch.where(blocked[:, None], self.pos, target)
        self.t += 1
        terminated = (self.pos == self.tasks["goal"]).all(-1)
        rewards = terminated.float() - self.config.step_cost
        truncated = (self.t >= self.horizon) & ~terminated
        return self._obs(), rewards, terminated, truncated, {}
