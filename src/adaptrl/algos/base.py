"""The learner protocol: all that the trainer, evaluation and deployment know of a meta-learner.

A learner is built from its config, a task ``Family`` (tasks and spaces only: it never builds or
steps an env), a ``Sampler`` and a device. It decides what it samples in each iteration (on-policy
learners draw fresh tasks; off-policy ones keep per-task buffers) and names its own reference
learners for evaluation. Nothing above this layer names an algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from adaptrl.config import OLD_RUN_REFERENCES, EvalConfig, build_dataclass
from adaptrl.envs import Family, Tasks
from adaptrl.errors import ConfigError
from adaptrl.rng import derive_seed


@dataclass
class TrainContext:
    """What the trainer hands a learner each iteration."""

    iteration: int
    """Iterations completed before this one."""
    run_seed: int
    generator: torch.Generator
    """Draws the iteration's tasks (checkpointed with the run, so resume continues the stream)."""

    def seed(self, *phase: int) -> int:
        """Rollout seed of this iteration and phase (e.g. inner step k): (run seed, iteration,
        phase) -> one int64, so the same run gives the same trajectories on every back-end."""
        return derive_seed(self.run_seed, self.iteration, *phase)


@dataclass
class Adaptation:
    """Result of adapting to n tasks: the return after each adaptation point and the adapted
    agent(s). ``returns``: [X + 1, n] (gradient steps for MAML, episodes of a trial for RL²)."""

    returns: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-task extras ([..., n]) such as episode lengths or the total trial return."""
    policies: Any = None
    """Whatever deploys the adaptation: ``policy(i)`` for task i (learner-specific)."""
    trajectories: list[Any] = field(default_factory=list)
    """The rollouts behind ``returns``, in order: one per adaptation point (gradient steps), or
    one whose episodes are the adaptation points (a trial); families' metrics read them."""


@dataclass(frozen=True)
class Reference:
    """A reference learner evaluation runs beside the trained one on the same tasks."""

    description: str
    algo_overrides: dict[str, Any] | None = None
    """Train a variant of the run's config with these ``algo`` values (None: leave untrained)."""
    adapts: bool = True
    """False: evaluated at the un-adapted point only and held flat across the learner's
    adaptation points (a policy deployed without adaptation). A learner that adapts in memory
    makes its non-adapting reference memoryless instead (``algo_overrides``)."""
    env_overrides: dict[str, Any] | None = None
    """``env`` values of its variant, e.g. ``{"task_in_obs": True}`` for an oracle (offered
    only where the family names ``task_features``)."""
    added_later: bool = False
    """Named after runs existed that never trained it: their evaluations leave it out
    (``OLD_RUN_REFERENCES``), so re-evaluating an old run trains nothing new."""
    trained_as: str | None = None
    """Share another reference's training (its RUN/baselines/ folder), e.g. MAML's
    domain-randomised policy is the 'pretrained' one before fine-tuning."""


@runtime_checkable
class Learner(Protocol):
    x_label: ClassVar[str]
    """What the adaptation axis counts ("gradient steps", "episodes")."""
    EvalSettings: ClassVar[type]
    """The learner's own evaluation settings: a frozen dataclass whose fields are keys of the
    ``evaluate`` section beside the protocol's (MAML: step sizes; RL²: sampled or most likely
    actions). It validates them in ``__post_init__``; evaluation never names one."""

    @property
    def trial_episodes(self) -> int:
        """Episodes of one task its adaptation runs through in one go (RL²'s trial; 1 for a
        learner whose adaptation points are fresh batches): classical strategies get as many."""
        ...

    def train_iteration(self, ctx: TrainContext) -> dict[str, float]: ...

    def meta_test(self, tasks: Tasks, cfg: EvalConfig, seed: int) -> Adaptation: ...

    def meta_test_steps(self, cfg: EvalConfig, horizon: int) -> int:
        """Env steps per task that ``meta_test`` holds in memory at once (all its rollouts):
        what evaluation sizes itself by before any work."""
        ...

    def tune_for_reference(
        self, cfg: EvalConfig, score: Callable[[EvalConfig], float]
    ) -> EvalConfig:
        """The settings this learner adapts with when it serves as an adapting *reference*: a
        schedule tuned for the meta-learner can make a plain policy diverge, and a diverging
        reference would flatter meta-learning. ``score(cfg)`` is the mean return after
        adapting on a separate draw of training tasks (never the reported split). Returns
        ``cfg`` where there is nothing to tune."""
        ...

    def evaluation_record(self, cfg: EvalConfig, for_reference: bool) -> dict[str, Any]:
        """What its evaluation JSON records of its own settings (e.g. the step sizes used, and,
        ``for_reference``, whether ``tune_for_reference`` tuned them), so a reader can judge
        the comparison."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def bulk_state(self) -> dict[str, torch.Tensor]:
        """Large state that only resuming needs (an off-policy learner's replay buffers), as
        contiguous views: the trainer streams it to its own file beside each last checkpoint,
        never copying it (empty for on-policy learners)."""
        ...

    def load_bulk_state(self, arrays) -> None:
        """Take back ``bulk_state`` from (name, tensor) pairs, one at a time."""
        ...

    @classmethod
    def references(cls) -> dict[str, Reference]: ...


def eval_settings(learner: Any, cfg: EvalConfig) -> Any:
    """The learner's own settings of ``cfg``, typed: a resolved config holds its
    ``EvalSettings`` already; an ``EvalConfig`` made in code may leave them out (defaults) or
    give them as a dict."""
    settings_cls = learner.EvalSettings
    own = cfg.adaptation
    if isinstance(own, settings_cls):
        return own
    if dataclasses.is_dataclass(own):
        own = dataclasses.asdict(own)
    return build_dataclass(settings_cls, own or {}, "evaluate")


def available_references(learner: Learner, family: Family) -> dict[str, Reference]:
    """The references the learner names that the family can provide (an oracle needs
    ``EnvSpec.task_features``)."""
    return {
        name: ref
        for name, ref in type(learner).references().items()
        if not (ref.env_overrides or {}).get("task_in_obs") or family.spec.task_features
    }


def chosen_references(learner: Learner, family: Family, names: tuple[str, ...]):
    """``evaluate.references`` (empty: all available), or one line naming what is not."""
    available = available_references(learner, family)
    if names == (OLD_RUN_REFERENCES,):
        return {n: r for n, r in available.items() if not r.added_later}
    for name in names:
        if name not in available:
            named = type(learner).references()
            why = (
                f"env '{family.name}' cannot hand its task to a policy (no task_features)"
                if name in named
                else f"{type(learner).__name__} names no such reference"
            )
            raise ConfigError(
                f"evaluate.references: '{name}' is not available: {why}; available: "
                f"{', '.join(available)}"
            )
    return {n: r for n, r in available.items() if not names or n in names}
