"""Conv encoders/decoders: parameter counts and spatial paths against the layer list of the
RAE paper's conv nets."""

import pytest
import torch
from torch import nn

from otae.nn import ARCHITECTURES, build_networks, count_parameters


def conv_params(c_in, c_out, k, bias):
    return c_in * c_out * k * k + (c_out if bias else 0)


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


def bn_params(c):
    return 2 * c  # weight and bias (running stats are buffers)


def record_spatial_path(module, x):
    """Output (C, H, W) of every Conv2d / ConvTranspose2d, in call order."""
    shapes, handles = [], []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(
                m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
            )
    try:
        out = module(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, out


# name -> (build_networks arguments, expected encoder and decoder parameter counts)
REGISTRY_CASES = {
    "mlp": (((1, 8, 8), 3, False), {"hidden": (16,)},
            lambda: (linear_params(64, 16) + linear_params(16, 3),
                     linear_params(3, 16) + linear_params(16, 64))),
    "paper_mnist": (((1, 28, 28), 8, False), {},
                    lambda: paper_counts(1, 1, 7, [1024, 512, 256], 8, False)),
    "paper_celeba": (((3, 64, 64), 64, True), {},
                     lambda: paper_counts(3, 4, 8, [1024, 512, 256, 128], 64, True)),
    "small_conv": (((1, 28, 28), 5, False), {"channels": (8, 16), "hidden": 32},
                   lambda: (conv_params(1, 8, 4, False) + bn_params(8)
                            + conv_params(8, 16, 4, False) + bn_params(16)
                            + linear_params(16 * 7 * 7, 32) + linear_params(32, 5),
                            linear_params(5, 32) + linear_params(32, 16 * 7 * 7)
                            + conv_params(16, 8, 4, False) + bn_params(8)
                            + conv_params(8, 1, 4, True))),
}


@pytest.mark.parametrize("name", sorted(REGISTRY_CASES))
def test_registry_lists_the_conv_architectures(name):
    """Each listed name builds ITS nets: parameter counts from the layer lists (on the
    meta device: shapes only, no memory), so a name mapped to another factory fails."""
    assert name in ARCHITECTURES
    args, options, counts = REGISTRY_CASES[name]
    with torch.device("meta"):
        encoder, decoder = build_networks(name, *args, **options)
    assert (count_parameters(encoder), count_parameters(decoder)) == counts()
    if name == "paper_mnist":  # the totals of the layer list below, written out
        assert counts() == (11_024_136, 10_939_137)


# The RAE paper's conv nets (§6.1; layers as in the authors' code): encoder 4 blocks k4
# s2 p1, no bias, BN, ReLU, 128-256-512-1024 channels, then the linear head(s); decoder
# linear to 1024 x s x s, transposed convs k4 s2 p1 no bias + BN, then a 1x1 transposed
# conv (with bias) to the image.
def paper_counts(in_channels, enc_out_side, dec_start_side, dec_channels, latent, probabilistic):
    enc_channels = [in_channels, 128, 256, 512, 1024]
    encoder = sum(
        conv_params(a, b, 4, bias=False) + bn_params(b)
        for a, b in zip(enc_channels[:-1], enc_channels[1:], strict=True)
    )
    encoder += (2 if probabilistic else 1) * linear_params(1024 * enc_out_side**2, latent)
    decoder = linear_params(latent, 1024 * dec_start_side**2)
    decoder += sum(
        conv_params(a, b, 4, bias=False) + bn_params(b)
        for a, b in zip(dec_channels[:-1], dec_channels[1:], strict=True)
    )
    decoder += conv_params(dec_channels[-1], in_channels, 1, bias=True)
    return encoder, decoder


@pytest.mark.parametrize("probabilistic", [False, True])
def test_paper_mnist_parameter_count_matches_the_layer_list(probabilistic):
    encoder, decoder = build_networks("paper_mnist", (1, 28, 28), 8, probabilistic)
    enc, dec = paper_counts(1, 1, 7, [1024, 512, 256], 8, probabilistic)
    assert count_parameters(encoder) == enc
    assert count_parameters(decoder) == dec
    # the same numbers written out, as a guard against a mistake shared by code and helper
    assert (
        dec
        == 8 * 50176 + 50176 + 1024 * 512 * 16 + 1024 + 512 * 256 * 16 + 512 + 256 + 1
        == 10_939_137
    )
    assert enc == (11_024_136 if not probabilistic else 11_024_136 + 1024 * 8 + 8)


def test_paper_celeba_parameter_count_matches_the_layer_list():
    encoder, decoder = build_networks("paper_celeba", (3, 64, 64), 64, True)
    enc, dec = paper_counts(3, 4, 8, [1024, 512, 256, 128], 64, True)
    assert count_parameters(encoder) == enc
    assert count_parameters(decoder) == dec


def test_paper_layers_have_no_conv_bias_and_batchnorm_after_each_block():
    encoder, decoder = build_networks("paper_mnist", (1, 28, 28), 8, False)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512, 1024]
    assert all(
        c.bias is None and c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1)
        for c in convs
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) == 4
    deconvs = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels, d.kernel_size) for d in deconvs] == [
        (1024, 512, (4, 4)),
        (512, 256, (4, 4)),
        (256, 1, (1, 1)),
    ]
    assert deconvs[0].bias is None and deconvs[1].bias is None and deconvs[2].bias is not None
    assert sum(isinstance(m, nn.BatchNorm2d) for m in decoder.modules()) == 2


