"""MuJoCo locomotion families of Finn, Abbeel, Levine 2017 (MAML, §5.3), plus PEARL's Walker.

Built on gymnasium v5 envs (mujoco 3) through ``GymMetaEnv``; the reward is recomputed from
``info`` so it follows the authors' rllab envs (``cbfinn/maml_rl``, ``rllab/envs/mujoco``) rather
than gymnasium's. Horizon 200, as in the paper. Differences from the originals that remain:

* Observations are gymnasium's: HalfCheetah 17-D (qpos[1:], qvel) lacks rllab's torso centre of
  mass (20-D); Ant 105-D (qpos[2:], qvel, clipped cfrc_ext of the 13 non-world bodies) lacks
  rllab's x, y, world-body forces, torso rotation matrix and torso centre of mass (125-D).
* Velocity is gymnasium's finite difference over one control step (dt = 0.05: x of the root for
  HalfCheetah, of the torso for Ant), not rllab's instantaneous torso centre-of-mass velocity.
* The model XMLs, frame skip and reset noise are gymnasium's (qpos + U[-0.1, 0.1], qvel +
  0.1 N(0, 1); rllab: qpos + 0.01 N, qvel + 0.1 N), and MuJoCo 3 replaces mujoco-py 1.31.
* No rllab ``normalize`` wrapper: the action boxes are already [-1, 1], so its scaling is 1.

Importing this module needs only gymnasium: mujoco is imported when the first env is built.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from adaptrl.envs.base import SPLITS, GridSplit, HashSplit, Split, TaskDistribution, Tasks
from adaptrl.envs.gym_adapter import GymMetaEnv
from adaptrl.errors import ConfigError

_MISSING = "MuJoCo families need mujoco; install it with: pip install 'adaptrl[mujoco]'"


class _Validated:
    """Validation shared by every family's config (checks of fields a family lacks pass)."""

    def __post_init__(self) -> None:
        if self.horizon <= 0:
            raise ConfigError(f"env.horizon must be > 0, got {self.horizon}")
        if not 0 < getattr(self, "test_fraction", 0.5) < 1:
            raise ConfigError("env.test_fraction must lie strictly between 0 and 1")
        if getattr(self, "cells", 2) < 2:
            raise ConfigError("env.cells must be >= 2 (one held out, one for training at least)")
        if not 0 < getattr(self, "max_velocity", 1) < getattr(self, "ood_velocity", math.inf):
            raise ConfigError("env.max_velocity must be > 0 and below env.ood_velocity")


# ------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class HalfCheetahVelConfig(_Validated):
    """HalfCheetah running at a goal velocity (defaults: the paper's)."""

    horizon: int = 200
    """Steps per episode."""
    max_velocity: float = 2.0
    """Goal velocities of train/test are U[0, max_velocity] (ProMP and PEARL use 3)."""
    ood_velocity: float = 3.0
    """The ``ood`` split draws goals from (max_velocity, ood_velocity]."""
    cells: int = 20
    """[0, max_velocity] is cut into this many cells; test_fraction of them are held out."""
    test_fraction: float = 0.2
    """Fraction of velocity cells held out for the test split."""
    ctrl_cost_weight: float = 0.05
    """Reward pays ctrl_cost_weight * sum(a^2) (rllab: 0.1 * 0.5)."""


@dataclass(frozen=True)
class HalfCheetahDirConfig(_Validated):
    """HalfCheetah running forward or backward (defaults: the paper's)."""

    horizon: int = 200
    """Steps per episode."""
    ctrl_cost_weight: float = 0.05
    """Reward pays ctrl_cost_weight * sum(a^2) (rllab: 0.1 * 0.5)."""


@dataclass(frozen=True)
class AntVelConfig(_Validated):
    """Ant running at a goal velocity (defaults: the authors' ``ant_env_rand.py``)."""

    horizon: int = 200
    """Steps per episode; it ends earlier when the torso height leaves [0.2, 1]."""
    max_velocity: float = 3.0
    """Goal velocities of train/test are U[0, max_velocity]."""
    ood_velocity: float = 4.0
    """The ``ood`` split draws goals from (max_velocity, ood_velocity]."""
    cells: int = 30
    """[0, max_velocity] is cut into this many cells; test_fraction of them are held out."""
    test_fraction: float = 0.2
    """Fraction of velocity cells held out for the test split."""
    ctrl_cost_weight: float = 0.005
    """Reward pays ctrl_cost_weight * sum(a^2) (rllab: 0.5 * 1e-2)."""
    contact_cost_weight: float = 5e-4
    """Reward pays this * sum(clip(cfrc_ext, -1, 1)^2) over all bodies (rllab: 0.5 * 1e-3)."""
    survive_reward: float = 1.05
    """Paid every step, the last included: rllab's +1 in the forward reward plus its 0.05."""


