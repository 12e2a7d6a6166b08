"""The drone in wind: physics against hand computations, splits, classical controllers, metric."""

import math

import pytest
import torch
from torch.testing import assert_close

from adaptrl import make_family
from adaptrl.baselines.drone import drone_controllers, run_controller
from adaptrl.envs.checker import check_family
from adaptrl.envs.drone import GRAVITY, DroneWindEnv, drone_metrics, reference_path
from adaptrl.errors import ConfigError
from adaptrl.sampling import Trajectories


def _task(n=1, wind=0.0, amp=0.0, freq=0.0, mass=1.0, drag=1.0):
    full = lambda v: torch.full((n, 1), float(v))  # noqa: E731
    return {
        "wind": full(wind),
        "gust_amp": full(amp),
        "gust_freq": full(freq),
        "mass": full(mass),
        "drag": full(drag),
    }


def _env(n=1, **config):
    family = make_family("drone_wind", **config)
    return family, DroneWindEnv(n, family.config)


def test_hover_thrust_keeps_a_still_drone_still_in_still_air():
    family, env = _env(residual=False, start_offset=0.0)
    env.reset(tasks=_task(), seed=0)
    hover = torch.full((1, 2), family.config.mass * GRAVITY / 2)
    for _ in range(50):
        obs, reward, terminated, truncated, _ = env.step(env.actions_for(hover))
    assert_close(env.state, torch.zeros(1, 6), atol=1e-5, rtol=0)
    assert not terminated.any() and float(reward) == pytest.approx(0.0, abs=1e-4)


def test_drag_from_a_known_wind_matches_the_hand_computation():
    _, env = _env()
    env.reset(tasks=_task(wind=5.0), seed=0)
    level = torch.zeros(1, 6)
    # Level and at rest in a 5 m/s wind: v_b = (-5, 0), f = -β v|v| = (0.1 * 25, 0) = (2.5, 0) N.
    assert_close(env.drag_force(level, torch.tensor([5.0])), torch.tensor([[2.5, 0.0]]))
    phi, vx, vy, w = 0.3, 1.0, -0.5, 4.0
    state = torch.tensor([[0.0, 0.0, phi, vx, vy, 0.0]])
    c, s = math.cos(phi), math.sin(phi)
    rel = (vx - w, vy)
    vb = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1])  # Rᵀ v
    db = (-0.1 * vb[0] * abs(vb[0]), -1.0 * vb[1] * abs(vb[1]))
    expected = torch.tensor([[c * db[0] - s * db[1], s * db[0] + c * db[1]]])
    assert_close(env.drag_force(state, torch.tensor([w])), expected)


def test_accelerations_match_the_hand_computation():
    family, env = _env(residual=False)
    env.reset(tasks=_task(mass=1.2), seed=0)  # a task 20% heavier
    state = torch.tensor([[0.0, 0.0, 0.2, 0.0, 0.0, 0.0]])
    acc = env.derivative(state, torch.tensor([[6.0, 4.0]]), torch.tensor([0.0]))
    m = 1.2 * family.config.mass
    expected = torch.tensor(
        [
            [
                -10.0 * math.sin(0.2) / m,
                10.0 * math.cos(0.2) / m - GRAVITY,
                (4.0 - 6.0) * family.config.arm / family.config.inertia,
            ]
        ]
    )
    assert_close(acc, expected)


def test_splits_are_disjoint_and_ood_lies_beyond_training():
    family = make_family("drone_wind")
    gen = torch.Generator().manual_seed(0)
    cells = {}
    for split in ("train", "test", "ood"):
        tasks = family.tasks.sample(400, split, gen)
        assert set(family.tasks.split_of(tasks)) == {split}
        cells[split] = set(torch.floor(tasks["wind"][:, 0] / 0.25).long().tolist())
    assert not cells["train"] & cells["test"]
    train = family.tasks.sample(2000, "train", gen)["wind"]
    assert 0 <= float(train.min()) and float(train.max()) <= 6.0
    assert float(train.mean()) == pytest.approx(6 * 5 / 14, abs=0.1)  # 6·E[Beta(5, 9)]
    ood = family.tasks.sample(400, "ood", gen)
    steady = ood["gust_amp"][:, 0] == 0
    assert (ood["wind"][steady] > 6.0).all() and (ood["gust_amp"][~steady] >= 1.0).all()
    assert 0.3 < float(steady.float().mean()) < 0.7


def test_the_family_passes_the_conformance_checker():
    check_family("drone_wind", num_envs=4, steps=30)
    check_family("drone_wind", num_envs=4, steps=30, task_kind="track", residual=False)


