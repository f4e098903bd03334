"""Co-training sweeps (otae.cotraining.sweep): parsing, designs, paired statistics, outputs."""

from __future__ import annotations

import csv
import dataclasses
import math
import struct
from types import SimpleNamespace

import numpy as np
import pytest

from otae.cotraining import AESettings, ProtocolConfig, parse_factor, run_sweep, write_sweep
from otae.cotraining import sweep as sweep_module
from otae.cotraining.sweep import FACTORS, Factor, paired_difference, sweep_settings

# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("preprocess=standardise,none", ("preprocess", ["standardise", "none"])),
        ("latent_dim=2,20", ("latent_dim", [2, 20])),
        ("labels_per_class=3,all", ("labels_per_class", [3, None])),
        ("tau=0,0.5,0.9", ("tau", [0.0, 0.5, 0.9])),
        ("disjoint=true,No", ("disjoint", [True, False])),
        ("gamma=0,2.5", ("gamma", [0.0, 2.5])),
        ("latent-dim= 4", ("latent_dim", [4])),
        ("epochs=1", ("epochs", [1])),
    ],
)
def test_parse_factor_values(text, expected):
    name, values = parse_factor(text)
    assert (name, values) == expected
    assert [type(v) for v in values] == [type(v) for v in expected[1]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latent_dim", "NAME=V1,V2"),
        ("=2,3", "NAME=V1,V2"),
        ("depth=2", "unknown sweep factor 'depth'; known factors: preprocess, labels_per_class"),
        ("tau=1.5", "tau: expected a number in [0, 1], got '1.5'"),
        ("tau=nan", "tau: expected a number in [0, 1]"),
        ("gamma=-1", "gamma: expected a number in [0, inf]"),
        ("latent_dim=0", "latent_dim: expected an integer >= 1, got '0'"),
        ("epochs=2.5", "epochs: expected an integer >= 1"),
        ("latent_dim=2,,3", "latent_dim: empty value"),
        ("tau=0.5,.5", "tau: value '.5' given twice"),
        ("preprocess=zscore", "expected one of standardise, none, minmax, got 'zscore'"),
        ("labels_per_class=some", "labels_per_class: expected an integer >= 1"),
        ("disjoint=maybe", "disjoint: expected true or false"),
    ],
)
def test_parse_factor_errors_are_one_line(text, message):
    with pytest.raises(ValueError) as info:
        parse_factor(text)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- designs -----------------------------------------------------------------------------

_BASE = ProtocolConfig(ae=AESettings(latent_dim=20, tau=0.5), tsne_path="never.png")
_FACTORS = {"latent_dim": [2, 20], "tau": [0.0, 0.5]}


def test_settings_one_at_a_time_and_grid_exact_lists():
    base = {"latent_dim": 20, "tau": 0.5}
    assert sweep_settings(base, _FACTORS) == [
        {"latent_dim": 2, "tau": 0.5},
        {"latent_dim": 20, "tau": 0.5},  # the base setting, met again at tau=0.5: run once
        {"latent_dim": 20, "tau": 0.0},
    ]
    assert sweep_settings(base, _FACTORS, grid=True) == [
        {"latent_dim": 2, "tau": 0.0},
        {"latent_dim": 2, "tau": 0.5},
        {"latent_dim": 20, "tau": 0.0},
        {"latent_dim": 20, "tau": 0.5},
    ]
    # A base value outside the list: one-at-a-time never runs the base itself.
    assert sweep_settings({"latent_dim": 8, "tau": 0.5}, {"latent_dim": [2, 4], "tau": [0.9]}) == [
        {"latent_dim": 2, "tau": 0.5},
        {"latent_dim": 4, "tau": 0.5},
        {"latent_dim": 8, "tau": 0.9},
    ]


