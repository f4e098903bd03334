"""FactorVAE: dimension-wise permutations, the discriminator's TC estimate and loss, the
split of gradients between the VAE and its discriminator, determinism, and a discriminator
that learns to tell dependent codes from permuted ones."""

from __future__ import annotations

import math

import pytest
import torch

from otae.discrepancies import kl_standard_normal
from otae.models import build_model, model_config_from_dict
from otae.models.factorvae import CodeDiscriminator, discriminator_loss, permute_dims

from .helpers import gen

IMAGE = (1, 8, 8)
N = 16


def make(seed=0, **overrides):
    config = model_config_from_dict({
        "name": "factorvae", "latent_dim": 3, "discriminator_depth": 2,
        "discriminator_width": 16, **overrides,
    })
    torch.manual_seed(seed)
    return build_model(config, IMAGE, "mlp", {"hidden": (32, 16)})


@pytest.fixture(scope="module")
def x():
    return torch.rand(N, *IMAGE, generator=gen(1234))


def reparameterised(model, x, g):
    mean, logvar = model.encoder(x)
    return mean, logvar, mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)


# ---------------------------------------------------------------- permutation
def test_permutation_keeps_each_column_and_breaks_the_dependence():
    m = 4096
    u = torch.randn(m, generator=gen(0))
    z = torch.stack([u, u, -u], dim=1)  # perfectly dependent columns
    permuted = permute_dims(z, gen(1))
    assert torch.equal(permuted.sort(dim=0).values, z.sort(dim=0).values)  # same multisets
    corr = torch.corrcoef(permuted.T)
    off_diagonal = corr[~torch.eye(3, dtype=torch.bool)]
    # independent columns: sample correlations ~ N(0, 1/M), 4 sigma = 0.0625
    assert off_diagonal.abs().max() < 4 / math.sqrt(m), corr
    assert torch.equal(permute_dims(z, gen(1)), permuted)  # the generator decides
    assert not torch.equal(permute_dims(z, gen(2)), permuted)


def test_permutation_is_argsort_of_one_uniform_draw():
    z = torch.randn(10, 4, generator=gen(3))
    keys = torch.rand(10, 4, generator=gen(4))
    expected = torch.stack([z[keys[:, k].argsort(), k] for k in range(4)], dim=1)
    assert torch.equal(permute_dims(z, gen(4)), expected)


# ---------------------------------------------------------------- TC estimate and losses
def test_constant_logit_discriminator_gives_that_tc(x):
    """D(z) = sigmoid(c) everywhere: TC estimate E[log D / (1 - D)] = c exactly, and the
    regulariser is KL + tc_weight * c per sample."""
    c = 0.7
    model = make(tc_weight=35.0)
    last = model.discriminator.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(c)
        terms = model.loss(x, gen(2))
        mean, logvar, _ = reparameterised(model, x, gen(2))
    kl = kl_standard_normal(mean, logvar).mean()
    torch.testing.assert_close(terms["tc"], torch.tensor(c))
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["regulariser"], kl + 35.0 * c)


def test_discriminator_loss_against_brute_force():
    g = gen(5)
    a, b = torch.randn(7, generator=g, dtype=torch.float64), torch.randn(5, generator=g,
                                                                          dtype=torch.float64)
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    brute = -0.5 * (sum(math.log(sigmoid(float(t))) for t in a) / 7
                    + sum(math.log(1 - sigmoid(float(t))) for t in b) / 5)
    assert float(discriminator_loss(a, b)) == pytest.approx(brute, rel=1e-12)


def test_critic_loss_redone_by_hand(x):
    """Draw order: posterior noise randn (N, d), then the permutation keys rand (N, d)."""
    model = make()
    terms = model.critic_loss(x, gen(8))
    g = gen(8)
    with torch.no_grad():
        _, _, z = reparameterised(model, x, g)
        keys = torch.rand(z.shape, generator=g)
        permuted = z.gather(0, keys.argsort(dim=0))
        logits, logits_permuted = model.discriminator(z), model.discriminator(permuted)
    expected = discriminator_loss(logits, logits_permuted)
    torch.testing.assert_close(terms["total"].detach(), expected)
    accuracy = 0.5 * ((logits > 0).float().mean() + (logits_permuted < 0).float().mean())
    torch.testing.assert_close(terms["critic_accuracy"], accuracy)


