"""The same computations on an accelerator as on the CPU: rollouts of every family; MAML's
surrogate, meta-gradient and Fisher-vector products (tightly) and a whole MAML-TRPO iteration;
RL²-TRPO's gradient and Fisher-vector product and a whole step; PEARL's posterior, soft
actor-critic losses and gradients, and whole gradient steps; the transformer's cache, PPO loss and
gradient; XLand stepped by JAX on the device; train, resume, evaluate and report through the CLI.

Run on a GPU with ``pytest tests/test_device.py --device cuda``. Without ``--device`` the CLI test
runs on the CPU and the comparisons are skipped (they would compare the CPU with itself).
"""

import pytest
import torch
from test_pearl import sac_batch
from torch.testing import assert_close

from adaptrl import MAML, MAMLConfig, make_family
from adaptrl.algos.base import TrainContext
from adaptrl.algos.maml import PGBatch
from adaptrl.algos.pearl import PEARL, PEARLConfig, actor_value_losses, critic_loss
from adaptrl.algos.rl2 import RL2, RL2Config, ppo_loss
from adaptrl.algos.transformer import InContextTransformer, TransformerConfig
from adaptrl.cli import main
from adaptrl.envs import registered_envs
from adaptrl.sampling import InProcessSampler
from adaptrl.trust_region import fisher_vector_product, flat

FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated", "mask")
SMALL = {  # short episodes, so that every family runs in a second or two
    "navigation2d": {"horizon": 20},
    "bandit": {"num_arms": 3, "num_pulls": 10},
    "tabular_mdp": {"num_states": 4, "num_actions": 3, "episode_length": 6},
    "maze": {},
    "drone_wind": {"horizon": 30},
    "recommender": {"num_items": 20, "embed_dim": 4, "session_length": 10},
}
MUJOCO = sorted(set(registered_envs()) - set(SMALL))
SIMULATOR_STEPS = 3  # measured on the CPU (1e-7 relative noise on the policy): |Δobs| < 5e-6


@pytest.fixture
def accelerator(device):
    if device.type == "cpu":
        pytest.skip("compares another device with the CPU: pytest --device cuda")
    return device


def _maml(family, device, seed=0, **overrides):
    torch.manual_seed(seed)  # the same initial parameters on both devices
    cfg = MAMLConfig(
        **{"meta_batch_size": 4, "episodes_per_task": 3, "hidden_sizes": (16,), **overrides}
    )
    return MAML(cfg, family, InProcessSampler(family, device), device)


def _close(a, b, steps=None, **tol):
    """Equal trajectories (their first ``steps``). The CPU stops stepping once every row has
    ended; a GPU runs to the horizon (checking costs a sync per step), masking its extra steps."""
    n = a.obs.shape[0]
    assert b.obs.shape[0] >= n and not b.mask[n:].any()
    n = n if steps is None else min(steps, n)
    a = a._replace(**{k: getattr(a, k)[:n] for k in FIELDS})
    for key in FIELDS:
        x, y = getattr(a, key).cpu(), getattr(b, key)[:n].cpu()
        assert x.shape == y.shape, key
        if x.is_floating_point():
            assert_close(x, y, msg=key, **tol)
        else:
            assert torch.equal(x, y), key


@pytest.mark.parametrize("name", list(SMALL) + MUJOCO)
def test_rollouts_on_the_device_match_the_cpu(accelerator, name):
    if name in MUJOCO:
        pytest.importorskip("mujoco")
    family = make_family(name, **SMALL.get(name, {"horizon": 30}))
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    cpu, dev = _maml(family, "cpu"), _maml(family, accelerator)
    trajectories = []
    for algo in (cpu, dev):
        params = {k: v.detach() for k, v in algo.policy.params().items()}
        trajectories.append(algo._sample(tasks, params, False, 3, seed=5))
    assert trajectories[1].obs.device.type == accelerator.type
    # Simulators are chaotic: a 1e-7 change of the policy moves halfcheetah's observations by
    # 3e-4 after 10 steps, so only their first steps can be compared.
    steps = SIMULATOR_STEPS if name in MUJOCO else None
    _close(*trajectories, steps, rtol=1e-4, atol=1e-4)  # the same keyed random streams on both


