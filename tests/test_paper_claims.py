"""Disentanglement metrics of a run, traversals, the paper-claim sets."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from otae.bench import bench_tasks, load_bench
from otae.data import build_dataset
from otae.evaluation import encode_dataset
from otae.evaluation.disentanglement import (
    dci,
    factorvae_score,
    mutual_information_gap,
    posterior_mutual_information_gap,
)
from otae.evaluation.figures import (
    central_code,
    latent_traversals,
    traversal_codes,
    traversal_grid,
)
from otae.evaluation.traversals import (
    DISENTANGLEMENT_KEYS,
    active_threshold,
    code_disentanglement_metrics,
    dataset_disentanglement_metrics,
    factor_traversal_rows,
    per_factor_mig_keys,
)
from otae.experiment import evaluate_model, run_experiment
from otae.training import load_config, load_run

from .helpers import tiny_vae

SETS = ("shapes-disentanglement", "mnist-clustering", "mnist-sae-geometry")


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A VAE trained 1 epoch on 40 `shapes` images, evaluated on 90 (no report: the loss
    curves alone would take seconds)."""
    config = load_config(
        "mnist/vae-quick",
        [
            "data.name=shapes", "data.image_size=32", "data.train_subset=40",
            "data.test_subset=90", "network.architecture=mlp", "network.options={hidden: [32]}",
            "model.latent_dim=4", "training.epochs=1", "training.batch_size=20",
            "training.progress=false", "evaluation.timing_steps=0", "evaluation.latent_points=50",
        ],
    )  # fmt: skip
    run_dir = tmp_path_factory.mktemp("shapes") / "run"
    run_experiment(config, run_dir, report=False, log=lambda *_: None)
    return run_dir


def test_shapes_run_scores_equal_recomputation_from_saved_codes(shapes_run):
    metrics = json.loads((shapes_run / "metrics.json").read_text())
    assert metrics["disentanglement_factors"] == [
        "shape", "scale", "orientation", "position_x", "position_y"
    ]  # fmt: skip
    saved = np.load(shapes_run / "test_codes.npz")
    # the saved arrays are the model's codes of the test images and their true factors
    test = build_dataset("shapes", "test", image_size=32).first(90)
    np.testing.assert_array_equal(saved["factors"], test.factors.numpy())
    np.testing.assert_array_equal(saved["labels"], test.labels.numpy())  # clustering's, kept
    _, model, _ = load_run(shapes_run)
    np.testing.assert_allclose(saved["codes"], encode_dataset(model, test).numpy(), atol=1e-6)
    # every score recomputed by hand from the saved codes, with the documented settings
    codes, factors = saved["codes"].astype(np.float64), saved["factors"]
    tau = 0.05 * np.sqrt(codes.var(axis=0).mean())
    by_hand_dci = dci(codes, factors, random_state=0)
    by_hand = {
        "mig": mutual_information_gap(codes, factors)["mig"],
        "dci_disentanglement": by_hand_dci["disentanglement"],
        "dci_completeness": by_hand_dci["completeness"],
        "dci_informativeness": by_hand_dci["informativeness"],
        "factorvae_score": factorvae_score(codes, factors, active_threshold=tau)["score"],
    }
    for key in DISENTANGLEMENT_KEYS:
        assert metrics[key] == pytest.approx(by_hand[key], abs=1e-12), key
    assert metrics["factorvae_active_threshold"] == pytest.approx(tau)
    np.testing.assert_allclose(saved["dci_importance"], by_hand_dci["importance"])
    assert metrics["disentanglement_points"] == 90 and metrics["disentanglement_time_s"] > 0


