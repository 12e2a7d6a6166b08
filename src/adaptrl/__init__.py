"""adaptrl: meta-reinforcement learning that adapts on held-out tasks in a few steps."""

import os

# Threads that wait sleep instead of spinning (read by OpenMP when torch loads, so it is set
# before torch is imported; a user's own setting wins). torch's OpenMP threads spin at every
# barrier by default: beside one other busy process on 2 cores, a MAML 2D-navigation iteration
# took 14.2 s instead of 1.3 s with sleeping waits (benchmarks/threads.py; docs/speed.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