def test_classical_controllers_on_fixed_winds():
    family = make_family("drone_wind")
    calm = _task(3, wind=0.0, drag=0.0)  # no air at all: nothing to feed forward
    still = run_controller(family, calm, (4.0, 3.0, 0.0))
    assert_close(
        still["return"], run_controller(family, calm, (4.0, 3.0, 0.0), oracle=True)["return"]
    )
    windy = _task(3, wind=4.0)
    pd = run_controller(family, windy, (4.0, 3.0, 0.0))["rms_error_cm"]
    pi = run_controller(family, windy, (4.0, 3.0, 2.0))["rms_error_cm"]
    oracle = run_controller(family, windy, (4.0, 3.0, 0.0), oracle=True)["rms_error_cm"]
    assert (oracle < pi).all() and (pi < pd).all()
    # The oracle is as good in wind as the PD in still air (it cancels the drag exactly).
    assert_close(oracle, still["rms_error_cm"], rtol=0, atol=3.0)  # cm, same start offsets
    assert (pd > 1.5 * oracle).all()  # a 4 m/s wind costs the still-air PD ≥ 50% more error
    rows = drone_controllers(
        family, windy, tune_tasks=family.tasks.sample(8, "train", torch.Generator().manual_seed(1))
    )
    assert set(rows) == {
        "still-air PD",
        "PD + integral",
        "adaptive (force estimate)",
        "oracle (knows the wind)",
    }
    assert rows["oracle (knows the wind)"]["rms_error_cm"] < rows["still-air PD"]["rms_error_cm"]


def _crash_and_finish(obs: torch.Tensor, crash_step: int) -> Trajectories:
    """Two rows of one episode: row 0 runs to the horizon, row 1 crashes at ``crash_step``."""
    T = obs.shape[0]
    mask = torch.ones(T, 2)
    mask[crash_step + 1 :, 1] = 0
    terminated = torch.zeros(T, 2, dtype=torch.bool)
    terminated[crash_step, 1] = True
    truncated = torch.zeros(T, 2, dtype=torch.bool)
    truncated[T - 1, 0] = True
    zeros = torch.zeros(T, 2)
    return Trajectories(
        obs, torch.zeros(T, 2, 2), zeros, zeros, obs, terminated, truncated, mask, num_tasks=2
    )


def test_rms_error_metric_by_hand():
    family = make_family("drone_wind", horizon=4, box=3.0)
    obs = torch.zeros(4, 2, 7)
    obs[:, 0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4])  # row 0: full episode
    obs[:2, 1, 1] = torch.tensor([1.0, 1.0])  # row 1: crashed after 2 steps
    traj = _crash_and_finish(obs, crash_step=1)
    rms = drone_metrics(traj, family)["rms_error_cm"]
    row0 = math.sqrt((0.01 + 0.04 + 0.09 + 0.16) / 4) * 100
    row1 = math.sqrt((1 + 1 + 9 + 9) / 4) * 100  # two steps at 1 m, then the box (3 m)
    assert_close(rms, torch.tensor([[row0, row1]]))


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("mass", -1.0, "env.mass must be > 0"),
        ("thrust_max", 0.0, "env.thrust_max must be > 0"),
        ("thrust_max", 4.0, "cannot lift"),
        ("task_kind", "loop", "hover, track or figure8"),
        ("wind_max", -2.0, "wind speeds in m/s and must be >= 0"),
        ("gust_max", -1.0, "wind speeds in m/s and must be >= 0"),
        ("path_period", 0.0, "path_period .* must be > 0"),
        ("wind_prior", "normal", "beta or uniform"),
    ],
)
def test_impossible_physical_parameters_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        make_family("drone_wind", **{key: value})


def test_controllers_run_trials_of_several_episodes():
    # Starting at the target every episode, a deterministic controller repeats itself: the
    # mean over a 3-episode trial equals one episode exactly.
    family = make_family("drone_wind", horizon=20, start_offset=0.0)
    one = run_controller(family, _task(2, wind=3.0), (4.0, 3.0, 0.0), episodes=1)
    three = run_controller(family, _task(2, wind=3.0), (4.0, 3.0, 0.0), episodes=3)
    assert three["return"].shape == (2,) and bool((three["return"] < 0).all())
    assert_close(three["return"], one["return"])
    assert_close(three["rms_error_cm"], one["rms_error_cm"])


def test_a_prior_without_mass_on_a_split_is_refused_not_looped_on():
    with pytest.raises(ConfigError, match="no mass on the train split"):
        make_family("drone_wind", wind_max=0.1).tasks.sample(4, "train", torch.Generator())


FIGURE8 = dict(
    task_kind="figure8", path_period=6.0, path_size=1.5, horizon=120, start_offset=0.0,
    wind_prior="uniform", wind_max=6.0, gust_max=2.0,
)  # fmt: skip


def test_the_figure8_by_hand_and_by_finite_differences():
    config = make_family("drone_wind", **FIGURE8).config
    a, w = 1.5, 2 * math.pi / 6.0
    t = torch.tensor([0.0, 1.5, 0.7], dtype=torch.float64)
    pos, vel, acc = reference_path(config, t)
    assert_close(pos[0], torch.zeros(2, dtype=torch.float64))  # it starts at the origin
    assert_close(vel[0], torch.tensor([a * w, a * w], dtype=torch.float64))
    # A quarter lap: the right end of the figure-8, (A, 0), moving straight down.
    assert_close(pos[1], torch.tensor([a, 0.0], dtype=torch.float64), atol=1e-12, rtol=0)
    assert_close(vel[1], torch.tensor([0.0, -a * w], dtype=torch.float64), atol=1e-12, rtol=0)
    h = torch.tensor(1e-5, dtype=torch.float64)
    p_plus, v_plus, _ = reference_path(config, t + h)
    p_minus, v_minus, _ = reference_path(config, t - h)
    assert_close((p_plus - p_minus) / (2 * h), vel, atol=1e-7, rtol=0)
    assert_close((v_plus - v_minus) / (2 * h), acc, atol=1e-6, rtol=0)
    # The circle kept its old shape: radius 1 around (-1, 0), 0.5 rad/s.
    circle = make_family("drone_wind", task_kind="track").config
    pos, _, _ = reference_path(circle, torch.tensor([math.pi]))  # s = π/2
    assert_close(pos, torch.tensor([[-1.0, 1.0]]))