def test_shapes_report_shows_scores_traversals_and_clusters(shapes_run):
    config, model, _ = load_run(shapes_run)
    # no history: the loss-curve figure (slow, and not under test here) is skipped
    result = evaluate_model(model, config, shapes_run, [], report=True, log=lambda *_: None)
    figures = shapes_run / "figures"
    assert (figures / "traversals.png").is_file() and (figures / "latent_clusters.png").is_file()
    text = result.report.read_text()
    assert "<h2>Disentanglement</h2>" in text and f"{result.metrics['mig']:.6g}" in text
    # the per-factor gaps, in the factors' order, under their names
    gap_row = text[text.index("binned means</td>"):]
    gap_row = gap_row[:gap_row.index("</tr>")]
    for name in result.metrics["disentanglement_factors"]:
        assert f"<th>{name}</th>" in text
    cells = [float(c.split(">")[-1]) for c in gap_row.split("</td>")[1:-1]]
    expected = [result.metrics[f"mig_factor_{n}"] for n in result.metrics["disentanglement_factors"]]
    np.testing.assert_allclose(cells, expected, rtol=1e-3, atol=1e-4)
    q_row = text[text.index("posteriors (q)</td>"):]
    q_row = q_row[:q_row.index("</tr>")]
    cells = [float(c.split(">")[-1]) for c in q_row.split("</td>")[1:-1]]
    expected = [result.metrics[f"mig_posterior_factor_{n}"]
                for n in result.metrics["disentanglement_factors"]]  # fmt: skip
    np.testing.assert_allclose(cells, expected, rtol=1e-3, atol=1e-4)
    with np.load(shapes_run / "test_codes.npz") as saved:
        importance = saved["dci_importance"]
    rows = factor_traversal_rows(importance, result.metrics["disentanglement_factors"])
    assert f"position_x: z{rows[3][1]}" in text
    # one traversal row per factor: 5 rows of 10 tiles of 32 px, 2 px padding
    assert Image.open(figures / "traversals.png").size == (10 * 34 + 2, 5 * 34 + 2)
    assert "coloured by cluster: k-means clusters" in text  # a VAE: no mixture prior


def test_dataset_metrics_encode_without_a_clustering_file(tmp_path):
    model = tiny_vae(latent_dim=3, shape=(1, 32, 32))
    test = build_dataset("shapes", "test", image_size=32).first(60)
    path = tmp_path / "codes.npz"
    scores, codes, importance = dataset_disentanglement_metrics(model, test, codes_path=path)
    np.testing.assert_array_equal(codes, encode_dataset(model, test).numpy())
    with np.load(path) as saved:
        assert sorted(saved.files) == ["codes", "dci_importance", "factors", "logvars"]
        np.testing.assert_array_equal(saved["codes"], codes)
        logvars = saved["logvars"]
    # a VAE: the posteriors' log-variances are saved, and MIG (q) is Chen et al.'s
    # estimator on them, with the documented seed
    mean, logvar = model.encode(test.get_batch(torch.arange(len(test)))[0])
    np.testing.assert_allclose(logvars, logvar.detach().numpy(), rtol=1e-5, atol=1e-6)
    posterior = posterior_mutual_information_gap(codes, logvars, test.factors.numpy())
    assert scores["mig_posterior"] == posterior["mig"]
    assert [scores[f"mig_posterior_factor_{n}"] for n in test.factor_names] == list(
        posterior["per_factor"]
    )
    direct = code_disentanglement_metrics(codes, test.factors.numpy())
    np.testing.assert_array_equal(importance, direct["dci_importance"])
    for key in DISENTANGLEMENT_KEYS:
        assert scores[key] == direct[key]
    # each factor's gap under its name; their mean is the MIG
    gaps = mutual_information_gap(codes, test.factors.numpy())["per_factor"]
    assert [scores[f"mig_factor_{name}"] for name in test.factor_names] == list(gaps)
    assert np.mean(gaps) == pytest.approx(scores["mig"], abs=1e-12)
    with pytest.raises(ValueError, match="factors"):
        dataset_disentanglement_metrics(model, test.images[:5])
    # a factor constant over the data: a note, not a failed run
    same_shape = test.subset(np.flatnonzero(test.factors[:, 0].numpy() == 0))
    note, _, importance = dataset_disentanglement_metrics(model, same_shape)
    assert note == {"disentanglement": "skipped: shape take(s) a single value in the "
                    f"{len(same_shape)} test images"} and importance is None  # fmt: skip
    with pytest.raises(ValueError, match="does not hold"):
        dataset_disentanglement_metrics(model, test.first(10), codes_path=path, reuse_codes=True)


