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

from adaptrl.baselines.table import CLASSICAL_ENVS
from adaptrl.config import EvalConfig, RunConfig, check_eval_actions
from adaptrl.envs import Family
from adaptrl.runs import Run, atomic_write_text

REFERENCES = {
    "pretrained": "multi-task policy (no inner step in training), then the same inner loop",
    "random_init": "untrained policy, then the same inner loop",
}
# References get their inner step sizes tuned (on training tasks) by scaling the schedule with the
# best of these factors: a fixed step size that suits the meta-learned initialisation can make a
# plain policy diverge, and a diverging reference would flatter meta-learning.
REFERENCE_LR_SCALES = (1.0, 0.3, 0.1, 0.03, 0.01)


@contextmanager
def _generator(algo: Any, seed: int) -> Iterator[torch.Generator]:
    """Give ``algo`` a fresh seeded generator for the duration (training's stays untouched)."""
    saved = algo.generator
    algo.generator = torch.Generator(device=saved.device).manual_seed(seed)
    try:
        yield algo.generator
    finally:
        algo.generator = saved


def _seed(cfg: EvalConfig, split: str, offset: int = 0) -> int:
    return cfg.seed + (0 if split == "train" else 1) + offset


def evaluation_tasks(family: Family, split: str, cfg: EvalConfig, device) -> dict:
    """Exactly the tasks ``meta_test`` draws for ``split`` (same seed, same first draw)."""
    gen = torch.Generator(device=device).manual_seed(_seed(cfg, split))
    return family.tasks.sample(cfg.num_tasks, split, gen)


def meta_test(
    algo: Any,
    family: Family,
    split: str,
    cfg: EvalConfig,
    num_tasks: int | None = None,
    seed_offset: int = 0,
) -> dict[str, torch.Tensor]:
    """Adapt to ``num_tasks`` tasks of ``split``: ``{"returns": [X, N], ...extras}``.

    X indexes adaptation (gradient steps for MAML, episodes of a trial for RL²); the algorithm's
    ``meta_test(tasks, cfg)`` may add extras such as per-episode lengths.
    """
    n = num_tasks or cfg.num_tasks
    with _generator(algo, _seed(cfg, split, seed_offset)) as gen:
        tasks = family.tasks.sample(n, split, gen)
        out = algo.meta_test(tasks, cfg)
    return {k: v.detach().cpu() for k, v in out.items()}


def adaptation_returns(
    algo: Any, family: Family, split: str, cfg: EvalConfig, num_tasks: int | None = None
) -> torch.Tensor:
    """Mean return at each adaptation point on ``split``: [X, N]."""
    return meta_test(algo, family, split, cfg, num_tasks)["returns"]


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


def tune_inner_lrs(learner: Any, family: Family, cfg: EvalConfig) -> tuple[float, ...]:
    """Best scaled step-size schedule for a reference, chosen on a separate draw of *training*
    tasks by the mean return after the last step (never on the split being reported)."""
    best, best_return = cfg.inner_lrs, -float("inf")
    for scale in REFERENCE_LR_SCALES:
        lrs = tuple(round(lr * scale, 8) for lr in cfg.inner_lrs)
        trial = replace(cfg, inner_lrs=lrs, num_tasks=min(cfg.num_tasks, 20))
        final = meta_test(learner, family, "train", trial, seed_offset=7919)["returns"][-1].mean()
        if torch.isfinite(final) and final > best_return:
            best, best_return = lrs, float(final)
    return best


