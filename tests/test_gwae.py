"""GWAE: relational GW term, gradient penalty, critic/generator steps, meta-priors, state dicts."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import otae.models.gwae  # noqa: F401  (registers "gwae")
from otae.models import build_model, model_config_from_dict
from otae.models.gwae import GWAE, GWAEConfig, relational_gw_loss
from otae.priors import GaussianMixturePrior, StandardNormalPrior
from otae.priors.meta import (
    FactorisedNeuralPrior,
    FactorisedQuantilePrior,
    FactorisedUniformPrior,
    GumbelMixturePrior,
    NeuralPrior,
)

IMAGE = (1, 8, 8)


def _model(prior="neural", dtype=torch.float64, seed=0, **options) -> GWAE:
    torch.manual_seed(seed)
    values = {
        "name": "gwae",
        "latent_dim": 2,
        "prior": prior,
        "n_components": 3,
        "critic_hidden": [32],
        "sampler_hidden": [16],
        "factorised_hidden": 4,
        **options,
    }
    config = model_config_from_dict(values)
    model = build_model(
        config, IMAGE, "mlp", {"hidden": (32,)}, generator=torch.Generator().manual_seed(seed)
    )
    return model.to(dtype)


def _batch(n=16, dtype=torch.float64, seed=3):
    return torch.rand(n, *IMAGE, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _norm(v) -> float:
    return math.sqrt(sum(float(c) ** 2 for c in v.flatten()))


# ---------------------------------------------------------------------- relational GW term
def _gw_loop(z, x, nu, pairs):
    n, d = z.shape
    means = [sum(float(z[i, k]) for i in range(n)) / n for k in range(d)]
    stds = [
        math.sqrt(sum((float(z[i, k]) - means[k]) ** 2 for i in range(n)) / (n - 1))
        for k in range(d)
    ]
    s = sum(stds) / d
    total, count = 0.0, 0
    for i, j in pairs(range(n)):
        total += abs(nu / s * _norm(z[i] - z[j]) - _norm(x[i] - x[j]))
        count += 1
    return total / count


def _all_pairs(r):
    return itertools.product(r, repeat=2)


@pytest.mark.parametrize("detach_scale", [False, True])
def test_relational_gw_matches_double_loop_over_all_pairs(detach_scale):
    """The authors' normalisation: the mean over all N^2 ordered pairs, diagonal included."""
    g = torch.Generator().manual_seed(0)
    z = 1.7 * torch.randn(7, 3, generator=g, dtype=torch.float64) + 4.0
    x = torch.rand(7, 1, 4, 5, generator=g, dtype=torch.float64) + 10.0
    coef = 1.3
    value = float(relational_gw_loss(z, x, coef, detach_scale=detach_scale))
    assert value == pytest.approx(_gw_loop(z, x, coef, _all_pairs), rel=1e-12)
    # (N - 1) / N of the mean over distinct pairs
    distinct = _gw_loop(z, x, coef, lambda r: itertools.permutations(r, 2))
    assert value == pytest.approx(distinct * 6 / 7, rel=1e-12)


def test_relational_gw_scale_and_gradients():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    nu = torch.tensor(2.5, dtype=torch.float64)
    base = relational_gw_loss(z, x, nu)
    # s normalises the latent distances: rescaling the prior samples changes nothing
    assert float(relational_gw_loss(3.0 * z, x, nu)) == pytest.approx(float(base), rel=1e-12)
    # gradients (through s too) agree with finite differences in z, x and nu
    assert torch.autograd.gradcheck(
        lambda a, b, c: relational_gw_loss(a, b, c),
        (z.clone().requires_grad_(), x.clone().requires_grad_(), nu.clone().requires_grad_()),
    )
    # detaching s leaves the value but changes the gradient in z
    zz = z.clone().requires_grad_()
    (g_full,) = torch.autograd.grad(relational_gw_loss(zz, x, nu), zz)
    (g_det,) = torch.autograd.grad(relational_gw_loss(zz, x, nu, detach_scale=True), zz)
    assert not torch.allclose(g_full, g_det)
    # with s held fixed, the z-gradient is that of the loop formula with the scale frozen
    s = float(z.std(0).mean())

    def frozen(a):
        dz = (a[:, None] - a[None]).norm(dim=2)
        dx = (x[:, None] - x[None]).norm(dim=2)
        return (nu / s * dz - dx).abs().mean()

    (g_ref,) = torch.autograd.grad(frozen(zz), zz)
    torch.testing.assert_close(g_det, g_ref)


