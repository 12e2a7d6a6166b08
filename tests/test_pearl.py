"""PEARL: the posterior and KL against closed forms, the soft actor-critic losses against a
loop over transitions, the buffers, the meta-test protocol, exact resume, bad input."""

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

import adaptrl
from adaptrl.algos.base import TrainContext
from adaptrl.algos.pearl import (
    PEARL,
    PEARLConfig,
    actor_value_losses,
    critic_loss,
    kl_to_standard_normal,
    product_of_gaussians,
)
from adaptrl.algos.replay_buffers import ReplayBuffers
from adaptrl.config import EvalConfig
from adaptrl.envs import make_family
from adaptrl.errors import ConfigError
from adaptrl.sampling import InProcessSampler

TINY = dict(
    latent_size=3,
    hidden_size=16,
    encoder_hidden_size=16,
    num_train_tasks=6,
    meta_batch_size=4,
    tasks_per_iteration=2,
    initial_steps=40,
    prior_steps=40,
    posterior_steps=20,
    extra_rl_steps=20,
    gradient_steps=5,
    batch_size=8,
    context_batch_size=8,
    buffer_size=200,
)


def _learner(seed=0, **overrides):
    family = make_family("point_robot")
    torch.manual_seed(seed)
    return PEARL(PEARLConfig(**{**TINY, **overrides}), family, InProcessSampler(family)), family


def test_the_posterior_is_the_closed_form_product_of_gaussians():
    g = torch.Generator().manual_seed(0)
    means, variances = torch.randn(3, 7, 4, generator=g), torch.rand(3, 7, 4, generator=g) + 0.1
    mean, variance = product_of_gaussians(means, variances)
    for i in range(3):
        for d in range(4):  # one coordinate at a time, by the textbook formula
            precision = sum(1.0 / float(variances[i, n, d]) for n in range(7))
            weighted = sum(float(means[i, n, d]) / float(variances[i, n, d]) for n in range(7))
            assert float(variance[i, d]) == pytest.approx(1.0 / precision, rel=1e-5)
            assert float(mean[i, d]) == pytest.approx(weighted / precision, rel=1e-5, abs=1e-6)
    shuffled = product_of_gaussians(means[:, torch.randperm(7)], variances[:, torch.randperm(7)])
    assert not torch.allclose(shuffled[0], mean)  # different factors, different product
    order = torch.randperm(7)
    same = product_of_gaussians(means[:, order], variances[:, order])
    torch.testing.assert_close(same[0], mean)  # ... but the order of the context is irrelevant
    torch.testing.assert_close(same[1], variance)
    # Padding (a task whose episode ended early) leaves the product as if it were absent.
    padded = torch.cat([means, torch.randn(3, 2, 4, generator=g)], 1)
    padded_var = torch.cat([variances, torch.rand(3, 2, 4, generator=g)], 1)
    mask = torch.cat([torch.ones(3, 7), torch.zeros(3, 2)], 1)
    masked = product_of_gaussians(padded, padded_var, mask)
    torch.testing.assert_close(masked[0], mean)
    torch.testing.assert_close(masked[1], variance)


def test_kl_to_the_prior_is_the_closed_form():
    g = torch.Generator().manual_seed(1)
    mean, variance = torch.randn(5, 3, generator=g), torch.rand(5, 3, generator=g) + 0.05
    expected = kl_divergence(Normal(mean, variance.sqrt()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mean, variance), expected)
    assert float(kl_to_standard_normal(torch.zeros(2), torch.ones(2))) == 0.0


def test_the_posterior_narrows_as_context_grows_on_a_fixed_task():
    algo, family = _learner()
    task = {"goal": torch.tensor([[0.6, 0.8]])}
    traj = algo._collect(task, torch.zeros(1, 8, 3), seed=3)
    context = algo.context_of(algo._transitions(traj)[0])[None]  # [1, 160, d]
    with torch.no_grad():
        spreads = [float(algo.posterior(context[:, :n])[1].sum()) for n in (1, 10, 40, 160)]
    assert spreads == sorted(spreads, reverse=True) and spreads[-1] < spreads[0] / 50
    prior_mean, prior_var = algo.posterior(context[:, :0])
    assert float(prior_mean.abs().sum()) == 0.0 and float(prior_var.mean()) == 1.0


