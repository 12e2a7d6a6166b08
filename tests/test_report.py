"""Report, plain-text tables and seed aggregation on hand-written run directories (no training):
each test would have caught a user-reported report problem."""

import json
import math
import shutil

import pytest
import torch
from matplotlib.collections import PolyCollection

from adaptrl.aggregate import aggregate_runs, format_aggregate
from adaptrl.config import parse_run_config
from adaptrl.errors import RunError
from adaptrl.plots import adaptation_figure, classical_figure, pyplot, training_figure
from adaptrl.report import _html, adaptation_title, write_report
from adaptrl.results import extra_records, format_table, load_results, summarize, write_json
from adaptrl.runs import Run, load_checkpoint_file


def make_run(path, algorithm="maml", seed=0, iteration=3, published=None, preset="p"):
    config = {"algorithm": algorithm, "env": {"name": "nav"}, "preset": preset}
    config["train"] = {"seed": seed, "num_iterations": 3}
    if published:
        config["published"] = published
    run = Run.create(path, parse_run_config(config))
    if iteration is not None:
        run.save_checkpoint(
            {
                "iteration": iteration,
                "algorithm": {},
                "generator": torch.Generator().get_state(),
                "elapsed_s": 1.0,
            }
        )
    return run


def record(name, split, mean, ci=None, num_tasks=3, iteration=3, **extra):
    return {
        "algorithm": name,
        "env": "nav",
        "split": split,
        "num_tasks": num_tasks,
        "x": list(range(len(mean))),
        "x_label": "gradient steps",
        "mean_return": mean,
        "ci95": ci if ci is not None else [0.5] * len(mean),
        "per_task_return": [],
        "iteration": iteration,
        "actions": "sample",
        "episodes_per_step": 20,
        **extra,
    }


def write(run, rec, main="maml"):
    suffix = "" if rec["algorithm"] == main else f".{rec['algorithm']}"
    write_json(run.eval_dir / f"{rec['split']}{suffix}.json", rec)


def report_md(run):
    write_report(run)
    return (run.path / "report.md").read_text()


# ------------------------------------------------------------------------------ 1. html
def test_html_renders_bold_and_code_in_paragraphs_lists_headings_and_cells():
    lines = [
        "# run **p** `x<y`",
        "- algorithm: `maml`, **fast**",
        "| **a** | `b` |",
        "|---|---|",
        "| 1 | **2** |",
        "",
        "see `a**b**` and <b> **c**",
    ]
    out = _html(lines, {})
    assert "<h1>run <strong>p</strong> <code>x&lt;y</code></h1>" in out
    assert "<ul><li>algorithm: <code>maml</code>, <strong>fast</strong></li></ul>" in out
    assert "<table><tr><th><strong>a</strong></th><th><code>b</code></th></tr>" in out
    assert "<tr><td>1</td><td><strong>2</strong></td></tr></table>" in out
    assert "<p>see <code>a**b**</code> and &lt;b&gt; <strong>c</strong></p>" in out
    assert "`" not in out.split("<body>")[1] and "**c" not in out


# ------------------------------------------------------------------------------ 2. identical
def test_identical_curves_get_their_own_style_a_legend_mark_and_a_note(tmp_path):
    run = make_run(tmp_path / "run")
    write(run, record("maml", "test", [-40.0, -20.0]))
    write(run, record("pretrained", "test", [-40.0, -30.0]))
    write(run, record("random_init", "test", [-40.0, -30.0]))
    md = report_md(run)
    assert "random_init and pretrained give identical curves on test" in md
    ax = adaptation_figure(load_results(run)).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["maml", "pretrained", "random_init (= pretrained)"]
    assert lines["pretrained"].get_linestyle() == "-"
    assert lines["random_init (= pretrained)"].get_linestyle() == "--"
    assert lines["random_init (= pretrained)"].get_marker() == "s"
    pyplot().close("all")


