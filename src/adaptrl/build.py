"""The build step: a validated config -> family, sampler and learner.

It sits above ``algos`` and ``sampling`` and below the trainer and evaluation, so ``config.py``
stays a leaf of dataclasses and parsing, and nothing below knows how a run is assembled.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import textwrap
from dataclasses import dataclass, replace
from typing import Any

import torch
import yaml

from adaptrl.algos import ALGORITHMS, algo_config, make_algorithm
from adaptrl.algos.base import Learner, chosen_references
from adaptrl.config import (
    EvalConfig,
    RunConfig,
    SamplerConfig,
    TrainConfig,
    apply_overrides,
    build_dataclass,
    evaluate_dict,
    field_docs,
    parse_evaluate,
    parse_run_config,
)
from adaptrl.envs import EnvSpec, Family, env_config
from adaptrl.errors import ConfigError, RunError
from adaptrl.runs import Run
from adaptrl.sampling import Sampler, make_sampler


@dataclass(frozen=True)
class Sections:
    """A config's ``env`` and ``algo`` sections as their dataclasses, with what they name: the
    one place a run's family and learner settings are parsed (``sections``)."""

    spec: EnvSpec
    env: Any
    """The family's config dataclass."""
    algo: Any
    """The learner's config dataclass."""
    learner: type
    """The learner's class (its ``EvalSettings``, ``references()``)."""


def sections(config: RunConfig) -> Sections:
    """The ``env`` and ``algo`` sections parsed and validated (one line for a bad key or value),
    once per config object: the result is kept on it. A ``RunConfig`` is never changed in place
    (``replace`` makes a new one, parsed afresh where its sections differ)."""
    kept = config.__dict__.get("_sections")
    if kept is not None:
        return kept
    spec, env_cfg = env_config(config.env)
    algo_cfg = algo_config(config.algorithm, config.algo)
    typed = Sections(spec, env_cfg, algo_cfg, ALGORITHMS[config.algorithm][1])
    object.__setattr__(config, "_sections", typed)  # frozen: a cache, not a field
    return typed


def _keep_sections(before: RunConfig, after: RunConfig) -> RunConfig:
    """``after`` (``before`` with other train, evaluate or sampler values) keeps its parse."""
    if "_sections" in before.__dict__ and (before.env, before.algo) == (after.env, after.algo):
        object.__setattr__(after, "_sections", before.__dict__["_sections"])
    return after


def build_run_config(data: dict[str, Any]) -> RunConfig:
    """Parse and validate every section, the family's and the learner's included, before any
    work starts (bad keys and impossible values fail here, with one line).

    The ``env`` and ``algo`` sections come back *complete*: every default is written out, so
    RUN/config.yaml says exactly what ran and a later change of a default cannot change a
    resumed run or its evaluation."""
    config = resolve_evaluate(parse_run_config(data))
    typed = sections(config)
    spec, env_cfg = typed.spec, typed.env
    env = {"name": spec.name, **_plain_fields(env_cfg)}
    env.update({k: v for k, v in config.env.items() if k not in env})  # e.g. a user's callables
    split = config.train.validation_split
    if split != "train" and split not in (splits := spec.tasks_cls(env_cfg).splits):
        raise ConfigError(
            f"train.validation_split '{split}' is not a split of env '{spec.name}'; it has: "
            f"{', '.join(splits)}"
        )
    complete = replace(config, env=env, algo=_plain_fields(typed.algo))
    object.__setattr__(complete, "_sections", typed)  # the same settings, written out
    return complete


RETIRED_EVAL_KEYS = ("inner_lrs", "batch_steps", "actions", "tune_reference_lrs")
"""Keys every run's ``evaluate`` section held before each learner owned its evaluation
settings: a run's config.yaml may still hold those another learner owns (ignored there)."""


