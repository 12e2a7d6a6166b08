"""RL² pieces: PPO loss, hidden-state handling across episodes and trials, a learning test."""

import pytest
import torch
from torch.testing import assert_close

from adaptrl import make_family
from adaptrl.algos.rl2 import RL2, RL2Config, ppo_loss
from adaptrl.config import EvalConfig
from adaptrl.errors import ConfigError
from adaptrl.sampling import InProcessSampler


def _rl2(cfg, family):
    return RL2(cfg, family, InProcessSampler(family))


def _run(algo, tasks, mode=False, seed=0):
    """Trials through the sampler, and RL²'s rebuilt view of them (inputs, hidden states)."""
    traj = algo.sample_trials(tasks, seed, mode=mode)
    return traj, algo.trials(traj)


def test_ppo_loss_matches_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    T, B = 5, 3
    lp, old = torch.randn(T, B, generator=g) * 0.3, torch.randn(T, B, generator=g) * 0.3
    adv, v, ret, ent = (torch.randn(T, B, generator=g) for _ in range(4))
    mask = (torch.rand(T, B, generator=g) > 0.2).float()
    out = ppo_loss(
        lp,
        old,
        adv,
        v,
        ret,
        ent,
        mask,
        clip=0.2,
        value_coef=0.5,
        entropy_coef=0.01,
        value_scale=2.0,
    )
    pol = val = en = n = 0.0
    for t in range(T):
        for b in range(B):
            if not mask[t, b]:
                continue
            r = float(torch.exp(lp[t, b] - old[t, b]))
            a = float(adv[t, b])
            pol += -min(r * a, min(max(r, 0.8), 1.2) * a)
            val += ((float(v[t, b]) - float(ret[t, b])) / 2.0) ** 2
            en += float(ent[t, b])
            n += 1
    assert out["policy"].item() == pytest.approx(pol / n, rel=1e-5)
    assert out["value"].item() == pytest.approx(val / n, rel=1e-5)
    assert out["entropy"].item() == pytest.approx(en / n, rel=1e-5)
    assert out["total"].item() == pytest.approx((pol + 0.5 * val - 0.01 * en) / n, rel=1e-5)


def _agent(episodes=3, cell="gru"):
    family = make_family("tabular_mdp", episode_length=4)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    cfg = RL2Config(meta_batch_size=4, episodes_per_trial=episodes, hidden_size=16, cell=cell)
    return family, _rl2(cfg, family), gen


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_hidden_state_carries_across_episodes_and_resets_between_trials(cell):
    family, algo, gen = _agent(cell=cell)
    tasks = family.tasks.sample(4, "train", gen)
    traj, trials = _run(algo, tasks)
    assert trials.rewards.shape == (12, 4)  # 3 episodes x 4 steps, one trial per row
    # Episode boundaries are flagged to the agent (done input) but the state is not reset:
    done_input = trials.inputs[:, :, -2]  # last column: trial progress t / T
    assert done_input[[4, 8]].eq(1).all() and done_input[[1, 2, 3, 5, 9]].eq(0).all()
    # Re-running the whole trial from a zero state with no resets reproduces every step's
    # recorded log-probability: the hidden state was carried through all episodes...
    logits, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    lp = torch.log_softmax(logits, -1).gather(-1, trials.actions[..., None]).squeeze(-1)
    assert_close(lp, trials.log_probs)
    assert trials.hidden_in[4].abs().sum() > 0  # ...and was non-zero at the episode boundary
    # ...while restarting from zero at an episode boundary would give different outputs.
    cut, _, _ = algo.policy(trials.inputs[4:], algo.policy.initial_state(4, "cpu"))
    assert not torch.allclose(cut, logits[4:])
    # A new trial starts from a zero state.
    _, again = _run(algo, tasks, seed=1)
    assert again.hidden_in[0].abs().sum() == 0
    episode_returns = traj.per_episode(traj.rewards)
    assert episode_returns.shape == (3, 4)
    assert_close(episode_returns.sum(0), trials.rewards.sum(0))
    assert_close(episode_returns[1], trials.rewards[4:8].sum(0))  # episode 2 is steps 4..7


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_truncated_bptt_chunks_start_from_the_recorded_states(cell):
    """The replay records the whole state before every step (an LSTM's cell state too)."""
    family, algo, gen = _agent(cell=cell)
    _, trials = _run(algo, family.tasks.sample(4, "train", gen))
    assert trials.hidden_in.shape == (12, 4, 16 if cell == "gru" else 32)
    L = 5
    chunks = algo._chunks(trials.inputs, L)  # [L, C*B, in] with C = 3 (12 steps padded to 15)
    h0 = trials.hidden_in[::L].reshape(-1, algo.policy.state_size)
    logits, _, _ = algo.policy(chunks, h0.unsqueeze(0))
    full, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    # Chunk 1 of trial 2 is steps 5..9 of that trial.
    assert_close(logits[:, 1 * 4 + 2], full[5:10, 2], atol=1e-5, rtol=1e-5)


