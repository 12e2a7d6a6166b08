"""MuJoCo locomotion families: rewards match the authors' formulas, splits are disjoint, spaces
are right without building a simulator, and Walker tasks really change the model."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")

from adaptrl.envs import make_family  # noqa: E402
from adaptrl.envs.checker import check_family  # noqa: E402

FAMILIES = ["halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir", "walker_params"]
GYM_IDS = {
    "halfcheetah_vel": "HalfCheetah-v5",
    "halfcheetah_dir": "HalfCheetah-v5",
    "ant_vel": "Ant-v5",
    "ant_dir": "Ant-v5",
    "walker_params": "Walker2d-v5",
}


def _gym(env_id):
    return gym.make(env_id, disable_env_checker=True)


def _contact(data):
    return 5e-4 * np.sum(np.clip(data.cfrc_ext, -1, 1) ** 2)


# reward by hand from a plain gymnasium env's info and data: (velocity, task value, action, data)
HAND = {
    "halfcheetah_vel": lambda v, g, a, d: -abs(v - g) - 0.05 * a @ a,
    "halfcheetah_dir": lambda v, s, a, d: s * v - 0.05 * a @ a,
    "ant_vel": lambda v, g, a, d: -abs(v - g) + 1.05 - 0.005 * a @ a - _contact(d),
    "ant_dir": lambda v, s, a, d: s * v + 0.05 - 0.005 * a @ a - _contact(d),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_reward_is_the_authors(name):
    key, values = ("velocity", [0.5, 1.7]) if name.endswith("vel") else ("direction", [1.0, -1.0])
    family = make_family(name)
    tasks = family.tasks.sample(2, "train", torch.Generator().manual_seed(0))
    tasks[key] = torch.tensor(values)
    env = family.make_env(2)
    env.reset(tasks=tasks, seed=0)
    plains = []
    for i in range(2):  # plain gymnasium envs started in each row's initial state
        plain = _gym(GYM_IDS[name])
        plain.reset(seed=0)
        data = env.envs[i].unwrapped.data
        plain.unwrapped.set_state(data.qpos.copy(), data.qvel.copy())
        plains.append(plain)
    dim = family.action_space.shape[0]
    rng = np.random.default_rng(0)
    for _ in range(10):
        actions = rng.uniform(-1, 1, (2, dim)).astype(np.float32)
        obs, rewards, terminated, truncated, _ = env.step(torch.as_tensor(actions))
        assert not terminated.any() and not truncated.any()
        for i, plain in enumerate(plains):
            p_obs, _, _, _, info = plain.step(actions[i])
            np.testing.assert_allclose(obs[i].numpy(), p_obs, rtol=1e-4, atol=1e-4)
            a = actions[i].astype(np.float64)
            expected = HAND[name](info["x_velocity"], values[i], a, plain.unwrapped.data)
            assert rewards[i].item() == pytest.approx(expected, abs=1e-4)
    env.close()


@pytest.mark.parametrize("name, high, ood", [("halfcheetah_vel", 2.0, 3.0), ("ant_vel", 3.0, 4.0)])
def test_velocity_splits_are_disjoint(name, high, ood):
    family = make_family(name)
    gen = torch.Generator().manual_seed(0)
    samples = {s: family.tasks.sample(4000, s, gen)["velocity"] for s in ("train", "test", "ood")}
    for split, v in samples.items():
        assert v.shape == (4000,) and v.dtype == torch.float32
        assert set(family.tasks.split_of({"velocity": v})) == {split}
    cells = {s: set((v[v <= high] / 0.1).floor().long().tolist()) for s, v in samples.items()}
    assert cells["train"].isdisjoint(cells["test"])
    n = round(high / 0.1)
    assert len(cells["test"]) == round(0.2 * n) and len(cells["train"]) == n - round(0.2 * n)
    for split in ("train", "test"):
        assert 0.0 <= samples[split].min() and samples[split].max() <= high
    assert samples["ood"].min() > high and samples["ood"].max() <= ood
    assert family.tasks.splits == ("train", "test", "ood")


def test_direction_test_split_uses_other_reset_seeds():
    family = make_family("halfcheetah_dir")
    gen = torch.Generator().manual_seed(0)
    train, test = (family.tasks.sample(64, s, gen) for s in ("train", "test"))
    assert set(train["direction"].tolist()) == {-1.0, 1.0} == set(test["direction"].tolist())
    assert set(family.tasks.split_of(train)) == {"train"}
    assert set(family.tasks.split_of(test)) == {"test"}
    first = {}
    for split in ("train", "test"):
        task = {
            "direction": torch.tensor([1.0]),
            "seed_stream": torch.tensor([float(split == "test")]),
        }
        env = family.make_env(1)
        first[split], _ = env.reset(tasks=task, seed=0)
        env.close()
    assert not torch.equal(first["train"], first["test"])


def test_walker_splits_are_disjoint():
    family = make_family("walker_params")
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        tasks = family.tasks.sample(500, split, gen)
        assert set(family.tasks.split_of(tasks)) == {split}
        assert tasks["body_mass"].shape == (500, 8) and tasks["geom_friction"].shape == (500, 24)
        lo, hi = 1.5**-3, 1.5**3
        assert lo <= tasks["body_mass"].min() and tasks["body_mass"].max() <= hi
        assert 1.3**-3 <= tasks["dof_damping"].min() and tasks["dof_damping"].max() <= 1.3**3


@pytest.mark.parametrize("name", FAMILIES)
def test_checker_passes(name):
    check_family(name, num_envs=2, steps=20)


@pytest.mark.parametrize("name", FAMILIES)
def test_static_spaces_equal_the_real_envs(name):
    family = make_family(name)
    obs_space, act_space = family.spaces()
    real = _gym(GYM_IDS[name])
    assert obs_space == real.observation_space and act_space == real.action_space
    real.close()
    env = family.make_env(1)
    assert (obs_space, act_space) == (env.single_observation_space, env.single_action_space)
    env.close()


QUIET_BUILD = """
import torch
from adaptrl.envs import make_family
for name in ("halfcheetah_vel", "halfcheetah_dir", "ant_vel", "walker_params"):
    family = make_family(name)
    env = family.make_env(2)
    env.reset(tasks=family.tasks.sample(2, "train", torch.Generator().manual_seed(0)), seed=0)
    for _ in range(3):
        env.step(torch.zeros(2, family.action_space.shape[0]))
    env.close()
print("built")
"""


def test_building_and_stepping_prints_no_mujoco_warning_and_writes_no_log(tmp_path):
    """HalfCheetah's deprecated ``settotalmass`` printed a warning per env build (800 lines
    before a training's first iteration) and wrote MUJOCO_LOG.TXT into the working directory
    (issue 26)."""
    out = subprocess.run(
        [sys.executable, "-c", QUIET_BUILD], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "built\n" and "settotalmass" not in out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    assert list(tmp_path.iterdir()) == []


def test_halfcheetah_compiled_without_settotalmass_is_the_compilers_model(tmp_path, monkeypatch):
    """Masses scaled after compiling (as mujoco 3 asks) give the deprecated attribute's model,
    every array and the statistics the solver reads bit for bit, so results are unchanged."""
    import mujoco

    monkeypatch.chdir(tmp_path)  # the deprecated build below writes its log file here
    family = make_family("halfcheetah_vel")
    env = family.make_env(1)
    ours = env.envs[0].unwrapped.model
    with pytest.warns(RuntimeWarning, match="settotalmass"):  # routed from MuJoCo's C code
        theirs = mujoco.MjModel.from_xml_path(env.envs[0].unwrapped.fullpath)
    assert ours.body_mass.sum() == pytest.approx(14.0)
    for name in dir(theirs):
        value = getattr(theirs, name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(ours, name), value, err_msg=name)
    for name in ("meanmass", "meaninertia", "meansize", "extent"):
        assert getattr(ours.stat, name) == getattr(theirs.stat, name), name
    env.close()


def test_walker_task_changes_the_model():
    family = make_family("walker_params")
    env = family.make_env(2)
    tasks = family.tasks.sample(2, "train", torch.Generator().manual_seed(0))
    row = env.envs[0]
    original = row.unwrapped.model.body_mass.copy()
    np.testing.assert_array_equal(original, row.originals["body_mass"])
    for _ in range(2):  # applying a task twice does not compound the multipliers
        env.reset(tasks=tasks, seed=0)
        for i in range(2):
            model = env.envs[i].unwrapped.model
            for key, orig in env.envs[i].originals.items():
                want = orig * tasks[key][i].numpy().reshape(orig.shape)
                np.testing.assert_allclose(getattr(model, key), want, rtol=1e-6)
    assert not np.allclose(row.unwrapped.model.body_mass[1:], original[1:])
    assert not np.allclose(
        env.envs[0].unwrapped.model.body_mass, env.envs[1].unwrapped.model.body_mass
    )
    env.close()


def test_bad_configs_are_config_errors():
    from adaptrl.errors import ConfigError

    for name, bad in [
        ("ant_vel", {"max_velocity": 5.0}),  # above the ood range (3, 4]
        ("halfcheetah_dir", {"horizon": 0}),
        ("walker_params", {"log_scale_limit": 0.0}),
    ]:
        with pytest.raises(ConfigError, match="env."):
            make_family(name, **bad)


def test_missing_mujoco_is_a_config_error():
    code = (
        "import sys; sys.modules['mujoco'] = None\n"
        "from adaptrl.envs import make_family\n"
        "from adaptrl.errors import ConfigError\n"
        "family = make_family('halfcheetah_vel')\n"
        "assert family.spaces()[0].shape == (17,)\n"
        "try:\n    family.make_env(1)\nexcept ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'adaptrl[mujoco]'" in out.stdout, out.stderr


@pytest.mark.parametrize("name", ["halfcheetah_vel", "ant_vel"])
def test_held_out_velocities_cover_the_training_range(name):
    """Held-out cells are interleaved, so held-out goals are new but not harder on average
    (4 random cells of 20 once held out only 1.3-2.0: mean 1.62 against 0.81 for training)."""
    family = make_family(name)
    gen = torch.Generator().manual_seed(0)
    test = family.tasks.sample(4000, "test", gen)["velocity"]
    train = family.tasks.sample(4000, "train", gen)["velocity"]
    assert abs(test.mean().item() - train.mean().item()) < 0.1
    assert test.min().item() < 0.3 * family.config.max_velocity
    assert test.max().item() > 0.7 * family.config.max_velocity


@pytest.mark.parametrize("name", ["walker_params", "terrain"])
def test_the_direct_step_equals_gymnasiums_step(name):
    """The direct MuJoCo step against the same family stepped through gymnasium (whose reward is
    these families' reward), through falls and resets: observations bit for bit."""
    family = make_family(name)
    tasks = family.tasks.sample(3, "train", torch.Generator().manual_seed(1))
    direct, slow = family.make_env(3), family.make_env(3)
    slow.direct = False
    assert direct.direct
    obs_d, _ = direct.reset(tasks=tasks, seed=3)
    obs_s, _ = slow.reset(tasks=tasks, seed=3)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(150):
        actions = torch.as_tensor(rng.uniform(-1.2, 1.2, (3, 6)).astype(np.float32))
        out_d, out_s = direct.step(actions), slow.step(actions)
        assert torch.equal(out_d[0], out_s[0])
        torch.testing.assert_close(out_d[1], out_s[1], rtol=1e-6, atol=1e-6)
        assert torch.equal(out_d[2], out_s[2]) and torch.equal(out_d[3], out_s[3])
        done = out_d[2] | out_d[3]
        if done.any():
            ended += int(done.sum())
            assert torch.equal(direct.reset(mask=done)[0], slow.reset(mask=done)[0])
    assert ended > 0 if name == "walker_params" else ended == 0  # random walkers fall
    direct.close()
    slow.close()