def reference_learners(run: Run, config: RunConfig, progress: bool) -> dict[str, Any]:
    """Untrained ('random_init') and, for MAML, multi-task 'pretrained' learners.

    The pretrained policy is trained once into RUN/baselines/pretrained (a run of its own, so it
    resumes and is reused) with the same settings and no inner step.
    """
    from adaptrl.trainer import Trainer, build_learner

    refs = {"random_init": build_learner(config)[1]}
    if config.algorithm == "maml":  # the multi-task reference is MAML's machinery, no inner step
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
    actions: str | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate a trained run (and references) on each split; writes RUN/eval/<split>[.ref].json."""
    from adaptrl.trainer import build_learner

    config = run.config()
    if num_tasks is not None:
        config = replace(config, evaluate=replace(config.evaluate, num_tasks=num_tasks))
    if actions is not None:
        config = replace(config, evaluate=replace(config.evaluate, actions=actions))
    state = run.load_checkpoint()
    family, algo, _ = build_learner(config)
    algo.load_state_dict(state["algorithm"])
    check_eval_actions(algo, config.evaluate)  # before any reference is trained
    learners = {config.algorithm: algo}
    lrs = {config.algorithm: config.evaluate.inner_lrs}
    if references:
        for name, learner in reference_learners(run, config, progress).items():
            learners[name] = learner
            if getattr(learner, "adapts_by_gradient", False):
                lrs[name] = tune_inner_lrs(learner, family, config.evaluate)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        results[split] = {}
        for name, learner in learners.items():
            cfg = replace(config.evaluate, inner_lrs=lrs.get(name, config.evaluate.inner_lrs))
            out = meta_test(learner, family, split, cfg)
            record = curve_record(name, config, split, out.pop("returns"), learner.x_label)
            record.update(extra_records(out))
            record["iteration"] = int(state["iteration"])
            record["actions"] = cfg.actions
            if getattr(learner, "adapts_by_gradient", False):
                record["inner_lrs"] = list(cfg.inner_lrs)
            results[split][name] = record
            suffix = "" if name == config.algorithm else f".{name}"
            write_json(run.eval_dir / f"{split}{suffix}.json", record)
        if references and family.spec.name in CLASSICAL_ENVS:
            write_json(
                run.eval_dir / "classical" / f"{split}.json",
                classical_record(
                    family, config, split, algo.device, results[split][config.algorithm]
                ),
            )
    return results


def classical_record(
    family: Family, config: RunConfig, split: str, device, learner: dict[str, Any]
) -> dict[str, Any]:
    """Classical strategies on the very tasks the learner was evaluated on, beside its row."""
    from adaptrl.baselines.table import classical_baselines

    tasks = evaluation_tasks(family, split, config.evaluate, device)
    tune = evaluation_tasks(
        family,
        "train",
        replace(config.evaluate, seed=config.evaluate.seed + 7919, num_tasks=200),
        device,
    )
    rows = classical_baselines(
        family,
        tasks,
        seed=config.evaluate.seed,
        tune_tasks=tune,
        episodes=config.algo.get("episodes_per_trial", 1),
    )
    name = config.algorithm + (" (mode)" if learner.get("actions") == "mode" else "")
    rows[name] = {"mean": learner["total_return"], "ci95": learner["total_return_ci95"]}
    return {
        "split": split,
        "env": family.spec.name,
        "num_tasks": config.evaluate.num_tasks,
        "setting": _setting(family, config),
        "strategies": rows,
    }


def _setting(family: Family, config: RunConfig) -> str:
    if family.spec.name == "bandit":
        return f"{family.config.num_pulls}, {family.config.num_arms}"
    return str(config.algo.get("episodes_per_trial", 1))


def extra_records(extras: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Per-task extras ([..., N] tensors) as mean and 95% interval over tasks."""
    out: dict[str, Any] = {}
    for key, value in extras.items():
        v = value.float()
        n = v.shape[-1]
        sd = v.std(-1, unbiased=True) if n > 1 else torch.zeros_like(v.mean(-1))
        out[key] = v.mean(-1).tolist()
        out[f"{key}_ci95"] = (1.96 * sd / math.sqrt(n)).tolist()
    return out


def write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1))


def load_classical(run: Run) -> dict[str, dict[str, Any]]:
    """Classical-baseline records of a run by split (bandit and MDP runs)."""
    return {
        p.stem: json.loads(p.read_text()) for p in sorted(run.eval_dir.glob("classical/*.json"))
    }


def load_results(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    """All eval JSON files of a run: {split: {learner: record}}."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run.eval_dir.glob("*.json")):
        record = json.loads(path.read_text())
        results.setdefault(record["split"], {})[record["algorithm"]] = record
    order = {"train": 0, "test": 1}  # train beside test, in that order
    return dict(sorted(results.items(), key=lambda kv: order.get(kv[0], 2)))


def format_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Plain-text table: one row per adaptation step, one column per learner and split
    (plus the mean episode length of the run's learner where it is recorded)."""
    lines = []
    for split, learners in results.items():
        names = list(learners)
        first = learners[names[0]]
        lines.append(f"split={split}  tasks={first['num_tasks']}  env={first['env']}")
        lengths = "mean_episode_length" in first
        header = f"{first['x_label']:>16} " + " ".join(f"{n:>20}" for n in names)
        lines.append(header + (f" {'episode length':>16}" if lengths else ""))
        for i, x in enumerate(first["x"]):
            cells = [
                f"{learners[n]['mean_return'][i]:9.2f} ± {learners[n]['ci95'][i]:6.2f}  "
                for n in names
            ]
            row = f"{x:>16} " + " ".join(f"{c:>20}" for c in cells)
            if lengths:
                row += f" {first['mean_episode_length'][i]:16.2f}"
            lines.append(row)
        if "total_return" in first:
            lines.append(
                f"{'total per trial':>16} "
                + " ".join(
                    f"{learners[n]['total_return']:9.2f} ± "
                    f"{learners[n]['total_return_ci95']:6.2f}  "
                    for n in names
                    if "total_return" in learners[n]
                )
            )
        lines.append("")
    return "\n".join(lines)
