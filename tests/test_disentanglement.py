"""Disentanglement metrics: known answers, brute-force MI, hand-made importance matrices."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from sklearn.metrics import mutual_info_score

from otae.data.factors import shapes_grid
from otae.evaluation.disentanglement import (
    correlation_ratio,
    dci,
    dci_scores,
    discrete_mutual_information,
    discretise,
    factorvae_score,
    mutual_information_gap,
    posterior_mutual_information,
    posterior_mutual_information_gap,
)

N = 1000


@pytest.fixture(scope="module")
def factors():
    """1000 rows of the shapes factor grid (3 x 4 x 8 x 8 x 8), fixed draw."""
    grid = shapes_grid()
    return grid[np.random.default_rng(0).choice(len(grid), N, replace=False)]


def standardised(f):
    return (f - f.mean(axis=0)) / f.std(axis=0)


def permuted_copy(f, rng):
    """Each code dimension a rescaled copy of one factor (permuted), plus tiny noise."""
    z = standardised(f)[:, [3, 0, 4, 1, 2]] * np.array([2.0, -0.5, 3.0, 1.0, 0.1])
    return z + 1e-3 * rng.standard_normal(z.shape)


def rotated(f, rng):
    """A random rotation of the standardised factors: every dimension mixes all factors."""
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    return standardised(f) @ q


def brute_force_mi(a, b):
    """I(a; b) in nats by the definition, one joint cell at a time."""
    n = len(a)
    total = 0.0
    for va in set(a.tolist()):
        for vb in set(b.tolist()):
            joint = np.sum((a == va) & (b == vb)) / n
            if joint > 0:
                total += joint * math.log(joint / (np.mean(a == va) * np.mean(b == vb)))
    return total


def test_mutual_information_equals_the_definition_and_sklearn():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(300, 3))
    y = np.stack([x[:, 0], (x[:, 1] + rng.integers(0, 2, 300)) % 4, rng.integers(0, 3, 300)], 1)
    mi = discrete_mutual_information(x, y)
    assert mi.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            assert mi[i, j] == pytest.approx(brute_force_mi(x[:, i], y[:, j]), abs=1e-12)
            assert mi[i, j] == pytest.approx(mutual_info_score(x[:, i], y[:, j]), abs=1e-12)
    # I(x; x) = H(x)
    assert mi[0, 0] == pytest.approx(scipy_entropy(np.bincount(x[:, 0])), abs=1e-12)


def test_discretise_matches_numpy_histogram_bins():
    rng = np.random.default_rng(2)
    codes = rng.standard_normal((500, 4)) * [1, 10, 0.1, 3]
    codes[:, 3] = 7.0  # constant: one bin
    bins = discretise(codes, n_bins=20)
    for d in range(3):
        edges = np.histogram_bin_edges(codes[:, d], bins=20)
        np.testing.assert_array_equal(bins[:, d], np.digitize(codes[:, d], edges[:-1]) - 1)
    assert (bins[:, 3] == 0).all() and bins.min() == 0 and bins.max() == 19
    # MIG's MI matrix is the MI of those bins, checked against sklearn
    f = rng.integers(0, 3, size=(500, 2))
    out = mutual_information_gap(codes, f, n_bins=20)
    for d in range(4):
        for k in range(2):
            expected = mutual_info_score(bins[:, d], f[:, k])
            assert out["mutual_information"][d, k] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(
        out["factor_entropy"], [scipy_entropy(np.bincount(f[:, k])) for k in range(2)]
    )


def test_mig_closed_form_cases():
    f = np.repeat(np.arange(4), 25)  # uniform over 4 values
    # the factor itself (each value in its own bin) and a constant: gap = H(f) -> MIG 1
    codes = np.stack([f.astype(float), np.zeros(100)], 1)
    out = mutual_information_gap(codes, f, n_bins=4)
    assert out["mig"] == pytest.approx(1.0, abs=1e-12)
    assert out["mutual_information"][:, 0] == pytest.approx([math.log(4), 0.0], abs=1e-12)
    # two copies of the factor: the top two MIs tie, no gap -> MIG 0
    out = mutual_information_gap(np.stack([f, -2.0 * f], 1), f, n_bins=4)
    assert out["mig"] == pytest.approx(0.0, abs=1e-12)
    # half the information: a code that tells {0,1} from {2,3} has MI log 2 = H(f) / 2
    out = mutual_information_gap(np.stack([f // 2, np.zeros(100)], 1).astype(float), f, n_bins=2)
    assert out["mig"] == pytest.approx(0.5, abs=1e-12)


def test_correlation_ratio_closed_form_on_the_full_grid():
    """On a full factorial grid the factors are independent and balanced, so for
    z = a f_k + b g(f_l) the variance splits exactly: eta^2_k = a^2 Var f_k / Var z."""
    grid = shapes_grid()  # all 6144 rows: 3 x 4 x 8 x 8 x 8
    var = grid.var(axis=0)
    square = (grid[:, 2] - 3.5) ** 2  # a nonlinear function of the orientation
    codes = np.stack([
        2.0 * grid[:, 3] - 0.5 * square,  # x and a nonlinear orientation term
        grid[:, 0].astype(float),  # the shape alone
        np.full(len(grid), 3.0),  # constant: 0, not NaN
        grid[:, 1] * grid[:, 4],  # an interaction: the column sums to less than 1
    ], axis=1)  # fmt: skip
    eta = correlation_ratio(codes, grid)
    total = 4 * var[3] + 0.25 * square.var()
    np.testing.assert_allclose(eta[0], [0, 0, 0.25 * square.var() / total, 4 * var[3] / total, 0],
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(eta[1], [1, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_array_equal(eta[2], np.zeros(5))
    # brute force: between-value sum of squares, one value at a time
    z = codes[:, 3]
    for k in range(5):
        between = sum((grid[:, k] == v).sum() * (z[grid[:, k] == v].mean() - z.mean()) ** 2
                      for v in np.unique(grid[:, k]))  # fmt: skip
        assert eta[3, k] == pytest.approx(between / ((z - z.mean()) ** 2).sum(), abs=1e-12)
    assert 0.5 < eta[3].sum() < 0.99
    # invariant to each dimension's affine rescaling and to relabelled factor values
    np.testing.assert_allclose(correlation_ratio(-3 * codes + 1, 10 * grid + 7), eta, atol=1e-12)


def _mixture_mi_by_quadrature(means, sigma):
    """I(z; v) for v uniform over len(means) values and z | v ~ N(means[v], sigma^2):
    H(mixture) - H(N(0, sigma^2)), the mixture's entropy by numerical integration."""
    from scipy import integrate, stats

    def density(z):
        return np.mean([stats.norm.pdf(z, m, sigma) for m in means])

    lo, hi = min(means) - 12 * sigma, max(means) + 12 * sigma
    h_mix = integrate.quad(lambda z: -density(z) * np.log(max(density(z), 1e-300)), lo, hi,
                           limit=400, points=list(means))[0]  # fmt: skip
    return h_mix - 0.5 * np.log(2 * np.pi * np.e * sigma**2)