def test_loss_redone_by_hand_with_sum_reduction(x):
    model = make(reduction="sum", gamma=2.0, tc_weight=10.0)
    with torch.no_grad():
        terms = model.loss(x, gen(9))
        mean, logvar, z = reparameterised(model, x, gen(9))
        per_sample = kl_standard_normal(mean, logvar) + 10.0 * model.discriminator(z)
        sse = (model.decode(z) - x).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(terms["regulariser"], per_sample.sum())
    torch.testing.assert_close(terms["total"], sse.sum() + 2.0 * per_sample.sum())
    torch.testing.assert_close(terms["reconstruction"], sse.mean())


def test_each_step_leaves_gradients_only_in_its_own_parameters(x):
    model = make()
    critic = {id(p) for p in model.critic_parameters()}
    assert critic == {id(p) for p in model.discriminator.parameters()}
    model.critic_loss(x, gen(1))["total"].backward()
    for p in model.parameters():
        assert (p.grad is not None) == (id(p) in critic)
    model.zero_grad(set_to_none=True)
    model.loss(x, gen(1))["total"].backward()
    for p in model.parameters():
        if id(p) in critic:
            assert p.grad is None
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_same_generator_same_losses(x):
    model = make()
    for objective in (model.loss, model.critic_loss):
        first, second = objective(x, gen(5)), objective(x, gen(5))
        for name in first:
            assert torch.equal(first[name], second[name]), name
        assert not torch.equal(first["total"], objective(x, gen(6))["total"])


# ---------------------------------------------------------------- learning
def test_discriminator_learns_dependent_from_permuted_codes():
    """Codes from N(0, [[1, .9], [.9, 1]]) against their permutations (samples of the
    product of the marginals, N(0, I)): the Bayes classifier's accuracy is ~0.76. After
    200 Adam steps the discriminator reaches 0.755-0.761 and its TC estimate (mean logit
    on codes, the density-ratio trick) is 0.80-0.92 nats against the true
    -1/2 log(1 - 0.81) = 0.83 (measured over 4 seeds)."""
    torch.manual_seed(0)
    g = gen(0)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    disc = CodeDiscriminator(2, width=32, depth=2)
    optimiser = torch.optim.Adam(disc.parameters(), lr=3e-3, betas=(0.5, 0.9))
    for _ in range(200):
        z = torch.randn(256, 2, generator=g) @ chol.T
        loss = discriminator_loss(disc(z), disc(permute_dims(z, g)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        z = torch.randn(4096, 2, generator=g) @ chol.T
        logits, logits_permuted = disc(z), disc(permute_dims(z, g))
    accuracy = 0.5 * float((logits > 0).float().mean() + (logits_permuted < 0).float().mean())
    assert accuracy > 0.7
    assert float(logits.mean()) == pytest.approx(-0.5 * math.log(1 - 0.81), abs=0.25)


def test_config_defaults_and_validation():
    c = model_config_from_dict({"name": "factorvae"})
    assert (c.tc_weight, c.discriminator_depth, c.discriminator_width, c.n_critic) == (
        35.0, 6, 1000, 1)
    assert (c.prior, c.gamma) == ("normal", 1.0)
    model = build_model(c, IMAGE, "mlp", {"hidden": (8,)})
    widths = [m.out_features for m in model.discriminator.net if isinstance(m, torch.nn.Linear)]
    assert widths == [1000] * 6 + [1]
    for bad, field in (({"tc_weight": -1.0}, "tc_weight"), ({"n_critic": 0}, "n_critic"),
                       ({"discriminator_width": 0}, "discriminator_width"),
                       ({"prior": "gmm"}, "prior")):
        with pytest.raises(ValueError, match=field):
            model_config_from_dict({"name": "factorvae", **bad})


def test_the_discriminator_gets_its_own_adam_betas(tmp_path):
    """training.optimizer.critic_betas: the paper's (0.5, 0.9) for the discriminator while
    the VAE keeps training.optimizer.betas, also after a resume; None: the same betas."""
    import dataclasses

    from .helpers import make_trainer, tiny_config

    config = tiny_config("factorvae", epochs=1)
    opt = dataclasses.replace(config.training.optimizer, betas=(0.9, 0.999),
                              critic_betas=(0.5, 0.9))  # fmt: skip
    config = dataclasses.replace(
        config, training=dataclasses.replace(config.training, optimizer=opt)
    )
    trainer = make_trainer(config, tmp_path / "run")
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert trainer.critic_optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    trainer.fit()
    resumed = make_trainer(config, tmp_path / "run")
    assert resumed.resume()
    assert resumed.critic_optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    assert resumed.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    same = make_trainer(tiny_config("factorvae", epochs=1), tmp_path / "same")
    assert same.critic_optimizer.param_groups[0]["betas"] == same.optimizer.param_groups[0]["betas"]