def test_relational_gw_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        relational_gw_loss(torch.zeros(1, 2), torch.zeros(1, 3), 1.0)
    with pytest.raises(ValueError, match="expects z"):
        relational_gw_loss(torch.zeros(3, 2), torch.zeros(4, 3), 1.0)


# ---------------------------------------------------------------------- loss terms
def test_loss_terms_match_their_definitions():
    model = _model("factorised_neural", lambda_w=0.7, gamma=1.3)
    x = _batch()
    out = {k: v.detach() for k, v in model.loss(x, torch.Generator().manual_seed(5)).items()}

    g = torch.Generator().manual_seed(5)  # same order of draws: posterior, then prior
    with torch.no_grad():
        mean, logvar = model.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g, dtype=x.dtype)
        z_p = model.prior.sample(16, g)
        x_p = model.decode(z_p)
        sse = (model.decode(z) - x).pow(2).flatten(1).sum(1)
        coef = float(out["distance_coef"])
        gw = _gw_loop(z_p.detach(), x_p.detach(), coef, _all_pairs)
        w = model.critic(x, z).mean() - model.critic(x_p, z_p).mean()
        neg_logvar = -logvar.sum(1).mean()

    assert float(out["reconstruction"]) == pytest.approx(float(sse.mean()), rel=1e-12)
    assert float(out["regulariser"]) == pytest.approx(gw, rel=1e-10)
    assert float(out["w_bound"]) == pytest.approx(float(w), rel=1e-10)
    assert float(out["entropy"]) == pytest.approx(float(neg_logvar), rel=1e-10)
    # log 2.5 is stored in float32 at construction, then cast to float64
    assert float(out["distance_coef"]) == pytest.approx(2.5, rel=1e-7)
    expected = 0.5 * sse.mean() + 1.3 * gw + 0.7 * w + 0.03 * neg_logvar
    assert float(out["total"]) == pytest.approx(float(expected), rel=1e-10)


def test_reduction_sum_sums_per_image_terms():
    x = _batch()
    with torch.no_grad():
        mean_out = _model(reduction="mean").loss(x, torch.Generator().manual_seed(2))
        sum_out = _model(reduction="sum").loss(x, torch.Generator().manual_seed(2))
    n = x.shape[0]
    assert float(sum_out["reconstruction"]) == pytest.approx(float(mean_out["reconstruction"]))
    expected = (
        0.5 * n * mean_out["reconstruction"]
        + mean_out["regulariser"]
        + mean_out["w_bound"]
        + 0.03 * n * mean_out["entropy"]
    )
    assert float(sum_out["total"]) == pytest.approx(float(expected), rel=1e-10)


