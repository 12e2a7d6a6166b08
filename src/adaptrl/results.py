"""Evaluation results in one place: 95% intervals, JSON records, loading and plain-text tables.

The interval is over tasks (normal approximation: mean ± 1.96·sd/√N, see ``stats``). With a
single task it says nothing, so tables print "n/a" rather than a number; a non-finite interval is
written as JSON null (NaN is not JSON). Read-only helpers for report and CLI; evaluation writes
through ``write_json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from adaptrl.runs import Run, atomic_write_text
from adaptrl.stats import mean_ci95

SPLIT_ORDER = {"train": 0, "test": 1, "ood": 2}  # train beside test, then out-of-distribution


def finite_or_none(value: Any) -> Any:
    """Nested lists of floats with NaN/inf replaced by None (JSON null)."""
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value if value is None or math.isfinite(value) else None


def summarize(returns: torch.Tensor) -> dict[str, list]:
    """Mean and 95% half-width over tasks for each adaptation point; returns: [X, N]."""
    mean, ci = mean_ci95(returns)
    return {"mean_return": mean.tolist(), "ci95": finite_or_none(ci.tolist())}


def extra_records(extras: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per-task extras ([..., N] tensors) as mean and 95% interval over tasks."""
    out: dict[str, Any] = {}
    for key, value in extras.items():
        mean, ci = mean_ci95(value.float())
        out[key], out[f"{key}_ci95"] = mean.tolist(), finite_or_none(ci.tolist())
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


