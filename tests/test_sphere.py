"""Samplers on the sphere against independent references (scipy, mpmath, power_spherical).

Monte Carlo tolerances are derived from the sample size (5 standard errors); every
test uses fixed generator seeds, so a pass is deterministic.
"""

import math

import mpmath
import numpy as np
import pytest
import torch
from power_spherical import PowerSpherical
from scipy import stats

from otae.sphere import (
    householder_from_e1,
    power_spherical_mean_resultant_length,
    sample_beta,
    sample_power_spherical,
    sample_spherical_mixture,
    sample_von_mises_fisher,
    uniform_directions,
    vmf_mean_resultant_length,
)

from .helpers import gen

F64 = torch.float64


def unit(d, seed, dtype=F64):
    v = torch.randn(d, generator=gen(seed), dtype=dtype)
    if v[0].abs() < 0.1:  # keep clear of the sign switch of the reflection
        v[0] = 0.5
    return v / v.norm()


def angles(samples, loc):
    """Angle between each sample and loc, accurate near 0 (atan2, not arccos)."""
    samples, loc = samples.double(), loc.double()
    w = samples @ loc
    tangent = (samples - w.unsqueeze(-1) * loc).norm(dim=-1)
    return torch.atan2(tangent, w)


def radial_cdf(kappa, d, distribution):
    """CDF of the angle phi = arccos(loc . theta), by integrating its density on a fine grid.

    vMF: exp(kappa cos phi) sin^(d-2) phi; power spherical: (1 + cos phi)^kappa sin^(d-2) phi.
    """
    phi = np.linspace(0.0, np.pi, 400_001)
    with np.errstate(divide="ignore"):
        log_sin = (d - 2) * np.log(np.sin(phi)) if d > 2 else np.zeros_like(phi)
        radial = kappa * np.cos(phi) if distribution == "vmf" else kappa * np.log1p(np.cos(phi))
    log_density = radial + log_sin
    density = np.exp(log_density - np.max(log_density[np.isfinite(log_density)]))
    cdf = np.concatenate(([0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(phi))))
    cdf /= cdf[-1]
    return lambda p: np.interp(p, phi, cdf)


# ------------------------------------------------------------------ Beta


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (2.0, 5.0), (30.0, 3.5), (1000.0, 31.5)])
def test_sample_beta_matches_scipy(a, b):
    n = 20_000
    z = sample_beta(a, b, n, generator=gen(0), dtype=F64).numpy()
    assert stats.kstest(z, stats.beta(a, b).cdf).pvalue > 1e-3
    se = stats.beta(a, b).std() / math.sqrt(n)
    assert abs(z.mean() - stats.beta(a, b).mean()) < 5 * se


def test_sample_beta_deterministic_and_shaped():
    first = sample_beta(2.0, 3.0, (4, 5), generator=gen(7))
    again = sample_beta(2.0, 3.0, (4, 5), generator=gen(7))
    other = sample_beta(2.0, 3.0, (4, 5), generator=gen(8))
    assert first.shape == (4, 5) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert ((first > 0) & (first < 1)).all()


def test_sample_beta_tensor_parameters():
    a = torch.tensor([1.0, 50.0], dtype=F64)
    z = sample_beta(a, 2.0, (20_000, 2), generator=gen(1), dtype=F64)
    expected = (a / (a + 2.0)).numpy()
    np.testing.assert_allclose(z.mean(0).numpy(), expected, atol=0.01)


@pytest.mark.parametrize(("a", "b", "name"), [(0.0, 1.0, "a"), (1.0, -2.0, "b"), (math.nan, 1.0, "a")])
def test_sample_beta_rejects_bad_parameters(a, b, name):
    with pytest.raises(ValueError, match=name):
        sample_beta(a, b, 3)


# -------------------------------------------------------------- mean lengths


