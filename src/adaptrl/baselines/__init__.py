"""Classical strategies, evaluated on exactly the tasks the meta-learners see (Duan et al.)."""

from adaptrl.baselines.bandit import (
    BANDIT_STRATEGIES,
    bayes_optimal_value,
    gittins_index,
    run_bandit_strategy,
)
from adaptrl.baselines.mdp import MDP_STRATEGIES, run_mdp_strategy

__all__ = [
    "BANDIT_STRATEGIES",
    "MDP_STRATEGIES",
    "bayes_optimal_value",
    "gittins_index",
    "run_bandit_strategy",
    "run_mdp_strategy",
]
