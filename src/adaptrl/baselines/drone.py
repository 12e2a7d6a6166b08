"""Classical controllers for the drone in wind, on the very tasks a learner is evaluated on.

- ``still-air PD``: the cascaded PD hover controller with gains tuned on still air, the
  controller a drone ships with; a steady wind leaves it a steady position error.
- ``PD + integral``: the same with integral action on the position error (gain tuned on
  training winds), the classical fix for a steady disturbance; slow against gusts.
- ``adaptive (force estimate)``: the same PD plus an online estimate of the disturbance force,
  fed forward. Each step the force the model does not explain, m·(measured acceleration) −
  thrust − weight, updates the estimate by recursive least squares with exponential forgetting
  (for a constant force: an exponential average with time constant τ, tuned on training
  winds). The classical adaptive controller the learned ones are measured against (Richards et
  al. 2021 and Neural-Fly, O'Connell et al. 2022, adapt a force model from the same signal).
- ``oracle (knows the wind)``: the same PD plus the exact drag of the true wind fed forward,
  and the task's true mass: what perfect adaptation could reach with this controller.
"""

from __future__ import annotations

from typing import Any

import torch

from adaptrl.envs.base import repeat_tasks
from adaptrl.envs.drone import GRAVITY, DroneWindEnv, HoverController, drone_metrics
from adaptrl.envs.registry import ClassicalStrategies, Family
from adaptrl.rng import task_episode_keys
from adaptrl.stats import summary_row

PD_GRID = ((2.0, 2.0), (4.0, 3.0), (6.0, 4.0), (8.0, 5.0))
KI_GRID = (0.5, 1.0, 2.0, 4.0)
TAU_GRID = (0.1, 0.25, 0.5, 1.0)  # s: forgetting time constants of the force estimate
INTEGRAL_LIMIT = 2.0  # anti-windup: the integral term stays within ± this (m s)