def _recorder(monkeypatch, table=None):
    """Monkeypatched run_protocol: records each call; accuracies from ``table`` keyed by
    (latent_dim, tau), or 0.5 everywhere."""
    calls = []

    def fake(views, labels, methods, seeds, config):
        calls.append(config)
        key = (config.ae.latent_dim, config.ae.tau)
        accs = table[key] if table else {m: [0.5] * len(seeds) for m in methods}
        return SimpleNamespace(
            accuracies={m: list(accs[m]) for m in methods}, diverged_cells=lambda: []
        )

    monkeypatch.setattr(sweep_module, "run_protocol", fake)
    return calls


@pytest.mark.parametrize("grid", [False, True])
def test_run_sweep_passes_each_setting_to_run_protocol(monkeypatch, grid):
    calls = _recorder(monkeypatch)
    lines = []
    res = run_sweep({}, np.zeros(3), ["independent"], [0, 1], _BASE, _FACTORS, grid, lines.append)
    expected = sweep_settings({"latent_dim": 20, "tau": 0.5}, _FACTORS, grid)
    assert res.settings == expected
    assert [(c.ae.latent_dim, c.ae.tau) for c in calls] == [
        (s["latent_dim"], s["tau"]) for s in expected
    ]
    # Everything else stays the base's; the t-SNE is off in a sweep.
    assert all(c.tsne_path is None and c.c_grid == _BASE.c_grid for c in calls)
    assert all(c.ae.epochs == _BASE.ae.epochs for c in calls)
    assert lines[0] == f"sweep setting 1/{len(expected)}: " + (
        "latent_dim=2 tau=0" if grid else "latent_dim=2 tau=0.5"
    )
    assert res.accuracies == [{"independent": [0.5, 0.5]}] * len(expected)


def test_config_factors_set_on_the_protocol_config(monkeypatch, tmp_path):
    # Stands in for ProtocolConfig once it has the other engineer's fields.
    @dataclasses.dataclass
    class Extended(ProtocolConfig):
        preprocess: str = "standardise"
        labels_per_class: int | None = None

    calls = _recorder(monkeypatch)
    factors = {"preprocess": ["none", "minmax"], "labels_per_class": ["3", "all"]}
    res = run_sweep({}, np.zeros(3), ["independent"], [0], Extended(), factors)
    assert res.factors == {"preprocess": ["none", "minmax"], "labels_per_class": [3, None]}
    assert [(c.preprocess, c.labels_per_class, type(c)) for c in calls] == [
        ("none", None, Extended),
        ("minmax", None, Extended),
        ("standardise", 3, Extended),
        ("standardise", None, Extended),
    ]
    # String and "all" values are drawn categorically and written as given.
    md = write_sweep(res, tmp_path)["md"].read_text()
    assert "## preprocess (others at base: labels_per_class=all)" in md
    assert "| minmax | 50.00 ± 0.00 |" in md and "| all | 50.00 ± 0.00 |" in md
    assert (tmp_path / "sweep.png").stat().st_size > 10_000


def test_run_sweep_refuses_bad_factors_before_running(monkeypatch):
    calls = _recorder(monkeypatch)
    cases = [
        ({"depth": [1]}, "unknown sweep factor 'depth'; known factors: preprocess"),
        ({}, "at least one factor"),
        ({"tau": [0.1]}, "at least one method"),
        ({"tau": []}, "tau: give distinct values"),
        ({"tau": [0.1, 0.1]}, "tau: give distinct values"),
        ({"tau": ["2"]}, "expected a number in [0, 1]"),
    ]
    for factors, message in cases:
        methods = [] if message == "at least one method" else ["independent"]
        with pytest.raises(ValueError) as info:
            run_sweep({}, np.zeros(3), methods, [0], _BASE, factors)
        assert message in str(info.value)
    # A known factor whose owner lacks the field (e.g. before a merge) is one clear line.
    monkeypatch.setitem(FACTORS, "shrink", Factor("config", float))
    with pytest.raises(ValueError, match=r"needs the field ProtocolConfig\.shrink, which"):
        run_sweep({}, np.zeros(3), ["independent"], [0], _BASE, {"shrink": [0.1]})
    assert calls == []


