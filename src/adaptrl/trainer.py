"""The meta-training loop shared by all algorithms: tasks, progress, logging, checkpoints, resume.

Algorithm files hold only their maths; everything about the run lives here.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm import tqdm

from adaptrl.algos import algo_config, make_algorithm
from adaptrl.config import RunConfig
from adaptrl.envs import Family, env_config
from adaptrl.errors import ConfigError
from adaptrl.runs import MetricsLog, Run


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device '{name}' is not a torch device (use cpu or cuda)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but CUDA is not available; use --device cpu")
    return device


def build_learner(
    config: RunConfig, seed: int | None = None
) -> tuple[Family, Any, torch.Generator]:
    """Family, algorithm and the generator that drives all of its randomness."""
    device = resolve_device(config.train.device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    spec, env_cfg = env_config(config.env)
    family = Family(spec, env_cfg, spec.tasks_cls(env_cfg))
    generator = torch.Generator(device=device)
    generator.manual_seed(config.train.seed if seed is None else seed)
    torch.manual_seed(config.train.seed if seed is None else seed)  # parameter initialisation
    algo = make_algorithm(
        config.algorithm, algo_config(config.algorithm, config.algo), family, device, generator
    )
    return family, algo, generator


class Trainer:
    """Runs ``algo.meta_train_step`` on fresh training tasks, resuming from the last checkpoint."""

    def __init__(self, run: Run, config: RunConfig, resume: bool = False) -> None:
        self.run, self.config = run, config
        self.family, self.algo, self.generator = build_learner(config)
        self.iteration = 0
        self.elapsed_s = 0.0
        """Training wall time of all sessions so far (a resumed run keeps counting)."""
        if resume:
            state = run.load_checkpoint(required=False)
            if state is not None:
                self.algo.load_state_dict(state["algorithm"])
                self.generator.set_state(state["generator"])
                self.iteration = int(state["iteration"])
                self.elapsed_s = float(state.get("elapsed_s", 0.0))

    def checkpoint(self) -> None:
        self.run.save_checkpoint(
            {
                "iteration": self.iteration,
                "algorithm": self.algo.state_dict(),
                "generator": self.generator.get_state(),
                "elapsed_s": self.elapsed_s,
            }
        )

    def train(self, progress: bool = True) -> dict[str, float]:
        cfg = self.config.train
        log = MetricsLog(self.run, self.iteration)
        metrics: dict[str, float] = {}
        bar = tqdm(
            total=cfg.num_iterations,
            initial=self.iteration,
            disable=not progress,
            desc=f"{self.config.algorithm} {self.family.spec.name}",
            unit="it",
        )
        start = time.perf_counter() - self.elapsed_s
        try:
            while self.iteration < cfg.num_iterations:
                tasks = self.family.tasks.sample(
                    self.algo.config.meta_batch_size, "train", self.generator
                )
                metrics = self.algo.meta_train_step(tasks)
                self.iteration += 1
                if cfg.eval_every and self.iteration % cfg.eval_every == 0:
                    metrics.update(self._held_out_metrics())
                self.elapsed_s = time.perf_counter() - start
                metrics["time/elapsed_s"] = self.elapsed_s
                if self.iteration % cfg.log_every == 0:
                    log.log(self.iteration, metrics)
                if (
                    self.iteration % cfg.checkpoint_every == 0
                    or self.iteration == cfg.num_iterations
                ):
                    self.checkpoint()
                bar.update(1)
                bar.set_postfix(
                    {
                        k.split("/")[-1]: f"{v:.3g}"
                        for k, v in metrics.items()
                        if k.startswith("adapt/")
                    }
                )
        finally:
            bar.close()
            log.close()
        return metrics

    def _held_out_metrics(self) -> dict[str, float]:
        from adaptrl.evaluation import adaptation_returns

        returns = adaptation_returns(self.algo, self.family, "test", self.config.evaluate)
        return {f"eval/test_return_{k}": float(r.mean()) for k, r in enumerate(returns)}