def _loop_losses(nets, batch, z, noise, gamma, scale, mean_reg, std_reg):
    """The losses one transition at a time, written from the paper's equations."""
    q_terms, v_terms, pi_terms, means, log_stds = [], [], [], [], []
    for i in range(batch["obs"].shape[0]):
        s, a, zi = batch["obs"][i], batch["actions"][i], z[i]
        target = (
            batch["rewards"][i] * scale
            + (1 - batch["terminated"][i])
            * gamma
            * nets.target_v(torch.cat([batch["next_obs"][i], zi]))[0]
        )
        for q in (nets.q1, nets.q2):
            q_terms.append((q(torch.cat([s, a, zi]))[0] - target) ** 2)
        mean, log_std = nets.actor(torch.cat([s, zi]))
        u = mean + log_std.exp() * noise[i]
        new_a = torch.tanh(u)
        log_pi = Normal(mean, log_std.exp()).log_prob(u).sum() - torch.log(1 - new_a**2).sum()
        sa = torch.cat([s, new_a, zi])
        min_q = torch.minimum(nets.q1(sa)[0], nets.q2(sa)[0])
        v_terms.append((nets.v(torch.cat([s, zi]))[0] - (min_q - log_pi)) ** 2)
        pi_terms.append(log_pi - min_q)
        means.append(mean)
        log_stds.append(log_std)
    n = batch["obs"].shape[0]
    reg = (
        mean_reg * torch.stack(means).pow(2).mean() + std_reg * torch.stack(log_stds).pow(2).mean()
    )
    return sum(q_terms) / n, sum(v_terms) / n, sum(pi_terms) / n + reg


def sac_batch(n: int, g: torch.Generator, terminal_share: float) -> dict[str, torch.Tensor]:
    """``n`` random point-robot transitions (2-D observations and actions inside the box)."""
    return {
        "obs": torch.randn(n, 2, generator=g),
        "actions": torch.rand(n, 2, generator=g) * 1.8 - 0.9,
        "rewards": torch.randn(n, generator=g),
        "next_obs": torch.randn(n, 2, generator=g),
        "terminated": (torch.rand(n, generator=g) < terminal_share).float(),
    }


def test_the_soft_actor_critic_losses_equal_a_loop_over_transitions():
    algo, _ = _learner()
    g = torch.Generator().manual_seed(2)
    n = 12
    batch = sac_batch(n, g, 0.3)
    z, noise = torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g) * 0.5
    with torch.no_grad():
        q = critic_loss(algo.nets, batch, z, 0.9, 5.0)
        v, pi, _ = actor_value_losses(algo.nets, batch["obs"], z, noise, 1e-3, 1e-3)
        q_ref, v_ref, pi_ref = _loop_losses(algo.nets, batch, z, noise, 0.9, 5.0, 1e-3, 1e-3)
    assert float(q) == pytest.approx(float(q_ref), rel=1e-5)
    assert float(v) == pytest.approx(float(v_ref), rel=1e-4)
    assert float(pi) == pytest.approx(float(pi_ref), rel=1e-4, abs=1e-5)


def test_the_critic_loss_trains_the_encoder_and_the_actor_loss_does_not():
    algo, _ = _learner()
    g = torch.Generator().manual_seed(4)
    context = torch.randn(2, 5, algo.context_dim, generator=g)
    mean, var = algo.posterior(context)
    z = (mean + var.sqrt() * torch.randn(mean.shape, generator=g)).repeat_interleave(3, 0)
    batch = {
        k: torch.randn(6, *s, generator=g)
        for k, s in (("obs", (2,)), ("actions", (2,)), ("rewards", ()), ("next_obs", (2,)))
    }
    batch["terminated"] = torch.zeros(6)
    _, pi, _ = actor_value_losses(algo.nets, batch["obs"], z, torch.zeros(6, 2), 0.0, 0.0)
    pi.backward(retain_graph=True)
    assert all(p.grad is None for p in algo.nets.encoder.parameters())
    critic_loss(algo.nets, batch, z, 0.9, 1.0).backward()
    assert all(p.grad is not None for p in algo.nets.encoder.parameters())