def _batch_to(batch, device):
    return PGBatch(
        *(x.to(device) for x in (batch.obs, batch.actions, batch.advantages, batch.mask))
    )


@pytest.mark.parametrize("env", ["navigation2d", "recommender"])  # Gaussian and softmax heads
@pytest.mark.parametrize(
    "fisher_product,pre_update_weight",
    [("gauss_newton", 0.0), ("double_backprop", 0.0), ("gauss_newton", 0.3)],
)
def test_maml_meta_gradient_and_fisher_product_on_the_device_match_the_cpu(
    accelerator, env, fisher_product, pre_update_weight
):
    """The device-dependent maths of a meta-iteration, on the same batches: the surrogate, its
    gradient through the inner step, and Fisher-vector products."""
    family = make_family(env, **SMALL[env])
    kw = {"fisher_product": fisher_product, "pre_update_weight": pre_update_weight}
    cpu = _maml(family, "cpu", curvature_episodes=0, **kw)
    dev = _maml(family, accelerator, curvature_episodes=0, **kw)
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    params = {k: v.detach() for k, v in cpu.policy.params().items()}
    pre = cpu._pg_batch(cpu._sample(tasks, params, False, 3, seed=1))
    adapted = {k: v.detach() for k, v in cpu.inner_step(params, False, pre, 0.1).items()}
    post = cpu._pg_batch(cpu._sample(tasks, adapted, True, 3, seed=2))
    loss, grad, _, fvp = cpu.meta_objective([pre], post)
    d_loss, d_grad, _, d_fvp = dev.meta_objective(
        [_batch_to(pre, accelerator)], _batch_to(post, accelerator)
    )
    assert float(d_loss) == pytest.approx(float(loss), rel=1e-4, abs=1e-6)
    scale = float(grad.abs().max())
    assert_close(d_grad.cpu(), grad, rtol=1e-4, atol=1e-4 * scale)
    v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(3))
    product = fvp(v)
    assert_close(
        d_fvp(v.to(accelerator)).cpu(), product, rtol=1e-4, atol=1e-4 * float(product.abs().max())
    )


@pytest.mark.parametrize("env", ["navigation2d", "recommender"])
def test_maml_trpo_meta_iteration_runs_on_the_device_like_the_cpu(accelerator, env):
    """A whole iteration: the same rollouts and surrogate, a step within the KL bound on both.
    (The conjugate-gradient solve amplifies float32 rounding, so the steps agree only loosely;
    the maths feeding it is compared tightly above.)"""
    family = make_family(env, **SMALL[env])
    results = []
    for device in ("cpu", accelerator):
        algo = _maml(family, device)
        metrics = algo.train_iteration(TrainContext(0, 0, torch.Generator().manual_seed(0)))
        assert metrics["trpo/accepted"] == 1.0 and 0 < metrics["trpo/kl"] <= algo.config.max_kl
        results.append(metrics)
    m_cpu, m_dev = results
    for key in ("adapt/return_pre", "adapt/return_post", "loss/surrogate"):
        assert m_dev[key] == pytest.approx(m_cpu[key], rel=1e-3, abs=1e-5), key


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rl2_trpo_maths_on_the_device_match_the_cpu(accelerator, cell):
    """RL²-TRPO on the same trials: the surrogate, its gradient and the Fisher-vector product
    (a double backward through the cell, which cuDNN cannot do); then a whole step on each
    device stays within the KL bound (the CG solve amplifies rounding, so steps agree loosely)."""
    family = make_family("tabular_mdp", **SMALL["tabular_mdp"])
    tasks = family.tasks.sample(8, "train", torch.Generator().manual_seed(0))
    cfg = RL2Config(
        meta_batch_size=8, episodes_per_trial=2, hidden_size=16, optimizer="trpo", cell=cell
    )
    out = []
    for device in ("cpu", accelerator):
        torch.manual_seed(0)
        algo = RL2(cfg, family, InProcessSampler(family, device), device)
        traj = algo.sample_trials(tasks, seed=1)
        trials = algo.trials(traj)
        adv, _ = algo._advantages(trials)
        params, loss, kl, _ = algo.trpo_objective(trials, adv)
        grad = flat(torch.autograd.grad(loss, params)).cpu()
        v = torch.randn(grad.shape, generator=torch.Generator().manual_seed(3))
        product = fisher_vector_product(kl, params, cfg.cg_damping)(v.to(device)).cpu()
        stats = algo.update(trials)
        assert stats["trpo/accepted"] == 1.0 and 0 < stats["trpo/kl"] <= cfg.max_kl
        out.append((traj, float(loss), grad, product))
    (t_cpu, l_cpu, g_cpu, p_cpu), (t_dev, l_dev, g_dev, p_dev) = out
    _close(t_cpu, t_dev, rtol=1e-4, atol=1e-4)
    assert l_dev == pytest.approx(l_cpu, rel=1e-4, abs=1e-6)
    assert_close(g_dev, g_cpu, rtol=1e-4, atol=1e-4 * float(g_cpu.abs().max()))
    assert_close(p_dev, p_cpu, rtol=1e-4, atol=1e-4 * float(p_cpu.abs().max()))


