"""Use a trained run outside adaptrl's tools: load it, adapt, save the adapted policy to one
file, and run it in a plain gymnasium loop.

- ``load_run(path)`` -> ``LoadedRun`` (config, family, learner at a checkpoint).
- ``save_policy(policy, path)`` writes a ``torch.export`` program: ``load_policy(path)`` gives it
  back, and plain ``torch.export.load(path).module()`` runs it without adaptrl installed.
  A Gaussian policy is saved as ``obs -> mean action``; an RL² controller as its one-step
  function (its memory is an explicit input and output) and comes back as a controller; a
  PEARL controller as its actor ``(obs ++ z) -> (mean, log-std)``, with its context encoder
  ``transitions [1, N, d] -> (mean, variance)`` a second program inside the same file, and comes
  back as a controller that infers z from the context it gathers.
- ``collect_episodes(env, policy, n)`` gathers the episodes MAML adapts from in any env.
"""

from __future__ import annotations

import base64
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from adaptrl.build import Built, build, restore_learner, run_config, with_runtime
from adaptrl.config import RunConfig
from adaptrl.controllers import ContextController, MeanActionPolicy, RecurrentController
from adaptrl.distributions import TanhGaussian
from adaptrl.envs import Family, SingleTaskEnv, make_task_env
from adaptrl.errors import RunError
from adaptrl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
from adaptrl.rng import derive_seed
from adaptrl.runs import Run

__all__ = ["LoadedRun", "collect_episodes", "load_policy", "load_run", "save_policy"]

_META = "adaptrl.json"
_ENCODER = "adaptrl_encoder.pt2.b64"  # PEARL's encoder program, inside the actor's file


@dataclass
class LoadedRun:
    """A trained run, ready to adapt: ``learner`` holds the checkpoint's parameters."""

    run: Run
    config: RunConfig
    family: Family
    learner: Any
    iteration: int
    built: Built

    def task_env(
        self,
        task: dict[str, Any] | None = None,
        split: str = "test",
        index: int = 0,
        seed: int = 0,
    ) -> SingleTaskEnv:
        """One task of the run's family, with the run's env settings, as a plain gymnasium env:
        ``task`` gives its parameters, or else task ``index`` of ``split`` drawn with ``seed``
        (the same as ``gymnasium.make("adaptrl/<family>-v0", ...)`` with the run's settings)."""
        settings = {k: v for k, v in self.config.env.items() if k != "name"}
        return make_task_env(self.family.name, task, split, index, seed, **settings)

    def close(self) -> None:
        self.built.close()

    def __enter__(self) -> LoadedRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_run(path: str | Path, checkpoint: str = "last", device: str = "cpu") -> LoadedRun:
    """Config, family and learner of a run at ``checkpoint`` (last, best, an iteration kept by
    ``train.keep_every``, or a file), in-process and on ``device``."""
    run = Run.open(path)
    config = with_runtime(run_config(run), device, backend="inprocess")
    state = run.load_checkpoint(which=checkpoint)
    built = build(config)
    restore_learner(built.learner, state, str(run.checkpoint_file(checkpoint)))
    return LoadedRun(run, config, built.family, built.learner, int(state["iteration"]), built)


def save_policy(
    policy: nn.Module | RecurrentController | ContextController, path: str | Path
) -> Path:
    """Write ``policy`` (a Gaussian policy module, an RL² or a PEARL controller) as one exported
    file."""
    path = Path(path)
    dynamic = None
    extra: dict[str, str] = {}
    if isinstance(policy, ContextController):
        module, example, dynamic, meta, extra = _context_parts(policy)
    elif isinstance(policy, RecurrentController):
        step = policy.step
        example = (
            torch.zeros(1, step.policy.obs_dim),
            policy.prev_action.new_zeros(policy.prev_action.shape),
            torch.zeros(1),
            torch.zeros(1),
            torch.zeros(1),
            torch.zeros(1, step.policy.obs_dim),
            torch.zeros(policy.state_steps or 2, 1, policy.state_size),  # a cache: any length
        ) + ((torch.zeros(1, step.policy.obs_dim),) if policy.terminal_obs_input else ())
        meta = {
            "kind": "recurrent",
            "state_size": policy.state_size,
            "budget": policy.budget,
            "state_steps": policy.state_steps,
            "terminal_obs_input": policy.terminal_obs_input,
        }
        # a transformer's cache grows by a step per call: its length is a dynamic dimension
        if policy.state_steps == 0:
            dynamic = (None,) * 6 + ({0: torch.export.Dim.AUTO},)
            dynamic += (None,) * (len(example) - 7)
        if policy.continuous:
            meta["action_std"] = policy.action_std.tolist()
        module = step
    else:
        if isinstance(policy, (GaussianMLPPolicy, CategoricalMLPPolicy)):
            policy = MeanActionPolicy(policy)
        obs_dim = _first_linear(policy).in_features
        example, dynamic = (torch.zeros(2, obs_dim),), ({0: torch.export.Dim.AUTO},)
        meta, module = {"kind": "action"}, policy
    with warnings.catch_warnings():  # nn.GRU's flat-weights notice during tracing
        warnings.simplefilter("ignore", UserWarning)
        program = torch.export.export(module.eval(), example, dynamic_shapes=dynamic)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written whole, then renamed: never half a file; torch warns about names not ending in .pt2
    tmp = path.with_name(f".{path.stem}.tmp.pt2")
    try:
        torch.export.save(program, str(tmp), extra_files={_META: json.dumps(meta), **extra})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _EncoderPosterior(nn.Module):
    """The encoder's ``posterior`` as a forward, so that ``torch.export`` can trace it."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder.posterior(context)


class _LoadedActor(nn.Module):
    """An exported PEARL actor with its (stateless) action distribution back."""

    distribution = TanhGaussian()

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.program(x)


class _LoadedEncoder(nn.Module):
    """An exported context encoder answering ``posterior`` as the trained one does."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def posterior(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.program(context)