def test_time_input_switch_changes_the_recurrent_input():
    family = make_family("bandit", num_arms=3, num_pulls=5)
    gen = torch.Generator().manual_seed(0)
    with_time = _rl2(RL2Config(hidden_size=8), family)
    without = _rl2(RL2Config(hidden_size=8, time_input=False), family)
    assert with_time.policy.rnn.input_size == 1 + 3 + 2 + 1
    assert without.policy.rnn.input_size == 1 + 3 + 2
    _, trials = _run(without, family.tasks.sample(4, "train", gen))
    assert trials.inputs.shape == (5, 4, 6)


def test_rl2_config_rejects_impossible_values():
    for bad in (
        {"lr": -1.0},
        {"meta_batch_size": 0},
        {"gamma": 0.0},
        {"bptt_len": -1},
        {"encoder_size": -1},
        {"entropy_decay_iterations": -1},
        {"lr_decay_iterations": -1},
        {"cell": "rnn"},
    ):
        with pytest.raises(ConfigError):
            RL2Config(**bad)


def test_entropy_bonus_decays_linearly_to_zero_and_then_stays_off():
    """The coefficient follows the iteration the trainer hands in (so a resumed run continues
    the schedule), and the PPO loss uses it."""
    from adaptrl.algos.base import TrainContext

    family = make_family("tabular_mdp", episode_length=4)
    small = {"meta_batch_size": 4, "hidden_size": 16, "entropy_coef": 0.02}
    decaying = RL2Config(**small, entropy_decay_iterations=4)
    gen = torch.Generator().manual_seed(0)
    algo = _rl2(decaying, family)
    seen = [algo.train_iteration(TrainContext(i, 0, gen))["loss/entropy_coef"] for i in range(6)]
    assert seen == pytest.approx([0.02, 0.015, 0.01, 0.005, 0.0, 0.0])

    def params_after_iteration_4(cfg):
        torch.manual_seed(0)
        learner = _rl2(cfg, family)
        learner.train_iteration(TrainContext(4, 0, torch.Generator().manual_seed(0)))
        return torch.cat([p.detach().flatten() for p in learner.policy.parameters()])

    # Same seeds, bonus decayed to 0 against a constant bonus: only the entropy term differs.
    assert not torch.allclose(
        params_after_iteration_4(decaying), params_after_iteration_4(RL2Config(**small))
    )


def test_step_size_decays_linearly_to_zero_and_then_leaves_the_policy_unchanged():
    """Adam's step size follows the iteration (so a resumed run continues the schedule); at 0
    an iteration must not move the policy."""
    from adaptrl.algos.base import TrainContext

    family = make_family("tabular_mdp", episode_length=4)
    cfg = RL2Config(meta_batch_size=4, hidden_size=16, lr=2e-3, lr_decay_iterations=4)
    gen = torch.Generator().manual_seed(0)
    algo = _rl2(cfg, family)
    seen = [algo.train_iteration(TrainContext(i, 0, gen))["loss/lr"] for i in range(4)]
    assert seen == pytest.approx([2e-3, 1.5e-3, 1e-3, 5e-4])
    # A learner resumed from a checkpoint saved at another step size follows the schedule.
    resumed = _rl2(cfg, family)
    resumed.load_state_dict(algo.state_dict())
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # as saved
    assert resumed.train_iteration(TrainContext(2, 0, gen))["loss/lr"] == pytest.approx(1e-3)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    before = [p.detach().clone() for p in algo.policy.parameters()]
    assert algo.train_iteration(TrainContext(4, 0, gen))["loss/lr"] == 0.0
    assert algo.optimizer.param_groups[0]["lr"] == 0.0
    for p, q in zip(algo.policy.parameters(), before):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)


def test_previous_observation_input_holds_the_whole_transition():
    family = make_family("tabular_mdp", episode_length=4)
    gen = torch.Generator().manual_seed(0)
    cfg = RL2Config(
        meta_batch_size=4,
        episodes_per_trial=2,
        hidden_size=8,
        prev_obs_input=True,
        encoder_size=16,
        head_size=12,
    )
    algo = _rl2(cfg, family)
    S, A = 10, 5
    assert algo.policy.rnn.input_size == 16
    _, trials = _run(algo, family.tasks.sample(4, "train", gen))
    obs = trials.inputs[..., :S]
    prev_obs = trials.inputs[..., S + A + 2 : 2 * S + A + 2]
    assert prev_obs[0].eq(0).all()  # nothing before the trial's first step
    # Every later input carries the state the previous action was taken in, also across the
    # episode boundary at t = 4 (where the current state is a fresh start state).
    assert_close(prev_obs[1:], obs[:-1])
    # The recorded log-probabilities are reproduced by the encoder -> GRU -> head forward pass.
    logits, values, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    lp = torch.log_softmax(logits, -1).gather(-1, trials.actions[..., None]).squeeze(-1)
    assert_close(lp, trials.log_probs)
    assert values.shape == (8, 4)
    algo.update(trials)  # one PPO update runs through the extra layers


