"""The meta-training loop shared by all learners: progress, logging, held-out evaluation,
checkpoints (last, best, periodic), resume. It knows learners only through ``train_iteration``
and state dicts.
"""

from __future__ import annotations

import copy
import time

import torch
from tqdm import tqdm

from adaptrl.algos.base import TrainContext
from adaptrl.build import Built, build, resolve_device, restore_learner
from adaptrl.config import RunConfig
from adaptrl.errors import Interrupted
from adaptrl.protocol import VALIDATION_OFFSET, meta_test
from adaptrl.runs import MetricsLog, Run, load_arrays, save_arrays
from adaptrl.sampling import Sampler

__all__ = ["Trainer", "resolve_device"]


class Trainer:
    """Runs ``learner.train_iteration`` until ``train.num_iterations``, resuming from the last
    checkpoint. Owns the sampler it builds (``close()``, or use it as a context manager)."""

    def __init__(
        self, run: Run, config: RunConfig, resume: bool = False, sampler: Sampler | None = None
    ) -> None:
        self.run, self.config = run, config
        self._owns_sampler = sampler is None
        self.built: Built = build(config, sampler=sampler)
        self.family, self.learner = self.built.family, self.built.learner
        self.generator = torch.Generator().manual_seed(config.train.seed)  # draws the tasks
        self.iteration = 0
        self.elapsed_s = 0.0
        """Training wall time of all sessions so far (a resumed run keeps counting)."""
        self.env_steps = 0
        """Env steps sampled by training (all sessions; validation rollouts not counted): the
        x axis of sample efficiency, logged as ``time/env_steps``."""
        self.validation_s = 0.0
        """The part of ``elapsed_s`` spent on periodic validation (``train.eval_every``): a
        reference trained for the learner's time gets the rest, the time spent learning."""
        self.best: dict[str, float] = {}
        """Iteration and validation score of checkpoints/best.pt (empty until an evaluation)."""
        if resume:
            try:
                self._resume()
            except BaseException:  # e.g. a checkpoint that does not fit: stop our workers
                self.close()
                raise

    def _resume(self) -> None:
        state = self.run.resume_state()
        if state is not None:
            restore_learner(self.learner, state, str(self.run.checkpoint_path))
            if state.get("bulk"):  # e.g. replay buffers, in their own file
                self.learner.load_bulk_state(
                    load_arrays(self.run.checkpoint_path.parent / state["bulk"])
                )
            self.generator.set_state(state["generator"])
            self.iteration = int(state["iteration"])
            self.elapsed_s = float(state.get("elapsed_s", 0.0))
            self.validation_s = float(state.get("validation_s", 0.0))
            self.env_steps = int(state.get("env_steps", 0))
            self.best = dict(state.get("best", {}))

    algo = property(lambda self: self.learner)  # the pre-protocol name

    def close(self) -> None:
        if self._owns_sampler:
            self.built.close()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self) -> dict:
        return {
            "iteration": self.iteration,
            "algorithm": self.learner.state_dict(),
            "generator": self.generator.get_state(),
            "elapsed_s": self.elapsed_s,
            "validation_s": self.validation_s,
            "env_steps": self.env_steps,
            "best": dict(self.best),
        }

    def checkpoint(self, state: dict | None = None) -> None:
        """last.pt, and the learner's bulk state (replay buffers) streamed to a file of its own
        first: last.pt names it, so a kill between the two leaves the previous pair intact."""
        state = self._state() if state is None else state
        bulk = self.learner.bulk_state()
        folder = self.run.checkpoint_path.parent
        if bulk:
            state = {**state, "bulk": f"last.bulk.{int(state['iteration'])}"}
            save_arrays(folder / state["bulk"], bulk)
        self.run.save_checkpoint(state)
        for old in folder.glob("last.bulk.*"):
            if old.name != state.get("bulk") and not old.name.startswith("."):
                old.unlink(missing_ok=True)

    def _keep(self, metrics: dict[str, float]) -> None:
        """checkpoints/best.pt when the validation score improves; iter_N.pt every keep_every."""
        score = metrics.get("eval/score")
        if score is not None and score > self.best.get("score", -float("inf")):
            self.best = {"iteration": float(self.iteration), "score": float(score)}
            self.run.save_extra_checkpoint(self.run.best_path, self._state())
        keep = self.config.train.keep_every
        if keep and self.iteration % keep == 0:
            self.run.save_extra_checkpoint(self.run.periodic_path(self.iteration), self._state())

    def train(self, progress: bool = True, label: str | None = None) -> dict[str, float]:
        cfg = self.config.train
        log = MetricsLog(self.run, self.iteration)
        metrics: dict[str, float] = {}
        bar = tqdm(
            total=cfg.num_iterations,
            initial=self.iteration,
            disable=not progress,
            desc=label or f"{self.config.algorithm} {self.family.name}",
            unit="it",
        )
        start = time.perf_counter() - self.elapsed_s
        unsaved: dict | None = None  # the last completed iteration's state, when not on disk
        try:
            while self.iteration < cfg.num_iterations and not self.out_of_time():
                ctx = TrainContext(self.iteration, cfg.seed, self.generator)
                sampled_before = self.built.sampler.env_steps
                metrics = self.learner.train_iteration(ctx)
                self.env_steps += self.built.sampler.env_steps - sampled_before
                self.iteration += 1
                if cfg.eval_every and self.iteration % cfg.eval_every == 0:
                    before = time.perf_counter()
                    metrics.update(self._validation_metrics())
                    self.validation_s += time.perf_counter() - before
                self.elapsed_s = time.perf_counter() - start
                metrics["time/elapsed_s"] = self.elapsed_s
                metrics["time/env_steps"] = float(self.env_steps)
                self._keep(metrics)
                if self.iteration % cfg.log_every == 0:
                    log.log(self.iteration, metrics)
                if (
                    self.iteration % cfg.checkpoint_every == 0
                    or self.iteration == cfg.num_iterations
                    or self.out_of_time()
                ):
                    self.checkpoint()
                    unsaved = None
                else:  # a copy: the learner's tensors change in place during the next iteration
                    unsaved = copy.deepcopy(self._state())  # bulk state excluded: see checkpoint
                bar.update(1)
                bar.set_postfix(
                    {
                        k.split("/")[-1]: f"{v:.3g}"
                        for k, v in metrics.items()
                        if k.startswith("adapt/")
                    }
                )
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI's handler
            raise self._interrupted(unsaved) from None
        except BaseException:  # e.g. a user's env that raises: keep what was completed
            if unsaved is not None:
                self.checkpoint(unsaved)
            raise
        finally:
            bar.close()
            log.close()
        return metrics

    def out_of_time(self) -> bool:
        """``train.max_seconds`` of training wall time spent (all sessions together)."""
        limit = self.config.train.max_seconds
        return bool(limit) and self.elapsed_s >= limit

    def _interrupted(self, unsaved: dict | None) -> Interrupted:
        """Abandon the iteration in flight and save the last completed one atomically: Ctrl-C
        once fell back to the last periodic checkpoint, up to checkpoint_every - 1 iterations
        behind (issue 26)."""
        if unsaved is not None:
            self.checkpoint(unsaved)
        state = self.run.load_checkpoint(required=False)
        if state is None:
            return Interrupted("interrupted before the first iteration was completed")
        return Interrupted(
            f"interrupted; {self.run.checkpoint_path} holds iteration {int(state['iteration'])}; "
            f"resume with 'adaptrl train --resume {self.run.path}'"
        )

    def _validation_metrics(self) -> dict[str, float]:
        """Adaptation on the validation tasks: a fixed draw of ``train.validation_split`` with its
        own seed. With the default "train" split the best iteration is chosen without ever
        seeing a held-out task, so ``evaluate --checkpoint best`` is as unbiased as ``last``
        (with "test" it is optimistic: selected on the distribution it reports). The score is
        the return at the last adaptation point."""
        split = self.config.train.validation_split
        returns = meta_test(
            self.learner, self.family, split, self.config.evaluate, seed_offset=VALIDATION_OFFSET
        )["returns"]
        metrics = {f"eval/{split}_return_{k}": float(r.mean()) for k, r in enumerate(returns)}
        metrics["eval/score"] = float(returns[-1].mean())
        return metrics
