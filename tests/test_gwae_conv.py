"""``gwae_conv``: the GWAE authors' conv nets (vaetc's ConvGaussianEncoder / ConvDecoder),
checked against a reference written layer by layer from vaetc's definitions: same
parameters in the same order, same outputs."""

import math

import pytest
import torch
from torch import nn

from otae.nn import build_networks, count_parameters
from otae.nn.gwae_conv import LOGIT_EPS, Logit


class ReferenceLogit(nn.Module):
    """vaetc's SigmoidInverse, as written there: two clamps, then log x - log(1 - x)."""

    def forward(self, x):
        x = torch.clamp(x, min=1e-4, max=1 - 1e-4)
        xc = torch.clamp(1.0 - x, min=1e-4, max=1 - 1e-4)
        return x.log() - xc.log()


def reference_nets(in_ch, z_dim, batchnorm=False, momentum=0.5):
    """vaetc's 64x64 nets (hidden filters 32-64-128-256, 256 features), layer by layer."""
    def bn2(c):
        return [nn.BatchNorm2d(c, momentum=momentum)] if batchnorm else []

    enc = nn.Sequential(
        ReferenceLogit(),
        nn.Conv2d(in_ch, 32, 4, 2, 1), nn.SiLU(), *bn2(32),
        nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(), *bn2(64),
        nn.Conv2d(64, 128, 4, 2, 1), nn.SiLU(), *bn2(128),
        nn.Conv2d(128, 256, 4, 2, 1), nn.SiLU(), *bn2(256),
        nn.Flatten(), nn.Linear(256 * 4 * 4, 256), nn.SiLU(),
    )
    heads = [nn.Linear(256, z_dim), nn.Linear(256, z_dim)]
    if batchnorm:
        heads = [nn.Sequential(h, nn.BatchNorm1d(z_dim, momentum=momentum)) for h in heads]
    dec = nn.Sequential(
        nn.Linear(z_dim, 256), nn.SiLU(), nn.Linear(256, 256 * 4 * 4), nn.SiLU(),
        nn.Unflatten(1, [256, 4, 4]),
        nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.SiLU(), *bn2(128),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.SiLU(), *bn2(64),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.SiLU(), *bn2(32),
        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.SiLU(), *bn2(32),
        nn.Conv2d(32, in_ch, 5, 1, 2), nn.Sigmoid(),
    )
    return enc, heads, dec


def copy_in_order(source: nn.Module, targets: list[nn.Module]) -> None:
    """Copy ``source``'s parameters and buffers into ``targets``' in registration order,
    shape by shape (a different layer list fails here)."""
    src = list(source.parameters())
    dst = [p for t in targets for p in t.parameters()]
    assert [tuple(p.shape) for p in src] == [tuple(p.shape) for p in dst]
    with torch.no_grad():
        for s, d in zip(src, dst, strict=True):
            d.copy_(s)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_the_nets_are_vaetcs_on_64x64_images(batchnorm):
    torch.manual_seed(0)
    encoder, decoder = build_networks("gwae_conv", (3, 64, 64), 16, True, batchnorm=batchnorm)
    ref_enc, ref_heads, ref_dec = reference_nets(3, 16, batchnorm)
    # the encoder's parameters are body, mean head, log-variance head, as vaetc's
    copy_in_order(encoder, [ref_enc, *ref_heads])
    copy_in_order(decoder, [ref_dec])
    for mode in ("train", "eval"):
        for m in (encoder, decoder, ref_enc, *ref_heads, ref_dec):
            m.train(mode == "train")
        x = torch.rand(6, 3, 64, 64)
        x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 1e-6, 1 - 1e-6])  # the clamps
        mean, logvar = encoder(x)
        h = ref_enc(x)
        torch.testing.assert_close(mean, ref_heads[0](h), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logvar, ref_heads[1](h), rtol=1e-5, atol=1e-5)
        z = torch.randn(6, 16)
        torch.testing.assert_close(decoder(z), ref_dec(z), rtol=1e-5, atol=1e-6)


def test_parameter_counts_of_the_64x64_nets():
    """The totals of vaetc's layer lists, written out: conv k4 with bias, SiLU, no BN."""
    def conv(a, b, k):
        return a * b * k * k + b

    def lin(a, b):
        return a * b + b

    enc = (conv(3, 32, 4) + conv(32, 64, 4) + conv(64, 128, 4) + conv(128, 256, 4)
           + lin(4096, 256) + 2 * lin(256, 64))
    dec = (lin(64, 256) + lin(256, 4096) + conv(256, 128, 4) + conv(128, 64, 4)
           + conv(64, 32, 4) + conv(32, 32, 4) + conv(32, 3, 5))
    with torch.device("meta"):
        encoder, decoder = build_networks("gwae_conv", (3, 64, 64), 64, True)
    assert (count_parameters(encoder), count_parameters(decoder)) == (enc, dec)
    assert (enc, dec) == (1_771_872, 1_776_483)