def test_replay_buffers_are_rings_per_task_and_sample_only_filled_rows():
    fields = {"obs": ((2,), torch.float32), "rewards": ((), torch.float32)}
    buf = ReplayBuffers(3, 5, fields)
    buf.add(1, {"obs": torch.arange(14.0).reshape(7, 2), "rewards": torch.arange(7.0)})
    assert int(buf.size[1]) == 5 and int(buf.size[0]) == 0 and int(buf.top[1]) == 0
    assert buf.data["rewards"][1].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0]  # the newest 5
    buf.add(1, {"obs": torch.zeros(2, 2), "rewards": torch.tensor([7.0, 8.0])})  # wraps
    assert buf.data["rewards"][1].tolist() == [7.0, 8.0, 4.0, 5.0, 6.0] and int(buf.top[1]) == 2
    buf.add(2, {"obs": torch.ones(2, 2), "rewards": torch.tensor([10.0, 11.0])})
    got = buf.sample(torch.tensor([2, 1, 2]), 50, torch.Generator().manual_seed(0))
    assert got["obs"].shape == (3, 50, 2)
    assert set(got["rewards"][0].tolist()) == {10.0, 11.0}
    assert set(got["rewards"][1].tolist()) == {7.0, 8.0, 4.0, 5.0, 6.0}
    buf.clear(2)
    with pytest.raises(RuntimeError, match="empty replay buffer"):
        buf.sample(torch.tensor([2]), 1, torch.Generator())


def _train(algo, iterations):
    generator = torch.Generator().manual_seed(0)
    for i in range(iterations):
        algo.train_iteration(TrainContext(i, 0, generator))


def _run(tmp_path, name, iterations):
    from adaptrl.build import build_run_config
    from adaptrl.runs import Run

    data = {
        "algorithm": "pearl",
        "env": {"name": "point_robot"},
        "algo": TINY,
        "train": {"num_iterations": iterations, "checkpoint_every": 1},
        "sampler": {"backend": "inprocess"},
    }
    config = build_run_config(data)
    path = tmp_path / name
    return (Run.open(path) if path.exists() else Run.create(path, config)), config


def test_resume_with_buffers_gives_the_parameters_of_an_uninterrupted_run(tmp_path):
    """Two iterations, a new process's Trainer resuming from last.pt and its buffer file, one
    more: the same networks, optimisers and buffers, bit for bit, as three in one go."""
    from dataclasses import replace

    from adaptrl.runs import load_arrays
    from adaptrl.trainer import Trainer

    run, config = _run(tmp_path, "straight", 3)
    with Trainer(run, config) as straight:
        straight.train(progress=False)
    run2, config2 = _run(tmp_path, "resumed", 2)
    with Trainer(run2, config2) as first:
        first.train(progress=False)
    bulk = sorted(p.name for p in (run2.path / "checkpoints").glob("last.bulk.*"))
    assert bulk == ["last.bulk.2"]  # the older buffer file went once last.pt named the new one
    more = replace(config2, train=replace(config2.train, num_iterations=3))
    with Trainer(run2, more, resume=True) as resumed:
        assert resumed.iteration == 2
        resumed.train(progress=False)
        a, b = straight.learner, resumed.learner
        for name, module in a.networks().items():
            other = b.networks()[name].state_dict()
            for key, value in module.state_dict().items():
                torch.testing.assert_close(value, other[key], rtol=0, atol=0, msg=f"{name}.{key}")
        assert torch.equal(a.rl_buffer.size, b.rl_buffer.size)
        for key, rows in a.bulk_state().items():
            assert torch.equal(rows, b.bulk_state()[key]), key
        assert straight.env_steps == resumed.env_steps == 6 * 40 + 3 * 2 * 80  # counted, kept
    # A damaged buffer file is one line, not a traceback or a silent restart.
    path = run2.path / "checkpoints" / "last.bulk.3"
    path.write_bytes(path.read_bytes()[:100])
    from adaptrl.errors import RunError

    with pytest.raises(RunError, match="corrupted or not an adaptrl array file"):
        list(load_arrays(path))


