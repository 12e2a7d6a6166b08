"""report.md + self-contained report.html with PNG plots of a run.

Adaptation curves of the run's learner beside the references it names, with 95% bands, one panel
per evaluated split: the gap between training and held-out tasks is where over-fitting shows.
Classical strategies and published numbers are shown where the run has them. Everything said
about a learner or a split comes from the eval records, and the report says when records are
stale or not like for like instead of printing them as if they were.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from adaptrl.config import PublishedConfig, RunConfig
from adaptrl.errors import RunError
from adaptrl.plots import (
    classical_figure,
    env_steps_figure,
    identical_curves,
    is_learner,
    ordered_splits,
    plot_adaptation,
    plot_training,
    save_figure,
    trace_figure,
)
from adaptrl.results import (
    all_x,
    curve_cell,
    format_ci,
    load_classical,
    load_results,
    load_traces,
    mixed_sizes_warning,
    size_labels,
    sizes_differ,
    verdict_rows,
)
from adaptrl.runs import Run, atomic_write_text, read_metrics

Records = dict[str, dict[str, Any]]  # learner -> eval record (one split)
UNITS = {"trial": "total reward per trial", "episode": "return per episode"}


def adaptation_title(splits: list[str]) -> str:
    """The figure's heading names the splits actually evaluated."""
    held_out = "ood" not in splits  # with ood beside it, "held-out test" would be ambiguous
    names = [("held-out test" if s == "test" and held_out else s) for s in splits]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"Adaptation on {joined} tasks"


def _classical_lines(classical: dict[str, dict[str, Any]], config: RunConfig) -> list[str]:
    lines = []
    for split, record in classical.items():
        pub = config.published
        totals = pub.totals if pub and pub.split == split else {}
        unit = UNITS[record.get("unit", "trial")]
        rows = record["strategies"]
        metrics = sorted(  # scalar metrics with an interval, e.g. rms_error_cm, regret
            {
                k
                for v in rows.values()
                for k, value in v.items()
                if f"{k}_ci95" in v and k != "mean" and isinstance(value, (int, float))
            }
        )
        lines += [
            f"## Classical strategies on the same {split} tasks",
            "",
            f"Mean {unit} ± 95% CI over {record['num_tasks']} tasks (setting "
            f"{record['setting']}); "
            + (
                "the learner's latest evaluation used other tasks, so it has no row here."
                if record.get("learner_on_other_tasks")
                else "the learner's row is after adapting."
            ),
            "",
            f"| strategy | {unit} | " + " | ".join(metrics) + (" |" if metrics else "|"),
            "|---" * (2 + len(metrics)) + "|",
        ]
        for name, v in rows.items():
            shown = f"**{name}**" if is_learner(name, config.algorithm) else name
            ci = format_ci(v.get("ci95"), record["num_tasks"])
            cells = [f"{v['mean']:.2f} ± {ci}"] + [
                f"{v[m]:.2f} ± {format_ci(v.get(f'{m}_ci95'), record['num_tasks'])}"
                if m in v
                else "–"
                for m in metrics
            ]
            lines.append(f"| {shown} | " + " | ".join(cells) + " |")
        lines += [
            f"| {name} (published) | {value:.2f} |" + " |" * len(metrics)
            for name, value in totals.items()
        ]
        lines.append("")
    return lines


# ------------------------------------------------------------------------------ markdown
def _stale_lines(learners: Records, saved: int | None, run_path: Path) -> list[str]:
    """Records evaluated at another checkpoint than the current one, grouped by iteration."""
    if saved is None:
        return []
    stale: dict[int, list[str]] = {}
    for name, rec in learners.items():
        if rec.get("checkpoint", "last") != "last" or rec.get("beside"):
            continue  # evaluated from best.pt or a kept iteration on purpose, or another run
        if rec.get("iteration") is not None and int(rec["iteration"]) != saved:
            stale.setdefault(int(rec["iteration"]), []).append(name)
    lines = []
    for iteration, names in stale.items():
        who = "" if len(names) == len(learners) else ", ".join(names) + " "
        lines += [
            f"**Stale:** {who}evaluated at iteration {iteration}; the checkpoint is now at "
            f"{saved}: re-run `adaptrl evaluate {run_path}`",
            "",
        ]
    return lines


