"""``Trajectories``: what every sampler back-end returns and every learner consumes."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch


@dataclass
class Trajectories:
    """Time-major batch of rows, ``B = num_tasks x episodes_per_task`` (tasks outermost); each
    row runs ``episodes_per_trial`` consecutive episodes of its task (1 for MAML, E for RL²).

    obs, next_obs: [T, B, obs_dim] (``next_obs`` is what the env returned, before any reset);
    actions: [T, B, act_dim] float32 (as sampled, before the env clips them) or [T, B] int64;
    log_probs: [T, B] behaviour log-probabilities of the actions; rewards, mask: [T, B] float32
    (mask = 1 on real steps, 0 after the row's last episode ended); terminated, truncated: [T, B]
    bool (an episode ended in the MDP / was cut). ``budget``: the step budget T of a full row.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor
    num_tasks: int
    episodes_per_trial: int = 1
    budget: int = 0

    _TENSORS = (
        "obs",
        "actions",
        "log_probs",
        "rewards",
        "next_obs",
        "terminated",
        "truncated",
        "mask",
    )

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[1] // self.num_tasks

    @property
    def num_steps(self) -> int:
        return int(self.mask.sum().item())

    @property
    def ends(self) -> torch.Tensor:
        return self.terminated | self.truncated

    def by_task(self, x: torch.Tensor) -> torch.Tensor:
        """[T, B, ...] -> [T, n, E, ...] (a view: tasks are outermost in B)."""
        return x.reshape(x.shape[0], self.num_tasks, self.episodes_per_task, *x.shape[2:])

    @classmethod
    def cat_per_task(cls, parts: list[Trajectories]) -> Trajectories:
        """Batches of the same tasks and horizon, one after the other within each task: rows
        [n x E1], [n x E2], ... -> [n x (E1 + E2 + ...)], tasks still outermost."""
        first = parts[0]
        if any(
            p.num_tasks != first.num_tasks or p.rewards.shape[0] != first.rewards.shape[0]
            for p in parts
        ):
            raise ValueError("cat_per_task needs batches of the same tasks and horizon")
        n = first.num_tasks

        def cat(name: str) -> torch.Tensor:
            xs = [getattr(p, name) for p in parts]
            per_task = [x.reshape(x.shape[0], n, -1, *x.shape[2:]) for x in xs]
            joined = torch.cat(per_task, 2)
            return joined.reshape(joined.shape[0], -1, *joined.shape[3:])

        return replace(first, **{name: cat(name) for name in cls._TENSORS})

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of every row (all its episodes): [B]."""
        return self.rewards.sum(0)

    def task_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Each task's mean of a per-row quantity [..., B] -> [..., n], over the rows with at
        least one step (a step-counted batch masks whole rows out)."""
        live = (self.mask.sum(0) > 0).to(x.dtype).reshape(self.num_tasks, -1)
        rows = x.reshape(*x.shape[:-1], self.num_tasks, -1)
        return (rows * live).sum(-1) / live.sum(-1).clamp_min(1.0)

    def task_returns(self) -> torch.Tensor:
        """Mean undiscounted row return of each task: [n]."""
        return self.task_mean(self.episode_returns())

    def episode_index(self) -> torch.Tensor:
        """Index of the episode each step belongs to within its row: [T, B] int64."""
        ends = self.ends.long()
        return (ends.cumsum(0) - ends).clamp_max(self.episodes_per_trial - 1)

    def step_in_episode(self) -> torch.Tensor:
        """Steps since the current episode of each row began: [T, B] int64 (0 at a start)."""
        T = self.ends.shape[0]
        t = torch.arange(T, device=self.ends.device).unsqueeze(1).expand_as(self.ends)
        starts = torch.cat([torch.ones_like(self.ends[:1]), self.ends[:-1]]).bool()
        return t - torch.where(starts, t, 0).cummax(0).values

    def per_episode(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of a [T, B] quantity over each episode of each row: [episodes_per_trial, B]."""
        out = torch.zeros(self.episodes_per_trial, x.shape[1], dtype=x.dtype, device=x.device)
        return out.scatter_add_(0, self.episode_index(), x * self.mask.to(x.dtype))

    def trial_end(self) -> torch.Tensor:
        """Last real step of each row: [T, B] bool."""
        after = torch.cat([self.mask[1:], torch.zeros_like(self.mask[:1])])
        return self.mask.bool() & ~after.bool()

    def to(self, device: torch.device | str) -> Trajectories:
        return self._replace(**{k: getattr(self, k).to(device) for k in self._TENSORS})

    def _replace(self, **tensors: torch.Tensor) -> Trajectories:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Trajectories(**{**values, **tensors})

    # ---- transport between processes: numpy arrays pickle as plain bytes (no shared memory)
    def to_numpy(self) -> dict:
        out = {k: getattr(self, k).cpu().numpy() for k in self._TENSORS}
        out.update(
            num_tasks=self.num_tasks, episodes_per_trial=self.episodes_per_trial, budget=self.budget
        )
        return out

    @classmethod
    def from_numpy(cls, data: dict) -> Trajectories:
        return cls(
            **{
                k: torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v
                for k, v in data.items()
            }
        )

    @classmethod
    def concat(cls, parts: list[Trajectories]) -> Trajectories:
        """Join shards along B (shards are contiguous task ranges), padding time with masked
        steps where one shard ended earlier than another."""
        if len(parts) == 1:
            return parts[0]
        T = max(p.rewards.shape[0] for p in parts)
        tensors = {}
        for k in cls._TENSORS:
            chunks = []
            for p in parts:
                x = getattr(p, k)
                if x.shape[0] < T:
                    pad = torch.zeros(T - x.shape[0], *x.shape[1:], dtype=x.dtype, device=x.device)
                    x = torch.cat([x, pad])
                chunks.append(x)
            tensors[k] = torch.cat(chunks, 1)
        first = parts[0]
        return cls(
            **tensors,
            num_tasks=sum(p.num_tasks for p in parts),
            episodes_per_trial=first.episodes_per_trial,
            budget=first.budget,
        )

    @classmethod
    def from_episodes(cls, episodes: list[dict[str, Any]], discrete: bool = False) -> Trajectories:
        """Variable-length episodes of one task, collected outside adaptrl (dicts of ``obs``,
        ``actions``, ``rewards`` and optionally ``terminated``), as a [T, E] batch, zero-padded
        and masked; an episode not ``terminated`` ended by its time limit."""
        rows = []
        for ep in episodes:
            rewards = torch.as_tensor(np.asarray(ep["rewards"]), dtype=torch.float32).reshape(-1)
            n = rewards.shape[0]
            obs = torch.as_tensor(np.asarray(ep["obs"]), dtype=torch.float32).reshape(n, -1)
            actions = torch.as_tensor(np.asarray(ep["actions"]))
            actions = actions.long().reshape(n) if discrete else actions.float().reshape(n, -1)
            rows.append((obs, actions, rewards, bool(ep.get("terminated", False))))
        T, E = max(r[2].shape[0] for r in rows), len(rows)
        obs = torch.zeros(T, E, rows[0][0].shape[1])
        actions = torch.zeros(T, E, *rows[0][1].shape[1:], dtype=rows[0][1].dtype)
        rewards, mask = torch.zeros(T, E), torch.zeros(T, E)
        terminated = torch.zeros(T, E, dtype=torch.bool)
        truncated = torch.zeros(T, E, dtype=torch.bool)
        for e, (o, a, r, ended_in_mdp) in enumerate(rows):
            n = r.shape[0]
            obs[:n, e], actions[:n, e], rewards[:n, e], mask[:n, e] = o, a, r, 1.0
            terminated[n - 1, e], truncated[n - 1, e] = ended_in_mdp, not ended_in_mdp
        return cls(
            obs, actions, torch.zeros(T, E), rewards, obs, terminated, truncated, mask, num_tasks=1
        )
