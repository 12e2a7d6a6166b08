"""CLI commands and bad inputs: one-line error, exit code 2, nothing written is damaged."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from adaptrl.build import build_run_config
from adaptrl.cli import main
from adaptrl.config import apply_overrides, list_presets, load_preset

TINY = [
    "--set",
    "algo.meta_batch_size=2",
    "--set",
    "algo.episodes_per_task=2",
    "--set",
    "env.horizon=10",
    "--set",
    "algo.hidden_sizes=[8]",
    "--set",
    "evaluate.num_tasks=3",
    "--set",
    "evaluate.episodes_per_task=2",
    "--set",
    "evaluate.pretrained_iterations=2",
    "--set",
    "train.eval_every=2",
    "--iterations",
    "3",
    "--quiet",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "maml-navigation2d", "--out", str(run), *TINY]) == 0
    return run


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("adaptrl: error:")
    return err


def test_train_writes_a_complete_run(trained):
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.pt"):
        assert (trained / name).exists(), name
    assert list((trained / "tb").glob("events.*"))
    rows = (trained / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("iteration,")
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["algo"]["meta_batch_size"] == 2 and config["train"]["num_iterations"] == 3


def test_evaluate_and_report(trained, capsys):
    assert main(["evaluate", str(trained), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "split=test" in out and "pretrained" in out and "random_init" in out
    record = json.loads((trained / "eval" / "test.json").read_text())
    for key in (
        "algorithm",
        "env",
        "split",
        "num_tasks",
        "x",
        "x_label",
        "mean_return",
        "ci95",
        "per_task_return",
    ):
        assert key in record
    assert record["x"] == [0, 1, 2, 3] and record["num_tasks"] == 3
    assert len(record["per_task_return"]) == 3 and len(record["per_task_return"][0]) == 4
    for ref in ("pretrained", "random_init"):
        assert json.loads((trained / "eval" / f"train.{ref}.json").read_text())["split"] == "train"
    assert (
        main(
            [
                "evaluate",
                str(trained),
                "--split",
                "test",
                "--num-tasks",
                "4",
                "--no-references",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((trained / "eval" / "test.json").read_text())["num_tasks"] == 4
    assert main(["report", str(trained)]) == 0
    md = (trained / "report.md").read_text()
    assert "train tasks" in md and "test tasks" in md and "Generalisation gap" in md
    html = (trained / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # training, adaptation, env steps
    assert "![Return against environment steps](env_steps.png)" in md
    assert main(["report", str(trained), "--beside", str(trained)]) == 0  # another run beside
    assert "does not exist" in _error(capsys, ["report", str(trained), "--beside", "nowhere"])
    assert (trained / "adaptation.png").stat().st_size > 1000
    assert "iterations trained: 3 / 3 (checkpoint)\n" in md
    record = json.loads((trained / "eval" / "test.json").read_text())
    assert record["inner_lrs"] == [0.1, 0.05] and "actions" not in record  # MAML's own settings
    # MAML adapts from sampled actions: asking for the mode is a one-line error, nothing runs.
    err = _error(capsys, ["evaluate", str(trained), "--actions", "mode"])
    assert "unknown config key 'evaluate.actions' for maml" in err
    assert "it is a setting of rl2's and transformer's evaluation" in err


def test_report_names_the_checkpoint_a_killed_run_was_evaluated_at(trained, tmp_path):
    """A run killed between checkpoints has metrics past its checkpoint; the report says which
    iteration the evaluations (made from the checkpoint) belong to."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    rows = (run / "metrics.csv").read_text().splitlines()
    extra = rows[-1].split(",")
    extra[0] = "7"
    (run / "metrics.csv").write_text("\n".join([*rows, ",".join(extra)]) + "\n")
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "iterations trained: 3 / 3 (checkpoint); metrics were logged up to iteration 7" in md


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "maml-navigation2d" in out and "navigation2d" in out and "maml" in out
    rl2 = next(line for line in out.splitlines() if line.split()[0] == "rl2")
    assert "GRU or LSTM" in rl2 and "a GRU" not in rl2  # the cell is algo.cell (issue 26)