@dataclass(frozen=True)
class AntDirConfig(_Validated):
    """Ant running forward or backward (defaults: the authors' ``ant_env_rand_direc.py``)."""

    horizon: int = 200
    """Steps per episode; it ends earlier when the torso height leaves [0.2, 1]."""
    ctrl_cost_weight: float = 0.005
    """Reward pays ctrl_cost_weight * sum(a^2) (rllab: 0.5 * 1e-2)."""
    contact_cost_weight: float = 5e-4
    """Reward pays this * sum(clip(cfrc_ext, -1, 1)^2) over all bodies (rllab: 0.5 * 1e-3)."""
    survive_reward: float = 0.05
    """Paid every step; the authors' direction env has only 0.05 (no +1, unlike the goal env)."""


@dataclass(frozen=True)
class WalkerParamsConfig(_Validated):
    """Walker2d with randomised dynamics (PEARL / ProMP ``walker2d_rand_params``)."""

    horizon: int = 200
    """Steps per episode; it ends earlier when the walker falls (gymnasium's health check)."""
    log_scale_limit: float = 3.0
    """Each multiplier is base ** U[-limit, limit] (base 1.3 for damping, 1.5 otherwise)."""
    cell_width: float = 0.5
    """Width of the hash cells over the four mean log-multipliers that define the splits."""
    test_fraction: float = 0.2
    """Fraction of hash cells held out for the test split."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.log_scale_limit <= 0 or self.cell_width <= 0:
            raise ConfigError("env.log_scale_limit and env.cell_width must be > 0")


# --------------------------------------------------------------------------------------- tasks
class VelocityTasks(TaskDistribution):
    """Goal velocities; test goals lie in held-out cells spread evenly over the range (every
    fifth cell of 0.1, ``GridSplit(layout="interleaved")``), ``ood`` goals beyond the training
    range."""

    splits = ("train", "test", "ood")

    def __init__(self, config: Any) -> None:
        self.config = config
        # Interleaved: 4 random cells of 20 once held out only goals in 1.3-2.0 (mean 1.62 vs
        # 0.81 for training), which made the held-out split harder, not just new.
        self.grid = GridSplit(
            0.0,
            config.max_velocity,
            dim=1,
            cells=config.cells,
            test_fraction=config.test_fraction,
            layout="interleaved",
        )

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        c = self.config
        if split == "ood":
            u = torch.rand(n, generator=generator, device=generator.device)
            v = c.ood_velocity - u * (c.ood_velocity - c.max_velocity)  # (max, ood]
            v = v.clamp_min(math.nextafter(c.max_velocity, math.inf))  # float32 rounding
        else:
            v = self.grid.sample(n, split, generator)[:, 0]
        return {"velocity": v.float()}

    def split_of(self, tasks: Tasks) -> list[str]:
        v = tasks["velocity"].reshape(-1)
        labels = self.grid.split_of(v.reshape(-1, 1))
        beyond = (v > self.config.max_velocity).tolist()
        return ["ood" if b else s for b, s in zip(beyond, labels)]


class DirectionTasks(TaskDistribution):
    """Direction +1 or -1 with equal probability: the only two tasks there are.

    The paper holds out no direction (both are trained on; meta-test runs new episodes). Here a
    task is (direction, seed_stream): test tasks carry ``seed_stream = 1``, which shifts their
    reset seeds by 2**31, so test episodes start from initial states drawn with seeds training
    never uses (training seeds are 31-bit). Disjoint by construction, and ``split_of`` can tell
    a test task from a training one although both run the same two directions.
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        dev = generator.device
        u = torch.rand(n, generator=generator, device=dev)
        direction = torch.where(u < 0.5, -1.0, 1.0)
        stream = torch.full((n,), float(split == "test"), device=dev)
        return {"direction": direction, "seed_stream": stream}

    def split_of(self, tasks: Tasks) -> list[str]:
        return ["test" if s > 0.5 else "train" for s in tasks["seed_stream"].tolist()]


# One class per shape of task; each family's config gives the ranges.
HalfCheetahVelTasks = AntVelTasks = VelocityTasks
HalfCheetahDirTasks = AntDirTasks = DirectionTasks


