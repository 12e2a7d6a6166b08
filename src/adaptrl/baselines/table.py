"""Classical baselines on the exact tasks of a split, printed in the layout of Duan et al."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from adaptrl.baselines.bandit import BANDIT_STRATEGIES, bayes_optimal_value, run_bandit_strategy
from adaptrl.baselines.mdp import MDP_STRATEGIES, run_mdp_strategy
from adaptrl.envs import Family
from adaptrl.stats import summary_row

CLASSICAL_ENVS = ("bandit", "tabular_mdp")  # families with classical strategies below
TUNE_GRID = tuple(round(0.1 * i, 1) for i in range(11))  # Duan et al. tuned c and ε over this
BAYES_OPTIMAL_MAX_STATES = 12  # k + n small enough for the exact DP to take seconds


def classical_setting(family: Family, episodes: int) -> str:
    """The row label of Duan et al.'s tables: "n, k" for bandits, episodes per trial otherwise."""
    if family.spec.name == "bandit":
        return f"{family.config.num_pulls}, {family.config.num_arms}"
    return str(episodes)


def _stats(totals: np.ndarray) -> dict[str, float]:
    return summary_row(totals)


def classical_baselines(
    family: Family,
    tasks: dict[str, torch.Tensor],
    seed: int = 0,
    tune_tasks: dict[str, torch.Tensor] | None = None,
    episodes: int = 1,
) -> dict[str, dict[str, Any]]:
    """Mean total reward per trial (and 95% CI) of every classical strategy on ``tasks``.

    ε (ε-greedy) and c (UCB1) are tuned on ``tune_tasks`` (drawn from the training split, never
    the reported tasks) over {0, 0.1, ..., 1}, as Duan et al. did.
    """
    name = family.spec.name
    out: dict[str, dict[str, Any]] = {}
    if name == "bandit":
        k, n = family.config.num_arms, family.config.num_pulls
        probs = tasks["probs"].cpu().numpy()
        tune = tune_tasks["probs"].cpu().numpy() if tune_tasks is not None else probs[:200]
        eps = max(
            TUNE_GRID,
            key=lambda e: run_bandit_strategy(
                "epsilon_greedy", tune, n, seed + 1, epsilon=e
            ).mean(),
        )
        c = max(
            TUNE_GRID,
            key=lambda c_: run_bandit_strategy("ucb1", tune, n, seed + 1, ucb_c=c_).mean(),
        )
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
    elif name == "tabular_mdp":
        P = tasks["transitions"].cpu().numpy()
        R = tasks["mean_rewards"].cpu().numpy()
        cfg = family.config
        for strategy in MDP_STRATEGIES:
            totals = run_mdp_strategy(
                strategy,
                P,
                R,
                episodes,
                cfg.episode_length,
                seed,
                reward_noise=cfg.reward_noise,
                random_start=cfg.random_start,
            )
            out[strategy] = _stats(totals)
    else:
        raise ValueError(f"no classical baselines for env '{name}'")
    return out


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
