"""Learning test of RL² on a tiny XLand rule set: the last episode of a trial beats the first.

Three rule sets, each "stand next to the ball of colour c" (red, green or blue), with all three
balls in every layout; the level replays its layout at every episode of a trial
(``same_layout``), the agent sees 3 x 3 cells and has 10 steps per episode, so a policy that
remembers nothing finds the right ball about one time in three (later episodes no better than
the first), and one that remembers which ball paid goes straight back to it. With a new layout
per episode (the library's setting) the memory has to carry the colour rather than the place;
within minutes it does not form (docs/in-context.md), so that is not what this test asserts.

Measured with this seed (~100 s on 2 cores): episodes 0.22 → 0.30 / 0.29 / 0.31, last − first
+0.09 ± 0.025 on 500 trials of layouts never seen in training.
"""

import bz2
import pickle

import numpy as np
import pytest
import torch

from adaptrl import make_family
from adaptrl.algos.rl2 import RL2, RL2Config
from adaptrl.config import EvalConfig
from adaptrl.envs.xland import AGENT_NEAR_GOALS, BALL, BLUE, GREEN, RED
from adaptrl.sampling import InProcessSampler

pytest.importorskip("xminigrid")

COLOURS = (RED, BLUE, GREEN)
AGENT_NEAR = AGENT_NEAR_GOALS[0]  # the goal "the agent next to a tile"
ITERATIONS, TRIALS = 300, 500


def _tiny_rule_sets(path) -> None:
    """A benchmark file (the library's format) of the three rule sets: no rules, three balls."""
    goals = np.array([[AGENT_NEAR, BALL, c, 0, 0] for c in COLOURS], np.uint8)
    balls = np.array([[[BALL, c] for c in COLOURS]] * len(COLOURS), np.uint8)
    data = {"goals": goals, "rules": np.zeros((3, 1, 7), np.uint8), "init_tiles": balls}
    with bz2.open(path, "wb") as f:
        pickle.dump(data, f)


def test_rl2_remembers_which_ball_paid_on_a_tiny_rule_set(tmp_path):
    _tiny_rule_sets(tmp_path / "tiny.pkl")
    family = make_family(
        "xland",
        benchmark_file=str(tmp_path / "tiny.pkl"),
        horizon=10,
        view_size=3,
        same_layout=True,
        test_fraction=0.01,  # the three rule sets all train (the hash split is by rule set)
    )
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    config = RL2Config(
        meta_batch_size=64,
        hidden_size=64,
        episodes_per_trial=4,
        lr=3e-3,
        gamma=0.99,
        gae_lambda=0.95,
    )
    algo = RL2(config, family, InProcessSampler(family))
    for i in range(ITERATIONS):
        algo.meta_train_step(family.tasks.sample(64, "train", gen), seed=i)
    tasks = family.tasks.sample(TRIALS, "train", torch.Generator().manual_seed(1))
    returns = algo.meta_test(tasks, EvalConfig(), seed=7).returns  # [episodes, trials]
    gain = returns[-1] - returns[0]
    half_width = 1.96 * gain.std() / TRIALS**0.5
    assert gain.mean() > half_width, (
        f"last − first {gain.mean():.3f} ± {half_width:.3f}; per episode {returns.mean(1)}"
    )
