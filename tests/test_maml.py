"""MAML maths: batched inner gradients, meta-gradients against finite differences, the
Fisher-vector product through the inner update, first-order variant."""

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from adaptrl import MAML, MAMLConfig, make_family
from adaptrl.algos.maml import PGBatch
from adaptrl.errors import ConfigError
from adaptrl.sampling import InProcessSampler
from adaptrl.trust_region import fisher_vector_product, flat, set_flat_

FAMILIES = {  # a continuous (Gaussian policy) and a discrete (softmax policy) family
    "navigation2d": {"horizon": 8},
    "recommender": {"num_items": 5, "embed_dim": 2, "session_length": 8},
}


def _tiny(first_order=False, num_tasks=3, seed=0, env="navigation2d"):
    family = make_family(env, **FAMILIES[env])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = MAMLConfig(
        meta_batch_size=num_tasks,
        episodes_per_task=3,
        hidden_sizes=(6,),
        activation="tanh",
        first_order=first_order,
        init_std=0.5,
    )
    algo = MAML(cfg, family, InProcessSampler(family))
    tasks = family.tasks.sample(num_tasks, "train", gen)
    params = {k: v.detach() for k, v in algo.policy.params().items()}
    pre = algo._pg_batch(algo._sample(tasks, params, False, 3, seed=seed))
    adapted = {k: v.detach() for k, v in algo.inner_step(params, False, pre, 0.1).items()}
    post = algo._pg_batch(algo._sample(tasks, adapted, True, 3, seed=seed + 1))
    algo.policy.double()
    to64 = lambda b: PGBatch(  # noqa: E731
        *(x if not x.is_floating_point() else x.double() for x in dataclasses.astuple(b))
    )
    return algo, to64(pre), to64(post)


def _params(algo):
    return {k: v.detach().clone().requires_grad_() for k, v in algo.policy.params().items()}


def test_vmapped_inner_gradients_equal_loop_over_tasks():
    algo, pre, _ = _tiny()
    params = _params(algo)
    adapted = algo.inner_step(params, False, pre, lr=1.0)
    for i in range(pre.obs.shape[1]):
        loss = algo._task_pg_loss(
            params, pre.obs[:, i], pre.actions[:, i], pre.advantages[:, i], pre.mask[:, i]
        )
        grads = torch.autograd.grad(loss, list(params.values()))
        for (name, p), g in zip(params.items(), grads):
            assert_close(adapted[name][i], p - g, msg=f"task {i}, {name}")


def _outer(algo, params, pre, post, old):
    adapted = algo.inner_step(params, False, pre, algo.config.inner_lr)
    return algo._surrogate_and_kl(adapted, True, post, old)


@pytest.mark.parametrize("env", list(FAMILIES))
def test_second_order_meta_gradient_matches_finite_differences(env):
    algo, pre, post = _tiny(env=env)
    params = _params(algo)
    old = algo._old_distribution(algo.inner_step(params, False, pre, 0.1), True, post)
    loss, _ = _outer(algo, params, pre, post, old)
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        d = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
        eps = 1e-5
        with torch.no_grad():
            plus = {k: v + eps * d[k] for k, v in params.items()}
            minus = {k: v - eps * d[k] for k, v in params.items()}
        fd = (_outer(algo, plus, pre, post, old)[0] - _outer(algo, minus, pre, post, old)[0]) / (
            2 * eps
        )
        analytic = sum((grads[k] * d[k]).sum() for k in params)
        assert_close(analytic, fd, rtol=1e-5, atol=1e-8)


def test_first_order_gradient_ignores_inner_hessian():
    algo, pre, post = _tiny(first_order=True)
    params = _params(algo)
    adapted = algo.inner_step(params, False, pre, 0.1)
    old = algo._old_distribution(adapted, True, post)
    fo = torch.autograd.grad(
        algo._surrogate_and_kl(adapted, True, post, old)[0], list(params.values())
    )
    # The first-order gradient is the gradient at the adapted parameters, summed over tasks.
    leaf = {k: v.detach().requires_grad_() for k, v in adapted.items()}
    at_adapted = torch.autograd.grad(
        algo._surrogate_and_kl(leaf, True, post, old)[0], list(leaf.values())
    )
    for g, h in zip(fo, at_adapted):
        assert_close(g, h.sum(0))
    # And it differs from the exact (second-order) meta-gradient.
    algo_so, _, _ = _tiny(first_order=False)
    params_so = _params(algo_so)
    so = torch.autograd.grad(
        _outer(algo_so, params_so, pre, post, old)[0], list(params_so.values())
    )
    assert (flat(so) - flat(fo)).norm() > 1e-4 * flat(so).norm()


