"""Config loading: presets, overrides, unknown keys, types."""

import pytest

from adaptrl.algos import algo_config
from adaptrl.build import build_run_config
from adaptrl.config import apply_overrides, list_presets, load_preset
from adaptrl.errors import ConfigError


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_validates(preset):
    config = build_run_config(load_preset(preset))
    assert config.preset == preset
    algo_config(config.algorithm, config.algo)


def test_overrides_parse_yaml_values_including_exponents():
    data = apply_overrides(
        load_preset("maml-navigation2d"),
        ["algo.inner_lr=5e-2", "algo.hidden_sizes=[32, 32]", "train.seed=7"],
    )
    config = build_run_config(data)
    algo = algo_config("maml", config.algo)
    assert algo.inner_lr == 0.05 and algo.hidden_sizes == (32, 32) and config.train.seed == 7


def test_unknown_and_mistyped_keys_are_named():
    with pytest.raises(ConfigError, match="did you mean 'env.horizon'"):
        build_run_config(apply_overrides(load_preset("maml-navigation2d"), ["env.horizn=5"]))
    with pytest.raises(ConfigError, match="train.num_iterations must be int"):
        build_run_config(
            apply_overrides(load_preset("maml-navigation2d"), ["train.num_iterations=1.5"])
        )
    with pytest.raises(ConfigError, match="unknown env"):
        build_run_config(apply_overrides(load_preset("maml-navigation2d"), ["env.name=nope"]))


def test_a_configs_family_and_learner_sections_are_parsed_once(monkeypatch):
    """build_run_config parses env and algo into their dataclasses; building the run (and any
    change of where it runs) reuses that parse instead of parsing the dicts again (issue 23)."""
    import adaptrl.build as build_module
    from adaptrl.build import build, build_run_config, sections, with_runtime
    from adaptrl.config import load_preset

    calls = []
    real = build_module.algo_config
    monkeypatch.setattr(build_module, "algo_config", lambda *a: calls.append(a[0]) or real(*a))
    config = build_run_config(load_preset("maml-navigation2d"))
    moved = with_runtime(config, device="cpu", backend="inprocess")
    with build(moved) as built:
        assert built.learner.config == sections(config).algo
    assert calls == ["maml"]
    from dataclasses import replace

    other = replace(config, algo={**config.algo, "inner_lr": 0.05})  # a new config: parsed anew
    assert sections(other).algo.inner_lr == 0.05 and calls == ["maml", "maml"]