PEARL_TINY = {
    "latent_size": 3,
    "hidden_size": 32,
    "encoder_hidden_size": 32,
    "num_train_tasks": 6,
    "meta_batch_size": 4,
    "tasks_per_iteration": 2,
    "initial_steps": 40,
    "prior_steps": 40,
    "posterior_steps": 20,
    "gradient_steps": 3,
    "batch_size": 16,
    "context_batch_size": 16,
    "buffer_size": 200,
}


def _pearl(device, **overrides):
    family = make_family("point_robot", sparse_radius=0.2)
    torch.manual_seed(0)  # the same initial parameters on both devices
    cfg = PEARLConfig(**{**PEARL_TINY, **overrides})
    return PEARL(cfg, family, InProcessSampler(family, device), device)


def _grads(module):
    return {n: p.grad.to("cpu") for n, p in module.named_parameters() if p.grad is not None}


def test_pearl_posterior_losses_and_gradients_on_the_device_match_the_cpu(accelerator):
    """On the same batch and context: the product-of-Gaussians posterior, the critic loss (which
    trains the encoder through z), the value and actor losses, and every network's gradient."""
    g = torch.Generator().manual_seed(2)
    cpu = _pearl("cpu")
    n = 4 * 16
    batch = sac_batch(n, g, 0.2)
    context = torch.randn(4, 16, cpu.context_dim, generator=g)
    eps, noise = torch.randn(4, 3, generator=g), torch.randn(n, 2, generator=g)
    out = []
    for device in ("cpu", accelerator):
        algo = _pearl(device)
        on = {k: v.to(device) for k, v in batch.items()}
        mean, var = algo.posterior(context.to(device))
        z = (mean + var.sqrt() * eps.to(device)).repeat_interleave(16, 0)
        q = critic_loss(algo.nets, on, z, 0.9, 100.0)
        q.backward()
        v, pi, _ = actor_value_losses(
            algo.nets, on["obs"], z.detach(), noise.to(device), 1e-3, 1e-3
        )
        (v + pi).backward()
        grads = {name: _grads(net) for name, net in algo.networks().items()}
        out.append(([x.detach().cpu() for x in (mean, var)], [float(x) for x in (q, v, pi)], grads))
    (post_c, loss_c, grad_c), (post_d, loss_d, grad_d) = out
    assert post_d[1].shape == (4, 3)  # one posterior per task, latent 3
    for a, b in zip(post_d, post_c):
        assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert loss_d == pytest.approx(loss_c, rel=1e-4, abs=1e-6)
    assert grad_c["encoder"] and grad_d.keys() == grad_c.keys()  # the critic reaches the encoder
    for name, grads in grad_c.items():
        for key, ref in grads.items():
            scale = float(ref.abs().max()) + 1e-12
            assert_close(grad_d[name][key], ref, rtol=1e-4, atol=1e-4 * scale, msg=f"{name}.{key}")