def test_per_factor_mig_names_the_factors_a_code_carries():
    """Codes that carry the two positions alone, each in its own dimension: those
    factors' gaps are near 1, the others' near 0 (a known answer, not a shape)."""
    grid = np.stack(np.unravel_index(np.arange(6144), (3, 4, 8, 8, 8)), axis=1)
    rng = np.random.default_rng(1)
    positions = (grid[:, 3:] - 3.5) / 2.3 + 1e-3 * rng.standard_normal((6144, 2))
    codes = np.concatenate([positions, rng.standard_normal((6144, 3))], axis=1)
    gaps = code_disentanglement_metrics(codes, grid)["mig_per_factor"]
    assert (gaps[3:] > 0.95).all() and (gaps[:3] < 0.02).all()
    names = ("shape", "scale", "orientation", "Position X", "position-y")
    keys = per_factor_mig_keys(names, gaps)
    assert list(keys) == ["mig_factor_shape", "mig_factor_scale", "mig_factor_orientation",
                          "mig_factor_position_x", "mig_factor_position_y"]
    assert list(keys.values()) == list(gaps)
    with pytest.raises(ValueError, match="distinct"):
        per_factor_mig_keys(("x", "X", "a", "b", "c"), gaps)
    with pytest.raises(ValueError, match="5 per-factor gaps for 2"):
        per_factor_mig_keys(("a", "b"), gaps)


def test_active_threshold_makes_factorvae_scale_free():
    grid = np.stack(np.unravel_index(np.arange(600), (3, 4, 50)), axis=1)
    rng = np.random.default_rng(0)
    codes = (grid - grid.mean(0)) / grid.std(0) + 0.3 * rng.standard_normal(grid.shape)
    codes = np.concatenate([codes, 1e-4 * rng.standard_normal((600, 1))], axis=1)  # collapsed
    base = code_disentanglement_metrics(codes, grid)
    small = code_disentanglement_metrics(0.01 * codes, grid)  # a deterministic AE's scale
    assert base["factorvae_active_dims"] == small["factorvae_active_dims"] == 3
    assert small["factorvae_score"] == base["factorvae_score"] > 0.9
    # the absolute 0.05 rule drops every dimension of the small codes: score 0
    assert factorvae_score(0.01 * codes, grid)["score"] == 0.0
    # unit-variance dimensions: disentanglement_lib's 0.05
    assert active_threshold(rng.standard_normal((20000, 4))) == pytest.approx(0.05, rel=0.02)


def test_traversal_grid_decodes_the_constructed_codes(tmp_path):
    model = tiny_vae(latent_dim=4)
    codes = torch.randn(200, 4, generator=torch.Generator().manual_seed(3)) * torch.tensor(
        [1.0, 3.0, 0.1, 2.0]
    )
    dims, n = [2, 0, 2], 5
    # by hand: the mean code, one dimension on a line between its 5% and 95% quantiles
    c = codes.double().numpy()
    hand = np.repeat(c.mean(0)[None, None], len(dims), 0).repeat(n, 1)
    for r, j in enumerate(dims):
        lo, hi = np.quantile(c[:, j], [0.05, 0.95])
        hand[r, :, j] = np.linspace(lo, hi, n)
    np.testing.assert_allclose(traversal_codes(codes, dims, n).numpy(), hand, rtol=1e-12)
    # the figure starts from a real code instead: the one nearest the median, by hand
    standardised = (c - np.median(c, 0)) / c.std(0)
    centre = int(np.argmin((standardised**2).sum(1)))
    assert central_code(codes) == centre
    assert central_code(codes * 7.0 + 3.0) == centre  # in units of each dimension's spread
    hand[:] = np.where(np.arange(4) == np.array(dims)[:, None, None], hand, c[centre])
    based = traversal_codes(codes, dims, n, base=codes[centre])
    np.testing.assert_allclose(based.numpy(), hand, rtol=1e-12)
    model.eval()
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(hand.reshape(-1, 4)).float())
    model.train()  # the traversal decodes in eval mode and restores the mode it found
    torch.testing.assert_close(
        latent_traversals(model, codes, dims, n, base=codes[centre]), expected
    )
    # the saved PNG: tile (r, s) at [2 + 10 r, 2 + 10 s] is round(255 x) of row r, step s
    png = np.asarray(Image.open(traversal_grid(model, codes, dims, tmp_path / "t.png", n)))
    for r in range(len(dims)):
        for s in range(n):
            tile = png[2 + 10 * r : 10 + 10 * r, 2 + 10 * s : 10 + 10 * s]
            want = torch.round(expected[r * n + s, 0].clamp(0, 1) * 255).to(torch.uint8)
            np.testing.assert_array_equal(tile, want.numpy())
    assert model.training