# ------------------------------------------------------------------------------ 3. one point
def test_a_single_adaptation_point_draws_one_point_per_learner(tmp_path):
    results = {
        "test": {
            "rl2": record("rl2", "test", [6.5], [0.2], x_label="episodes"),
            "random_init": record("random_init", "test", [5.0], [0.3]),
        }
    }
    ax = adaptation_figure(results).axes[0]
    points = [(list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata())) for c in ax.containers]
    assert points == [([0], [6.5]), ([1], [5.0])]  # side by side: nothing twice at x = 0
    bars = {id(line) for c in ax.containers for line in (c.lines[0], *c.lines[1])}  # + caps
    assert [line for line in ax.get_lines() if id(line) not in bars] == []  # no curve drawn
    assert [len(c.lines[1]) for c in ax.containers] == [2, 2]  # an error bar on each point
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no band
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rl2", "random_init"]
    assert list(ax.get_xticks()) == [0, 1]
    pyplot().close("all")


# ------------------------------------------------------------------------------ 4. classical
def classical(num_tasks=100, learner=True):
    """A classical table as ``load_classical`` gives it (with the learner's row) or as
    evaluation stores it (``learner=False``)."""
    rows = {"random": {"mean": 5.0, "ci95": 0.2}, "ucb1": {"mean": 6.7, "ci95": 0.1}}
    if learner:
        rows["rl2"] = {"mean": 6.6, "ci95": 0.3}
    return {
        "split": "test",
        "env": "bandit",
        "num_tasks": num_tasks,
        "setting": "10, 5",
        "strategies": rows,
    }


def rl2_record():  # the learner's evaluation on the classical table's tasks
    return record(
        "rl2",
        "test",
        [6.6],
        num_tasks=100,
        x_label="episodes",
        total_return=6.6,
        total_return_ci95=0.3,
    )


def test_classical_strategies_are_plotted_with_the_learner_highlighted(tmp_path):
    fig = classical_figure({"test": classical()}, "rl2")
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == [5.0, 6.7, 6.6]
    colors = [p.get_facecolor() for p in ax.patches]
    assert colors[0] == colors[1] != colors[2]
    ticks = ax.get_yticklabels()
    assert [t.get_text() for t in ticks] == ["random", "ucb1", "rl2"]
    assert [t.get_fontweight() for t in ticks] == ["normal", "normal", "bold"]
    pyplot().close("all")

    run = make_run(tmp_path / "run", algorithm="rl2")
    write(run, rl2_record(), main="rl2")
    write_json(run.eval_dir / "classical" / "test.json", classical(learner=False))
    paths = write_report(run)
    md = (run.path / "report.md").read_text()
    assert "![Classical strategies: total reward per trial](classical.png)" in md
    assert "| **rl2** | 6.60 ± 0.30 |" in md and "| ucb1 | 6.70 ± 0.10 |" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "<strong>rl2</strong>" in html


# ------------------------------------------------------------------------------ 5. stale
def test_a_stale_evaluation_says_so_next_to_its_table(tmp_path):
    run = make_run(tmp_path / "run", iteration=40)
    write(run, record("maml", "test", [1.0, 2.0], iteration=30))
    write(run, record("maml", "train", [1.0, 2.0], iteration=40))
    write(run, record("pretrained", "train", [1.0, 1.5], iteration=30))
    md = report_md(run)
    test_part = md.split("### test tasks")[1].split("###")[0]
    assert (
        f"**Stale:** evaluated at iteration 30; the checkpoint is now at 40: re-run "
        f"`adaptrl evaluate {run.path}`" in test_part
    )
    train_part = md.split("### train tasks")[1].split("###")[0]
    assert "**Stale:** pretrained evaluated at iteration 30; the checkpoint is now at 40" in (
        train_part
    )
    assert md.count("**Stale:**") == 2


def test_a_best_checkpoint_evaluation_gets_its_own_section_and_goes_stale(tmp_path):
    run = make_run(tmp_path / "run", iteration=40)
    write(run, record("maml", "test", [1.0, 2.0], iteration=40))
    best = record("maml", "test", [1.0, 7.5], iteration=20, checkpoint="best")
    write_json(run.eval_dir_for("best") / "test.json", {**best, "selected_on": "train"})
    state = load_checkpoint_file(run.checkpoint_path)
    run.save_checkpoint({**state, "best": {"iteration": 20, "score": 7.5}})
    md = report_md(run)
    main_part, best_part = md.split("## At the best iteration")
    assert "7.50" in best_part and "7.50" not in main_part
    assert "iteration 20: the best validation score" in best_part
    assert "on a fixed draw of train tasks" in best_part and "**Stale:**" not in md
    run.save_checkpoint({**state, "best": {"iteration": 30, "score": 8.0}})  # trained on
    best_part = report_md(run).split("## At the best iteration")[1]
    assert "**Stale:** best.pt is now iteration 30" in best_part
    shutil.rmtree(run.eval_dir_for("best"))  # not evaluated: the report says how
    assert (
        f"`checkpoints/best.pt` (iteration 30) is not evaluated yet: `adaptrl evaluate "
        f"{run.path} --checkpoint best`" in report_md(run)
    )
    run.save_checkpoint({**state, "best": {"iteration": 40, "score": 9.0}})  # best = last
    assert "## At the best iteration" not in report_md(run)


