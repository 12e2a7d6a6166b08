"""Meta-test protocol: adapt on N tasks of a split, report the return after each step.

Every learner (the run's, and the references) sees the *same* tasks and the same rollout noise
seed, so differences between curves come from the learners, not from the draw. The 95% interval
is over tasks (normal approximation: mean ± 1.96·sd/√N).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from adaptrl.config import EvalConfig, RunConfig
from adaptrl.envs import Family
from adaptrl.runs import Run, atomic_write_text

REFERENCES = {
    "pretrained": "multi-task policy (no inner step in training), then the same inner loop",
    "random_init": "untrained policy, then the same inner loop",
}


@contextmanager
def _generator(algo: Any, seed: int) -> Iterator[torch.Generator]:
    """Give ``algo`` a fresh seeded generator for the duration (training's stays untouched)."""
    saved = algo.generator
    algo.generator = torch.Generator(device=saved.device).manual_seed(seed)
    try:
        yield algo.generator
    finally:
        algo.generator = saved


def adaptation_returns(
    algo: Any,
    family: Family,
    split: str,
    cfg: EvalConfig,
    num_tasks: int | None = None,
    num_steps: int | None = None,
) -> torch.Tensor:
    """Return after 0..K adaptation steps on ``num_tasks`` tasks of ``split``: [K + 1, N]."""
    n = num_tasks or cfg.num_tasks
    with _generator(algo, cfg.seed + (0 if split == "train" else 1)) as gen:
        tasks = family.tasks.sample(n, split, gen)
        result = algo.adapt(
            tasks,
            cfg.num_steps if num_steps is None else num_steps,
            cfg.inner_lrs,
            cfg.episodes_per_task,
        )
    return result.returns.detach().cpu()


def summarize(returns: torch.Tensor) -> dict[str, list]:
    """Mean and 95% half-width over tasks for each step; returns: [K + 1, N]."""
    n = returns.shape[1]
    mean = returns.mean(1)
    sd = returns.std(1, unbiased=True) if n > 1 else torch.zeros_like(mean)
    return {"mean_return": mean.tolist(), "ci95": (1.96 * sd / math.sqrt(n)).tolist()}


def curve_record(
    name: str, config: RunConfig, split: str, returns: torch.Tensor, x_label: str
) -> dict[str, Any]:
    return {
        "algorithm": name,
        "env": config.env["name"],
        "split": split,
        "num_tasks": returns.shape[1],
        "x": list(range(returns.shape[0])),
        "x_label": x_label,
        **summarize(returns),
        "per_task_return": returns.T.tolist(),
    }


def reference_learners(run: Run, config: RunConfig, progress: bool) -> dict[str, Any]:
    """Untrained ('random_init') and, for MAML, multi-task 'pretrained' learners.

    The pretrained policy is trained once into RUN/baselines/pretrained (a run of its own, so it
    resumes and is reused) with the same settings and no inner step.
    """
    from adaptrl.trainer import Trainer, build_learner

    refs = {"random_init": build_learner(config)[1]}
    if config.algorithm == "maml":
        iters = config.evaluate.pretrained_iterations or config.train.num_iterations
        pre_cfg = replace(
            config,
            algo={**config.algo, "num_inner_steps": 0},
            train=replace(config.train, num_iterations=iters, eval_every=0),
            preset=f"{config.preset} (pretrained reference)",
        )
        path = run.path / "baselines" / "pretrained"
        pre_run = Run.open(path) if (path / "config.yaml").exists() else Run.create(path, pre_cfg)
        trainer = Trainer(pre_run, pre_cfg, resume=True)
        if trainer.iteration < iters:
            trainer.train(progress=progress)
        refs["pretrained"] = trainer.algo
    return refs


def evaluate_run(
    run: Run,
    splits: list[str],
    num_tasks: int | None = None,
    references: bool = True,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate a trained run (and references) on each split; writes RUN/eval/<split>[.ref].json."""
    from adaptrl.trainer import build_learner

    config = run.config()
    if num_tasks is not None:
        config = replace(config, evaluate=replace(config.evaluate, num_tasks=num_tasks))
    state = run.load_checkpoint()
    family, algo, _ = build_learner(config)
    algo.load_state_dict(state["algorithm"])
    learners = {config.algorithm: algo}
    if references:
        learners.update(reference_learners(run, config, progress))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        results[split] = {}
        for name, learner in learners.items():
            returns = adaptation_returns(learner, family, split, config.evaluate)
            record = curve_record(name, config, split, returns, learner.x_label)
            record["iteration"] = int(state["iteration"])
            results[split][name] = record
            suffix = "" if name == config.algorithm else f".{name}"
            write_json(run.eval_dir / f"{split}{suffix}.json", record)
    return results


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1))


def load_results(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """All eval JSON files of a run: {split: {learner: record}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run.eval_dir.glob("*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["split"], {})[record["algorithm"]] = record
    return results


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Plain-text table: one row per adaptation step, one column per learner and split."""
    lines = []
    for split, learners in results.items():
        names = list(learners)
        first = learners[names[0]]
        lines.append(f"split={split}  tasks={first['num_tasks']}  env={first['env']}")
        header = f"{first['x_label']:>16} " + " ".join(f"{n:>20}" for n in names)
        lines.append(header)
        for i, x in enumerate(first["x"]):
            cells = [
                f"{learners[n]['mean_return'][i]:9.2f} ± {learners[n]['ci95'][i]:6.2f}  "
                for n in names
            ]
            lines.append(f"{x:>16} " + " ".join(f"{c:>20}" for c in cells))
        lines.append("")
    return "\n".join(lines)
