"""Spherical sliced FGW family: limits, ordering, search quality and gradients.

The data have one clearly dominant pair of directions (+-e2: x is stretched 3x along
it), so the location search has a unique answer up to sign and the ordering
SFG < SSFG < max-SFG has wide gaps. Orderings are checked on *accurate* expectations
at the found locations (20,000 directions each), so Monte Carlo error in the returned
L-direction estimate cannot make them flaky; that the returned value estimates the
expectation at the returned locations is checked separately with a 5-sigma bound.
"""

import math

import pytest
import torch

from otae.discrepancies import fgw_1d, input_checks, sliced_fgw
from otae.discrepancies import spherical as spherical_module
from otae.discrepancies.spherical import (
    max_sliced_fgw,
    mssfg,
    pssfg,
    slice_values,
    spherical_sliced_fgw,
    ssfg,
)
from otae.sphere import (
    sample_spherical_mixture,
    uniform_directions,
    vmf_mean_resultant_length,
)

from .helpers import gen

F64 = torch.float64
BETA = 0.1


def stretched_clouds(n=64, d=4, seed=0, dtype=F64):
    g = gen(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    x[:, 1] *= 3.0
    y = torch.randn(n, d, generator=g, dtype=dtype)
    return x, y


@pytest.fixture(scope="module")
def data():
    x, y = stretched_clouds()
    per_slice = slice_values(x, y, uniform_directions(20_000, 4, generator=gen(1), dtype=F64).T, BETA)
    sfg, sfg_se = per_slice.mean().item(), per_slice.std().item() / math.sqrt(20_000)
    max_value, direction = max_sliced_fgw(x, y, BETA, generator=gen(2), return_direction=True)
    return {"x": x, "y": y, "sfg": sfg, "sfg_se": sfg_se, "max": max_value.item(),
            "direction": direction}


def expectation(x, y, locations, kappa, distribution="vmf", n=20_000):
    """E over the (mixture) distribution at fixed locations, and its standard error."""
    theta = sample_spherical_mixture(locations, kappa, n, distribution=distribution,
                                     generator=gen(123)).T
    values = slice_values(x, y, theta, BETA)
    return values.mean().item(), values.std().item() / math.sqrt(n)


# ------------------------------------------------------------------ max-SFG


def test_max_sfg_matches_grid_search_in_2d():
    x, y = stretched_clouds(n=40, d=2, seed=3)
    phi = torch.linspace(0, math.pi, 3601, dtype=F64)
    grid = torch.stack((phi.cos(), phi.sin()))  # (2, L); theta and -theta give the same value
    grid_max = fgw_1d(x @ grid, y @ grid, BETA).max().item()
    value = max_sliced_fgw(x, y, BETA, generator=gen(4)).item()
    assert value == pytest.approx(grid_max, rel=1e-4)


def test_max_sfg_matches_grid_search_in_3d():
    x, y = stretched_clouds(n=40, d=3, seed=5)
    # Fibonacci lattice: 20,000 nearly uniform points of S^2 (spacing ~0.025 rad).
    k = torch.arange(20_000, dtype=F64) + 0.5
    z = 1 - 2 * k / 20_000
    r, angle = (1 - z * z).sqrt(), math.pi * (1 + 5**0.5) * k
    grid = torch.stack((r * angle.cos(), r * angle.sin(), z))
    grid_max = fgw_1d(x @ grid, y @ grid, BETA).max().item()
    value, direction = max_sliced_fgw(x, y, BETA, generator=gen(6), return_direction=True)
    # The ascent must beat every grid point (up to its own final step) and not by much.
    assert grid_max * (1 - 1e-6) <= value.item() <= grid_max * 1.01
    assert direction.norm().item() == pytest.approx(1.0, abs=1e-12)
    assert fgw_1d(x @ direction, y @ direction, BETA).item() == pytest.approx(value.item(), rel=1e-12)


def test_max_sfg_keeps_the_best_start():
    x, y = stretched_clouds(n=30, d=3, seed=21)
    starts = uniform_directions(6, 3, generator=gen(22), dtype=F64)
    value, direction = max_sliced_fgw(x, y, BETA, n_iters=0, init_directions=starts,
                                      return_direction=True)
    per_start = fgw_1d(x @ starts.T, y @ starts.T, BETA)
    assert value.item() == pytest.approx(per_start.max().item(), rel=1e-12)
    torch.testing.assert_close(direction, starts[per_start.argmax()])


# --------------------------------------------------------------- the limits


@pytest.mark.parametrize("distribution", ["vmf", "power"])
@pytest.mark.parametrize("kappa", [0.0, 1e-3])
def test_small_kappa_recovers_sfg(data, distribution, kappa):
    L = 4000
    value = spherical_sliced_fgw(data["x"], data["y"], BETA, kappa=kappa, n_projections=L,
                                 n_iters=5, distribution=distribution, generator=gen(7))
    # Per-slice spread under the uniform law, from the reference sample.
    spread = data["sfg_se"] * math.sqrt(20_000)
    assert abs(value.item() - data["sfg"]) < 5 * spread * math.sqrt(1 / L + 1 / 20_000)


@pytest.mark.parametrize(("distribution", "k"), [("vmf", 1), ("power", 1), ("vmf", 2)])
def test_large_kappa_recovers_max_sfg(data, distribution, k):
    value = spherical_sliced_fgw(data["x"], data["y"], BETA, kappa=1e5, n_projections=50,
                                 n_components=k, distribution=distribution, generator=gen(8))
    assert value.item() == pytest.approx(data["max"], rel=1e-3)


# ---------------------------------------------------------------- ordering


@pytest.fixture(scope="module")
def ssfg_runs(data):
    runs = {}
    for kappa in (1.0, 10.0, 100.0):
        value, locations = ssfg(data["x"], data["y"], BETA, kappa=kappa, n_projections=100,
                                generator=gen(9), return_locations=True)
        runs[kappa] = (value.item(), locations, expectation(data["x"], data["y"], locations, kappa))
    return runs


def test_sfg_below_ssfg_below_max_sfg(data, ssfg_runs):
    previous = data["sfg"] + 5 * data["sfg_se"]
    for kappa in (1.0, 10.0, 100.0):
        mean, se = ssfg_runs[kappa][2]
        # Strictly increasing in kappa on these data, with gaps of many standard errors.
        assert mean - 5 * se > previous
        previous = mean + 5 * se
    assert previous < data["max"]


def test_returned_value_estimates_the_expectation_at_the_locations(data, ssfg_runs):
    for kappa, (value, _, (mean, se)) in ssfg_runs.items():
        # The returned value averages 100 directions, the reference 20,000.
        assert abs(value - mean) < 5 * se * math.sqrt(20_000 / 100), kappa


def test_found_location_is_the_dominant_direction(data, ssfg_runs):
    for kappa in (10.0, 100.0):
        location = ssfg_runs[kappa][1]
        assert location.shape == (1, 4) and not location.requires_grad
        assert location.norm().item() == pytest.approx(1.0, abs=1e-12)
        assert abs(location[0] @ data["direction"]).item() > 0.99


def test_mssfg_global_optimum_is_ssfg(data, ssfg_runs):
    """(1/k) sum_i E_vMF(eps_i) is maximised by all eps_i at SSFG's location: here every
    component finds +-e2, so MSSFG matches SSFG, and it can never exceed it."""
    value, locations = mssfg(data["x"], data["y"], BETA, kappa=10.0, n_components=3,
                             n_projections=99, generator=gen(10), return_locations=True)
    assert locations.shape == (3, 4)
    assert (locations @ data["direction"]).abs().min().item() > 0.99
    mean, se = expectation(data["x"], data["y"], locations, 10.0)
    ssfg_mean, ssfg_se = ssfg_runs[10.0][2]
    assert abs(mean - ssfg_mean) < 5 * math.hypot(se, ssfg_se)
    assert abs(value.item() - mean) < 5 * se * math.sqrt(20_000 / 99)


def test_pssfg_matches_ssfg_at_equal_concentration(data, ssfg_runs):
    """PS(kappa') with the mean resultant length of vMF(10): kappa' = A (d-1) / (1 - A)."""
    a = vmf_mean_resultant_length(10.0, 4)
    kappa_ps = a * 3 / (1 - a)
    value, locations = pssfg(data["x"], data["y"], BETA, kappa=kappa_ps, n_projections=100,
                             generator=gen(11), return_locations=True)
    mean, _ = expectation(data["x"], data["y"], locations, kappa_ps, distribution="power")
    ssfg_mean = ssfg_runs[10.0][2][0]
    assert mean == pytest.approx(ssfg_mean, rel=0.03)
    assert data["sfg"] < mean < data["max"]


# ---------------------------------------------------------------- gradients


def test_gradient_is_that_of_the_final_evaluation_only(data, monkeypatch):
    """The value equals sliced_fgw at the last drawn directions, with the same gradients:
    nothing flows through the location search."""
    drawn = []
    original = spherical_module.slice_values

    def recording(x, y, directions, beta):
        drawn.append(directions)
        return original(x, y, directions, beta)

    monkeypatch.setattr(spherical_module, "slice_values", recording)
    x = data["x"].clone().requires_grad_(True)
    y = data["y"].clone().requires_grad_(True)
    value = ssfg(x, y, BETA, kappa=10.0, n_projections=10, n_iters=20, generator=gen(12))
    assert len(drawn) == 1  # the search itself runs in closed form
    value.backward()
    final = drawn[-1].detach()
    x2 = data["x"].clone().requires_grad_(True)
    y2 = data["y"].clone().requires_grad_(True)
    reference = sliced_fgw(x2, y2, BETA, projections=final)
    reference.backward()
    assert value.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(y.grad, y2.grad)
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


@pytest.mark.parametrize(("distribution", "k"), [("vmf", 1), ("power", 1), ("vmf", 2)])
def test_gradcheck_with_fixed_locations(distribution, k):
    x, y = stretched_clouds(n=8, d=3, seed=13)
    x.requires_grad_(True)
    y.requires_grad_(True)
    locations = uniform_directions(k, 3, generator=gen(14), dtype=F64)

    def value(a, b):
        # n_iters = 0 and a freshly seeded generator: a deterministic function of (x, y).
        return spherical_sliced_fgw(a, b, 0.3, kappa=5.0, n_projections=6, n_iters=0,
                                    n_components=k, distribution=distribution,
                                    generator=gen(15), init_locations=locations)

    assert torch.autograd.gradcheck(value, (x, y))


def test_gradcheck_max_sfg_at_fixed_direction():
    x, y = stretched_clouds(n=8, d=3, seed=16)
    x.requires_grad_(True)
    y.requires_grad_(True)
    start = uniform_directions(1, 3, generator=gen(17), dtype=F64)
    assert torch.autograd.gradcheck(
        lambda a, b: max_sliced_fgw(a, b, 0.3, n_iters=0, init_directions=start), (x, y))


def test_deterministic_and_works_under_no_grad(data):
    kwargs = {"kappa": 20.0, "n_projections": 10, "n_iters": 30, "return_locations": True}
    v1, l1 = ssfg(data["x"], data["y"], generator=gen(18), **kwargs)
    v2, l2 = ssfg(data["x"], data["y"], generator=gen(18), **kwargs)
    with torch.no_grad():
        v3, l3 = ssfg(data["x"], data["y"], generator=gen(18), **kwargs)
    assert v1.item() == v2.item() == v3.item()
    assert torch.equal(l1, l2) and torch.equal(l1, l3)
    with input_checks(False):
        v4 = ssfg(data["x"], data["y"], generator=gen(18), **kwargs)[0]
    assert v4.item() == v1.item()


def test_warm_start_from_found_locations(data, ssfg_runs):
    _, locations, (mean, se) = ssfg_runs[100.0]
    value = ssfg(data["x"], data["y"], BETA, kappa=100.0, n_projections=100, n_iters=0,
                 init_locations=locations[0], generator=gen(19))
    assert abs(value.item() - mean) < 5 * se * math.sqrt(20_000 / 100)


def test_float32():
    x, y = stretched_clouds(dtype=torch.float32)
    v32 = ssfg(x, y, kappa=100.0, n_projections=200, generator=gen(20))
    v64 = ssfg(x.double(), y.double(), kappa=100.0, n_projections=200, generator=gen(20))
    assert v32.dtype == torch.float32
    assert v32.item() == pytest.approx(v64.item(), rel=0.02)


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize("fn", [spherical_sliced_fgw, max_sliced_fgw])
def test_bad_data(fn):
    x, y = stretched_clouds(n=10, d=3)
    with pytest.raises(ValueError, match="d >= 2"):
        fn(x[:, :1], y[:, :1])
    with pytest.raises(ValueError, match="x and y"):
        fn(x, y[:9])
    with pytest.raises(ValueError, match="x and y"):
        fn(x, y[:, :2])
    bad = x.clone()
    bad[2, 1] = math.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        fn(bad, y)
    with pytest.raises(ValueError, match="y"):
        fn(x, y[0])
    with pytest.raises(TypeError, match="x"):
        fn(x.numpy(), y)
    with pytest.raises(TypeError, match="x"):
        fn(x.long(), y.long())
    with pytest.raises(TypeError, match="dtype"):
        fn(x, y.float())
    with pytest.raises(ValueError, match="beta"):
        fn(x, y, beta=1.5)
    with pytest.raises(ValueError, match="n_iters"):
        fn(x, y, n_iters=-1)
    with pytest.raises(ValueError, match="lr"):
        fn(x, y, lr=0.0)


def test_bad_spherical_arguments():
    x, y = stretched_clouds(n=10, d=3)
    cases = [
        ({"kappa": -1.0}, "kappa"),
        ({"kappa": math.nan}, "kappa"),
        ({"n_components": 0}, "n_components"),
        ({"n_projections": 0}, "n_projections"),
        ({"distribution": "gauss"}, "distribution"),
        ({"init_locations": torch.ones(2, 3, dtype=F64)}, "init_locations"),
        ({"init_locations": torch.zeros(3, dtype=F64)}, "init_locations"),
        ({"init_locations": torch.ones(1, 4, dtype=F64)}, "init_locations"),
    ]
    for kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            spherical_sliced_fgw(x, y, **kwargs)
    with pytest.raises(TypeError, match="n_components"):
        spherical_sliced_fgw(x, y, n_components=2.0)
    with pytest.raises(ValueError, match="n_starts"):
        max_sliced_fgw(x, y, n_starts=0)
    with pytest.raises(ValueError, match="init_directions"):
        max_sliced_fgw(x, y, init_directions=torch.ones(2, 4, dtype=F64))
