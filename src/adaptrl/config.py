"""Typed configs from YAML presets: dataclasses are the single source of truth.

Presets live in ``adaptrl/configs/*.yaml`` (shipped inside the package so that ``adaptrl train
PRESET`` works from an installed wheel, not only from a checkout). Unknown keys are rejected by
name, values are type-checked against the dataclass annotations, and each dataclass checks its own
invariants in ``__post_init__``.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from adaptrl.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class TrainConfig:
    """The meta-training loop owned by the Trainer (shared by all algorithms)."""

    num_iterations: int = 500
    """Meta-iterations (outer updates)."""
    seed: int = 0
    """Seeds the single torch.Generator that drives tasks, environments and action noise."""
    checkpoint_every: int = 25
    """Write an atomic checkpoint every this many iterations (and always at the end)."""
    log_every: int = 1
    """Write a metrics.csv / TensorBoard row every this many iterations."""
    device: str = "cpu"
    """Torch device for policies and the tensor-native environments ("cpu", "cuda")."""
    num_threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores)."""
    eval_every: int = 0
    """Adapt on the validation tasks every this many iterations, log it and keep the best
    iteration in checkpoints/best.pt (0 = never)."""
    validation_split: str = "train"
    """Split the validation tasks are drawn from (a fixed draw of their own seed). "train":
    new draws of training tasks, so keeping the best iteration never looks at the held-out
    split that ``adaptrl evaluate`` reports; any other split the family lists is accepted."""
    keep_every: int = 0
    """Also keep checkpoints/iter_N.pt every this many iterations (0 = keep only last and best)."""
    max_seconds: float = 0.0
    """Stop after the iteration that brings the training wall time (all sessions) to this many
    seconds, checkpointed; 0: no limit. A budget a user has (e.g. 3600 for one hour), and how a
    reference gets the same wall-clock time as the learner."""

    LEGACY_VALUES: ClassVar[dict[str, Any]] = {"validation_split": "test"}
    """Runs made before ``validation_split`` validated on held-out tasks (``build.run_config``)."""

    def __post_init__(self) -> None:
        _positive(self, "num_iterations", "checkpoint_every", "log_every")
        if self.eval_every < 0:
            raise ConfigError("train.eval_every must be >= 0 (0 = no periodic evaluation)")
        if self.keep_every < 0:
            raise ConfigError("train.keep_every must be >= 0 (0 = keep only last and best)")
        if self.num_threads < 0:
            raise ConfigError("train.num_threads must be >= 0 (0 = torch default)")
        if not self.max_seconds >= 0:
            raise ConfigError("train.max_seconds must be >= 0 (0 = no limit)")


OLD_RUN_REFERENCES = "as-before"
"""``evaluate.references`` of runs made before the key: the references learners named then."""


@dataclass(frozen=True)
class EvalConfig:
    """Meta-test protocol: adapt on held-out tasks and record a curve."""

    num_tasks: int = 40
    """Tasks per split; the 95% interval is over tasks."""
    num_steps: int = 3
    """Adaptation steps after the un-adapted step 0 (gradient steps for MAML)."""
    episodes_per_task: int = 20
    """Episodes per task per adaptation step."""
    pretrained_iterations: int = 0
    """Iterations of the trained references (> 0: this many, whatever ``reference_budget``)."""
    references: tuple[str, ...] = ()
    """References to evaluate beside the learner (empty: every one it names that the family
    can provide: domain_randomised, oracle where the task can be shown, pretrained, ...)."""
    reference_budget: str = "time"
    """How long trained references (domain-randomised, pretrained) train: "time", for the
    learner's own training wall time (a fair opponent: the same budget, however cheap its
    iterations; at most 20x the learner's iterations), or "iterations", as many iterations."""
    seed: int = 1234
    """Seed of evaluation tasks and rollouts (apart from training), so curves are comparable."""
    adaptation: Any = None
    """The learner's own evaluation settings (its ``EvalSettings`` dataclass: MAML's step sizes,
    RL²'s action choice), written flat in the ``evaluate`` section beside the keys above. This
    module names no learner, so ``parse_run_config`` keeps them as a dict and
    ``build.resolve_config`` types them, once."""

    LEGACY_VALUES: ClassVar[dict[str, Any]] = {
        "reference_budget": "iterations",
        "references": (OLD_RUN_REFERENCES,),
    }
    """Runs made before ``reference_budget`` trained references for the learner's iterations,
    and before ``references`` had only the references then named (no new training)."""

    def __post_init__(self) -> None:
        _positive(self, "num_tasks", "episodes_per_task")
        if self.num_steps < 0:
            raise ConfigError("evaluate.num_steps must be >= 0")
        if self.pretrained_iterations < 0:
            raise ConfigError("evaluate.pretrained_iterations must be >= 0")
        if self.reference_budget not in ("time", "iterations"):
            raise ConfigError(
                f"evaluate.reference_budget must be 'time' or 'iterations', got "
                f"'{self.reference_budget}'"
            )


@dataclass(frozen=True)
class SamplerConfig:
    """Where rollouts run (``adaptrl.sampling``); a speed setting only: every back-end and worker
    count gives the same trajectories for the same seed."""

    backend: str = "auto"
    """auto (in-process for tensor families, worker processes for simulators), inprocess,
    processes or ray."""
    workers: int | None = None
    """Worker processes or Ray actors (unset: one per core)."""
    ray_address: str = ""
    """Address of an existing Ray cluster ('auto' finds a local one); empty starts Ray locally."""

    BACKENDS: ClassVar[tuple[str, ...]] = ("auto", "inprocess", "processes", "ray")

    def __post_init__(self) -> None:
        if self.backend not in self.BACKENDS:
            raise ConfigError(
                f"unknown sampler '{self.backend}'; choose one of: {', '.join(self.BACKENDS)}"
            )
        if self.workers is not None and self.workers <= 0:
            raise ConfigError(
                f"sampler.workers must be > 0 (or unset for one per core), got {self.workers}"
            )