def test_fisher_vector_product_through_inner_update_matches_finite_differences():
    algo, pre, post = _tiny()
    params = _params(algo)
    names = list(params)
    old = algo._old_distribution(algo.inner_step(params, False, pre, 0.1), True, post)
    _, kl = _outer(algo, params, pre, post, old)
    fvp = fisher_vector_product(kl, list(params.values()), damping=0.0)
    v = torch.randn(
        sum(p.numel() for p in params.values()),
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(2),
    )

    def kl_grad(shift):
        shifted, offset = {}, 0
        for k in names:
            n = params[k].numel()
            shifted[k] = (
                params[k].detach() + shift[offset : offset + n].view_as(params[k])
            ).requires_grad_()
            offset += n
        return flat(
            torch.autograd.grad(_outer(algo, shifted, pre, post, old)[1], list(shifted.values()))
        )

    eps = 1e-5
    fd = (kl_grad(eps * v) - kl_grad(-eps * v)) / (2 * eps)
    assert_close(fvp(v), fd, rtol=1e-4, atol=1e-7)
    assert fvp(v) @ v > 0  # positive definite at the old parameters


@pytest.mark.parametrize("env", list(FAMILIES))
def test_meta_train_step_respects_kl_bound_and_pretrained_mode(env):
    family = make_family(env, **FAMILIES[env])
    gen = torch.Generator().manual_seed(0)
    for inner in (1, 0):
        cfg = MAMLConfig(
            meta_batch_size=4,
            episodes_per_task=4,
            num_inner_steps=inner,
            hidden_sizes=(16,),
            max_kl=0.005,
        )
        algo = MAML(cfg, family, InProcessSampler(family))
        m = algo.meta_train_step(family.tasks.sample(4, "train", gen), seed=3)
        assert m["trpo/kl"] <= 0.005
        assert m["trpo/accepted"] == 1.0


def test_max_initial_kl_also_bounds_the_un_adapted_policy():
    """The authors bound only the adapted policies' KL, so the un-adapted policy can move far in
    one update; ``max_initial_kl`` bounds it too, on its own first-step samples."""
    family = make_family("navigation2d", **FAMILIES["navigation2d"])
    tasks = family.tasks.sample(4, "train", torch.Generator().manual_seed(0))
    moved = {}
    for bound in (0.0, 1e-4):
        torch.manual_seed(0)
        cfg = MAMLConfig(
            meta_batch_size=4,
            episodes_per_task=4,
            hidden_sizes=(16,),
            max_kl=0.05,
            inner_lr=0.5,
            max_initial_kl=bound,
        )
        algo = MAML(cfg, family, InProcessSampler(family))
        before = {k: v.detach().clone() for k, v in algo.policy.params().items()}
        m = algo.meta_train_step(tasks, seed=3)
        assert m["trpo/accepted"] == 1.0 and 0 < m["trpo/kl"] <= 0.05  # the adapted KL
        moved[bound] = m["trpo/initial_kl"]
        after = algo.policy.params()
        assert any(not torch.equal(before[k], after[k]) for k in before)
    assert moved[0.0] > 1e-4  # unbounded, the un-adapted policy moves further than the bound
    assert 0 < moved[1e-4] <= 1e-4


@pytest.mark.parametrize("env", list(FAMILIES))
def test_pre_update_weight_adds_the_un_adapted_surrogate_to_objective_and_gradient(env):
    """meta-objective(θ) = adapted surrogate + w · the un-adapted policy's own surrogate on its
    first-step samples: its value and its gradient (against finite differences) include both."""
    algo, pre, post = _tiny(env=env)
    w = 0.7
    plain_loss, plain_grad, old, _ = algo.meta_objective([pre], post)
    algo.config = dataclasses.replace(algo.config, pre_update_weight=w)
    loss, grad, _, _ = algo.meta_objective([pre], post)
    pre_surrogate = algo.pre_update_surrogate(pre)
    params = list(algo.policy.parameters())
    theta = flat(params).detach().clone()

    def objective(x):
        with torch.no_grad():
            set_flat_(params, x)
            adapted, per_task = algo._adapt_through([pre])
            value = algo._surrogate_and_kl(adapted, per_task, post, old)[0] + w * pre_surrogate()
            set_flat_(params, theta)
            return value

    assert_close(loss, objective(theta))
    assert not torch.allclose(grad, plain_grad)  # the term matters
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        d = torch.randn(theta.shape, generator=gen, dtype=theta.dtype)
        eps = 1e-5
        fd = (objective(theta + eps * d) - objective(theta - eps * d)) / (2 * eps)
        assert_close(grad @ d, fd, rtol=1e-5, atol=1e-8)


