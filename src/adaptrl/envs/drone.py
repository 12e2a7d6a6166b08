"""A planar quadrotor holding its position, or tracking a circle or a figure-8, in wind it has
never met (steady, or changing during a flight).

Dynamics: the planar quadrotor (PVTOL) of Richards et al. 2021, "Adaptive-Control-Oriented
Meta-Learning for Nonlinear Systems" (RSS; authors' code: spenrich/Control-Oriented-Meta-Learning,
``utils/pvtol.py``): state (x, y, φ, ẋ, ẏ, φ̇), two rotor thrusts T₁, T₂ along the body's up axis,
gravity, and quadratic drag from the *air-relative* velocity in the body frame,
f = −R(β ⊙ v_b|v_b|), v_b = Rᵀ(ẋ − w, ẏ), β = (0.1, 1) (the issue's values; the authors' code uses
(0.01, 1) plus a rotational drag term left out here). Training winds blow along x with speed
w ~ 6·Beta(5, 9) m/s (the authors' code draws 3·Beta(5, 9)). Mass and drag may also vary per task
(``mass_range``, ``drag_range``: sim-to-real randomisation).

Differences from the paper, on purpose: rotor thrusts are bounded ([0, thrust_max] each) instead
of the paper's unbounded control-affine inputs; a rollout is a control loop at 1/dt with
semi-implicit Euler substeps; the episode ends on a crash (tilt beyond 80°) or on leaving the box.

Actions: ``residual=False`` maps a ∈ [-1, 1]² to thrusts T = (a + 1)/2 · thrust_max. With
``residual=True`` (the presets) the action is added, in the same units, to what the still-air
hover controller (``HoverController``) commands: the policy learns what the wind does to a
stabilised drone instead of learning to stabilise it first (residual RL, e.g. Johannink et al.
2019). Reward: −‖position error‖ − control_cost·‖a‖²; a crash costs the box's half-width for
every step left, so leaving early never pays.

Splits: held-out winds from hashed 0.25 m/s cells of the training prior (disjoint by
construction), and ``ood``: steady winds above the training range (6–9 m/s) and sinusoidal gusts
around 2–4 m/s. With ``gust_max`` > 0 (winds that change during a flight, the figure-8 preset)
every split adds a slow sinusoid of up to ``gust_max`` m/s, and ``ood`` takes steady winds up to
3 m/s beyond ``wind_max``. Metric: RMS position error in cm per episode and per quarter of it
(``drone_metrics``), a crashed episode counting the box's half-width after the crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adaptrl.envs.base import BatchedMetaEnv, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.errors import ConfigError

GRAVITY = 9.81
MAX_TILT = math.radians(80.0)


@dataclass(frozen=True)
class DroneWindConfig:
    """Settings of the drone-in-wind family."""

    horizon: int = 100
    """Control steps per episode."""
    dt: float = 0.05
    """Control period in seconds (20 Hz)."""
    substeps: int = 5
    """Integration substeps per control step."""
    mass: float = 1.0
    """Nominal mass in kg."""
    inertia: float = 0.01
    """Moment of inertia about the roll axis in kg m²."""
    arm: float = 0.2
    """Distance from the centre to each rotor in m."""
    thrust_max: float = 9.81
    """Upper bound of each rotor's thrust in N (lower bound 0); 2·thrust_max must lift the drone."""
    drag: tuple[float, float] = (0.1, 1.0)
    """Quadratic drag coefficients β along the body's x and y axes."""
    wind_max: float = 6.0
    """Largest training wind in m/s (see ``wind_prior``)."""
    wind_prior: str = "beta"
    """Training winds: beta (w = wind_max · Beta(5, 9), Richards et al.'s shape) or uniform
    (w ~ U[0, wind_max]: strong winds as often as weak ones)."""
    gust_max: float = 0.0
    """Wind that changes during a flight: each training task adds a sinusoid of amplitude
    U[0, gust_max] m/s and frequency U[0.05, 0.3] Hz to its steady wind (0: steady winds)."""
    mass_range: float = 0.0
    """Per-task mass scaling in [1 - r, 1 + r] (0: nominal mass for every task)."""
    drag_range: float = 0.0
    """Per-task drag scaling in [1 - r, 1 + r]."""
    task_kind: str = "hover"
    """hover (hold the origin), track (follow a circle) or figure8 (a lemniscate of Gerono,
    x = A sin ωt, y = A sin ωt cos ωt, as Neural-Fly's figure-8)."""
    path_size: float = 1.0
    """Circle radius, or the figure-8's half-width A, in m."""
    path_period: float = 4 * math.pi
    """Seconds per lap of the circle or figure-8 (4π: ω = 0.5 rad/s)."""
    pd_max_tilt: float = 0.6
    """Largest tilt in rad the still-air PD commands (the base of residual actions)."""
    start_offset: float = 0.5
    """Episodes start at rest at a position offset U[-s, s]² from the target."""
    box: float = 3.0
    """Half-width of the allowed box around the target; leaving it ends the episode."""
    control_cost: float = 0.01
    """Weight of ‖a‖² in the reward."""
    residual: bool = True
    """Actions are corrections to the still-air hover controller's thrusts (see module doc)."""

    def __post_init__(self) -> None:
        for name in ("horizon", "dt", "substeps", "mass", "inertia", "arm", "thrust_max", "box"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"env.{name} must be > 0, got {getattr(self, name)!r}")
        heaviest = self.mass * (1 + self.mass_range)
        if 2 * self.thrust_max <= heaviest * GRAVITY:
            raise ConfigError(
                f"env.thrust_max={self.thrust_max} N per rotor cannot lift {heaviest:.3g} kg "
                f"(mass x (1 + mass_range); needs > {heaviest * GRAVITY / 2:.2f} N)"
            )
        if len(self.drag) != 2 or any(b < 0 for b in self.drag):
            raise ConfigError(f"env.drag must be two coefficients >= 0, got {list(self.drag)}")
        if self.wind_max < 0 or self.gust_max < 0:
            raise ConfigError(
                f"env.wind_max and env.gust_max are wind speeds in m/s and must be >= 0, got "
                f"{self.wind_max} and {self.gust_max}"
            )
        if self.wind_prior not in ("beta", "uniform"):
            raise ConfigError(f"env.wind_prior must be beta or uniform, got '{self.wind_prior}'")
        if not self.path_period > 0 or not self.path_size > 0:
            raise ConfigError(
                f"env.path_period (s per lap) and env.path_size (m) must be > 0, got "
                f"{self.path_period} and {self.path_size}"
            )
        if not 0 < self.pd_max_tilt < MAX_TILT:
            raise ConfigError(f"env.pd_max_tilt must lie in (0, {MAX_TILT:.2f}) rad")
        for name in ("mass_range", "drag_range"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"env.{name} must lie in [0, 1), got {getattr(self, name)}")
        if self.task_kind not in ("hover", "track", "figure8"):
            raise ConfigError(
                f"env.task_kind must be hover, track or figure8, got '{self.task_kind}'"
            )
        if not 0 <= self.start_offset < self.box:
            raise ConfigError("env.start_offset must lie in [0, box)")
        if self.control_cost < 0:
            raise ConfigError("env.control_cost must be >= 0")