@dataclass(frozen=True)
class PublishedConfig:
    """Published numbers a preset reproduces, drawn beside the run's in its report."""

    source: str
    """Where the numbers come from (paper, table or figure; the authors' code where it differs)."""
    split: str = "test"
    """The split the published numbers were measured on."""
    curves: dict[str, list[float]] = field(default_factory=dict)
    """Adaptation curves: learner -> mean return at x = 0, 1, 2, ..."""
    totals: dict[str, float] = field(default_factory=dict)
    """Total reward per trial (RL², Duan et al.'s tables): learner -> number."""

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("published.source must name the paper (and table or figure)")
        for name, values in self.curves.items():
            if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
            ):
                raise ConfigError(f"published.curves.{name} must be a list of numbers")
        for name, value in self.totals.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"published.totals.{name} must be a number")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; written to RUN/config.yaml so a run can be reproduced."""

    algorithm: str
    env: dict[str, Any]
    algo: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    preset: str = ""
    published: PublishedConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "algorithm": self.algorithm,
            "env": dict(self.env),
            "algo": dict(self.algo),
            "train": _plain(dataclasses.asdict(self.train)),
            "evaluate": evaluate_dict(self.evaluate),
            "sampler": _plain(dataclasses.asdict(self.sampler)),
            **({"published": dataclasses.asdict(self.published)} if self.published else {}),
        }


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def evaluate_dict(cfg: EvalConfig) -> dict[str, Any]:
    """The ``evaluate`` section as written: the protocol's keys, then the learner's own."""
    own = cfg.adaptation
    if dataclasses.is_dataclass(own):
        own = dataclasses.asdict(own)
    values = {
        f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "adaptation"
    }
    return _plain({**values, **(own or {})})


def parse_evaluate(values: Any) -> EvalConfig:
    """The ``evaluate`` section: the protocol's keys typed here; the rest, the learner's own,
    kept as a dict in ``adaptation`` for ``build.resolve_config`` (which knows the learner)."""
    if not isinstance(values, dict):
        raise ConfigError(f"'evaluate' must be a mapping of keys to values, got {values!r}")
    names = {f.name for f in dataclasses.fields(EvalConfig)} - {"adaptation"}
    generic = {k: v for k, v in values.items() if k in names}
    cfg = build_dataclass(EvalConfig, generic, "evaluate")
    return dataclasses.replace(cfg, adaptation={k: v for k, v in values.items() if k not in names})


def _positive(obj: Any, *names: str) -> None:
    section = {TrainConfig: "train", EvalConfig: "evaluate", SamplerConfig: "sampler"}.get(
        type(obj), type(obj).__name__
    )
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{section}.{name} must be > 0, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build ``cls`` from a dict: unknown keys are named, types are checked and coerced."""
    if not isinstance(values, dict):
        raise ConfigError(f"'{section}' must be a mapping of keys to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key '{section}.{key}'{hint}; valid keys: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{section}: {exc}") from None


def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise ConfigError(f"{name} must be {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):  # 100 for [100, 100] once became [100] silently
            raise ConfigError(f"{name} must be a list, e.g. [{value}], got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, name) for v in value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(v, args[0] if args else Any, name) for v in value]
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if hint is Any or origin is dict:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{name} must be {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string under it in the class body), base classes' included:
    the meaning ``adaptrl config`` prints beside each key."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # builtins, classes made at run time
            continue
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Raw dict of a preset name (``maml-navigation2d``) or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            close = difflib.get_close_matches(name_or_path, list_presets(), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown preset '{name_or_path}'{hint} (run 'adaptrl list' to see presets)"
            )
    return read_yaml(path)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    data.setdefault("preset", path.stem)
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's multi-line message as one line: the problem and where it is."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values are parsed as YAML (``0.1``, ``[1, 2]``)."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got '{item}'")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        if len(parts) == 1:
            data[parts[0]] = value
        elif len(parts) == 2:
            section = data.setdefault(parts[0], {})
            if not isinstance(section, dict):
                raise ConfigError(f"--set {key}: '{parts[0]}' is not a config section")
            section[parts[1]] = value
        else:
            raise ConfigError(f"--set {key}: keys have the form section.key (e.g. algo.inner_lr)")
    return data


def parse_run_config(data: dict[str, Any]) -> RunConfig:
    """Validate a raw dict into a RunConfig. The ``env`` and ``algo`` sections are validated
    against their families' and learners' dataclasses by ``adaptrl.build.build_run_config``
    (this module stays a leaf: it imports no learner and no env)."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config section '{key}'{hint}; valid: {', '.join(known)}")
    if "algorithm" not in data or "env" not in data:
        raise ConfigError("a config needs 'algorithm' and 'env' sections")
    env = data["env"]
    if not isinstance(env, dict) or "name" not in env:
        raise ConfigError("'env' must be a mapping with a 'name' (run 'adaptrl list')")
    algo = data.get("algo") or {}
    if not isinstance(algo, dict):
        raise ConfigError("'algo' must be a mapping of algorithm settings")
    config = RunConfig(
        algorithm=str(data["algorithm"]),
        env=dict(env),
        algo=dict(algo),
        train=build_dataclass(TrainConfig, data.get("train") or {}, "train"),
        evaluate=parse_evaluate(data.get("evaluate") or {}),
        sampler=build_dataclass(SamplerConfig, data.get("sampler") or {}, "sampler"),
        preset=str(data.get("preset", "")),
        published=(
            build_dataclass(PublishedConfig, data["published"], "published")
            if data.get("published")
            else None
        ),
    )
    return config