# ---------------------------------------------------------------------- critic
def test_gradient_penalty_matches_per_sample_autograd():
    model = _model()
    g = torch.Generator().manual_seed(4)
    x_hat = torch.rand(5, *IMAGE, generator=g, dtype=torch.float64)
    z_hat = torch.randn(5, 2, generator=g, dtype=torch.float64)
    gp = model.gradient_penalty(x_hat, z_hat)

    terms = []
    for i in range(5):
        xi = x_hat[i : i + 1].clone().requires_grad_()
        zi = z_hat[i : i + 1].clone().requires_grad_()
        gx, gz = torch.autograd.grad(model.critic(xi, zi).sum(), (xi, zi))
        norm = math.sqrt(float(gx.pow(2).sum()) + float(gz.pow(2).sum()))
        terms.append((norm - 1.0) ** 2)
    assert float(gp.detach()) == pytest.approx(sum(terms) / 5, rel=1e-10)
    # differentiable in the critic's parameters (double backprop)
    # (with piecewise-linear activations only the weights enter the input gradient)
    names, params = zip(*model.critic.named_parameters(), strict=True)
    grads = torch.autograd.grad(gp, params, allow_unused=True)
    assert all(gr is None or torch.isfinite(gr).all() for gr in grads)
    for name, gr in zip(names, grads, strict=True):
        moved = gr is not None and bool(gr.abs().sum() > 0)
        assert moved == name.endswith("weight"), name


def test_critic_loss_combines_estimate_and_penalty():
    model = _model(gp_weight=4.0)
    out = model.critic_loss(_batch(), torch.Generator().manual_seed(0))
    expected = -out["critic_w"] + 4.0 * (out["gradient_penalty"] + 1e-4 * out["drift"])
    assert float(out["total"].detach()) == pytest.approx(float(expected), rel=1e-12)
    out["total"].backward()
    # only the critic receives gradient from the critic step
    critic = set(model.critic_parameters())
    for p in model.parameters():
        if p in critic:
            assert p.grad is not None
        else:
            assert p.grad is None


def test_critic_steps_increase_its_estimate():
    model = _model(dtype=torch.float32)
    x = _batch(dtype=torch.float32)
    optimiser = torch.optim.Adam(model.critic_parameters(), lr=1e-3)

    def estimate():
        return float(model.critic_loss(x, torch.Generator().manual_seed(7))["critic_w"])

    before = estimate()
    for _ in range(30):
        optimiser.zero_grad()
        model.critic_loss(x, torch.Generator().manual_seed(7))["total"].backward()
        optimiser.step()
    assert estimate() > before + 0.1


def test_generator_steps_decrease_total_with_critic_fixed():
    model = _model("neural", dtype=torch.float32)
    x = _batch(dtype=torch.float32)
    critic = set(model.critic_parameters())
    main = [p for p in model.parameters() if p not in critic]  # the trainer's split
    main_ids = {id(p) for p in main}
    assert id(model.log_distance_coef) in main_ids and all(id(p) in main_ids for p in model.prior.parameters())
    assert len(main) + len(critic) == len(list(model.parameters()))
    critic_before = [p.detach().clone() for p in model.critic_parameters()]
    optimiser = torch.optim.Adam(main, lr=1e-3)

    def total():
        return model.loss(x, torch.Generator().manual_seed(11))["total"]

    before = float(total().detach())
    for _ in range(30):
        optimiser.zero_grad()
        total().backward()
        optimiser.step()
    assert float(total().detach()) < before - 0.5
    # the generator step leaves no gradient in the critic, and the critic did not move
    assert all(p.grad is None for p in model.critic_parameters())
    for p, q in zip(model.critic_parameters(), critic_before, strict=True):
        assert torch.equal(p, q)
    assert float(model.distance_coef.detach()) != pytest.approx(2.5)  # c is learnt


def test_gw_term_alone_is_minimised_by_generator_steps():
    model = _model("factorised_neural", dtype=torch.float32, lambda_rec=0.0, lambda_w=0.0, lambda_h=0.0)
    x = _batch(dtype=torch.float32)
    critic = set(model.critic_parameters())
    optimiser = torch.optim.Adam([p for p in model.parameters() if p not in critic], lr=1e-2)

    def gw():
        return model.loss(x, torch.Generator().manual_seed(3))["regulariser"]

    before = float(gw().detach())
    for _ in range(30):
        optimiser.zero_grad()
        gw().backward()
        optimiser.step()
    assert float(gw().detach()) < 0.5 * before