def test_posterior_mutual_information_matches_the_closed_form():
    """Gaussian posteriors whose means depend on the factor alone: the estimate equals
    the mixture MI by quadrature, to its Monte Carlo error (one draw per point, 750 per
    value: about 0.02 nats); a dimension that transmits nothing (means 0.01 v, variance
    1) has MI ~0 though its binned means carry the factor completely."""
    n, values = 3000, 4
    v = np.repeat(np.arange(values), n // values)
    sigma = 0.5
    mean = np.stack([1.0 * v, 0.01 * v, np.zeros(n)], axis=1)
    logvar = np.log(np.array([sigma**2, 1.0, 1.0])) * np.ones((n, 3))
    out = posterior_mutual_information(mean, logvar, v)
    exact = _mixture_mi_by_quadrature(np.arange(values) * 1.0, sigma)
    assert 0.5 < exact < np.log(values)  # overlapping components: a non-trivial answer
    assert out["mutual_information"][0, 0] == pytest.approx(exact, abs=0.06)
    tiny = _mixture_mi_by_quadrature(np.arange(values) * 0.01, 1.0)
    assert tiny < 1e-4 and out["mutual_information"][1, 0] < 0.03
    assert out["mutual_information"][2, 0] < 0.03
    # the binned means see the collapsed dimension as a perfect copy of the factor
    binned = mutual_information_gap(mean[:, :2], v, n_bins=4)["mutual_information"]
    assert binned[1, 0] == pytest.approx(np.log(values))
    # and the gap: the informative dimension against the best of the rest
    gap = posterior_mutual_information_gap(mean, logvar, v)
    second = out["mutual_information"][1:, 0].max()
    assert gap["per_factor"][0] == pytest.approx((out["mutual_information"][0, 0] - second)
                                                 / np.log(values))  # fmt: skip
    assert gap["mig"] > 0.3 and mutual_information_gap(mean[:, :2], v, n_bins=4)["mig"] < 0.01


def test_posterior_mutual_information_equals_a_double_loop():
    """The chunked estimate against the definition written out point by point, on the
    same draws (z_n = mean_n + sigma_n eps_n with the documented generator)."""
    rng = np.random.default_rng(5)
    n = 30
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n)], axis=1)
    mean = rng.standard_normal((n, 2)) + factors[:, :1]
    logvar = rng.uniform(-2, 0.5, (n, 2))
    out = posterior_mutual_information(mean, logvar, factors, random_state=7, chunk=4)
    z = mean + np.exp(0.5 * logvar) * np.random.default_rng(7).standard_normal((n, 2))

    def entropy(rows, j):
        total = 0.0
        for s in rows:
            q = np.mean([np.exp(-0.5 * (z[s, j] - mean[m, j]) ** 2 / np.exp(logvar[m, j]))
                         / np.sqrt(2 * np.pi * np.exp(logvar[m, j])) for m in rows])  # fmt: skip
            total -= np.log(q)
        return total / len(rows)

    everyone = list(range(n))
    for j in range(2):
        assert out["marginal_entropy"][j] == pytest.approx(entropy(everyone, j), abs=1e-10)
        for k in range(2):
            cond = sum(np.mean(factors[:, k] == u) * entropy(list(np.flatnonzero(factors[:, k] == u)), j)
                       for u in np.unique(factors[:, k]))  # fmt: skip
            assert out["conditional_entropy"][j, k] == pytest.approx(cond, abs=1e-10)
            expected = max(entropy(everyone, j) - cond, 0.0)
            assert out["mutual_information"][j, k] == pytest.approx(expected, abs=1e-10)
    with pytest.raises(ValueError, match="logvar must have the shape"):
        posterior_mutual_information(mean, logvar[:, :1], factors)
    with pytest.raises(ValueError, match="finite"):
        posterior_mutual_information(mean, np.full_like(logvar, np.nan), factors)