# ------------------------------------------------------------------------------ 6. sizes
def test_mixed_task_counts_show_n_per_column_and_warn(tmp_path):
    run = make_run(tmp_path / "run")
    write(run, record("maml", "test", [1.0, 2.0], num_tasks=4))
    write(run, record("pretrained", "test", [1.0, 1.5], num_tasks=3))
    md = report_md(run)
    assert "### test tasks\n" in md and "N = " not in md
    assert "| gradient steps | maml (N=4) | pretrained (N=3) |" in md
    assert "**Warning:** learners on test were evaluated on different numbers" in md
    text = format_table(load_results(run))
    assert "split=test  tasks=mixed  env=nav" in text
    assert "warning: learners on test were evaluated on different numbers" in text
    assert "maml (N=4)" in text and "pretrained (N=3)" in text


def test_equal_sizes_keep_one_n_and_mixed_episodes_are_named(tmp_path):
    run = make_run(tmp_path / "run")
    write(run, record("maml", "test", [1.0, 2.0]))
    write(run, record("pretrained", "test", [1.0, 1.5]))
    assert "### test tasks (N = 3)" in report_md(run) and "warning" not in format_table(
        load_results(run)
    )
    write(run, record("pretrained", "test", [1.0, 1.5], episodes_per_step=10))
    assert "pretrained (N=3, 10 episodes/step)" in report_md(run)


# ------------------------------------------------------------------------------ 7. heading
@pytest.mark.parametrize(
    "splits,title",
    [
        (["test"], "Adaptation on held-out test tasks"),
        (["train"], "Adaptation on train tasks"),
        (["train", "test"], "Adaptation on train and held-out test tasks"),
        (["train", "test", "ood"], "Adaptation on train, test and ood tasks"),
    ],
)
def test_adaptation_heading_names_the_splits_evaluated(splits, title):
    assert adaptation_title(splits) == title


def test_report_of_a_test_only_evaluation_does_not_claim_train(tmp_path):
    run = make_run(tmp_path / "run")
    write(run, record("maml", "test", [1.0, 2.0]))
    md = report_md(run)
    assert "## Adaptation on held-out test tasks\n" in md and "train and" not in md


# ------------------------------------------------------------------------------ 8. n/a
def test_an_undefined_interval_prints_na_not_nan(tmp_path):
    run = make_run(tmp_path / "run")
    one = record("maml", "test", [1.0, 2.0], [0.0, 0.0], num_tasks=1)
    write(run, {**one, "total_return": 3.0, "total_return_ci95": None})
    write(run, record("pretrained", "test", [1.0, 2.0], [None, float("nan")], num_tasks=3))
    text = format_table(load_results(run))
    assert "nan" not in text
    assert "1.00 ±    n/a" in text and "3.00 ±    n/a" in text
    md = report_md(run)
    assert "| 0 | 1.00 ± n/a | 1.00 ± n/a |" in md and "nan" not in md


def test_non_finite_intervals_are_written_as_null():
    assert summarize(torch.tensor([[1.0, float("nan")], [1.0, 3.0]])) == {
        "mean_return": [pytest.approx(math.nan, nan_ok=True), 2.0],
        "ci95": [None, pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))],
    }
    extras = extra_records({"total_return": torch.tensor([1.0, float("inf")])})
    assert extras["total_return_ci95"] is None
    assert summarize(torch.tensor([[4.0]])) == {"mean_return": [4.0], "ci95": [0.0]}  # stats.py


# ------------------------------------------------------------------------------ 10. published
PUBLISHED = {
    "source": "Finn et al. 2017, Fig. 5",
    "split": "test",
    "curves": {"maml": [-40.0, -20.0, -15.0]},
}


