"""sliced_fgw / sliced_gw / sliced_wasserstein against per-slice references and invariances."""

import numpy as np
import pytest
import torch

from otae.discrepancies import (
    fgw_1d,
    input_checks,
    sliced_fgw,
    sliced_gw,
    sliced_wasserstein,
)
from otae.sphere import uniform_directions

from .helpers import point_clouds


def clouds(n=40, d=5, seed=0, dtype=torch.float64):
    scale = torch.linspace(0.5, 2.0, d, dtype=dtype)
    return point_clouds(n, n, d, seed=seed, scale=scale, shift=1, dtype=dtype)


def random_rotation(d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


def test_one_dimensional_case_equals_fgw_1d():
    x, y = clouds(d=1)
    value = sliced_fgw(x, y, beta=0.3, projections=torch.tensor([[1.0]], dtype=torch.float64))
    assert value.item() == pytest.approx(fgw_1d(x[:, 0], y[:, 0], 0.3).item(), rel=1e-14)


def test_equals_mean_of_per_slice_fgw_1d():
    x, y = clouds()
    theta = uniform_directions(7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64).T
    value = sliced_fgw(x, y, beta=0.2, projections=theta)
    per_slice = [fgw_1d(x @ theta[:, l], y @ theta[:, l], 0.2) for l in range(theta.shape[1])]
    assert value.item() == pytest.approx(torch.stack(per_slice).mean().item(), rel=1e-13)


def test_rae_authors_scale_is_summed_and_unnormalised():
    """Per slice (1-beta) N W + beta GW, slices summed, raw Gaussian directions."""
    x, y = clouds(n=30)
    beta = 0.1
    gen = torch.Generator().manual_seed(4)
    value = sliced_fgw(x, y, beta=beta, n_projections=6, generator=gen, scale="rae_authors")
    raw = torch.randn(6, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64).T
    expected = 0.0
    for l in range(6):
        px, py = x @ raw[:, l], y @ raw[:, l]
        # fgw_1d at beta' with (1-beta') : beta' = (1-beta) N : beta, rescaled.
        weight = (1 - beta) * 30 + beta
        expected += weight * fgw_1d(px, py, beta / weight).item()
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_zero_for_identical_inputs():
    x, _ = clouds()
    assert sliced_fgw(x, x, beta=0.5).item() == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_invariant_to_common_rotation_of_inputs_and_projections():
    x, y = clouds(d=6)
    rot = random_rotation(6, seed=9)
    theta = uniform_directions(11, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64).T
    before = sliced_fgw(x, y, beta=0.4, projections=theta)
    after = sliced_fgw(x @ rot.T, y @ rot.T, beta=0.4, projections=rot @ theta)
    assert after.item() == pytest.approx(before.item(), rel=1e-12)


def test_sliced_gw_ignores_translation_and_reflection_of_one_input():
    """Per slice, GW sees only within-set distances: shifting y, or mapping y -> -y
    (handled by the anti-identity matching), leaves sliced GW unchanged exactly."""
    x, y = clouds(n=60, d=3)
    theta = uniform_directions(9, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64).T
    base = sliced_gw(x, y, projections=theta)
    assert sliced_gw(x, y + torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64),
                     projections=theta).item() == pytest.approx(base.item(), rel=1e-10)
    assert sliced_gw(x, -y, projections=theta).item() == pytest.approx(base.item(), rel=1e-10)
    # ...whereas the W part does see the shift.
    assert sliced_fgw(x, y + 5.0, beta=0.5, projections=theta) > sliced_fgw(x, y, beta=0.5, projections=theta)


def test_determinism_with_explicit_generator():
    x, y = clouds()
    a = sliced_fgw(x, y, generator=torch.Generator().manual_seed(123))
    b = sliced_fgw(x, y, generator=torch.Generator().manual_seed(123))
    c = sliced_fgw(x, y, generator=torch.Generator().manual_seed(124))
    assert a.item() == b.item()
    assert a.item() != c.item()


def test_sliced_wasserstein_equals_sorted_matching_per_slice():
    x, y = clouds(n=25)
    theta = uniform_directions(5, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64).T
    value = sliced_wasserstein(x, y, projections=theta)
    expected = torch.stack(
        [((x @ t).sort().values - (y @ t).sort().values).square().mean() for t in theta.T]
    ).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-13)
    # And it is the beta = 0 member of the sliced FGW family.
    assert sliced_fgw(x, y, beta=0.0, projections=theta).item() == pytest.approx(value.item(), rel=1e-13)


