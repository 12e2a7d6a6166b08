"""``adaptrl train | evaluate | report | list``: a thin layer over the library.

Every user error (AdaptrlError) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

from adaptrl.errors import AdaptrlError, ConfigError


def _train(args: argparse.Namespace) -> None:
    from adaptrl.build import build_run_config
    from adaptrl.config import apply_overrides, load_preset
    from adaptrl.runs import Run
    from adaptrl.trainer import Trainer

    if args.resume:
        if args.preset or args.overrides:
            raise ConfigError("--resume continues a run with its own config; drop PRESET/--set")
        run = Run.open(args.resume)
        config = run.config()
        if args.iterations:  # allow extending a finished run
            config = replace(config, train=replace(config.train, num_iterations=args.iterations))
    else:
        if not args.preset:
            raise ConfigError("train needs a PRESET (see 'adaptrl list') or --resume RUN")
        overrides = list(args.overrides)
        for key, value in (
            ("train.seed", args.seed),
            ("train.device", args.device),
            ("train.num_iterations", args.iterations),
            ("sampler.backend", args.sampler),
            ("sampler.ray_address", args.ray_address),
        ):
            if value is not None:
                overrides.append(f"{key}={value}")
        config = build_run_config(apply_overrides(load_preset(args.preset), overrides))
        out = Path(args.out or f"runs/{config.preset or config.algorithm}")
        existed = out.exists()
        run = Run.create(out, config)
    try:
        trainer = Trainer(run, config, resume=bool(args.resume))
    except AdaptrlError:
        # A run refused before its first iteration (no CUDA, an unreachable Ray cluster, a
        # learner that cannot use the family) must not leave a folder that traps a re-run.
        if not args.resume and not existed:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    with trainer:
        if trainer.iteration >= config.train.num_iterations:
            print(f"{run.path}: already trained for {trainer.iteration} iterations")
            return
        metrics = trainer.train(progress=not args.quiet)
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith(("adapt/", "time/"))}
    print(f"trained {run.path} to iteration {trainer.iteration}: {shown}")


def _evaluate(args: argparse.Namespace) -> None:
    from adaptrl.evaluation import evaluate_run
    from adaptrl.results import format_table
    from adaptrl.runs import Run

    if args.num_tasks is not None and args.num_tasks <= 0:
        raise ConfigError(f"--num-tasks must be > 0, got {args.num_tasks}")
    splits = ["train", "test"] if args.split == "both" else args.split.split(",")
    run = Run.open(args.run)
    results = evaluate_run(
        run,
        splits,
        args.num_tasks,
        references=not args.no_references,
        progress=not args.quiet,
        actions=args.actions,
    )
    print(format_table(results))
    from adaptrl.baselines.table import duan_table
    from adaptrl.results import load_classical

    for split, record in load_classical(run).items():
        if split in splits:
            label = "n, k" if record["env"] == "bandit" else "n"
            print(f"classical baselines, split={split}, {record['num_tasks']} trials (same tasks):")
            print(duan_table(label, {record["setting"]: record["strategies"]}))
    print(f"wrote {run.eval_dir}/")


def _baselines(args: argparse.Namespace) -> None:
    import torch

    from adaptrl.baselines.table import classical_baselines, duan_table
    from adaptrl.envs import make_family

    if args.trials <= 0:
        raise ConfigError(f"--trials must be > 0, got {args.trials}")
    rows = {}
    if args.env == "bandit":
        for k in args.arms:
            for n in args.pulls:
                family = make_family("bandit", num_arms=k, num_pulls=n)
                gen = torch.Generator().manual_seed(args.seed)
                tasks = family.tasks.sample(args.trials, args.split, gen)
                tune = family.tasks.sample(200, "train", gen)
                rows[f"{n}, {k}"] = classical_baselines(family, tasks, args.seed, tune)
        print(duan_table("n, k", rows))
    else:
        family = make_family("tabular_mdp")
        for n in args.episodes:
            gen = torch.Generator().manual_seed(args.seed)
            tasks = family.tasks.sample(args.trials, args.split, gen)
            rows[str(n)] = classical_baselines(family, tasks, args.seed, episodes=n)
        print(duan_table("n", rows))
    print(f"(mean total reward per trial ± 95% CI over {args.trials} {args.split}-split tasks)")


def _report(args: argparse.Namespace) -> None:
    from adaptrl.report import write_report
    from adaptrl.runs import Run

    paths = write_report(Run.open(args.run))
    print(f"wrote {paths['md']} and {paths['html']}")


def _list(args: argparse.Namespace) -> None:
    from adaptrl.algos import DESCRIPTIONS
    from adaptrl.config import list_presets, load_preset
    from adaptrl.envs import registered_envs

    print("presets:")
    for name in list_presets():
        data = load_preset(name)
        print(f"  {name:28s} {data.get('algorithm')} on {data.get('env', {}).get('name')}")
    print("environments:")
    for name, spec in sorted(registered_envs().items()):
        print(f"  {name:28s} {spec.description}")
    print("algorithms:")
    for name, text in DESCRIPTIONS.items():
        print(f"  {name:28s} {text}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptrl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train from a preset, or resume a run")
    p.add_argument("preset", nargs="?", help="preset name (adaptrl list) or a YAML file")
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.add_argument("--resume", metavar="RUN", help="continue a killed run from its checkpoint")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu or cuda")
    p.add_argument("--iterations", type=int, help="number of meta-iterations")
    p.add_argument(
        "--sampler",
        help="where rollouts run: auto (default), inprocess, processes or ray "
        "(same trajectories on each; set the worker count with --set sampler.workers=N)",
    )
    p.add_argument(
        "--ray-address",
        help="with --sampler ray: address of an existing cluster ('auto' finds a local one)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="adapt on held-out tasks; print and save the curves")
    p.add_argument("run")
    p.add_argument(
        "--split",
        default="both",
        help="train, test, both (default), ood where the family has one, or a comma list",
    )
    p.add_argument("--num-tasks", type=int)
    p.add_argument(
        "--actions",
        choices=["sample", "mode"],
        help="RL²: sample actions (default) or take the most likely one",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="skip the pretrained / random-init reference curves",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("baselines", help="classical strategies in the layout of Duan et al.")
    p.add_argument("env", choices=["bandit", "tabular_mdp"])
    p.add_argument("--arms", type=int, nargs="+", default=[5], help="k (bandit)")
    p.add_argument("--pulls", type=int, nargs="+", default=[10], help="n (bandit)")
    p.add_argument("--episodes", type=int, nargs="+", default=[10], help="n (tabular_mdp)")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--split", choices=["train", "test"], default="test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_baselines)

    p = sub.add_parser("report", help="write report.md, report.html and PNG plots")
    p.add_argument("run")
    p.set_defaults(func=_report)

    p = sub.add_parser("list", help="presets, environments and algorithms")
    p.set_defaults(func=_list)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM (a scheduler's stop, `kill`) stops a run like Ctrl-C does: workers are shut down
    # and the last checkpoint stays valid. Background jobs may ignore SIGINT; SIGTERM still works.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.func(args)
    except AdaptrlError as exc:
        print(f"adaptrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adaptrl: interrupted; resume with 'adaptrl train --resume RUN'", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