def test_pre_update_weight_trains_with_and_without_an_inner_step():
    """The pretrained reference (no inner step) inherits the run's algo settings: the weight
    has nothing to add there and must not break it."""
    family = make_family("navigation2d", **FAMILIES["navigation2d"])
    tasks = family.tasks.sample(3, "train", torch.Generator().manual_seed(0))
    for steps in (1, 0):
        cfg = MAMLConfig(
            meta_batch_size=3,
            episodes_per_task=3,
            hidden_sizes=(6,),
            num_inner_steps=steps,
            pre_update_weight=0.3,
        )
        m = MAML(cfg, family, InProcessSampler(family)).meta_train_step(tasks, seed=1)
        assert m["trpo/accepted"] == 1.0 and 0 < m["trpo/kl"] <= cfg.max_kl


@pytest.mark.parametrize(
    "bad",
    [
        {"inner_lr": -0.1},
        {"max_initial_kl": -1.0},
        {"meta_batch_size": 0},
        {"max_kl": 0},
        {"hidden_sizes": []},
        {"gamma": 1.5},
        {"init": "glorot"},
    ],
)
def test_impossible_config_values_are_rejected(bad):
    with pytest.raises(ConfigError):
        MAMLConfig(**bad)


@pytest.mark.parametrize("env", list(FAMILIES))
def test_xavier_init_is_glorot_uniform_with_zero_biases(env):
    """rllab's and the MAML authors' initialisation: Glorot-uniform weights and zero biases,
    so a zero observation maps to a zero mean action (or zero logits) whatever the seed;
    PyTorch's default biases give each seed its own offset."""
    family = make_family(env, **FAMILIES[env])
    zero = torch.zeros(1, family.spaces()[0].shape[0])
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    for init in ("torch", "xavier"):
        torch.manual_seed(0)
        algo = MAML(MAMLConfig(init=init), family, InProcessSampler(family))
        at_zero = torch.count_nonzero(first(algo.policy(zero)))
        if init == "torch":
            assert at_zero > 0
            continue
        assert at_zero == 0
        for layer in (m for m in algo.policy.modules() if isinstance(m, torch.nn.Linear)):
            fan_out, fan_in = layer.weight.shape
            bound = (6 / (fan_in + fan_out)) ** 0.5
            assert 0.9 * bound < layer.weight.abs().max() <= bound  # uniform over the range
            assert torch.count_nonzero(layer.bias) == 0


def test_step_counted_batches_keep_episodes_until_the_budget_as_rllab():
    """evaluate.batch_steps: per task, episodes in order while the steps before them are under
    the budget (rllab's sampler loop), drawn in rounds; the return is their mean."""
    family = make_family("navigation2d", horizon=20)
    torch.manual_seed(0)
    algo = MAML(MAMLConfig(hidden_sizes=(8,)), family, InProcessSampler(family))
    tasks = family.tasks.sample(3, "test", torch.Generator().manual_seed(0))
    plain = algo.adapt(tasks, 1, (0.1,), episodes_per_task=2, seed=0)
    counted = algo.adapt(tasks, 1, (0.1,), episodes_per_task=2, seed=0, batch_steps=70)
    for traj, ret in zip(counted.trajectories, counted.returns):
        assert traj.episodes_per_task >= 4  # 70 steps of 20-step episodes: two rounds of two
        length = traj.mask.sum(0).reshape(3, -1)
        kept = length > 0
        steps = length.sum(1)
        last = torch.stack([row[k][-1] for row, k in zip(length, kept)])
        assert torch.all(steps >= 70) and torch.all(steps - last < 70)
        assert torch.all(kept[:, :-1] >= kept[:, 1:])  # kept episodes come first, in order
        per_episode = traj.rewards.sum(0).reshape(3, -1)
        assert_close(ret, per_episode.sum(1) / kept.sum(1))
    # the first round is the plain batch: same episodes, so the same first step's policy input
    first = counted.trajectories[0]
    assert_close(
        first.rewards.reshape(20, 3, -1)[:, :, :2], plain.trajectories[0].rewards.reshape(20, 3, 2)
    )
    assert not torch.equal(counted.returns, plain.returns)


def test_adapt_returns_a_curve_and_deployable_per_task_policies():
    family = make_family("navigation2d", horizon=10)
    gen = torch.Generator().manual_seed(0)
    algo = MAML(
        MAMLConfig(meta_batch_size=2, episodes_per_task=2, hidden_sizes=(8,)),
        family,
        InProcessSampler(family),
    )
    tasks = family.tasks.sample(3, "test", gen)
    result = algo.adapt(tasks, num_steps=2, inner_lrs=(0.1, 0.05))
    assert result.returns.shape == (3, 3)
    obs = torch.zeros(1, 2)
    policies = [result.policies.policy(i) for i in range(3)]
    means = [p(obs)[0] for p in policies]
    assert not torch.equal(means[0], means[1])  # each task got its own parameters
    own = {k: v[1] for k, v in result.policies.params.items()}
    torch.testing.assert_close(means[1], torch.func.functional_call(algo.policy, own, (obs,))[0])


