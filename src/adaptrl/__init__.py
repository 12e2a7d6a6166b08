"""adaptrl: meta-reinforcement learning that adapts on held-out tasks in a few steps."""

import os

# Threads that wait spin only briefly, then sleep (read by GNU OpenMP when torch loads, so it is
# set before torch is imported; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins). torch's
# threads spin 300,000 times at every barrier by default: two MAML 2D-navigation jobs at once on
# 2 cores then took 36x as long per iteration as one alone; with 1,000 spins 1.9x, and one job
# alone 10% slower, where sleeping at once (OMP_WAIT_POLICY=PASSIVE) cost it 40-60%
# (benchmarks/threads.py; docs/speed.md).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

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
