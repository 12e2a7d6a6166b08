"""The figures of reports and aggregates (matplotlib, file-only): training curves, adaptation
curves with 95% bands (identical curves kept visible, published curves dashed, a single
adaptation point as error bars) and classical strategies as bars.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaptrl.config import PublishedConfig
from adaptrl.results import SPLIT_ORDER, all_x

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Records = dict[str, dict[str, Any]]  # learner -> eval record (one split)
DUPLICATE_STYLES = (("--", "s"), (":", "^"), ("-.", "D"))  # an identical curve drawn again
HIGHLIGHT, PLAIN = "tab:orange", "tab:blue"  # the run's learner among classical strategies
MAX_TICKS = 12  # beyond this many adaptation points matplotlib picks integer ticks


def pyplot():
    """matplotlib.pyplot on the file-only Agg back-end (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


TRAINING_NAMES = {
    "adapt/return_pre": "sampled tasks, before adapting",
    "adapt/return_post": "sampled tasks, after adapting",
    "adapt/return_trial": "sampled tasks, whole trial",
    "adapt/return_first_episode": "sampled tasks, first episode",
    "adapt/return_last_episode": "sampled tasks, last episode",
}
"""Legends in words: the raw keys (``eval/train_return_2``) meant nothing to a reader (issue 26)."""


def training_name(key: str, x_label: str = "x") -> str:
    """A metric's legend: ``eval/<split>_return_<k>`` is the validation return at point k."""
    if key.startswith("eval/") and "_return_" in key:
        split, _, k = key.removeprefix("eval/").rpartition("_return_")
        return f"validation ({split} tasks), {x_label} = {k}"
    return TRAINING_NAMES.get(key, key)


def training_figure(
    metrics: list[dict[str, float]], x_label: str = "x", best: int | None = None
) -> Figure | None:
    """Training returns and validation points per meta-iteration; ``best`` (the iteration
    kept in checkpoints/best.pt) is marked."""
    keys = sorted({k for m in metrics for k in m if k.startswith("adapt/")})
    keys += sorted(
        {k for m in metrics for k in m if k.startswith("eval/") and "_return_" in k}
    )  # validation: eval/<split>_return_<step>
    if not keys:
        return None
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    for key in keys:
        rows = [m for m in metrics if key in m]
        style = "o-" if key.startswith("eval/") else "-"
        label = training_name(key, x_label)
        ax.plot([m["iteration"] for m in rows], [m[key] for m in rows], style, label=label, ms=3)
    if best is not None:
        ax.axvline(best, color="grey", linestyle=":", label=f"best iteration ({best}, best.pt)")
    return _returns_axes(fig, ax, "meta-iteration", "Meta-training")


def plot_training(
    metrics: list[dict[str, float]], path: Path, x_label: str = "x", best: int | None = None
) -> Path | None:
    fig = training_figure(metrics, x_label, best)
    return save_figure(fig, path) if fig is not None else None


def env_steps_figure(runs: dict[str, list[dict[str, float]]]) -> Figure | None:
    """Return against the env steps training has paid (``time/env_steps``), one line per run
    and series: the validation score (``eval/score``, adaptation on held-out draws) where the
    run logged one, else its training returns (``adapt/*``). Sample efficiency, the axis an
    off-policy learner is chosen on, with other runs of the family beside it."""
    fig, ax = pyplot().subplots(figsize=(6.5, 4))
    drawn = 0
    for name, metrics in runs.items():
        rows = [m for m in metrics if "time/env_steps" in m]
        keys = (
            ["eval/score"]
            if any("eval/score" in m for m in rows)
            else sorted({k for m in rows for k in m if k.startswith("adapt/")})
        )
        for key in keys:
            points = [(m["time/env_steps"], m[key]) for m in rows if key in m]
            if points:
                style = "o-" if key == "eval/score" else "-"
                label = f"{name}: {'validation' if key == 'eval/score' else key[6:]}"
                ax.plot(*zip(*points), style, ms=3, label=label)
                drawn += 1
    if not drawn:
        pyplot().close(fig)
        return None
    return _returns_axes(
        fig, ax, "environment steps of training", "Return against environment steps"
    )


def _returns_axes(fig: Figure, ax: Axes, x_label: str, title: str) -> Figure:
    """The labels, grid and legend every return-over-training figure shares."""
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


# ------------------------------------------------------------------------------ adaptation
def identical_curves(learners: Records) -> dict[str, str]:
    """{later: earlier} for learners whose curve equals an earlier one's (it would hide it)."""
    first: dict[tuple, str] = {}
    same = {}
    for name, rec in learners.items():
        key = (tuple(rec["x"]), tuple(rec["mean_return"]))
        if key in first:
            same[name] = first[key]
        else:
            first[key] = name
    return same


def _ci(values: list[float | None]) -> list[float]:
    """Half-widths for plotting: a null (undefined) interval draws no band."""
    return [math.nan if c is None else float(c) for c in values]


def _label(name: str, same: dict[str, str]) -> str:
    return f"{name} (= {same[name]})" if name in same else name


def _draw_curves(
    ax: Axes, learners: Records, same: dict[str, str], published: dict, classical: dict
) -> None:
    colors, copies = {}, 0
    for name, rec in learners.items():
        x, mean, ci = rec["x"], rec["mean_return"], _ci(rec["ci95"])
        style, marker = "-", "o"
        if name in same:  # drawn over an identical curve: a style that lets both show
            style, marker = DUPLICATE_STYLES[copies % len(DUPLICATE_STYLES)]
            copies += 1
        (line,) = ax.plot(x, mean, linestyle=style, marker=marker, label=_label(name, same))
        colors[name] = line.get_color()
        lo, hi = [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)]
        ax.fill_between(x, lo, hi, alpha=0.2, color=colors[name])
    for name, curve in published.items():
        ax.plot(
            range(len(curve)), curve, "--x", color=colors.get(name), label=f"{name} (published)"
        )
    for name, curve in classical.items():  # strategies that adapt over the same points
        ax.plot(range(len(curve)), curve, ":", marker=".", color="gray", alpha=0.8)
        ax.annotate(name, (len(curve) - 1, curve[-1]), fontsize=7, color="dimgray")
    xs = sorted(set(all_x(learners)) | {i for c in published.values() for i in range(len(c))})
    if len(xs) <= MAX_TICKS:
        ax.set_xticks(xs)
    else:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(next(iter(learners.values()))["x_label"])


