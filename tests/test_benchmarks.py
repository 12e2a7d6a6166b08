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


TINY_RUNS = {  # each benchmark end to end at a toy size: the JSON comes out and parses
    "maml_navigation.py": [
        "--iterations",
        "1",
        "--warmup",
        "0",
        "--set",
        "algo.meta_batch_size=2",
        "--set",
        "algo.episodes_per_task=2",
        "--set",
        "env.horizon=5",
        "--set",
        "algo.hidden_sizes=[4]",
    ],
    "rl2_time_to_target.py": [
        "--preset",
        "rl2-bandit-k5-n10",
        "--target",
        "100",
        "--time-limit",
        "0.5",
        "--eval-every",
        "1",
        "--eval-trials",
        "8",
        "--set",
        "algo.meta_batch_size=8",
    ],
    "env_steps.py": ["--batch", "16", "--steps", "3", "--repeats", "1"],
}


@pytest.mark.parametrize("script", sorted(TINY_RUNS))
def test_benchmark_runs_at_a_toy_size_and_prints_json(script):
    out = subprocess.run(
        [sys.executable, str(SCRIPTS[0].parent / script), *TINY_RUNS[script]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    record = json.loads(text[text.index("{") :])
    assert record