def test_meta_test_records_every_trajectory_and_infers_from_online_context_only():
    algo, family = _learner()
    _train(algo, 1)
    tasks = family.tasks.sample(4, "test", torch.Generator().manual_seed(5))
    before = algo.rl_buffer.size.clone()
    cfg = EvalConfig(num_tasks=4, num_steps=3, adaptation={"exploration_trajectories": 2})
    result = algo.meta_test(tasks, cfg, seed=7)
    assert result.returns.shape == (4, 4) and len(result.trajectories) == 4
    assert torch.equal(algo.rl_buffer.size, before)  # meta-test never touches the buffers
    again = algo.meta_test(tasks, cfg, seed=7)
    torch.testing.assert_close(again.returns, result.returns)  # seeded
    # Deterministic actions, yet each exploration trajectory draws its own z from the prior
    # (oyster resamples z after every trajectory): with one shared z the two would be equal bit
    # for bit on every task (the actor barely reads z after one iteration, hence > 0).
    first, second = result.trajectories[0].actions, result.trajectories[1].actions
    assert (first - second).abs().amax(dim=(0, 2)).min() > 0


@pytest.mark.parametrize("next_obs", [False, True])
def test_the_controller_acts_in_a_plain_env_as_meta_test_does(next_obs, tmp_path):
    """The deployed agent (step by step in one gymnasium env, its own online context) takes
    meta-test's actions and returns on the same held-out task, trajectory after trajectory; so
    does the one file ``save_policy`` writes of it (actor and encoder), loaded back."""
    algo, family = _learner(context_next_obs=next_obs)
    _train(algo, 1)
    tasks = family.tasks.sample(1, "test", torch.Generator().manual_seed(5))
    cfg = EvalConfig(num_tasks=1, num_steps=3, adaptation={"exploration_trajectories": 2})
    result = algo.meta_test(tasks, cfg, seed=7)
    controller = algo.controller(exploration=2, seed=7)
    path = adaptrl.save_policy(controller, tmp_path / "pearl.pt2")
    for agent in (controller, adaptrl.load_policy(path, seed=7)):
        env = family.make_single_task_env({k: v[:1] for k, v in tasks.items()})
        agent.reset()
        for k in range(4):
            obs, _ = env.reset(seed=k)
            actions, total, done = [], 0.0, False
            while not done:
                actions.append(agent.act(obs))
                obs, reward, terminated, truncated, _ = env.step(actions[-1])
                done = terminated or truncated
                agent.observe(reward, done, obs)
                total += reward
            expected = result.trajectories[k].actions[: len(actions), 0]
            torch.testing.assert_close(
                torch.as_tensor(np.stack(actions)), expected, atol=1e-5, rtol=1e-5
            )
            assert total == pytest.approx(float(result.returns[k, 0]), abs=1e-4)
        assert agent.episodes == 4 and len(agent.context) == 4 * family.make_env(1).horizon
        if next_obs:
            with pytest.raises(ValueError, match="next_obs"):
                agent.observe(0.0, False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"latent_size": 0}, "algo.latent_size must be > 0"),
        ({"buffer_size": 8, "batch_size": 16}, "smaller than a batch"),
        ({"prior_steps": 0, "posterior_steps": 0}, r"prior_steps \+ algo.posterior_steps"),
    ],
)
def test_impossible_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        PEARLConfig(**{**TINY, **overrides})


def test_a_discrete_action_family_is_refused():
    family = make_family("bandit")
    with pytest.raises(ConfigError, match="needs continuous actions"):
        PEARL(PEARLConfig(**TINY), family, InProcessSampler(family))


def test_buffers_that_cannot_fit_are_refused_before_any_work():
    family = make_family("point_robot")
    with pytest.raises(ConfigError, match="lower algo.buffer_size"):
        PEARL(PEARLConfig(**{**TINY, "buffer_size": 10**12}), family, InProcessSampler(family))