def test_traversal_rejects_bad_input():
    codes = torch.zeros(10, 3)
    with pytest.raises(ValueError, match="dims"):
        traversal_codes(codes, [3])
    with pytest.raises(ValueError, match="n_steps"):
        traversal_codes(codes, [0], n_steps=1)
    with pytest.raises(ValueError, match="base"):
        traversal_codes(codes, [0], base=torch.zeros(4))
    with pytest.raises(ValueError, match="codes"):
        central_code(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="importance"):
        factor_traversal_rows(np.ones((3, 2)), ["a", "b", "c"])


def test_factor_traversal_rows_pick_the_most_important_dimension():
    importance = np.array([[0.1, 0.7], [0.8, 0.2], [0.1, 0.1]])
    assert factor_traversal_rows(importance, ["x", "y"]) == [("x", 1), ("y", 0)]


@pytest.mark.parametrize("name", SETS)
def test_paper_claim_sets_resolve(name):
    bench = load_bench(name)
    assert bench.seeds == [0, 1, 2] and bench.description.strip()
    tasks = bench_tasks(bench)
    assert len(tasks) == 3 * len(bench.runs)
    configs = {}
    for run, seed in tasks:
        config = load_config(
            run.config, [*bench.overrides, *run.overrides, f"training.seed={seed}"]
        )
        configs[run.name] = config
    if name == "shapes-disentanglement":
        assert {c.data.name for c in configs.values()} == {"shapes"}
        assert all(c.data.test_subset is None and c.data.image_size == 32 for c in configs.values())
        assert configs["GWAE (factorised)"].model.prior == "factorised_neural"
        assert configs["GWAE (neural)"].model.prior == "neural"
        assert configs["beta-VAE (gamma 4)"].model.gamma == 4.0
        assert configs["VAE"].model.gamma == 1.0
    elif name == "mnist-clustering":
        assert configs["GWAE (gmm)"].model.prior == "gmm"
        assert {c.model.n_components for c in configs.values()} == {10}
        assert {c.model.name for c in configs.values()} == {"gwae", "gmvae", "drae"}
    else:
        priors = {c.model.prior for c in configs.values()}
        assert priors == {"normal", "sphere_uniform", "vmf"}
        assert {c.model.name for c in configs.values()} == {"sae"}


def test_bench_tables_gain_disentanglement_columns(tmp_path):
    import csv
    import statistics

    from otae.bench import BenchConfig, BenchRun, write_tables

    bench = BenchConfig(name="t", runs=[BenchRun("A", "mnist/vae-quick")])
    base = {"run": "A", "encoder": "P", "epochs": 1, "protocol_epochs": 1,
            "test_rec_loss": 30.0, "run_dir": str(tmp_path / "none"), "_history": []}  # fmt: skip
    mig = [0.125, 0.25, 0.5]
    records = [
        {**base, "seed": seed, "mig": m, "dci_disentanglement": 2 * m, "dci_completeness": m / 2,
         "dci_informativeness": 0.75, "factorvae_score": 1 - m}  # fmt: skip
        for seed, m in enumerate(mig)
    ]
    write_tables(bench, records, tmp_path)
    table = (tmp_path / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert "| MIG | DCI D | DCI C | DCI I | FactorVAE |" in header
    row = next(line for line in table.splitlines() if line.startswith("| A |"))
    fvae = [1 - m for m in mig]
    for values in (mig, fvae):
        assert f"| {statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} |" in row
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "table.csv").open())}
    assert float(rows["A"]["dci_disentanglement_mean"]) == pytest.approx(2 * statistics.fmean(mig))
    assert not (tmp_path / "per_factor.md").exists()  # no run has per-factor gaps
    # sets without factors keep their columns
    write_tables(bench, [{**base, "seed": 0}], tmp_path / "plain")
    assert "MIG" not in (tmp_path / "plain" / "table.md").read_text().split("| method")[1]


