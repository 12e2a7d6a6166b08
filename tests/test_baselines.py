"""Classical bandit/MDP strategies against known values and hand-computed sequences."""

import numpy as np
import pytest

from adaptrl.baselines import bayes_optimal_value, gittins_index, run_bandit_strategy
from adaptrl.baselines.mdp import run_mdp_strategy


@pytest.mark.parametrize("gamma,expected", [(0.9, 0.7029), (0.95, 0.7614), (0.99, 0.8699)])
def test_gittins_index_of_uniform_arm(gamma, expected):
    horizon = {0.9: 300, 0.95: 500, 0.99: 1500}[gamma]  # gamma**horizon is negligible
    assert gittins_index(np.array([0]), np.array([0]), gamma, horizon)[0] == pytest.approx(
        expected, abs=5e-4
    )


def test_gittins_index_orders_states_sensibly():
    idx = gittins_index(np.array([0, 3, 0, 10]), np.array([0, 0, 3, 10]), 1.0, 20)
    assert idx[1] > idx[0] > idx[2]  # more successes -> higher index
    assert idx[0] > 0.5  # exploration bonus over the posterior mean 1/2
    assert idx[0] > idx[3] > 0.5  # a well-known 1/2 arm is worth less than an unknown one


@pytest.mark.parametrize(
    "k,n,expected", [(2, 10, 6.022), (2, 20, 12.431), (5, 10, 6.660), (10, 10, 6.714)]
)
def test_bayes_optimal_value(k, n, expected):
    assert bayes_optimal_value(k, n) == pytest.approx(expected, abs=5e-4)


def test_ucb1_hand_computed_sequence():
    # Arm 1 always pays, arm 0 never. After one pull of each, UCB1 (c = 1) compares
    # 0 + sqrt(2 ln t) with 1 + sqrt(2 ln t / n_1): arm 1 wins at t = 2..5, arm 0 at t = 6.
    _, arms = run_bandit_strategy("ucb1", np.array([[0.0, 1.0]]), 7, ucb_c=1.0, return_arms=True)
    assert sorted(arms[:2, 0].tolist()) == [0, 1]
    assert arms[2:, 0].tolist() == [1, 1, 1, 1, 0]


def test_greedy_hand_computed_sequence():
    # Posterior means start equal; a failure drops an arm to 1/3 < 1/2, a success lifts it to
    # 2/3: whichever arm greedy tries first, it settles on the paying arm 0 from pull 2 on.
    totals, arms = run_bandit_strategy(
        "greedy", np.array([[1.0, 0.0]] * 50), 6, seed=3, return_arms=True
    )
    assert (arms[1:] == 0).all()
    assert set(arms[0].tolist()) == {0, 1}  # ties broken at random
    assert set(totals.tolist()) == {5.0, 6.0}


def test_thompson_concentrates_on_the_paying_arm():
    _, arms = run_bandit_strategy(
        "thompson", np.array([[1.0, 0.0]] * 400), 40, seed=0, return_arms=True
    )
    assert abs(arms[0].mean() - 0.5) < 0.1  # first pull: symmetric posteriors
    assert arms[20:].mean() < 0.05  # arm 1 (never pays) is almost never sampled late


def test_bandit_strategies_rank_like_duan_et_al():
    rng = np.random.default_rng(0)
    probs = rng.random((2000, 5))
    res = {
        s: run_bandit_strategy(s, probs, 100, seed=1).mean()
        for s in ("random", "greedy", "ucb1", "thompson", "gittins")
    }
    assert res["random"] == pytest.approx(50.0, abs=1.0)
    assert res["gittins"] > res["thompson"] > res["random"] + 20
    assert res["gittins"] == pytest.approx(78.3, abs=1.0)  # Duan et al.: 78.3


def _random_mdps(n=400, S=10, A=5, seed=0):
    """Duan et al.'s MDP prior: flat-Dirichlet transitions, N(1, 1) mean rewards."""
    rng = np.random.default_rng(seed)
    e = rng.exponential(size=(n, S, A, S))
    return e / e.sum(-1, keepdims=True), 1 + rng.standard_normal((n, S, A))


