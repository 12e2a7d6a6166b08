"""The XLand-MiniGrid family: transitions equal the library's own for the same keys and actions,
rule sets encoded as the library encodes them, held-out and deeper rule sets disjoint from
training ones, and one-line errors for bad input."""

import bz2
import pickle

import numpy as np
import pytest
import torch

from adaptrl import make_family
from adaptrl.cli import main
from adaptrl.envs.xland import (
    AGENT_HOLD_GOAL,
    AGENT_HOLD_RULE,
    AGENT_NEAR_GOALS,
    AGENT_NEAR_RULES,
    TIERS,
    TILE_NEAR_GOALS,
    TILE_NEAR_RULES,
    generate_ruleset,
    max_sizes,
    ruleset_split,
)
from adaptrl.errors import ConfigError
from adaptrl.rng import RowStreams, seed_keys

xminigrid = pytest.importorskip("xminigrid")
jax = pytest.importorskip("jax")


def test_transitions_equal_the_librarys_for_the_same_keys_and_actions():
    family = make_family("xland", horizon=6)
    tasks = family.tasks.sample(5, "train", torch.Generator().manual_seed(0))
    env = family.make_env(5)
    ours = [env.reset(tasks=tasks, seed=3)[0]]
    actions = torch.randint(6, (8, 5), generator=torch.Generator().manual_seed(1))
    steps = [env.step(a) for a in actions]
    # The library alone: the same rule sets, the keys our rows drew, the same actions.
    lib, params = xminigrid.make("XLand-MiniGrid-R1-9x9")
    params = params.replace(max_steps=6, view_size=5)
    from xminigrid.types import RuleSet

    jnp = jax.numpy
    params = params.replace(
        ruleset=RuleSet(
            *(jnp.asarray(tasks[k].numpy(), jnp.uint8) for k in ("goal", "rules", "init_tiles"))
        )
    )
    draw = RowStreams(seed_keys(3, 5)).uniform(2)
    keys = jax.random.wrap_key_data((draw.double() * 2**32).long().numpy().astype(np.uint32))
    ts = jax.vmap(lib.reset)(params, keys)

    def onehot(obs):
        obs = torch.as_tensor(np.asarray(obs)).long()
        tiles = torch.nn.functional.one_hot(obs[..., 0], 13)
        colours = torch.nn.functional.one_hot(obs[..., 1], 12)
        return torch.cat([tiles, colours], -1).reshape(5, -1).float()

    assert torch.equal(ours[0], onehot(ts.observation))
    ended = torch.zeros(5, dtype=torch.bool)
    for t, (obs, reward, terminated, truncated, _) in enumerate(steps):
        ts = jax.vmap(lib.step)(params, ts, jnp.asarray(actions[t].numpy(), jnp.int32))
        live = ~ended  # after its episode ends a row's outputs are masked by the sampler
        assert torch.equal(obs[live], onehot(ts.observation)[live])
        assert torch.equal(reward[live], torch.as_tensor(np.asarray(ts.reward))[live])
        last = torch.as_tensor(np.asarray(ts.step_type)) == 2
        assert torch.equal((terminated | truncated)[live], last[live])
        assert torch.equal(
            truncated[live], (last & (torch.as_tensor(np.asarray(ts.discount)) == 1))[live]
        )
        ended |= terminated | truncated
    assert ended.all()  # six steps: every episode ended (truncated at the horizon at the latest)


def test_same_layout_replays_a_trials_first_layout_at_every_episode_and_the_default_does_not():
    first, again = {}, {}
    for same in (False, True):
        family = make_family("xland", horizon=6, same_layout=same)
        tasks = family.tasks.sample(16, "train", torch.Generator().manual_seed(0))
        env = family.make_env(16)
        first[same] = env.reset(tasks=tasks, seed=3)[0]
        for a in torch.randint(6, (3, 16), generator=torch.Generator().manual_seed(1)):
            env.step(a)  # the rows move on
        mask = torch.arange(16) % 2 == 0
        again[same] = env.reset(mask=mask)[0]
        if same:  # tasks handed in start a new trial: a new layout, same_layout or not
            renewed = env.reset(tasks=tasks, mask=mask)[0]
            assert (renewed[mask] != first[same][mask]).any(-1).float().mean() >= 0.75
    assert torch.equal(first[True], first[False])  # the option leaves a trial's first draw alone
    assert torch.equal(again[True][mask], first[True][mask])  # the same view: the same layout
    changed = (again[False][mask] != first[False][mask]).any(-1)
    assert changed.float().mean() >= 0.75  # a new layout per episode by default


@pytest.mark.parametrize("tier", list(TIERS))
def test_rule_sets_are_seeded_use_the_librarys_kinds_and_fit_the_padding(tier):
    kinds = {AGENT_HOLD_RULE, *AGENT_NEAR_RULES, *TILE_NEAR_RULES}
    for seed in range(50):
        goal, rules, objects = generate_ruleset(seed, **TIERS[tier])
        assert (goal, rules, objects) == generate_ruleset(seed, **TIERS[tier])  # a pure function
        most_rules, most_objects = max_sizes(TIERS[tier])
        assert len(rules) <= most_rules and len(objects) <= most_objects
        assert TIERS[tier]["chain_depth"] > 0 or not rules  # trivial: a goal and objects only
        assert all(len(rule) == 7 and rule[0] in kinds for rule in rules)


