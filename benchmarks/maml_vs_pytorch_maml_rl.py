"""MAML-TRPO on 2D navigation, ours against pytorch-maml-rl, side by side in one run.

Both at pytorch-maml-rl's own 2D-navigation config (20 tasks x 20 episodes x 100 steps, one
inner step at 0.1, second order, 64x64 tanh policy, 10 CG iterations, damping 1e-5, max KL
0.01) and the same maths: full-batch curvature (``algo.curvature_episodes=0``). Rounds
alternate the two (each a fresh process, so peak memory is per program), so a machine that
slows down mid-run slows both. Prints JSON with seconds per meta-iteration (medians over all
timed iterations), peak resident memory and the speed-up.

pytorch-maml-rl is not a dependency: point ``--reference`` at a checkout of
https://github.com/tristandeleu/pytorch-maml-rl and ``--reference-deps`` at a folder holding
gym 0.17 and numpy < 2 (what it needs), e.g.

    pip install --no-deps --target /tmp/pmrl-deps gym==0.17.3 "cloudpickle<1.7" "numpy<2"
    python benchmarks/maml_vs_pytorch_maml_rl.py --reference /tmp/pytorch-maml-rl \\
        --reference-deps /tmp/pmrl-deps [--rounds 2] [--iterations 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAME_MATHS = [
    "algo.hidden_sizes=[64,64]",
    "algo.activation=tanh",
    "algo.inner_lr=0.1",
    "algo.curvature_episodes=0",
]


def _last_json(text: str) -> dict:
    start = text.rindex("\n{") + 1 if "\n{" in text else text.index("{")
    return json.loads(text[start:])


def run_ours(iterations: int, warmup: int, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        str(HERE / "maml_navigation.py"),
        "--iterations",
        str(iterations),
        "--warmup",
        str(warmup),
        "--per-iteration",
    ]
    for o in SAME_MATHS + extra:
        cmd += ["--set", o]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return _last_json(out)


def run_reference(args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # its workers hang without it (REFERENCES.md)
    env["PYTHONPATH"] = os.pathsep.join([args.reference_deps, args.reference])
    cmd = [
        sys.executable,
        str(HERE / "_pytorch_maml_rl_runner.py"),
        "--config",
        str(Path(args.reference) / "configs/maml/2d-navigation.yaml"),
        "--iterations",
        str(args.iterations),
        "--warmup",
        str(args.warmup),
        "--workers",
        str(args.workers),
        "--update-threads",
        str(args.reference_threads),
        "--device",
        args.reference_device,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return _last_json(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="pytorch-maml-rl checkout")
    parser.add_argument("--reference-deps", required=True, help="folder with gym 0.17, numpy<2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="pytorch-maml-rl sampler workers")
    parser.add_argument(
        "--reference-threads", type=int, default=2, help="torch threads of its update"
    )
    parser.add_argument(
        "--reference-device", default="cpu", help="its optimisation device (cpu or cuda)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra overrides for ours (e.g. algo.fisher_product=double_backprop)",
    )
    args = parser.parse_args()
    ours, theirs = [], []
    for i in range(args.rounds):  # each round's result as it comes, so a killed run says much
        ours.append(run_ours(args.iterations, args.warmup, args.overrides))
        print(f"round {i} ours: {json.dumps(ours[-1]['seconds_per_iteration'])}", file=sys.stderr)
        theirs.append(run_reference(args))
        print(f"round {i} theirs: {json.dumps(theirs[-1])}", file=sys.stderr)
    ours_s = [t for r in ours for t in r["seconds_per_iteration"]]
    theirs_s = [t for r in theirs for t in r["seconds_per_iteration"]]
    result = {
        "benchmark": "maml_vs_pytorch_maml_rl",
        "same_maths": SAME_MATHS + args.overrides,
        "ours": {
            "seconds_per_iteration_median": round(statistics.median(ours_s), 4),
            "update_seconds_median": statistics.median(r["update_seconds_median"] for r in ours),
            "sample_seconds_median": statistics.median(r["sample_seconds_median"] for r in ours),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "peak_cuda_mb": max(r.get("peak_cuda_mb", 0.0) for r in ours),
            "device": ours[0]["settings"]["device"],
            "seconds_per_iteration": ours_s,
        },
        "pytorch_maml_rl": {
            "seconds_per_iteration_median": round(statistics.median(theirs_s), 4),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in theirs),
            "workers": args.workers,
            "update_threads": args.reference_threads,
            "device": args.reference_device,
            "peak_cuda_mb": max(r.get("peak_cuda_mb", 0.0) for r in theirs),
            "seconds_per_iteration": theirs_s,
        },
    }
    result["speedup"] = round(
        result["pytorch_maml_rl"]["seconds_per_iteration_median"]
        / result["ours"]["seconds_per_iteration_median"],
        2,
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
