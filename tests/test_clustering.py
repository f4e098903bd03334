"""Clustering of latent codes: scores against brute force and hand formulas, the prior's
responsibility rule against numpy/scipy densities, and the metrics a run writes."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from otae.evaluation import (
    adjusted_rand_index,
    cluster_assignments,
    clustering_accuracy,
    clustering_metrics,
    dataset_clustering_metrics,
    kmeans_assignments,
    normalized_mutual_information,
    prior_assignments,
    saved_clusters,
)
from otae.evaluation.clustering import contingency_table, prior_log_responsibilities
from otae.models import build_model, model_config_from_dict
from otae.priors import (
    FactorisedQuantilePrior,
    GaussianMixturePrior,
    SphereUniformPrior,
    StandardNormalPrior,
    VonMisesFisherMixturePrior,
)

from .helpers import train_tiny_run

IMAGE_SHAPE = (1, 8, 8)


class Holder(torch.nn.Module):
    """What the assignment functions read of a model: its ``prior``."""

    def __init__(self, prior) -> None:
        super().__init__()
        self.prior = prior


# ---------------------------------------------------------------------- scores
def brute_force_accuracy(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Best fraction over every one-to-one map of clusters to classes (padded to M x M)."""
    classes, clusts = np.unique(labels), np.unique(clusters)
    m = max(len(classes), len(clusts))
    best = 0
    for perm in itertools.permutations(range(m)):
        hits = 0
        for j, c in enumerate(clusts):
            if perm[j] < len(classes):
                hits += int(np.sum((clusters == c) & (labels == classes[perm[j]])))
        best = max(best, hits)
    return best / labels.size


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def hand_nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """``I(Y; C) / ((H(Y) + H(C)) / 2)`` from the contingency counts."""
    n = labels.size
    ys, cs = np.unique(labels), np.unique(clusters)
    table = np.array([[np.sum((labels == y) & (clusters == c)) for c in cs] for y in ys])
    a, b = table.sum(1), table.sum(0)
    mi = sum(
        table[i, j] / n * math.log(n * table[i, j] / (a[i] * b[j]))
        for i in range(len(ys))
        for j in range(len(cs))
        if table[i, j]
    )
    return mi / (0.5 * (entropy(a) + entropy(b)))


