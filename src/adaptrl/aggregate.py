"""Adaptation curves averaged over runs that differ only in their training seed.

A run's interval is over evaluation tasks: it says nothing about how much the result depends on
the seed that trained it. Here each run's mean over tasks counts once and the 95% interval is over
seeds (``stats.mean_ci95`` on ``[X, num_seeds]``), as papers that report several seeds do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from adaptrl.config import RunConfig
from adaptrl.errors import RunError
from adaptrl.plots import draw_adaptation, pyplot, save_figure
from adaptrl.results import finite_or_none, format_ci, load_results, write_json
from adaptrl.runs import Run
from adaptrl.stats import mean_ci95

Records = dict[str, dict[str, Any]]  # learner -> eval record (one split)


def _check_same(runs: list[Run], configs: list[RunConfig]) -> None:
    """Seeds of one experiment: the same preset, algorithm and env in every run."""
    for field in ("preset", "algorithm", "env"):
        first = getattr(configs[0], field)
        for run, config in zip(runs[1:], configs[1:]):
            if getattr(config, field) != first:
                raise RunError(
                    f"runs differ in {field}: '{runs[0].path}' has {first!r}, '{run.path}' has "
                    f"{getattr(config, field)!r}; aggregate runs that differ only in train.seed"
                )


def _check_seeds(runs: list[Run], configs: list[RunConfig]) -> None:
    """The same seed gives the same numbers: counting it twice would narrow the interval."""
    seen: dict[int, Run] = {}
    for run, config in zip(runs, configs):
        seed = config.train.seed
        if seed in seen:
            raise RunError(
                f"runs '{seen[seed].path}' and '{run.path}' have the same seed {seed}; "
                "aggregate runs of different seeds"
            )
        seen[seed] = run


def _split_records(run: Run, split: str, checkpoint: str) -> Records:
    eval_dir = run.eval_dir_for(checkpoint)
    records = load_results(run, eval_dir).get(split) if eval_dir.is_dir() else None
    if not records:
        flag = "" if checkpoint == "last" else f" --checkpoint {checkpoint}"
        raise RunError(
            f"run {run.path} has no {split} evaluation of its {checkpoint} checkpoint; run "
            f"adaptrl evaluate {run.path} --split {split}{flag}"
        )
    return records


def _common_x(runs: list[Run], evaluated: list[Records], names: list[str]) -> list[int]:
    """Every learner of every run must have been evaluated at the same adaptation points."""
    x = evaluated[0][names[0]]["x"]
    for run, records in zip(runs, evaluated):
        for name in names:
            if records[name]["x"] != x:
                raise RunError(
                    f"{name} in '{run.path}' was evaluated at x = {records[name]['x']}, in "
                    f"'{runs[0].path}' at x = {x}; evaluate all runs with the same settings"
                )
    return x


def _learner_stats(name: str, evaluated: list[Records]) -> dict[str, Any]:
    """Mean over seeds of each seed's mean over tasks, with a 95% interval over seeds."""
    per_seed = [records[name]["mean_return"] for records in evaluated]
    mean, ci = mean_ci95(torch.tensor(per_seed, dtype=torch.float64).T)  # [X, num_seeds]
    return {
        "mean_return": mean.tolist(),
        "ci95": finite_or_none(ci.tolist()),
        "per_seed": per_seed,
    }


def aggregate_runs(
    paths: list[Path | str], split: str, out: Path | str, checkpoint: str = "last"
) -> dict[str, Any]:
    """Aggregate the ``split`` evaluations of runs of one preset over their seeds; writes
    OUT/aggregate_<split>[_<checkpoint>].json and .png and returns the record.
    ``checkpoint``: whose evaluations (``best``: each run's best iteration, as the paper
    reports; every run must have been evaluated with that ``--checkpoint``)."""
    if len(paths) < 2:
        raise RunError(f"aggregate needs at least 2 runs of different seeds, got {len(paths)}")
    runs = [Run.open(p) for p in paths]
    configs = [run.config() for run in runs]
    _check_same(runs, configs)
    _check_seeds(runs, configs)
    evaluated = [_split_records(run, split, checkpoint) for run in runs]
    names = [n for n in evaluated[0] if all(n in records for records in evaluated[1:])]
    if not names:
        raise RunError(f"no learner was evaluated on {split} in all {len(runs)} runs")
    x = _common_x(runs, evaluated, names)
    record = {
        "preset": configs[0].preset,
        "algorithm": configs[0].algorithm,
        "env": configs[0].env["name"],
        "split": split,
        "checkpoint": checkpoint,
        "iterations": [records[names[0]].get("iteration") for records in evaluated],
        "runs": [str(run.path) for run in runs],
        "seeds": [config.train.seed for config in configs],
        "num_seeds": len(runs),
        "num_tasks": [records[names[0]]["num_tasks"] for records in evaluated],
        "x": x,
        "x_label": evaluated[0][names[0]]["x_label"],
        "learners": {name: _learner_stats(name, evaluated) for name in names},
    }
    out = Path(out)
    # eval-best -> _best, eval-iter000050 -> _iter000050 (a checkpoint file: its stem)
    which = runs[0].eval_dir_for(checkpoint).name.removeprefix("eval-")
    stem = f"aggregate_{split}" + ("" if checkpoint == "last" else f"_{which}")
    write_json(out / f"{stem}.json", record)
    plot_aggregate(record, out / f"{stem}.png")
    return record


def _which(record: dict[str, Any]) -> str:
    """'' for the last checkpoints, else e.g. ', best checkpoints (iterations 50, 75)'."""
    checkpoint = record.get("checkpoint", "last")
    if checkpoint == "last":
        return ""
    return f", {checkpoint} checkpoints (iterations {', '.join(map(str, record['iterations']))})"


def plot_aggregate(record: dict[str, Any], path: Path) -> Path:
    """Curves with 95% bands over seeds, drawn like the report's adaptation panels."""
    learners = {
        name: {"x": record["x"], "x_label": record["x_label"], **stats}
        for name, stats in record["learners"].items()
    }
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    title = f"{record['preset'] or record['algorithm']}: {record['split']} tasks"
    draw_adaptation(ax, learners, f"{title}, {record['num_seeds']} seeds{_which(record)}")
    ax.set_ylabel("mean episode return (95% CI over seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def format_aggregate(record: dict[str, Any]) -> str:
    """Plain-text table: one row per adaptation point, one column per learner."""
    names = list(record["learners"])
    seeds = ", ".join(map(str, record["seeds"]))
    lines = [
        f"{record['preset'] or record['algorithm']}  split={record['split']}  "
        f"env={record['env']}  seeds={seeds}{_which(record)}  (mean over seeds ± 95% interval "
        "over seeds)",
        f"{record['x_label']:>16} " + " ".join(f"{n:>20}" for n in names),
    ]
    for i, x in enumerate(record["x"]):
        cells = []
        for name in names:
            stats = record["learners"][name]
            ci = format_ci(stats["ci95"][i], record["num_seeds"])
            cells.append(f"{stats['mean_return'][i]:9.2f} ± {ci:>6}  ")
        lines.append(f"{x:>16} " + " ".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)