@pytest.mark.parametrize(("kappa", "d"), [(0.5, 3), (10.0, 8), (1000.0, 64), (1.0, 2000), (7.0, 2)])
def test_vmf_mean_resultant_length_against_mpmath(kappa, d):
    # d = 2000, kappa = 1: scipy's ive underflows, the continued fraction takes over.
    expected = float(mpmath.besseli(d / 2, kappa) / mpmath.besseli(d / 2 - 1, kappa))
    assert vmf_mean_resultant_length(kappa, d) == pytest.approx(expected, rel=1e-10)
    assert vmf_mean_resultant_length(0.0, d) == 0.0


@pytest.mark.parametrize(("kappa", "d"), [(0.5, 3), (10.0, 8), (300.0, 64)])
def test_power_spherical_mean_length_matches_package(kappa, d):
    loc = torch.zeros(d, dtype=F64)
    loc[0] = 1.0
    mean = PowerSpherical(loc, torch.tensor(kappa, dtype=F64)).mean
    assert power_spherical_mean_resultant_length(kappa, d) == pytest.approx(mean[0].item(), rel=1e-12)


# ---------------------------------------------------------------- vMF


@pytest.mark.parametrize("d", [3, 8, 64])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 100.0, 1000.0])
def test_vmf_mean_resultant_length_and_direction(d, kappa):
    n = 20_000
    loc = unit(d, seed=d)
    s = sample_von_mises_fisher(loc, kappa, n, generator=gen(int(kappa) + d))
    assert s.shape == (n, d) and s.dtype == F64
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-12)
    w = s @ loc
    a = vmf_mean_resultant_length(kappa, d)
    assert abs(w.mean().item() - a) < 5 * w.std().item() / math.sqrt(n)
    # The whole mean vector is A loc: the tangent part averages out.
    spread = math.sqrt(s.var(0).sum().item() / n)
    assert (s.mean(0) - a * loc).norm().item() < 5 * spread


@pytest.mark.parametrize(("d", "kappa"), [(2, 5.0), (3, 10.0), (8, 100.0), (64, 0.5), (64, 1000.0)])
def test_vmf_angle_law_ks(d, kappa):
    """Full law of the angle to loc, not only its mean (KS against the integrated density)."""
    loc = unit(d, seed=3)
    phi = angles(sample_von_mises_fisher(loc, kappa, 20_000, generator=gen(5)), loc)
    assert stats.kstest(phi.numpy(), radial_cdf(kappa, d, "vmf")).pvalue > 1e-3


def test_vmf_kappa_zero_is_uniform():
    d, n = 5, 20_000
    s = sample_von_mises_fisher(unit(d, 1), 0.0, n, generator=gen(2))
    # The first coordinate of a uniform point: (1 + t) / 2 ~ Beta((d-1)/2, (d-1)/2).
    half = (d - 1) / 2
    assert stats.kstest(((1 + s[:, 0]) / 2).numpy(), stats.beta(half, half).cdf).pvalue > 1e-3
    assert s.mean(0).norm().item() < 5 * math.sqrt(1 / n)


@pytest.mark.parametrize("d", [3, 64])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_vmf_large_kappa_is_stable_and_accurate(d, dtype):
    """kappa = 1e6: 1 - w ~ 1e-6, below float32 resolution of w; the spread must survive."""
    kappa, n = 1e6, 20_000
    loc = unit(d, 4, dtype=dtype)
    s = sample_von_mises_fisher(loc, kappa, n, generator=gen(6))
    assert torch.isfinite(s).all() and s.dtype == dtype
    # For large kappa, 1 - cos(phi) ~ phi^2 / 2 and E[1 - w] = 1 - A(kappa).
    phi2 = angles(s, loc).square()
    expected = 2 * (1 - vmf_mean_resultant_length(kappa, d))
    se = phi2.std().item() / math.sqrt(n)
    assert abs(phi2.mean().item() - expected) < 5 * se + 1e-3 * expected
    # kappa = 1e12: b of Wood's sampler is 1e-12; computed as the textbook difference
    # (-2 kappa + sqrt(4 kappa^2 + (d-1)^2)) / (d-1) it rounds to 0 and every sample is loc.
    # The tangent part is N(0, I / kappa) in d - 1 dimensions: E[phi^2] = (d - 1) / kappa
    # up to O(1 / kappa^2), and phi^2 kappa ~ chi^2_{d-1} (standard error from that).
    kappa, n = 1e12, 2000
    huge = sample_von_mises_fisher(loc, kappa, n, generator=gen(6))
    assert huge.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert (huge.double().norm(dim=-1) - 1).abs().max().item() < tol
    phi2 = angles(huge, loc).square()
    expected = (d - 1) / kappa
    assert abs(phi2.mean().item() - expected) < 5 * math.sqrt(2 * (d - 1) / n) / kappa
    assert phi2.max().item() < 100 * expected