def test_sliced_wasserstein_gaussians_closed_form():
    """For N(0, I) vs N(m, I), E_theta (theta . m)^2 = |m|^2 / d (large N, many slices)."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 20000
    shift = torch.tensor([2.0, -1.0, 0.5, 1.0], dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, d, generator=g, dtype=torch.float64) + shift
    value = sliced_wasserstein(x, y, n_projections=2000, generator=g)
    assert value.item() == pytest.approx(shift.square().sum().item() / d, rel=0.05)


def test_gradients_flow_into_both_clouds_not_directions():
    x, y = clouds()
    x.requires_grad_(True)
    y.requires_grad_(True)
    theta = uniform_directions(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64).T
    theta.requires_grad_(True)
    sliced_fgw(x, y, projections=theta).backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert theta.grad is None


def test_gradcheck_float64():
    x, y = clouds(n=6, d=3)
    theta = uniform_directions(4, 3, generator=torch.Generator().manual_seed(8), dtype=torch.float64).T
    x.requires_grad_(True)
    y.requires_grad_(True)
    for scale in ("mean", "rae_authors"):
        assert torch.autograd.gradcheck(
            lambda a, b, s=scale: sliced_fgw(a, b, beta=0.3, projections=theta, scale=s), (x, y)
        )
    assert torch.autograd.gradcheck(lambda a, b: sliced_wasserstein(a, b, projections=theta), (x, y))


def dense_sliced_numpy(x, y, theta, beta):
    """Mean over the columns of ``theta`` of the 1-D fused objective, min over the identity
    and anti-identity matchings of the sorted projections, by N x N matrices in float64."""
    px = np.sort(x.double().numpy() @ theta.double().numpy(), axis=0)
    py = np.sort(y.double().numpy() @ theta.double().numpy(), axis=0)
    values = []
    for a, b in zip(px.T, py.T, strict=True):
        dx = (a[:, None] - a[None, :]) ** 2
        values.append(min(
            (1 - beta) * np.mean((a - q) ** 2)
            + beta * np.mean((dx - (q[:, None] - q[None, :]) ** 2) ** 2)
            for q in (b, b[::-1])
        ))
    return float(np.mean(values))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_follows_input_dtype(dtype):
    """The result is in the input's dtype AND has the float64 reference's value (computed
    from the same, possibly float32-rounded, inputs) to that dtype's accuracy; with the
    given directions and with the 50 directions drawn from a generator in that dtype."""
    x, y = clouds(dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    theta = uniform_directions(6, 5, generator=torch.Generator().manual_seed(5), dtype=dtype).T
    drawn = uniform_directions(50, 5, generator=torch.Generator().manual_seed(6), dtype=dtype).T
    for fn, beta in ((sliced_fgw, 0.1), (sliced_gw, 1.0), (sliced_wasserstein, 0.0)):
        given = fn(x, y, projections=theta)
        fresh = fn(x, y, generator=torch.Generator().manual_seed(6))
        assert given.dtype == fresh.dtype == dtype
        assert given.item() == pytest.approx(dense_sliced_numpy(x, y, theta, beta), rel=tol)
        assert fresh.item() == pytest.approx(dense_sliced_numpy(x, y, drawn, beta), rel=tol)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(x=torch.zeros(5, 3), y=torch.zeros(5, 2)), ValueError, "same shape"),
        (dict(x=torch.zeros(5), y=torch.zeros(5)), ValueError, "x must be 2-D"),
        (dict(x=torch.zeros(1, 3), y=torch.zeros(1, 3)), ValueError, "at least 2"),
        (dict(x=torch.zeros(4, 3), y=torch.zeros(4, 3), beta=2.0), ValueError, "beta"),
        (dict(x=torch.zeros(4, 3), y=torch.zeros(4, 3), n_projections=0), ValueError, "n_projections"),
        (dict(x=torch.zeros(4, 3), y=torch.zeros(4, 3), projections=torch.zeros(2, 5)),
         ValueError, "projections must have shape"),
        (dict(x=torch.zeros(4, 3), y=torch.zeros(4, 3), scale="paper"), ValueError, "scale"),
        (dict(x=torch.full((4, 3), float("nan")), y=torch.zeros(4, 3)), ValueError, "x contains NaN"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        sliced_fgw(**kwargs)


def test_input_checks_can_be_disabled_for_hot_loops():
    x = torch.full((4, 3), float("nan"))
    with input_checks(False):
        assert torch.isnan(sliced_fgw(x, torch.zeros(4, 3)))
    with pytest.raises(ValueError):
        sliced_fgw(x, torch.zeros(4, 3))