def test_the_sparse_point_robot_pays_only_near_the_goal():
    family = make_family("point_robot")
    env = family.make_env(2)
    env.reset(tasks={"goal": torch.tensor([[0.1, 0.0], [1.0, 0.0]])})
    _, rewards, terminated, truncated, _ = env.step(torch.tensor([[0.1, 0.0], [0.5, 0.0]]))
    assert rewards.tolist() == pytest.approx([1.0, 0.0])  # on the goal; 0.9 away (clipped move)
    env.step(torch.tensor([[0.0, 0.1], [0.0, 0.0]]))
    assert float(env.step(torch.zeros(2, 2))[1][0]) == pytest.approx(1 - 0.1)
    assert not terminated.any() and not truncated.any()
    dense = make_family("point_robot", sparse_radius=0.0, goals="square").make_env(1)
    dense.reset(tasks={"goal": torch.tensor([[0.3, 0.4]])})
    assert float(dense.step(torch.zeros(1, 2))[1][0]) == pytest.approx(-0.5)
    goals = family.tasks.sample(200, "train", torch.Generator().manual_seed(0))["goal"]
    assert torch.allclose(goals.norm(dim=-1), torch.ones(200)) and bool((goals[:, 1] >= 0).all())
    test = family.tasks.sample(200, "test", torch.Generator().manual_seed(0))["goal"]
    assert set(family.tasks.split_of({"goal": test})) == {"test"}
    assert set(family.tasks.split_of({"goal": goals})) == {"train"}


def test_a_dense_critic_reward_feeds_the_critic_and_the_context_keeps_the_sparse_one():
    """oyster's sparse point robot: the RL buffer holds −distance (the dense reward the sparse
    one is cut from), the encoder buffer the env's reward, for the same transitions."""
    algo, _ = _learner(critic_reward="dense", initial_steps=0, extra_rl_steps=0)
    generator = torch.Generator().manual_seed(0)
    algo.train_iteration(TrainContext(0, 0, generator))
    task = int(algo.encoder_buffer.size.nonzero()[0, 0])
    goal = algo.train_tasks["goal"][task]
    n = int(algo.encoder_buffer.size[task])
    enc = {k: v[task, :n] for k, v in algo.encoder_buffer.data.items()}
    rl = {k: v[task, :n] for k, v in algo.rl_buffer.data.items()}
    distance = (rl["next_obs"] - goal).norm(dim=-1)
    assert torch.equal(rl["next_obs"], enc["next_obs"])
    assert torch.allclose(rl["rewards"], -distance)
    sparse = torch.where(distance <= 0.2, 1.0 - distance, torch.zeros_like(distance))
    assert torch.allclose(enc["rewards"], sparse)
    assert bool((rl["rewards"] < 0).all()) and not torch.equal(rl["rewards"], enc["rewards"])


def test_the_env_reward_feeds_both_buffers_by_default():
    algo, _ = _learner(initial_steps=0, extra_rl_steps=0)
    stats = algo.train_iteration(TrainContext(0, 0, torch.Generator().manual_seed(0)))
    assert stats["loss/q"] >= 0 and "loss/mean_q" in stats  # the Q loss, not the mean Q
    task = int(algo.encoder_buffer.size.nonzero()[0, 0])
    n = int(algo.encoder_buffer.size[task])
    assert torch.equal(
        algo.rl_buffer.data["rewards"][task, :n], algo.encoder_buffer.data["rewards"][task, :n]
    )


def test_a_dense_critic_reward_needs_a_family_that_has_one():
    family = make_family("drone_wind")
    with pytest.raises(ConfigError, match="critic_reward=dense needs a family with a dense"):
        PEARL(PEARLConfig(**{**TINY, "critic_reward": "dense"}), family, InProcessSampler(family))
    with pytest.raises(ConfigError, match="algo.critic_reward must be 'env' or 'dense'"):
        PEARLConfig(**{**TINY, "critic_reward": "shaped"})


@pytest.mark.parametrize(
    "steps, every, encoder, chunks",
    [
        (900, 1, True, [(True, 1)] + [(False, 1)] * 44),  # oyster's sparse robot: 45 trajectories
        (60, 2, True, [(True, 2), (False, 1)]),
        (600, 1, False, [(True, 1), (False, 2)]),  # RL-only steps: the posterior cannot change
        (0, 1, True, []),
        (900, 0, True, [(False, 45)]),  # the default: one batch from the posterior
    ],
)
def test_posterior_phases_re_infer_z_after_every_few_trajectories(steps, every, encoder, chunks):
    algo, _ = _learner(posterior_update_every=every)
    algo.horizon = 20 if steps != 600 else 200
    assert algo._posterior_chunks(steps, encoder) == chunks


