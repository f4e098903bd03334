"""fgw_1d against brute force over permutations and against the O(N^2) formulation."""

import itertools
import math

import pytest
import torch

from otae.discrepancies import fgw_1d, fgw_1d_dense


def brute_force_fgw(x: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    """min over all N! permutations of the definition (RAE paper §3.2, eq. 12), in float64 Python."""
    xs, ys = x.double().tolist(), y.double().tolist()
    n = len(xs)
    best = math.inf
    for perm in itertools.permutations(range(n)):
        yp = [ys[p] for p in perm]
        w = sum((a - b) ** 2 for a, b in zip(xs, yp, strict=True)) / n
        gw = sum(
            ((xs[i] - xs[j]) ** 2 - (yp[i] - yp[j]) ** 2) ** 2 for i in range(n) for j in range(n)
        ) / n**2
        best = min(best, (1 - beta) * w + beta * gw)
    return best


def random_pair(n, generator, dtype=torch.float64):
    """Samples with varied shapes: skewed, offset, and heavy-ish tails."""
    kind = int(torch.randint(3, (1,), generator=generator))
    x = torch.randn(n, generator=generator, dtype=dtype) * 2
    y = torch.randn(n, generator=generator, dtype=dtype)
    if kind == 1:
        y = y**3 + 1.5
    elif kind == 2:
        x = x.exp()
    return x, y


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_brute_force_over_permutations(n, dtype):
    g = torch.Generator().manual_seed(1000 + n)
    cases = 12 if n < 7 else 4  # 7! = 5040 permutations per case in pure Python
    for _ in range(cases):
        x, y = random_pair(n, g, dtype)
        beta = float(torch.rand(1, generator=g))
        for b in (beta, 0.0, 1.0):
            value = fgw_1d(x, y, b)
            assert value.dtype == dtype
            expected = brute_force_fgw(x, y, b)
            tol = 1e-11 if dtype == torch.float64 else 2e-5
            assert value.item() == pytest.approx(expected, rel=tol, abs=tol)


def test_columns_are_independent_problems():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    values = fgw_1d(x, y, 0.3)
    assert values.shape == (5,)
    for col in range(5):
        assert values[col].item() == pytest.approx(brute_force_fgw(x[:, col], y[:, col], 0.3), rel=1e-12)


@pytest.mark.parametrize("n", [10, 257, 2000])
def test_linear_form_equals_quadratic_form_float64(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64) * 5 + 2
    y = torch.randn(n, 3, generator=g, dtype=torch.float64).pow(3)
    for beta in (0.0, 0.1, 0.5, 1.0):
        fast = fgw_1d(x, y, beta)
        dense = fgw_1d_dense(x, y, beta)
        torch.testing.assert_close(fast, dense, rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("offset,spread", [(0.0, 1.0), (1e3, 1.0), (1e4, 50.0), (-3e3, 1e3)])
def test_float32_accurate_with_large_offsets_and_spreads(offset, spread):
    n = 2000
    g = torch.Generator().manual_seed(7)
    x64 = torch.randn(n, 4, generator=g, dtype=torch.float64) * spread + offset
    y64 = torch.randn(n, 4, generator=g, dtype=torch.float64) * spread * 1.3 + offset + spread
    for beta in (0.1, 0.9):
        reference = fgw_1d_dense(x64, y64, beta)
        value32 = fgw_1d(x64.float(), y64.float(), beta)
        torch.testing.assert_close(value32.double(), reference, rtol=1e-4, atol=0.0)


def test_near_identical_samples_small_value_float32():
    """Cancellation check: nearly equal samples give a tiny, non-negative value."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1000, generator=g, dtype=torch.float64) * 10 + 100
    y = x + 1e-3 * torch.randn(1000, generator=g, dtype=torch.float64)
    reference = fgw_1d(x, y, 0.5).item()
    value = fgw_1d(x.float(), y.float(), 0.5).item()
    assert value >= 0.0
    assert value == pytest.approx(reference, rel=0.05, abs=1e-6)


def test_identical_inputs_give_zero_and_translation_only_moves_w_part():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(50, generator=g, dtype=torch.float64)
    assert fgw_1d(x, x, 0.4).item() == pytest.approx(0.0, abs=1e-12)
    # GW part is translation invariant: beta = 1 ignores shifts of y.
    assert fgw_1d(x, x + 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-10)
    # W part of a pure shift: (x_i - x_i - 3)^2 = 9 at the identity matching.
    assert fgw_1d(x, x + 3.0, 0.0).item() == pytest.approx(9.0, rel=1e-12)


def test_anti_identity_is_found_for_mirrored_samples():
    """y = -x: with beta = 1 the anti-identity matching makes the GW part vanish."""
    x = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)
    assert fgw_1d(x, -x, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    assert fgw_1d_dense(x, -x, 1.0).item() == pytest.approx(0.0, abs=1e-12)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: fgw_1d(a, b, 0.3), (x, y))
    assert torch.autograd.gradcheck(lambda a, b: fgw_1d_dense(a, b, 0.3), (x, y))


def test_gradient_matches_dense_formulation():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.randn(300, 2, generator=g, dtype=torch.float64) * 2).requires_grad_()
    grads_fast = torch.autograd.grad(fgw_1d(x, y, 0.2).sum(), (x, y))
    grads_dense = torch.autograd.grad(fgw_1d_dense(x, y, 0.2).sum(), (x, y))
    for a, b in zip(grads_fast, grads_dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)


def test_chunked_cpu_passes_equal_the_single_chunk_pass(monkeypatch):
    """The CPU forward and backward walk the rows in chunks of ``_CHUNK_ELEMENTS // N``;
    the default is so large that the other tests run one chunk. With 16 elements a chunk
    holds 2 of 11 rows: 6 chunks, the last one short. Values and gradients must equal the
    one-chunk pass and the dense autograd reference, and gradcheck must hold."""
    import otae.discrepancies.one_dimensional as od

    g = torch.Generator().manual_seed(21)
    # mixed matchings: half the columns mirrored, so the anti-identity flag varies by row
    x = torch.randn(8, 11, generator=g, dtype=torch.float64)
    y = torch.randn(8, 11, generator=g, dtype=torch.float64) * 1.5
    y[:, ::2] = -x[:, ::2] * 1.3 + 0.05 * y[:, ::2]
    x.requires_grad_(True)
    y.requires_grad_(True)
    weights = torch.randn(11, generator=g, dtype=torch.float64)

    def value_and_grads(fn):
        value = fn(x, y, 0.4)
        return (value.detach(), *torch.autograd.grad((value * weights).sum(), (x, y)))

    one_chunk = value_and_grads(fgw_1d)
    dense = value_and_grads(fgw_1d_dense)
    monkeypatch.setattr(od, "_CHUNK_ELEMENTS", 16)
    assert len(od._row_chunks(11, 8, x.device)) == 6
    chunked = value_and_grads(fgw_1d)
    for a, b, c in zip(chunked, one_chunk, dense, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: fgw_1d(a, b, 0.4), (x, y))


@pytest.mark.parametrize(
    "x,y,beta,error,match",
    [
        (torch.zeros(5), torch.zeros(5, 1), 0.1, ValueError, "same shape"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2), 0.1, ValueError, "x contains NaN"),
        (torch.zeros(3), torch.tensor([1.0, float("inf"), 0.0]), 0.1, ValueError, "y contains NaN"),
        (torch.zeros(0), torch.zeros(0), 0.1, ValueError, "x is empty"),
        (torch.zeros(1), torch.zeros(1), 0.1, ValueError, "x needs at least 2"),
        (torch.zeros(2, 2, 2), torch.zeros(2, 2, 2), 0.1, ValueError, "x must be 1-D or 2-D"),
        (torch.zeros(3), torch.zeros(3), 1.5, ValueError, "beta must lie in"),
        (torch.zeros(3), torch.zeros(3), -0.1, ValueError, "beta must lie in"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3), 0.1, TypeError, "x must be a floating"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.float64), 0.1, TypeError, "same dtype"),
        ([0.0, 1.0], torch.zeros(2), 0.1, TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_errors(x, y, beta, error, match):
    with pytest.raises(error, match=match):
        fgw_1d(x, y, beta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_follows_input_dtype(dtype):
    """Both formulations return the input's dtype AND, per column, the brute-force minimum
    over all 6! matchings of the (possibly float32-rounded) inputs, in float64, to that
    dtype's accuracy. The last column mirrors a skewed sample: at beta = 0.9 its minimum
    is the anti-identity matching."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(6, 3, generator=g, dtype=dtype)
    y = torch.randn(6, 3, generator=g, dtype=dtype) * 2 + 0.5
    x[:, 2] = x[:, 2].exp()
    y[:, 2] = -x[:, 2]
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    for beta in (0.1, 0.9):
        expected = [brute_force_fgw(x[:, col], y[:, col], beta) for col in range(3)]
        for fn in (fgw_1d, fgw_1d_dense):
            value = fn(x, y, beta)
            assert value.dtype == dtype and value.shape == (3,)
            assert value.tolist() == pytest.approx(expected, rel=tol, abs=tol), (fn.__name__, beta)


@pytest.mark.slow
def test_brute_force_n8_slow():
    """8! = 40320 permutations per case in pure Python."""
    g = torch.Generator().manual_seed(8)
    for _ in range(3):
        x, y = random_pair(8, g)
        beta = float(torch.rand(1, generator=g))
        assert fgw_1d(x, y, beta).item() == pytest.approx(brute_force_fgw(x, y, beta), rel=1e-11)


@pytest.mark.slow
def test_float32_large_n_matches_float64_slow():
    """N = 2e5 with an offset: float32 within 1e-4 of the float64 value (validated above)."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * 30 + 500
    y = torch.randn(200_000, 3, generator=g, dtype=torch.float64).pow(3) + 480
    for beta in (0.1, 0.9):
        torch.testing.assert_close(fgw_1d(x.float(), y.float(), beta).double(), fgw_1d(x, y, beta),
                                   rtol=1e-4, atol=0.0)