def test_bench_per_factor_table_is_mean_and_standard_error(tmp_path):
    from otae.bench import BenchConfig, BenchRun, write_tables

    bench = BenchConfig(name="t", runs=[BenchRun("A", "mnist/vae-quick"),
                                        BenchRun("B", "mnist/vae-quick")])  # fmt: skip
    base = {"encoder": "P", "epochs": 1, "protocol_epochs": 1, "test_rec_loss": 30.0,
            "run_dir": str(tmp_path / "none"), "_history": []}  # fmt: skip
    x = [0.2, 0.4, 0.9]
    records = [
        {**base, "run": "A", "seed": seed, "mig": v / 2, "mig_factor_shape": 0.0,
         "mig_factor_position_x": v, "mig_posterior": v / 4,
         "mig_posterior_factor_shape": v / 2, "mig_posterior_factor_position_x": 0.0}
        for seed, v in enumerate(x)
    ] + [{**base, "run": "B", "seed": 0, "mig": 0.1}]  # scored before the per-factor keys
    write_tables(bench, records, tmp_path)
    text = (tmp_path / "per_factor.md").read_text()
    binned, posterior = text.split("## MIG of the binned")[1].split("## MIG (q)")
    assert "| method | seeds | shape | position_x | mean |" in binned.splitlines()
    se = statistics.stdev(x) / math.sqrt(3)
    mean = statistics.fmean(x)
    assert (f"| A | 3 | 0.000 ± 0.000 | {mean:.3f} ± {se:.3f} | {mean / 2:.3f} ± {se / 2:.3f} |"
            in binned.splitlines())  # fmt: skip
    assert (f"| A | 3 | {mean / 2:.3f} ± {se / 2:.3f} | 0.000 ± 0.000 | {mean / 4:.3f} ± {se / 4:.3f} |"
            in posterior.splitlines())  # fmt: skip
    assert "| B |" not in text
    header = next(line for line in (tmp_path / "table.md").read_text().splitlines()
                  if line.startswith("| method"))  # fmt: skip
    assert "| MIG | MIG (q) |" in header


def test_bench_backfills_per_factor_gaps_from_the_saved_codes(tmp_path):
    """A run scored before the per-factor keys gets them from its test_codes.npz, equal to
    a fresh scoring; codes that do not reproduce the recorded MIG are refused."""
    from otae.bench.measure import _lacks_per_factor_mig
    from otae.evaluation.traversals import per_factor_mig_from_codes

    grid = np.stack(np.unravel_index(np.arange(960) % 192, (3, 4, 16)), axis=1)
    rng = np.random.default_rng(2)
    codes = np.concatenate([grid[:, 2:] / 16 + 0.001 * rng.standard_normal((960, 1)),
                            rng.standard_normal((960, 2))], axis=1).astype(np.float32)
    np.savez(tmp_path / "test_codes.npz", codes=codes, factors=grid)
    fresh = code_disentanglement_metrics(codes, grid)
    metrics = {"mig": fresh["mig"], "disentanglement_factors": ["shape", "scale", "angle"]}
    assert _lacks_per_factor_mig(metrics, tmp_path)
    gaps = per_factor_mig_from_codes(tmp_path / "test_codes.npz",
                                     metrics["disentanglement_factors"], metrics["mig"])
    assert list(gaps.values()) == list(fresh["mig_per_factor"]) and gaps["mig_factor_angle"] > 0.9
    assert not _lacks_per_factor_mig({**metrics, **gaps}, tmp_path)
    assert not _lacks_per_factor_mig(metrics, tmp_path / "elsewhere")  # no codes: nothing to do
    with pytest.raises(ValueError, match="not the recorded"):
        per_factor_mig_from_codes(tmp_path / "test_codes.npz", ["a", "b", "c"], fresh["mig"] + 0.1)