@pytest.mark.parametrize("env", list(FAMILIES))
@pytest.mark.parametrize("first_order", [False, True])
def test_gauss_newton_fisher_product_equals_the_kl_hessian(env, first_order):
    """JᵀMJ by jvp/vjp is the KL's exact Hessian at the old parameters: it equals the double
    back-propagated Hessian-vector product (which the test above checks against finite
    differences), and the gradient from the shared graph equals autograd's."""
    out = {}
    for mode in ("gauss_newton", "double_backprop"):
        algo, pre, post = _tiny(env=env, first_order=first_order)
        algo.config = dataclasses.replace(algo.config, fisher_product=mode, cg_damping=0.0)
        loss, grad, _, fvp = algo.meta_objective([pre], post)
        v = torch.randn(
            grad.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(3)
        )
        out[mode] = (loss, grad, fvp(v), v)
    gn, db = out["gauss_newton"], out["double_backprop"]
    assert_close(gn[2], db[2], rtol=1e-10, atol=1e-12)
    assert gn[2] @ gn[3] > 0
    # The gradient from the vjp is the exact meta-gradient (finite differences, test above).
    algo, pre, post = _tiny(env=env, first_order=first_order)
    params = _params(algo)
    old = algo._old_distribution(algo.inner_step(params, False, pre, 0.1), True, post)
    loss, _ = _outer(algo, params, pre, post, old)
    assert_close(gn[1], flat(torch.autograd.grad(loss, list(params.values()))))
    assert_close(gn[0], loss.detach())


def test_gauss_newton_curvature_subsample_matches_the_subsampled_kl_hessian():
    out = {}
    for mode in ("gauss_newton", "double_backprop"):
        algo, pre, post = _tiny()
        algo.config = dataclasses.replace(
            algo.config, fisher_product=mode, cg_damping=0.0, curvature_episodes=2
        )
        _, grad, _, fvp = algo.meta_objective([pre], post)
        v = torch.randn(
            grad.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(4)
        )
        out[mode] = fvp(v)
    assert_close(out["gauss_newton"], out["double_backprop"], rtol=1e-10, atol=1e-12)


def test_gauss_newton_fisher_product_through_two_inner_steps():
    """The chain J_f·B_2·B_1 (each B applied by its own retained graph) equals the double
    back-propagated Hessian through both steps."""
    out = {}
    for mode in ("gauss_newton", "double_backprop"):
        algo, pre, post = _tiny()
        algo.config = dataclasses.replace(
            algo.config, fisher_product=mode, cg_damping=0.0, num_inner_steps=2
        )
        _, grad, _, fvp = algo.meta_objective([pre, pre], post)
        v = torch.randn(
            grad.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(5)
        )
        out[mode] = (grad, fvp(v))
    assert_close(out["gauss_newton"][1], out["double_backprop"][1], rtol=1e-10, atol=1e-12)
    # And the two-step gradient is the autograd gradient through both steps.
    algo, pre, post = _tiny()
    params = _params(algo)
    adapted = algo.inner_step(algo.inner_step(params, False, pre, 0.1), True, pre, 0.1)
    old = algo._old_distribution(adapted, True, post)
    loss, _ = algo._surrogate_and_kl(adapted, True, post, old)
    assert_close(out["gauss_newton"][0], flat(torch.autograd.grad(loss, list(params.values()))))


def test_family_metrics_of_a_step_counted_batch_skip_the_masked_episodes():
    """The drone's RMS error per task averages only the episodes the 15-step budget kept (two
    of three 10-step episodes), not the rows masked out."""
    from adaptrl.envs.drone import drone_metrics
    from adaptrl.protocol import family_metrics

    family = make_family("drone_wind", horizon=10)
    torch.manual_seed(0)
    algo = MAML(MAMLConfig(hidden_sizes=(8,)), family, InProcessSampler(family))
    tasks = family.tasks.sample(2, "test", torch.Generator().manual_seed(0))
    result = algo.adapt(tasks, 0, episodes_per_task=3, seed=0, batch_steps=15)
    traj = result.trajectories[0]
    kept = traj.mask.sum(0).reshape(2, 3) > 0
    assert kept.sum(1).tolist() == [2, 2]  # episodes start at 0 and 10 (< 15), not at 20
    rms = drone_metrics(traj, family)["rms_error_cm"].reshape(2, 3)
    expected = (rms * kept).sum(1) / 2
    assert_close(family_metrics(family, result, tasks)["rms_error_cm"][0], expected)
    assert not torch.allclose(expected, rms.mean(1))  # the masked row would change the mean
