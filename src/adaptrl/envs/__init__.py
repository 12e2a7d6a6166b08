"""Task families: the built-in catalogue, registered by name (``adaptrl.envs.registry`` holds
the registry itself: ``register_env``, ``make_family``, ``Family``).
"""

from __future__ import annotations

from typing import Any

from adaptrl.envs.base import (
    SPLITS,
    BatchedMetaEnv,
    GridSplit,
    SingleTaskEnv,
    Split,
    TaskDistribution,
    Tasks,
    repeat_tasks,
)
from adaptrl.envs.registry import (
    ClassicalStrategies,
    EnvSpec,
    Family,
    add_plugin_module,
    classical_strategies,
    env_config,
    gym_id_of,
    make_family,
    make_task_env,
    plugin_modules,
    register_env,
    registered_envs,
    resolve,
)

__all__ = [
    "SPLITS",
    "BatchedMetaEnv",
    "ClassicalStrategies",
    "EnvSpec",
    "Family",
    "GridSplit",
    "SingleTaskEnv",
    "Split",
    "TaskDistribution",
    "Tasks",
    "add_plugin_module",
    "env_config",
    "gym_id_of",
    "make_family",
    "make_task_env",
    "plugin_modules",
    "register_env",
    "classical_strategies",
    "registered_envs",
    "repeat_tasks",
    "resolve",
]


def _builtin(
    name: str, module: str, stem: str, description: str, classical: str | None = None, **more: Any
):
    register_env(
        EnvSpec(
            name,
            f"adaptrl.envs.{module}:{stem}Config",
            f"adaptrl.envs.{module}:{stem}Tasks",
            f"adaptrl.envs.{module}:{stem}Env",
            description,
            classical,
            **more,
        )
    )


_builtin(
    "navigation2d",
    "navigation",
    "Navigation2D",
    "Point robot reaching a goal in [-0.5, 0.5]^2 (Finn et al. 2017, sec. 5.3)",
    task_features=("goal",),
)
_builtin(
    "bandit",
    "bandit",
    "Bandit",
    "Bernoulli k-armed bandit, probabilities ~ U[0, 1], n pulls per trial (Duan et al. 2016)",
    "adaptrl.baselines.table:BANDIT",
    task_features=("probs",),
)
_builtin(
    "tabular_mdp",
    "tabular_mdp",
    "TabularMDP",
    "Random 10-state, 5-action MDPs, Dirichlet transitions, N(1,1) rewards (Duan et al. 2016)",
    "adaptrl.baselines.table:TABULAR_MDP",
)
_builtin(
    "point_robot",
    "point_robot",
    "PointRobot",
    "PEARL's point robot: goals on the half circle with a sparse reward, or in a square "
    "(Rakelly et al. 2019)",
    metrics="adaptrl.envs.point_robot:point_metrics",
    task_features=("goal",),
    dense_reward="adaptrl.envs.point_robot:dense_point_reward",
)
_builtin(
    "maze",
    "maze",
    "Maze",
    "Procedural DFS grid mazes, 3x3 egocentric view, held-out layouts (cf. Duan et al. 2016)",
)
_builtin(
    "xland",
    "xland",
    "XLand",
    "XLand-MiniGrid game levels: hidden goals and production rules, held-out rule sets, "
    "deeper ones out of distribution (optional extra: adaptrl[xland])",
    task_features=("goal", "rules"),
)
_builtin(
    "drone_wind",
    "drone",
    "DroneWind",
    "Planar quadrotor holding position or tracking a circle or figure-8 in wind unseen in "
    "training (Richards et al. 2021; Neural-Fly)",
    "adaptrl.baselines.drone:DRONE_CONTROLLERS",
    metrics="adaptrl.envs.drone:drone_metrics",
    trace_labels=("x error (m)", "y error (m)"),
    task_features=("wind", "gust_amp", "gust_freq", "mass", "drag"),
)
_builtin(
    "terrain",
    "terrain",
    "Terrain",
    "HalfCheetah on procedurally generated ground (bumps, hills, stairs, friction); needs "
    "adaptrl[mujoco]",
    task_features=("roughness", "slope", "step", "friction"),
)
_builtin(
    "recommender",
    "recommender",
    "Recommender",
    "Recommender adapting to a new user over sessions; held-out users, cold-start items",
    "adaptrl.baselines.recommender:RECOMMENDER_STRATEGIES",
    metrics="adaptrl.envs.recommender:recommender_metrics",
)
for _name, _stem, _text, _features in (
    (
        "halfcheetah_vel",
        "HalfCheetahVel",
        "HalfCheetah running at a goal velocity U[0, 2] (MAML)",
        ("velocity",),
    ),
    (
        "halfcheetah_dir",
        "HalfCheetahDir",
        "HalfCheetah running forward or backward (MAML)",
        ("direction",),
    ),
    ("ant_vel", "AntVel", "Ant running at a goal velocity U[0, 3] (MAML)", ("velocity",)),
    ("ant_dir", "AntDir", "Ant running forward or backward (MAML)", ("direction",)),
    (
        "walker_params",
        "WalkerParams",
        "Walker2d with per-task masses, damping, friction (PEARL)",
        (),
    ),
):
    _builtin(_name, "locomotion", _stem, _text + "; needs adaptrl[mujoco]", task_features=_features)
