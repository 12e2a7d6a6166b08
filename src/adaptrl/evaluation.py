"""Evaluate a run: the trained learner and its references on each split, with classical
strategies where the family has them; results written as JSON under RUN/eval/.

Knows learners only through the protocol (``references()``, ``meta_test``,
``tune_for_reference``, ``evaluation_record``); never names an algorithm, an env or a learner's
own setting.
"""

from __future__ import annotations

import math
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from adaptrl.algos.base import Learner, Reference, chosen_references
from adaptrl.build import (
    Built,
    build,
    restore_learner,
    run_config,
    with_evaluate,
    with_runtime,
)
from adaptrl.config import EvalConfig, RunConfig
from adaptrl.envs import Family, classical_strategies
from adaptrl.errors import Interrupted, RunError
from adaptrl.memory import available_bytes
from adaptrl.protocol import TUNING_SEED_OFFSET, evaluation_tasks, meta_test, tuned_for_reference
from adaptrl.results import curve_record, extra_records, write_json
from adaptrl.runs import Run
from adaptrl.trainer import Trainer

ONE_RUN_KEYS = {  # evaluate.* keys that ``evaluate --set`` cannot change for one evaluation
    "pretrained_iterations": "the pretrained reference is trained once into RUN/baselines/ and "
    "reused by every evaluation, so it cannot change for one; set it in RUN/config.yaml before "
    "the first evaluation with references",
    "reference_budget": "trained references are trained once into RUN/baselines/ and reused by "
    "every evaluation, so their budget cannot change for one; set it in RUN/config.yaml before "
    "the first evaluation with references",
}


REFERENCE_ITERATION_CAP = 20
"""A reference trained for the learner's wall time stops at this many times its iterations."""


@dataclass
class ReferenceLearner:
    """A reference ready to evaluate: its learner, what it is, and how it was trained."""

    learner: Learner
    reference: Reference
    trained: dict[str, Any] = field(default_factory=dict)
    """Iterations and seconds of its training (empty: untrained)."""
    trainer: Trainer | None = None
    """Owns a sampler of its own (an oracle's family differs): closed after evaluation."""


def reference_learners(
    run: Run, config: RunConfig, built: Built, progress: bool
) -> dict[str, ReferenceLearner]:
    """The references the run's learner names (``references()``): untrained ones are built
    fresh; trained ones (the domain-randomised policy, the oracle) are trained once into
    RUN/baselines/<name>, a run of its own, so they resume and are reused. Their budget is the
    learner's training wall time (``evaluate.reference_budget``), so a reference with cheaper
    iterations is not starved, or the learner's iterations."""
    refs: dict[str, ReferenceLearner] = {}
    trained: dict[str, ReferenceLearner] = {}
    chosen = chosen_references(built.learner, built.family, config.evaluate.references)
    _announce_training(run, config, chosen)
    try:
        for name, ref in chosen.items():
            if ref.algo_overrides is None:
                refs[name] = ReferenceLearner(build(config, sampler=built.sampler).learner, ref)
                continue
            folder = ref.trained_as or name
            if folder not in trained:
                trained[folder] = _trained_reference(run, config, built, folder, ref, progress)
            refs[name] = replace(trained[folder], reference=ref)
    except BaseException:
        close_references(refs.values())
        close_references(trained.values())
        raise
    return refs


def close_references(refs) -> None:
    for ref in refs:
        if ref.trainer is not None:
            ref.trainer.close()


def _reference_budget(run: Run, config: RunConfig) -> tuple[int, float]:
    """Iterations and seconds (0: no time limit) every trained reference of the run gets."""
    ev = config.evaluate
    iters, seconds = ev.pretrained_iterations or config.train.num_iterations, 0.0
    if not ev.pretrained_iterations and ev.reference_budget == "time":
        last = run.load_checkpoint(required=False) or {}
        seconds = float(last.get("elapsed_s", 0.0)) - float(last.get("validation_s", 0.0))
        if seconds > 0:  # checkpoints before elapsed_s existed: fall back to iterations
            iters = REFERENCE_ITERATION_CAP * int(last.get("iteration", iters))
    return iters, max(seconds, 0.0)