def load_classical(run: Run, eval_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Classical-baseline records of a run by split (families that declare classical strategies),
    each with the run's learner as a row (``with_learner_row``); ``eval_dir``: another
    checkpoint's evaluations (default RUN/eval)."""
    folder = eval_dir or run.eval_dir
    tables = {}
    for path in sorted(folder.glob("classical/*.json")):
        learner = folder / f"{path.stem}.json"
        learner_record = json.loads(learner.read_text()) if learner.exists() else None
        tables[path.stem] = with_learner_row(json.loads(path.read_text()), learner_record)
    return tables


def with_learner_row(table: dict[str, Any], learner: dict[str, Any] | None) -> dict[str, Any]:
    """The classical table with the learner's row taken from its latest evaluation record, when
    that evaluation used the table's tasks (same number and seed); otherwise without a learner
    row (``learner_on_other_tasks`` says so). A row stored in the table by older versions is
    replaced either way: it may predate the latest evaluation."""
    if learner is None:
        return table
    name = learner["algorithm"]
    rows = {k: v for k, v in table["strategies"].items() if k.split(" ")[0] != name}
    seeds = (table.get("seed"), learner.get("seed"))
    same = table["num_tasks"] == learner["num_tasks"] and (None in seeds or seeds[0] == seeds[1])
    if same:
        label = name + (" (mode)" if learner.get("actions") == "mode" else "")
        rows[label] = learner_row(learner, table.get("unit", "trial"))
    return {**table, "strategies": rows, **({} if same else {"learner_on_other_tasks": True})}


def learner_row(learner: dict[str, Any], unit: str) -> dict[str, Any]:
    """The learner in the classical table's unit: its total reward per trial, or its return per
    episode after adapting (the last adaptation point), with the family's metrics there."""
    if unit == "trial" and "total_return" in learner:
        return {"mean": learner["total_return"], "ci95": learner["total_return_ci95"]}
    # A learner without trials (MAML): its return after the last adaptation step.
    row = {"mean": learner["mean_return"][-1], "ci95": learner["ci95"][-1]}
    if unit == "trial":
        row["note"] = "return after the last adaptation step (one episode), not a trial total"
    for key, value in learner.items():
        metric = key.removesuffix("_ci95")
        if key != metric and isinstance(learner.get(metric), list) and metric != "mean_return":
            row[metric], row[key] = learner[metric][-1], value[-1]
    return row


def load_traces(run: Run, eval_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Paths before and after adapting, by split (families that name a position)."""
    folder = eval_dir or run.eval_dir
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("traces/*.json"))}


def load_results(run: Run, eval_dir: Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """All eval JSON files of a run: {split: {learner: record}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted((eval_dir or run.eval_dir).glob("*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["split"], {})[record["algorithm"]] = record
    return dict(sorted(results.items(), key=lambda kv: SPLIT_ORDER.get(kv[0], 3)))


# ------------------------------------------------------------------------------ formatting
def format_ci(ci: float | None, num_tasks: int) -> str:
    """The half-width, or "n/a" where one task (or a NaN/null) leaves it undefined."""
    if ci is None or num_tasks <= 1 or not math.isfinite(ci):
        return "n/a"
    return f"{ci:.2f}"


def all_x(learners: dict[str, dict[str, Any]]) -> list[int]:
    """Every adaptation point any learner of a split was evaluated at, in order."""
    return sorted({x for rec in learners.values() for x in rec["x"]})


def sizes_differ(learners: dict[str, dict[str, Any]]) -> bool:
    """True when learners of one split were evaluated on different task or episode counts."""
    return len({(r["num_tasks"], r.get("episodes_per_step")) for r in learners.values()}) > 1


def size_labels(learners: dict[str, dict[str, Any]]) -> dict[str, str]:
    """ "N=40" per learner, plus episodes per step where those differ between learners."""
    episodes = len({r.get("episodes_per_step") for r in learners.values()}) > 1
    return {
        name: f"N={r['num_tasks']}"
        + (f", {r.get('episodes_per_step', '?')} episodes/step" if episodes else "")
        for name, r in learners.items()
    }


def mixed_sizes_warning(split: str, learners: dict[str, dict[str, Any]]) -> str:
    """One line saying that a split's columns are not like for like."""
    sizes = "; ".join(f"{n} {s}" for n, s in size_labels(learners).items())
    return (
        f"learners on {split} were evaluated on different numbers of tasks or episodes ({sizes}); "
        "their intervals are not comparable: evaluate them together (adaptrl evaluate without "
        "--no-references) to compare like with like"
    )


def curve_cell(record: dict[str, Any], x: int, aligned: bool = True) -> str:
    """'mean ± ci' of a record at adaptation point x ('–' where it has none); ``aligned``:
    padded for the plain-text table, else compact (Markdown)."""
    if x not in record["x"]:
        return "–"
    i = record["x"].index(x)
    ci = format_ci(record["ci95"][i], record["num_tasks"])
    mean = record["mean_return"][i]
    return f"{mean:9.2f} ± {ci:>6}  " if aligned else f"{mean:.2f} ± {ci}"


def _total_cell(record: dict[str, Any]) -> str:
    if "total_return" not in record:
        return "–"
    ci = format_ci(record.get("total_return_ci95"), record["num_tasks"])
    return f"{record['total_return']:9.2f} ± {ci:>6}  "


def _split_table(split: str, learners: dict[str, dict[str, Any]]) -> list[str]:
    names = list(learners)
    first = learners[names[0]]
    mixed = sizes_differ(learners)
    tasks = "mixed" if mixed else first["num_tasks"]
    lines = [f"split={split}  tasks={tasks}  env={first['env']}"]
    if mixed:
        lines.append("warning: " + mixed_sizes_warning(split, learners))
    labels = size_labels(learners)
    columns = [f"{n} ({labels[n]})" if mixed else n for n in names]
    lengths = "mean_episode_length" in first
    header = f"{first['x_label']:>16} " + " ".join(f"{c:>20}" for c in columns)
    lines.append(header + (f" {'episode length':>16}" if lengths else ""))
    for x in all_x(learners):
        row = f"{x:>16} " + " ".join(f"{curve_cell(learners[n], x):>20}" for n in names)
        if lengths and x in first["x"]:
            row += f" {first['mean_episode_length'][first['x'].index(x)]:16.2f}"
        lines.append(row)
    if any("total_return" in r for r in learners.values()):
        cells = " ".join(f"{_total_cell(learners[n]):>20}" for n in names)
        lines.append(f"{'total per trial':>16} {cells}")
    return lines + [""]


def paired_difference(a: dict[str, Any], b: dict[str, Any], x: int) -> tuple[float, float] | None:
    """Mean and 95% half-width over tasks of ``a``'s return minus ``b``'s at adaptation point
    ``x``, paired task by task: both adapted to the same tasks with the same seed, so the
    task-to-task spread (some goals are far, some winds strong) cancels. None when the records
    are not paired (other tasks, seeds or task counts) or lack point ``x``."""
    paired_on = ("num_tasks", "seed", "split", "iteration", "actions", "episodes_per_step")
    if a.get("beside") or b.get("beside"):  # another run's learner: its own iteration
        paired_on = tuple(k for k in paired_on if k != "iteration")
    if any(a.get(k) != b.get(k) for k in (*paired_on, "batch_steps")):
        return None  # another evaluation's record (a stale file): not paired
    if (
        x not in a["x"]
        or x not in b["x"]
        or "per_task_return" not in a
        or "per_task_return" not in b
    ):
        return None
    i, j = a["x"].index(x), b["x"].index(x)
    diff = [ra[i] - rb[j] for ra, rb in zip(a["per_task_return"], b["per_task_return"])]
    mean, ci = mean_ci95(torch.tensor(diff))
    return float(mean), float(ci)


def verdict(diff: tuple[float, float] | None) -> str:
    """'better' or 'worse' when the paired 95% interval excludes 0, else 'level'."""
    if diff is None or not math.isfinite(diff[1]) or diff[1] == 0 and diff[0] == 0:
        return "n/a"
    mean, ci = diff
    return "better" if mean - ci > 0 else "worse" if mean + ci < 0 else "level"


def verdict_rows(learners: dict[str, dict[str, Any]], algorithm: str) -> list[list[str]]:
    """Per adaptation point, the learner against each reference: "+3.10 ± 0.80 better"."""
    ours = learners.get(algorithm)
    refs = [n for n, r in learners.items() if n != algorithm and r.get("description")]
    if ours is None or not refs:
        return []
    rows = []
    for x in ours["x"]:
        cells = [str(x)]
        for name in refs:
            diff = paired_difference(ours, learners[name], x)
            text = "n/a" if diff is None else f"{diff[0]:+.2f} ± {diff[1]:.2f} {verdict(diff)}"
            cells.append(text)
        rows.append(cells)
    return [["", *refs], *rows]


def _verdict_table(split: str, learners: dict[str, dict[str, Any]], algorithm: str) -> list[str]:
    rows = verdict_rows(learners, algorithm)
    if not rows:
        return []
    lines = [
        f"{algorithm} minus each reference on {split} (return, paired by task, ± 95%; "
        "better/worse: the interval excludes 0)"
    ]
    header, *body = rows
    lines.append(
        f"{learners[algorithm]['x_label']:>16} " + " ".join(f"{h:>24}" for h in header[1:])
    )
    for cells in body:
        lines.append(f"{cells[0]:>16} " + " ".join(f"{c:>24}" for c in cells[1:]))
    return lines + [""]


def format_table(
    results: dict[str, dict[str, dict[str, Any]]], algorithm: str | None = None
) -> str:
    """Plain-text table: one row per adaptation point, one column per learner and split
    (plus the mean episode length of the run's learner where it is recorded); with
    ``algorithm``, the verdict against each reference below each split."""
    lines: list[str] = []
    for split, learners in results.items():
        lines += _split_table(split, learners)
        if algorithm:
            lines += _verdict_table(split, learners, algorithm)
    return "\n".join(lines)