def hand_ari(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Hubert & Arabie: ``(index - expected) / (max - expected)`` on pair counts."""
    n = labels.size
    ys, cs = np.unique(labels), np.unique(clusters)
    table = np.array([[np.sum((labels == y) & (clusters == c)) for c in cs] for y in ys])
    pairs = np.vectorize(lambda v: math.comb(int(v), 2))
    index = pairs(table).sum()
    rows, cols = pairs(table.sum(1)).sum(), pairs(table.sum(0)).sum()
    expected = rows * cols / math.comb(n, 2)
    return (index - expected) / (0.5 * (rows + cols) - expected)


@pytest.mark.parametrize(("n_classes", "n_clusters"), [(3, 3), (2, 5), (5, 2), (4, 5), (5, 5)])
def test_scores_equal_brute_force_and_hand_formulas(n_classes, n_clusters):
    rng = np.random.default_rng(10 * n_classes + n_clusters)
    for _ in range(4):
        # non-contiguous ids; clusters correlated with the classes so that the map matters
        labels = rng.choice(np.array([7, 2, 9, 4, 11])[:n_classes], size=40)
        clusters = np.where(rng.random(40) < 0.6, labels % n_clusters, rng.integers(n_clusters, size=40))
        clusters = 3 * clusters + 1
        assert clustering_accuracy(labels, clusters) == pytest.approx(
            brute_force_accuracy(labels, clusters), abs=1e-15
        )
        assert normalized_mutual_information(labels, clusters) == pytest.approx(
            hand_nmi(labels, clusters), rel=1e-12
        )
        assert adjusted_rand_index(labels, clusters) == pytest.approx(
            hand_ari(labels, clusters), rel=1e-12
        )


def test_scores_of_known_small_cases():
    same = [0, 0, 1, 1, 2, 2]
    renamed = [5, 5, 3, 3, 4, 4]
    assert clustering_accuracy(same, renamed) == 1.0
    assert normalized_mutual_information(same, renamed) == pytest.approx(1.0)
    assert adjusted_rand_index(same, renamed) == pytest.approx(1.0)
    # two classes, four clusters: the best map matches two clusters (2 + 1 of 4 points)
    assert clustering_accuracy([0, 0, 0, 1], [0, 0, 1, 2]) == 0.75
    # ARI of sklearn's documented example: 4/7
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    np.testing.assert_array_equal(contingency_table([3, 3, 1], [0, 2, 2]), [[0, 1], [1, 1]])


def test_bad_score_inputs_raise_one_clear_error():
    with pytest.raises(ValueError, match="same length"):
        clustering_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="integer ids"):
        normalized_mutual_information([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="one-dimensional"):
        adjusted_rand_index(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="empty"):
        clustering_accuracy([], [])
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_assignments(torch.zeros(3, 2), 4)


# ---------------------------------------------------------------------- prior responsibilities
def test_gaussian_mixture_responsibilities_equal_scipy_densities():
    gen = torch.Generator().manual_seed(3)
    prior = GaussianMixturePrior(3, 5, generator=gen)
    with torch.no_grad():
        prior.logvars.copy_(torch.randn(5, 3, generator=gen) * 0.5)
    codes = 2.0 * torch.randn(200, 3, generator=gen)
    z, means = codes.double().numpy(), prior.means.detach().double().numpy()
    # the prior's float32 standard deviations, squared in float64 (the density is the check)
    variances = prior.stds.detach().double().numpy() ** 2
    expected = np.stack(
        [
            math.log(1 / 5) + stats.multivariate_normal(means[k], np.diag(variances[k])).logpdf(z)
            for k in range(5)
        ],
        axis=1,
    )
    got = prior_log_responsibilities(prior, codes).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_array_equal(prior_assignments(Holder(prior), codes), expected.argmax(1))


def test_vmf_mixture_responsibilities_equal_numpy_densities():
    gen = torch.Generator().manual_seed(4)
    d, k, kappa = 5, 4, 7.5
    prior = VonMisesFisherMixturePrior(d, k, kappa=kappa, generator=gen)
    codes = torch.nn.functional.normalize(torch.randn(150, d, generator=gen), dim=1)
    mu = prior.unit_locations.detach().double().numpy()
    nu = d / 2 - 1
    log_c = nu * math.log(kappa) - d / 2 * math.log(2 * math.pi) - math.log(special.iv(nu, kappa))
    expected = math.log(1 / k) + log_c + kappa * codes.double().numpy() @ mu.T
    np.testing.assert_allclose(prior_log_responsibilities(prior, codes).numpy(), expected, rtol=1e-9)
    # the argmax of kappa <z, mu_k> does not depend on the codes' norms
    clusters = prior_assignments(Holder(prior), 3.0 * codes)
    np.testing.assert_array_equal(clusters, expected.argmax(1))


def test_vampprior_clusters_by_its_encoder_posteriors():
    torch.manual_seed(0)
    config = model_config_from_dict({"name": "vampprior", "latent_dim": 3, "n_components": 4})
    model = build_model(config, IMAGE_SHAPE, "mlp", {"hidden": (16,)})
    codes = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    model.train()
    clusters, source = cluster_assignments(model, codes, n_clusters=4)
    assert source == "prior" and model.training  # evaluated in eval mode, mode restored
    model.eval()
    with torch.no_grad():
        means, stds = model.prior.gaussian_components()
    densities = np.stack(
        [
            stats.multivariate_normal(means[k].double().numpy(), np.diag(stds[k].double().numpy() ** 2))
            .logpdf(codes.double().numpy())
            for k in range(4)
        ],
        axis=1,
    )
    np.testing.assert_array_equal(clusters, densities.argmax(1))


@pytest.mark.parametrize(
    "prior",
    [
        StandardNormalPrior(3),
        SphereUniformPrior(3),
        FactorisedQuantilePrior(3, generator=torch.Generator().manual_seed(0)),
        GaussianMixturePrior(3, 1),
        VonMisesFisherMixturePrior(3, 4, kappa=0.0),
    ],
    ids=["normal", "sphere_uniform", "factorised", "gmm-1", "vmf-kappa0"],
)
def test_priors_without_components_fall_back_to_kmeans(prior):
    codes = torch.randn(30, 3, generator=torch.Generator().manual_seed(2))
    assert prior_assignments(Holder(prior), codes) is None
    clusters, source = cluster_assignments(Holder(prior), codes, n_clusters=3)
    assert source == "kmeans"
    expected = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(codes.double().numpy())
    np.testing.assert_array_equal(clusters, expected)
    out = clustering_metrics(Holder(prior), codes, np.arange(30) % 3)
    assert out["cluster_acc_kmeans"] == clustering_accuracy(np.arange(30) % 3, expected)
    prior_keys = [k for k in out if k.endswith("_prior") or k.startswith("cluster_prior_")]
    assert len(prior_keys) == 5 and all(out[k] is None for k in prior_keys)


def test_well_separated_blobs_are_recovered_by_both_sources():
    gen = torch.Generator().manual_seed(5)
    prior = GaussianMixturePrior(4, 6, generator=gen, init_scale=10.0, init_std=0.1)
    per = 40
    components = torch.arange(6).repeat_interleave(per)
    codes = torch.cat([prior.sample_component(k, per, gen) for k in range(6)]).detach()
    labels = (components * 7 + 3) % 6 + 100  # classes named unlike the components
    out = clustering_metrics(Holder(prior), codes, labels)
    for key in ("acc", "nmi", "ari"):
        assert out[f"cluster_{key}_kmeans"] == pytest.approx(1.0)
        assert out[f"cluster_{key}_prior"] == pytest.approx(1.0)
    assert (out["cluster_classes"], out["cluster_points"], out["cluster_prior_components"]) == (
        6, 6 * per, 6,
    )  # fmt: skip
    np.testing.assert_array_equal(prior_assignments(Holder(prior), codes), components.numpy())
    assert out["cluster_prior_components_used"] == 6
    # codes of two components only: the other four are the most responsible for none
    two = torch.cat([codes[components == 1], codes[components == 4]])
    used = clustering_metrics(Holder(prior), two, np.arange(2 * per) // per)
    assert used["cluster_prior_components_used"] == 2
    assert used["cluster_prior_components"] == 6


def test_unlabelled_or_single_class_data_only_get_a_note():
    from otae.data import TensorImageDataset

    model = build_model(
        model_config_from_dict({"name": "vae", "latent_dim": 2}), IMAGE_SHAPE, "mlp", {"hidden": (8,)}
    )
    images = torch.randint(0, 256, (12, *IMAGE_SHAPE), dtype=torch.uint8)
    out = dataset_clustering_metrics(model, TensorImageDataset(images))
    assert out == {"clustering": "skipped: the test images are unlabelled"}
    out = dataset_clustering_metrics(model, TensorImageDataset(images, torch.zeros(12)))
    assert out == {"clustering": "skipped: the test images have a single class"}


# ---------------------------------------------------------------------- a run
def test_a_run_writes_the_clustering_of_its_saved_test_codes(tmp_path):
    from otae.evaluation import encode_dataset
    from otae.experiment import evaluate_model
    from otae.training import build_split, load_run

    run = train_tiny_run(tmp_path / "run", "mnist/drae-quick")
    metrics = json.loads((run / "metrics.json").read_text())
    saved = np.load(run / "test_codes.npz")
    codes, labels = saved["codes"], saved["labels"]
    config, model, state = load_run(run, "last")
    test_data = build_split(config.data, "test")
    # the saved codes are the checkpoint's posterior means of the test images, and labels
    np.testing.assert_allclose(codes, encode_dataset(model, test_data).numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, test_data.labels.numpy())
    n_classes = np.unique(labels).size
    assert (metrics["cluster_points"], metrics["cluster_classes"]) == (60, n_classes)
    # k-means and the GMM prior's responsibilities, again by hand
    kmeans = KMeans(n_clusters=n_classes, n_init=10, random_state=0).fit_predict(
        codes.astype(np.float64)
    )
    means, stds = (t.detach().double().numpy() for t in model.prior.gaussian_components())
    prior = np.stack(
        [stats.multivariate_normal(means[k], np.diag(stds[k] ** 2)).logpdf(codes) for k in range(10)],
        axis=1,
    ).argmax(1)
    for source, clusters in (("kmeans", kmeans), ("prior", prior)):
        table = np.array([[np.sum((labels == y) & (clusters == c)) for c in np.unique(clusters)]
                          for y in np.unique(labels)])  # fmt: skip
        rows, cols = linear_sum_assignment(-table)
        assert metrics[f"cluster_acc_{source}"] == pytest.approx(table[rows, cols].sum() / 60)
        assert metrics[f"cluster_nmi_{source}"] == pytest.approx(hand_nmi(labels, clusters))
        assert metrics[f"cluster_ari_{source}"] == pytest.approx(hand_ari(labels, clusters))
        assert 0 <= metrics[f"cluster_acc_{source}"] <= 1
        assert 0 <= metrics[f"cluster_nmi_{source}"] <= 1
        assert -0.5 <= metrics[f"cluster_ari_{source}"] <= 1
        # the scored clusters are saved beside the codes (the report plots these)
        np.testing.assert_array_equal(saved[f"clusters_{source}"], clusters)
    found, source = saved_clusters(run / "test_codes.npz")
    assert source == "prior"
    np.testing.assert_array_equal(found, prior)
    assert metrics["cluster_prior_components"] == 10 and metrics["clustering_time_s"] > 0
    assert metrics["cluster_prior_components_used"] == len(np.unique(prior))
    # the switch: no clustering, no scores (and no note)
    config.evaluation.clustering = False
    again = evaluate_model(model, config, run, list(state["history"]), report=False, log=None)
    assert not any(k.startswith("cluster") for k in again.metrics)


# ---------------------------------------------------------------------- report and bench
def test_report_shows_a_clustering_section(tmp_path):
    from otae.evaluation import write_report

    metrics = {"cluster_classes": 10, "cluster_points": 60, "cluster_prior_components": 10,
               "cluster_acc_kmeans": 0.625, "cluster_nmi_kmeans": 0.5, "cluster_ari_kmeans": -0.125,
               "cluster_acc_prior": 0.375, "cluster_nmi_prior": 0.25, "cluster_ari_prior": 0.0625}
    page = write_report(tmp_path, title="t", config={}, metrics=metrics, figures={}, history=[])
    section = page.read_text().split("<h2>Clustering</h2>")[1].split("<h2>")[0]
    kmeans, prior = section.split("<tr>")[2:4]
    assert [v in kmeans for v in (">k-means<", ">0.625<", ">0.5<", ">-0.125<")] == [True] * 4
    assert [v in prior for v in (">prior components<", ">0.375<", ">0.25<", ">0.0625<")] == [
        True
    ] * 4
    assert "10 classes" in section and "10 prior components" in section
    assert "of them are for some code" not in section  # not measured: not claimed
    used = {**metrics, "cluster_prior_components_used": 7}
    page = write_report(tmp_path, title="t", config={}, metrics=used, figures={}, history=[])
    assert "10 prior components (7 of them are for some code)" in page.read_text()
    note = {"clustering": "skipped: the test images are unlabelled"}
    page = write_report(tmp_path, title="t", config={}, metrics=note, figures={}, history=[])
    assert "<h2>Clustering</h2>\n<p>skipped: the test images are unlabelled</p>" in page.read_text()
    no_prior = {**metrics, "cluster_acc_prior": None, "cluster_prior_components": None}
    page = write_report(tmp_path, title="t", config={}, metrics=no_prior, figures={}, history=[])
    assert "prior components" not in page.read_text().split("<h2>Clustering</h2>")[1]
    page = write_report(tmp_path, title="t", config={}, metrics={"x": 1}, figures={}, history=[])
    assert "Clustering" not in page.read_text()


def test_bench_tables_have_the_clustering_columns(tmp_path):
    import csv
    import statistics

    from otae.bench import BenchConfig, BenchRun, write_tables

    bench = BenchConfig(name="t", runs=[BenchRun("A", "mnist/vae-quick"),
                                        BenchRun("B", "mnist/drae-quick")])  # fmt: skip
    base = {"encoder": "D", "epochs": 1, "protocol_epochs": 1, "test_rec_loss": 30.0,
            "run_dir": str(tmp_path / "none"), "_history": []}  # fmt: skip
    acc = {("A", 0): 0.5, ("A", 1): 0.625, ("B", 0): 0.75, ("B", 1): 0.875}
    records = []
    for (run, seed), value in acc.items():
        record = {"run": run, "seed": seed, **base, "cluster_acc_kmeans": value,
                  "cluster_nmi_kmeans": value / 2, "cluster_ari_kmeans": value / 4}  # fmt: skip
        if run == "B":  # only B has a mixture prior
            record.update(cluster_acc_prior=value, cluster_nmi_prior=0.5, cluster_ari_prior=0.25)
        records.append(record)
    write_tables(bench, records, tmp_path)
    table = (tmp_path / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    for column in ("ACC k-means", "NMI k-means", "ARI k-means", "ACC prior", "ARI prior"):
        assert f"| {column} |" in header
    row_a = next(line for line in table.splitlines() if line.startswith("| A |"))
    mean, std = statistics.fmean([0.5, 0.625]), statistics.stdev([0.5, 0.625])
    assert f"| {mean:.3f} ± {std:.3f} |" in row_a and "| — | — | — |" in row_a
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "table.csv").open())}
    assert float(rows["B"]["cluster_acc_prior_mean"]) == pytest.approx(0.8125)
    assert rows["A"]["cluster_acc_prior_mean"] == ""  # not measured
    assert ">0.8125<" in (tmp_path / "report.html").read_text()  # B's mean, in the bench report