# ---------------------------------------------------------------------- meta-priors
# (the definitions of each meta-prior are tested in tests/test_meta_priors.py)


# ---------------------------------------------------------------------- model plumbing
def test_build_prior_maps_meta_prior_names():
    expected = {
        "neural": NeuralPrior,
        "factorised_neural": FactorisedNeuralPrior,
        "factorised_normal": StandardNormalPrior,
        "factorised_uniform": FactorisedUniformPrior,
        "gmm": GumbelMixturePrior,
        "factorised_quantile": FactorisedQuantilePrior,
        "diagonal_gmm": GaussianMixturePrior,
        "normal": StandardNormalPrior,
    }
    for name, cls in expected.items():
        model = _model(name)
        assert type(model.prior) is cls
        assert model.prior.latent_dim == 2
    assert _model("gmm").prior.n_components == 3
    with pytest.raises(ValueError, match="model.prior must be one of"):
        model_config_from_dict({"name": "gwae", "prior": "vamp"})
    with pytest.raises(ValueError, match="renamed: use 'factorised_neural'"):
        model_config_from_dict({"name": "gwae", "prior": "factorised"})


def test_config_defaults_and_validation():
    config = GWAEConfig()
    assert (config.lambda_h, config.gp_weight, config.n_critic, config.distance_coef_init) == (
        0.03,
        10.0,
        5,
        2.5,
    )
    assert (config.drift, config.critic) == (1e-4, "authors")
    assert config.prior == "neural" and config.lambda_rec == 0.5
    assert GWAE.has_critic and GWAE.probabilistic
    assert GWAE.default_optimizer == {"name": "rmsprop", "lr": 1e-4}
    parsed = model_config_from_dict({"name": "gwae", "critic_hidden": [7, 5], "n_critic": 3})
    assert parsed.critic_hidden == (7, 5) and parsed.n_critic == 3
    for bad in ({"n_critic": 0}, {"distance_coef_init": 0.0}, {"lambda_w": -1.0}, {"critic_hidden": [0]}):
        with pytest.raises(ValueError):
            model_config_from_dict({"name": "gwae", **bad})
    assert config.gmm_scales == "column_sums"  # the authors' code as it runs
    with pytest.raises(ValueError, match="model.gmm_scales must be one of column_sums, matrix"):
        model_config_from_dict({"name": "gwae", "gmm_scales": "full"})
    model = _model("gmm", gmm_scales="matrix")
    assert model.prior.scale_mode == "matrix"


@pytest.mark.parametrize("prior", ["neural", "factorised_neural", "gmm"])
def test_state_dict_round_trip_gives_identical_outputs(prior):
    source = _model(prior, seed=0)
    target = _model(prior, seed=1)
    with torch.no_grad():
        source.log_distance_coef.fill_(0.3)
    target.load_state_dict(source.state_dict())
    x = _batch()
    for method in ("loss", "critic_loss"):
        a = getattr(source, method)(x, torch.Generator().manual_seed(4))
        b = getattr(target, method)(x, torch.Generator().manual_seed(4))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (method, key)
    torch.testing.assert_close(
        source.sample(5, torch.Generator().manual_seed(0)),
        target.sample(5, torch.Generator().manual_seed(0)),
        rtol=0,
        atol=0,
    )
    assert "log_distance_coef" in source.state_dict() and any(k.startswith("critic.") for k in source.state_dict())


