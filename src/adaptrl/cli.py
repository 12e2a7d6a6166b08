"""The adaptrl command line: a thin layer over the library.

Every user error (AdaptrlError) becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from adaptrl.errors import AdaptrlError, ConfigError


def _train(args: argparse.Namespace) -> None:
    from adaptrl.build import build_run_config
    from adaptrl.config import apply_overrides, load_preset
    from adaptrl.runs import Run
    from adaptrl.trainer import Trainer

    existed: bool | None = None  # whether --out existed before this fresh run (None: resume)
    before: set[Path] = set()  # and what it held
    if args.resume:
        run, config = _resumed(args)
    else:
        if not args.preset:
            raise ConfigError("train needs a PRESET (see 'adaptrl list') or --resume RUN")
        overrides = list(args.overrides)
        for key, value in (
            ("train.seed", args.seed),
            ("train.device", args.device),
            ("train.num_iterations", args.iterations),
            ("train.max_seconds", args.max_seconds),
            ("sampler.backend", args.sampler),
            ("sampler.ray_address", args.ray_address),
        ):
            if value is not None:
                overrides.append(f"{key}={value}")
        config = build_run_config(apply_overrides(load_preset(args.preset), overrides))
        out = Path(args.out or f"runs/{config.preset or config.algorithm}")
        existed = out.exists()
        before = set(out.iterdir()) if out.is_dir() else set()
        run = Run.create(out, config)
    try:
        with Trainer(run, config, resume=bool(args.resume)) as trainer:
            if trainer.iteration >= config.train.num_iterations:
                print(f"{run.path}: already trained for {trainer.iteration} iterations")
                return
            device = str(trainer.built.device)
            run.record_session(["adaptrl", *args.argv], trainer.iteration, device)
            metrics = trainer.train(progress=not args.quiet)
    except BaseException:
        # A new run that fails or stops before its first iteration is saved (no CUDA, Ray
        # actors that cannot import the user's module, Ctrl-C) must not leave a folder that
        # traps a re-run ("already holds a run", issue 26): take back what it wrote.
        if existed is not None and not run.checkpoint_path.exists():
            _take_back(run, before, existed)
        raise
    shown = {k: round(v, 3) for k, v in metrics.items() if k.startswith(("adapt/", "time/"))}
    print(f"trained {run.path} to iteration {trainer.iteration}: {shown}")


def _take_back(run, before: set[Path], existed: bool) -> None:
    """Remove what a new run wrote into its folder; the folder too when it did not exist."""
    for path in set(run.path.iterdir()) - before:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if not existed:
        with contextlib.suppress(OSError):
            run.path.rmdir()


def _resumed(args: argparse.Namespace):
    """The run to resume and its config. Where and how fast it runs (device, sampler) may
    change; what it computes (preset, --set, seed) may not."""
    from adaptrl.build import run_config, with_runtime
    from adaptrl.runs import Run

    if args.preset or args.overrides:
        raise ConfigError("--resume continues a run with its own config; drop PRESET/--set")
    run = Run.open(args.resume)
    config = run_config(run)
    if args.seed is not None and args.seed != config.train.seed:
        raise ConfigError(
            f"--seed {args.seed} with --resume: the run was trained with seed "
            f"{config.train.seed}; start a new run (--out) for another seed"
        )
    state = run.resume_state()  # refuses a run it cannot continue before anything is written
    spent = float(state.get("elapsed_s", 0.0)) if state else 0.0
    if args.max_seconds is not None:  # a larger budget is part of its record
        if args.max_seconds and args.max_seconds <= spent:
            raise ConfigError(
                f"--max-seconds {args.max_seconds:g} with --resume: the run has trained "
                f"{spent:.0f} s already; give more"
            )
        config = replace(config, train=replace(config.train, max_seconds=args.max_seconds))
        run.save_config(config)
    limit = config.train.max_seconds
    if limit and spent >= limit:
        raise ConfigError(
            f"the run used its training budget (train.max_seconds {limit:g} s, trained "
            f"{spent:.0f} s); extend it with --max-seconds SECONDS (0: no limit)"
        )
    if args.iterations:  # extending a finished run is part of its record
        done = int(state["iteration"]) if state else 0
        if args.iterations < done:
            raise ConfigError(
                f"--iterations {args.iterations} with --resume: the run is already at "
                f"iteration {done}"
            )
        config = replace(config, train=replace(config.train, num_iterations=args.iterations))
        run.save_config(config)
    return run, with_runtime(config, args.device, args.sampler, args.ray_address)


def _evaluate(args: argparse.Namespace) -> None:
    from adaptrl.build import run_config
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
        device=args.device,
        checkpoint=args.checkpoint,
        overrides=args.overrides,
    )
    print(format_table(results, run_config(run).algorithm))
    from adaptrl.baselines.table import duan_table
    from adaptrl.results import load_classical

    eval_dir = run.eval_dir_for(args.checkpoint)
    for split, record in load_classical(run, eval_dir).items():
        if split in splits:
            label = record.get("setting_label", "n")
            note = (
                f"; the learner was evaluated on other tasks, so it has no row (--num-tasks "
                f"{record['num_tasks']} evaluates it on these)"
                if record.get("learner_on_other_tasks")
                else " (same tasks)"
            )
            print(f"classical baselines, split={split}, {record['num_tasks']} trials{note}:")
            print(duan_table(label, {record["setting"]: record["strategies"]}))
    print(f"wrote {eval_dir}/")


def _baselines(args: argparse.Namespace) -> None:
    from adaptrl.baselines.table import duan_rows, duan_table

    if args.trials <= 0:
        raise ConfigError(f"--trials must be > 0, got {args.trials}")
    label, rows = duan_rows(
        args.env, args.trials, args.split, args.seed, args.arms, args.pulls, args.episodes
    )
    print(duan_table(label, rows))
    print(f"(mean total reward per trial ± 95% CI over {args.trials} {args.split}-split tasks)")


def _report(args: argparse.Namespace) -> None:
    from adaptrl.report import not_evaluated_hint, write_report
    from adaptrl.results import load_results
    from adaptrl.runs import Run

    run = Run.open(args.run)
    paths = write_report(run, [Run.open(path) for path in args.beside])
    print(f"wrote {paths['md']} and {paths['html']}")
    if not load_results(run):
        print(f"no adaptation curves: {not_evaluated_hint(run.path)}".replace("`", "'"))


def _config(args: argparse.Namespace) -> None:
    from adaptrl.build import annotated_config, build_run_config, run_config
    from adaptrl.config import apply_overrides, load_preset
    from adaptrl.runs import Run

    if Path(args.preset).is_dir():  # a run: the config it trains and evaluates with
        if args.overrides:
            raise ConfigError("--set applies to a preset; a run's config is fixed")
        config = run_config(Run.open(args.preset))
    else:
        config = build_run_config(apply_overrides(load_preset(args.preset), args.overrides))
    print(annotated_config(config))


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


def _aggregate(args: argparse.Namespace) -> None:
    from adaptrl.aggregate import aggregate_runs, format_aggregate

    out = Path(args.out)
    record = aggregate_runs([Path(p) for p in args.runs], args.split, out, args.checkpoint)
    print(format_aggregate(record))
    print(f"wrote {out}/")


DESCRIPTION = """Meta-reinforcement learning: meta-train on a distribution of tasks, then measure
how fast the agent adapts to held-out tasks.