def resolve_evaluate(config: RunConfig, of_run: bool = False) -> RunConfig:
    """``config`` with its learner's own ``evaluate`` keys typed by the learner's
    ``EvalSettings`` (validated there, once). ``of_run``: the config.yaml of an existing run,
    which may hold ``RETIRED_EVAL_KEYS`` of another learner."""
    if config.algorithm not in ALGORITHMS:
        algo_config(config.algorithm, {})  # one line naming the algorithms there are
    settings_cls = ALGORITHMS[config.algorithm][1].EvalSettings
    own = config.evaluate.adaptation
    if isinstance(own, settings_cls):
        return config
    own = dict(own or {})
    names = {f.name for f in dataclasses.fields(settings_cls)}
    if of_run:
        own = {k: v for k, v in own.items() if k in names or k not in RETIRED_EVAL_KEYS}
    for key in own:
        if key not in names:
            valid = [*evaluate_dict(EvalConfig()), *names]
            other = [a for a, (_, cls) in ALGORITHMS.items() if key in _field_names(cls)]
            owners = " and ".join(f"{a}'s" for a in other)
            whose = f"; it is a setting of {owners} evaluation" if other else ""
            close = difflib.get_close_matches(str(key), valid, n=1) if not other else []
            hint = f" (did you mean 'evaluate.{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config key 'evaluate.{key}' for {config.algorithm}{hint}{whose}; "
                f"valid keys: {', '.join(valid)}"
            )
    settings = build_dataclass(settings_cls, own, "evaluate")
    resolved = replace(config, evaluate=replace(config.evaluate, adaptation=settings))
    return _keep_sections(config, resolved)


def _field_names(learner_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(learner_cls.EvalSettings)}


def with_evaluate(
    config: RunConfig, overrides: list[str], fixed: dict[str, str] | None = None
) -> RunConfig:
    """``config`` with ``evaluate.key=value`` overrides applied and validated (the learner's own
    keys included); a key of another section is refused (a trained run fixes the rest), and so
    is a key of ``fixed`` (key -> why it cannot change here)."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("evaluate."):
            raise ConfigError(
                f"--set {key}: only evaluate.* keys can change here (the trained run fixes the "
                f"others; train a new run to change them)"
            )
        if key.removeprefix("evaluate.") in (fixed or {}):
            raise ConfigError(f"--set {key}: {fixed[key.removeprefix('evaluate.')]}")
    data = apply_overrides({"evaluate": evaluate_dict(config.evaluate)}, overrides)
    changed = replace(config, evaluate=parse_evaluate(data["evaluate"]))
    return _keep_sections(config, resolve_evaluate(changed))


def with_runtime(
    config: RunConfig,
    device: str | None = None,
    backend: str | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
) -> RunConfig:
    """``config`` run elsewhere or faster: where it runs (device, sampler back-end, workers, a
    Ray cluster) never changes what it computes (every back-end gives the same trajectories),
    so a trained run may change these, and only these, when resumed, evaluated or deployed.
    None keeps the config's own; each value is validated by its section."""
    train, sampler = config.train, config.sampler
    if device is not None:
        train = replace(train, device=device)
    if backend is not None:
        sampler = replace(sampler, backend=backend)
    if ray_address is not None:
        sampler = replace(sampler, ray_address=ray_address)
    if workers is not None:
        sampler = replace(sampler, workers=workers)
    return _keep_sections(config, replace(config, train=train, sampler=sampler))


