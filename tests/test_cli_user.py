"""What a user meets off the happy path: resume options, edited configs, devices, plug-in
families from the CLI, kept checkpoints, complete run records. Every error is one line, exit
code 2, and leaves the run as it was."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from test_cli import TINY as BASE  # the tiny MAML run's --set options, ending in --iterations 3
from test_cli import _error

from adaptrl.cli import main
from adaptrl.runs import load_checkpoint_file

TINY = [*BASE[:-3], "--set", "train.eval_every=1", "--set", "train.keep_every=2", *BASE[-3:]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("user") / "run"
    assert main(["train", "maml-navigation2d", "--out", str(run), *TINY]) == 0
    return run


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def test_a_run_records_its_complete_config_and_versions(trained):
    config = yaml.safe_load((trained / "config.yaml").read_text())
    # Defaults the preset does not name are written out (a later default change cannot
    # change this run), and overrides are kept.
    assert config["algo"]["cg_iters"] == 10 and config["algo"]["hidden_sizes"] == [8]
    assert config["env"]["goal_low"] == -0.5 and config["env"]["horizon"] == 10
    sessions = json.loads((trained / "sessions.json").read_text())
    assert len(sessions) == 1 and sessions[0]["start_iteration"] == 0
    assert sessions[0]["versions"]["torch"] == torch.__version__
    assert sessions[0]["command"] == [
        "adaptrl",
        "train",
        "maml-navigation2d",
        "--out",
        str(trained),
        *TINY,
    ]


def test_best_and_periodic_checkpoints_are_kept_and_evaluable(run, capsys):
    best = load_checkpoint_file(run / "checkpoints" / "best.pt")
    last = load_checkpoint_file(run / "checkpoints" / "last.pt")
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    header = header.split(",")
    scores = [float(r.split(",")[header.index("eval/score")]) for r in rows]
    assert best["iteration"] == 1 + scores.index(max(scores))
    # Validation draws training tasks by default: the best iteration never saw a test task.
    assert "eval/train_return_0" in header and not any("test_return" in k for k in header)
    assert last["best"]["score"] == pytest.approx(max(scores), rel=1e-5)
    assert load_checkpoint_file(run / "checkpoints" / "iter_000002.pt")["iteration"] == 2
    argv = ["evaluate", str(run), "--split", "test", "--no-references", "--quiet"]
    assert main([*argv, "--checkpoint", "best"]) == 0
    record = json.loads((run / "eval-best" / "test.json").read_text())
    assert record["checkpoint"] == "best" and record["iteration"] == best["iteration"]
    assert record["selected_on"] == "train"
    assert main(["report", str(run)]) == 0  # the report shows best.pt's evaluation too
    section = (run / "report.md").read_text().split("## At the best iteration")[1]
    assert f"`checkpoints/best.pt`, iteration {best['iteration']}:" in section
    assert "on a fixed draw of train tasks" in section and "### test tasks" in section
    assert main([*argv, "--checkpoint", "2"]) == 0
    assert json.loads((run / "eval-iter000002" / "test.json").read_text())["iteration"] == 2
    assert "kept no checkpoint of iteration 1 (kept: 2)" in _error(
        capsys, [*argv, "--checkpoint", "1"]
    )


def test_resume_keeps_the_seed_but_may_change_device_and_extend(run, capsys, monkeypatch):
    before = (run / "config.yaml").read_text()
    err = _error(capsys, ["train", "--resume", str(run), "--seed", "5"])
    assert "trained with seed 0" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in _error(
        capsys, ["train", "--resume", str(run), "--device", "cuda"]
    )
    assert (run / "config.yaml").read_text() == before  # a refused resume leaves the run
    argv = ["train", "--resume", str(run), "--iterations", "4", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["num_iterations"] == 4
    assert load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"] == 4
    assert len(json.loads((run / "sessions.json").read_text())) == 2
    assert main(["report", str(run)]) == 0
    assert "iterations trained: 4 / 4" in (run / "report.md").read_text()
    assert "already at iteration 4" in _error(
        capsys, ["train", "--resume", str(run), "--iterations", "2"]
    )


def test_resuming_a_run_without_a_checkpoint_never_overwrites_its_metrics(run, capsys):
    """A run killed before its first checkpoint once restarted from iteration 0 and rewrote
    metrics.csv (issue 26: 25 rows lost); it is refused in one line and left as it was."""
    from adaptrl.build import run_config
    from adaptrl.errors import RunError
    from adaptrl.runs import Run
    from adaptrl.trainer import Trainer

    (run / "checkpoints" / "last.pt").unlink()
    metrics, config = (run / "metrics.csv").read_text(), (run / "config.yaml").read_text()
    for extra in ([], ["--iterations", "5"]):
        err = _error(capsys, ["train", "--resume", str(run), "--quiet", *extra])
        assert "no checkpoint to resume from" in err and "3 logged iteration(s)" in err
    assert (run / "metrics.csv").read_text() == metrics
    assert (run / "config.yaml").read_text() == config
    with pytest.raises(RunError, match="no checkpoint to resume from"):  # the Python API too
        Trainer(Run.open(run), run_config(Run.open(run)), resume=True)
    assert (run / "metrics.csv").read_text() == metrics


def test_a_corrupted_last_checkpoint_points_to_the_kept_ones_first(run, capsys):
    """'delete it to restart the run from scratch' was the only advice, with best.pt and
    iter_*.pt beside it (issue 26)."""
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    err = _error(capsys, ["evaluate", str(run), "--quiet"])
    assert f"{run / 'checkpoints'} also holds best.pt, iter_000002.pt: evaluate one with " in err
    assert "--checkpoint best or N (iter_N.pt), or copy one over last.pt to resume" in err
    assert "restart the run from scratch" not in err
    assert main(["evaluate", str(run), "--checkpoint", "2", "--quiet"]) == 0  # the advice works


def test_a_checkpoint_that_does_not_fit_an_edited_config_is_one_line(run, capsys):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["algo"]["hidden_sizes"] = [16]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    for argv in (["evaluate", str(run), "--quiet"], ["train", "--resume", str(run)]):
        assert "does not fit the run's config.yaml" in _error(capsys, argv)


def test_evaluate_on_another_device_than_training(run, capsys, monkeypatch):
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["device"] = "cuda"  # trained on a GPU machine
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["evaluate", str(run), "--split", "test", "--no-references", "--quiet"]
    assert "use cpu" in _error(capsys, argv)
    assert main([*argv, "--device", "cpu"]) == 0


@pytest.mark.parametrize(
    "device,message",
    [
        ("mps", "MPS is not available"),
        ("cuda:7", "does not exist: this machine has 1 CUDA device"),
        ("tpu", "is not"),
    ],
)
def test_devices_that_are_not_here(tmp_path, capsys, monkeypatch, device, message):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "d"
    err = _error(capsys, ["train", "maml-navigation2d", "--out", str(out), "--device", device])
    assert message in err and not out.exists()


def test_invalid_yaml_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithm: maml\nenv:\n  name: [navigation2d\n  horizon: 5\n")
    err = _error(capsys, ["train", str(bad), "--out", str(tmp_path / "x")])
    assert "is not valid YAML" in err and "line 4" in err


def test_out_of_memory_in_evaluation_is_one_line(run, capsys, monkeypatch):
    import adaptrl.evaluation

    def fail(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate"
        )

    monkeypatch.setattr(adaptrl.evaluation, "meta_test", fail)
    argv = ["evaluate", str(run), "--no-references", "--quiet", "--num-tasks", "1000000"]
    assert "ran out of memory; use fewer, e.g. --num-tasks 100000" in _error(capsys, argv)


def test_an_evaluation_too_big_for_the_machine_is_refused_before_any_work(run, capsys):
    import shutil as sh

    sh.rmtree(run / "baselines", ignore_errors=True)
    argv = ["evaluate", str(run), "--quiet", "--num-tasks", "100000000"]
    message = _error(capsys, argv)
    assert "evaluating 100000000 tasks per split needs about" in message
    suggested = int(message.split("--num-tasks ")[1].split()[0])
    assert 1000 <= suggested < 100000000
    assert not (run / "baselines").exists()  # no reference was trained first
    # The suggestion fits: the same estimate, with the suggested number, is under the budget.
    from adaptrl.build import build, run_config
    from adaptrl.evaluation import MEMORY_SHARE, available_bytes, evaluation_bytes
    from adaptrl.runs import Run

    config = run_config(Run.open(run))
    with build(config) as built:
        need = evaluation_bytes(built.learner, config, built.family, suggested)
    assert need <= MEMORY_SHARE * available_bytes()


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("adaptrl ")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "maml-navigation2d" in out and "rl2-bandit-k5-n100" in out  # presets listed
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "baselines" in out and "aggregate" in out


def test_evaluate_says_when_it_trains_a_reference(run, capsys):
    shutil.rmtree(run / "baselines", ignore_errors=True)
    assert main(["evaluate", str(run), "--split", "test", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "training the 'pretrained' reference once (2 iterations" in captured.out
    # Up front, on stderr (kept by --quiet), every reference still to train and its budget.
    first = captured.err.splitlines()[0]
    assert first.startswith("evaluate first trains ") and "up to 2 iterations" in first
    assert "pretrained" in first and "--no-references" in first
    assert main(["evaluate", str(run), "--split", "test", "--quiet"]) == 0
    again = capsys.readouterr()  # trained once, then reused: nothing to announce
    assert "evaluate first trains" not in again.err and "training the" not in again.out


USER_FAMILY = '''
"""A user's own task family: a gymnasium env with a goal, registered in a few lines."""
import gymnasium as gym
import numpy as np
import torch