def test_pearl_collection_and_gradient_steps_on_the_device_follow_the_cpu(accelerator):
    """Collection with the same z gives the same trajectories; the buffers they fill feed the same
    batches (every draw is made on the CPU), so the first gradient step's losses agree tightly and
    three steps leave the parameters within Adam's step bound of each other (a gradient near zero
    can change sign between devices, and Adam moves it by up to lr either way)."""
    results = []
    for device in ("cpu", accelerator):
        algo = _pearl(device)
        gen = torch.Generator().manual_seed(0)
        c = algo.config
        algo.train_tasks = algo.family.tasks.sample(c.num_train_tasks, "train", gen)
        ids = list(range(c.num_train_tasks))
        z = algo._prior_draws(c.num_train_tasks, algo._episodes(c.initial_steps), gen)
        traj = algo._collect(algo.train_tasks, z, 1)
        algo._store(ids, traj, encoder=True)
        first = {k: float(v) for k, v in algo._gradient_step(gen).items()}
        for _ in range(2):
            algo._gradient_step(gen)
        params = {
            f"{name}.{key}": p.detach().cpu()
            for name, net in algo.networks().items()
            for key, p in net.named_parameters()
        }
        results.append((traj, first, params))
    (t_cpu, f_cpu, p_cpu), (t_dev, f_dev, p_dev) = results
    _close(t_cpu, t_dev, rtol=1e-4, atol=1e-4)
    for key in ("q", "kl"):  # computed before any parameter moved
        assert f_dev[key] == pytest.approx(f_cpu[key], rel=1e-4, abs=1e-6), key
    for key in ("v", "policy"):  # after the critics' first Adam step
        assert f_dev[key] == pytest.approx(f_cpu[key], rel=1e-2, abs=1e-3), key
    lr = _pearl("cpu").config.lr
    for name, ref in p_cpu.items():
        assert_close(p_dev[name], ref, rtol=0, atol=2 * 3 * lr + 1e-6, msg=name)


def _transformer(family, device):
    torch.manual_seed(0)
    cfg = TransformerConfig(
        meta_batch_size=8, episodes_per_trial=2, model_size=16, num_heads=2, num_minibatches=1
    )
    return InContextTransformer(cfg, family, InProcessSampler(family, device), device)