def test_logit_is_the_inverse_of_the_decoders_sigmoid_inside_the_clamp():
    x = torch.tensor([0.0, 1e-5, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    expected = torch.tensor(
        [math.log(LOGIT_EPS / (1 - LOGIT_EPS)), math.log(LOGIT_EPS / (1 - LOGIT_EPS)),
         math.log(1 / 3), 0.0, math.log(9.0), math.log((1 - LOGIT_EPS) / LOGIT_EPS)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(Logit()(x), expected)
    torch.testing.assert_close(torch.sigmoid(Logit()(x[2:5])), x[2:5])


def test_any_size_divisible_by_the_number_of_halvings():
    # 1x32x32 (shapes_fine): 2x2 at the lowest resolution; 1x28x28 MNIST with 2 layers
    for shape, options in (((1, 32, 32), {}), ((1, 28, 28), {"channels": (8, 16)})):
        encoder, decoder = build_networks("gwae_conv", shape, 5, True, **options)
        x = torch.rand(3, *shape)
        mean, logvar = encoder(x)
        out = decoder(mean)
        assert out.shape == x.shape and logvar.shape == (3, 5)
        assert 0 < out.min() and out.max() < 1  # the sigmoid


def test_linear_output_option_drops_the_sigmoid():
    torch.manual_seed(0)
    _, decoder = build_networks("gwae_conv", (1, 32, 32), 4, False, output="linear")
    last = list(decoder.modules())[-1]
    assert isinstance(last, nn.Conv2d)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.75)
        assert torch.equal(decoder(torch.randn(2, 4)), torch.full((2, 1, 32, 32), 3.75))


def test_batchnorm_heads_standardise_the_codes_in_training():
    torch.manual_seed(0)
    encoder, _ = build_networks("gwae_conv", (1, 32, 32), 4, True, batchnorm=True)
    mean, logvar = encoder(torch.rand(32, 1, 32, 32))
    for codes in (mean, logvar):
        torch.testing.assert_close(codes.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(codes.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    # a deterministic encoder keeps vaetc's plain linear head
    encoder, _ = build_networks("gwae_conv", (1, 32, 32), 4, False, batchnorm=True)
    assert isinstance(encoder.mean_head, nn.Linear)


@pytest.mark.parametrize(
    ("shape", "options", "message"),
    [
        ((1, 28, 28), {}, "divisible by 16 .*got 1x28x28; change data.image_size or the number of channels"),
        ((1, 32, 32), {"output": "tanh"}, "output must be one of sigmoid, linear"),
        ((1, 32, 32), {"batchnorm_momentum": 0.0}, r"batchnorm_momentum must be in \(0, 1\]"),
        ((1, 32, 32), {"batchnorm_momentum": "fast"}, r"batchnorm_momentum must be a number in \(0, 1\], got 'fast'"),
        ((1, 32, 32), {"batchnorm": "maybe"}, "batchnorm must be true or false, got 'maybe'"),
        ((1, 32, 32), {"batchnorm": 1}, "batchnorm must be true or false, got 1"),
        ((1, 32, 32), {"channels": (8, -1)}, "positive integers"),
        ((1, 32, 32), {"hidden": 0}, "hidden must be a positive integer"),
    ],
)
def test_bad_settings_are_one_line_errors(shape, options, message):
    with pytest.raises(ValueError, match=message):
        build_networks("gwae_conv", shape, 8, True, **options)


def test_a_gwae_on_the_authors_nets_reloads_from_its_export(tmp_path):
    """The architecture and its options travel in the export: the reloaded model
    reconstructs bit for bit (batch norm's running statistics included)."""
    from otae.models import build_model, from_pretrained, model_config_from_dict

    config = model_config_from_dict({"name": "gwae", "latent_dim": 6, "prior": "factorised_neural"})
    model = build_model(config, (1, 32, 32), "gwae_conv", {"batchnorm": True, "channels": (8, 16)},
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    model.loss(torch.rand(8, 1, 32, 32))  # a training-mode pass moves the running statistics
    model.eval()
    model.save_pretrained(tmp_path)
    again = from_pretrained(tmp_path).eval()
    x = torch.rand(4, 1, 32, 32)
    assert torch.equal(model.reconstruct(x), again.reconstruct(x))
    assert isinstance(again.decoder.net[-1], nn.Sigmoid)
