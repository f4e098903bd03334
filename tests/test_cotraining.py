"""Relational co-training (otae.cotraining): eq. 14 values, invariances, pairing, protocol."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from otae.cotraining import (
    AESettings,
    CCAAutoencoders,
    CoRegAutoencoders,
    MultiViewAutoencoders,
    Posterior,
    ProtocolConfig,
    WassersteinAutoencoders,
    epoch_batches,
    relational_discrepancy,
    run_protocol,
    train_cotraining,
    write_table,
)
from otae.discrepancies import fgw_objective, fgw_proximal_point, hierarchical_fgw
from otae.sphere import uniform_directions


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def _posterior(n: int, d: int, seed: int) -> Posterior:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    std = 0.2 + torch.rand(n, d, generator=g, dtype=torch.float64)
    return Posterior(mean, std, mean + std * torch.randn(n, d, generator=g, dtype=torch.float64))


def _batches(dims, n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for d in dims]


# --- objective ---------------------------------------------------------------------------


def test_eq14_two_views_equals_its_terms_recomputed():
    gamma, tau = 0.7, 0.3
    model = MultiViewAutoencoders([6, 5], [3, 3], (8,), gamma=gamma, tau=tau, seed=0).double()
    batches = _batches([6, 5], 12, seed=1)
    terms = model.loss(batches, torch.Generator().manual_seed(7))

    g = torch.Generator().manual_seed(7)  # same noise, drawn view by view
    rec, reg, params = [], [], []
    for i, x in enumerate(batches):
        mean, logvar = model.encode(i, x)
        std = torch.exp(0.5 * logvar)
        z = mean + std * torch.randn(mean.shape, generator=g, dtype=torch.float64)
        rec.append((model.decode(i, z) - x).pow(2).sum(1).mean())
        prior_mu, prior_sigma = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3).double()
        reg.append(hierarchical_fgw(mean, std, prior_mu, prior_sigma, beta=0.0))
        # One prior component: hierarchical W = mean of the closed-form W2^2 to N(0, I).
        closed = (mean.pow(2).sum(1) + (std - 1).pow(2).sum(1)).mean()
        torch.testing.assert_close(reg[-1], closed, rtol=1e-10, atol=1e-10)
        params.append((mean, std))
    relational = hierarchical_fgw(*params[0], *params[1], beta=1.0)
    expected = sum(rec) + gamma * (1 - tau) * sum(reg) + 2 * gamma * tau * relational

    torch.testing.assert_close(terms["total"], expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["relational"], relational, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(terms["pair_view0_view1"], relational, rtol=1e-10, atol=1e-10)
    for i in range(2):
        torch.testing.assert_close(terms[f"rec_view{i}"], rec[i], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(terms[f"reg_view{i}"], reg[i], rtol=1e-10, atol=1e-10)
    assert float(relational.detach()) > 0 and float(sum(reg).detach()) > 0


def test_three_views_pair_factor_is_2_gamma_tau_over_s_minus_1():
    gamma, tau = 1.3, 0.4
    model = MultiViewAutoencoders(
        [5, 4, 6],
        [3, 2, 4],
        [(8,), (7,), (9,)],
        gamma=gamma,
        tau=tau,
        seed=3,
        view_names=["a", "b", "c"],
    ).double()
    assert model.pair_weight == pytest.approx(2 * gamma * tau / 2)
    batches = _batches([5, 4, 6], 10, seed=4)
    terms = model.loss(batches, torch.Generator().manual_seed(0))
    pairs = [terms[k] for k in ("pair_a_b", "pair_a_c", "pair_b_c")]
    torch.testing.assert_close(terms["relational"], sum(pairs))
    expected = (
        sum(terms[f"rec_{v}"] for v in "abc")
        + gamma * (1 - tau) * sum(terms[f"reg_{v}"] for v in "abc")
        + gamma * tau * sum(pairs)  # 2 gamma tau / (S - 1) with S = 3
    )
    torch.testing.assert_close(terms["total"], expected, rtol=1e-12, atol=1e-12)
    # The pair b-c (latents 2 and 4) is the hierarchical GW of the two posteriors.
    posts = [model.encode(i, x) for i, x in enumerate(batches)]
    (mb, lb), (mc, lc) = posts[1], posts[2]
    direct = relational_discrepancy(
        "hierarchical",
        Posterior(mb, torch.exp(0.5 * lb), mb),
        Posterior(mc, torch.exp(0.5 * lc), mc),
    )
    torch.testing.assert_close(terms["pair_b_c"], direct, rtol=1e-10, atol=1e-10)
    terms["total"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_hierarchical_gw_zero_padding_is_exact_for_unequal_latent_sizes():
    ps, pt = _posterior(9, 4, seed=0), _posterior(7, 2, seed=1)
    value = relational_discrepancy("hierarchical", ps, pt)
    # Hierarchical GW on the unpadded intra-set costs (the cross cost is irrelevant at beta=1).
    zs, zt = torch.cat((ps.mean, ps.std), 1), torch.cat((pt.mean, pt.std), 1)
    cost_s, cost_t = torch.cdist(zs, zs).pow(2), torch.cdist(zt, zt).pow(2)
    cross = torch.zeros(9, 7, dtype=torch.float64)
    plan = fgw_proximal_point(cross, cost_s, cost_t, beta=1.0)
    torch.testing.assert_close(
        value, fgw_objective(cross, cost_s, cost_t, plan, 1.0), rtol=1e-8, atol=1e-8
    )


# --- invariances ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["hierarchical", "empirical"])
def test_relational_term_is_invariant_to_isometries_of_one_view(kind):
    ps, pt = _posterior(20, 4, seed=10), _posterior(20, 3, seed=11)
    q, shift = _orthogonal(4, seed=12), torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    moved = Posterior(ps.mean @ q + shift, ps.std, ps.code @ q + shift)
    base = relational_discrepancy(kind, ps, pt)
    assert float(base) > 1e-3
    torch.testing.assert_close(relational_discrepancy(kind, moved, pt), base, rtol=1e-6, atol=1e-9)
    # Not invariant to a non-isometry (scaling), so the check has teeth.
    scaled = Posterior(2 * ps.mean, ps.std, 2 * ps.code)
    assert abs(float(relational_discrepancy(kind, scaled, pt)) - float(base)) > 0.1 * float(base)


def _padded_gaussian_w2_numpy(ps: Posterior, pt: Posterior) -> float:
    """Exact OT (POT's emd2) between the two uniform mixtures of diagonal Gaussians, the
    smaller latent zero-padded (means and stds), with cost W2^2 = |dm|^2 + |ds|^2."""
    dim = max(ps.dim, pt.dim)

    def pad(t):
        return np.pad(t.numpy(), ((0, 0), (0, dim - t.shape[1])))

    ms, ss, mt, st = pad(ps.mean), pad(ps.std), pad(pt.mean), pad(pt.std)
    cost = ((ms[:, None] - mt[None]) ** 2).sum(-1) + ((ss[:, None] - st[None]) ** 2).sum(-1)
    return float(ot.emd2(np.full(len(ms), 1 / len(ms)), np.full(len(mt), 1 / len(mt)), cost))


def test_wasserstein_baseline_is_not_rotation_invariant():
    """The AEs+W pair term is the exact OT value between the zero-padded posteriors (with
    the paper's 20 proximal steps an upper bound within 3 %, with 300 steps the value to
    1e-4), before and after a rotation of one view's means, which changes that value."""
    ps, pt = _posterior(20, 4, seed=10), _posterior(20, 3, seed=11)
    q = _orthogonal(4, seed=12)
    moved = Posterior(ps.mean @ q, ps.std, ps.code @ q)
    exact = [_padded_gaussian_w2_numpy(p, pt) for p in (ps, moved)]
    assert abs(exact[0] - exact[1]) > 0.1  # the rotation does change the exact value
    for steps, lower, upper in ((20, 1.0, 1.03), (300, 1 - 1e-4, 1 + 1e-4)):
        model = WassersteinAutoencoders([5, 5], [4, 3], (8,), seed=0, hfgw_steps=steps).double()
        for p, reference in zip((ps, moved), exact, strict=True):
            value = float(model.pair_term_value(0, 1, p, pt, None))
            assert lower * reference <= value <= upper * reference, (steps, value, reference)


def test_paired_baseline_terms_values():
    ps, pt = _posterior(16, 4, seed=0), _posterior(16, 3, seed=1)
    coreg = CoRegAutoencoders([5, 5], [4, 3], (8,), seed=0).double()
    torch.testing.assert_close(
        coreg.pair_term_value(0, 1, ps, pt, None),
        ((ps.mean[:, :3] - pt.mean) ** 2).sum(1).mean(),
    )
    cca = CCAAutoencoders([5, 5], [4, 3], (8,), seed=0).double()
    # Identical first 3 coordinates: every matched correlation is 1 -> term -3.
    same = Posterior(torch.cat((pt.mean, ps.mean[:, :1]), 1), ps.std, ps.code)
    torch.testing.assert_close(
        cca.pair_term_value(0, 1, same, pt, None),
        torch.tensor(-3.0, dtype=torch.float64),
        atol=1e-5,
        rtol=0,
    )
    expected = -sum(np.corrcoef(ps.mean[:, j], pt.mean[:, j])[0, 1] for j in range(3))
    assert float(cca.pair_term_value(0, 1, ps, pt, None)) == pytest.approx(expected, abs=1e-5)


# --- pairing ---------------------------------------------------------------------------------


def test_unpaired_sampler_uses_independent_permutations():
    g = torch.Generator().manual_seed(0)
    steps = epoch_batches([60, 60], 10, paired=False, generator=g)
    assert len(steps) == 6
    a, b = torch.cat([s[0] for s in steps]), torch.cat([s[1] for s in steps])
    assert sorted(a.tolist()) == list(range(60)) and sorted(b.tolist()) == list(range(60))
    assert (a == b).float().mean() < 0.1  # not aligned (a shared permutation gives 1.0)
    paired = epoch_batches([60, 60], 10, paired=True, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(s[0], s[1]) for s in paired)
    # Reproducible from the generator's seed.
    again = epoch_batches([60, 60], 10, paired=False, generator=torch.Generator().manual_seed(0))
    assert all(
        torch.equal(x, y)
        for s, t in zip(steps, again, strict=True)
        for x, y in zip(s, t, strict=True)
    )


class _RecordingModel(MultiViewAutoencoders):
    def loss(self, batches, generator=None):
        self.seen.append([x[:, 0].round().long().tolist() for x in batches])
        return super().loss(batches, generator)


@pytest.mark.parametrize("paired", [False, True])
def test_training_batches_are_unpaired_unless_asked(paired):
    n = 40
    rows = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    views = [torch.cat((rows, torch.randn(n, 3)), 1), torch.cat((rows, torch.randn(n, 2)), 1)]
    model = _RecordingModel([4, 3], 2, (4,), seed=0)
    model.seen = []
    train_cotraining(model, views, epochs=1, batch_size=10, lr=1e-3, paired=paired, seed=5)
    assert len(model.seen) == 4
    aligned = np.mean([np.mean(np.equal(a, b)) for a, b in model.seen])
    assert aligned == 1.0 if paired else aligned < 0.1


def test_training_is_deterministic_given_seed():
    views = _batches([6, 4], 30, seed=2)
    views = [v.float() for v in views]
    states = []
    for _ in range(2):
        model = MultiViewAutoencoders([6, 4], [3, 2], (8,), seed=1)
        history = train_cotraining(model, views, epochs=2, batch_size=10, lr=1e-2, seed=9)
        states.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(states[0], states[1])
    assert {"total", "relational", "rec_view0", "reg_view1", "pair_view0_view1"} <= set(history[-1])


# --- end to end -----------------------------------------------------------------------------


def _planted_views(n: int, seed: int):
    """4 clusters: view 1 = centre + noise (10-d); view 2 = a nonlinear map of the id (7-d)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n // 4)
    centres = rng.normal(0, 2.0, (4, 10))
    v1 = centres[labels] + rng.normal(0, 1.0, (n, 10))
    w1, w2 = rng.normal(0, 1.5, (4, 16)), rng.normal(0, 1.0, (16, 7))
    v2 = np.tanh(np.eye(4)[labels] @ w1) @ w2 + np.sin(labels)[:, None] + rng.normal(0, 0.4, (n, 7))
    return {"a": v1.astype(np.float32), "b": v2.astype(np.float32)}, labels


def test_end_to_end_planted_clusters_and_pure_noise(tmp_path):
    settings = AESettings(
        latent_dim=(4, 3), hidden=(32,), epochs=12, batch_size=40, lr=3e-3, checkpoints=(6,)
    )
    config = ProtocolConfig(ae=settings, c_grid=(0.1, 1.0), tsne_path=tmp_path / "tsne.png")
    views, labels = _planted_views(400, seed=0)
    res = run_protocol(views, labels, ("aes_gw",), seeds=(0,), config=config)
    assert res.accuracies["aes_gw"][0] > 0.8
    assert res.selected["aes_gw"][0][0] in (6, 12) and res.selected["aes_gw"][0][1] in (0.1, 1.0)
    assert (tmp_path / "tsne.png").stat().st_size > 1000

    rng = np.random.default_rng(1)
    noise = {"a": rng.normal(size=(400, 10)), "b": rng.normal(size=(400, 7))}
    random_labels = rng.permutation(np.repeat(np.arange(4), 100))
    config = ProtocolConfig(ae=settings, c_grid=(0.1, 1.0))
    chance = run_protocol(noise, random_labels, ("independent",), seeds=(0,), config=config)
    assert chance.accuracies["independent"][0] < 0.45

    text = write_table(
        {"aes_gw": res.accuracies["aes_gw"] * 2, "independent": [0.25, 0.35]},
        tmp_path / "t.md",
        tmp_path / "t.csv",
        dataset="Handwritten",
    )
    assert "| AEs+GW | unpaired |" in text and "30.00 ± 7.07" in text and "72.36 ± 3.82" in text
    assert (tmp_path / "t.csv").read_text().count("\n") == 3


@pytest.mark.parametrize(
    ("kind", "probabilistic", "extra"),
    [
        ("sliced", False, {}),
        ("empirical", False, {"prior_term": "mmd"}),
        ("empirical", True, {}),
        ("hierarchical", True, {"prior_components": 16}),
    ],
)
def test_other_discrepancies_train_with_unequal_latent_sizes(kind, probabilistic, extra):
    views = [v.float() for v in _batches([6, 4], 32, seed=3)]
    model = MultiViewAutoencoders(
        [6, 4], [3, 2], (8,), probabilistic=probabilistic, discrepancy=kind, seed=0, **extra
    )
    history = train_cotraining(model, views, epochs=2, batch_size=16, lr=1e-2, seed=0)
    assert all(np.isfinite(h["total"]) and h["relational"] > 0 for h in history)
    assert model.features(views).shape == (32, 5)

    # The trained model's terms on one batch against independent computations, with the
    # noise redrawn by hand in the documented order (posterior noise per view, the prior
    # draws per view, then per pair the shared directions).
    batch = [v[:16] for v in views]
    with torch.no_grad():
        terms = model.loss(batch, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        posts = []
        for i, x in enumerate(batch):
            mean, logvar = model.encode(i, x)
            std = None if logvar is None else torch.exp(0.5 * logvar)
            code = mean if std is None else mean + std * torch.randn(mean.shape, generator=g)
            posts.append((mean, std, code))
            rec = (model.decode(i, code) - x).square().sum(1).mean()
            torch.testing.assert_close(terms[f"rec_view{i}"], rec)
        for i, (mean, std, code) in enumerate(posts):
            k = mean.shape[1]
            got = float(terms[f"reg_view{i}"])
            if kind == "hierarchical":
                y = torch.randn(16, k, generator=g)
                # a feasible plan of the exact W problem: never below POT's exact optimum
                cost = ot.dist(mean.double().numpy(), y.double().numpy())
                cost += (std.double().numpy() ** 2).sum(1, keepdims=True)
                assert got >= ot.emd2(ot.unif(16), ot.unif(16), cost) * (1 - 1e-6)
                want = float(hierarchical_fgw(mean, std, y, torch.zeros_like(y), beta=0.0))
            elif extra.get("prior_term") == "mmd":
                want = mmd_imq_numpy(code, torch.randn(16, k, generator=g))
            else:
                y = torch.randn(16, k, generator=g)
                want = sliced_w_numpy(code, y, uniform_directions(50, k, generator=g).T)
            assert got == pytest.approx(want, rel=1e-4, abs=1e-6), i
        (m0, s0, c0), (m1, s1, c1) = posts
        got = float(terms["relational"])
        assert got == pytest.approx(float(terms["pair_view0_view1"]), rel=1e-12)
        pad = torch.zeros(16, 1)
        if kind == "sliced":
            want = sliced_gw_numpy(c0, torch.cat((c1, pad), 1), uniform_directions(50, 3, generator=g).T)
        elif kind == "empirical":
            a, b = c0.double().numpy(), c1.double().numpy()
            want = ot.gromov.gromov_wasserstein2(ot.dist(a, a), ot.dist(b, b), ot.unif(16), ot.unif(16))
        else:
            want = float(hierarchical_fgw(m0, s0, torch.cat((m1, pad), 1), torch.cat((s1, pad), 1), beta=1.0))
        assert got == pytest.approx(float(want), rel=1e-4, abs=1e-6)
        expected = sum(terms[f"rec_view{i}"] for i in range(2)) + model.prior_weight * sum(
            terms[f"reg_view{i}"] for i in range(2)
        ) + model.pair_weight * terms["relational"]
        torch.testing.assert_close(terms["total"], expected)


def sliced_w_numpy(x, y, directions) -> float:
    """Mean over directions of mean_i (sorted x.theta - sorted y.theta)_i^2, in float64."""
    px = np.sort(x.double().numpy() @ directions.double().numpy(), axis=0)
    py = np.sort(y.double().numpy() @ directions.double().numpy(), axis=0)
    return float(((px - py) ** 2).mean())


def sliced_gw_numpy(x, y, directions) -> float:
    """Mean over directions of the 1-D GW, min over the identity and anti-identity
    matchings of the sorted projections (Vayer et al. 2019), by N x N matrices."""
    values = []
    for theta in directions.double().numpy().T:
        px, py = np.sort(x.double().numpy() @ theta), np.sort(y.double().numpy() @ theta)
        dx = (px[:, None] - px[None, :]) ** 2
        values.append(min(((dx - (q[:, None] - q[None, :]) ** 2) ** 2).mean() for q in (py, py[::-1])))
    return float(np.mean(values))


def mmd_imq_numpy(x, y) -> float:
    """Unbiased squared MMD, IMQ kernel C / (C + |a - b|^2) with C = 2 d, double loop."""
    a, b = x.double().numpy(), y.double().numpy()
    c = 2.0 * a.shape[1]
    k = lambda u, v: c / (c + ((u - v) ** 2).sum())  # noqa: E731
    n, m = len(a), len(b)
    xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy
