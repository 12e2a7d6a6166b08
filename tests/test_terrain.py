"""The terrain family: heightfields deterministic per task, held-out terrain cells disjoint from
training, an ``ood`` split beyond training, and a robot that stands on the ground, not in it."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")

import mujoco  # noqa: E402

from adaptrl.envs import make_family  # noqa: E402
from adaptrl.envs.checker import check_family  # noqa: E402
from adaptrl.envs.terrain import FLAT_START, PARAMS, field_x, terrain_profile  # noqa: E402
from adaptrl.errors import ConfigError  # noqa: E402


def _task(roughness=0.05, slope=8.0, step=0.06, friction=0.7, seed=3):
    return {
        "roughness": np.array([roughness]),
        "slope": np.array([slope]),
        "step": np.array([step]),
        "friction": np.array([friction]),
        "terrain_seed": np.array([float(seed)]),
    }


def test_a_heightfield_is_a_function_of_its_task():
    x = field_x(601)
    a, b = terrain_profile(_task(), x), terrain_profile(_task(), x)
    assert np.array_equal(a, b)
    other = terrain_profile(_task(seed=4), x)
    assert not np.array_equal(a, other)  # other bumps
    assert (a[x < FLAT_START] == 0).all() and a.min() >= 0  # a flat start, nothing below 0
    # Without bumps the shape is known: at 2 m into the terrain the hill tops out (2 tan 8°)
    # and the third riser of the stairs is reached (2 steps of 0.06 m).
    flat = terrain_profile(_task(roughness=0.0), np.array([FLAT_START + 2.5]))
    assert flat[0] == pytest.approx(1.5 * math.tan(math.radians(8.0)) + 2 * 0.06)


def test_held_out_cells_are_disjoint_and_ood_lies_beyond_training():
    family = make_family("terrain")
    gen = torch.Generator().manual_seed(0)
    cells = {}
    for split in ("train", "test", "ood"):
        tasks = family.tasks.sample(300, split, gen)
        assert set(family.tasks.split_of(tasks)) == {split}
        params = torch.cat([tasks[k] for k in PARAMS], -1)
        scaled = family.tasks._scaled(params)
        cells[split] = {tuple(c) for c in torch.floor(scaled / 0.25).long().tolist()}
    assert cells["train"] and cells["test"] and not cells["train"] & cells["test"]
    ood = family.tasks.sample(300, "ood", gen)
    c = family.config
    beyond = (
        (ood["roughness"] > c.max_roughness)
        | (ood["slope"] > c.max_slope)
        | (ood["step"] > c.max_step)
    )
    assert beyond.all()


@pytest.mark.parametrize("friction", [0.3, 0.9])
def test_the_contact_takes_the_grounds_friction(friction):
    """MuJoCo takes the larger friction of two geoms unless one has priority; the feet have
    0.4, so without the floor's priority a slippery ground would not be slippery."""
    family = make_family("terrain")
    env = family.make_env(1)
    task = {k: torch.tensor(v).float().reshape(1, 1) for k, v in _task(friction=friction).items()}
    env.reset(tasks=task, seed=0)
    for _ in range(10):
        env.step(torch.zeros(1, 6))
    sim = env.envs[0].unwrapped
    floor = sim.model.geom("floor").id
    contacts = [c for c in sim.data.contact[: sim.data.ncon] if floor in (c.geom1, c.geom2)]
    assert contacts and all(c.friction[0] == pytest.approx(friction) for c in contacts)


def test_the_task_sets_the_ground_and_the_robot_stands_on_it():
    family = make_family("terrain")
    env = family.make_env(1)
    task = _task()
    env.reset(tasks={k: torch.tensor(v).float().reshape(1, 1) for k, v in task.items()}, seed=0)
    sim = env.envs[0].unwrapped
    model, data = sim.model, sim.data
    floor = model.geom("floor").id
    assert model.geom_friction[floor, 0] == pytest.approx(0.7)
    expected = terrain_profile(task, field_x(int(model.hfield_ncol[0])))
    assert np.allclose(model.hfield_data[: int(model.hfield_ncol[0])], expected / 1.5, atol=1e-6)
    # Put the robot 5 m in, above the ground there, and let it settle.
    x0 = 5.0
    ground = float(terrain_profile(task, np.array([x0]))[0])
    assert ground > 0.15
    data.qpos[:] = 0.0
    data.qvel[:] = 0.0
    data.qpos[0], data.qpos[1] = x0, ground + 0.05  # rootz: height above the start pose
    mujoco.mj_forward(model, data)
    for _ in range(60):
        env.step(torch.zeros(1, 6))
    touching = {
        model.geom(int(g)).name for con in data.contact[: data.ncon] for g in (con.geom1, con.geom2)
    }
    assert "floor" in touching and touching & {"bfoot", "ffoot", "bshin", "fshin", "head"}
    for name in ("bfoot", "ffoot", "torso"):
        g = model.geom(name).id
        x, z = data.geom_xpos[g][0], data.geom_xpos[g][2]
        under = float(terrain_profile(task, np.array([x]))[0])
        assert z > under - 0.02, f"{name} is {under - z:.3f} m inside the ground"
    assert data.geom_xpos[model.geom("torso").id][2] > ground + 0.2  # standing, not fallen in


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("max_slope", 45.0, "env.max_slope must lie in"),
        ("max_roughness", -0.1, "env.max_roughness must lie in"),
        ("friction_range", [0.8, 0.2], "env.friction_range must be"),
        ("max_step", 0.2, "above the field"),
    ],
)
def test_impossible_terrains_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_family("terrain", **{key: value})


def test_the_family_passes_the_conformance_checker():
    check_family("terrain", num_envs=2, steps=15)