Your own task families: --import MODULE (or a .py file) before the command, or an installed
package's entry point in the 'adaptrl.families' group."""


def build_parser() -> argparse.ArgumentParser:
    from adaptrl.config import list_presets

    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="adaptrl", description=DESCRIPTION, formatter_class=raw)
    parser.add_argument("--version", action="version", version=f"adaptrl {_version()}")
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module or .py file that registers task families (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="meta-train from a preset, or resume a run",
        description="Meta-train from a preset or YAML file, or continue a run with --resume.",
        epilog="presets:\n  " + "\n  ".join(list_presets()),
        formatter_class=raw,
    )
    p.add_argument("preset", nargs="?", help="preset name (listed below) or a YAML file")
    p.add_argument("--out", help="run directory (default runs/PRESET)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a stopped run from its last checkpoint (same result as an uninterrupted "
        "run; --device, --sampler and --iterations may change, the seed may not)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. algo.inner_lr=0.5 (repeatable; every key, its "
        "meaning and default: adaptrl config PRESET)",
    )
    p.add_argument("--seed", type=int, help="run seed (tasks, rollouts, initialisation)")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--iterations", type=int, help="meta-iterations (with --resume: extend the run)")
    p.add_argument(
        "--max-seconds",
        type=float,
        help="training wall-time budget, train.max_seconds (with --resume: extend the run's)",
    )
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
    p.add_argument("run", help="run directory (the --out of adaptrl train)")
    p.add_argument(
        "--split",
        default="both",
        help="train, test, both (default), ood where the family has one, or a comma list",
    )
    p.add_argument("--num-tasks", type=int, help="tasks per split (default: evaluate.num_tasks)")
    p.add_argument(
        "--checkpoint",
        default="last",
        help="last (default), best (kept when train.eval_every > 0), an iteration kept by "
        "train.keep_every, or a checkpoint file; other than last writes RUN/eval-<name>/",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the run's train.device)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="evaluate.KEY=VALUE",
        help="an evaluation setting for this evaluation only (e.g. evaluate.batch_steps=4000, "
        "evaluate.inner_lrs=[0.5,0.25]); repeatable; its results replace RUN/eval/ as any "
        "evaluation's do, and record the settings used",
    )
    p.add_argument(
        "--actions",
        choices=["sample", "mode"],
        help="RL²: sample actions (default) or take the most likely one",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="skip the reference curves (domain-randomised, oracle, pretrained, random init)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("report", help="write report.md, report.html and PNG plots")
    p.add_argument("run", help="run directory")
    p.add_argument(
        "--beside",
        nargs="+",
        default=[],
        metavar="RUN",
        help="other runs (e.g. MAML's on the same family) drawn beside this one in the figure "
        "of return against environment steps",
    )
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "aggregate", help="several seeds of one preset: one table and plot with 95%% intervals"
    )
    p.add_argument("runs", nargs="+", help="run directories (each evaluated on --split)")
    p.add_argument("--split", default="test", help="split to aggregate (default test)")
    p.add_argument(
        "--checkpoint",
        default="last",
        help="whose evaluations: last (default), best or a kept iteration, as given to "
        "'adaptrl evaluate --checkpoint'",
    )
    p.add_argument("--out", required=True, help="directory for aggregate_<split>.json and .png")
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("baselines", help="classical strategies in the layout of Duan et al.")
    p.add_argument("env", choices=["bandit", "tabular_mdp"])
    p.add_argument("--arms", type=int, nargs="+", default=[5], help="k (bandit)")
    p.add_argument("--pulls", type=int, nargs="+", default=[10], help="n (bandit)")
    p.add_argument("--episodes", type=int, nargs="+", default=[10], help="n (tabular_mdp)")
    p.add_argument("--trials", type=int, default=1000, help="tasks (trials) per setting")
    p.add_argument("--split", choices=["train", "test"], default="test", help="task split")
    p.add_argument("--seed", type=int, default=0, help="seed of tasks and strategies")
    p.set_defaults(func=_baselines)

    p = sub.add_parser(
        "config",
        help="a preset's resolved config: every key --set accepts, its meaning and default",
        description="Print a preset's config with every key resolved, each under its meaning "
        "(and its default where the preset changes it), as YAML: save it, edit it and pass the "
        "file to 'adaptrl train'.",
    )
    p.add_argument("preset", help="preset name ('adaptrl list'), a YAML file or a run directory")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="show the config with these overrides applied (as 'adaptrl train --set')",
    )
    p.set_defaults(func=_config)

    p = sub.add_parser("list", help="presets, environments and algorithms")
    p.set_defaults(func=_list)
    return parser