def test_vmf_several_locations_and_determinism():
    locs = torch.stack([unit(4, 1), unit(4, 2), -unit(4, 1)])
    s = sample_von_mises_fisher(locs, 50.0, 3000, generator=gen(9))
    assert s.shape == (3, 3000, 4)
    a = vmf_mean_resultant_length(50.0, 4)
    torch.testing.assert_close(s.mean(1), a * locs, rtol=0, atol=0.02)
    again = sample_von_mises_fisher(locs, 50.0, 3000, generator=gen(9))
    assert torch.equal(s, again)


@pytest.mark.parametrize("distribution", ["vmf", "power"])
def test_gradient_wrt_loc_is_the_gradient_of_the_mean(distribution):
    """Reparameterised: d/dloc mean(c . theta) -> A (I - u u^T) c / |loc|, u = loc / |loc|."""
    d, kappa, n = 5, 10.0, 100_000
    loc = (2.0 * unit(d, 11)).requires_grad_(True)
    c = torch.randn(d, generator=gen(12), dtype=F64)
    sampler = sample_von_mises_fisher if distribution == "vmf" else sample_power_spherical
    (sampler(loc, kappa, n, generator=gen(13)) @ c).mean().backward()
    a = (vmf_mean_resultant_length if distribution == "vmf" else power_spherical_mean_resultant_length)(kappa, d)
    u = loc.detach() / loc.detach().norm()
    expected = a * (c - (c @ u) * u) / loc.detach().norm()
    # Each per-sample gradient is bounded by 2 |c| / |loc|.
    tol = 5 * 2 * c.norm().item() / 2.0 / math.sqrt(n)
    assert (loc.grad - expected).norm().item() < tol


# ----------------------------------------------------------- reflection


@pytest.mark.parametrize("seed", [0, 1])
def test_householder_gradcheck(seed):
    d = 5
    base = uniform_directions(4, d, generator=gen(seed), dtype=F64)
    for sign in (1.0, -1.0):  # both branches of the reflection
        loc = unit(d, 20 + seed) * 1.7
        loc[0] = sign * loc[0].abs()
        loc.requires_grad_(True)
        base_ = base.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(householder_from_e1, (base_, loc))


@pytest.mark.parametrize("loc_kind", ["random", "e1", "minus_e1", "first_zero"])
def test_householder_maps_e1_to_loc_and_keeps_radial_part(loc_kind):
    d = 6
    loc = {
        "random": unit(d, 30) * 3.0,
        "e1": torch.eye(d, dtype=F64)[0],
        "minus_e1": -torch.eye(d, dtype=F64)[0],
        "first_zero": torch.cat((torch.zeros(1, dtype=F64), unit(d - 1, 31))),
    }[loc_kind]
    u = loc / loc.norm()
    torch.testing.assert_close(householder_from_e1(torch.eye(d, dtype=F64)[0], loc), u)
    x = uniform_directions(50, d, generator=gen(3), dtype=F64)
    out = householder_from_e1(x, loc)
    torch.testing.assert_close(out @ u, x[:, 0])  # the radial coordinate is kept
    torch.testing.assert_close(out @ out.T, x @ x.T)  # orthogonal map


# ------------------------------------------------------------ power spherical