# Walker2d-v5 model sizes: 8 bodies (world included), 9 dofs, 8 geoms (floor included).
_WALKER_PARAMS = {  # name -> (shape, base of the multiplier), as rand_param_envs' RandomEnv
    "body_mass": ((8,), 1.5),
    "body_inertia": ((8, 3), 1.5),
    "dof_damping": ((9,), 1.3),
    "geom_friction": ((8, 3), 1.5),
}


class WalkerParamsTasks(TaskDistribution):
    """Per-element multipliers of mass, inertia, damping and friction (``rand_param_envs``).

    Splits hash the four group means of the log-multipliers (``HashSplit``, 4-D cells), so a test
    task's overall heaviness / stiffness / slipperiness lies in a cell training never samples.
    Means run over all elements, the world body and free root dofs included (multiplying their
    zero mass or damping changes nothing, as in the original sampler).
    """

    def __init__(self, config: WalkerParamsConfig) -> None:
        self.config = config
        self.hash = HashSplit(4, config.cell_width, config.test_fraction)

    @staticmethod
    def _summary(tasks: Tasks) -> torch.Tensor:
        logs = [
            tasks[k].double().log().mean(-1) / math.log(base)
            for k, (_, base) in _WALKER_PARAMS.items()
        ]
        return torch.stack(logs, -1)

    def sample(self, n: int, split: Split, generator: torch.Generator) -> Tasks:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        dev, lim = generator.device, self.config.log_scale_limit
        want_test = split == "test"
        chunks: list[Tasks] = []
        have = 0
        while have < n:
            m = 4 * n + 16
            draw = {}
            for k, (shape, base) in _WALKER_PARAMS.items():
                u = torch.rand(m, math.prod(shape), generator=generator, device=dev)
                draw[k] = (base ** (lim * (2 * u - 1))).float()
            keep = self.hash.is_test(self._summary(draw)).to(dev) == want_test
            chunks.append({k: v[keep] for k, v in draw.items()})
            have += int(keep.sum())
        return {k: torch.cat([c[k] for c in chunks])[:n] for k in _WALKER_PARAMS}

    def split_of(self, tasks: Tasks) -> list[str]:
        return self.hash.split_of(self._summary(tasks))


# ---------------------------------------------------------------------------------------- envs
_TOTAL_MASS = re.compile(r'\s+settotalmass="([^"]+)"')


@functools.cache
def _quiet_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """gymnasium's spec of ``env_id`` with its env class compiling the model as mujoco 3 asks.

    HalfCheetah's XML sets ``settotalmass``, deprecated in mujoco 3: each build printed a
    warning (800 lines before a training's first iteration) and wrote MUJOCO_LOG.TXT into the
    working directory (issue 26)."""
    spec = gym.spec(env_id)
    base = gym.envs.registration.load_env_creator(spec.entry_point)
    env_cls = type(base.__name__, (base,), {"_initialize_simulation": _initialize_simulation})
    return dataclasses.replace(spec, entry_point=env_cls)


def _initialize_simulation(self: Any) -> tuple[Any, Any]:
    """gymnasium's ``MujocoEnv._initialize_simulation`` with ``settotalmass`` applied after
    compiling: ``mj_setTotalmass``, ``mj_setConst`` and the compiler's mean mass and inertia,
    which those leave alone. The model equals the compiler's bit for bit (tested)."""
    import mujoco

    _route_warnings(mujoco)
    xml = Path(self.fullpath).read_text()
    total = _TOTAL_MASS.search(xml)
    if total is None:
        model = mujoco.MjModel.from_xml_path(self.fullpath)
    else:
        model = mujoco.MjModel.from_xml_string(xml[: total.start()] + xml[total.end() :])
        mujoco.mj_setTotalmass(model, float(total.group(1)))
    data = mujoco.MjData(model)
    if total is not None:
        mujoco.mj_setConst(model, data)
        # the compiler's statistics: sequential sums, as in mujoco's C
        model.stat.meanmass = sum(model.body_mass[1:].tolist()) / (model.nbody - 1)
        model.stat.meaninertia = sum(model.dof_M0.tolist()) / model.nv
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
    return model, data


def _route_warnings(mujoco: Any) -> None:
    """MuJoCo's warnings as Python warnings: by default it appends them to MUJOCO_LOG.TXT in
    the working directory. A handler the user installed is kept."""
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(
            lambda message: warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)
        )


class _SeedStream(gym.Wrapper):
    """Shifts reset seeds by ``stream * 2**31`` (the held-out episodes of the direction tasks)."""

    stream = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            seed += self.stream << 31
        return self.env.reset(seed=seed, options=options)