def test_prior_marginals_statistics_of_known_laws():
    """benchmarks/prior_marginals.py: excess kurtosis 0 for Gaussian, -1.2 for uniform,
    3 for Laplace marginals (closed forms); correlation of a known mixing."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "prior_marginals.py"
    spec = importlib.util.spec_from_file_location("prior_marginals", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(0)
    n = 400_000
    gauss = module.shape_statistics(rng.standard_normal((n, 3)))
    uniform = module.shape_statistics(rng.uniform(-1, 1, (n, 3)))
    laplace = module.shape_statistics(rng.laplace(size=(n, 2)))
    assert gauss["excess_kurtosis_mean"] == pytest.approx(0.0, abs=0.03)
    assert uniform["excess_kurtosis_mean"] == pytest.approx(-1.2, abs=0.01)
    assert uniform["std_mean"] == pytest.approx(1 / np.sqrt(3), rel=1e-2)
    assert laplace["excess_kurtosis_mean"] == pytest.approx(3.0, rel=0.05)
    assert gauss["skew_abs_max"] < 0.02 and gauss["max_abs_correlation"] < 0.01
    # a 45-degree rotation of two independent uniforms: correlation 0, kurtosis -0.6
    u = rng.uniform(-1, 1, (n, 2))
    rotated = module.shape_statistics(u @ np.array([[1, 1], [-1, 1]]) / np.sqrt(2))
    assert rotated["excess_kurtosis_mean"] == pytest.approx(-0.6, abs=0.02)
    assert rotated["max_abs_correlation"] < 0.01
    mixed = module.shape_statistics(np.c_[u[:, 0], u[:, 0] + u[:, 1]])
    assert mixed["max_abs_correlation"] == pytest.approx(1 / np.sqrt(2), abs=0.01)
    # per dimension: an exponential law has skew 2 and excess kurtosis 6; a mirrored one -2
    e = rng.exponential(size=(n, 1))
    skewed = module.shape_statistics(np.c_[e, -e, rng.standard_normal((n, 1))])
    assert skewed["skew"][:2] == [pytest.approx(2.0, rel=0.05), pytest.approx(-2.0, rel=0.05)]
    assert skewed["excess_kurtosis"][0] == pytest.approx(6.0, rel=0.15)
    assert abs(skewed["skew"][2]) < 0.02
    # the sign count: only the prior's dimensions with |skew| >= 0.1 count
    assert module.skew_signs_shared([2.0, -1.5, 0.05, 0.3], [0.4, 0.2, -0.9, 0.1]) == [2, 3]
    assert module.skew_signs_shared([0.0, 0.05], [1.0, -1.0]) == [0, 0]
    # a factorised prior's parameters as constructed; other priors have none
    from otae.priors.meta import FactorisedQuantilePrior, NeuralPrior

    prior = FactorisedQuantilePrior(4, 6, generator=torch.Generator().manual_seed(0))
    params = module.factorised_parameters(prior)
    assert params["scale_mean"] == pytest.approx(1.0, rel=1e-6)
    assert params["shift_abs_mean"] == 0.0
    weights = torch.nn.functional.softplus(prior.out_weight.detach())
    assert params["tanh_weight_mean"] == pytest.approx(float(weights.mean()), rel=1e-6)
    assert 0.015 < params["tanh_weight_mean"] < 0.022  # softplus(-4) = 0.018
    assert module.factorised_parameters(NeuralPrior(4, (8,))) is None


def test_bench_fills_in_the_scores_of_a_run_measured_before_them(tmp_path):
    """A finished run whose metrics.json predates MIG (q) and the per-factor gaps gets
    them on the next bench invocation, equal to a fresh scoring, without retraining."""
    from otae.bench import load_bench, run_bench

    from .helpers import TINY_SET_SETTINGS

    path = tmp_path / "shapes.yaml"
    path.write_text(
        "name: tiny-shapes\n"
        + TINY_SET_SETTINGS.replace("data.train_subset=100, data.test_subset=50",
                                    "data.name=shapes, data.image_size=32, data.train_subset=40, "
                                    "data.test_subset=90")  # fmt: skip
        + "  - {name: VAE, config: mnist/vae-quick}\n"
    )
    bench = load_bench(path)
    out = tmp_path / "out"
    run_bench(bench, out, log=lambda m: None)
    run_dir = out / "vae" / "seed0"
    metrics_path = run_dir / "metrics.json"
    fresh = json.loads(metrics_path.read_text())
    added = [k for k in fresh if k.startswith(("mig_factor_", "mig_posterior"))]
    assert "mig_posterior" in added and len(added) == 11  # 1 + 5 + 5 factors
    old = {k: v for k, v in fresh.items() if k not in added}
    metrics_path.write_text(json.dumps(old))
    checkpoint = (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns
    run_bench(bench, out, log=lambda m: None)
    again = json.loads(metrics_path.read_text())
    for key in added:
        assert again[key] == pytest.approx(fresh[key], abs=1e-12), key
    assert (run_dir / "checkpoints" / "last.pt").stat().st_mtime_ns == checkpoint
    assert "MIG (q)" in (out / "per_factor.md").read_text()