def test_paper_mnist_spatial_path():
    torch.manual_seed(0)
    encoder, decoder = build_networks("paper_mnist", (1, 28, 28), 8, True)
    path, (mean, logvar) = record_spatial_path(encoder, torch.rand(2, 1, 28, 28))
    assert path == [(128, 14, 14), (256, 7, 7), (512, 3, 3), (1024, 1, 1)]
    assert mean.shape == logvar.shape == (2, 8)
    path, images = record_spatial_path(decoder, torch.randn(2, 8))
    assert path == [(512, 14, 14), (256, 28, 28), (1, 28, 28)]
    assert images.shape == (2, 1, 28, 28)


def test_paper_celeba_spatial_path():
    torch.manual_seed(0)
    encoder, decoder = build_networks("paper_celeba", (3, 64, 64), 64, False)
    path, (mean, logvar) = record_spatial_path(encoder, torch.rand(2, 3, 64, 64))
    assert path == [(128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    assert mean.shape == (2, 64) and logvar is None
    path, images = record_spatial_path(decoder, torch.randn(2, 64))
    assert path == [(512, 16, 16), (256, 32, 32), (128, 64, 64), (3, 64, 64)]
    assert images.shape == (2, 3, 64, 64)


@pytest.mark.parametrize(
    ("shape", "channels", "expected_path"),
    [
        ((1, 28, 28), (32, 64), [(32, 14, 14), (64, 7, 7)]),
        ((3, 32, 32), (8, 16), [(8, 16, 16), (16, 8, 8)]),
        ((3, 64, 48), (8, 8, 16), [(8, 32, 24), (8, 16, 12), (16, 8, 6)]),
    ],
)
def test_small_conv_paths_and_parameter_count(shape, channels, expected_path):
    c, h, w = shape
    latent, hidden = 5, 32
    encoder, decoder = build_networks(
        "small_conv", shape, latent, False, channels=list(channels), hidden=hidden
    )
    path, (mean, _) = record_spatial_path(encoder, torch.rand(3, *shape))
    assert path == expected_path and mean.shape == (3, latent)
    dec_path, images = record_spatial_path(decoder, torch.randn(3, latent))
    rev = list(channels[::-1])
    assert dec_path == [
        (ch, *p[1:])
        for ch, p in zip(rev[1:] + [c], expected_path[::-1][1:] + [(c, h, w)], strict=True)
    ]
    assert images.shape == (3, *shape)

    low = channels[-1] * (h // 2 ** len(channels)) * (w // 2 ** len(channels))
    chans = [c, *channels]
    enc = sum(
        conv_params(a, b, 4, False) + bn_params(b)
        for a, b in zip(chans[:-1], chans[1:], strict=True)
    )
    enc += linear_params(low, hidden) + linear_params(hidden, latent)
    dec = linear_params(latent, hidden) + linear_params(hidden, low)
    dec += sum(
        conv_params(a, b, 4, False) + bn_params(b) for a, b in zip(rev[:-1], rev[1:], strict=True)
    )
    dec += conv_params(channels[0], c, 4, True)
    assert count_parameters(encoder) == enc
    assert count_parameters(decoder) == dec


@pytest.mark.parametrize(
    ("architecture", "shape", "latent"),
    [
        ("paper_mnist", (1, 28, 28), 8),
        ("small_conv", (1, 28, 28), 8),
        ("small_conv", (3, 64, 64), 16),
    ],
)
def test_decoder_output_is_linear(architecture, shape, latent):
    torch.manual_seed(0)
    _, decoder = build_networks(
        architecture,
        shape,
        latent,
        False,
        **({"hidden": 16, "channels": (4, 8)} if architecture == "small_conv" else {}),
    )
    last = list(decoder.modules())[-1]
    assert isinstance(last, nn.ConvTranspose2d)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(3.75)
        out = decoder(torch.randn(2, latent))
        # no sigmoid / clamp after the last layer
        assert torch.equal(out, torch.full_like(out, 3.75))
        last.bias.fill_(-2.5)
        assert torch.equal(decoder(torch.randn(2, latent)), torch.full((2, *shape), -2.5))


def test_deterministic_under_manual_seed():
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        encoder, decoder = build_networks(
            "small_conv", (1, 28, 28), 4, True, channels=(8, 16), hidden=32
        )
        x = torch.rand(4, 1, 28, 28)
        mean, logvar = encoder(x)
        outputs.append((mean, logvar, decoder(mean), encoder.state_dict(), decoder.state_dict()))
    (m1, l1, y1, e1, d1), (m2, l2, y2, e2, d2) = outputs
    assert torch.equal(m1, m2) and torch.equal(l1, l2) and torch.equal(y1, y2)
    assert all(torch.equal(e1[k], e2[k]) for k in e1) and all(torch.equal(d1[k], d2[k]) for k in d1)
    torch.manual_seed(124)
    encoder, _ = build_networks("small_conv", (1, 28, 28), 4, True, channels=(8, 16), hidden=32)
    assert not torch.equal(encoder(x)[0], m1)


def test_small_conv_learns_a_batch():
    torch.manual_seed(0)
    encoder, decoder = build_networks(
        "small_conv", (1, 28, 28), 4, False, channels=(8, 16), hidden=64
    )
    x = torch.rand(8, 1, 28, 28)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = ((decoder(encoder(x)[0]) - x) ** 2).sum(dim=(1, 2, 3)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("architecture", "shape", "message"),
    [
        (
            "paper_mnist",
            (3, 64, 64),
            "paper_mnist is built for 1x28x28 images, got 3x64x64; use paper_celeba",
        ),
        ("paper_mnist", (3, 28, 28), "paper_mnist is built for 1x28x28 images, got 3x28x28"),
        (
            "paper_celeba",
            (1, 28, 28),
            "paper_celeba is built for 3x64x64 images, got 1x28x28; use paper_mnist",
        ),
        ("small_conv", (1, 30, 30), "divisible by 4 .*got 1x30x30"),
        ("small_conv", (3, 64, 62), "divisible by 4 .*got 3x64x62"),
    ],
)
def test_unsuitable_image_shape_is_a_clear_value_error(architecture, shape, message):
    with pytest.raises(ValueError, match=message):
        build_networks(architecture, shape, 8, False)


def test_small_conv_divisibility_follows_the_number_of_layers():
    with pytest.raises(ValueError, match="divisible by 8 .*got 1x28x28"):
        build_networks("small_conv", (1, 28, 28), 8, False, channels=(8, 16, 32))
    encoder, _ = build_networks(
        "small_conv", (1, 32, 32), 8, False, channels=(8, 16, 32), hidden=16
    )
    assert encoder(torch.rand(2, 1, 32, 32))[0].shape == (2, 8)


def test_bad_options_are_value_errors():
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) widths .*accepted: channels, hidden"
    ):
        build_networks("small_conv", (1, 28, 28), 8, False, widths=(8,))
    with pytest.raises(ValueError, match="channels must have 4 entries"):
        build_networks("paper_mnist", (1, 28, 28), 8, False, channels=(64, 128, 256))
    with pytest.raises(ValueError, match="positive"):
        build_networks("small_conv", (1, 28, 28), 8, False, channels=(8, 0))


@pytest.mark.parametrize(
    ("architecture", "options", "message"),
    [
        # a string is a sequence: "32" would have read as channels [3, 2]
        ("small_conv", {"channels": "32"}, "small_conv: channels must be a list of integers, got '32'"),
        ("small_conv", {"channels": [True, 2]}, "small_conv: channels must be a list of integers"),
        ("paper_mnist", {"channels": [64, 128.5, 256, 512]}, "paper_mnist: channels must be a list of integers"),
        ("small_conv", {"hidden": True}, "small_conv: hidden must be a positive integer, got True"),
        ("gwae_conv", {"hidden": 2.5}, "gwae_conv: hidden must be a positive integer, got 2.5"),
        ("mlp", {"hidden": "big"}, "mlp: hidden must be a list of integers, got 'big'"),
        ("mlp", {"hidden": [0]}, r"mlp: hidden must be positive integers, got \[0\]"),
        ("mlp", {"hidden": 256}, "mlp: hidden must be a list of integers, got 256"),
    ],
)
def test_option_values_of_the_wrong_kind_are_one_line_errors(architecture, options, message):
    shape = (1, 28, 28) if architecture == "paper_mnist" else (1, 32, 32)
    with pytest.raises(ValueError, match=message):
        build_networks(architecture, shape, 8, True, **options)


def test_an_mlp_without_hidden_layers_is_linear():
    encoder, decoder = build_networks("mlp", (1, 4, 4), 3, False, hidden=[])
    assert sum(isinstance(m, torch.nn.Linear) for m in encoder.modules()) == 1
    assert sum(isinstance(m, torch.nn.Linear) for m in decoder.modules()) == 1


def test_paper_channel_options_are_honoured():
    encoder, decoder = build_networks(
        "paper_mnist", (1, 28, 28), 8, False, channels=(8, 8, 16, 16), decoder_channels=(16, 8, 4)
    )
    path, _ = record_spatial_path(encoder, torch.rand(2, 1, 28, 28))
    assert path == [(8, 14, 14), (8, 7, 7), (16, 3, 3), (16, 1, 1)]
    path, out = record_spatial_path(decoder, torch.randn(2, 8))
    assert path == [(8, 14, 14), (4, 28, 28), (1, 28, 28)]


def test_encoder_rejects_a_wrong_sized_tensor_at_its_boundary():
    encoder, _ = build_networks("small_conv", (1, 28, 28), 8, False, channels=(4, 8), hidden=16)
    with pytest.raises(
        ValueError, match=r"expects images of shape \(N, 1, 28, 28\), got \(2, 3, 64, 64\)"
    ):
        encoder(torch.rand(2, 3, 64, 64))
    encoder, _ = build_networks("paper_celeba", (3, 64, 64), 8, False)
    with pytest.raises(
        ValueError, match=r"expects images of shape \(N, 3, 64, 64\), got \(2, 1, 28, 28\)"
    ):
        encoder(torch.rand(2, 1, 28, 28))
