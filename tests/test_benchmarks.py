"""The benchmark scripts still import and parse their arguments (they are not run by CI, so an
API change would otherwise break them silently)."""

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
