"""rllab's step-counted batches: a task's batch is counted in env steps, not episodes.

The MAML authors' code (rllab) samples each task's episodes in order until their steps reach the
batch size, so a task whose episodes end early gets more of them. ``step_counted`` does that on
top of any sampler: whole rounds of a fixed number of episodes per task, then the rows past each
task's budget are masked out whole (``Trajectories.task_mean`` leaves them out of every mean).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from adaptrl.sampling.trajectories import Trajectories

ROUND_SEED = 7919
"""Seed offset of each further round of a step-counted batch."""
MAX_ROUNDS = 4
"""Rounds of a step-counted batch at most: every row holds a whole horizon, so a policy whose
episodes end within a few steps would otherwise need hundreds of rows per task (400 tasks of
the MAML authors' preset then exhausted 24 GB). rllab has no cap; here a task keeps at most
4 x the episodes of one round."""


def step_counted(
    sample_round: Callable[[int], Trajectories], budget: int, seed: int
) -> Trajectories:
    """Per task, episodes in order until their steps reach ``budget`` (an episode is kept when
    it starts below the budget). ``sample_round(seed)`` samples one round (the same episodes
    per task each time), called at most ``MAX_ROUNDS`` times with seeds ``seed``,
    ``seed + ROUND_SEED``, ..."""

    def task_steps(t: Trajectories) -> torch.Tensor:
        return t.mask.sum(0).reshape(t.num_tasks, -1)  # [n, rows]: each episode's steps

    rounds = [sample_round(seed)]
    steps = task_steps(rounds[0]).sum(1)
    while bool((steps < budget).any()) and len(rounds) < MAX_ROUNDS:
        more = sample_round(seed + ROUND_SEED * len(rounds))
        rounds.append(more)
        steps = steps + task_steps(more).sum(1)
    traj = Trajectories.cat_per_task(rounds) if len(rounds) > 1 else rounds[0]
    lengths = task_steps(traj)
    kept = ((lengths.cumsum(1) - lengths) < budget).to(traj.mask.dtype)  # [n, E]
    keep_rows = kept.reshape(1, -1)
    return dataclasses.replace(traj, mask=traj.mask * keep_rows, rewards=traj.rewards * keep_rows)
