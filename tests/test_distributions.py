"""The action distributions against torch.distributions (log-probability, entropy, KL), their
samplers against their own log-probabilities and frequencies, and the Fisher products against
autograd's Hessian of the KL."""

import pytest
import torch
from torch import distributions as D
from torch.testing import assert_close

from adaptrl.distributions import Categorical, DiagGaussian, TanhGaussian


@pytest.fixture(autouse=True)
def _float64():  # the references are compared tightly
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _gaussian(seed=0, batch=(5, 3), dim=4):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(*batch, dim, generator=g)
    log_std = 0.3 * torch.randn(dim, generator=g)
    return mean, log_std


def _normal(mean, log_std):
    return D.Independent(D.Normal(mean, log_std.exp().expand_as(mean)), 1)


def test_gaussian_matches_torch():
    dist = DiagGaussian()
    p, q = _gaussian(0), _gaussian(1)
    actions = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(2))
    assert_close(dist.log_prob(p, actions), _normal(*p).log_prob(actions))
    assert_close(dist.entropy(p), _normal(*p).entropy())
    assert_close(dist.kl(p, q), D.kl_divergence(_normal(*p), _normal(*q)))
    log_prob, entropy = dist.log_prob_entropy(p, actions)
    assert_close(log_prob, dist.log_prob(p, actions))
    assert_close(entropy, dist.entropy(p))
    assert torch.equal(dist.mode(p), p[0])


def test_gaussian_sample_is_mean_plus_scaled_noise_with_its_own_log_prob():
    dist = DiagGaussian()
    p = _gaussian(0)
    noise = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(3))
    actions, log_prob = dist.sample(p, noise)
    assert_close(actions, p[0] + noise * p[1].exp())
    assert log_prob.shape == (5, 3)
    assert_close(log_prob, dist.log_prob(p, actions))


def test_categorical_matches_torch_and_samples_its_probabilities():
    dist = Categorical()
    g = torch.Generator().manual_seed(0)
    p, q = (torch.randn(6, 5, generator=g),), (torch.randn(6, 5, generator=g),)
    actions = torch.randint(0, 5, (6,), generator=g)
    ref_p, ref_q = D.Categorical(logits=p[0]), D.Categorical(logits=q[0])
    assert_close(dist.log_prob(p, actions), ref_p.log_prob(actions))
    assert_close(dist.entropy(p), ref_p.entropy())
    assert_close(dist.kl(p, q), D.kl_divergence(ref_p, ref_q))
    log_prob, entropy = dist.log_prob_entropy(p, actions)
    assert_close(log_prob, ref_p.log_prob(actions))
    assert_close(entropy, ref_p.entropy())
    assert torch.equal(dist.mode(p), p[0].argmax(-1))
    # the inverse CDF of evenly spread uniforms hits each action in proportion to its probability
    n = 100_000
    logits = p[0][:1].expand(n, 5)
    u = (torch.arange(n) + 0.5) / n
    drawn, log_prob = dist.sample((logits,), u)
    freq = torch.bincount(drawn, minlength=5) / n
    assert_close(freq, ref_p.probs[0], atol=2.0 / n, rtol=0)
    assert_close(log_prob, D.Categorical(logits=logits).log_prob(drawn))


@pytest.mark.parametrize("name", ["gaussian", "categorical"])
def test_fisher_product_is_the_hessian_of_the_weighted_kl(name):
    """M u against autograd: the Hessian of Σ w·KL(p || q) in q's parameters at q = p."""
    g = torch.Generator().manual_seed(4)
    if name == "gaussian":
        dist, params = DiagGaussian(), _gaussian(4)
    else:
        dist, params = Categorical(), (torch.randn(5, 3, 6, generator=g),)
    weights = torch.rand(5, 3, generator=g)
    u = tuple(torch.randn(x.shape, generator=g) for x in params)
    q = tuple(x.clone().requires_grad_(True) for x in params)
    kl = (weights * dist.kl(params, q)).sum()
    grads = torch.autograd.grad(kl, q, create_graph=True)
    hvp = torch.autograd.grad(sum((gr * ui).sum() for gr, ui in zip(grads, u)), q)
    for mine, ref in zip(dist.fisher(params, weights)(u), hvp):
        assert_close(mine, ref)


def test_tanh_gaussian_matches_torchs_transformed_normal():
    dist = TanhGaussian()
    p = _gaussian(5)
    ref = D.TransformedDistribution(D.Normal(p[0], p[1].exp().expand_as(p[0])), [D.TanhTransform()])
    noise = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(6))
    actions, log_prob = dist.sample(p, noise)
    assert_close(actions, torch.tanh(p[0] + noise * p[1].exp()))
    assert_close(log_prob, ref.log_prob(actions).sum(-1), rtol=1e-6, atol=1e-6)
    assert_close(dist.log_prob(p, actions), log_prob, rtol=1e-6, atol=1e-6)
    assert torch.equal(dist.mode(p), torch.tanh(p[0]))
    # saturated samples keep a finite log-probability (atanh of ±1 would be infinite)
    far = (torch.full((1, 4), 30.0), torch.zeros(4))
    _, saturated = dist.sample(far, torch.zeros(1, 4))
    assert torch.isfinite(saturated).all()
    with pytest.raises(NotImplementedError):
        dist.entropy(p)
