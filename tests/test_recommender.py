"""The recommender family: click model by hand, splits, classical strategies, metrics."""

import pytest
import torch
from torch.testing import assert_close

from adaptrl import make_family
from adaptrl.baselines.recommender import recommender_strategies, run_recommender
from adaptrl.envs.checker import check_family
from adaptrl.envs.recommender import RecommenderEnv, catalogue, recommender_metrics
from adaptrl.errors import ConfigError
from adaptrl.sampling import Trajectories


def test_click_rates_follow_the_logistic_interest_model():
    family = make_family("recommender", num_items=6, embed_dim=3, slate_size=2)
    items = catalogue(family.config)
    user = torch.tensor([[1.0, -0.5, 2.0]])
    env = RecommenderEnv(4000, family.config)
    tasks = {"user": user.expand(4000, -1), "available": torch.ones(4000, 6)}
    env.reset(tasks=tasks, seed=0)
    action = torch.full((4000,), 5)  # carousel of items 5 and 0 (it wraps around)
    clicks = torch.stack([env.step(action)[1] for _ in range(5)])
    p = torch.sigmoid(user @ items["embeddings"].T + items["biases"])[0]
    expected = float(p[5] + p[0])
    assert float(clicks.mean()) == pytest.approx(expected, abs=4 * 0.7 / (20000**0.5))
    assert (clicks <= 2).all() and (clicks >= 0).all()


def test_unavailable_items_are_never_clicked_and_splits_are_disjoint():
    family = make_family("recommender")
    gen = torch.Generator().manual_seed(0)
    cold = catalogue(family.config)["cold"]
    assert int(cold.sum()) == 4  # 20% of 20 items
    users = {}
    for split in ("train", "test", "cold_start"):
        tasks = family.tasks.sample(300, split, gen)
        assert set(family.tasks.split_of(tasks)) == {split}
        users[split] = tasks
    assert (users["train"]["available"][:, cold] == 0).all()
    assert (users["cold_start"]["available"] == 1).all()
    cells = {
        s: {tuple(c) for c in torch.floor(t["user"] / 0.5).long().tolist()}
        for s, t in users.items()
    }
    assert not cells["train"] & cells["test"] and not cells["train"] & cells["cold_start"]
    env = RecommenderEnv(300, family.config)
    env.reset(tasks=users["train"], seed=1)
    item = int(torch.nonzero(cold)[0])
    assert float(env.step(torch.full((300,), item))[1].sum()) == 0.0


def test_the_family_passes_the_conformance_checker():
    check_family("recommender", num_envs=4)
    check_family("recommender", num_envs=4, slate_size=3)


def test_classical_strategies_rank_as_theory_says():
    family = make_family("recommender")
    gen = torch.Generator().manual_seed(0)
    tasks, tune = family.tasks.sample(300, "test", gen), family.tasks.sample(100, "train", gen)
    rows = recommender_strategies(family, tasks, seed=0, tune_tasks=tune, episodes=4)
    assert set(rows) == {
        "most_popular",
        "epsilon_greedy",
        "linucb",
        "thompson (true prior)",
        "oracle",
    }
    assert rows["oracle"]["regret"] == 0.0
    for name in ("epsilon_greedy", "linucb", "thompson (true prior)"):
        # Personalised strategies learn the user: later sessions beat the first, and beat the
        # non-personalised most-popular list; nobody beats the oracle.
        assert rows[name]["curve"][-1] > rows[name]["curve"][0]
        assert rows[name]["curve"][-1] > rows["most_popular"]["curve"][-1] + 1.0
        assert rows[name]["mean"] < rows["oracle"]["mean"]
    popular = run_recommender(family, tasks, "most_popular", 4)
    assert (popular["regret"] >= 0).all()


def test_regret_metric_by_hand():
    family = make_family(
        "recommender", num_items=3, embed_dim=2, session_length=2, cold_fraction=0.0
    )
    items = catalogue(family.config)
    tasks = {"user": torch.tensor([[1.0, 0.0]]), "available": torch.ones(1, 3)}
    p = torch.sigmoid(tasks["user"] @ items["embeddings"].T + items["biases"])[0]
    actions = torch.tensor([[0], [2]])  # [T, B]
    traj = Trajectories(
        torch.ones(2, 1, 3), actions, torch.zeros(2, 1), torch.zeros(2, 1), torch.ones(2, 1, 3),
        torch.zeros(2, 1, dtype=torch.bool), torch.tensor([[False], [True]]), torch.ones(2, 1),
        num_tasks=1,
    )  # fmt: skip
    regret = recommender_metrics(traj, family, tasks)["regret"]
    assert_close(regret, (2 * p.max() - p[0] - p[2]).reshape(1, 1))


def test_a_catalogue_smaller_than_the_slate_is_refused():
    with pytest.raises(ConfigError, match="slate_size=5 exceeds the catalogue"):
        make_family("recommender", num_items=4, slate_size=5)


def test_a_users_strategy_result_does_not_depend_on_the_other_users():
    family = make_family("recommender", slate_size=2)
    tasks = family.tasks.sample(6, "cold_start", torch.Generator().manual_seed(3))
    for strategy in ("epsilon_greedy", "thompson (true prior)", "linucb"):
        whole = run_recommender(family, tasks, strategy, 2, seed=4, epsilon=0.3)
        first = run_recommender(
            family, {k: v[:3] for k, v in tasks.items()}, strategy, 2, seed=4, epsilon=0.3
        )
        assert_close(whole["clicks"][:, :3], first["clicks"]), strategy


def test_the_oracle_has_no_regret_even_with_unavailable_items_in_a_carousel():
    family = make_family("recommender", slate_size=3)
    tasks = family.tasks.sample(50, "train", torch.Generator().manual_seed(0))  # cold items off
    assert float(run_recommender(family, tasks, "oracle", 2)["regret"].abs().max()) == 0.0