def test_mdp_strategies():
    P, R = _random_mdps()
    res = {s: run_mdp_strategy(s, P, R, 10, 10, seed=1).mean() for s in ("random", "psrl")}
    assert res["random"] == pytest.approx(100.0, abs=5.0)  # Duan et al.: 100.1
    assert res["psrl"] > 130  # Duan et al.: PSRL 138.1 for n = 10


def test_mdp_strategies_start_where_the_env_does():
    # Two absorbing states; only state 0 pays (5 per step). Starting in state 0, as the env does
    # by default, every strategy earns 5 per step; from a uniformly random start, half of that.
    P = np.tile(np.eye(2)[None, :, None, :], (4000, 1, 3, 1))
    R = np.tile(np.array([[[5.0] * 3, [0.0] * 3]]), (4000, 1, 1))
    fixed = run_mdp_strategy("random", P, R, 2, 3, seed=0, reward_noise=0.0)
    assert np.all(fixed == 30.0)
    spread = run_mdp_strategy("random", P, R, 2, 3, seed=0, reward_noise=0.0, random_start=True)
    assert spread.mean() == pytest.approx(15.0, abs=0.5)


def test_myopic_hand_computed_and_above_greedy():
    # One state, two actions, no noise, mean rewards -1 and 3. Both start at the prior mean 1
    # (tie, broken at random); after one pull of action 0 its mean is (1 - 1) / 2 = 0 < 1, so
    # the next pull is action 1, whose mean (1 + 3) / 2 = 2 keeps it there: 5 pulls give
    # -1 + 4 * 3 = 11, or 5 * 3 = 15 if action 1 came first.
    P = np.ones((200, 1, 2, 1))
    R = np.tile(np.array([[[-1.0, 3.0]]]), (200, 1, 1))
    totals = run_mdp_strategy("myopic", P, R, 1, 5, seed=0, reward_noise=0.0)
    assert set(np.round(totals, 6)) == {11.0, 15.0}
    # Updated every step it beats greedy, which re-plans only between episodes (measured
    # 158 vs 149 on 2000 held-out tasks; Duan et al.'s RL²: 156.2).
    P, R = _random_mdps()
    res = {s: run_mdp_strategy(s, P, R, 10, 10, seed=1).mean() for s in ("greedy", "myopic")}
    assert res["myopic"] > res["greedy"] + 3


def test_the_baselines_command_prints_duan_et_al_rows(capsys):
    """``adaptrl baselines``: one row per setting, labelled as in Duan et al.'s tables, with
    every strategy the family declares; random pulls at chance (k = 5, n = 10: 5.0)."""
    from adaptrl.cli import main

    assert main(["baselines", "bandit", "--pulls", "10", "--trials", "400"]) == 0
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert header.split("|")[0].strip() == "n, k" and row.split("|")[0].strip() == "10, 5"
    assert "bayes_optimal" in header and "ucb1" in header
    cells = dict(zip((c.strip() for c in header.split("|")), (c.strip() for c in row.split("|"))))
    assert float(cells["random"].split("±")[0]) == pytest.approx(5.0, abs=0.2)
    assert main(["baselines", "tabular_mdp", "--episodes", "1", "10", "--trials", "50"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("|")[0].strip() == "n" and "psrl" in lines[0]
    assert [line.split("|")[0].strip() for line in lines[2:4]] == ["1", "10"]


def test_a_family_declares_its_classical_strategies_typed():
    """Each built-in family with classical strategies names a ``ClassicalStrategies`` (resolved
    lazily); a wrong object or unit is refused in one line."""
    from adaptrl.envs import ClassicalStrategies, EnvSpec, classical_strategies, registered_envs
    from adaptrl.errors import ConfigError

    declared = {
        name: classical_strategies(spec)
        for name, spec in registered_envs().items()
        if spec.classical is not None
    }
    assert set(declared) == {"bandit", "tabular_mdp", "drone_wind", "recommender"}
    assert declared["drone_wind"].unit == "episode" and declared["bandit"].unit == "trial"
    assert all(isinstance(s, ClassicalStrategies) for s in declared.values())
    with pytest.raises(ConfigError, match="unit must be 'trial' or 'episode'"):
        ClassicalStrategies(lambda *a: {}, unit="flight")
    spec = EnvSpec("x", None, None, None, classical="adaptrl.baselines.table:duan_table")
    with pytest.raises(ConfigError, match="classical must be a ClassicalStrategies, not function"):
        classical_strategies(spec)
