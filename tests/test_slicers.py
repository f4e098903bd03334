"""Stateful slicers: reproducibility, checkpointing, and the law of their directions."""

import math

import pytest
import torch

from otae.slicers import (
    MixtureVonMisesFisherSlicer,
    PowerSphericalSlicer,
    UniformSlicer,
    VonMisesFisherSlicer,
)
from otae.sphere import (
    power_spherical_mean_resultant_length,
    uniform_directions,
    vmf_mean_resultant_length,
)

LOC = torch.tensor([0.6, -0.8, 0.0, 0.0])
LOCS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, -2.0]])

FACTORIES = {
    "uniform": lambda **kw: UniformSlicer(4, **kw),
    "vmf": lambda **kw: VonMisesFisherSlicer(LOC, 20.0, **kw),
    "power": lambda **kw: PowerSphericalSlicer(LOC, 20.0, **kw),
    "mixture": lambda **kw: MixtureVonMisesFisherSlicer(LOCS, 20.0, **kw),
}


@pytest.fixture(params=sorted(FACTORIES))
def factory(request):
    return FACTORIES[request.param]


def test_same_seed_same_directions(factory):
    a, b, c = factory(seed=3), factory(seed=3), factory(seed=4)
    first = a.directions(7)
    assert torch.equal(first, b.directions(7))
    assert not torch.equal(first, c.directions(7))
    assert not torch.equal(first, a.directions(7))  # the generator advances


def test_state_dict_round_trip(factory):
    slicer = factory(seed=5)
    slicer.directions(9)
    state = slicer.state_dict()
    expected = slicer.directions(11)
    slicer.directions(3)
    slicer.load_state_dict(state)
    assert torch.equal(slicer.directions(11), expected)
    # Also into a fresh slicer seeded differently (what a resumed run does).
    fresh = factory(seed=99)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.directions(11), expected)


def test_state_dict_is_a_snapshot(factory):
    slicer = factory(seed=5)
    state = slicer.state_dict()
    expected = slicer.directions(4)
    slicer.directions(4)  # must not mutate the saved state
    slicer.load_state_dict(state)
    assert torch.equal(slicer.directions(4), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_unit_norm(factory, dtype):
    theta = factory(seed=0, dtype=dtype).directions(13)
    assert theta.shape == (4, 13) and theta.dtype == dtype and not theta.requires_grad
    torch.testing.assert_close(theta.norm(dim=0), torch.ones(13, dtype=dtype))


def test_given_generator_is_used_and_shared():
    g = torch.Generator().manual_seed(8)
    slicer = UniformSlicer(4, generator=g)
    assert slicer.generator is g
    theta = slicer.directions(5)
    expected = uniform_directions(5, 4, generator=torch.Generator().manual_seed(8)).T
    torch.testing.assert_close(theta, expected, rtol=0, atol=0)


def test_unseeded_slicers_differ():
    assert not torch.equal(UniformSlicer(4).directions(5), UniformSlicer(4).directions(5))


def test_uniform_slicer_law():
    theta = UniformSlicer(6, seed=1, dtype=torch.float64).directions(20_000)
    # Uniform on the sphere: mean 0, covariance I / d.
    assert theta.mean(1).norm().item() < 5 * math.sqrt(1 / 20_000)
    torch.testing.assert_close(theta @ theta.T / 20_000, torch.eye(6, dtype=torch.float64) / 6,
                               rtol=0, atol=0.01)


@pytest.mark.parametrize(("cls", "length"), [(VonMisesFisherSlicer, vmf_mean_resultant_length),
                                             (PowerSphericalSlicer, power_spherical_mean_resultant_length)])
def test_concentrated_slicer_mean(cls, length):
    n = 20_000
    slicer = cls(2 * LOC.double(), 20.0, seed=2, dtype=torch.float64)
    theta = slicer.directions(n)
    u = LOC.double()
    torch.testing.assert_close(slicer.loc, u)  # normalised
    w = u @ theta
    assert abs(w.mean().item() - length(20.0, 4)) < 5 * w.std().item() / math.sqrt(n)


def test_mixture_slicer_stratified():
    slicer = MixtureVonMisesFisherSlicer(LOCS, 1e4, seed=0)
    theta = slicer.directions(12)
    nearest = (slicer.locs @ theta).argmax(0)
    assert torch.bincount(nearest, minlength=3).tolist() == [4, 4, 4]
    torch.testing.assert_close(slicer.locs[2], torch.tensor([0.0, 0.0, 0.0, -1.0]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed and generator"):
        UniformSlicer(3, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="kappa"):
        VonMisesFisherSlicer(LOC, -1.0)
    with pytest.raises(ValueError, match="d >= 2"):
        PowerSphericalSlicer(torch.ones(1), 1.0)
    with pytest.raises(ValueError, match="loc"):
        VonMisesFisherSlicer(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="loc"):
        MixtureVonMisesFisherSlicer(LOC, 1.0)  # needs (k, d)
    with pytest.raises(ValueError, match="n_projections"):
        UniformSlicer(3, seed=0).directions(0)
    with pytest.raises(TypeError, match="dim"):
        UniformSlicer(3.0)