class DroneWindTasks(TaskDistribution):
    """Wind (steady speed, gust amplitude and frequency), mass and drag scale of each task."""

    splits = ("train", "test", "ood")

    def __init__(self, config: DroneWindConfig) -> None:
        self.config = config
        self.hash = HashSplit(dim=1, cell_width=0.25, test_fraction=0.2)

    def _prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.config.wind_prior == "uniform":
            return torch.rand(n, 1, generator=generator) * self.config.wind_max
        beta = torch.distributions.Beta(torch.tensor(5.0), torch.tensor(9.0))
        u = torch.rand(n, generator=generator)
        # Beta by inverse CDF on a grid: torch's Beta sampler takes no generator.
        grid = torch.linspace(0.0, 1.0, 4097)[1:-1]
        cdf = torch.cumsum(beta.log_prob(grid).exp(), 0)
        cdf = cdf / cdf[-1]
        idx = torch.searchsorted(cdf, u).clamp_max(grid.numel() - 1)
        return (grid[idx] * self.config.wind_max).unsqueeze(-1)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        c = self.config
        if c.gust_max > 0:
            return self._sample_changing(n, split, generator)
        if split == "ood":
            steady = torch.rand(n, 1, generator=generator) < 0.5
            strong = c.wind_max + torch.rand(n, 1, generator=generator) * 3.0
            base = 2.0 + 2.0 * torch.rand(n, 1, generator=generator)
            wind = torch.where(steady, strong, base)
            amp = torch.where(steady, 0.0, 1.0 + 2.0 * torch.rand(n, 1, generator=generator))
            freq = torch.where(steady, 0.0, 0.2 + 0.8 * torch.rand(n, 1, generator=generator))
        else:
            wind = self.hash.sample(n, split, self._prior, generator)
            amp = torch.zeros(n, 1)
            freq = torch.zeros(n, 1)
        mass = 1.0 + c.mass_range * (2 * torch.rand(n, 1, generator=generator) - 1)
        drag = 1.0 + c.drag_range * (2 * torch.rand(n, 1, generator=generator) - 1)
        return {"wind": wind, "gust_amp": amp, "gust_freq": freq, "mass": mass, "drag": drag}

    def _sample_changing(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        """Winds that change during a flight: steady part from the prior's held-out cells, or
        beyond ``wind_max`` for ``ood`` (up to 3 m/s more), plus a slow sinusoid."""
        c = self.config
        if split == "ood":
            wind = c.wind_max + 1e-3 + 3.0 * torch.rand(n, 1, generator=generator)
        else:
            wind = self.hash.sample(n, split, self._prior, generator)
        amp = c.gust_max * torch.rand(n, 1, generator=generator)
        freq = 0.05 + 0.25 * torch.rand(n, 1, generator=generator)
        mass = 1.0 + c.mass_range * (2 * torch.rand(n, 1, generator=generator) - 1)
        drag = 1.0 + c.drag_range * (2 * torch.rand(n, 1, generator=generator) - 1)
        return {"wind": wind, "gust_amp": amp, "gust_freq": freq, "mass": mass, "drag": drag}

    def split_of(self, tasks: Tasks) -> list[str]:
        gusty = tasks["gust_amp"][:, 0] > self.config.gust_max
        strong = tasks["wind"][:, 0] > self.config.wind_max
        labels = self.hash.split_of(tasks["wind"])
        return ["ood" if g or s else lab for g, s, lab in zip(gusty, strong, labels)]


class HoverController:
    """A cascaded PD controller (position -> tilt and thrust -> rotor thrusts), tuned for still
    air; ``integral`` adds integral action on the position error, ``oracle`` feeds forward the
    drag of the true wind. Batched: all rows at once. The classical baselines, and the base of
    residual actions."""

    def __init__(
        self,
        config: DroneWindConfig,
        kp: float = 4.0,
        kd: float = 3.0,
        ki: float = 0.0,
        k_tilt: float = 60.0,
        k_rate: float = 12.0,
    ) -> None:
        self.config = config
        self.max_tilt = config.pd_max_tilt
        self.kp, self.kd, self.ki, self.k_tilt, self.k_rate = kp, kd, ki, k_tilt, k_rate

    def thrusts(
        self,
        error: torch.Tensor,
        velocity_error: torch.Tensor,
        tilt: torch.Tensor,
        rate: torch.Tensor,
        reference_accel: torch.Tensor,
        integral: torch.Tensor | None = None,
        feedforward: torch.Tensor | None = None,
        mass: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Rotor thrusts [B, 2] in N, unclipped. ``feedforward``: a force [B, 2] to cancel."""
        c = self.config
        m = c.mass if mass is None else mass
        accel = reference_accel - self.kp * error - self.kd * velocity_error
        if integral is not None:
            accel = accel - self.ki * integral
        accel[:, 1] += GRAVITY  # a fresh tensor: adding in place saves a constant per call
        force = m * accel
        if feedforward is not None:
            force = force - feedforward
        total = force.norm(dim=-1).clamp_max(2 * c.thrust_max)
        tilt_des = torch.atan2(-force[:, 0], force[:, 1]).clamp(-self.max_tilt, self.max_tilt)
        torque = c.inertia * (self.k_tilt * (tilt_des - tilt) - self.k_rate * rate)
        spread = torque / (2 * c.arm)
        return torch.stack([total / 2 - spread, total / 2 + spread], -1)


def reference_path(config: DroneWindConfig, time_s: torch.Tensor):
    """Target position, velocity and acceleration at ``time_s`` [B]: [B, 2] each, starting at
    the origin. Circle: radius r around (−r, 0); figure-8: (A sin s, A sin s cos s), s = ωt."""
    zeros = torch.zeros(time_s.shape[0], 2, device=time_s.device)
    if config.task_kind == "hover":
        return zeros, zeros, zeros
    omega, a = 2 * math.pi / config.path_period, config.path_size
    s = omega * time_s
    sin, cos = torch.sin(s), torch.cos(s)
    if config.task_kind == "track":
        pos = a * torch.stack([cos - 1.0, sin], -1)
        vel = a * omega * torch.stack([-sin, cos], -1)
        acc = a * omega**2 * torch.stack([-cos, -sin], -1)
        return pos, vel, acc
    sin2, cos2 = torch.sin(2 * s), torch.cos(2 * s)
    pos = a * torch.stack([sin, 0.5 * sin2], -1)
    vel = a * omega * torch.stack([cos, cos2], -1)
    acc = a * omega**2 * torch.stack([-sin, -2.0 * sin2], -1)
    return pos, vel, acc


class DroneWindEnv(BatchedMetaEnv):
    """All rows integrate together in a few tensor ops per substep."""

    def __init__(
        self, num_envs: int, config: DroneWindConfig | None = None, device: Any = "cpu"
    ) -> None:
        super().__init__(num_envs, device)
        self.config = c = config or DroneWindConfig()
        self.horizon = c.horizon
        self.deterministic = True
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (7,), "float32")
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), "float32")
        self._batch_spaces()
        self.state = torch.zeros(num_envs, 6, device=self.device)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.hover = HoverController(c)
        self._drag = torch.tensor(c.drag, device=self.device)  # β, read every substep

    # ----------------------------------------------------------------------------- physics
    def reference(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target position, velocity and acceleration at step t: [B, 2] each."""
        return reference_path(self.config, t.to(torch.float32) * self.config.dt)

    def wind(self, time_s: torch.Tensor) -> torch.Tensor:
        """Wind speed along x at time ``time_s`` [B]: steady plus a sinusoidal gust."""
        task = self.tasks
        gust = task["gust_amp"][:, 0] * torch.sin(2 * math.pi * task["gust_freq"][:, 0] * time_s)
        return task["wind"][:, 0] + gust

    def drag_force(self, state: torch.Tensor, wind: torch.Tensor) -> torch.Tensor:
        """f = −R(β ⊙ v_b|v_b|) with v_b = Rᵀ(ẋ − w, ẏ): [B, 2] in N."""
        phi = state[:, 2]
        cos, sin = torch.cos(phi), torch.sin(phi)
        vx, vy = state[:, 3] - wind, state[:, 4]
        vb = torch.stack([cos * vx + sin * vy, -sin * vx + cos * vy], -1)  # Rᵀ v
        beta = self._drag * self.tasks["drag"]
        db = -beta * vb * vb.abs()
        return torch.stack([cos * db[:, 0] - sin * db[:, 1], sin * db[:, 0] + cos * db[:, 1]], -1)

    def derivative(self, state: torch.Tensor, thrusts: torch.Tensor, wind: torch.Tensor):
        """(ẍ, ÿ, φ̈) [B, 3] under rotor thrusts [B, 2] (N) and wind [B] (m/s)."""
        c = self.config
        m = c.mass * self.tasks["mass"][:, 0]
        phi = state[:, 2]
        total = thrusts.sum(-1)
        drag = self.drag_force(state, wind)
        ax = (-total * torch.sin(phi) + drag[:, 0]) / m
        ay = (total * torch.cos(phi) + drag[:, 1]) / m - GRAVITY
        alpha = (thrusts[:, 1] - thrusts[:, 0]) * c.arm / c.inertia
        return torch.stack([ax, ay, alpha], -1)

    def integrate(self, thrusts: torch.Tensor) -> None:
        """One control period of semi-implicit Euler substeps."""
        c = self.config
        h = c.dt / c.substeps
        for k in range(c.substeps):
            time_s = self.t.to(torch.float32) * c.dt + k * h
            acc = self.derivative(self.state, thrusts, self.wind(time_s))
            vel = self.state[:, 3:] + h * acc
            self.state = torch.cat([self.state[:, :3] + h * vel, vel], -1)

    # ----------------------------------------------------------------------------- env API
    def _errors(self):
        ref_pos, ref_vel, ref_acc = self.reference(self.t)
        return self.state[:, :2] - ref_pos, self.state[:, 3:5] - ref_vel, ref_acc

    def _obs(self) -> torch.Tensor:
        error, velocity_error, _ = self._errors()
        phi = self.state[:, 2:3]
        return torch.cat(
            [error, torch.sin(phi), torch.cos(phi), velocity_error, self.state[:, 5:6]], -1
        )

    def reset(self, *, tasks=None, mask=None, keys=None, seed=None, options=None):
        self._prepare_reset(tasks, keys, seed)
        rows = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        rows = rows if mask is None else mask
        offset = (2 * self.rng.uniform(2, rows) - 1) * self.config.start_offset
        fresh = torch.zeros(self.num_envs, 6, device=self.device)
        fresh[:, :2] = offset
        self.state = torch.where(rows.unsqueeze(-1), fresh, self.state)
        self.t = torch.where(rows, 0, self.t)
        return self._obs(), {}

    def _base_thrusts(self) -> torch.Tensor:
        """What the still-air hover controller commands now (the base of residual actions)."""
        error, velocity_error, ref_acc = self._errors()
        return self.hover.thrusts(
            error, velocity_error, self.state[:, 2], self.state[:, 5], ref_acc
        )

    def commanded(self, actions: torch.Tensor) -> torch.Tensor:
        """Rotor thrusts [B, 2] in N for actions in [-1, 1]², clipped to [0, thrust_max]."""
        c = self.config
        a = actions.clamp(-1.0, 1.0)
        if c.residual:
            thrusts = self._base_thrusts() + a * (c.thrust_max / 2)
        else:
            thrusts = (a + 1.0) * (c.thrust_max / 2)
        return thrusts.clamp(0.0, c.thrust_max)

    def actions_for(self, thrusts: torch.Tensor) -> torch.Tensor:
        """The actions that command ``thrusts`` [B, 2] now (inverse of ``commanded``, clipped):
        lets a classical controller act through ``step`` and pay the same control cost."""
        c = self.config
        if c.residual:
            actions = (thrusts - self._base_thrusts()) / (c.thrust_max / 2)
        else:
            actions = thrusts / (c.thrust_max / 2) - 1.0
        return actions.clamp(-1.0, 1.0)

    def step(self, actions: torch.Tensor):
        c = self.config
        a = actions.clamp(-1.0, 1.0)
        self.integrate(self.commanded(a))
        self.t = self.t + 1
        error, _, _ = self._errors()
        distance = error.norm(dim=-1)
        crashed = (self.state[:, 2].abs() > MAX_TILT) | (error.abs() > c.box).any(-1)
        crashed |= ~torch.isfinite(self.state).all(-1)
        rewards = -distance.clamp_max(c.box) - c.control_cost * a.pow(2).sum(-1)
        rewards = torch.where(crashed, rewards - c.box * (c.horizon - self.t), rewards)
        self.state = torch.where(crashed.unsqueeze(-1), self.state.nan_to_num(), self.state)
        truncated = (self.t >= c.horizon) & ~crashed
        return self._obs(), rewards, crashed, truncated, {}


def drone_metrics(traj, family, tasks: Tasks | None = None) -> dict[str, torch.Tensor]:
    """RMS position error in cm of every episode, and of each quarter of it (``_q1``..``_q4``:
    adaptation within a flight shows as a falling error): [episodes_per_trial, B] each. Steps
    after a crash count as the box's half-width, so that crashing never lowers the error."""
    c = family.config
    error2 = traj.obs[..., :2].pow(2).sum(-1).clamp_max(c.box**2)  # [T, B], before each action
    out = {"rms_error_cm": _rms_cm(traj, error2, c.box, c.horizon)}
    quarter = (
        traj.step_in_episode() * 4
    ) // c.horizon  # which quarter of the horizon each step lies in
    counts = torch.bincount((torch.arange(c.horizon) * 4) // c.horizon, minlength=4)
    for q in range(4):
        steps_in_q = int(counts[q])
        keep = (quarter == q).to(error2.dtype)
        sum_sq = traj.per_episode(error2 * keep)
        present = traj.per_episode(keep * traj.mask)
        missing = (steps_in_q - present).clamp_min(0)  # after a crash: the box
        out[f"rms_error_cm_q{q + 1}"] = 100.0 * ((sum_sq + missing * c.box**2) / steps_in_q).sqrt()
    return out


def _rms_cm(traj, error2: torch.Tensor, box: float, horizon: int) -> torch.Tensor:
    sum_sq = traj.per_episode(error2)
    steps = traj.per_episode(torch.ones_like(error2))
    missing = (horizon - steps).clamp_min(0)
    return 100.0 * ((sum_sq + missing * box**2) / horizon).sqrt()
