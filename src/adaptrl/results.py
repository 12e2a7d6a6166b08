"""Evaluation results in one place: 95% intervals, JSON records, loading and plain-text tables.

The interval is over tasks (normal approximation: mean ± 1.96·sd/√N; 0 with a single task).
Read-only helpers for report and CLI; evaluation writes through ``write_json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from adaptrl.runs import Run, atomic_write_text
from adaptrl.stats import mean_ci95

SPLIT_ORDER = {"train": 0, "test": 1, "ood": 2}  # train beside test, then out-of-distribution


def summarize(returns: torch.Tensor) -> dict[str, list]:
    """Mean and 95% half-width over tasks for each adaptation point; returns: [X, N]."""
    mean, ci = mean_ci95(returns)
    return {"mean_return": mean.tolist(), "ci95": ci.tolist()}


def extra_records(extras: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per-task extras ([..., N] tensors) as mean and 95% interval over tasks."""
    out: dict[str, Any] = {}
    for key, value in extras.items():
        mean, ci = mean_ci95(value.float())
        out[key], out[f"{key}_ci95"] = mean.tolist(), ci.tolist()
    return out


def curve_record(
    name: str, env: str, split: str, returns: torch.Tensor, x_label: str
) -> dict[str, Any]:
    return {
        "algorithm": name,
        "env": env,
        "split": split,
        "num_tasks": returns.shape[1],
        "x": list(range(returns.shape[0])),
        "x_label": x_label,
        **summarize(returns),
        "per_task_return": returns.T.tolist(),
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1))


def load_classical(run: Run) -> dict[str, dict[str, Any]]:
    """Classical-baseline records of a run by split (families that declare classical strategies)."""
    return {
        p.stem: json.loads(p.read_text()) for p in sorted(run.eval_dir.glob("classical/*.json"))
    }


def load_results(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """All eval JSON files of a run: {split: {learner: record}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run.eval_dir.glob("*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["split"], {})[record["algorithm"]] = record
    return dict(sorted(results.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 3)))


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Plain-text table: one row per adaptation point, one column per learner and split
    (plus the mean episode length of the run's learner where it is recorded)."""
    lines = []
    for split, learners in results.items():
        names = list(learners)
        first = learners[names[0]]
        lines.append(f"split={split}  tasks={first['num_tasks']}  env={first['env']}")
        lengths = "mean_episode_length" in first
        header = f"{first['x_label']:>16} " + " ".join(f"{n:>20}" for n in names)
        lines.append(header + (f" {'episode length':>16}" if lengths else ""))
        for i, x in enumerate(first["x"]):
            cells = [
                f"{learners[n]['mean_return'][i]:9.2f} ± {learners[n]['ci95'][i]:6.2f}  "
                for n in names
            ]
            row = f"{x:>16} " + " ".join(f"{c:>20}" for c in cells)
            if lengths:
                row += f" {first['mean_episode_length'][i]:16.2f}"
            lines.append(row)
        if "total_return" in first:
            lines.append(
                f"{'total per trial':>16} "
                + " ".join(
                    f"{learners[n]['total_return']:9.2f} ± "
                    f"{learners[n]['total_return_ci95']:6.2f}  "
                    for n in names
                    if "total_return" in learners[n]
                )
            )
        lines.append("")
    return "\n".join(lines)