def test_terminal_observation_input_carries_the_last_state_across_the_boundary():
    """With ``terminal_obs_input`` the first input of an episode holds the observation the
    previous episode ended on (what the agent saw when it was paid), zeros at every other step;
    the acting agent and the learner's replay build the same inputs (same log-probabilities)."""
    family = make_family("tabular_mdp", episode_length=4)
    gen = torch.Generator().manual_seed(0)
    cfg = RL2Config(meta_batch_size=4, episodes_per_trial=3, hidden_size=8, terminal_obs_input=True)
    algo = _rl2(cfg, family)
    S, A = 10, 5
    assert algo.policy.rnn.input_size == 2 * S + A + 2 + 1
    traj, trials = _run(algo, family.tasks.sample(4, "train", gen))
    terminal = trials.inputs[..., S + A + 2 : 2 * S + A + 2]
    starts = torch.tensor([4, 8])  # episodes of 4 steps: new episodes begin at t = 4 and 8
    assert_close(terminal[starts], traj.next_obs[starts - 1])
    assert traj.next_obs[starts - 1].abs().sum() > 0
    others = torch.ones(12, dtype=torch.bool)
    others[starts] = False
    assert terminal[others].eq(0).all()
    logits, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    lp = torch.log_softmax(logits, -1).gather(-1, trials.actions[..., None]).squeeze(-1)
    assert_close(lp, trials.log_probs)
    # A memoryless policy (the domain-randomised reference) never sees it.
    blind = _rl2(RL2Config(**{**cfg.__dict__, "memory": False}), family)
    _, blind_trials = _run(blind, family.tasks.sample(4, "train", gen))
    assert blind_trials.inputs[..., S:-1].eq(0).all()  # only obs and progress remain


def test_mode_actions_take_the_most_likely_action():
    family, algo, gen = _agent()
    tasks = family.tasks.sample(4, "train", gen)
    _, trials = _run(algo, tasks, mode=True)
    logits, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    log_p = torch.log_softmax(logits, -1)
    assert torch.equal(trials.actions, log_p.argmax(-1))
    _, sampled = _run(algo, tasks)
    s_logits, _, _ = algo.policy(sampled.inputs, algo.policy.initial_state(4, "cpu"))
    assert not torch.equal(sampled.actions, s_logits.argmax(-1))  # sampling does differ


def test_a_step_counted_batch_is_refused_in_one_line():
    family, algo, gen = _agent()
    tasks = family.tasks.sample(2, "train", gen)
    with pytest.raises(ConfigError, match="unknown config key 'evaluate.batch_steps'.*: actions"):
        algo.meta_test(tasks, EvalConfig(adaptation={"batch_steps": 4000}))


def test_continuous_actions_get_a_gaussian_head_whose_log_probs_replay():
    """RL² on a Box action space (the drone): the recorded log-probabilities of sampled action
    vectors are reproduced by replaying the trial, and a PPO update runs and changes the policy."""
    family = make_family("drone_wind", horizon=6)
    algo = _rl2(
        RL2Config(hidden_size=8, episodes_per_trial=2, meta_batch_size=4, init_std=0.3), family
    )
    assert algo.policy.distribution.continuous and algo.policy.rnn.input_size == 7 + 2 + 2 + 1
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    traj = algo.sample_trials(tasks, seed=3)
    assert traj.actions.shape == (12, 4, 2) and traj.actions.dtype == torch.float32
    trials = algo.trials(traj)
    mean, _, _ = algo.policy(trials.inputs, algo.policy.initial_state(4, "cpu"))
    log_prob, entropy = algo._log_prob_entropy(mean, trials.actions)
    live = trials.mask.bool()
    assert_close(log_prob[live], trials.log_probs[live], atol=1e-5, rtol=1e-5)
    std = torch.tensor(0.3)
    assert_close(
        entropy[0, 0], 2 * (std.log() + 0.5 * torch.log(torch.tensor(2 * torch.pi * torch.e)))
    )
    before = [p.clone() for p in algo.policy.parameters()]
    algo.update(trials)
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.policy.parameters()))
    mode = algo.sample_trials(tasks, seed=3, mode=True)
    replay, _, _ = algo.policy(algo.trials(mode).inputs, algo.policy.initial_state(4, "cpu"))
    assert_close(mode.actions[0], replay[0])  # the mode is the mean


