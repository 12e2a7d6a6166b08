"""The benchmark scripts still import and parse their arguments (they are not run by CI, so an
API change would otherwise break them silently)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted(
    p for p in (Path(__file__).parents[1] / "benchmarks").glob("*.py") if not p.name.startswith("_")
)


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_script_imports_and_shows_help(script):
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


TINY_RUNS = {  # each benchmark end to end at a toy size, and what its JSON must then say
    "maml_navigation.py": (
        ["--iterations", "1", "--warmup", "0", "--set", "algo.meta_batch_size=2"]
        + ["--set", "algo.episodes_per_task=2", "--set", "env.horizon=5"]
        + ["--set", "algo.hidden_sizes=[4]"],
        lambda r: (
            r["seconds_per_iteration_median"] > 0
            and r["floor_seconds_median"] > 0
            and r["env_steps_per_iteration"] == 2 * 2 * 2 * 5
        ),  # pre + post, tasks x eps x steps
    ),
    "rl2_time_to_target.py": (
        ["--preset", "rl2-bandit-k5-n10", "--target", "100", "--time-limit", "0.5"]
        + ["--eval-every", "1", "--eval-trials", "8", "--set", "algo.meta_batch_size=8"],
        # 100 is out of reach in 10 pulls: never "reached", but evaluated every iteration
        lambda r: r["reached"] is False and len(r["history"]) == r["iterations"] >= 1,
    ),
    "pearl_speed.py": (  # with the op profile (stderr), which must not disturb the JSON
        ["--steps", "2", "--repeats", "1", "--set", "algo.hidden_size=8", "--profile", "1"]
        + ["--set", "algo.num_train_tasks=4", "--set", "algo.initial_steps=40"],
        lambda r: r["gradient_steps_per_s"][0] > 0 and r["env_steps_per_s"][0] > 0,
    ),
    "xland_speed.py": (
        ["--rows", "32", "--steps", "3", "--horizon", "5", "--repeats", "1"],
        lambda r: (
            r["device"] == "cpu"
            and r["jax_device"].startswith(("cpu", "TFRT_CPU"))
            and all(r["rows"]["32"][k] > 0 for k in ("library", "adapter", "sampler"))
        ),
    ),
    "transformer_acting.py": (
        ["--rows", "3", "--steps", "5", "--model-size", "8", "--heads", "2", "--repeats", "1"],
        lambda r: r["same_outputs"] is True and r["in_place_cache_s"] > 0,
    ),
    "env_steps.py": (
        ["--batch", "16", "--steps", "3", "--repeats", "1"],
        lambda r: (
            [x["family"] for x in r["results"]] == ["drone_wind", "recommender"]
            and all(x["env_steps_per_s"] > 0 for x in r["results"])
        ),
    ),
}


@pytest.mark.parametrize("script", sorted(TINY_RUNS))
def test_benchmark_runs_at_a_toy_size_and_prints_json(script):
    if script.startswith("xland"):
        pytest.importorskip("xminigrid")
    args, check = TINY_RUNS[script]
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[0].parent / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    record = json.loads(out.stdout[out.stdout.index("{") :])
    assert check(record), record