def _describe_budget(iters: int, seconds: float) -> str:
    return f"{seconds:.0f} s, the learner's training time" if seconds else f"{iters} iterations"


def _announce_training(run: Run, config: RunConfig, chosen: dict[str, Reference]) -> None:
    """Say up front (on stderr, which ``--quiet`` keeps) which references evaluation must train
    first and for how long: two references trained for the learner's hour each must not look
    like a hang, nor start unnoticed."""
    folders = {r.trained_as or n for n, r in chosen.items() if r.algo_overrides is not None}
    iters, seconds = _reference_budget(run, config)
    pending = []
    for folder in sorted(folders):
        path = run.path / "baselines" / folder
        started = (path / "config.yaml").exists()
        state = Run.open(path).load_checkpoint(required=False) if started else None
        out_of_time = bool(seconds) and float((state or {}).get("elapsed_s", 0.0)) >= seconds
        done = state is not None and (int(state.get("iteration", 0)) >= iters or out_of_time)
        if not done:
            pending.append(folder)
    if pending:
        line = (
            f"evaluate first trains {len(pending)} reference(s), once each for up to "
            f"{_describe_budget(iters, seconds)}: {', '.join(pending)} (then reused; "
            "--no-references skips them)"
        )
        print(line, file=sys.stderr, flush=True)


def _trained_reference(
    run: Run, config: RunConfig, built: Built, folder: str, ref: Reference, progress: bool
) -> ReferenceLearner:
    iters, seconds = _reference_budget(run, config)
    ref_cfg = replace(
        config,
        env={**config.env, **(ref.env_overrides or {})},
        algo={**config.algo, **ref.algo_overrides},
        train=replace(config.train, num_iterations=iters, eval_every=0, max_seconds=seconds),
        preset=f"{config.preset} ({folder} reference)",
    )
    path = run.path / "baselines" / folder
    if (path / "config.yaml").exists() and Run.open(path).load_checkpoint(required=False) is None:
        shutil.rmtree(path)  # stopped before its first checkpoint: nothing worth keeping
    ref_run = Run.open(path) if (path / "config.yaml").exists() else Run.create(path, ref_cfg)
    own_sampler = bool(ref.env_overrides)  # another family: its own envs
    trainer = Trainer(ref_run, ref_cfg, resume=True, sampler=None if own_sampler else built.sampler)
    try:
        if trainer.iteration < iters and not trainer.out_of_time():
            # Say why evaluation trains: it must not look as if training restarted.
            print(
                f"training the '{folder}' reference once ({_describe_budget(iters, seconds)}; "
                f"kept in {path}; "
                "--no-references skips it)",
                flush=True,
            )
            trainer.train(progress=progress, label=f"{folder} reference")
    except Interrupted:
        trainer.close()
        raise Interrupted(
            f"interrupted while training the '{folder}' reference (kept in {path}); "
            f"'adaptrl evaluate {run.path}' continues it"
        ) from None
    except BaseException:
        trainer.close()
        raise
    trained = {"iterations": trainer.iteration, "seconds": round(trainer.elapsed_s, 1)}
    return ReferenceLearner(trainer.learner, ref, trained, trainer if own_sampler else None)