@torch.no_grad()
def run_controller(
    family: Family,
    tasks: dict[str, torch.Tensor],
    gains: tuple[float, float, float] = (4.0, 3.0, 0.0),
    oracle: bool = False,
    episodes: int = 1,
    seed: int = 0,
    adaptive_tau: float = 0.0,
    trace: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-task mean episode return and RMS error in cm over ``episodes`` episodes: [n] each.
    ``adaptive_tau`` > 0: feed forward the online force estimate (module doc) with this
    forgetting time constant in s. ``trace``: also the estimate at every step, [T, n·E, 2],
    and the final state [n·E, 6]."""
    n = next(iter(tasks.values())).shape[0]
    rows = repeat_tasks(tasks, episodes)
    env = DroneWindEnv(n * episodes, family.config)
    kp, kd, ki = gains
    controller = HoverController(family.config, kp=kp, kd=kd, ki=ki)
    keys = task_episode_keys(seed, torch.arange(n), episodes)
    env.reset(tasks=rows, keys=keys)
    integral = torch.zeros(n * episodes, 2)
    alive = torch.ones(n * episodes, dtype=torch.bool)
    returns = torch.zeros(n * episodes)
    sum_sq = torch.zeros(n * episodes)
    c = family.config
    estimate = torch.zeros(n * episodes, 2)
    estimates = []
    for _ in range(c.horizon):
        error, velocity_error, ref_acc = env._errors()
        sum_sq += torch.where(alive, error.pow(2).sum(-1).clamp_max(c.box**2), 0.0)
        integral = (integral + c.dt * error).clamp(-INTEGRAL_LIMIT, INTEGRAL_LIMIT)
        feedforward = None
        if oracle:
            wind = env.wind(env.t.to(torch.float32) * c.dt)
            feedforward = env.drag_force(env.state, wind)
        elif adaptive_tau:
            feedforward = estimate
        thrusts = controller.thrusts(
            error,
            velocity_error,
            env.state[:, 2],
            env.state[:, 5],
            ref_acc,
            integral if ki else None,
            feedforward,
            c.mass * env.tasks["mass"][:, 0:1] if oracle else None,
        )
        actions = env.actions_for(thrusts)
        before = env.state.clone()
        applied = env.commanded(actions)
        _, rewards, terminated, truncated, _ = env.step(actions)
        if adaptive_tau:
            measured = disturbance_force(before, env.state, applied, c)
            estimate = estimate + c.dt / (adaptive_tau + c.dt) * (measured - estimate)
            estimate = torch.where(alive.unsqueeze(-1) & ~terminated.unsqueeze(-1), estimate, 0.0)
            estimates.append(estimate)
        returns += torch.where(alive, rewards, 0.0)
        steps_left_box = torch.where(alive & terminated, c.horizon - env.t, 0)
        sum_sq += steps_left_box * c.box**2
        alive &= ~(terminated | truncated)
        if not alive.any():
            break
    rms_cm = 100.0 * (sum_sq / c.horizon).sqrt()
    out = {
        "return": returns.reshape(n, episodes).mean(1),
        "rms_error_cm": rms_cm.reshape(n, episodes).mean(1),
    }
    if trace:
        out["estimate"] = torch.stack(estimates) if estimates else torch.zeros(0, n * episodes, 2)
        out["state"] = env.state.clone()
    return out


def disturbance_force(before: torch.Tensor, after: torch.Tensor, thrusts: torch.Tensor, c):
    """The force [B, 2] in N that the nominal model (thrust along the body axis, gravity, nominal
    mass) does not explain over one control period: m·Δv/dt − thrust − weight."""
    accel = (after[:, 3:5] - before[:, 3:5]) / c.dt
    phi = 0.5 * (before[:, 2] + after[:, 2])  # the tilt over the period, to first order
    total = thrusts.sum(-1)
    thrust = torch.stack([-total * torch.sin(phi), total * torch.cos(phi)], -1)
    weight = torch.tensor([0.0, -c.mass * GRAVITY])
    return c.mass * accel - thrust - weight


def _row(result: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    return {**summary_row(result["return"], rms_error_cm=result["rms_error_cm"]), **extra}


def drone_controllers(
    family: Family,
    tasks: dict[str, torch.Tensor],
    seed: int = 0,
    tune_tasks: dict[str, torch.Tensor] | None = None,
    episodes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Mean episode return and RMS position error (95% CI over tasks) of each controller.
    PD gains are tuned on ``tune_tasks`` with the wind stilled, the integral gain on
    ``tune_tasks`` as drawn (training winds): never on the reported tasks."""
    tune = tune_tasks if tune_tasks is not None else tasks
    still = {**tune, "wind": torch.zeros_like(tune["wind"]), "gust_amp": 0 * tune["gust_amp"]}
    kp, kd = max(
        PD_GRID,
        key=lambda g: float(
            run_controller(family, still, (*g, 0.0), seed=seed + 1)["return"].mean()
        ),
    )
    ki = max(
        KI_GRID,
        key=lambda k: float(
            run_controller(family, tune, (kp, kd, k), seed=seed + 1)["return"].mean()
        ),
    )
    tau = max(
        TAU_GRID,
        key=lambda t: float(
            run_controller(family, tune, (kp, kd, 0.0), seed=seed + 1, adaptive_tau=t)[
                "return"
            ].mean()
        ),
    )
    return {
        "still-air PD": _row(
            run_controller(family, tasks, (kp, kd, 0.0), False, episodes, seed), kp=kp, kd=kd
        ),
        "PD + integral": _row(
            run_controller(family, tasks, (kp, kd, ki), False, episodes, seed), ki=ki
        ),
        "adaptive (force estimate)": _row(
            run_controller(family, tasks, (kp, kd, 0.0), False, episodes, seed, tau), tau=tau
        ),
        "oracle (knows the wind)": _row(
            run_controller(family, tasks, (kp, kd, 0.0), True, episodes, seed)
        ),
    }


DRONE_CONTROLLERS = ClassicalStrategies(drone_controllers, unit="episode")
"""The drone family's controllers; each row is a mean episode return (they do not learn across
flights)."""

__all__ = ["DRONE_CONTROLLERS", "drone_controllers", "drone_metrics", "run_controller"]