def test_our_goal_and_rule_ids_encode_as_the_librarys():
    # Our id tables against the library's own encodings: every goal and rule kind the
    # generator draws, with its tiles laid out as the library lays them out.
    from xminigrid.core import goals as G
    from xminigrid.core import rules as R

    jnp = jax.numpy
    a, b, prod = (3, 1), (7, 3), (5, 2)
    t = {name: jnp.array(v) for name, v in (("a", a), ("b", b), ("prod", prod))}

    def enc(obj):
        return np.asarray(obj.encode()).tolist()

    assert enc(G.AgentHoldGoal(tile=t["a"]))[:3] == [AGENT_HOLD_GOAL, *a]
    near = ["", "Up", "Right", "Down", "Left"]
    for ours, side in zip(AGENT_NEAR_GOALS, near):
        assert enc(getattr(G, f"AgentNear{side}Goal")(tile=t["a"]))[:3] == [ours, *a]
    for ours, side in zip(TILE_NEAR_GOALS, near):
        goal = getattr(G, f"TileNear{side}Goal")(tile_a=t["a"], tile_b=t["b"])
        assert enc(goal) == [ours, *a, *b]
    hold = R.AgentHoldRule(tile=t["a"], prod_tile=t["prod"])
    assert enc(hold) == [AGENT_HOLD_RULE, *a, *prod, 0, 0]
    for ours, side in zip(AGENT_NEAR_RULES, near):
        rule = getattr(R, f"AgentNear{side}Rule")(tile=t["a"], prod_tile=t["prod"])
        assert enc(rule) == [ours, *a, *prod, 0, 0]
    for ours, side in zip(TILE_NEAR_RULES, near):
        rule = getattr(R, f"TileNear{side}Rule")(tile_a=t["a"], tile_b=t["b"], prod_tile=t["prod"])
        assert enc(rule) == [ours, *a, *b, *prod]


def test_the_goal_of_a_trivial_rule_set_is_among_its_objects():
    for seed in range(100):
        goal, _, objects = generate_ruleset(seed, **TIERS["trivial"])
        tiles = [tuple(goal[1:3])] + ([tuple(goal[3:5])] if len(goal) == 5 else [])
        assert all(t in objects for t in tiles)


def test_held_out_and_deeper_rule_sets_are_disjoint_from_training_ones():
    family = make_family("xland", tier="small")
    gen = torch.Generator().manual_seed(0)
    split = {s: family.tasks.sample(300, s, gen) for s in ("train", "test", "ood")}

    def keys(tasks):
        return {
            (tuple(g.tolist()), tuple(map(tuple, r.tolist())))
            for g, r in zip(tasks["goal"], tasks["rules"])
        }

    assert keys(split["train"]).isdisjoint(keys(split["test"]))
    assert keys(split["train"]).isdisjoint(keys(split["ood"]))
    assert set(family.tasks.split_of(split["test"])) == {"test"}
    assert set(family.tasks.split_of(split["ood"])) == {"ood"}
    depth = lambda t: (t["rules"][:, :, 0] > 0).sum(1).float().mean()  # noqa: E731
    assert depth(split["ood"]) > depth(split["train"])  # the next tier: more rules


def test_a_benchmark_file_is_drawn_from_and_a_broken_one_named(tmp_path):
    rng = [generate_ruleset(s, **TIERS["trivial"]) for s in range(40)]
    goals = np.stack([np.pad(g, (0, 5 - len(g))) for g, _, _ in rng]).astype(np.uint8)
    objects = np.stack([np.pad(np.array(o), ((0, 5 - len(o)), (0, 0))) for _, _, o in rng])
    data = {"goals": goals, "rules": np.zeros((40, 1, 7), np.uint8), "init_tiles": objects}
    path = tmp_path / "tiny.pkl"
    with bz2.open(path, "wb") as f:
        pickle.dump(data, f)
    family = make_family("xland", benchmark_file=str(path))
    tasks = family.tasks.sample(10, "test", torch.Generator().manual_seed(0))
    drawn = {tuple(g.tolist()) for g in tasks["goal"]}
    assert drawn <= {tuple(g.tolist()) for g in goals}
    assert all(
        ruleset_split(g.numpy(), r.numpy(), 0.2) == "test"
        for g, r in zip(tasks["goal"], tasks["rules"])
    )
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(bz2.compress(b"not a pickle"))
    with pytest.raises(ConfigError, match="is not an xminigrid benchmark"):
        make_family("xland", benchmark_file=str(broken))


@pytest.mark.parametrize(
    "setting,words",
    [
        ("env.grid=R7-9x9", "env.grid must be one of"),
        ("env.tier=impossible", "env.tier and env.ood_tier must be one of"),
        ("env.benchmark_file=/no/such/file.pkl", "does not exist"),
        ("env.view_size=4", "odd"),
    ],
)
def test_bad_settings_are_one_line_exit_2_and_create_nothing(tmp_path, capsys, setting, words):
    out = tmp_path / "run"
    assert main(["train", "rl2-xland", "--out", str(out), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()


def test_the_missing_extra_is_named_in_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_jax(name, *args, **kwargs):
        if name.split(".")[0] in ("jax", "xminigrid"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    out = tmp_path / "run"
    assert main(["train", "rl2-xland", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'adaptrl[xland]'" in err, err
    assert not out.exists()