def test_published_curves_are_drawn_dashed_and_tabled_against_ours(tmp_path):
    run = make_run(tmp_path / "run", published=PUBLISHED)
    write(run, record("maml", "train", [-41.0, -19.0]))
    write(run, record("maml", "test", [-42.0, -21.0]))
    md = report_md(run)
    assert "Published: Finn et al. 2017, Fig. 5" in md
    assert "| gradient steps | maml (published) | maml (ours) |" in md
    assert "| 0 | -40.00 | -42.00 |" in md and "| 2 | -15.00 | – |" in md
    fig = adaptation_figure(load_results(run), run.config().published)
    train, test = fig.axes
    assert "maml (published)" not in [line.get_label() for line in train.get_lines()]
    pub = next(line for line in test.get_lines() if line.get_label() == "maml (published)")
    assert list(pub.get_ydata()) == [-40.0, -20.0, -15.0] and pub.get_linestyle() == "--"
    assert [t for t in test.get_xticks()] == [0, 1, 2]
    pyplot().close("all")


def test_published_totals_join_the_classical_table_and_plot(tmp_path):
    published = {"source": "Duan et al. 2016, Table 1", "totals": {"rl2": 6.7}}
    run = make_run(tmp_path / "run", algorithm="rl2", published=published)
    write(run, rl2_record(), main="rl2")
    write_json(run.eval_dir / "classical" / "test.json", classical(learner=False))
    md = report_md(run)
    table = md.split("## Classical strategies on the same test tasks")[1].split("##")[0]
    assert "| rl2 (published) | 6.70 |" in table
    ax = classical_figure({"test": classical()}, "rl2", run.config().published).axes[0]
    ticks = ax.get_yticklabels()
    assert (ticks[-1].get_text(), ticks[-1].get_fontweight()) == ("rl2 (published)", "normal")
    assert ax.patches[-1].get_width() == 6.7 and ax.patches[-1].get_hatch() == "//"
    pyplot().close("all")


# ------------------------------------------------------------------------------ 11. rl2 text
def test_rl2_report_names_only_its_own_references_and_x_label(tmp_path):
    run = make_run(tmp_path / "run", algorithm="rl2")
    write(run, record("rl2", "test", [1.0, 2.0], x_label="episodes"), main="rl2")
    ref = record("random_init", "test", [1.0, 1.0], description="untrained recurrent policy")
    write(run, {**ref, "x_label": "episodes"}, main="rl2")
    md = report_md(run)
    assert (
        "Mean episode return at each point of adaptation (x: episodes), ± 95% interval over "
        "tasks. References: **random_init**: untrained recurrent policy." in md
    )
    assert "pretrained" not in md and "gradient steps" not in md


# ------------------------------------------------------------------------------ 12. words
def test_training_legends_are_words_and_the_best_iteration_is_marked():
    """Legends showed raw keys (eval/train_return_2) and the best iteration was not marked
    (issue 26)."""
    metrics = [
        {"iteration": i, "adapt/return_pre": -5.0 + i, "adapt/return_post": -4.0 + i}
        | ({"eval/train_return_0": -5.0, "eval/train_return_2": -3.0 + i} if i % 2 == 0 else {})
        for i in range(1, 5)
    ]
    fig = training_figure(metrics, "gradient steps", best=2)
    ax = fig.axes[0]
    assert ax.get_legend_handles_labels()[1] == [
        "sampled tasks, after adapting",
        "sampled tasks, before adapting",
        "validation (train tasks), gradient steps = 0",
        "validation (train tasks), gradient steps = 2",
        "best iteration (2, best.pt)",
    ]
    assert list(ax.lines[-1].get_xdata()) == [2, 2]
    pyplot().close(fig)


