"""A legged robot on new terrain: HalfCheetah running over a procedurally generated heightfield.

The project's first example of a task distribution (a robot that learns on varied terrains and
adapts to a new one), in the way locomotion papers test it (legged_gym, Rudin et al. 2022; RMA,
Kumar et al. 2021): rough ground, slopes and steps from a few parameters, plus the ground's
friction. gymnasium's HalfCheetah-v5 with its floor plane replaced by a MuJoCo ``hfield``; the
robot is planar, so the profile varies along x and is the same across the field's width.

A task: ``roughness`` (m, amplitude of smooth random bumps), ``slope`` (degrees of hills of
2 m up, 2 m down), ``step`` (m, stairs of 1 m treads, three up then three down), ``friction``
(the ground's sliding friction) and ``terrain_seed`` (which bumps). The first 1.5 m are flat, so
the robot starts on the ground, never inside it. The policy does not see the terrain: it must
infer it from how its body moves (proprioception only), which is what adaptation is for.

Splits: the four parameters, scaled to [0, 1] over their training ranges, are cut into cells of
``cell_width``; ``test_fraction`` of the cells are held out (``HashSplit``). ``ood``: rougher,
steeper or higher-stepped than any training terrain (one parameter up to 50% beyond its range).
Reward: forward velocity − 0.1·‖a‖² (gymnasium's HalfCheetah reward: forward progress minus the
control cost). Horizon 200 (10 s).
"""

from __future__ import annotations

import functools
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from adaptrl.envs.base import SPLITS, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.envs.locomotion import _LocomotionEnv
from adaptrl.errors import ConfigError

PARAMS = ("roughness", "slope", "step", "friction")
FIELD_HALF_LENGTH = 60.0  # m: the field spans x in [-10, 110], 10 s at 11 m/s
FIELD_CENTRE = 50.0
FIELD_TOP = 1.5  # m: the highest point a heightfield value of 1 reaches
RESOLUTION = 0.1  # m between heightfield samples along x
FLAT_START = 1.5  # m of flat ground before the terrain begins


@dataclass(frozen=True)
class TerrainConfig:
    """Ranges of the terrain family's training tasks."""

    horizon: int = 200
    """Steps per episode (dt = 0.05 s)."""
    max_roughness: float = 0.08
    """Bumps of training terrains reach U[0, max_roughness] m."""
    max_slope: float = 10.0
    """Hills of training terrains rise at U[0, max_slope] degrees."""
    max_step: float = 0.08
    """Stairs of training terrains have risers of U[0, max_step] m."""
    friction_range: tuple[float, float] = (0.3, 1.0)
    """The ground's sliding friction U[low, high] (HalfCheetah's own floor: 0.4). The floor has
    contact priority, so its friction is the contact's (MuJoCo otherwise takes the larger of
    the two geoms', and the robot's feet have 0.4)."""
    ood_factor: float = 1.5
    """``ood`` terrains take one of roughness, slope, step beyond training, up to this factor."""
    cell_width: float = 0.25
    """Width of the held-out cells on the [0, 1]-scaled parameters."""
    test_fraction: float = 0.2
    """Fraction of the cells held out for the test split."""
    ctrl_cost_weight: float = 0.1
    """Reward pays this * sum(a^2) (gymnasium's HalfCheetah)."""

    def __post_init__(self) -> None:
        if self.horizon <= 0:
            raise ConfigError(f"env.horizon must be > 0, got {self.horizon}")
        if not 0 <= self.max_roughness <= 0.3:
            raise ConfigError(f"env.max_roughness must lie in [0, 0.3] m, got {self.max_roughness}")
        if not 0 <= self.max_slope <= 30:
            raise ConfigError(f"env.max_slope must lie in [0, 30] degrees, got {self.max_slope}")
        if not 0 <= self.max_step <= 0.2:
            raise ConfigError(f"env.max_step must lie in [0, 0.2] m, got {self.max_step}")
        low, high = self.friction_range
        if not 0 < low <= high <= 3:
            raise ConfigError(
                f"env.friction_range must be [low, high] with 0 < low <= high <= 3, got "
                f"{list(self.friction_range)}"
            )
        if not 1 < self.ood_factor <= 3:
            raise ConfigError(f"env.ood_factor must lie in (1, 3], got {self.ood_factor}")
        if not 0 < self.test_fraction < 1 or not 0 < self.cell_width <= 1:
            raise ConfigError("env.test_fraction must lie in (0, 1) and env.cell_width in (0, 1]")
        if self.ctrl_cost_weight < 0:
            raise ConfigError("env.ctrl_cost_weight must be >= 0")
        highest = self.ood_factor * (
            self.max_roughness + 2 * math.tan(math.radians(self.max_slope)) + 3 * self.max_step
        )
        if highest > FIELD_TOP:
            raise ConfigError(
                f"terrains of these ranges reach {highest:.2f} m, above the field's {FIELD_TOP} "
                "m: lower env.max_slope, max_step or max_roughness"
            )