@pytest.mark.parametrize("preset", list_presets())
def test_config_shows_every_key_with_its_meaning_and_loads_back(capsys, preset):
    """Nothing listed the keys --set accepts, their defaults and meanings (issue 26)."""
    override = "train.seed=7"
    assert main(["config", preset, "--set", override]) == 0
    out = capsys.readouterr().out
    expected = build_run_config(apply_overrides(load_preset(preset), [override]))
    assert build_run_config(yaml.safe_load(out)) == expected  # the same config, as a preset
    lines = out.splitlines()
    for section in ("env", "algo", "train", "evaluate", "sampler"):
        start = lines.index(f"{section}:")
        keys = [i for i, line in enumerate(lines[start:], start) if re.match(r"  \w+:", line)]
        keys = keys[: len(expected.to_dict()[section])]
        assert all(lines[i - 1].startswith("  # ") for i in keys), (section, lines[start:])
    assert "  # Seeds the single torch.Generator that drives tasks, environments and action " in out
    assert "(default: 0)\n  seed: 7\n" in out


def test_a_reader_that_stops_early_gets_no_traceback():
    """``adaptrl config PRESET | head`` once ended in a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptrl", "config", "maml-navigation2d"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and err == ""


def test_config_of_a_run_and_bad_inputs(trained, capsys):
    assert main(["config", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "  # Meta-iterations (outer updates). (default: 500)\n  num_iterations: 3\n" in out
    assert "  # Step size of the inner policy-gradient step.\n  inner_lr: 0.1\n" in out
    assert "unknown preset 'nope'" in _error(capsys, ["config", "nope"])
    assert "did you mean 'algo.inner_lr'" in _error(
        capsys, ["config", "maml-navigation2d", "--set", "algo.inner_lrr=1"]
    )
    assert "a run's config is fixed" in _error(
        capsys, ["config", str(trained), "--set", "algo.inner_lr=1"]
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("algo.inner_lrr=0.1", "did you mean 'algo.inner_lr'"),
        ("algo.inner_lr=-0.1", "algo.inner_lr must be > 0"),
        ("algo.meta_batch_size=0", "algo.meta_batch_size must be > 0"),
        ("train.seed=abc", "train.seed must be int"),
        ("algo.inner_lr=fast", "algo.inner_lr must be float"),
        ("trian.seed=1", "unknown config section 'trian'"),
        ("env.horizon=0", "env.horizon must be > 0"),
        ("evaluate.actions=mode", "'evaluate.actions' for maml; it is a setting of rl2's"),
        ("sampler.backend=threads", "unknown sampler 'threads'"),
        ("sampler.workers=0", "sampler.workers must be > 0"),
        ("sampler.workers=-2", "sampler.workers must be > 0"),
        ("train.validation_split=val", "'val' is not a split of env 'navigation2d'"),
        # a number for a list once became [100] silently (issue 26): one layer, not two
        ("algo.hidden_sizes=100", "algo.hidden_sizes must be a list, e.g. [100], got 100"),
        ("evaluate.inner_lrs=0.1", "evaluate.inner_lrs must be a list, e.g. [0.1], got 0.1"),
    ],
)
def test_bad_config_values_fail_before_anything_is_written(tmp_path, capsys, override, message):
    out = tmp_path / "x"
    err = _error(capsys, ["train", "maml-navigation2d", "--out", str(out), "--set", override])
    assert message in err
    assert not out.exists()


def test_bad_inputs_fail_with_one_line_and_exit_2(tmp_path, capsys, trained):
    assert "unknown preset 'maml-navigation'" in _error(capsys, ["train", "maml-navigation"])
    assert "does not exist" in _error(capsys, ["evaluate", str(tmp_path / "missing")])
    assert "not an adaptrl run" in _error(capsys, ["report", str(tmp_path)])
    assert "--num-tasks must be > 0" in _error(
        capsys, ["evaluate", str(trained), "--num-tasks", "0"]
    )
    assert "does not exist" in _error(capsys, ["train", str(tmp_path / "nope.yaml")])
    assert "unknown split 'nope'" in _error(capsys, ["evaluate", str(trained), "--split", "nope"])
    assert "unknown sampler 'gpu'" in _error(
        capsys, ["train", "maml-navigation2d", "--out", str(tmp_path / "s"), "--sampler", "gpu"]
    )
    assert not (tmp_path / "s").exists()
    for override, message in (  # a learner's own evaluate keys, checked by the learner
        ("evaluate.batch_steps=9", "'evaluate.batch_steps' for rl2; it is a setting of maml's"),
        ("evaluate.actions=greedy", "evaluate.actions must be 'sample' or 'mode', got 'greedy'"),
    ):
        argv = ["train", "rl2-bandit-k5-n10", "--out", str(tmp_path / "r"), "--set", override]
        assert message in _error(capsys, argv)
        assert not (tmp_path / "r").exists()
    # Training into an existing run refuses and leaves it intact.
    before = (trained / "config.yaml").read_text()
    assert "already holds a run" in _error(
        capsys, ["train", "maml-navigation2d", "--out", str(trained)]
    )
    assert (trained / "config.yaml").read_text() == before


def test_cuda_requested_without_cuda(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _error(
        capsys, ["train", "maml-navigation2d", "--out", str(tmp_path / "c"), "--device", "cuda"]
    )
    assert "CUDA is not available" in err
    assert not (tmp_path / "c").exists()  # a refused run leaves no folder to trap a re-run


def test_an_unreachable_ray_cluster_is_refused_without_a_run_folder(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "r"
    err = _error(
        capsys,
        ["train", "maml-navigation2d", "--out", str(out), "--sampler", "ray"]
        + ["--ray-address", "127.0.0.1:1"],
    )
    assert "cannot connect to Ray at '127.0.0.1:1'" in err
    assert not out.exists()


def test_corrupted_and_missing_checkpoint(tmp_path, capsys, trained):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    err = _error(capsys, ["evaluate", str(run), "--quiet"])
    assert "corrupted" in err and "last.pt" in err
    assert ckpt.stat().st_size == 100  # the evidence is left as it was
    err = _error(capsys, ["train", "--resume", str(run), "--quiet"])
    assert "corrupted" in err
    ckpt.unlink()
    assert "has no checkpoint" in _error(capsys, ["evaluate", str(run)])


def test_evaluation_records_the_schedule_and_references_tune_theirs(tmp_path):
    """The authors'-code preset adapts at 0.5 then 0.25; the references that adapt get that
    schedule scaled for their best return on training tasks (a reference diverging at 0.5 would
    flatter MAML, issue 22), and say so; every record says which schedule it used and how many
    episodes per step."""
    from adaptrl.algos.maml import REFERENCE_LR_SCALES

    run = tmp_path / "authors"
    assert main(["train", "maml-navigation2d-authors", "--out", str(run), *TINY]) == 0
    assert main(["evaluate", str(run), "--split", "test", "--quiet"]) == 0
    scaled = [[round(lr * k, 8) for lr in (0.5, 0.25)] for k in REFERENCE_LR_SCALES]
    for name in ("test.json", "test.pretrained.json", "test.random_init.json"):
        record = json.loads((run / "eval" / name).read_text())
        if name == "test.json":
            assert record["inner_lrs"] == [0.5, 0.25] and "inner_lrs_tuned" not in record
        else:
            assert record["inner_lrs"] in scaled and "training tasks" in record["inner_lrs_tuned"]
        assert record["episodes_per_step"] == 2, name
        assert record["batch_steps"] == 4000, name  # rllab's step-counted batches, recorded
    never_adapts = json.loads((run / "eval" / "test.domain_randomised.json").read_text())
    assert "inner_lrs" not in never_adapts and never_adapts["adapts"] is False
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["algo"]["inner_lr"] == 0.5 and config["evaluate"]["tune_reference_lrs"] is True
    # Evaluation settings change for one evaluation; the run's config.yaml keeps its own.
    sets = ["--set", "evaluate.batch_steps=0", "--set", "evaluate.inner_lrs=[0.3, 0.1]"]
    argv = ["evaluate", str(run), "--split", "test", "--no-references", "--quiet", *sets]
    assert main(argv) == 0
    record = json.loads((run / "eval" / "test.json").read_text())
    assert record["inner_lrs"] == [0.3, 0.1] and "batch_steps" not in record
    assert yaml.safe_load((run / "config.yaml").read_text()) == config


def test_evaluate_set_accepts_only_valid_evaluate_keys(trained, capsys):
    def refused(override):
        return _error(capsys, ["evaluate", str(trained), "--quiet", "--set", override])

    assert "only evaluate.* keys can change here" in refused("algo.inner_lr=1.0")
    assert "did you mean 'evaluate.num_tasks'" in refused("evaluate.num_taks=3")
    assert "evaluate.batch_steps must be >= 0" in refused("evaluate.batch_steps=-1")
    assert "trained once" in refused("evaluate.pretrained_iterations=5")  # a shared reference