def _draw_points(ax: Axes, learners: Records, same: dict[str, str], published: dict) -> None:
    """A single adaptation point (e.g. one-episode RL² trials): one point with its error bar per
    learner, side by side, so that neither a line nor two dots at x = 0 stand for it."""
    labels = []
    for i, (name, rec) in enumerate(learners.items()):
        ci = _ci(rec["ci95"])[0]
        yerr = [ci] if math.isfinite(ci) else None
        ax.errorbar([i], rec["mean_return"][:1], yerr=yerr, fmt="o", capsize=5)
        labels.append(_label(name, same))
    for name, curve in published.items():
        ax.errorbar([len(labels)], curve[:1], fmt="D", mfc="none", color="black")
        labels.append(f"{name} (published)")
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 3 else 0)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    x_label = next(iter(learners.values()))["x_label"]
    ax.set_xlabel(f"one adaptation point ({x_label} = 0)")


def draw_adaptation(
    ax: Axes,
    learners: Records,
    title: str,
    published: dict[str, list[float]] | None = None,
    classical: dict[str, list[float]] | None = None,
) -> None:
    """One panel: each learner's curve with its 95% band, published curves dashed, classical
    strategies' curves dotted grey; a point with an error bar per learner where there is a
    single adaptation point."""
    published = {k: v for k, v in (published or {}).items() if v}
    same = identical_curves(learners)
    single = all(len(r["x"]) == 1 for r in learners.values())
    if single and all(len(c) == 1 for c in published.values()):
        _draw_points(ax, learners, same, published)
    else:
        _draw_curves(ax, learners, same, published, classical or {})
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def ordered_splits(results: dict[str, Records]) -> list[str]:
    return sorted(results, key=lambda s: SPLIT_ORDER.get(s, 3))


def _sizes(learners: Records) -> str:
    sizes = sorted({r["num_tasks"] for r in learners.values()})
    return f"N={sizes[0]}" if len(sizes) == 1 else "N=" + "/".join(map(str, sizes)) + ", mixed"