def evaluate_run(
    run: Run,
    splits: list[str],
    num_tasks: int | None = None,
    references: bool = True,
    progress: bool = True,
    actions: str | None = None,
    device: str | None = None,
    checkpoint: str = "last",
    overrides: list[str] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate a trained run (and references) on each split; writes RUN/eval/<split>[.ref].json
    (``checkpoint`` other than ``last``: RUN/eval-best/, RUN/eval-iterN/). ``overrides``:
    ``evaluate.key=value`` settings for this evaluation only (the run's config.yaml keeps its
    own; the JSON records what was used)."""
    config = run_config(run)
    if actions is not None:  # --actions: the learner's own key (RL²'s), checked by it
        overrides = [*(overrides or []), f"evaluate.actions={actions}"]
    if num_tasks is not None:
        overrides = [*(overrides or []), f"evaluate.num_tasks={num_tasks}"]
    if overrides:
        config = with_evaluate(config, overrides, ONE_RUN_KEYS)
    config = with_runtime(config, device)  # e.g. a run trained on a GPU, evaluated on a laptop
    state = run.load_checkpoint(which=checkpoint)
    eval_dir = run.eval_dir_for(checkpoint)
    with build(config) as built:
        family, algo = built.family, built.learner
        for split in splits:
            evaluation_tasks(family, split, config.evaluate, 1)  # unknown split: fail up front
        check_memory(algo, config, family)  # before references train for minutes, not after
        restore_learner(algo, state, str(run.checkpoint_file(checkpoint)))
        refs = reference_learners(run, config, built, progress) if references else {}
        try:
            tuned = {  # an adapting reference adapts with settings tuned for it, if any
                name: tuned_for_reference(ref.learner, family, config.evaluate)
                for name, ref in refs.items()
                if ref.reference.adapts
            }
            with _memory_guard(config.evaluate.num_tasks):
                results = _evaluate_splits(
                    config, family, splits, algo, refs, tuned, state, eval_dir, checkpoint
                )
        finally:
            close_references(refs.values())
    if checkpoint == "last":
        log_to_tensorboard(run, config, results)
    return results


def log_to_tensorboard(run: Run, config: RunConfig, results: dict[str, dict[str, Any]]) -> None:
    """Adaptation curves (x = adaptation step) and the run's hyper-parameters beside the
    training scalars in RUN/tb, so TensorBoard shows what was trained and how it adapts."""
    from torch.utils.tensorboard import SummaryWriter

    final: dict[str, float] = {}
    with SummaryWriter(str(run.tb_dir / "evaluate")) as writer:
        for split, learners in results.items():
            for name, record in learners.items():
                for x, mean in zip(record["x"], record["mean_return"]):
                    writer.add_scalar(f"evaluate/{split}/{name}", mean, x)
                final[f"hparam/{split}/{name}"] = record["mean_return"][-1]
        hparams = {
            f"{section}.{k}": v if isinstance(v, (int, float, str, bool)) else str(v)
            for section, values in config.to_dict().items()
            if isinstance(values, dict)
            for k, v in values.items()
        }
        writer.add_hparams(hparams, final, run_name="hparams")


MEMORY_SHARE = 0.5
"""An evaluation may plan on this share of the memory available when it starts."""


def evaluation_bytes(learner: Learner, config: RunConfig, family: Family, num_tasks: int) -> int:
    """A rough upper estimate of one learner's evaluation memory: the rollouts it holds at once
    (``meta_test_steps``; rows of observation, next observation, action and six scalars in
    float32), times 3 for the adaptation's gradients and temporaries."""
    obs_space, act_space = family.spaces()
    horizon = getattr(family.config, "horizon", None)
    if horizon is None:
        env = family.make_env(1)
        horizon = env.horizon
        env.close()
    row = 2 * math.prod(obs_space.shape) + max(1, math.prod(act_space.shape or (1,))) + 6
    steps = learner.meta_test_steps(config.evaluate, horizon)
    return 3 * 4 * row * steps * num_tasks


def check_memory(learner: Learner, config: RunConfig, family: Family) -> None:
    """Refuse, before any work, an evaluation that cannot fit: ``--num-tasks 100000000`` once
    trained a reference for minutes, then ran out of memory and suggested a number that did not
    fit either. Suggests the largest round number that fits."""
    available = available_bytes()
    n = config.evaluate.num_tasks
    if available is None:
        return
    budget = MEMORY_SHARE * available
    need = evaluation_bytes(learner, config, family, n)
    if need <= budget:
        return
    per_task = max(1, evaluation_bytes(learner, config, family, 1))
    fit = int(budget // per_task)
    nice = 10 ** int(math.log10(fit)) if fit >= 1 else 0
    nice = max(nice * int(fit // nice), 1) if nice else 1
    raise RunError(
        f"evaluating {n} tasks per split needs about {need / 2**30:.1f} GiB, more than this "
        f"machine can spare ({budget / 2**30:.1f} GiB); use --num-tasks {nice} or fewer"
    )


@contextmanager
def _memory_guard(num_tasks: int):
    """An allocator failure (too many tasks for this machine) as one line, not a traceback."""
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc).lower():
            raise
        raise RunError(
            f"evaluating {num_tasks} tasks per split ran out of memory; use fewer, e.g. "
            f"--num-tasks {max(1, num_tasks // 10)}"
        ) from None


def _evaluate_splits(
    config: RunConfig,
    family: Family,
    splits: list[str],
    algo: Learner,
    refs: dict[str, ReferenceLearner],
    tuned: dict[str, EvalConfig],
    state: dict[str, Any],
    eval_dir: Path,
    checkpoint: str,
) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    learners = {config.algorithm: ReferenceLearner(algo, Reference("")), **refs}
    for split in splits:
        results[split] = {}
        points = None  # the learner's adaptation points: a non-adapting reference is held flat
        for name, entry in learners.items():
            learner, ref = entry.learner, entry.reference
            cfg = tuned.get(name, config.evaluate)
            if not ref.adapts:
                cfg = replace(cfg, num_steps=0)
            out = meta_test(learner, family, split, cfg)
            trace = out.pop("trace", None)
            if trace and name == config.algorithm:
                write_json(eval_dir / "traces" / f"{split}.json", trace)
            returns = out.pop("returns")
            points = returns.shape[0] if points is None else points
            if not ref.adapts:
                returns, out = _held(returns, points), {k: _held(v, points) for k, v in out.items()}
            record = curve_record(name, family.name, split, returns, learner.x_label)
            record.update(extra_records(out))
            record["iteration"] = int(state["iteration"])
            record["checkpoint"] = checkpoint
            if checkpoint == "best":  # best.pt was chosen on this split's validation draw
                record["selected_on"] = config.train.validation_split
            record["seed"] = cfg.seed
            record["episodes_per_step"] = cfg.episodes_per_task
            record.update(learner.evaluation_record(cfg, for_reference=name in tuned))
            if ref.description:
                record["description"] = ref.description
                record["adapts"] = ref.adapts
            if entry.trained:
                record["trained"] = entry.trained
            results[split][name] = record
            suffix = "" if name == config.algorithm else f".{name}"
            write_json(eval_dir / f"{split}{suffix}.json", record)
        if family.spec.classical is not None and refs:
            write_json(
                eval_dir / "classical" / f"{split}.json",
                classical_record(family, config, split, algo),
            )
    return results


def _held(value: torch.Tensor, points: int) -> torch.Tensor:
    """A non-adapting policy's [1, n] result at every one of the learner's ``points``."""
    if value.dim() == 2 and value.shape[0] == 1:
        return value.expand(points, -1)
    return value


def classical_record(
    family: Family, config: RunConfig, split: str, learner: Learner
) -> dict[str, Any]:
    """Classical strategies of the family on the very tasks the learner is evaluated on, with
    as many episodes per task as the learner's trial. The learner's own row is not stored:
    ``results.load_classical`` adds it from the learner's record, so a later re-evaluation can
    never leave a stale row beside the baselines."""
    strategies = classical_strategies(family.spec)
    tasks = evaluation_tasks(family, split, config.evaluate)
    tune_cfg = replace(
        config.evaluate, seed=config.evaluate.seed + TUNING_SEED_OFFSET, num_tasks=200
    )
    tune = evaluation_tasks(family, "train", tune_cfg)
    episodes = learner.trial_episodes
    rows = strategies.run(family, tasks, config.evaluate.seed, tune, episodes)
    return {
        "split": split,
        "env": family.spec.name,
        "num_tasks": config.evaluate.num_tasks,
        "seed": config.evaluate.seed,
        "setting": strategies.label(family, episodes),
        "setting_label": strategies.setting_label,
        "unit": strategies.unit,
        "strategies": rows,
    }