class _LocomotionEnv(GymMetaEnv):
    """One gymnasium MuJoCo env per row; spaces are static, so sizing a policy builds none.

    Families that set ``direct = True`` are stepped on MuJoCo itself: a loop over rows that only
    sets the controls and calls ``mj_step``, then one observation, velocity and reward
    computation for all rows in numpy (``observe``, ``step_rewards``). gymnasium's per-row step
    cost a quarter of the simulator's time again in Python (wrappers, an ``info`` dict, a
    per-row reward); resets, rare, stay gymnasium's. The direct step equals gymnasium's (same
    ``mj_step`` calls on the same data, tested); it skips ``mj_rnePostConstraint``, whose contact
    forces only Ant reads, so Ant keeps gymnasium's step.
    """

    env_id = ""
    obs_dim = act_dim = 0
    direct = False

    @classmethod
    def make_kwargs(cls, config: Any) -> dict[str, Any]:
        return {}

    @classmethod
    def make_single(cls, config: Any) -> gym.Env:
        try:
            kw = cls.make_kwargs(config)
            env = gym.make(
                _quiet_spec(cls.env_id),
                max_episode_steps=config.horizon,
                disable_env_checker=True,
                **kw,
            )
        except (gym.error.DependencyNotInstalled, ImportError):
            raise ConfigError(_MISSING) from None
        return _SeedStream(env)

    @classmethod
    def spaces(cls, config: Any) -> tuple[gym.Space, gym.Space]:
        obs = spaces.Box(-np.inf, np.inf, (cls.obs_dim,), np.float64)
        return obs, spaces.Box(-1.0, 1.0, (cls.act_dim,), np.float32)

    def apply_task(self, env: gym.Env, task: dict[str, np.ndarray]) -> gym.Env:
        env.stream = int(task["seed_stream"]) if "seed_stream" in task else 0
        return env

    # ---- the direct step (``direct = True``)
    def set_tasks(self, tasks: Tasks) -> None:
        super().set_tasks(tasks)
        self._task_rows = {k: v.cpu().numpy() for k, v in tasks.items()}
        inner = [env.unwrapped for env in self.envs]
        self._sims = [(e.model, e.data) for e in inner]
        self._frame_skip, self._dt = inner[0].frame_skip, inner[0].dt

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Observations of rows in (n, nq) positions and (n, nv) velocities (gymnasium's:
        positions without the root's x, then velocities)."""
        return np.concatenate((qpos[:, 1:], qvel), axis=1)

    def step_rewards(
        self, x_velocity: np.ndarray, qpos: np.ndarray, actions: np.ndarray, tasks: Tasks
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rewards and terminations of n rows (``tasks``: numpy arrays of those rows' tasks)."""
        raise NotImplementedError

    def ctrl_costs(self, actions: np.ndarray) -> np.ndarray:
        return self.config.ctrl_cost_weight * np.einsum("ij,ij->i", actions, actions)

    def step(self, actions: torch.Tensor):
        if not self.direct:
            return super().step(actions)
        import mujoco

        space = self.single_action_space
        acts = np.clip(actions.detach().cpu().numpy(), space.low, space.high)
        rows = np.flatnonzero(~self._done)
        n, nq = len(rows), self._sims[0][0].nq
        x_before = np.empty(n)
        qpos, qvel = np.empty((n, nq)), np.empty((n, self._sims[0][0].nv))
        frame_skip = self._frame_skip
        for j, i in enumerate(rows.tolist()):  # the only per-row work: controls and mj_step
            model, data = self._sims[i]
            x_before[j] = data.qpos[0]
            data.ctrl[:] = acts[i]
            mujoco.mj_step(model, data, nstep=frame_skip)
            qpos[j], qvel[j] = data.qpos, data.qvel
        x_velocity = (qpos[:, 0] - x_before) / self._dt
        tasks = {k: v[rows] for k, v in self._task_rows.items()}
        r, term = self.step_rewards(x_velocity, qpos, acts[rows], tasks)
        B = self.num_envs
        rewards = np.zeros(B, dtype=np.float32)
        terminated, truncated = np.zeros(B, dtype=bool), np.zeros(B, dtype=bool)
        self._obs[rows] = self.observe(qpos, qvel)
        rewards[rows] = r
        self._t[rows] += 1
        terminated[rows] = term
        truncated[rows] = (self._t[rows] >= self.horizon) & ~term
        self._done |= terminated | truncated
        return self._outputs(rewards, terminated, truncated)


class HalfCheetahVelEnv(_LocomotionEnv):
    """Reward -|v - goal| - 0.05 sum(a^2); never terminates (rllab ``half_cheetah_env_rand``)."""

    env_id, obs_dim, act_dim, direct = "HalfCheetah-v5", 17, 6, True

    def step_rewards(self, x_velocity, qpos, actions, tasks):
        goal = tasks["velocity"].astype(np.float64)
        return -np.abs(x_velocity - goal) - self.ctrl_costs(actions), np.zeros(len(qpos), bool)


class HalfCheetahDirEnv(_LocomotionEnv):
    """Reward direction * v - 0.05 sum(a^2) (rllab ``half_cheetah_env_rand_direc``)."""

    env_id, obs_dim, act_dim, direct = "HalfCheetah-v5", 17, 6, True

    def step_rewards(self, x_velocity, qpos, actions, tasks):
        r = tasks["direction"].astype(np.float64) * x_velocity - self.ctrl_costs(actions)
        return r, np.zeros(len(qpos), bool)


class _AntEnv(_LocomotionEnv):
    """Ant-v5 with contact forces in the observation; terminates when the torso height leaves
    [0.2, 1]. Costs come from gymnasium's ``info`` with the authors' weights."""

    env_id, obs_dim, act_dim = "Ant-v5", 105, 8

    @classmethod
    def make_kwargs(cls, config: Any) -> dict[str, Any]:
        return {
            "ctrl_cost_weight": config.ctrl_cost_weight,
            "contact_cost_weight": config.contact_cost_weight,
            "healthy_z_range": (0.2, 1.0),
            "include_cfrc_ext_in_observation": True,
        }

    def costs(self, info: dict) -> float:
        """``info`` holds the costs negated; ``survive_reward`` replaces gymnasium's health
        bonus, which is 0 on the terminating step where rllab still pays it."""
        return self.config.survive_reward + info["reward_ctrl"] + info["reward_contact"]


class AntVelEnv(_AntEnv):
    """Reward -|v - goal| + 1.05 - costs (rllab ``ant_env_rand``)."""

    def reward(self, reward: float, info: dict, action: np.ndarray, task: dict) -> float:
        return -abs(float(info["x_velocity"]) - float(task["velocity"])) + self.costs(info)


class AntDirEnv(_AntEnv):
    """Reward direction * v + 0.05 - costs (rllab ``ant_env_rand_direc``)."""

    def reward(self, reward: float, info: dict, action: np.ndarray, task: dict) -> float:
        return float(task["direction"]) * float(info["x_velocity"]) + self.costs(info)


class WalkerParamsEnv(_LocomotionEnv):
    """Walker2d-v5 whose model parameters are the original ones times the task's multipliers.

    Reward and termination are gymnasium's (forward velocity + 1 alive - 1e-3 sum(a^2)), the same
    terms as ``rand_param_envs``' walker. Differences: frame skip 4 (dt 0.008; theirs 5, dt 0.01),
    gymnasium v5's model (both feet have friction 1.9), and derived model constants are not
    recomputed after the change (no ``mj_setConst``; neither did the original).
    """

    env_id, obs_dim, act_dim, direct = "Walker2d-v5", 17, 6, True
    # gymnasium's Walker2d-v5 defaults, which its reward and health check use (the direct step's
    # equality with gymnasium's is tested)
    HEALTHY_Z, HEALTHY_ANGLE, CTRL_COST_WEIGHT = (0.8, 2.0), (-1.0, 1.0), 1e-3

    @classmethod
    def make_single(cls, config: Any) -> gym.Env:
        env = super().make_single(config)
        model = env.unwrapped.model
        env.originals = {k: getattr(model, k).copy() for k in _WALKER_PARAMS}
        return env

    def observe(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        return np.concatenate((qpos[:, 1:], np.clip(qvel, -10.0, 10.0)), axis=1)

    def step_rewards(self, x_velocity, qpos, actions, tasks):
        (z_lo, z_hi), (a_lo, a_hi) = self.HEALTHY_Z, self.HEALTHY_ANGLE
        z, angle = qpos[:, 1], qpos[:, 2]
        healthy = (z_lo < z) & (z < z_hi) & (a_lo < angle) & (angle < a_hi)
        ctrl = self.CTRL_COST_WEIGHT * np.einsum("ij,ij->i", actions, actions)
        return x_velocity + healthy - ctrl, ~healthy

    def apply_task(self, env: gym.Env, task: dict[str, np.ndarray]) -> gym.Env:
        model = env.unwrapped.model
        for k, original in env.originals.items():
            getattr(model, k)[:] = original * task[k].reshape(original.shape)
        return env
