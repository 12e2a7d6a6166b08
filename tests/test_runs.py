"""Determinism, atomic checkpoints and kill-and-resume equivalence."""

import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from adaptrl.build import build_run_config
from adaptrl.config import apply_overrides, load_preset
from adaptrl.runs import Run, load_checkpoint_file
from adaptrl.trainer import Trainer

OVERRIDES = [
    "algo.meta_batch_size=3",
    "algo.episodes_per_task=3",
    "env.horizon=15",
    "algo.hidden_sizes=[16]",
    "train.checkpoint_every=2",
    "train.eval_every=3",
    "evaluate.num_tasks=3",
    "evaluate.episodes_per_task=2",
]


def _config(iterations=6, seed=0):
    data = apply_overrides(
        load_preset("maml-navigation2d"),
        [*OVERRIDES, f"train.num_iterations={iterations}", f"train.seed={seed}"],
    )
    return build_run_config(data)


def _train(path, iterations=6, seed=0):
    config = _config(iterations, seed)
    trainer = Trainer(Run.create(path, config), config)
    trainer.train(progress=False)
    return trainer.algo.policy.state_dict()


def test_same_seed_same_parameters_different_seed_different(tmp_path):
    a = _train(tmp_path / "a", 3)
    b = _train(tmp_path / "b", 3)
    c = _train(tmp_path / "c", 3, seed=1)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_killed_run_resumes_to_identical_parameters_and_metrics(tmp_path):
    reference = tmp_path / "reference"
    ref_params = _train(reference, 30)

    killed = tmp_path / "killed"
    with open(tmp_path / "config.yaml", "w") as f:
        yaml.safe_dump(_config(30).to_dict(), f)
    args = ["train", str(tmp_path / "config.yaml"), "--out", str(killed), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "adaptrl", *args])
    ckpt = killed / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and load_checkpoint_file(ckpt)["iteration"] >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint_file(ckpt)["iteration"]
    assert 2 <= stopped_at < 30, "the kill must land after a checkpoint and before the end"

    run = Run.open(killed)
    trainer = Trainer(run, run.config(), resume=True)
    assert trainer.iteration == stopped_at
    before = load_checkpoint_file(ckpt)["elapsed_s"]
    assert before > 0 and trainer.elapsed_s == before  # wall time keeps counting on resume
    trainer.train(progress=False)
    resumed = trainer.algo.policy.state_dict()
    for k in ref_params:
        assert torch.equal(ref_params[k], resumed[k]), k
    ref_rows = (reference / "metrics.csv").read_text().splitlines()
    new_rows = (killed / "metrics.csv").read_text().splitlines()

    def strip(rows):  # wall-clock columns differ by nature
        keep = [i for i, h in enumerate(rows[0].split(",")) if not h.startswith(("perf/", "time/"))]
        return [[r.split(",")[i] for i in keep] for r in rows]

    assert strip(ref_rows) == strip(new_rows)
    elapsed = new_rows[0].split(",").index("time/elapsed_s")
    assert float(new_rows[-1].split(",")[elapsed]) > before


@pytest.mark.parametrize(
    "preset, section, key, before",
    [
        ("maml-navigation2d", "env", "test_layout", "random"),
        ("rl2-mdp-n10", "env", "random_start", True),
        ("maml-navigation2d", "train", "validation_split", "test"),
    ],
)
def test_a_key_added_after_a_run_was_made_keeps_the_old_behaviour_for_that_run(
    tmp_path, preset, section, key, before
):
    """A run's config.yaml lists every key that existed when it was made. A run made before
    ``key`` existed is resumed and evaluated as it ran (``before``), not with the new default;
    a run made now records the new default and keeps it."""
    from adaptrl.build import run_config

    def value(config):
        return config.env[key] if section == "env" else getattr(config.train, key)

    config = build_run_config(load_preset(preset))
    assert value(config) != before  # the new default
    new = Run.create(tmp_path / "new", config)
    assert value(run_config(new)) == value(config)
    old = Run.create(tmp_path / "old", config)
    raw = yaml.safe_load(old.config_path.read_text())
    del raw[section][key]  # as written before the key existed
    old.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert value(run_config(old)) == before