def _split_lines(split: str, learners: Records, saved: int | None, run_path: Path) -> list[str]:
    names = list(learners)
    first = learners[names[0]]
    mixed = sizes_differ(learners)
    labels = size_labels(learners)
    columns = [f"{n} ({labels[n]})" if mixed else n for n in names]
    heading = f"### {split} tasks" + ("" if mixed else f" (N = {first['num_tasks']})")
    lines = [heading, ""] + _stale_lines(learners, saved, run_path)
    if mixed:
        lines += ["**Warning:** " + mixed_sizes_warning(split, learners), ""]
    lines += [f"| {first['x_label']} | " + " | ".join(columns) + " |"]
    lines += ["|---" * (len(names) + 1) + "|"]
    for x in all_x(learners):
        cells = [curve_cell(learners[n], x, aligned=False) for n in names]
        lines.append(f"| {x} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += _metric_lines(learners, names)
    for later, earlier in identical_curves(learners).items():
        lines += [
            f"**Note:** {later} and {earlier} give identical curves on {split} "
            f"(the figure draws {later} in another line style so that both show).",
            "",
        ]
    used = [f"{n}: {learners[n]['inner_lrs']}" for n in names if "inner_lrs" in learners[n]]
    return lines + (["Inner step sizes — " + "; ".join(used), ""] if used else [])


def _metric_lines(learners: Records, names: list[str]) -> list[str]:
    """The family's own metrics at each adaptation point (e.g. the drone's rms_error_cm, the
    recommender's regret), one small table each, beside the returns."""
    first = learners[names[0]]
    metrics = [
        k
        for k, v in first.items()
        if isinstance(v, list)
        and len(v) == len(first["x"])
        and f"{k}_ci95" in first
        and k not in ("mean_return", "mean_episode_length")
    ]
    lines = []
    for metric in metrics:
        shown = [n for n in names if metric in learners[n]]
        lines += [f"| {first['x_label']} | " + " | ".join(f"{metric}: {n}" for n in shown) + " |"]
        lines += ["|---" * (len(shown) + 1) + "|"]
        for i, x in enumerate(first["x"]):
            cells = [
                f"{learners[n][metric][i]:.2f} ± "
                + format_ci(learners[n][f"{metric}_ci95"][i], learners[n]["num_tasks"])
                for n in shown
            ]
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _references(results: dict[str, Records]) -> dict[str, str]:
    """Reference descriptions as recorded by evaluation (each learner names its own), with how
    each was trained and the step sizes it adapted with, so a reader can judge its fairness."""
    return {
        name: rec["description"] + _reference_budget(rec)
        for learners in results.values()
        for name, rec in learners.items()
        if rec.get("description")
    }


def _reference_budget(rec: dict[str, Any]) -> str:
    parts = []
    if rec.get("trained"):
        t = rec["trained"]
        parts.append(f"trained {t['iterations']} iterations in {t['seconds']:.0f} s")
    if rec.get("inner_lrs"):
        lrs = ", ".join(f"{lr:g}" for lr in rec["inner_lrs"])
        why = rec.get("inner_lrs_tuned")
        parts.append(f"step sizes {lrs}" + (f" ({why})" if why else ""))
    return f" ({'; '.join(parts)})" if parts else ""


def _intro_sentence(results: dict[str, Records]) -> str:
    labels = list(dict.fromkeys(r["x_label"] for ls in results.values() for r in ls.values()))
    text = (
        f"Mean episode return at each point of adaptation (x: {' / '.join(labels)}), "
        "± 95% interval over tasks."
    )
    refs = _references(results)
    if refs:
        text += " References: " + "; ".join(f"**{k}**: {v}" for k, v in refs.items()) + "."
    return text


def _gap_lines(results: dict[str, Records], algorithm: str) -> list[str]:
    if not (algorithm in results.get("train", {}) and algorithm in results.get("test", {})):
        return []
    tr, te = results["train"][algorithm], results["test"][algorithm]
    lines = [
        "### Generalisation gap (train − test, same learner)",
        "",
        "gap = mean return on training tasks minus on held-out test tasks. Positive: the "
        "learner does worse on tasks it was not trained on. Negative: the held-out tasks came "
        "out easier for it (a different draw, or a split that holds easier tasks), not a sign "
        "that it generalises beyond training; a gap within the ± 95% intervals above is noise.",
        "",
        f"| {tr['x_label']} | train | test | gap |",
        "|---|---|---|---|",
    ]
    for x, a, b in zip(tr["x"], tr["mean_return"], te["mean_return"]):
        lines.append(f"| {x} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    return lines + [""]


def _adaptation_lines(
    results: dict[str, Records], algorithm: str, saved: int | None, run_path: Path
) -> list[str]:
    if not results:
        return [
            "## Adaptation curves",
            "",
            f"Not evaluated yet: {not_evaluated_hint(run_path)}.",
            "",
        ]
    lines = ["## Adaptation curves", "", _intro_sentence(results), ""]
    for split in ordered_splits(results):
        lines += _split_lines(split, results[split], saved, run_path)
        lines += _verdict_lines(split, results[split], algorithm)
    return lines + _gap_lines(results, algorithm)


def _verdict_lines(split: str, learners: Records, algorithm: str) -> list[str]:
    """Does the learner beat each reference, point by point? The paired difference of returns
    (same tasks, same seed) with its 95% interval: "better" or "worse" only when the interval
    excludes 0, so a reader never has to judge overlapping bands by eye."""
    rows = verdict_rows(learners, algorithm)
    if not rows:
        return []
    header, *body = rows
    lines = [
        f"**{algorithm} against each reference ({split})**: return of {algorithm} minus the "
        "reference's, paired by task, ± 95% interval; *better* / *worse* when the interval "
        "excludes 0, else *level*.",
        "",
        f"| {learners[algorithm]['x_label']} | " + " | ".join(header[1:]) + " |",
        "|---" * len(header) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines + [""]


def not_evaluated_hint(run_path: Path) -> str:
    """What to run when a report has no adaptation curves (it once showed only dashes)."""
    return f"run `adaptrl evaluate {run_path}`, then `adaptrl report {run_path}` again"


def _best_lines(best: dict[str, Records], state: dict | None, run_path: Path) -> list[str]:
    """The evaluation of checkpoints/best.pt beside the last checkpoint's: a run that got worse
    after its best iteration shows both (the paper's protocol keeps the best)."""
    now = ((state or {}).get("best") or {}).get("iteration")
    if not best:
        if now is None or int(now) == int((state or {}).get("iteration", -1)):
            return []  # no best.pt, or it is the last checkpoint evaluated above
        return [
            "## At the best iteration",
            "",
            f"`checkpoints/best.pt` (iteration {int(now)}) is not evaluated yet: "
            f"`adaptrl evaluate {run_path} --checkpoint best`.",
            "",
        ]
    first = next(iter(next(iter(best.values())).values()))
    iteration = int(first["iteration"])
    on = first.get("selected_on")
    lines = [
        "## At the best iteration",
        "",
        f"`checkpoints/best.pt`, iteration {iteration}: the best validation score (the return "
        "at the last adaptation point"
        + (f" on a fixed draw of {on} tasks" if on else "")
        + f"), evaluated by `adaptrl evaluate {run_path} --checkpoint best`.",
        "",
    ]
    if now is not None and int(now) != iteration:
        lines += [
            f"**Stale:** best.pt is now iteration {int(now)}: re-run "
            f"`adaptrl evaluate {run_path} --checkpoint best`",
            "",
        ]
    for split in ordered_splits(best):
        lines += _split_lines(split, best[split], None, run_path)
    return lines


def _published_lines(
    published: PublishedConfig | None,
    results: dict[str, Records],
    classical: dict[str, dict[str, Any]],
) -> list[str]:
    """Published vs ours at each x (and totals where no classical table shows them)."""
    if published is None:
        return []
    ours = results.get(published.split, {})
    lines = ["## Published numbers", "", f"Published: {published.source}", ""]
    if published.curves:
        x_label = next(iter(ours.values()))["x_label"] if ours else "x"
        names = list(published.curves)
        header = " | ".join(f"{n} (published) | {n} (ours)" for n in names)
        lines += [f"| {x_label} | {header} |", "|---" * (2 * len(names) + 1) + "|"]
        for x in range(max(len(c) for c in published.curves.values())):
            cells = []
            for name, curve in published.curves.items():
                cells += [_number(curve[x] if x < len(curve) else None)]
                cells += [_number(_mean_at(ours.get(name), x))]
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
        lines.append("")
    if published.totals and published.split not in classical:
        lines += ["| learner | published total | ours |", "|---|---|---|"]
        for name, value in published.totals.items():
            total = ours.get(name, {}).get("total_return")
            lines.append(f"| {name} | {value:.2f} | {_number(total)} |")
        lines.append("")
    return lines


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _mean_at(record: dict[str, Any] | None, x: int) -> float | None:
    if record is None or x not in record["x"]:
        return None
    return record["mean_return"][record["x"].index(x)]


def _intro_lines(config: RunConfig, metrics: list, state: dict | None) -> list[str]:
    last = metrics[-1] if metrics else {}
    md = [
        f"# adaptrl run report: {config.preset or config.algorithm}",
        "",
        f"- algorithm: `{config.algorithm}`, env: `{config.env['name']}`, "
        f"seed: {config.train.seed}",
    ]
    # Evaluations use the checkpoint; a killed run may have logged iterations beyond it.
    saved = int(state["iteration"]) if state else 0
    logged = int(last.get("iteration", 0))
    line = f"- iterations trained: {saved} / {config.train.num_iterations} (checkpoint)"
    if logged > saved:
        line += (
            f"; metrics were logged up to iteration {logged} past it before the run "
            "stopped (`adaptrl train --resume` continues from the checkpoint)"
        )
    md.append(line)
    elapsed = state.get("elapsed_s") if state else None  # older checkpoints lack it
    if elapsed is None:  # the logged row of the checkpoint's iteration
        row = next((r for r in metrics if int(r.get("iteration", -1)) == saved), last)
        elapsed = row.get("time/elapsed_s")
    if elapsed is not None:
        line = f"- training wall time: {float(elapsed):.1f} s"
        if "perf/iteration_s" in last:  # no metrics.csv: no "nan s"
            line += f" (last iteration {last['perf/iteration_s']:.3f} s)"
        md.append(line)
    return md + [""]


def _figures(
    run: Run,
    config: RunConfig,
    metrics,
    results,
    classical,
    state: dict | None,
    beside: list[Run] | None = None,
) -> dict[str, Path]:
    figures = {}
    # What the adaptation axis counts, as evaluation recorded it (report never imports learners).
    labels = [
        r["x_label"] for ls in (results or {}).values() for r in ls.values() if "x_label" in r
    ]
    best = ((state or {}).get("best") or {}).get("iteration")
    training = plot_training(
        metrics,
        run.path / "training.png",
        labels[0] if labels else "adaptation points",
        None if best is None else int(best),
    )
    if training:
        figures["Meta-training curves"] = training
    if results:
        figures[adaptation_title(ordered_splits(results))] = plot_adaptation(
            results, run.path / "adaptation.png", config.published, classical
        )
    if classical:
        fig = classical_figure(classical, config.algorithm, config.published)
        unit = UNITS[next(iter(classical.values())).get("unit", "trial")]
        figures[f"Classical strategies: {unit}"] = save_figure(fig, run.path / "classical.png")
    curves = {f"{run.path.name} ({config.algorithm})": metrics}
    for other in beside or []:
        curves[f"{other.path.name} ({other.config().algorithm})"] = read_metrics(other)
    steps = env_steps_figure(curves)
    if steps is not None:
        figures["Return against environment steps"] = save_figure(steps, run.path / "env_steps.png")
    traces = load_traces(run)
    if traces:
        figures["Paths before and after adapting, hardest task of each split"] = save_figure(
            trace_figure(traces), run.path / "traces.png"
        )
    return figures


def _with_beside(results: dict[str, Records], config: RunConfig, beside: list[Run]):
    """Other runs' learners added as rows beside this run's references, split by split, where
    they were evaluated on the very same tasks (same family settings, split, seed and number of
    tasks), so the paired verdicts stay paired; elsewhere they appear in the env-steps figure
    only."""
    for other in beside:
        other_config = other.config()
        if other_config.env != config.env:
            continue
        for split, records in load_results(other).items():
            theirs = records.get(other_config.algorithm)
            ours = results.get(split, {}).get(config.algorithm)
            if theirs is None or ours is None:
                continue
            if (theirs["seed"], theirs["num_tasks"]) != (ours["seed"], ours["num_tasks"]):
                continue
            name = f"{other.path.name} ({other_config.algorithm})"
            iteration = theirs.get("iteration")
            results[split][name] = {
                **theirs,
                "description": f"the run {other.path} (iteration {iteration}), beside",
                "beside": True,
            }
    return results


def write_report(run: Run, beside: list[Run] | None = None) -> dict[str, Path]:
    """Write RUN/report.md, RUN/report.html and the PNGs they show; returns their paths.
    ``beside``: other runs (e.g. another learner on the same family) drawn in the figure of
    return against environment steps, and, where they were evaluated on the same tasks, beside
    the references in the adaptation curves and the paired verdicts."""
    config = run.config()
    results = _with_beside(load_results(run), config, beside or [])
    classical = load_classical(run)
    metrics = read_metrics(run)
    if not results and not metrics:
        raise RunError(
            f"run '{run.path}' has no metrics or evaluations yet; run "
            f"'adaptrl train' and 'adaptrl evaluate {run.path}' first"
        )
    state = run.load_checkpoint(required=False)
    saved = int(state["iteration"]) if state else None
    figures = _figures(run, config, metrics, results, classical, state, beside)
    md = _intro_lines(config, metrics, state)
    md += _adaptation_lines(results, config.algorithm, saved, run.path)
    best_dir = run.eval_dir_for("best")
    md += _best_lines(load_results(run, best_dir) if best_dir.is_dir() else {}, state, run.path)
    md += _classical_lines(classical, config)
    md += _published_lines(config.published, results, classical)
    for title, path in figures.items():
        md += [f"## {title}", "", f"![{title}]({path.name})", ""]
    atomic_write_text(run.path / "report.md", "\n".join(md))
    atomic_write_text(run.path / "report.html", _html(md, figures))
    return {
        "md": run.path / "report.md",
        "html": run.path / "report.html",
        **{p.stem: p for p in figures.values()},
    }


# ------------------------------------------------------------------------------ html
_CODE = re.compile(r"(`[^`]+`)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    """Escape HTML, then `code` and **bold** (bold is not looked for inside code)."""
    parts = _CODE.split(text)  # odd indices are the code spans
    return "".join(
        f"<code>{html.escape(p[1:-1])}</code>"
        if i % 2
        else _BOLD.sub(r"<strong>\1</strong>", html.escape(p))
        for i, p in enumerate(parts)
    )


def _html_line(line: str, images: dict[str, str]) -> str:
    if line.startswith("!["):
        name = line[line.rindex("](") + 2 : -1]  # the title may hold parentheses
        return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{images[name]}">'
    if line.startswith("#"):
        level = len(line) - len(line.lstrip("#"))
        return f"<h{level}>{_inline(line[level:].strip())}</h{level}>"
    return f"<p>{_inline(line)}</p>"


def _html_blocks(md_lines: list[str], images: dict[str, str]) -> list[str]:
    """Tables and bullet lists open and close around runs of their lines; the first table row
    is its header."""
    out: list[str] = []
    block, rows = None, 0
    for line in md_lines:
        kind = "table" if line.startswith("|") else "ul" if line.startswith("- ") else None
        if kind != block:
            out += ([f"</{block}>"] if block else []) + ([f"<{kind}>"] if kind else [])
            block, rows = kind, 0
        if kind == "table":
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue  # the |---| rule under the header
            tag = "th" if rows == 0 else "td"
            cells = "".join(
                f"<{tag}>{_inline(c.strip())}</{tag}>" for c in line.strip("|").split("|")
            )
            out.append(f"<tr>{cells}</tr>")
            rows += 1
        elif kind == "ul":
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line:
            out.append(_html_line(line, images))
    return out + ([f"</{block}>"] if block else [])


def _html(md_lines: list[str], figures: dict[str, Path]) -> str:
    """A minimal Markdown subset (headings, bullets, tables, images, **bold**, `code`) to HTML,
    images inlined."""
    images = {p.name: base64.b64encode(p.read_bytes()).decode() for p in figures.values()}
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em;text-align:right}img{max-width:100%}"
        "code{background:#f3f3f3;padding:0 .2em}"
    )
    body = "".join(_html_blocks(md_lines, images))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>adaptrl report</title>"
        f"<style>{style}</style></head><body>{body}</body></html>"
    )