def annotated_config(config: RunConfig) -> str:
    """The resolved config as YAML with each key's meaning, and its default where the config
    differs: what ``--set SECTION.KEY=VALUE`` accepts (``adaptrl config``, issue 26). The text
    loads back as the same config, so it can be saved and edited as a preset."""
    typed = sections(config)
    spec = typed.spec
    classes = {
        "env": [spec.config_cls],
        "algo": [type(typed.algo)],
        "train": [TrainConfig],
        "evaluate": [EvalConfig, typed.learner.EvalSettings],
        "sampler": [SamplerConfig],
    }
    data = config.to_dict()
    lines = [
        f"# {config.preset or config.algorithm}: {config.algorithm} on {spec.name}, every key "
        "resolved; change one with --set SECTION.KEY=VALUE",
        f"preset: {_yaml_value(config.preset)}",
        f"algorithm: {config.algorithm}",
    ]
    for section, (cls, *more) in classes.items():
        docs = {k: v for c in (cls, *more) for k, v in field_docs(c).items()}
        defaults = {f.name: _default(f) for c in (cls, *more) for f in dataclasses.fields(c)}
        about = " ".join(inspect.cleandoc(cls.__doc__ or section).split("\n\n")[0].split())
        lines += ["", *(f"# {text}" for text in textwrap.wrap(about, 98)), f"{section}:"]
        for key, value in data[section].items():
            doc = docs.get(key, "the family's name (adaptrl list)" if key == "name" else "")
            text = textwrap.wrap(" ".join(doc.split()), 94, break_on_hyphens=False) or [""]
            default = defaults.get(key, dataclasses.MISSING)
            if default is not dataclasses.MISSING and _plain_value(default) != value:
                note = f"(default: {_yaml_value(_plain_value(default))})"
                fits = len(text[-1]) + len(note) < 94
                text = [*text[:-1], f"{text[-1]} {note}".strip()] if fits else [*text, note]
            lines += [f"  # {line}".rstrip() for line in text]
            lines.append(f"  {key}: {_yaml_value(value)}")
    if "published" in data:
        lines += ["", "# numbers from the paper, drawn beside the run's in its report"]
        lines += yaml.safe_dump({"published": data["published"]}, sort_keys=False).splitlines()
    return "\n".join(lines)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _yaml_value(value: Any) -> str:
    """One value as inline YAML (``[100, 100]``, ``''``, ``null``)."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def run_config(run: Run) -> RunConfig:
    """A run's own config, for resuming, evaluating or deploying it. Its config.yaml lists every
    env and train key that existed when it was made, so a key it lacks was added later: that key
    gets the value its config class declares in ``LEGACY_VALUES`` (the behaviour before the
    key), not the new default, and an old run keeps computing what it computed."""
    config = run.config()
    spec = env_config(config.env)[0]  # only the family: its legacy values come before parsing
    env = _legacy_values(spec.config_cls, run.written_keys("env"))
    train = _legacy_values(TrainConfig, run.written_keys("train"))
    evaluate = _legacy_values(EvalConfig, run.written_keys("evaluate"))
    config = replace(
        config,
        env={**config.env, **env},
        train=replace(config.train, **train),
        evaluate=replace(config.evaluate, **evaluate),
    )
    try:
        return resolve_evaluate(config, of_run=True)
    except ConfigError as exc:
        raise RunError(f"'{run.config_path}': {exc}") from None


def _legacy_values(config_cls: type, written: set[str]) -> dict[str, Any]:
    """``config_cls``'s ``LEGACY_VALUES`` for the keys a run's config.yaml leaves out."""
    legacy = getattr(config_cls, "LEGACY_VALUES", {})
    return {k: v for k, v in legacy.items() if k not in written}


def _plain_fields(cfg: Any) -> dict[str, Any]:
    """A config dataclass as YAML-safe values (tuples as lists); objects such as a user
    family's ``make_env`` are left out: they are looked up by the family's name."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        value = list(value) if isinstance(value, tuple) else value
        if _yaml_plain(value):
            out[f.name] = value
    return out


def _yaml_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_yaml_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _yaml_plain(v) for k, v in value.items())
    return False


def restore_learner(learner: Learner, state: dict[str, Any], source: str) -> None:
    """Load checkpointed learner state, or say in one line that it does not fit the config."""
    try:
        learner.load_state_dict(state["algorithm"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"checkpoint '{source}' does not fit the run's config.yaml ({first[:160]}); was "
            "config.yaml edited after training? restore it, or train a new run"
        ) from None


def resolve_device(name: str) -> torch.device:
    """A torch device that exists here, or a one-line ConfigError saying what to pass."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device '{name}' is not a torch device (use cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' requested but CUDA is not available; use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device '{name}' does not exist: this machine has {count} CUDA device(s) "
                f"(cuda:0 to cuda:{count - 1})"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device '{name}' requested but MPS is not available; use cpu")
    elif device.type != "cpu":
        raise ConfigError(f"device '{name}' is not supported (use cpu, cuda, cuda:N or mps)")
    return device


def build_family(config: RunConfig, typed: Sections | None = None) -> Family:
    typed = typed or sections(config)
    spec, env_cfg = typed.spec, typed.env
    return Family(spec, env_cfg, spec.tasks_cls(env_cfg), bool(config.env.get("task_in_obs")))


@dataclass
class Built:
    """A family, its sampler and a learner; ``close()`` stops the sampler's workers."""

    family: Family
    sampler: Sampler
    learner: Learner
    device: torch.device

    def close(self) -> None:
        self.sampler.close()

    def __enter__(self) -> Built:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(config: RunConfig, seed: int | None = None, sampler: Sampler | None = None) -> Built:
    """Family, sampler (unless one is shared in) and learner, parameters seeded from ``seed``
    (default: the run's seed)."""
    device = resolve_device(config.train.device)
    resolve_evaluate(config)  # the learner's evaluate keys: fail before training, not after
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    typed = sections(config)  # the family's and the learner's settings, parsed once here
    family = build_family(config, typed)
    if sampler is None:
        s = config.sampler
        sampler = make_sampler(family, s.backend, s.workers, str(device), s.ray_address)
    torch.manual_seed(config.train.seed if seed is None else seed)  # parameter initialisation
    try:
        learner = make_algorithm(config.algorithm, typed.algo, family, sampler, device)
        chosen_references(learner, family, config.evaluate.references)
    except BaseException:
        sampler.close()
        raise
    return Built(family, sampler, learner, device)