@pytest.mark.parametrize(
    "env,kwargs",
    [
        ("bandit", {"num_arms": 3, "num_pulls": 8}),
        ("tabular_mdp", {"num_states": 3, "num_actions": 2, "episode_length": 4}),
        ("navigation2d", {"horizon": 6}),  # Gaussian head
        ("bandit", {"num_arms": 3, "num_pulls": 8, "cell": "lstm"}),
    ],
)
def test_rl2_trpo_step_respects_the_kl_bound_and_adam_fits_only_the_value_network(env, kwargs):
    """With an LSTM too (the curvature is a double backward through its fused CPU kernel)."""
    kwargs = dict(kwargs)
    cell = kwargs.pop("cell", "gru")
    family = make_family(env, **kwargs)
    cfg = RL2Config(
        cell=cell,
        meta_batch_size=16,
        episodes_per_trial=2,
        hidden_size=8,
        optimizer="trpo",
        max_kl=0.005,
        curvature_fraction=0.5,
    )
    algo = _rl2(cfg, family)
    tasks = family.tasks.sample(16, "train", torch.Generator().manual_seed(0))
    traj = algo.sample_trials(tasks, seed=1)
    trials = algo.trials(traj)
    before = {k: v.clone() for k, v in algo.policy.state_dict().items()}
    value_before = {k: v.clone() for k, v in algo.value_net.state_dict().items()}
    h0 = trials.hidden_in[0].unsqueeze(0)
    with torch.no_grad():
        old = algo.policy.distribution_params(algo.policy(trials.inputs, h0)[0])
    stats = algo.update(trials)
    assert stats["trpo/accepted"] == 1.0 and stats["trpo/improvement"] > 0
    with torch.no_grad():
        new = algo.policy.distribution_params(algo.policy(trials.inputs, h0)[0])
        kl = float(algo._mean_kl(old, new, trials.mask))
    assert 0 < kl <= 0.005 and abs(kl - stats["trpo/kl"]) < 1e-6
    changed = {k for k, v in algo.policy.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("rnn") for k in changed)
    assert not any(k.startswith("value_head") for k in changed)  # unused with TRPO
    fitted = algo.value_net.state_dict()
    assert any(not torch.equal(v, value_before[k]) for k, v in fitted.items())
    # Adam only ever touches the value network; TRPO the policy.
    assert {id(p) for g in algo.optimizer.param_groups for p in g["params"]} == {
        id(p) for p in algo.value_net.parameters()
    }
    # The values RL² trains on come from the value network, and it is checkpointed.
    assert_close(algo.trials(traj).values, algo.value_net(trials.inputs, h0)[1] * algo.value_scale)
    state = algo.state_dict()
    other = _rl2(cfg, family)
    other.load_state_dict(state)
    for k, v in other.value_net.state_dict().items():
        assert torch.equal(v, fitted[k])


def test_checkpoints_that_name_the_cell_gru_still_load():
    """Policies saved before the cell became a choice stored the GRU under ``gru.``."""
    family, algo, _ = _agent()
    old = {k.replace("rnn.", "gru.", 1): v + 1 for k, v in algo.policy.state_dict().items()}
    assert any(k.startswith("gru.") for k in old)
    algo.policy.load_state_dict(old)
    for k, v in algo.policy.state_dict().items():
        assert_close(v, old[k.replace("rnn.", "gru.", 1)])


def test_the_fused_lstm_gives_the_curvature_of_the_unfused_one():
    """RL²-TRPO's Fisher-vector product is a double backward through the cell; on CPUs the LSTM
    runs as a fused oneDNN kernel, which must give the same second derivatives."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 8)
    x = torch.randn(6, 3, 4)
    params = list(lstm.parameters())
    v = [torch.randn_like(p) for p in params]

    def hessian_vector_product(fused):
        with torch.backends.mkldnn.flags(enabled=fused):
            out, _ = lstm(x)
            grads = torch.autograd.grad(out.pow(2).sum(), params, create_graph=True)
            return torch.autograd.grad(sum((g * u).sum() for g, u in zip(grads, v)), params)

    for fused, plain in zip(hessian_vector_product(True), hessian_vector_product(False)):
        assert_close(fused, plain, rtol=1e-4, atol=1e-5)


def test_recurrent_policy_refuses_an_unknown_cell():
    from adaptrl.policies import RecurrentCategoricalPolicy

    with pytest.raises(ValueError, match="gru or lstm"):
        RecurrentCategoricalPolicy(1, 2, 8, cell="rnn")