def test_a_posterior_phase_sees_the_trajectories_it_has_just_collected():
    """With updates after every trajectory, the encoder buffer grows between the calls of one
    posterior phase (oyster's collect_data), so the posterior phase makes one sampler call per
    trajectory."""
    algo, _ = _learner(
        initial_steps=0,
        prior_steps=20,
        posterior_steps=60,
        extra_rl_steps=0,
        posterior_update_every=1,
    )
    calls = []
    collect = algo._collect

    def counting(tasks, z, seed, deterministic=False):
        calls.append((z.shape[1], int(algo.encoder_buffer.size.sum())))
        return collect(tasks, z, seed, deterministic)

    algo._collect = counting
    algo.train_iteration(TrainContext(0, 0, torch.Generator().manual_seed(0)))
    per_call = 2 * 20  # two visited tasks, one 20-step trajectory each
    assert calls == [(1, 0), (1, per_call), (1, 2 * per_call), (1, 3 * per_call)]


def test_pearl_learns_to_use_context_on_held_out_goals():
    """A short fixed-seed run on the dense point robot (goals on the half circle; 40 iterations
    of 150 gradient steps with small networks, about a minute): on 40 held-out goals the third
    trajectory, after the posterior has seen two, returns more than the first (z from the
    prior), beyond the 95% interval of the paired difference. Measured: −16.5 → −14.2 → −12.5
    (difference 4.0 ± 0.8)."""
    family = make_family("point_robot", sparse_radius=0.0)
    torch.manual_seed(0)
    config = PEARLConfig(
        latent_size=2,
        hidden_size=64,
        encoder_hidden_size=64,
        num_train_tasks=20,
        meta_batch_size=8,
        tasks_per_iteration=4,
        initial_steps=200,
        prior_steps=100,
        posterior_steps=0,
        extra_rl_steps=100,
        gradient_steps=150,
        batch_size=64,
        context_batch_size=32,
        buffer_size=5000,
        reward_scale=100.0,
        gamma=0.9,
    )
    algo = PEARL(config, family, InProcessSampler(family))
    generator = torch.Generator().manual_seed(0)
    for i in range(40):
        algo.train_iteration(TrainContext(i, 0, generator))
    tasks = family.tasks.sample(40, "test", torch.Generator().manual_seed(1))
    returns = algo.meta_test(tasks, EvalConfig(num_tasks=40, num_steps=2), seed=5).returns
    gain = returns[-1] - returns[0]
    half_width = 1.96 * float(gain.std()) / 40**0.5
    assert float(gain.mean()) > half_width > 0, (returns.mean(1).tolist(), half_width)
    assert float(returns[-1].mean()) > -14.0  # the prior's trajectory: about −16.5


@pytest.mark.parametrize(
    "override, message",
    [
        ("algo.latent_size=0", "algo.latent_size must be > 0"),
        ("algo.buffer_size=100", "smaller than a batch"),
        ("env={name: bandit}", "needs continuous actions"),
        ("evaluate.exploration_trajectories=0", "evaluate.exploration_trajectories must be >= 1"),
        ("evaluate.inner_lrs=[0.1]", "'evaluate.inner_lrs' for pearl; it is a setting of maml's"),
    ],
)
def test_bad_pearl_input_is_one_line_and_creates_nothing(tmp_path, capsys, override, message):
    from adaptrl.cli import main

    out = tmp_path / "run"
    code = main(["train", "pearl-point-robot-sparse", "--out", str(out), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_pearls_agent_gives_the_same_trajectories_in_worker_processes():
    """The actor with a z per row is an ordinary sampler agent: worker processes return what
    the in-process sampler does (z sliced with the tasks of each shard)."""
    from adaptrl.algos.pearl import PEARLAgent
    from adaptrl.sampling.processes import ProcessSampler

    algo, family = _learner()
    tasks = family.tasks.sample(5, "train", torch.Generator().manual_seed(3))
    z = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(4))
    agent = PEARLAgent(algo.nets.actor, z, False, algo.low, algo.high)
    alone = InProcessSampler(family).sample(agent, tasks, seed=9, episodes_per_task=2)
    with ProcessSampler(family, 2) as sampler:
        shared = sampler.sample(agent, tasks, seed=9, episodes_per_task=2)
    torch.testing.assert_close(shared.actions, alone.actions)
    torch.testing.assert_close(shared.rewards, alone.rewards)
    assert float(alone.actions.abs().max()) <= 0.1  # scaled into the env's box
