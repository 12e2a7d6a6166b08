"""report.md + self-contained report.html with PNG plots of a run.

Shows the training curves, and adaptation curves of the run's learner beside its references
(pretrained, random init) with 95% bands, for train and held-out test tasks side by side: the
gap between the two splits is where over-fitting to training tasks shows.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from adaptrl.errors import RunError
from adaptrl.results import load_classical, load_results
from adaptrl.runs import Run, atomic_write_text, read_metrics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(metrics: list[dict[str, float]], path: Path) -> Path | None:
    keys = sorted({k for m in metrics for k in m if k.startswith("adapt/")})
    keys += sorted({k for m in metrics for k in m if k.startswith("eval/test_return_")})
    if not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in keys:
        rows = [m for m in metrics if key in m]
        style = "o-" if key.startswith("eval/") else "-"
        ax.plot(
            [m["iteration"] for m in rows], [m[key] for m in rows], style, label=key, markersize=3
        )
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean episode return")
    ax.set_title("Meta-training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_adaptation(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> Path:
    plt = _plt()
    splits = [s for s in ("train", "test") if s in results] + [
        s for s in results if s not in ("train", "test")
    ]
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5.5 * len(splits), 4), sharey=True, squeeze=False
    )
    for ax, split in zip(axes[0], splits):
        for name, rec in results[split].items():
            x, mean, ci = rec["x"], rec["mean_return"], rec["ci95"]
            ax.plot(x, mean, "o-", label=name)
            ax.fill_between(
                x, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)], alpha=0.2
            )
        first = next(iter(results[split].values()))
        ax.set_title(f"{split} tasks (N={first['num_tasks']})")
        ax.set_xlabel(first["x_label"])
        ax.set_xticks(first["x"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean episode return (95% CI)")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _markdown_tables(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for split, learners in results.items():
        names = list(learners)
        first = learners[names[0]]
        lines += [
            f"### {split} tasks (N = {first['num_tasks']})",
            "",
            f"| {first['x_label']} | " + " | ".join(names) + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        for i, x in enumerate(first["x"]):
            cells = [
                f"{learners[n]['mean_return'][i]:.2f} ± {learners[n]['ci95'][i]:.2f}" for n in names
            ]
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
        lines.append("")
        used = [f"{n}: {learners[n]['inner_lrs']}" for n in names if "inner_lrs" in learners[n]]
        if used:
            lines += ["Inner step sizes — " + "; ".join(used), ""]
    return lines


def _references(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    """Reference descriptions as recorded by evaluation (each learner names its own)."""
    return {
        name: rec["description"]
        for learners in results.values()
        for name, rec in learners.items()
        if rec.get("description")
    }


def _gap_lines(results: dict[str, dict[str, dict[str, Any]]], algorithm: str) -> list[str]:
    if not (
        "train" in results
        and "test" in results
        and algorithm in results["train"]
        and algorithm in results["test"]
    ):
        return []
    tr, te = results["train"][algorithm], results["test"][algorithm]
    lines = [
        "### Generalisation gap (train − test, same learner)",
        "",
        f"| {tr['x_label']} | train | test | gap |",
        "|---|---|---|---|",
    ]
    for i, x in enumerate(tr["x"]):
        a, b = tr["mean_return"][i], te["mean_return"][i]
        lines.append(f"| {x} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    return lines + [""]


def write_report(run: Run) -> dict[str, Path]:
    """Write RUN/report.md, RUN/report.html and the PNGs they show; returns their paths."""
    config = run.config()
    results = load_results(run)
    metrics = read_metrics(run)
    if not results and not metrics:
        raise RunError(
            f"run '{run.path}' has no metrics or evaluations yet; run "
            f"'adaptrl train' and 'adaptrl evaluate {run.path}' first"
        )
    figures = {}
    training = plot_training(metrics, run.path / "training.png")
    if training:
        figures["Meta-training curves"] = training
    if results:
        figures["Adaptation on train and held-out test tasks"] = plot_adaptation(
            results, run.path / "adaptation.png"
        )
    last = metrics[-1] if metrics else {}
    md = [
        f"# adaptrl run report: {config.preset or config.algorithm}",
        "",
        f"- algorithm: `{config.algorithm}`, env: `{config.env['name']}`, "
        f"seed: {config.train.seed}",
    ]
    # Evaluations use the checkpoint; a killed run may have logged iterations beyond it.
    state = run.load_checkpoint(required=False)
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
        md.append(
            f"- training wall time: {float(elapsed):.1f} s "
            f"(last iteration {last.get('perf/iteration_s', float('nan')):.3f} s)"
        )
    md.append("")
    if results:
        md += [
            "## Adaptation curves",
            "",
            "Mean episode return after each adaptation step, ± 95% interval over tasks. "
            "References: "
            + "; ".join(f"**{k}**: {v}" for k, v in _references(results).items())
            + ".",
            "",
        ]
        md += _markdown_tables(results) + _gap_lines(results, config.algorithm)
    for split, record in load_classical(run).items():
        rows = record["strategies"]
        md += [
            f"## Classical strategies on the same {split} tasks",
            "",
            f"Mean total reward per trial ± 95% CI over {record['num_tasks']} trials "
            f"(setting {record['setting']}), in the layout of Duan et al. 2016.",
            "",
            "| strategy | total reward |",
            "|---|---|",
        ]
        md += [f"| {name} | {v['mean']:.2f} ± {v['ci95']:.2f} |" for name, v in rows.items()]
        md.append("")
    for title, path in figures.items():
        md += [f"## {title}", "", f"![{title}]({path.name})", ""]
    md_text = "\n".join(md)
    atomic_write_text(run.path / "report.md", md_text)
    atomic_write_text(run.path / "report.html", _html(md, figures))
    return {
        "md": run.path / "report.md",
        "html": run.path / "report.html",
        **{p.stem: p for p in figures.values()},
    }


def _html(md_lines: list[str], figures: dict[str, Path]) -> str:
    """A minimal Markdown subset (headings, bullets, tables, images) to HTML, images inlined."""
    out, table = [], False
    inline = {p.name: base64.b64encode(p.read_bytes()).decode() for p in figures.values()}
    for line in md_lines:
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not table else "td"
            out.append(
                ("<table>" if not table else "")
                + "<tr>"
                + "".join(f"<{tag}>{c}</{tag}>" for c in cells)
                + "</tr>"
            )
            table = True
            continue
        if table:
            out.append("</table>")
            table = False
        if line.startswith("!["):
            name = line[line.index("(") + 1 : -1]
            out.append(
                f'<img alt="{html.escape(name)}" src="data:image/png;base64,{inline[name]}">'
            )
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if table:
        out.append("</table>")
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:.3em .6em;text-align:right}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>adaptrl report</title>"
        f"<style>{style}</style></head><body>{''.join(out)}</body></html>"
    )
