"""The registry of task families: ``register_env`` adds one, ``make_family`` builds one, and
``Family`` is what learners and samplers hold (tasks plus a factory of batched envs).

Entries may name their classes lazily as ``"module:attribute"`` strings (as gymnasium's
registration does), so ``import adaptrl`` never imports an optional simulator such as mujoco:
the module is imported when the family is first built. The built-in catalogue is registered by
``adaptrl.envs``; users register theirs with ``register_env`` or ``gym_family``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium as gym
import torch

from adaptrl.config import build_dataclass
from adaptrl.envs.base import BatchedMetaEnv, SingleTaskEnv, TaskDistribution, Tasks
from adaptrl.envs.oracle import TaskInObservation, task_feature_size, with_task_features
from adaptrl.errors import ConfigError


def resolve(ref: Any) -> Any:
    """``"package.module:Name"`` -> the object; anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        extra = {"mujoco": "mujoco", "ray": "ray", "jax": "xland", "xminigrid": "xland"}.get(
            (exc.name or "").split(".")[0]
        )
        if extra:
            raise ConfigError(
                f"'{exc.name}' is not installed; install it with: pip install 'adaptrl[{extra}]'"
            ) from None
        raise
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ClassicalStrategies:
    """What a family declares to have strategies that need no meta-training (bandit and MDP
    algorithms, PID and adaptive controllers, recommender heuristics) run on the very tasks a
    learner is evaluated on, beside it."""

    run: Callable[..., dict[str, dict[str, Any]]]
    """``run(family, tasks, seed, tune_tasks, episodes) -> {strategy: row}``, each row a
    ``stats.summary_row`` (``mean``, ``ci95``, ...) plus the strategy's tuned settings; tuned on
    ``tune_tasks`` (training tasks), never on ``tasks``."""
    unit: str = "trial"
    """What a row's ``mean`` measures: the total reward of a ``trial`` (bandits, MDPs) or the
    return of an ``episode`` (controllers that do not learn across episodes)."""
    setting_label: str = "n"
    """Header of the setting column in Duan et al.'s layout ("n, k": pulls and arms)."""
    setting: Callable[[Any, int], str] | None = None
    """``setting(family, episodes)`` -> the row's label (default: episodes per trial)."""

    def __post_init__(self) -> None:
        if self.unit not in ("trial", "episode"):
            raise ConfigError(f"classical unit must be 'trial' or 'episode', got '{self.unit}'")

    def label(self, family: Any, episodes: int) -> str:
        return self.setting(family, episodes) if self.setting else str(episodes)


@dataclass(frozen=True)
class EnvSpec:
    """How to build one task family. Classes may be given as ``"module:Class"`` strings."""

    name: str
    config_cls: Any
    tasks_cls: Any
    env_cls: Any
    description: str = ""
    classical: Any = None
    """Optional ``ClassicalStrategies`` (or ``"module:NAME"`` naming one, imported when first
    used), evaluated on the same tasks and written beside the learner."""
    metrics: Any = None
    """Optional ``"module:function"``: ``fn(trajectories, family, tasks) -> {name: [E, B]}``, a
    metric of every episode (e.g. the drone's RMS position error), recorded at each adaptation
    point."""
    trace_labels: tuple[str, str] | None = None
    """Names of observation dims 0 and 1 when they are a position worth drawing: evaluation then
    saves the path before and after adapting to the hardest task (largest first parameter)."""
    task_features: tuple[str, ...] = ()
    """Task keys an oracle may see (appended to its observations, ``env.task_in_obs``); empty:
    the family cannot hand its task to a policy, so it has no oracle reference."""
    dense_reward: Any = None
    """Optional ``"module:function"``: ``fn(next_obs [N, ·], tasks (one row each), family) ->
    [N]``, the dense reward a sparse family's reward is cut from. A learner may train its critic
    on it while its context sees only the env's reward (oyster's sparse point robot)."""

    def resolved(self) -> EnvSpec:
        return EnvSpec(
            self.name,
            resolve(self.config_cls),
            resolve(self.tasks_cls),
            resolve(self.env_cls),
            self.description,
            self.classical,
            self.metrics,
            self.trace_labels,
            self.task_features,
            self.dense_reward,
        )


_REGISTRY: dict[str, EnvSpec] = {}
_PLUGIN_MODULES: dict[str, ModuleType] = {}


def add_plugin_module(module: ModuleType) -> None:
    """Note a module that registers families from outside any installed package (``--import``):
    Ray actors run in other directories or on other machines, so it is shipped to them."""
    _PLUGIN_MODULES[module.__name__] = module


def plugin_modules() -> list[ModuleType]:
    return list(_PLUGIN_MODULES.values())


def classical_strategies(spec: EnvSpec) -> ClassicalStrategies | None:
    """The family's classical strategies (None: it declares none), imported if named lazily."""
    found = resolve(spec.classical)
    if found is not None and not isinstance(found, ClassicalStrategies):
        raise ConfigError(
            f"env '{spec.name}': classical must be a ClassicalStrategies, not "
            f"{type(found).__name__}"
        )
    return found