def test_a_never_evaluated_run_says_how_to_evaluate_it(tmp_path, capsys):
    """The report of a trained, never evaluated run once held dashes and no hint (issue 26)."""
    from adaptrl.cli import main

    run = make_run(tmp_path / "run")
    (run.path / "metrics.csv").write_text("iteration,adapt/return_pre\n1,-3.0\n")
    assert main(["report", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert f"no adaptation curves: run 'adaptrl evaluate {run.path}', then " in out
    md = (run.path / "report.md").read_text()
    assert f"Not evaluated yet: run `adaptrl evaluate {run.path}`, then `adaptrl report" in md


def test_the_generalisation_gap_says_what_its_sign_means(tmp_path):
    run = make_run(tmp_path / "run")
    write(run, record("maml", "train", [1.0, 2.0]))
    write(run, record("maml", "test", [1.5, 2.5]))
    md = report_md(run)
    assert "| 1 | 2.00 | 2.50 | -0.50 |" in md
    assert "gap = mean return on training tasks minus on held-out test tasks. Positive:" in md
    assert "Negative: the held-out tasks came out easier for it" in md


# ------------------------------------------------------------------------------ aggregate
SEED_CURVES = {0: [1.0, 2.0], 1: [3.0, 4.0], 2: [5.0, 9.0]}


def seed_runs(tmp_path, curves=SEED_CURVES):
    runs = []
    for seed, mean in curves.items():
        run = make_run(tmp_path / f"seed{seed}", seed=seed)
        write(run, record("maml", "test", mean))
        write(run, record("pretrained", "test", [0.0, float(seed)]))
        if seed == 0:  # a learner missing from the other runs is left out
            write(run, record("random_init", "test", [0.0, 0.0]))
        runs.append(run.path)
    return runs


def test_aggregate_runs_averages_over_seeds_with_an_interval_over_seeds(tmp_path):
    paths = seed_runs(tmp_path)
    record_ = aggregate_runs(paths, "test", tmp_path / "out")
    assert record_["seeds"] == [0, 1, 2] and record_["num_seeds"] == 3
    assert record_["runs"] == [str(p) for p in paths] and record_["x"] == [0, 1]
    assert list(record_["learners"]) == ["maml", "pretrained"]
    maml = record_["learners"]["maml"]
    # x=0: seeds 1, 3, 5 -> mean 3, sd 2; x=1: 2, 4, 9 -> mean 5, sd √13
    assert maml["mean_return"] == pytest.approx([3.0, 5.0])
    assert maml["ci95"] == pytest.approx([1.96 * 2 / math.sqrt(3), 1.96 * math.sqrt(13 / 3)])
    assert maml["per_seed"] == [[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]]
    assert record_["learners"]["pretrained"]["mean_return"] == pytest.approx([0.0, 1.0])
    saved = json.loads((tmp_path / "out" / "aggregate_test.json").read_text())
    assert saved == json.loads(json.dumps(record_))
    assert (tmp_path / "out" / "aggregate_test.png").stat().st_size > 1000
    text = format_aggregate(record_)
    assert "seeds=0, 1, 2" in text
    assert "3.00 ±   2.26" in text and "5.00 ±   4.08" in text


def test_aggregate_of_best_checkpoints_reads_eval_best_and_names_their_iterations(tmp_path):
    paths = seed_runs(tmp_path)  # last-checkpoint evaluations: must not be read
    for path, (mean, iteration) in zip(
        paths, [([1.0, 6.0], 20), ([1.0, 8.0], 30), ([1.0, 7.0], 20)]
    ):
        best = record("maml", "test", mean, iteration=iteration, checkpoint="best")
        write_json(Run.open(path).eval_dir_for("best") / "test.json", best)
    record_ = aggregate_runs(paths, "test", tmp_path / "out", checkpoint="best")
    assert list(record_["learners"]) == ["maml"]  # only maml was evaluated at best
    assert record_["learners"]["maml"]["mean_return"] == pytest.approx([1.0, 7.0])
    assert record_["checkpoint"] == "best" and record_["iterations"] == [20, 30, 20]
    assert (tmp_path / "out" / "aggregate_test_best.json").exists()
    assert not (tmp_path / "out" / "aggregate_test.json").exists()
    assert "seeds=0, 1, 2, best checkpoints (iterations 20, 30, 20)" in format_aggregate(record_)


def test_aggregate_refuses_mismatched_missing_or_single_runs(tmp_path):
    paths = seed_runs(tmp_path, {0: [1.0, 2.0], 1: [3.0, 4.0]})
    with pytest.raises(RunError, match="at least 2 runs"):
        aggregate_runs(paths[:1], "test", tmp_path / "out")
    with pytest.raises(RunError) as err:
        aggregate_runs(paths, "train", tmp_path / "out")
    assert str(err.value) == (
        f"run {paths[0]} has no train evaluation of its last checkpoint; run adaptrl evaluate "
        f"{paths[0]} --split train"
    )
    with pytest.raises(
        RunError, match=r"no test evaluation of its best checkpoint; .* --checkpoint best"
    ):
        aggregate_runs(paths, "test", tmp_path / "out", checkpoint="best")
    other = make_run(tmp_path / "rl2", algorithm="rl2", seed=5)
    write(other, record("rl2", "test", [1.0, 2.0]), main="rl2")
    with pytest.raises(RunError, match="runs differ in algorithm: .* has 'maml', .* has 'rl2'"):
        aggregate_runs([paths[0], other.path], "test", tmp_path / "out")
    same_seed = make_run(tmp_path / "again", seed=1)
    write(same_seed, record("maml", "test", [1.0, 2.0]))
    with pytest.raises(RunError, match="have the same seed 1"):
        aggregate_runs([*paths, same_seed.path], "test", tmp_path / "out")
    assert all("\n" not in str(e) for e in [err.value])
    assert not (tmp_path / "out").exists()


def test_family_metrics_get_a_table_beside_the_returns_and_titles_may_hold_parentheses(tmp_path):
    run = make_run(tmp_path / "run")
    rms = {"rms_error_cm": [40.9, 9.0], "rms_error_cm_ci95": [1.0, 0.2]}
    write(run, record("maml", "test", [-39.1, -3.8], **rms))
    md = report_md(run)
    assert "| gradient steps | rms_error_cm: maml |" in md
    assert "| 1 | 9.00 ± 0.20 |" in md
    html = (run.path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 1


def test_return_against_env_steps_draws_validation_or_training_returns_per_run():
    """The sample-efficiency figure: a run's validation score where it logged one, else its
    training returns, against the env steps training paid; runs drawn side by side."""
    from adaptrl.plots import env_steps_figure

    pearl = [
        {"iteration": 1, "time/env_steps": 1000.0, "adapt/return_prior": -5.0},
        {"iteration": 2, "time/env_steps": 2000.0, "adapt/return_prior": -4.0, "eval/score": -3.0},
        {"iteration": 3, "time/env_steps": 3000.0, "adapt/return_prior": -3.5, "eval/score": -2.0},
    ]
    maml = [
        {"iteration": i, "time/env_steps": 8000.0 * i, "adapt/return_pre": -9.0 + i} for i in (1, 2)
    ]
    fig = env_steps_figure({"pearl": pearl, "maml": maml})
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"pearl: validation", "maml: return_pre"}
    assert list(lines["pearl: validation"].get_xdata()) == [2000.0, 3000.0]
    assert list(lines["maml: return_pre"].get_ydata()) == [-8.0, -7.0]
    assert ax.get_xlabel() == "environment steps of training"
    pyplot().close("all")
    assert env_steps_figure({"old run": [{"iteration": 1, "adapt/return": 1.0}]}) is None


def test_a_run_beside_joins_the_table_and_verdicts_only_where_it_saw_the_same_tasks(tmp_path):
    """``report RUN --beside OTHER``: another learner on the same family, evaluated on the same
    tasks (same split, seed and count), is a row beside the references with a paired verdict;
    on a split evaluated on other tasks it is left out, never paired by mistake."""
    ours = make_run(tmp_path / "tr", "transformer")
    theirs = make_run(tmp_path / "gru", "rl2", iteration=7)  # its own length of training
    per_task = [[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]]  # 3 tasks x 2 episodes
    write(
        ours,
        record("transformer", "test", [1.0, 3.0], seed=5, per_task_return=per_task),
        "transformer",
    )
    write(ours, record("transformer", "ood", [1.0, 2.0], seed=5), "transformer")
    worse = [[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]
    write(
        theirs, record("rl2", "test", [1.0, 2.0], seed=5, iteration=7, per_task_return=worse), "rl2"
    )
    write(theirs, record("rl2", "ood", [1.0, 1.0], seed=6, iteration=7), "rl2")  # other tasks
    write_report(ours, [theirs])
    md = (ours.path / "report.md").read_text()
    assert "**gru (rl2)**: the run" in md and "(iteration 7), beside" in md
    assert "Stale" not in md  # its iteration is its own, not a stale evaluation of this run
    test_part, ood_part = md.split("### test tasks")[1].split("### ood tasks")
    assert "| gradient steps | transformer | gru (rl2) |" in test_part
    assert "| 1 | +1.00 ± 0.00 better |" in test_part  # paired by task: 3 - 2, 4 - 3, 2 - 1
    assert "gru (rl2)" not in ood_part  # seed 6: other tasks, so no row and no verdict
