"""Regimes of the multi-view protocol: preprocessing, label budget, disjoint views,
per-view diagnostics and the single test scoring (otae.cotraining.protocol)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from otae.cli import main
from otae.cotraining import (
    COLLAPSE_SPREAD,
    NEEDS_PAIRS,
    AESettings,
    ProtocolConfig,
    applicable_methods,
    run_protocol,
    split_views,
    write_table,
)
from otae.cotraining import protocol as protocol_module
from otae.data.multiview import labelled_subset, split_indices, stratified_parts

from .helpers import TINY_AE, class_views


def _views(n: int = 160, scale_b: float = 1.0, seed: int = 0):
    """Views a (6 columns) and b (5) of 4 classes."""
    return class_views(n, 4, (6, 5), scale_b, seed)


# --- preprocessing ------------------------------------------------------------------------


def test_preprocess_values_against_an_independent_computation():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(2), 30)
    x = rng.normal(5.0, 3.0, size=(60, 4)).astype(np.float32)
    x[:, 2] = 7.0  # a constant column
    tr, va, te = split_indices(60, labels, 11)
    train = x[tr].astype(np.float64)
    for kind in ("standardise", "none", "minmax"):
        (splits, ys) = split_views({"x": x, "y": x[:, :2]}, labels, 11, preprocess=kind)
        assert np.array_equal(ys[2], labels[te])
        for k, rows in enumerate((tr, va, te)):
            raw = x[rows].astype(np.float64)
            if kind == "none":
                expected = raw
            elif kind == "minmax":
                low, high = train.min(0), train.max(0)
                span = np.where(high > low, high - low, 1.0)
                expected = np.where(high > low, (raw - low) / span, 0.0)
            else:
                mean, std = train.mean(0), train.std(0)
                expected = np.where(std > 1e-6, (raw - mean) / np.where(std > 1e-6, std, 1), 0)
            assert splits[k][0].dtype == np.float32
            np.testing.assert_allclose(splits[k][0], expected, rtol=1e-5, atol=1e-5)
        if kind == "minmax":
            assert splits[0][0].min() == 0 and splits[0][0].max() == 1
            assert np.all(splits[1][0][:, 2] == 0)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        split_views({"x": x}, labels, 0, preprocess="zscore")
    with pytest.raises(ValueError, match="preprocess must be one of standardise, none, minmax"):
        ProtocolConfig(preprocess="zscore")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="labels_per_class must be"):
            ProtocolConfig(labels_per_class=bad)


# --- label budget -------------------------------------------------------------------------


def test_labelled_subset_picks_exactly_n_per_class_deterministically():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(5), [9, 12, 7, 10, 8]))
    picked = labelled_subset(labels, 4, seed=2)
    assert picked.dtype == np.int64 and np.all(np.diff(picked) > 0)
    assert picked.min() >= 0 and picked.max() < len(labels)
    assert np.bincount(labels[picked]).tolist() == [4] * 5
    assert np.array_equal(picked, labelled_subset(labels, 4, seed=2))
    assert not np.array_equal(picked, labelled_subset(labels, 4, seed=3))
    assert np.bincount(labels[labelled_subset(labels, 7, seed=1)]).tolist() == [7] * 5
    with pytest.raises(ValueError, match=r"fewer training rows .*\{2: 7\}"):
        labelled_subset(labels, 8, seed=0)


def test_protocol_classifier_sees_only_the_labelled_rows(monkeypatch):
    views, labels = _views()
    fitted_sizes = []
    original_fit = Pipeline.fit

    def counting_fit(self, x, y, **kw):
        fitted_sizes.append(np.bincount(y, minlength=4).tolist())
        return original_fit(self, x, y, **kw)

    monkeypatch.setattr(Pipeline, "fit", counting_fit)
    config = ProtocolConfig(ae=TINY_AE, c_grid=(1.0,), labels_per_class=3)
    res = run_protocol(views, labels, ("independent", "cca"), seeds=(4,), config=config)
    # independent: 1 candidate + 2 single views; cca: 1 candidate
    assert fitted_sizes == [[3, 3, 3, 3]] * 4
    assert res.labels_per_class == 3 and len(res.accuracies["cca"]) == 1


# --- disjoint views -----------------------------------------------------------------------


def test_stratified_parts_are_disjoint_cover_and_stratified():
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(3), [10, 7, 14]))
    for n_parts in (2, 3):
        parts = stratified_parts(labels, n_parts, seed=5)
        joined = np.concatenate(parts)
        assert np.array_equal(np.sort(joined), np.arange(len(labels)))  # disjoint + cover
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1
        counts = np.array([np.bincount(labels[p], minlength=3) for p in parts])
        assert np.all(counts.max(0) - counts.min(0) <= 1)
        again = stratified_parts(labels, n_parts, 5)
        assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))


def test_disjoint_protocol_trains_each_view_on_its_part_and_marks_paired_methods(
    monkeypatch, tmp_path
):
    views, labels = _views()
    seen = []
    original_fit = protocol_module.make_method

    def recording_make_method(*args, **kwargs):
        method = original_fit(*args, **kwargs)
        fit = method.fit
        method.fit = lambda train_views: (seen.append(train_views), fit(train_views))[1]
        return method

    monkeypatch.setattr(protocol_module, "make_method", recording_make_method)
    config = ProtocolConfig(ae=TINY_AE, c_grid=(1.0,), disjoint=True)
    res = run_protocol(views, labels, ("independent", "coreg", "cca", "aes_gw"), (0,), config)
    splits, ys = split_views(views, labels, 0)
    parts = stratified_parts(ys[0], 2, (0, 1))
    assert len(seen) == 2  # independent and aes_gw only
    for train_views in seen:
        for k in range(2):
            np.testing.assert_array_equal(train_views[k], splits[0][k][parts[k]])
    assert res.skipped == {"coreg": NEEDS_PAIRS, "cca": NEEDS_PAIRS}
    assert res.accuracies["coreg"] == [] and len(res.accuracies["aes_gw"]) == 1
    text = write_table(res, tmp_path / "t.md", tmp_path / "t.csv", dataset="toy")
    assert f"| AEs+CoReg | paired | {NEEDS_PAIRS} |" in text
    assert f"| CCA | paired | {NEEDS_PAIRS} |" in text
    assert "disjoint part of the training rows" in text and "over 1 seeds" in text
    csv_text = (tmp_path / "t.csv").read_text()
    assert f"coreg,AEs+CoReg,paired,toy,0,0,,,,,,,standardise,all,True,{NEEDS_PAIRS}" in csv_text

    assert applicable_methods(["independent", "coreg"], disjoint=False) == (
        ["independent", "coreg"],
        {},
    )
    with pytest.raises(ValueError, match="none of the paired methods"):
        applicable_methods(["coreg", "cca"], disjoint=True)


# --- diagnostics and selection ------------------------------------------------------------


@pytest.mark.parametrize(("preprocess", "collapsed"), [("none", True), ("standardise", False)])
def test_collapse_of_a_tiny_variance_view_is_flagged(preprocess, collapsed, tmp_path):
    views, labels = _views(scale_b=1e-3)
    config = ProtocolConfig(ae=TINY_AE, c_grid=(1.0,), preprocess=preprocess)
    res = run_protocol(views, labels, ("independent",), seeds=(0,), config=config)
    diag = res.diagnostics["independent"][0]
    assert set(diag) == {"a", "b"}
    assert diag["a"]["spread"] >= COLLAPSE_SPREAD
    assert (diag["b"]["spread"] < COLLAPSE_SPREAD) == collapsed
    text = write_table(res, tmp_path / "t.md", tmp_path / "t.csv")
    flag = "yes" if collapsed else "no"
    assert f"| Independent AEs | b | {diag['b']['spread']:.4g} |" in text
    assert text.rstrip().endswith(f"| {flag} |")
    assert f"collapsed = spread < {COLLAPSE_SPREAD:g}" in text
    assert f"Regime: preprocess {preprocess};" in text
    rows = (tmp_path / "t_diagnostics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith("independent,b,1,") and rows[2].endswith(flag)


def test_test_split_is_scored_once_and_diagnostics_match_a_recomputation(monkeypatch, tmp_path):
    views, labels = _views()
    settings = AESettings(**{**TINY_AE.__dict__, "epochs": 3, "checkpoints": (1, 2)})
    captured = {}
    original_split, original_make = protocol_module.split_views, protocol_module.make_method

    def recording_split(*args, **kwargs):
        captured["splits"], captured["ys"] = original_split(*args, **kwargs)
        return captured["splits"], captured["ys"]

    def recording_make(*args, **kwargs):
        captured["method"] = original_make(*args, **kwargs)
        return captured["method"]

    calls = {"test": 0, "val": 0}
    original_score = Pipeline.score

    def counting_score(self, x, y, **kw):
        calls["test" if y is captured["ys"][2] else "val"] += 1
        return original_score(self, x, y, **kw)

    monkeypatch.setattr(protocol_module, "split_views", recording_split)
    monkeypatch.setattr(protocol_module, "make_method", recording_make)
    monkeypatch.setattr(Pipeline, "score", counting_score)
    config = ProtocolConfig(ae=settings, c_grid=(0.1, 1.0))
    res = run_protocol(views, labels, ("aes_gw",), seeds=(1,), config=config)
    # 3 epochs x 2 C for the model, 2 views x 2 C for the diagnostics
    assert calls == {"test": 1 + 2, "val": 3 * 2 + 2 * 2}
    assert res.epoch_selection

    # the diagnostics recomputed from the fitted model (selected epoch)
    method, (train, val, test), ys = captured["method"], captured["splits"], captured["ys"]
    epoch, _ = res.selected["aes_gw"][0]
    method.model.load_state_dict(method.snapshots[epoch])
    with torch.no_grad():
        for k, name in enumerate(("a", "b")):
            means = [
                method.model.encode(k, torch.as_tensor(s[k]))[0] for s in (train, val, test)
            ]
            spread = float(means[0].double().std(0, unbiased=False).mean())
            assert res.diagnostics["aes_gw"][0][name]["spread"] == pytest.approx(spread, rel=1e-5)
            best = max(
                (original_score(clf, means[1].numpy(), ys[1]), -i, clf)
                for i, clf in enumerate(
                    make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)).fit(
                        means[0].numpy(), ys[0]
                    )
                    for c in (0.1, 1.0)
                )
            )[2]
            accuracy = original_score(best, means[2].numpy(), ys[2])
            assert res.diagnostics["aes_gw"][0][name]["accuracy"] == pytest.approx(accuracy)
    text = write_table(res, tmp_path / "t.md", tmp_path / "t.csv")
    assert "C and epoch selected" in text


def test_table_note_says_c_selected_without_checkpoints(tmp_path):
    views, labels = _views(n=80)
    config = ProtocolConfig(ae=TINY_AE, c_grid=(1.0,))
    res = run_protocol(views, labels, ("cca",), seeds=(0,), config=config)
    text = write_table(res, tmp_path / "t.md", tmp_path / "t.csv")
    assert "C selected on the validation split" in text and "epoch" not in text
    assert not (tmp_path / "t_diagnostics.csv").exists()  # CCA has no per-view diagnostics


# --- CLI ----------------------------------------------------------------------------------


def test_cli_regime_options(tmp_path, monkeypatch, capsys):
    views, labels = _views(n=80)
    np.savez(tmp_path / "toy.npz", view_a=views["a"], view_b=views["b"], y=labels)
    monkeypatch.chdir(tmp_path)
    base = ["multiview", "--data", "toy.npz", "--seeds", "1", "--epochs", "1", "--latent-dim", "2"]
    assert main([*base, "--methods", "coreg,cca", "--disjoint"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "none of the paired methods" in err
    assert main([*base, "--labels-per-class", "0"]) == 2
    assert "--labels-per-class must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's own one-line choices error
        main([*base, "--preprocess", "zscore"])
    assert stop.value.code == 2
    assert not (tmp_path / "runs").exists()

    args = [*base, "--methods", "independent,cca", "--disjoint", "--preprocess", "minmax"]
    assert main([*args, "--labels-per-class", "2"]) == 0
    out = tmp_path / "runs" / "multiview" / "toy-a+b-minmax-2perclass-disjoint"
    table = (out / "table.md").read_text()
    assert f"| CCA | paired | {NEEDS_PAIRS} |" in table
    assert "Regime: preprocess minmax; classifier on 2 labelled training rows per class" in table
    assert (out / "table_diagnostics.csv").is_file()