from adaptrl.envs import TaskDistribution
from adaptrl.envs.gym_adapter import gym_family


class PointLine(gym.Env):
    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self):
        self.goal = 0.0

    def set_task(self, task):
        self.goal = float(task["goal"][0])

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(np.clip(action[0], -1, 1)), -10, 10))
        return np.array([self.x], np.float32), -abs(self.x - self.goal), False, False, {}


class Goals(TaskDistribution):
    splits = ("train", "test")

    def sample(self, n, split, generator):
        u = torch.rand(n, 1, generator=generator)
        return {"goal": u * 0.5 + (0.0 if split == "train" else 0.5)}

    def split_of(self, tasks):
        return ["train" if g < 0.5 else "test" for g in tasks["goal"][:, 0].tolist()]


gym_family("point_line", PointLine, Goals(), horizon=8)
'''


def test_a_users_family_works_from_the_cli_with_import(tmp_path, capsys):
    module = tmp_path / "my_family.py"
    module.write_text(textwrap.dedent(USER_FAMILY))
    assert main(["--import", str(module), "list"]) == 0
    assert "point_line" in capsys.readouterr().out
    run = tmp_path / "run"
    argv = ["--import", str(module), "train", "maml-navigation2d", "--out", str(run)]
    argv += ["--set", "env={name: point_line}", "--set", "sampler.workers=2", *TINY]
    assert main(argv) == 0  # worker processes import the module by name too
    assert main(["--import", str(module), "evaluate", str(run), "--quiet"]) == 0
    assert main(["--import", str(module), "report", str(run)]) == 0
    assert json.loads((run / "eval" / "test.json").read_text())["env"] == "point_line"
    assert "point_line" in (run / "report.md").read_text()
    forgot = subprocess.run(  # a fresh process that was not told to --import the family
        [sys.executable, "-m", "adaptrl", "evaluate", str(run), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert forgot.returncode == 2 and len(forgot.stderr.strip().splitlines()) == 1
    assert "unknown env 'point_line'" in forgot.stderr and "--import" in forgot.stderr
    capsys.readouterr()  # what evaluate said (the references it trained)
    assert "no module named 'nope_family'" in _error(capsys, ["--import", "nope_family", "list"])


def test_a_users_module_reaches_ray_actors_from_another_directory(tmp_path):
    """Ray actors failed to unpickle the family (ModuleNotFoundError) unless started from the
    module's own folder, and left R/config.yaml behind (issue 26)."""
    pytest.importorskip("ray")
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "gravity_line.py").write_text(textwrap.dedent(USER_FAMILY))
    (tmp_path / "elsewhere").mkdir()
    argv = ["--import", "../own/gravity_line.py", "train", "maml-navigation2d", "--out", "R"]
    argv += ["--sampler", "ray", "--set", "env={name: point_line}", "--set", "sampler.workers=2"]
    done = subprocess.run(
        [sys.executable, "-m", "adaptrl", *argv, *BASE[:-3], "--iterations", "1", "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path / "elsewhere",
    )
    assert done.returncode == 0, done.stderr
    run = tmp_path / "elsewhere" / "R"
    assert load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["name"] == "point_line"


def test_a_run_that_fails_in_its_first_iteration_leaves_nothing_to_trap_a_rerun(tmp_path, capsys):
    """A failure before the first iteration was saved left config.yaml and checkpoints/, so
    the same command was then refused: 'already holds a run' (issue 26)."""
    module = tmp_path / "broken_family.py"
    broken = textwrap.dedent(USER_FAMILY).replace("point_line", "broken_line")
    broken += "\n\ndef _step(self, action):\n    raise RuntimeError('the env broke')\n"
    module.write_text(broken + "\n\nPointLine.step = _step\n")
    out, mine = tmp_path / "new", tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    for run in (out, out, mine):  # the second try fails the same way, not 'already holds'
        argv = ["--import", str(module), "train", "maml-navigation2d", "--out", str(run)]
        argv += ["--set", "env={name: broken_line}", "--set", "sampler.workers=1", *BASE]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "RuntimeError: the env broke" in err and "already holds" not in err
    assert not out.exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_rl2_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    tiny = ["--set", "algo.meta_batch_size=16", "--set", "algo.hidden_size=16", "--quiet"]
    tiny += ["--set", "train.checkpoint_every=1", "--set", "env.num_pulls=20"]
    tiny += ["--set", "algo.entropy_decay_iterations=6"]  # the schedule resumes too
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert (
        main(["train", "rl2-bandit-k5-n10", "--out", str(whole), "--iterations", "8", *tiny]) == 0
    )
    assert (
        main(["train", "rl2-bandit-k5-n10", "--out", str(split), "--iterations", "3", *tiny]) == 0
    )
    assert main(["train", "--resume", str(split), "--iterations", "8", "--quiet"]) == 0
    a = load_checkpoint_file(whole / "checkpoints" / "last.pt")["algorithm"]
    b = load_checkpoint_file(split / "checkpoints" / "last.pt")["algorithm"]
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    assert float(a["value_scale"]) == float(b["value_scale"]) > 0

    def losses(run):
        rows = (run / "metrics.csv").read_text().splitlines()
        keep = [i for i, h in enumerate(rows[0].split(",")) if h.startswith(("loss/", "adapt/"))]
        return [[r.split(",")[i] for i in keep] for r in rows]

    assert losses(whole) == losses(split)


def test_ctrl_c_or_sigterm_saves_the_last_completed_iteration_and_names_the_run(
    tmp_path, capsys, monkeypatch
):
    """A stop mid-iteration once kept only the last periodic checkpoint and said 'resume with
    adaptrl train --resume RUN' (issue 26); now the iteration in flight is abandoned, the last
    completed one is saved atomically, and resuming from it equals an uninterrupted run."""
    from adaptrl.algos.maml import MAML

    tiny = [*BASE[:-3], "--iterations", "5", "--quiet", "--set", "train.checkpoint_every=100"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", "maml-navigation2d", "--out", str(whole), *tiny]) == 0
    original, calls = MAML.train_iteration, []

    def stopped_during_the_fourth(self, ctx):
        calls.append(ctx.iteration)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop (main() handles SIGTERM)
        return original(self, ctx)

    monkeypatch.setattr(MAML, "train_iteration", stopped_during_the_fourth)
    capsys.readouterr()
    assert main(["train", "maml-navigation2d", "--out", str(cut), *tiny]) == 130
    last = cut / "checkpoints" / "last.pt"
    assert capsys.readouterr().err.strip() == (
        f"adaptrl: interrupted; {last} holds iteration 3; resume with "
        f"'adaptrl train --resume {cut}'"
    )
    assert load_checkpoint_file(last)["iteration"] == 3
    assert len((cut / "metrics.csv").read_text().splitlines()) == 1 + 3
    monkeypatch.undo()
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a = load_checkpoint_file(whole / "checkpoints" / "last.pt")["algorithm"]["policy"]
    b = load_checkpoint_file(last)["algorithm"]["policy"]
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def losses(run):
        rows = (run / "metrics.csv").read_text().splitlines()
        keep = [i for i, h in enumerate(rows[0].split(",")) if h.startswith(("loss/", "adapt/"))]
        return [[r.split(",")[i] for i in keep] for r in rows]

    assert len(losses(whole)) == 6 and losses(whole) == losses(cut)


def test_a_failing_iteration_keeps_the_completed_ones(tmp_path, monkeypatch):
    """An error in iteration 4 (a user's env, say) keeps iterations 1-3: with no checkpoint yet
    the run could be neither resumed (metrics would be lost) nor re-created."""
    from adaptrl.algos.maml import MAML

    original = MAML.train_iteration

    def fails_in_the_fourth(self, ctx):
        if ctx.iteration == 3:
            raise RuntimeError("the env broke")
        return original(self, ctx)

    monkeypatch.setattr(MAML, "train_iteration", fails_in_the_fourth)
    run = tmp_path / "run"
    argv = ["train", "maml-navigation2d", "--out", str(run), *BASE[:-3], "--iterations", "5"]
    with pytest.raises(RuntimeError, match="the env broke"):  # a bug still shows its traceback
        main([*argv, "--quiet", "--set", "train.checkpoint_every=100"])
    assert load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"] == 3
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"] == 5


def test_evaluating_without_references_never_leaves_a_stale_classical_table(tmp_path, capsys):
    """The classical table on disk holds only the baselines; the learner's row is added from its
    latest evaluation when read, and only when that evaluation used the table's tasks."""
    from adaptrl.results import load_classical
    from adaptrl.runs import Run

    run = tmp_path / "run"
    tiny = ["--set", "algo.meta_batch_size=16", "--set", "algo.hidden_size=16", "--quiet"]
    assert main(["train", "rl2-bandit-k5-n10", "--out", str(run), "--iterations", "1", *tiny]) == 0
    argv = ["evaluate", str(run), "--split", "test", "--quiet"]
    assert main([*argv, "--num-tasks", "30"]) == 0
    stored = json.loads((run / "eval" / "classical" / "test.json").read_text())["strategies"]
    assert "rl2" not in stored and "ucb1" in stored
    first = load_classical(Run.open(run))["test"]["strategies"]
    assert main(["train", "--resume", str(run), "--iterations", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main([*argv, "--num-tasks", "30", "--no-references"]) == 0
    learner = json.loads((run / "eval" / "test.json").read_text())
    again = load_classical(Run.open(run))["test"]
    assert again["strategies"]["rl2"]["mean"] == learner["total_return"] != first["rl2"]["mean"]
    assert again["strategies"]["ucb1"] == first["ucb1"]  # baselines on the same tasks: kept
    assert f"{learner['total_return']:8.2f}" in capsys.readouterr().out
    assert main([*argv, "--num-tasks", "20", "--no-references"]) == 0
    other = load_classical(Run.open(run))["test"]
    assert "rl2" not in other["strategies"] and other["learner_on_other_tasks"]
    assert "evaluated on other tasks, so it has no row" in capsys.readouterr().out


def test_a_classical_table_written_by_an_older_version_gets_the_current_learner_row(tmp_path):
    """Tables written before the learner row moved out of them still hold a row: it is replaced
    by the learner's latest evaluation, never shown stale."""
    from adaptrl.results import with_learner_row

    table = {"num_tasks": 30, "unit": "trial", "strategies": {"ucb1": {"mean": 6.0, "ci95": 0.1}}}
    table["strategies"]["rl2 (mode)"] = {"mean": 1.0, "ci95": 0.1}  # stale
    learner = {"algorithm": "rl2", "num_tasks": 30, "actions": "sample"}
    learner |= {"total_return": 6.5, "total_return_ci95": 0.2}
    rows = with_learner_row(table, learner)["strategies"]
    assert rows == {"ucb1": {"mean": 6.0, "ci95": 0.1}, "rl2": {"mean": 6.5, "ci95": 0.2}}


def test_a_refused_run_in_an_existing_folder_takes_back_only_what_it_wrote(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    argv = ["train", "maml-navigation2d", "--out", str(out), "--device", "cuda"]
    assert "CUDA is not available" in _error(capsys, argv)  # refused when the run is built
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    argv = ["train", "maml-navigation2d", "--out", str(tmp_path / "new"), "--device", "cuda"]
    _error(capsys, argv)
    assert not (tmp_path / "new").exists()


def test_an_installed_packages_entry_point_registers_its_family(tmp_path, capsys, monkeypatch):
    from importlib import metadata

    (tmp_path / "pkg_families.py").write_text(
        textwrap.dedent(USER_FAMILY).replace("point_line", "ep_line")
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = metadata.EntryPoint("mine", "pkg_families", "adaptrl.families")
    monkeypatch.setattr(
        metadata, "entry_points", lambda group=None: [entry] if group == "adaptrl.families" else []
    )
    assert main(["list"]) == 0
    assert "ep_line" in capsys.readouterr().out
    broken = metadata.EntryPoint("broken", "no_such_pkg_xyz", "adaptrl.families")
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [broken])
    assert "entry point 'broken' (no_such_pkg_xyz) failed to load" in _error(capsys, ["list"])


def test_aggregate_over_seeds_from_the_cli(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        assert (
            main(["train", "maml-navigation2d", "--out", str(run), "--seed", str(seed), *BASE]) == 0
        )
        argv = ["evaluate", str(run), "--split", "test", "--no-references", "--quiet"]
        assert main(argv) == 0
        assert list((run / "tb" / "evaluate").glob("events.*"))  # curves + hparams in TensorBoard
        runs.append(run)
    capsys.readouterr()
    assert main(["aggregate", *map(str, runs), "--out", str(tmp_path / "agg")]) == 0
    assert "seeds=0, 1" in capsys.readouterr().out
    record = json.loads((tmp_path / "agg" / "aggregate_test.json").read_text())
    means = [json.loads((r / "eval" / "test.json").read_text())["mean_return"] for r in runs]
    assert record["learners"]["maml"]["mean_return"] == pytest.approx(
        [(a + b) / 2 for a, b in zip(*means)]
    )
    assert "needs at least 2 runs" in _error(capsys, ["aggregate", str(runs[0]), "--out", "x"])
    best = ["aggregate", *map(str, runs), "--checkpoint", "best", "--out", str(tmp_path / "agg")]
    assert "no test evaluation of its best checkpoint" in _error(capsys, best)


@pytest.mark.parametrize(
    "preset,override,message",
    [
        ("maml-drone-wind", "env.mass=-1", "env.mass must be > 0"),
        ("maml-drone-wind", "env.thrust_max=0", "env.thrust_max must be > 0"),
        ("rl2-drone-wind", "env.drag=[0.1]", "env.drag must be two coefficients"),
        ("rl2-recommender", "env.slate_size=30", "slate_size=30 exceeds the catalogue"),
        ("maml-recommender", "env.cold_fraction=1.5", "env.cold_fraction must lie in [0, 1)"),
    ],
)
def test_impossible_application_settings_are_one_line(tmp_path, capsys, preset, override, message):
    out = tmp_path / "x"
    assert message in _error(capsys, ["train", preset, "--out", str(out), "--set", override])
    assert not out.exists()


def test_a_run_that_used_its_time_budget_resumes_only_with_more(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "maml-navigation2d", "--out", str(run), *TINY, "--max-seconds", "0.001"]
    assert main(argv) == 0
    assert int(load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"]) == 1
    message = _error(capsys, ["train", "--resume", str(run), "--quiet"])
    assert "used its training budget" in message and "--max-seconds" in message
    assert "give more" in _error(capsys, ["train", "--resume", str(run), "--max-seconds", "1e-4"])
    assert main(["train", "--resume", str(run), "--max-seconds", "0", "--quiet"]) == 0
    assert int(load_checkpoint_file(run / "checkpoints" / "last.pt")["iteration"]) == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_seconds"] == 0