def adaptation_figure(
    results: dict[str, Records],
    published: PublishedConfig | None = None,
    classical: dict[str, dict[str, Any]] | None = None,
) -> Figure:
    """One panel per split; published curves in the panel of the split they were measured on;
    classical strategies that record a curve over the same adaptation points (a recommender's
    clicks per session) beside the learners."""
    splits = ordered_splits(results)
    fig, axes = pyplot().subplots(
        1, len(splits), figsize=(5.5 * len(splits), 4), sharey=True, squeeze=False
    )
    for ax, split in zip(axes[0], splits):
        curves = published.curves if published and published.split == split else None
        points = len(next(iter(results[split].values()))["x"])
        strategies = (classical or {}).get(split, {}).get("strategies", {})
        others = {
            name: row["curve"]
            for name, row in strategies.items()
            if len(row.get("curve", [])) == points and points > 1
        }
        title = f"{split} tasks ({_sizes(results[split])})"
        draw_adaptation(ax, results[split], title, curves, others)
    axes[0][0].set_ylabel("mean episode return (95% CI)")
    return fig


def plot_adaptation(
    results: dict[str, Records],
    path: Path,
    published: PublishedConfig | None = None,
    classical: dict[str, dict[str, Any]] | None = None,
) -> Path:
    return save_figure(adaptation_figure(results, published, classical), path)


# ------------------------------------------------------------------------------ classical
def is_learner(name: str, learner: str) -> bool:
    return name == learner or name.startswith(f"{learner} (")  # e.g. "rl2 (mode)"


def _classical_rows(record: dict[str, Any], totals: dict[str, float]) -> list[tuple]:
    """(label, mean, ci95 or None, published?) per bar."""
    rows = [(n, v["mean"], v.get("ci95"), False) for n, v in record["strategies"].items()]
    return rows + [(f"{n} (published)", float(v), None, True) for n, v in totals.items()]


def _draw_classical(ax: Axes, rows: list[tuple], learner: str, unit: str = "trial") -> None:
    y = range(len(rows))
    err = [0.0 if c is None or not math.isfinite(c) else c for _, _, c, _ in rows]
    colors = [HIGHLIGHT if is_learner(n, learner) else PLAIN for n, *_ in rows]
    bars = ax.barh(y, [m for _, m, _, _ in rows], xerr=err, color=colors, capsize=3)
    for bar, (_, _, _, published) in zip(bars, rows):
        if published:
            bar.set_facecolor("white")
            bar.set_edgecolor("black")
            bar.set_hatch("//")
    ax.set_yticks(y, [n for n, *_ in rows])
    for tick, (name, _, _, published) in zip(ax.get_yticklabels(), rows):
        if is_learner(name, learner) and not published:
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    label = "return per episode" if unit == "episode" else "total reward per trial"
    ax.set_xlabel(f"{label} (95% CI)")
    ax.grid(alpha=0.3, axis="x")


def classical_figure(
    classical: dict[str, dict[str, Any]], learner: str, published: PublishedConfig | None = None
) -> Figure:
    """Horizontal bars of total reward per trial with 95% error bars, one panel per split; the
    run's learner highlighted, published totals hatched in the panel of their split."""
    splits = ordered_splits(classical)
    rows = {
        s: _classical_rows(
            classical[s], published.totals if published and published.split == s else {}
        )
        for s in splits
    }
    height = 1.5 + 0.4 * max(len(r) for r in rows.values())
    fig, axes = pyplot().subplots(
        1, len(splits), figsize=(5.5 * len(splits), height), squeeze=False
    )
    for ax, split in zip(axes[0], splits):
        _draw_classical(ax, rows[split], learner, classical[split].get("unit", "trial"))
        record = classical[split]
        ax.set_title(f"{split} tasks ({record['num_tasks']} trials, setting {record['setting']})")
    return fig


def trace_figure(traces: dict[str, dict[str, Any]]) -> Figure:
    """Paths before and after adapting, one panel per split (the target at the origin)."""
    splits = ordered_splits(traces)
    fig, axes = pyplot().subplots(1, len(splits), figsize=(5 * len(splits), 4.5), squeeze=False)
    for ax, split in zip(axes[0], splits):
        trace = traces[split]
        for key, style in (("before", "--"), ("after", "-")):
            path = trace[key]
            if path:
                xs, ys = zip(*path)
                ax.plot(xs, ys, style, label=f"{key} adapting")
                ax.plot(xs[0], ys[0], "ko", markersize=4)
        ax.plot(0, 0, "r*", markersize=12, label="target")
        task = ", ".join(f"{k}={_short(v)}" for k, v in trace["task"].items())
        ax.set_title(f"{split}: {task}", fontsize=8)
        ax.set_xlabel(trace["labels"][0])
        ax.set_ylabel(trace["labels"][1])
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def _short(value: Any) -> str:
    values = value if isinstance(value, list) else [value]
    return "/".join(f"{v:.2g}" for v in values)