def test_dci_normalisation_on_hand_made_importance_matrices():
    out = dci_scores(np.eye(4))
    assert out["disentanglement"] == pytest.approx(1.0) and out["completeness"] == pytest.approx(1.0)
    out = dci_scores(np.ones((4, 3)))
    assert out["disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert out["completeness"] == pytest.approx(0.0, abs=1e-12)
    # one code carries factor 0 (3/4) and factor 1 (1/4); the other carries nothing
    r = np.array([[3.0, 1.0], [0.0, 0.0]])
    out = dci_scores(r)
    assert out["disentanglement"] == pytest.approx(1 - scipy_entropy([0.75, 0.25], base=2))
    assert out["completeness"] == pytest.approx(1.0)  # each factor in a single code
    assert out["per_code"].tolist() == pytest.approx([1 - scipy_entropy([3, 1], base=2), 0.0])
    # one factor: a code cannot mix factors (D = 1); completeness still sees the spread
    out = dci_scores([[1.0], [2.0]])
    assert out["disentanglement"] == pytest.approx(1.0)
    assert out["completeness"] == pytest.approx(1 - scipy_entropy([1, 2], base=2))
    # a general matrix against scipy's entropy, term by term
    r = np.random.default_rng(3).random((5, 3))
    out = dci_scores(r)
    rho = r.sum(1) / r.sum()
    d = sum(rho[j] * (1 - scipy_entropy(r[j], base=3)) for j in range(5))
    c = np.mean([1 - scipy_entropy(r[:, k], base=5) for k in range(3)])
    assert out["disentanglement"] == pytest.approx(d) and out["completeness"] == pytest.approx(c)


def test_disentangled_codes_score_one(factors):
    rng = np.random.default_rng(4)
    codes = permuted_copy(factors, rng)
    assert mutual_information_gap(codes, factors)["mig"] > 0.98
    out = dci(codes, factors, random_state=0)
    assert out["disentanglement"] > 0.99 and out["completeness"] > 0.99
    assert out["informativeness"] > 0.99
    # the importance sits on the permutation
    assert out["importance"].argmax(axis=0).tolist() == [1, 3, 4, 0, 2]
    assert factorvae_score(codes, factors, n_train=500, n_eval=500)["score"] == 1.0
    # five extra noise dimensions (unused) change nothing
    noisy = np.concatenate([codes, rng.standard_normal((N, 5))], axis=1)
    out = dci(noisy, factors, random_state=0)
    assert out["disentanglement"] > 0.99 and out["completeness"] > 0.99


def test_rotated_codes_score_low_but_stay_informative(factors):
    codes = rotated(factors, np.random.default_rng(5))
    mig = mutual_information_gap(codes, factors)["mig"]
    out = dci(codes, factors, random_state=0)
    # measured: MIG 0.13, D 0.14, C 0.14, informativeness 0.67 (seeds as here); the
    # FactorVAE score stays 0.85: a rotation can keep one lowest-variance axis per factor
    assert mig < 0.25
    assert out["disentanglement"] < 0.25 and out["completeness"] < 0.25
    assert out["informativeness"] > 0.5


def test_noise_codes_score_zero(factors):
    codes = np.random.default_rng(6).standard_normal((N, 5))
    assert mutual_information_gap(codes, factors)["mig"] < 0.02
    out = dci(codes, factors, random_state=0)
    assert out["disentanglement"] < 0.02 and out["completeness"] < 0.02
    chance = np.mean([1 / 3, 1 / 4, 1 / 8, 1 / 8, 1 / 8])  # 0.19: guessing every factor
    assert abs(out["informativeness"] - chance) < 0.05
    # FactorVAE: votes land at random, the majority classifier is right ~1/K of the time
    assert abs(factorvae_score(codes, factors, n_train=500, n_eval=500)["score"] - 0.2) < 0.05


def test_dci_validated_leaf_size_keeps_noise_out_of_nuisance_dimensions():
    # Each factor of the fine grid (15 or 16 values, 0.23 std apart) in its own dimension
    # with noise of std 0.1, and 5 nuisance dimensions: disentangled. Forests with leaves
    # of 5 fit the noise by splitting on the nuisance dimensions, and impurity importance
    # credits them (a quarter of it here): D 0.83 (0.80 on 7560 codes). The cross-validated
    # leaf size gives D 0.96 (0.99), and leaves a rotated, entangled code as low as before.
    grid = shapes_grid("fine")
    rng = np.random.default_rng(9)
    f = grid[rng.choice(len(grid), N, replace=False)]
    u = standardised(f)
    aligned = np.concatenate([u + 0.1 * rng.standard_normal(u.shape),
                              rng.standard_normal((N, 5))], axis=1)
    fixed = dci(aligned, f, leaf_fractions=(0,))
    validated = dci(aligned, f)
    assert (fixed["min_samples_leaf"] == 5).all() and validated["min_samples_leaf"].max() > 5
    assert fixed["disentanglement"] < 0.88 and validated["disentanglement"] > 0.93
    assert validated["importance"][5:].sum() < 0.1 < fixed["importance"][5:].sum()
    assert validated["informativeness"] >= fixed["informativeness"] - 0.01
    entangled = np.concatenate([rotated(f, rng), rng.standard_normal((N, 5))], axis=1)
    assert dci(entangled, f)["disentanglement"] < 0.2


def test_explicit_test_set_tensors_and_determinism(factors):
    rng = np.random.default_rng(7)
    codes = torch.from_numpy(permuted_copy(factors, rng)).float()
    out = dci(codes[:600], torch.from_numpy(factors[:600]), codes[600:], factors[600:])
    assert out["test_accuracy"].tolist() == [1.0] * 5
    again = dci(codes[:600], factors[:600], codes[600:], factors[600:])
    np.testing.assert_array_equal(out["importance"], again["importance"])
    a = factorvae_score(codes, factors, n_train=300, n_eval=300, random_state=3)
    b = factorvae_score(codes, factors, n_train=300, n_eval=300, random_state=3)
    np.testing.assert_array_equal(a["votes"], b["votes"])
    assert a["votes"].sum() == 300


def test_factorvae_ignores_collapsed_dimensions(factors):
    codes = permuted_copy(factors, np.random.default_rng(8))
    codes = np.concatenate([codes, np.full((N, 1), 3.0)], axis=1)  # a collapsed dimension
    out = factorvae_score(codes, factors, n_train=300, n_eval=300)
    assert out["active"].tolist() == [True] * 5 + [False]
    assert out["votes"][5].sum() == 0 and out["score"] == 1.0
    out = factorvae_score(np.zeros((N, 3)), factors)
    assert out["score"] == 0.0 and not out["active"].any()
    # the threshold is absolute: codes 100x smaller are all "collapsed" unless it is 0
    small = codes / 100
    assert factorvae_score(small, factors, n_train=300, n_eval=300)["score"] == 0.0
    out = factorvae_score(small, factors, n_train=300, n_eval=300, active_threshold=0)
    assert out["score"] == 1.0 and out["active"].tolist() == [True] * 5 + [False]


def test_bad_arguments_raise_one_clear_error(factors):
    codes = np.zeros((N, 5))
    with pytest.raises(ValueError, match=r"factors must have shape \(10, K\)"):
        mutual_information_gap(codes[:10], factors)
    with pytest.raises(ValueError, match="codes must be finite"):
        mutual_information_gap(np.full((4, 2), np.nan), np.arange(4))
    with pytest.raises(ValueError, match="codes must have at least 2 dimensions"):
        mutual_information_gap(codes[:, :1], factors)
    with pytest.raises(ValueError, match="factors column 1 takes a single value"):
        mutual_information_gap(codes, np.stack([factors[:, 0], np.zeros(N)], 1))
    with pytest.raises(ValueError, match="n_bins must be an int >= 2"):
        mutual_information_gap(codes, factors, n_bins=1)
    with pytest.raises(ValueError, match="factors must hold discrete"):
        mutual_information_gap(codes, factors + 0.5)
    with pytest.raises(ValueError, match="codes_test and factors_test must be given together"):
        dci(codes, factors, codes_test=codes)
    with pytest.raises(ValueError, match=r"leaf_fractions must be fractions in \[0, 1\)"):
        dci(codes, factors, leaf_fractions=(0.5, 1.0))
    with pytest.raises(ValueError, match="selection_folds must be an int >= 2"):
        dci(codes, factors, selection_folds=1)
    with pytest.raises(ValueError, match="importance must be a"):
        dci_scores(-np.eye(2))
    with pytest.raises(ValueError, match="batch_size must be an int >= 2"):
        factorvae_score(codes, factors, batch_size=1)


def test_posterior_gap_refuses_undefined_cases_before_estimating():
    f = np.repeat(np.arange(4), 25)
    ones = np.ones((100, 1))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        posterior_mutual_information_gap(ones, 0 * ones, f)
    with pytest.raises(ValueError, match="single value"):
        posterior_mutual_information_gap(np.ones((100, 2)), np.zeros((100, 2)), np.zeros(100))