class TerrainTasks(TaskDistribution):
    """Terrain parameters per task; held-out cells of the scaled parameters, and ``ood``."""

    splits = ("train", "test", "ood")

    def __init__(self, config: TerrainConfig) -> None:
        self.config = config
        self.hash = HashSplit(4, config.cell_width, config.test_fraction)

    def _scale(self) -> torch.Tensor:
        c = self.config
        low, high = c.friction_range
        return torch.tensor([c.max_roughness, c.max_slope, c.max_step, high - low]).clamp_min(1e-9)

    def _offset(self) -> torch.Tensor:
        return torch.tensor([0.0, 0.0, 0.0, self.config.friction_range[0]])

    def _scaled(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self._offset()) / self._scale()

    def _prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, 4, generator=generator) * self._scale() + self._offset()

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        if split not in (*SPLITS, "ood"):
            raise ValueError(f"split must be train, test or ood, got {split!r}")
        if split == "ood":
            params = self._prior(n, generator)
            which = torch.randint(3, (n,), generator=generator)  # roughness, slope or step
            beyond = 1 + (self.config.ood_factor - 1) * torch.rand(n, generator=generator)
            params[torch.arange(n), which] = self._scale()[which] * (beyond + 1e-3)
        else:
            scaled = self.hash.sample(
                n, split, lambda m, g: self._scaled(self._prior(m, g)), generator
            )
            params = scaled * self._scale() + self._offset()
        seeds = torch.randint(2**24, (n, 1), generator=generator).float()  # exact in float32
        tasks = {name: params[:, i : i + 1] for i, name in enumerate(PARAMS)}
        return {**tasks, "terrain_seed": seeds}

    def split_of(self, tasks: Tasks) -> list[str]:
        params = torch.cat([tasks[k] for k in PARAMS], -1)
        scaled = self._scaled(params)
        beyond = (scaled[:, :3] > 1 + 1e-6).any(-1)
        labels = self.hash.split_of(scaled.clamp(0, 1))
        return ["ood" if b else lab for b, lab in zip(beyond.tolist(), labels)]


def _scalar(task: dict[str, Any], key: str) -> float:
    """One task's parameter as a float (a [1] array from the sampler, or a plain number)."""
    return float(np.asarray(task[key]).reshape(-1)[0])


def terrain_profile(task: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Ground height in m at positions ``x`` (m) of one task: flat before ``FLAT_START``, then
    bumps + hills + stairs, never below 0. Deterministic in the task (its ``terrain_seed``)."""
    d = np.clip(x - FLAT_START, 0.0, None)
    rng = np.random.default_rng(int(_scalar(task, "terrain_seed")))
    # Bumps: white noise smoothed over ~0.4 m, rescaled to [0, roughness].
    noise = np.convolve(rng.uniform(-1, 1, x.size + 8), np.hanning(9), mode="valid")[: x.size]
    noise = (noise - noise.min()) / max(np.ptp(noise), 1e-9)
    bumps = _scalar(task, "roughness") * noise
    # Hills: a triangle wave, 2 m up then 2 m down at the task's slope.
    rise = math.tan(math.radians(_scalar(task, "slope")))
    phase = np.mod(d, 4.0)
    hills = rise * np.where(phase < 2.0, phase, 4.0 - phase)
    # Stairs: treads of 1 m, three risers up then three down.
    tread = np.floor(d).astype(int) % 6
    stairs = _scalar(task, "step") * np.where(tread <= 3, tread, 6 - tread)
    height = bumps + hills + stairs
    return np.where(x < FLAT_START, 0.0, height)


@functools.cache
def _terrain_xml() -> str:
    """gymnasium's half_cheetah.xml with the floor plane replaced by the heightfield, written
    once per process (gymnasium builds MuJoCo envs from a file path)."""
    source = Path(gym.__file__).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    xml = source.read_text()
    ncol = int(round(2 * FIELD_HALF_LENGTH / RESOLUTION)) + 1
    field = (
        f'<hfield name="terrain" nrow="3" ncol="{ncol}" '
        f'size="{FIELD_HALF_LENGTH} 2 {FIELD_TOP} 0.5"/>'
    )
    xml = xml.replace("<asset>", "<asset>\n    " + field, 1)
    floor = re.compile(r'<geom[^>]*name="floor"[^>]*/>')
    if not floor.search(xml):
        raise RuntimeError("gymnasium's half_cheetah.xml has no floor geom to replace")
    xml = floor.sub(
        f'<geom conaffinity="1" condim="3" hfield="terrain" name="floor" priority="1" '
        f'pos="{FIELD_CENTRE} 0 0" rgba="0.8 0.9 0.8 1" type="hfield"/>',
        xml,
    )
    path = Path(tempfile.mkdtemp(prefix="adaptrl-terrain-")) / "half_cheetah_terrain.xml"
    path.write_text(xml)
    return str(path)


def field_x(ncol: int) -> np.ndarray:
    """x (m) of the heightfield's columns."""
    return FIELD_CENTRE + np.linspace(-FIELD_HALF_LENGTH, FIELD_HALF_LENGTH, ncol)


class TerrainEnv(_LocomotionEnv):
    """HalfCheetah-v5 on the task's heightfield and friction; reward forward velocity −
    ``ctrl_cost_weight``·‖a‖²; never terminates."""

    env_id, obs_dim, act_dim, direct = "HalfCheetah-v5", 17, 6, True

    @classmethod
    def make_kwargs(cls, config: Any) -> dict[str, Any]:
        return {"xml_file": _terrain_xml(), "ctrl_cost_weight": config.ctrl_cost_weight}

    def apply_task(self, env: gym.Env, task: dict[str, np.ndarray]) -> gym.Env:
        model = env.unwrapped.model
        ncol = int(model.hfield_ncol[0])
        heights = terrain_profile(task, field_x(ncol)) / FIELD_TOP
        model.hfield_data[:] = np.tile(np.clip(heights, 0.0, 1.0), int(model.hfield_nrow[0]))
        floor = env.unwrapped.data.model.geom("floor").id
        model.geom_friction[floor, 0] = _scalar(task, "friction")
        return env

    def step_rewards(self, x_velocity, qpos, actions, tasks):
        return x_velocity - self.ctrl_costs(actions), np.zeros(len(qpos), bool)


__all__ = ["PARAMS", "TerrainConfig", "TerrainEnv", "TerrainTasks", "terrain_profile"]
