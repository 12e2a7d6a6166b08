"""Two jobs on one machine: seconds per MAML 2D-navigation iteration alone and with a second
copy running beside it, with adaptrl's default thread settings and with torch's own.

Prints JSON: for each setting, the median seconds per iteration of one job alone, of each of two
jobs at once, and the ratio (two at once / alone; 2.0 is fair sharing of the cores). Each job is
``benchmarks/maml_navigation.py`` in a process of its own, so the settings apply as they do to
``adaptrl train``.

    python benchmarks/threads.py [--iterations 6] [--settings adaptrl torch]

Settings: ``adaptrl`` = the defaults a user gets (what ``import adaptrl`` sets unless the user
set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``); ``torch`` = torch's own (GNU OpenMP's default:
a waiting thread spins 300,000 times before it sleeps); ``spinN`` = N spins; ``passive`` = none.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).with_name("maml_navigation.py")
SETTINGS = {
    "adaptrl": {},
    "torch": {"GOMP_SPINCOUNT": "300000"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin1000": {"GOMP_SPINCOUNT": "1000"},
    "spin3000": {"GOMP_SPINCOUNT": "3000"},
    "spin10000": {"GOMP_SPINCOUNT": "10000"},
    "spin100000": {"GOMP_SPINCOUNT": "100000"},
}


def _jobs(count: int, iterations: int, env: dict[str, str]) -> list[float]:
    command = [sys.executable, str(BENCH), "--iterations", str(iterations), "--warmup", "2"]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(count)
    ]
    out = [json.loads(p.communicate()[0]) for p in procs]
    return [r["seconds_per_iteration_median"] for r in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument(
        "--settings", nargs="+", default=["adaptrl", "torch"], choices=list(SETTINGS)
    )
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    results = {}
    for name in args.settings:
        env = {**base, **SETTINGS[name]}
        alone = _jobs(1, args.iterations, env)[0]
        both = _jobs(2, args.iterations, env)
        results[name] = {
            "alone_s": alone,
            "two_at_once_s": both,
            "ratio": round(statistics.mean(both) / alone, 2),
        }
    print(
        json.dumps({"benchmark": "two_jobs_at_once", "cpus": os.cpu_count(), **results}, indent=1)
    )


if __name__ == "__main__":
    main()