def _version() -> str:
    try:
        return metadata.version("adaptrl")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def load_plugins(imports: list[str]) -> None:
    """Register users' task families: installed entry points ('adaptrl.families') and each
    --import (a module name, or a .py file whose folder is put on sys.path so that worker
    processes import it by the same name)."""
    for entry in metadata.entry_points(group="adaptrl.families"):
        try:
            entry.load()
        except Exception as exc:
            raise ConfigError(
                f"entry point '{entry.name}' ({entry.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    for item in imports:
        name = item
        if item.endswith(".py"):
            path = Path(item).resolve()
            if not path.is_file():
                raise ConfigError(f"--import {item}: no such file")
            sys.path.insert(0, str(path.parent))
            name = path.stem
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise ConfigError(f"--import {item} failed: {exc}") from None
            raise ConfigError(
                f"--import {item}: no module named '{name}'; put it on PYTHONPATH or pass its "
                ".py file"
            ) from None
        except AdaptrlError:
            raise
        except Exception as exc:
            raise ConfigError(f"--import {item} failed: {type(exc).__name__}: {exc}") from None
        if not _installed(module):
            from adaptrl.envs import add_plugin_module

            add_plugin_module(module)


def _installed(module) -> bool:
    """Whether ``module`` comes from an installed distribution (every Ray worker has those)."""
    path = Path(getattr(module, "__file__", None) or "")
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in RUN/sessions.json
    # SIGTERM (a scheduler's stop, `kill`) stops a run like Ctrl-C does: workers are shut down
    # and training saves its last completed iteration. Background jobs may ignore SIGINT;
    # SIGTERM still works.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        load_plugins(args.imports)
        args.func(args)
    except AdaptrlError as exc:
        print(f"adaptrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # training's Interrupted names the run and its iteration
        print(f"adaptrl: {str(exc) or 'interrupted'}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `adaptrl config PRESET | head` stopped reading: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