@pytest.mark.parametrize("d", [3, 8, 64])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 100.0])
def test_power_spherical_mean_and_radial_law(d, kappa):
    n = 20_000
    loc = unit(d, 40 + d)
    s = sample_power_spherical(loc, kappa, n, generator=gen(int(kappa)))
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-12)
    w = s @ loc
    package_mean = PowerSpherical(loc, torch.tensor(kappa, dtype=F64)).mean
    spread = math.sqrt(s.var(0).sum().item() / n)
    assert (s.mean(0) - package_mean).norm().item() < 5 * spread
    assert abs(w.mean().item() - power_spherical_mean_resultant_length(kappa, d)) < 5 * w.std().item() / math.sqrt(n)
    # (1 + w) / 2 ~ Beta((d-1)/2 + kappa, (d-1)/2) exactly.
    law = stats.beta((d - 1) / 2 + kappa, (d - 1) / 2)
    assert stats.kstest(((1 + w) / 2).numpy(), law.cdf).pvalue > 1e-3


def test_power_spherical_angle_law_ks():
    """Independent of the Beta construction: KS against the integrated density (1 + cos)^kappa."""
    d, kappa = 8, 40.0
    loc = unit(d, 50)
    phi = angles(sample_power_spherical(loc, kappa, 20_000, generator=gen(51)), loc)
    assert stats.kstest(phi.numpy(), radial_cdf(kappa, d, "power")).pvalue > 1e-3


# ------------------------------------------------------------------ mixture


@pytest.mark.parametrize("distribution", ["vmf", "power"])
def test_mixture_is_stratified(distribution):
    locs = torch.eye(4, dtype=F64)[:3]
    extra_counts = torch.zeros(3)
    for seed in range(30):
        s = sample_spherical_mixture(locs, 1e4, 11, distribution=distribution, generator=gen(seed))
        nearest = (s @ locs.T).argmax(-1)
        counts = torch.bincount(nearest, minlength=3)
        assert sorted(counts.tolist()) == [3, 4, 4]
        assert (nearest.diff() >= 0).all()  # grouped by component, in component order
        extra_counts += counts - 3
    # The two extra draws go to components chosen at random, each about 2/3 of the time.
    assert (extra_counts > 10).all()


def test_mixture_mean_is_average_of_component_means():
    locs = torch.stack([unit(5, 60), unit(5, 61)])
    n = 20_000
    s = sample_spherical_mixture(locs, 8.0, n, generator=gen(62))
    expected = vmf_mean_resultant_length(8.0, 5) * locs.mean(0)
    spread = math.sqrt(s.var(0).sum().item() / n)
    assert (s.mean(0) - expected).norm().item() < 5 * spread


def test_mixture_gradient_reaches_every_location():
    locs = torch.stack([unit(4, 70), unit(4, 71), unit(4, 72)]).requires_grad_(True)
    sample_spherical_mixture(locs, 5.0, 30, generator=gen(0)).sum().backward()
    assert (locs.grad.norm(dim=-1) > 0).all()


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("sampler", [sample_von_mises_fisher, sample_power_spherical])
def test_bad_input(sampler):
    loc = unit(3, 0)
    with pytest.raises(ValueError, match="kappa"):
        sampler(loc, -1.0, 5)
    with pytest.raises(ValueError, match="kappa"):
        sampler(loc, math.inf, 5)
    with pytest.raises(ValueError, match="d >= 2"):
        sampler(torch.ones(1), 1.0, 5)
    with pytest.raises(ValueError, match="loc"):
        sampler(torch.zeros(3), 1.0, 5)
    with pytest.raises(ValueError, match="loc"):
        sampler(torch.ones(2, 2, 3), 1.0, 5)
    with pytest.raises(TypeError, match="loc"):
        sampler([1.0, 0.0], 1.0, 5)
    with pytest.raises(ValueError, match="n"):
        sampler(loc, 1.0, -1)
    with pytest.raises(ValueError, match="distribution"):
        sample_spherical_mixture(loc.unsqueeze(0), 1.0, 5, distribution="gauss")
