"""adaptrl: meta-reinforcement learning that adapts on held-out tasks in a few steps."""

from adaptrl.algos import MAML, RL2, MAMLConfig, RL2Config, make_algorithm
from adaptrl.deploy import LoadedRun, collect_episodes, load_policy, load_run, save_policy
from adaptrl.envs import make_family, register_env
from adaptrl.errors import AdaptrlError, ConfigError, RunError

__version__ = "0.1.0"

__all__ = [
    "MAML",
    "RL2",
    "MAMLConfig",
    "RL2Config",
    "AdaptrlError",
    "ConfigError",
    "LoadedRun",
    "RunError",
    "collect_episodes",
    "load_policy",
    "load_run",
    "make_algorithm",
    "make_family",
    "register_env",
    "save_policy",
]
