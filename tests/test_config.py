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