def test_changing_winds_keep_the_splits_apart():
    family = make_family("drone_wind", **FIGURE8)
    gen = torch.Generator().manual_seed(0)
    cells = {}
    for split in ("train", "test", "ood"):
        tasks = family.tasks.sample(300, split, gen)
        assert set(family.tasks.split_of(tasks)) == {split}
        cells[split] = set(torch.floor(tasks["wind"][:, 0] / 0.25).long().tolist())
        amp = tasks["gust_amp"][:, 0]
        assert float(amp.min()) >= 0 and float(amp.max()) <= 2.0 and float(amp.std()) > 0.3
    assert not cells["train"] & cells["test"]
    assert min(cells["ood"]) * 0.25 >= 6.0 - 1e-6
    train = family.tasks.sample(4000, "train", gen)["wind"]
    # Uniform over [0, 6] less the held-out cells: the mean of a fine grid of training winds.
    grid = torch.linspace(0, 6, 6001).unsqueeze(1)
    kept = grid[
        torch.tensor([s == "train" for s in family.tasks.split_of(_task(6001) | {"wind": grid})])
    ]
    assert float(train.mean()) == pytest.approx(float(kept.mean()), abs=0.06)
    assert float(train.min()) >= 0.0 and float(train.max()) <= 6.0


def test_the_adaptive_controllers_estimate_converges_to_the_wind_force():
    family = make_family("drone_wind", horizon=200, start_offset=0.0)
    env = DroneWindEnv(1, family.config)
    out = run_controller(family, _task(1, wind=4.0), (4.0, 3.0, 0.0), adaptive_tau=0.25, trace=True)
    estimate = out["estimate"][-1, 0]
    # Hovering at the end, nearly at rest, slightly tilted into the wind: the drag there
    # (about β_x w² = 0.1 · 16 = 1.6 N along x when level).
    env.reset(tasks=_task(1, wind=4.0), seed=0)
    true = env.drag_force(out["state"], torch.tensor([4.0]))[0]
    assert_close(estimate, true, atol=0.03, rtol=0)
    assert float(true[0]) == pytest.approx(1.6, abs=0.2)
    assert float(out["estimate"][5, 0, 0]) < 0.9 * float(true[0])  # it had to learn it
    still = run_controller(family, _task(1, wind=4.0), (4.0, 3.0, 0.0))["rms_error_cm"]
    assert float(out["rms_error_cm"][0]) < 0.5 * float(still[0])


def test_rms_error_of_each_quarter_of_a_flight_by_hand():
    family = make_family("drone_wind", horizon=8, box=3.0)
    obs = torch.zeros(8, 2, 7)
    obs[:, 0, 0] = torch.arange(8.0) / 10  # row 0: error t/10 m at step t
    obs[:3, 1, 1] = 1.0  # row 1: 1 m off, crashed after 3 steps
    traj = _crash_and_finish(obs, crash_step=2)
    m = drone_metrics(traj, family)
    for q in range(4):
        e = torch.tensor([2 * q, 2 * q + 1]) / 10
        assert_close(m[f"rms_error_cm_q{q + 1}"][0, 0], 100 * e.pow(2).mean().sqrt())
    row1 = [1.0, 1.0, 1.0, 9.0, 9.0, 9.0, 9.0, 9.0]  # steps 3..7 after the crash count the box
    for q in range(4):
        expected = 100 * math.sqrt((row1[2 * q] + row1[2 * q + 1]) / 2)
        assert m[f"rms_error_cm_q{q + 1}"][0, 1] == pytest.approx(expected, rel=1e-5)


def test_the_figure8_family_passes_the_conformance_checker():
    check_family("drone_wind", num_envs=4, steps=30, **FIGURE8)


def test_quarters_of_a_horizon_that_four_does_not_divide():
    """Horizon 10: quarters of 3, 2, 3 and 2 steps; a flight that never crashed pays no box."""
    family = make_family("drone_wind", horizon=10, box=3.0)
    obs = torch.zeros(10, 2, 7)
    obs[:, :, 0] = 0.1  # 10 cm off at every step, both rows
    traj = _crash_and_finish(obs, crash_step=9)  # row 1 "crashes" on its last step
    m = drone_metrics(traj, family)
    for q in range(4):
        assert_close(m[f"rms_error_cm_q{q + 1}"][0], torch.tensor([10.0, 10.0]))