# --- paired statistics and outputs -------------------------------------------------------

_IND = [0.50, 0.52, 0.54]
_TABLE = {
    # d = GW - Ind = (1, 3, 0) pp: mean 4/3, sd(d) = sqrt(7/3), SE = sqrt(7)/3 -> not 3 SE.
    (20, 0.0): {"independent": _IND, "aes_gw": [0.51, 0.55, 0.54]},
    # d = (10, 11, 8) pp: mean 29/3, same SE sqrt(7)/3 = 0.8819 -> beyond 3 SE.
    (20, 0.5): {"independent": _IND, "aes_gw": [0.60, 0.63, 0.62]},
    (2, 0.5): {"independent": [0.40, 0.40, 0.40], "aes_gw": [0.70, 0.70, 0.70]},
    (2, 0.0): {"independent": [0.30, 0.31, 0.32], "aes_gw": [0.30, 0.30, 0.30]},
}


def test_paired_difference_against_hand_computation():
    se = math.sqrt(7.0) / 3.0
    mean, got_se, beats = paired_difference(_TABLE[(20, 0.0)]["aes_gw"], _IND)
    assert (mean, got_se, beats) == (pytest.approx(4 / 3), pytest.approx(se), False)
    mean, got_se, beats = paired_difference(_TABLE[(20, 0.5)]["aes_gw"], _IND)
    assert (mean, got_se, beats) == (pytest.approx(29 / 3), pytest.approx(se), True)
    # The unpaired SE would be far larger: pairing is what makes the flag possible.
    unpaired = math.sqrt(np.var([60, 63, 62], ddof=1) / 3 + np.var([50, 52, 54], ddof=1) / 3)
    assert unpaired > 1.5 * se
    # Constant differences: SE 0, positive mean flagged; one pair: no SE, no flag.
    assert paired_difference([0.7] * 3, [0.4] * 3) == (
        pytest.approx(30.0),
        pytest.approx(0, abs=1e-12),
        True,
    )
    mean, se1, flag = paired_difference([0.7], [0.4])
    assert mean == pytest.approx(30.0) and math.isnan(se1) and flag is False


def test_single_seed_tables_say_no_standard_error(monkeypatch, tmp_path):
    _recorder(monkeypatch, {(20, 0.5): {"independent": [0.5], "aes_gw": [0.75]}})
    res = run_sweep({}, np.zeros(3), ["independent", "aes_gw"], [0], _BASE, {"tau": [0.5]})
    paths = write_sweep(res, tmp_path)
    assert "| 0.5 | 50.00 ± 0.00 | 75.00 ± 0.00 | +25.00 ± n/a |" in paths["md"].read_text()
    row = next(csv.DictReader(paths["csv"].open()))
    assert (row["gw_minus_independent"], row["gw_minus_independent_se"]) == ("25.0000", "")
    assert row["gw_beats_independent"] == "False"


