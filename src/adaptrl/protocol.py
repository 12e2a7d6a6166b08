"""The meta-test protocol itself: which tasks, which seed, and one learner's adaptation curve.

Every learner of an evaluation (the run's and its references) sees the *same* tasks and the same
rollout seed, so differences between curves come from the learners, not from the draw. Used by
the trainer (periodic held-out evaluation) and by ``evaluation`` (whole runs); knows learners only
through the protocol of ``algos/base.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from adaptrl.algos.base import Adaptation, Learner
from adaptrl.config import EvalConfig
from adaptrl.envs import Family, resolve
from adaptrl.errors import ConfigError
from adaptrl.rng import derive_seed

TUNING_SEED_OFFSET = 7919
"""Seed offset of the training tasks that tune a reference's step sizes or a classical
strategy: a draw apart from every reported one."""
_SPLIT_SEED = {"train": 0, "test": 1, "ood": 2}
VALIDATION_OFFSET = 104729
"""Seed offset of the held-out tasks training evaluates on (best checkpoint), apart from the
tasks ``adaptrl evaluate`` reports."""


def _seed(cfg: EvalConfig, split: str, offset: int = 0) -> int:
    return cfg.seed + _SPLIT_SEED.get(split, 3) + offset


def evaluation_tasks(family: Family, split: str, cfg: EvalConfig, num_tasks: int | None = None):
    """The tasks of ``split`` that every learner of an evaluation adapts to."""
    if split not in family.tasks.splits:
        raise ConfigError(
            f"unknown split '{split}' for env '{family.name}'; it has: "
            f"{', '.join(family.tasks.splits)}"
        )
    gen = torch.Generator().manual_seed(_seed(cfg, split))
    return family.tasks.sample(num_tasks or cfg.num_tasks, split, gen)


def meta_test(
    learner: Learner,
    family: Family,
    split: str,
    cfg: EvalConfig,
    num_tasks: int | None = None,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Adapt to ``num_tasks`` tasks of ``split``: ``{"returns": [X, N], ...extras}``.

    X indexes adaptation (gradient steps for MAML, episodes of a trial for RL²)."""
    if seed_offset:
        gen = torch.Generator().manual_seed(_seed(cfg, split, seed_offset))
        tasks = family.tasks.sample(num_tasks or cfg.num_tasks, split, gen)
    else:
        tasks = evaluation_tasks(family, split, cfg, num_tasks)
    result = learner.meta_test(tasks, cfg, derive_seed(_seed(cfg, split, seed_offset), 7))
    out = {"returns": result.returns, **result.extras, **family_metrics(family, result, tasks)}
    out = {k: v.detach().cpu() for k, v in out.items()}
    trace = family_trace(family, result, tasks)
    return {**out, "trace": trace} if trace else out


def family_trace(family: Family, result: Adaptation, tasks) -> dict | None:
    """Where the family names a position (``EnvSpec.trace_labels``): the path of the first
    episode before adapting and after the last adaptation point, on the task with the largest
    first parameter (e.g. the strongest wind)."""
    if not family.spec.trace_labels or not result.trajectories:
        return None
    first = next(iter(tasks.values()))
    i = int(first.reshape(first.shape[0], -1)[:, 0].argmax())
    paths = []
    for traj, episode in ((result.trajectories[0], 0), (result.trajectories[-1], -1)):
        row = i * (traj.rewards.shape[1] // traj.num_tasks)
        index = traj.episode_index()[:, row]
        target = int(index.max()) if episode == -1 else 0
        keep = (index == target) & traj.mask[:, row].bool()
        paths.append(traj.obs[keep, row, :2].cpu().tolist())
    return {
        "task": {k: v[i].cpu().tolist() for k, v in tasks.items()},
        "labels": list(family.spec.trace_labels),
        "before": paths[0],
        "after": paths[1],
    }


def family_metrics(family: Family, result: Adaptation, tasks) -> dict[str, torch.Tensor]:
    """The family's own per-episode metrics (``EnvSpec.metrics``) at every adaptation point:
    {name: [X, n]}, each task's episodes averaged."""
    if not family.spec.metrics or not result.trajectories:
        return {}
    fn = resolve(family.spec.metrics)
    points: dict[str, list[torch.Tensor]] = {}
    for traj in result.trajectories:
        for name, value in fn(traj, family, tasks).items():  # [E, B], B = n x rows per task
            points.setdefault(name, []).append(traj.task_mean(value))
    return {name: torch.cat(parts) for name, parts in points.items()}


def adaptation_returns(
    learner: Learner, family: Family, split: str, cfg: EvalConfig, num_tasks: int | None = None
) -> torch.Tensor:
    """Mean return at each adaptation point on ``split``: [X, N]."""
    return meta_test(learner, family, split, cfg, num_tasks)["returns"]


def tuned_for_reference(learner: Learner, family: Family, cfg: EvalConfig) -> EvalConfig:
    """The settings a reference adapts with, as the learner tunes them (``tune_for_reference``)
    on a separate draw of *training* tasks by the mean return after the last adaptation point
    (at most 20 tasks; never the split being reported)."""

    def score(trial: EvalConfig) -> float:
        trial = replace(trial, num_tasks=min(cfg.num_tasks, 20))
        returns = meta_test(learner, family, "train", trial, seed_offset=TUNING_SEED_OFFSET)
        return float(returns["returns"][-1].mean())

    return learner.tune_for_reference(cfg, score)