@pytest.mark.parametrize("mode", ["fresh", "shared"])
def test_shared_critic_samples_reuse_the_first_steps_pairs(mode):
    """Later critic steps of a batch reuse the first step's pairs only in "shared" mode."""
    # the MLP critic: no power iteration between the calls changes its values
    config = GWAEConfig(latent_dim=3, critic="mlp", critic_hidden=(8,), sampler_hidden=(8,),
                        critic_samples=mode)
    torch.manual_seed(0)
    model = build_model(config, (1, 4, 4), "mlp", {"hidden": (16,)})
    x = torch.rand(6, 1, 4, 4)
    gen = torch.Generator().manual_seed(1)
    first = model.critic_loss(x, gen)
    second = model.critic_loss(x, gen, reuse_samples=True)
    same = torch.equal(first["critic_w"], second["critic_w"])
    assert same == (mode == "shared")
    # with shared pairs the second call drew only the interpolation weights t
    replay = torch.Generator().manual_seed(1)
    model.critic_loss(x, replay)
    if mode == "shared":
        torch.rand(6, 1, generator=replay)
        assert torch.equal(replay.get_state(), gen.get_state())
    with pytest.raises(ValueError, match="critic_samples"):
        GWAEConfig(critic_samples="sometimes").validate()


@pytest.mark.parametrize("critic_samples", ["fresh", "shared"])
def test_decoder_normalisation_statistics_are_those_of_the_mixture_it_trains_on(critic_samples):
    """Regression: posterior codes and prior samples used to be decoded in separate passes,
    so a batch-normalised decoder trained on each set's own statistics but evaluated with
    running statistics of their alternation (106 vs 32 test loss on `shapes`). Now every
    training-mode pass sees the mixture: after the steps of a batch the running statistics
    are exactly the momentum average of the mixture's batch statistics, and the
    evaluation-mode decoding of the mixture equals the training-mode one."""
    model = _model("normal", n_critic=3, critic_samples=critic_samples)
    model.prior = model.prior.to(torch.float64)
    # a decoder with a normalisation layer at its input, which sees the two code sets
    norm = torch.nn.BatchNorm1d(2, momentum=None, dtype=torch.float64)  # cumulative average
    model.decoder = torch.nn.Sequential(norm, model.decoder)
    # posterior codes far from the N(0, I) prior: an encoder that shifts its means by +6
    shift = model.encoder
    model.encoder = _Shifted(shift, 6.0)
    x = _batch(32)
    generator = torch.Generator().manual_seed(2)
    seen = []
    original = model.decode_both

    def spy(z, z_prior):
        seen.append(torch.cat([z, z_prior]).detach())
        return original(z, z_prior)

    model.decode_both = spy
    for step in range(model.config.n_critic):
        model.critic_loss(x, generator, reuse_samples=step > 0)
    model.loss(x, generator)
    passes = 2 if critic_samples == "shared" else model.config.n_critic + 1
    assert len(seen) == passes
    assert int(norm.num_batches_tracked) == passes  # no pass decoded one code set alone
    stacked = torch.stack(seen)
    torch.testing.assert_close(norm.running_mean, stacked.mean(1).mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        norm.running_var, stacked.var(1, unbiased=True).mean(0), rtol=1e-12, atol=1e-12
    )
    # the mixture's statistics are far from either set's own (the codes are 6 apart)
    assert float(norm.running_mean.min()) > 2.0
    assert float(norm.running_var.min()) > 5.0


