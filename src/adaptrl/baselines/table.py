"""Classical baselines on the exact tasks of a split, printed in the layout of Duan et al."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adaptrl.baselines.bandit import BANDIT_STRATEGIES, bayes_optimal_value, run_bandit_strategy
from adaptrl.baselines.mdp import MDP_STRATEGIES, run_mdp_strategy
from adaptrl.envs.registry import ClassicalStrategies, Family, make_family
from adaptrl.stats import summary_row

TUNE_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # Duan et al. tuned c and ε over this
BAYES_OPTIMAL_MAX_STATES = 12  # k + n small enough for the exact DP to take seconds


def _stats(totals: np.ndarray) -> dict[str, float]:
    return summary_row(totals)


def bandit_strategies(
    family: Family,
    tasks: dict[str, torch.Tensor],
    seed: int = 0,
    tune_tasks: dict[str, torch.Tensor] | None = None,
    episodes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Mean total reward per trial (and 95% CI) of every bandit strategy on ``tasks``.

    ε (ε-greedy) and c (UCB1) are tuned on ``tune_tasks`` (drawn from the training split, never
    the reported tasks) over {0, 0.1, ..., 1}, as Duan et al. did.
    """
    k, n = family.config.num_arms, family.config.num_pulls
    probs = tasks["probs"].cpu().numpy()
    tune = tune_tasks["probs"].cpu().numpy() if tune_tasks is not None else probs[:200]
    eps = max(
        TUNE_GRID,
        key=lambda e: run_bandit_strategy("epsilon_greedy", tune, n, seed + 1, epsilon=e).mean(),
    )
    c = max(
        TUNE_GRID,
        key=lambda c_: run_bandit_strategy("ucb1", tune, n, seed + 1, ucb_c=c_).mean(),
    )
    out: dict[str, dict[str, Any]] = {}
    for strategy in BANDIT_STRATEGIES:
        totals = run_bandit_strategy(strategy, probs, n, seed, epsilon=eps, ucb_c=c)
        out[strategy] = _stats(totals)
    out["epsilon_greedy"]["epsilon"] = eps
    out["ucb1"]["c"] = c
    if k + n <= BAYES_OPTIMAL_MAX_STATES + 3:
        out["bayes_optimal"] = {
            "mean": bayes_optimal_value(k, n),
            "ci95": 0.0,
            "note": "exact expectation over the prior (DP)",
        }
    return out


def mdp_strategies(
    family: Family,
    tasks: dict[str, torch.Tensor],
    seed: int = 0,
    tune_tasks: dict[str, torch.Tensor] | None = None,
    episodes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Mean total reward per trial of ``episodes`` episodes (and 95% CI) of every MDP strategy
    on ``tasks`` (none is tuned)."""
    P = tasks["transitions"].cpu().numpy()
    R = tasks["mean_rewards"].cpu().numpy()
    cfg = family.config
    return {
        strategy: _stats(
            run_mdp_strategy(
                strategy,
                P,
                R,
                episodes,
                cfg.episode_length,
                seed,
                reward_noise=cfg.reward_noise,
                random_start=cfg.random_start,
            )
        )
        for strategy in MDP_STRATEGIES
    }


BANDIT = ClassicalStrategies(
    bandit_strategies,
    setting_label="n, k",
    setting=lambda family, episodes: f"{family.config.num_pulls}, {family.config.num_arms}",
)
"""The bandit family's strategies, one row per (pulls, arms) in Duan et al.'s Table 1."""
TABULAR_MDP = ClassicalStrategies(mdp_strategies)
"""The tabular-MDP family's strategies, one row per episodes per trial (Duan et al.'s Table 2)."""


def duan_rows(
    env: str,
    trials: int,
    split: str,
    seed: int,
    arms: list[int],
    pulls: list[int],
    episodes: list[int],
) -> tuple[str, dict[str, dict[str, dict[str, Any]]]]:
    """Duan et al.'s tables without a learner (``adaptrl baselines``): bandits for every
    (pulls, arms) pair, MDPs for every number of episodes per trial."""
    rows = {}
    if env == "bandit":
        for k in arms:
            for n in pulls:
                family = make_family("bandit", num_arms=k, num_pulls=n)
                gen = torch.Generator().manual_seed(seed)
                tasks = family.tasks.sample(trials, split, gen)
                tune = family.tasks.sample(200, "train", gen)
                rows[BANDIT.label(family, 1)] = BANDIT.run(family, tasks, seed, tune)
        return BANDIT.setting_label, rows
    family = make_family("tabular_mdp")
    for n in episodes:
        gen = torch.Generator().manual_seed(seed)
        tasks = family.tasks.sample(trials, split, gen)
        rows[TABULAR_MDP.label(family, n)] = TABULAR_MDP.run(family, tasks, seed, episodes=n)
    return TABULAR_MDP.setting_label, rows


def duan_table(label: str, rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Rows of Duan et al.'s tables: one row per setting, one column per strategy."""
    columns: list[str] = []
    for row in rows.values():
        columns += [c for c in row if c not in columns]
    lines = [f"{label:>10} | " + " | ".join(f"{c:>14}" for c in columns)]
    lines.append("-" * len(lines[0]))
    for setting, row in rows.items():
        cells = []
        for c in columns:
            v = row.get(c)
            if not v:
                cells.append(" " * 14)
                continue
            ci = v.get("ci95")
            cells.append(
                f"{v['mean']:8.2f} ±{ci:5.2f}" if ci is not None else f"{v['mean']:8.2f} ± n/a"
            )
        lines.append(f"{setting:>10} | " + " | ".join(f"{x:>14}" for x in cells))
    return "\n".join(lines)
