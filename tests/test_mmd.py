"""MMD (WAE regulariser): values against a direct double loop, unbiasedness, gradients, checks."""

from __future__ import annotations

import math

import pytest
import torch

from otae.discrepancies.mmd import WAE_SCALES, mmd, squared_distances

from .helpers import point_clouds


def _kernel(a: torch.Tensor, b: torch.Tensor, kernel: str, cs: list[float]) -> float:
    sq = float(((a - b) ** 2).sum())
    if kernel == "imq":
        return sum(c / (c + sq) for c in cs)
    return sum(math.exp(-sq / c) for c in cs)


def _mmd_loop(x, y, kernel="imq", sigma2=1.0, scales=(1.0,)) -> float:
    """The estimator written out term by term, in Python floats."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    cs = [2.0 * d * sigma2 * s for s in scales]
    xx = sum(_kernel(x[i], x[j], kernel, cs) for i in range(n) for j in range(n) if i != j)
    yy = sum(_kernel(y[i], y[j], kernel, cs) for i in range(m) for j in range(m) if i != j)
    xy = sum(_kernel(x[i], y[j], kernel, cs) for i in range(n) for j in range(m))
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def _clouds(n=6, m=9, d=3, shift=0.7, seed=0, dtype=torch.float64):
    return point_clouds(n, m, d, seed=seed, scale=1.5, shift=shift, dtype=dtype)


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
@pytest.mark.parametrize(
    "scale, scales", [(None, (1.0,)), (0.5, (1.0,)), (2.0, (0.3, 3.0)), (None, WAE_SCALES)]
)
def test_matches_double_loop(kernel, scale, scales):
    x, y = _clouds()
    got = mmd(x, y, kernel=kernel, scale=scale, scales=scales)
    want = _mmd_loop(x, y, kernel, 1.0 if scale is None else scale, scales)
    assert float(got) == pytest.approx(want, rel=1e-12, abs=1e-14)
    # Symmetric in its two arguments.
    assert float(mmd(y, x, kernel=kernel, scale=scale, scales=scales)) == pytest.approx(
        want, rel=1e-12, abs=1e-14
    )


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
def test_identical_samples_exact_value_not_zero(kernel):
    # The U-statistic drops the diagonals k(x_i, x_i) = 1 from the within-set terms
    # but the cross term keeps them, so mmd(x, x) is negative, not 0.
    x, _ = _clouds(n=5)
    got = float(mmd(x, x, kernel=kernel))
    want = _mmd_loop(x, x, kernel)
    assert got == pytest.approx(want, rel=1e-12)
    # Closed form for y = x: 2/(N(N-1)) S - 2/N^2 (S + N) with S the off-diagonal sum.
    n = x.shape[0]
    s = sum(_kernel(x[i], x[j], kernel, [2.0 * x.shape[1]])
            for i in range(n) for j in range(n) if i != j)
    assert got == pytest.approx(2 * s / (n * (n - 1)) - 2 * (s + n) / n**2, rel=1e-12)
    assert got < 0.0


def test_far_from_origin_accuracy():
    # Gram-matrix distances are computed on centred copies: a large common offset
    # must not destroy float32 accuracy.
    x, y = _clouds(dtype=torch.float64)
    ref = mmd(x, y)
    off = torch.full((1, 3), 1e3, dtype=torch.float64)
    got32 = mmd((x + off).float(), (y + off).float())
    assert got32.dtype == torch.float32
    assert float(got32) == pytest.approx(float(ref), rel=1e-3, abs=1e-5)
    sq = squared_distances(x + off, y + off)
    assert torch.allclose(sq, torch.cdist(x, y) ** 2, rtol=1e-9, atol=1e-9)


def _v_statistic(x, y):
    """The biased (V-statistic) estimate with diagonals kept, via torch.cdist."""
    c = 2.0 * x.shape[1]

    def k(a, b):
        return c / (c + torch.cdist(a, b) ** 2)

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def test_unbiased_in_expectation():
    # Same law for both samples: the mean over many independent replicates is ~0
    # (within 4 standard errors), while the biased V-statistic is clearly positive.
    g = torch.Generator().manual_seed(1)
    reps, n, d = 400, 12, 2
    vals, biased = [], []
    for _ in range(reps):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = torch.randn(n, d, generator=g, dtype=torch.float64)
        vals.append(float(mmd(x, y)))
        biased.append(_v_statistic(x, y))
    t = torch.tensor(vals)
    assert abs(float(t.mean())) < 4.0 * float(t.std()) / math.sqrt(reps)
    tb = torch.tensor(biased)
    assert float(tb.mean()) > 10.0 * float(tb.std()) / math.sqrt(reps)


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
def test_gradcheck(kernel):
    x, y = _clouds(n=4, m=5, d=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: mmd(a, b, kernel=kernel, scales=(0.5, 2.0)), (x, y)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_input(dtype):
    x, y = _clouds(dtype=dtype)
    out = mmd(x, y, kernel="gaussian")
    assert out.dtype == dtype and out.device == x.device and out.ndim == 0
    ref = _mmd_loop(x.double(), y.double(), "gaussian")
    assert float(out) == pytest.approx(ref, rel=1e-4 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize(
    "x, y, kwargs, exc, match",
    [
        (torch.randn(5, 3), torch.randn(5, 2), {}, ValueError, "x and y"),
        (torch.randn(5, 3), torch.randn(5, 3, dtype=torch.float64), {}, TypeError, "dtype"),
        (torch.randn(5), torch.randn(5, 1), {}, ValueError, "x must be 2-D"),
        (torch.randn(5, 3), torch.empty(0, 3), {}, ValueError, "y is empty"),
        (torch.randn(1, 3), torch.randn(5, 3), {}, ValueError, "x needs at least 2"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.randn(3, 2), {}, ValueError,
         "x contains NaN"),
        (torch.randn(3, 2), torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), {}, ValueError,
         "y contains NaN or Inf"),
        (torch.randint(0, 3, (4, 2)), torch.randn(4, 2), {}, TypeError, "x must be a floating"),
        ([[0.0, 1.0]], torch.randn(4, 2), {}, TypeError, "x must be a torch.Tensor"),
        (torch.randn(4, 2), torch.randn(4, 2), {"kernel": "rbf"}, ValueError, "kernel"),
        (torch.randn(4, 2), torch.randn(4, 2), {"scale": 0.0}, ValueError, "scale"),
        (torch.randn(4, 2), torch.randn(4, 2), {"scales": (1.0, -2.0)}, ValueError, "scales"),
        (torch.randn(4, 2), torch.randn(4, 2), {"scales": ()}, ValueError, "scales"),
    ],
)
def test_bad_input(x, y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        mmd(x, y, **kwargs)