def _first_linear(module: nn.Module) -> nn.Linear:
    """The input layer: its width is the input size an export example needs."""
    return next(m for m in module.modules() if isinstance(m, nn.Linear))


def _context_parts(policy: ContextController):
    """PEARL's controller as (actor module, its example, dynamic shapes, meta, extra files):
    the encoder is exported here and travels, base64, as an extra file of the actor's."""
    actor_in = _first_linear(policy.actor).in_features
    context_in = _first_linear(policy.encoder).in_features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        encoder = torch.export.export(
            _EncoderPosterior(policy.encoder).eval(),
            (torch.zeros(1, 3, context_in),),  # N > 1 in the example: any N >= 1 at run time
            dynamic_shapes=({1: torch.export.Dim.AUTO},),
        )
    blob = io.BytesIO()
    torch.export.save(encoder, blob)
    meta = {
        "kind": "context",
        "latent": policy.latent,
        "low": policy.low.tolist(),
        "high": policy.high.tolist(),
        "context_next_obs": policy.context_next_obs,
        "exploration": policy.exploration,
        "deterministic": policy.deterministic,
        "infer": policy.infer,
    }
    extra = {_ENCODER: base64.b64encode(blob.getvalue()).decode("ascii")}
    return policy.actor, (torch.zeros(2, actor_in),), ({0: torch.export.Dim.AUTO},), meta, extra


def load_policy(path: str | Path, mode: bool = False, seed: int = 0):
    """A policy saved by ``save_policy``: an ``obs -> action`` module, an RL² controller
    (``mode``: take the most likely action instead of sampling), or a PEARL controller
    (``mode``: act deterministically even if it was saved sampling)."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"policy file '{path}' does not exist")
    extra = {_META: "", _ENCODER: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
        meta = json.loads(extra[_META])
        encoder = None
        if meta["kind"] == "context":
            blob = io.BytesIO(base64.b64decode(extra[_ENCODER]))
            encoder = torch.export.load(blob).module()
    except Exception as exc:
        raise RunError(
            f"'{path}' is not a policy saved by adaptrl.save_policy ({type(exc).__name__})"
        ) from None
    module = program.module()
    if meta["kind"] == "context":
        return ContextController(
            _LoadedActor(module),
            _LoadedEncoder(encoder),
            meta["latent"],
            torch.tensor(meta["low"]),
            torch.tensor(meta["high"]),
            meta["context_next_obs"],
            meta["exploration"],
            mode or meta["deterministic"],
            derive_seed(seed, 0),  # as PEARL.controller(seed=seed): the same z draws
            infer=meta["infer"],
        )
    if meta["kind"] == "recurrent":
        state_size = meta.get("state_size", meta.get("hidden_size"))  # older files: hidden_size
        return RecurrentController(
            module,
            state_size,
            meta["budget"],
            mode,
            seed,
            meta.get("action_std"),
            meta.get("state_steps", 1),
            meta.get("terminal_obs_input", False),
        )
    return module


def collect_episodes(
    env: Any, policy: nn.Module, num_episodes: int, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """Run a Gaussian or softmax policy (sampled actions, as MAML's inner loop needs) in any
    gymnasium env; returns what ``MAML.adapt_from_episodes`` takes."""
    gen = torch.Generator().manual_seed(seed)
    episodes = []
    for e in range(num_episodes):
        obs, _ = env.reset(seed=seed + e)
        rows: dict[str, list] = {"obs": [], "actions": [], "rewards": []}
        while True:
            with torch.no_grad():
                out = policy(torch.as_tensor(obs, dtype=torch.float32))
                dist = policy.distribution
                drawn = dist.draw(dist.params_of(out), gen)
                action = drawn.numpy() if dist.continuous else int(drawn)
            rows["obs"].append(np.asarray(obs, dtype=np.float32))
            rows["actions"].append(np.asarray(action))
            obs, reward, terminated, truncated, _ = env.step(action)
            rows["rewards"].append(float(reward))
            if terminated or truncated:
                break
        episodes.append({**{k: np.stack(v) for k, v in rows.items()}, "terminated": terminated})
    return episodes