def test_critic_steps_decode_only_prior_samples_when_the_decoder_is_per_image():
    """A decoder without batch statistics maps each code on its own: the critic's steps
    then decode the prior samples alone (the reconstructions would be discarded), and give
    the same values as decoding both code sets."""
    model = _model("factorised_normal", n_critic=3)
    assert not model.decoder_mixes_batch()
    sizes = []
    original = model.decode

    def counting(z):
        sizes.append(z.shape[0])
        return original(z)

    model.decode = counting
    x = _batch(16)
    gen = torch.Generator().manual_seed(0)
    outs = [model.critic_loss(x, gen, reuse_samples=step > 0) for step in range(3)]
    assert sizes == [16, 16, 16]
    model.loss(x, gen)
    assert sizes[-1] == 32  # the generator step decodes codes and prior samples together
    model.decode = original
    model.decoder_mixes_batch = lambda: True  # the batch-statistics path: both in one pass
    both = _model("factorised_normal", n_critic=3)
    both.decoder_mixes_batch = lambda: True
    gen = torch.Generator().manual_seed(0)
    for step, out in enumerate(outs):
        ref = both.critic_loss(x, gen, reuse_samples=step > 0)
        for key in ("total", "critic_w", "gradient_penalty"):
            torch.testing.assert_close(ref[key], out[key], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("critic", ["authors", "mlp"])
def test_one_critic_pass_gives_each_pairs_own_value(critic):
    """Both sets of pairs go through the critic in one pass: the same values as a pass
    per set and as a pass per pair (the critic has no batch statistics)."""
    torch.manual_seed(0)
    config = model_config_from_dict({"name": "gwae", "latent_dim": 3, "critic": critic,
                                     "critic_hidden": [16]})  # fmt: skip
    model = build_model(config, (1, 8, 8), "mlp", {"hidden": (16,)}).double()
    x, xp = _batch(5), _batch(5, seed=4)
    z, zp = (torch.randn(5, 3, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
             for s in (5, 6))  # fmt: skip
    f_enc, f_dec = model.critic_values(x, z, xp, zp)
    torch.testing.assert_close(f_enc, model.critic(x, z), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_dec, model.critic(xp, zp), rtol=1e-12, atol=1e-12)
    one_by_one = torch.cat([model.critic(xp[i:i + 1], zp[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(f_dec, one_by_one, rtol=1e-12, atol=1e-12)
    frozen = {n: p.detach() for n, p in model.critic.named_parameters()}
    z_in = z.clone().requires_grad_()
    f_enc_frozen, _ = model.critic_values(x, z_in, xp, zp, frozen)
    torch.testing.assert_close(f_enc_frozen, f_enc, rtol=0, atol=0)
    f_enc_frozen.sum().backward()  # the generator step: gradients reach the codes only
    assert z_in.grad is not None and float(z_in.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.critic.parameters())


def test_decoder_mixes_batch_means_batch_statistics():
    model = _model("factorised_normal")
    norm = torch.nn.BatchNorm1d(2, dtype=torch.float64)
    model.decoder = torch.nn.Sequential(norm, model.decoder)
    assert model.decoder_mixes_batch()  # training mode: batch statistics
    model.eval()
    assert not model.decoder_mixes_batch()  # running statistics: per image
    norm.track_running_stats = False
    assert model.decoder_mixes_batch()  # no running statistics: batch statistics always


class _Shifted(torch.nn.Module):
    """An encoder whose posterior means are moved by ``offset``."""

    def __init__(self, encoder, offset):
        super().__init__()
        self.encoder, self.offset = encoder, offset

    def forward(self, x):
        mean, logvar = self.encoder(x)
        return mean + self.offset, logvar


def test_critic_steps_encode_the_batch_once_and_redraw_the_codes():
    """As the authors: (mean, logvar) computed at the batch's first critic step serve the
    later ones, which still draw fresh posterior codes and prior samples."""
    model = _model("factorised_normal", n_critic=3)
    calls = []
    original = model.encode

    def counting(x):
        calls.append(1)
        return original(x)

    model.encode = counting
    x = _batch()
    gen = torch.Generator().manual_seed(0)
    outs = [model.critic_loss(x, gen, reuse_samples=step > 0) for step in range(3)]
    assert len(calls) == 1
    assert not torch.equal(outs[0]["critic_w"], outs[1]["critic_w"])
    # the same values as encoding again at every step (this encoder is deterministic)
    model.encode = original
    again = _model("factorised_normal", n_critic=3)
    gen = torch.Generator().manual_seed(0)
    for step, out in enumerate(outs):
        ref = again.critic_loss(x, gen, reuse_samples=False)
        torch.testing.assert_close(ref["critic_w"], out["critic_w"], rtol=0, atol=0, msg=str(step))