def test_transformer_cache_on_the_device_gives_its_full_forward_pass(accelerator):
    family = make_family("tabular_mdp", **SMALL["tabular_mdp"])
    policy = _transformer(family, accelerator).policy
    x = torch.randn(9, 5, policy.encoder.in_features, device=accelerator)
    with torch.no_grad():
        full, values, _ = policy(x, policy.initial_state(5, accelerator))
        buffer = policy.acting_state(12, 5, accelerator)
        for t in range(9):
            out, value, _ = policy.act_step(x[t : t + 1], buffer, t)
            assert_close(out[0], full[t], atol=1e-5, rtol=1e-5)
            assert_close(value[0], values[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("env", ["tabular_mdp", "drone_wind"])  # softmax and Gaussian heads
def test_transformer_trials_and_ppo_gradient_on_the_device_match_the_cpu(accelerator, env):
    """The sampler acting one token at a time through the cache gives the same trials; the PPO
    loss over the whole trials and its gradient agree; a whole update runs on each."""
    family = make_family(env, **SMALL[env])
    tasks = family.tasks.sample(8, "train", torch.Generator().manual_seed(0))
    out = []
    for device in ("cpu", accelerator):
        algo = _transformer(family, device)
        traj = algo.sample_trials(tasks, seed=1)
        trials = algo.trials(traj)
        adv, returns = algo._advantages(trials)
        logits, values, _ = algo.policy(trials.inputs, algo.policy.initial_state(8, device))
        log_prob, entropy = algo._log_prob_entropy(logits, trials.actions)
        terms = ppo_loss(
            log_prob, trials.log_probs, adv, values, returns, entropy, trials.mask, 0.2, 0.5, 0.01
        )
        terms["total"].backward()
        grad = torch.cat([p.grad.reshape(-1) for p in algo.policy.parameters()]).cpu()
        stats = algo.update(trials)
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
        out.append((traj, float(terms["total"]), grad))
    (t_cpu, l_cpu, g_cpu), (t_dev, l_dev, g_dev) = out
    _close(t_cpu, t_dev, rtol=1e-4, atol=1e-4)
    assert l_dev == pytest.approx(l_cpu, rel=1e-4, abs=1e-6)
    assert_close(g_dev, g_cpu, rtol=1e-4, atol=1e-4 * float(g_cpu.abs().max()))


def test_xland_steps_on_the_device_with_the_cpus_transitions(accelerator):
    """The library steps where torch acts (JAX's GPU when it has one) and hands its arrays over by
    DLPack; the transitions equal the CPU's for the same rule sets, keys and actions."""
    pytest.importorskip("xminigrid")
    family = make_family("xland", horizon=6)
    tasks = family.tasks.sample(5, "train", torch.Generator().manual_seed(0))
    actions = torch.randint(6, (8, 5), generator=torch.Generator().manual_seed(1))
    runs = []
    for device in ("cpu", accelerator):
        env = family.make_env(5, device)
        seen = {"obs": [env.reset(tasks=tasks, seed=3)[0]], "rewards": [], "ended": []}
        for a in actions:
            obs, reward, terminated, truncated, _ = env.step(a.to(device))
            assert obs.device.type == torch.device(device).type
            seen["obs"].append(obs)
            seen["rewards"].append(reward)
            seen["ended"].append(torch.stack([terminated, truncated]))
        runs.append((env, {k: torch.stack(v).cpu() for k, v in seen.items()}))
    (env_c, cpu), (env_d, dev) = runs
    assert env_c._jax_device.platform == "cpu"
    jax = pytest.importorskip("jax")
    if accelerator.type == "cuda" and any(d.platform == "gpu" for d in jax.devices()):
        assert env_d._jax_device.platform == "gpu"  # stepped on the GPU, not copied from the CPU
    assert torch.equal(dev["obs"], cpu["obs"]) and torch.equal(dev["ended"], cpu["ended"])
    # The reward, 1 − 0.9 t / T, is one float expression that XLA may round differently there.
    assert_close(dev["rewards"], cpu["rewards"], rtol=0, atol=1e-6)
    assert cpu["ended"].any(0).any(0).all()  # horizon 6 in 8 steps: every row's episode ended


@pytest.mark.parametrize(
    "preset,extra",
    [
        ("maml-navigation2d", ["algo.meta_batch_size=2", "algo.episodes_per_task=2"]),
        ("rl2-bandit-k5-n10", ["algo.meta_batch_size=4", "algo.hidden_size=8"]),
        ("rl2-bandit-k5-n100", ["algo.meta_batch_size=4", "algo.hidden_size=8"]),  # LSTM
        (
            "transformer-bandit-k5-n10",
            ["algo.meta_batch_size=4", "algo.model_size=8", "algo.num_heads=2"],
        ),
        (
            "transformer-xland",
            ["algo.meta_batch_size=4", "algo.model_size=8", "algo.num_heads=2", "env.horizon=8"],
        ),
        (
            "pearl-point-robot-sparse",
            [f"algo.{k}={v}" for k, v in PEARL_TINY.items()] + ["evaluate.num_steps=2"],
        ),
    ],
)
def test_train_evaluate_report_and_resume_on_the_device(tmp_path, device, preset, extra):
    if "xland" in preset:
        pytest.importorskip("xminigrid")
    run = tmp_path / "run"
    evaluate = ["evaluate.episodes_per_task=2", "evaluate.pretrained_iterations=1"]
    sets = [
        *extra,
        "evaluate.num_tasks=3",
        *(evaluate if not preset.startswith("pearl") else []),
        "train.eval_every=2",
    ]
    argv = [a for s in sets for a in ("--set", s)]
    common = ["--device", str(device), "--quiet"]
    assert main(["train", preset, "--out", str(run), "--iterations", "2", *argv, *common]) == 0
    assert main(["train", "--resume", str(run), "--iterations", "3", *common]) == 0
    assert (run / "metrics.csv").read_text().count("\n") == 4  # header and three iterations
    assert main(["evaluate", str(run), *common]) == 0
    assert main(["report", str(run)]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert state["iteration"] == 3
