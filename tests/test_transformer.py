"""The in-context transformer: the key-value cache against the full forward pass, causality (with
a mutation that breaks it and must be caught), the memoryless reference, the controller and its
export, resume and bad input (its learning test is beside RL²'s, in test_rl2_learning.py)."""

import pytest
import torch
from torch.testing import assert_close

import adaptrl
from adaptrl import make_family
from adaptrl.algos.transformer import InContextTransformer, TransformerConfig
from adaptrl.cli import main
from adaptrl.errors import ConfigError
from adaptrl.runs import load_checkpoint_file
from adaptrl.sampling import InProcessSampler
from adaptrl.sampling.agents import RecurrentAgent
from adaptrl.transformer_policy import TransformerCategoricalPolicy


def _learner(family, **kw):
    torch.manual_seed(0)
    cfg = TransformerConfig(**{"meta_batch_size": 4, "model_size": 16, "num_heads": 2, **kw})
    return InContextTransformer(cfg, family, InProcessSampler(family))


def _policy(memory=True):
    torch.manual_seed(0)
    return TransformerCategoricalPolicy(
        3, 4, model_size=16, num_layers=2, num_heads=2, memory=memory
    )


def test_the_cache_gives_the_full_forward_pass_step_by_step_and_in_pieces():
    policy = _policy()
    x = torch.randn(9, 5, policy.encoder.in_features)
    full, values, cache = policy(x, policy.initial_state(5, "cpu"))
    assert cache.shape == (9, 5, policy.state_size) == (9, 5, 2 * 2 * 16)
    steps, state = [], policy.initial_state(5, "cpu")
    for t in range(9):
        out, _, state = policy(x[t : t + 1], state)
        steps.append(out)
    assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)
    assert_close(state, cache, atol=1e-5, rtol=1e-5)
    head, _, part = policy(x[:4], policy.initial_state(5, "cpu"))  # a prefix, then the rest
    tail, tail_values, _ = policy(x[4:], part)
    assert_close(torch.cat([head, tail]), full, atol=1e-5, rtol=1e-5)
    assert_close(tail_values, values[4:], atol=1e-5, rtol=1e-5)


def test_acting_in_place_gives_the_forward_pass_and_its_cache():
    """The samplers' path: a cache allocated once for the trial, each step's keys and values
    written into its row; the same outputs, values and cache as ``forward``'s growing cache."""
    policy = _policy()
    x = torch.randn(9, 5, policy.encoder.in_features)
    full, values, cache = policy(x, policy.initial_state(5, "cpu"))
    buffer = policy.acting_state(12, 5, "cpu")
    assert buffer.shape == (12, 5, policy.state_size)
    for t in range(9):
        out, value, state = policy.act_step(x[t : t + 1], buffer, t)
        assert state is buffer  # written in place, never copied
        assert_close(out, full[t : t + 1], atol=1e-5, rtol=1e-5)
        assert_close(value, values[t : t + 1], atol=1e-5, rtol=1e-5)
    assert_close(buffer[:9], cache, atol=1e-5, rtol=1e-5)
    assert not buffer[9:].any()  # rows after the last step are never touched
    memoryless = _policy(memory=False)  # keeps no past: an empty cache that stays empty
    state = RecurrentAgent(memoryless).start(torch.zeros(5, dtype=torch.int64), 9)["hidden"]
    assert state.shape == (0, 5, memoryless.state_size)
    out, _, state = memoryless.act_step(x[:1], state, 0)
    assert_close(out, memoryless(x[:1], memoryless.initial_state(5, "cpu"))[0])
    assert state.shape[0] == 0