def register_env(spec: EnvSpec) -> EnvSpec:
    """Make a task family available by name to configs, the CLI and the env checker, and each
    of its tasks to ``gymnasium.make(f"adaptrl/{name}-v0", task=... or split=..., index=...)``."""
    _REGISTRY[spec.name] = spec
    gym_id = gym_id_of(spec.name)
    gym.registry.pop(gym_id, None)  # re-registering a family replaces its id quietly
    gym.register(
        gym_id, entry_point="adaptrl.envs.registry:make_task_env", kwargs={"family": spec.name}
    )
    return spec


def gym_id_of(family: str) -> str:
    return f"adaptrl/{family}-v0"


def make_task_env(
    family: str,
    task: dict[str, Any] | None = None,
    split: str = "test",
    index: int = 0,
    seed: int = 0,
    **config: Any,
) -> SingleTaskEnv:
    """One task of a family as a plain ``gymnasium.Env``: ``task`` gives its parameters (e.g.
    ``{"goal": [0.3, -0.2]}``), or else task ``index`` of ``split`` drawn with ``seed``."""
    fam = make_family(family, **config)
    drawn = fam.tasks.sample(index + 1, split, torch.Generator().manual_seed(seed))
    if task is None:
        one = {k: v[index : index + 1] for k, v in drawn.items()}
    else:
        unknown = set(task) - set(drawn)
        if unknown:
            raise ConfigError(
                f"task keys {sorted(unknown)} are not parameters of '{family}' "
                f"(it has: {', '.join(drawn)})"
            )
        one = {
            k: torch.as_tensor(task[k], dtype=v.dtype).reshape(v[:1].shape) if k in task else v[:1]
            for k, v in drawn.items()
        }
    return fam.make_single_task_env(one)


def registered_envs() -> dict[str, EnvSpec]:
    return dict(_REGISTRY)


def env_config(section: dict[str, Any]) -> tuple[EnvSpec, Any]:
    """Validate an ``env:`` config section (``name`` plus the family's own keys)."""
    values = dict(section)
    name = values.pop("name", None)
    task_in_obs = values.pop("task_in_obs", False)  # any family's key: see ``Family``
    if name not in _REGISTRY:
        raise ConfigError(
            f"unknown env '{name}'; registered envs: {', '.join(sorted(_REGISTRY))} (a family "
            "of your own: adaptrl --import MODULE ...)"
        )
    spec = _REGISTRY[name].resolved()
    if task_in_obs is not False and (task_in_obs is not True or not spec.task_features):
        raise ConfigError(
            f"env.task_in_obs must be true or false, and env '{name}' must name task features "
            f"to show (it names: {', '.join(spec.task_features) or 'none'})"
        )
    if "name" in {f.name for f in dataclasses.fields(spec.config_cls)}:
        values["name"] = name  # configs that look themselves up by name (gym_family)
    return spec, build_dataclass(spec.config_cls, values, "env")


@dataclass
class Family:
    """A task distribution plus a factory for batched environments of the same family.

    Picklable (spec, config): worker processes rebuild the same family from it.
    """

    spec: EnvSpec
    config: Any
    tasks: TaskDistribution
    task_in_obs: bool = False
    """The oracle's view: every observation carries the task's ``spec.task_features``."""

    _spaces: tuple[gym.Space, gym.Space] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def external(self) -> bool:
        """True when rows are external simulators (run them in worker processes)."""
        return bool(getattr(self.spec.env_cls, "external", False))

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """(single observation space, single action space), without stepping anything."""
        if self._spaces is None:
            obs_space, act_space = self.spec.env_cls.spaces(self.config)
            if self.task_in_obs:
                obs_space = with_task_features(obs_space, self._task_feature_size())
            self._spaces = obs_space, act_space
        return self._spaces

    def _task_feature_size(self) -> int:
        sample = self.tasks.sample(1, "train", torch.Generator().manual_seed(0))
        return task_feature_size(sample, self.spec.task_features)

    @property
    def observation_space(self) -> gym.Space:
        return self.spaces()[0]

    @property
    def action_space(self) -> gym.Space:
        return self.spaces()[1]

    def make_env(self, num_envs: int, device: torch.device | str = "cpu") -> BatchedMetaEnv:
        env = self.spec.env_cls(num_envs, self.config, device=device)
        if self.task_in_obs:
            size = self._task_feature_size()
            return TaskInObservation(env, self.spec.task_features, size)
        return env

    def make_single_task_env(
        self, task: Tasks, device: torch.device | str = "cpu"
    ) -> SingleTaskEnv:
        """One task (leading dimension 1) as a plain ``gymnasium.Env``."""
        return SingleTaskEnv(self.make_env(1, device), task)


def make_family(name: str, **config: Any) -> Family:
    """``make_family("navigation2d", horizon=50)`` -> tasks + env factory."""
    spec, cfg = env_config({"name": name, **config})
    return Family(spec, cfg, spec.tasks_cls(cfg), bool(config.get("task_in_obs")))