def test_write_sweep_csv_md_png_values(monkeypatch, tmp_path):
    _recorder(monkeypatch, _TABLE)
    res = run_sweep({}, np.zeros(3), ["independent", "aes_gw"], [0, 1, 2], _BASE, _FACTORS)
    paths = write_sweep(res, tmp_path / "out")

    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 3 * 2
    assert [(r["latent_dim"], r["tau"], r["method"]) for r in rows[2:]] == [
        ("20", "0.5", "independent"),
        ("20", "0.5", "aes_gw"),
        ("20", "0", "independent"),
        ("20", "0", "aes_gw"),
    ]
    ind, gw = rows[2], rows[3]
    assert (ind["n_seeds"], ind["mean"], ind["std"], ind["se"]) == (
        "3",
        "52.0000",
        "2.0000",
        "1.1547",
    )
    assert ind["accuracies"] == "50.0000;52.0000;54.0000"
    assert (gw["mean"], gw["std"], gw["se"]) == ("61.6667", "1.5275", "0.8819")
    for row in (ind, gw):
        assert row["gw_minus_independent"] == "9.6667"
        assert row["gw_minus_independent_se"] == "0.8819"
        assert row["gw_beats_independent"] == "True"
    assert (rows[5]["gw_minus_independent"], rows[5]["gw_beats_independent"]) == ("1.3333", "False")
    # latent 2: d = 30 pp on every seed -> SE 0, flagged.
    assert (rows[1]["gw_minus_independent"], rows[1]["gw_minus_independent_se"]) == (
        "30.0000",
        "0.0000",
    )

    md = paths["md"].read_text()
    assert "## latent_dim (others at base: tau=0.5)" in md
    assert "## tau (others at base: latent_dim=20)" in md
    assert "| tau | Independent AEs | AEs+GW | AEs+GW − Independent |" in md
    assert "| 0 | 52.00 ± 2.00 | 53.33 ± 2.08 | +1.33 ± 0.88 |" in md
    assert "| 0.5 | 52.00 ± 2.00 | 61.67 ± 1.53 | +9.67 ± 0.88 ✓ |" in md
    assert "| 2 | 40.00 ± 0.00 | 70.00 ± 0.00 | +30.00 ± 0.00 ✓ |" in md
    assert "| 20 | 52.00 ± 2.00 | 61.67 ± 1.53 | +9.67 ± 0.88 ✓ |" in md
    assert md.count("✓") == 3 + 1  # three rows plus the legend

    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # IHDR: 2 panels of 4.2 x 3.6 inches at 110 dpi.
    assert struct.unpack(">II", png[16:24]) == (924, 396)


def test_grid_tables_pool_the_other_factors(monkeypatch, tmp_path):
    _recorder(monkeypatch, _TABLE)
    res = run_sweep({}, np.zeros(3), ["independent", "aes_gw"], [0, 1, 2], _BASE, _FACTORS, True)
    (v0, pooled0), (v5, pooled5) = res.factor_rows("tau")
    assert (v0, v5) == (0.0, 0.5)
    # Settings in grid order (latent 2 then 20), seeds concatenated: pairs stay aligned.
    assert pooled5["aes_gw"] == [0.70, 0.70, 0.70, 0.60, 0.63, 0.62]
    assert pooled5["independent"] == [0.40, 0.40, 0.40] + _IND
    md = write_sweep(res, tmp_path)["md"].read_text()
    assert "## tau (pooled over the other factors' values)" in md
    assert (
        "## every setting" in md and "| 2 | 0 | 31.00 ± 1.00 | 30.00 ± 0.00 | -1.00 ± 0.58 |" in md
    )
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert len(rows) == 4 * 2


# --- integration -------------------------------------------------------------------------


def _two_views(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), n // 2)
    centres = rng.normal(0, 3.0, (2, 5))
    a = centres[labels] + rng.normal(0, 1.0, (n, 5))
    b = np.tanh(centres[labels, :3]) + rng.normal(0, 0.3, (n, 3))
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, labels


def test_tiny_real_sweep(tmp_path):
    views, labels = _two_views(60, seed=0)
    ae = AESettings(latent_dim=2, hidden=(8,), epochs=1, batch_size=48, hfgw_steps=2)
    base = ProtocolConfig(ae=ae, c_grid=(1.0,), logreg_max_iter=200)
    res = run_sweep(views, labels, ["independent", "aes_gw"], [3, 4], base, {"tau": ["0", "0.5"]})
    assert res.settings == [{"tau": 0.0}, {"tau": 0.5}]
    n_test = 6  # 10 % of 60, stratified
    for accs in res.accuracies:
        for values in accs.values():
            assert len(values) == 2
            assert all(0 <= v <= 1 and abs(v * n_test - round(v * n_test)) < 1e-9 for v in values)
    # tau = 0: AEs+GW is the independent model (same seed, no relational term).
    assert res.accuracies[0]["aes_gw"] == res.accuracies[0]["independent"]
    md = write_sweep(res, tmp_path)["md"].read_text()
    assert "| 0 |" in md and "+0.00 ± 0.00 |" in md