def _looks_ahead(policy) -> bool:
    """Whether changing the steps after t changes the output at t (for any t)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, policy.encoder.in_features, generator=g)
    out, _, _ = policy(x, policy.initial_state(3, "cpu"))
    for t in range(7):
        changed = x.clone()
        changed[t + 1 :] = torch.randn(changed[t + 1 :].shape, generator=g)
        again, _, _ = policy(changed, policy.initial_state(3, "cpu"))
        if not torch.allclose(again[: t + 1], out[: t + 1], atol=1e-6):
            return True
    return False


def test_attention_never_looks_ahead_and_a_mutation_that_lets_it_is_caught(monkeypatch):
    policy = _policy()
    assert not _looks_ahead(policy)
    import adaptrl.transformer_policy as module

    sdpa = module.F.scaled_dot_product_attention
    monkeypatch.setattr(  # the mutation: the causal mask dropped
        module.F, "scaled_dot_product_attention", lambda q, k, v, mask: sdpa(q, k, v)
    )
    assert _looks_ahead(policy)


def test_the_past_reaches_the_output_only_with_memory():
    x = torch.randn(6, 2, _policy().encoder.in_features)
    changed = x.clone()
    changed[0] += 1.0  # the first step only
    for memory in (True, False):
        policy = _policy(memory)
        out, _, cache = policy(x, policy.initial_state(2, "cpu"))
        other, _, _ = policy(changed, policy.initial_state(2, "cpu"))
        assert torch.allclose(out[1:], other[1:]) is (not memory)
        assert cache.shape[0] == (6 if memory else 0)  # the memoryless policy keeps no cache


@pytest.mark.parametrize(
    "env,kwargs",
    [
        ("tabular_mdp", {"episode_length": 4}),
        ("drone_wind", {"horizon": 5}),  # a Gaussian head
        ("recommender", {"session_length": 4}),
        ("bandit", {"num_pulls": 5}),
    ],
)
def test_sampled_actions_and_log_probs_replay_under_the_full_forward_pass(env, kwargs):
    """The sampler acts one token at a time through the cache; the PPO update replays the whole
    trial at once: both must give the same log-probabilities, across episode boundaries."""
    family = make_family(env, **kwargs)
    algo = _learner(family, episodes_per_trial=3)
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    traj = algo.sample_trials(tasks, seed=3)
    trials = algo.trials(traj)
    out, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    log_prob, _ = algo._log_prob_entropy(out, trials.actions)
    live = trials.mask.bool()
    assert_close(log_prob[live], trials.log_probs[live], atol=1e-5, rtol=1e-5)
    before = [p.clone() for p in algo.policy.parameters()]
    stats = algo.update(trials)
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))


def test_controller_takes_the_samplers_actions_live_and_after_export(tmp_path):
    family = make_family("maze", size=3, horizon=8)
    algo = _learner(family, episodes_per_trial=2, terminal_obs_input=True)
    tasks = family.tasks.sample(1, "test", torch.Generator().manual_seed(0))
    traj = algo.sample_trials(tasks, seed=5, mode=True)
    controller = algo.controller(mode=True)
    saved = adaptrl.load_policy(adaptrl.save_policy(controller, tmp_path / "tr.pt2"), True)
    for ctrl in (controller, saved):
        ctrl.reset()
        assert ctrl.hidden.shape == (0, 1, algo.policy.state_size)
        steps = int(traj.mask[:, 0].sum())
        actions = []
        for t in range(steps):
            actions.append(ctrl.act(traj.obs[t, 0].numpy()))
            ctrl.observe(float(traj.rewards[t, 0]), bool(traj.ends[t, 0]), traj.next_obs[t, 0])
        assert actions == traj.actions[:steps, 0].tolist()
        assert ctrl.hidden.shape[0] == steps  # one cache entry per step


def test_config_and_context_refuse_impossible_values():
    for bad in ({"model_size": 0}, {"num_heads": 0}, {"context_len": -1}, {"model_size": 6}):
        with pytest.raises(ConfigError):
            TransformerConfig(**{"num_heads": 2, **bad})
    family = make_family("maze", size=3, horizon=8)
    with pytest.raises(ConfigError, match="cannot hold a trial of 2 episodes x 8 steps = 16"):
        _learner(family, episodes_per_trial=2, context_len=10)
    _learner(family, episodes_per_trial=2, context_len=16)  # the trial fits


def test_cli_bad_context_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "transformer-maze", "--out", str(out), "--set", "algo.context_len=20"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "context_len 20 cannot hold" in err
    assert not out.exists()
    assert main(["train", "transformer-maze", "--out", str(out), "--set", "algo.cell=lstm"]) == 2
    assert "cell" in capsys.readouterr().err and not out.exists()


def test_resume_is_identical_to_an_uninterrupted_run(tmp_path):
    tiny = ["--set", "algo.meta_batch_size=8", "--set", "algo.model_size=16", "--quiet"]
    tiny += ["--set", "algo.num_heads=2", "--set", "train.checkpoint_every=1"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    preset = "transformer-bandit-k5-n10"
    assert main(["train", preset, "--out", str(whole), "--iterations", "4", *tiny]) == 0
    assert main(["train", preset, "--out", str(split), "--iterations", "2", *tiny]) == 0
    assert main(["train", "--resume", str(split), "--iterations", "4", "--quiet"]) == 0
    a = load_checkpoint_file(whole / "checkpoints" / "last.pt")["algorithm"]
    b = load_checkpoint_file(split / "checkpoints" / "last.pt")["algorithm"]
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
