"""Per-cell isolation of the multi-view protocol: a diverging (seed, method) cell is
recorded and the others still run; finished cells are kept on disk and a killed run
resumes from them; the scale warning; the --seeds parser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from otae.cli import main, parse_seeds
from otae.cotraining import (
    AESettings,
    Cell,
    CellStore,
    CoTrainingDiverged,
    MultiViewAutoencoders,
    ProtocolConfig,
    divergence_summary,
    format_accuracy,
    run_protocol,
    scale_warning,
    setting_key,
    train_cotraining,
    write_table,
)
from otae.cotraining.sweep import paired_difference, run_sweep, write_sweep

from .helpers import TINY_AE, class_views

#: a learning rate at which the first update already wrecks the toy's autoencoders
HUGE_LR = AESettings(latent_dim=3, hidden=(16,), epochs=2, batch_size=32, lr=100.0, hfgw_steps=5)


def _views(n: int = 120, scale_b: float = 1.0, seed: int = 0):
    """Views a (5 columns) and b (4) of 3 classes."""
    return class_views(n, 3, (5, 4), scale_b, seed)


# --- the training loop ----------------------------------------------------------------------


def test_training_stops_at_the_first_non_finite_step_before_its_update():
    views, _ = _views()
    model = MultiViewAutoencoders([5, 4], latent_dims=2, hidden=(8,), view_names=["a", "b"], seed=0)
    model.autoencoders[1].mean_head.bias.data.fill_(math.inf)  # view b's codes are infinite
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CoTrainingDiverged) as caught:
        train_cotraining(model, [views["a"], views["b"]], epochs=2, batch_size=40)
    err = caught.value
    assert (err.epoch, err.step) == (1, 1)
    # view b's terms are named; view a's reconstruction is finite and not blamed
    assert "rec_b" in err.non_finite and "rec_a" not in err.non_finite
    assert math.isfinite(err.terms["rec_a"]) and not math.isfinite(err.terms["total"])
    # the bad step was not applied
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_learning_rate_divergence_is_caught_after_the_first_update():
    views, _ = _views()
    model = MultiViewAutoencoders([5, 4], latent_dims=2, hidden=(8,), view_names=["a", "b"], seed=0)
    with pytest.raises(CoTrainingDiverged) as caught:
        train_cotraining(model, [views["a"], views["b"]], epochs=2, batch_size=40, lr=100.0)
    assert caught.value.epoch == 1 and caught.value.step == 2
    assert "co-training diverged at epoch 1, step 2" in str(caught.value)


# --- isolation in the protocol -------------------------------------------------------------


def test_diverging_cells_leave_the_others_intact_and_marked(tmp_path):
    views, labels = _views()
    mixed = run_protocol(views, labels, ["independent", "cca"], [0, 1], ProtocolConfig(ae=HUGE_LR))
    alone = run_protocol(views, labels, ["cca"], [0, 1], ProtocolConfig(ae=HUGE_LR))
    # CCA does not train by gradient: its cells finish, with the values of a run without
    # the diverging method
    assert mixed.accuracies["cca"] == alone.accuracies["cca"]
    assert all(0.0 < a <= 1.0 for a in mixed.accuracies["cca"])
    assert all(math.isnan(a) for a in mixed.accuracies["independent"])
    records = mixed.diverged["independent"]
    assert sorted(records) == [0, 1] and "cca" not in mixed.diverged
    for record in records.values():
        assert (record["epoch"], record["step"]) == (1, 2)  # after the first update
        assert "learning rate 100" in record["cause"] and "--lr" in record["fix"]
    text = write_table(mixed, tmp_path / "t.md", tmp_path / "t.csv")
    assert "| Independent AEs | unpaired | diverged (2 of 2 seeds) |" in text
    assert (
        "2 of 4 cells diverged" in text and "seed 1, Independent AEs: diverged at epoch 1" in text
    )
    csv_rows = (tmp_path / "t.csv").read_text().splitlines()
    independent = next(r for r in csv_rows if r.startswith("independent,"))
    assert ",2,2,,,diverged;diverged," in independent  # n_seeds, n_diverged, no mean / std
    summary = divergence_summary(mixed)
    assert summary.startswith("2 of 4 cells diverged: seed 0 independent (epoch 1: ")


def test_an_overflow_before_any_update_names_the_input_scale():
    views, labels = _views(scale_b=1e30)
    results = run_protocol(views, labels, ["independent"], [0], ProtocolConfig(ae=TINY_AE,
                           preprocess="none"))  # fmt: skip
    record = results.diverged["independent"][0]
    assert (record["epoch"], record["step"]) == (1, 1)
    assert "before any update" in record["cause"] and "(b)" in record["cause"]
    assert record["fix"] == "standardise the views (--preprocess standardise)"
    # standardised, the same data trains
    fine = run_protocol(views, labels, ["independent"], [0], ProtocolConfig(ae=TINY_AE))
    assert not fine.diverged and fine.accuracies["independent"][0] > 0.5


def test_summaries_use_the_finished_cells_only():
    assert format_accuracy([0.5, math.nan, 0.7]) == "60.00 ± 14.14 (2 of 3 seeds; 1 diverged)"
    assert format_accuracy([math.nan, math.nan]) == "diverged (2 of 2 seeds)"
    assert format_accuracy([0.5, 0.7]) == "60.00 ± 14.14"
    # the paired difference drops seeds where either side diverged
    mean, se, _ = paired_difference([0.6, math.nan, 0.8, 0.9], [0.5, 0.5, math.nan, 0.7])
    d = np.array([10.0, 20.0])
    assert mean == pytest.approx(d.mean()) and se == pytest.approx(d.std(ddof=1) / math.sqrt(2))


def test_a_sweep_lists_its_diverged_cells(tmp_path):
    views, labels = _views()
    results = run_sweep(views, labels, ["independent", "aes_gw"], [0], ProtocolConfig(ae=TINY_AE),
                        {"epochs": [1]})  # fmt: skip
    assert not results.diverged
    huge = ProtocolConfig(ae=HUGE_LR)
    results = run_sweep(views, labels, ["independent", "aes_gw"], [0, 1], huge, {"tau": [0.0, 0.5]})
    assert len(results.diverged) == 8  # every cell: 2 settings x 2 seeds x 2 methods
    paths = write_sweep(results, tmp_path)
    text = paths["md"].read_text()
    assert "## diverged cells (8 of 8, left out of the means)" in text
    assert "n/a (no seed where both finished)" in text


# --- finished cells on disk, resume ----------------------------------------------------------


class _Killed(BaseException):
    pass


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    views, labels = _views()
    cells = tmp_path / "cells.jsonl"
    methods, seeds = ["independent", "aes_gw"], [0, 1]
    trained: list[str] = []

    def kill_after_two(line: str) -> None:
        if ": test " in line:
            trained.append(line)
            if len(trained) == 2:
                raise _Killed

    with pytest.raises(_Killed):
        run_protocol(views, labels, methods, seeds,
                     ProtocolConfig(ae=TINY_AE, cells=cells, log=kill_after_two))  # fmt: skip
    assert len(CellStore(cells)) == 2  # both finished cells were written as they finished
    lines: list[str] = []
    resumed = run_protocol(views, labels, methods, seeds,
                           ProtocolConfig(ae=TINY_AE, cells=cells, log=lines.append))  # fmt: skip
    assert resumed.resumed == 2
    assert sum("finished before" in line for line in lines) == 2
    # every cell is reported once, resumed or trained
    assert sum(": test " in line for line in lines) == 4
    straight = run_protocol(views, labels, methods, seeds, ProtocolConfig(ae=TINY_AE))
    assert resumed.accuracies == straight.accuracies
    assert resumed.diagnostics == straight.diagnostics  # JSON keeps floats exactly
    # a third run trains nothing
    again = run_protocol(views, labels, methods, seeds, ProtocolConfig(ae=TINY_AE, cells=cells))
    assert again.resumed == 4 and again.accuracies == straight.accuracies
    # --fresh trains everything again
    fresh = run_protocol(views, labels, methods, seeds,
                         ProtocolConfig(ae=TINY_AE, cells=cells, fresh=True))  # fmt: skip
    assert fresh.resumed == 0 and fresh.accuracies == straight.accuracies


def test_a_changed_setting_or_dataset_does_not_reuse_a_cell(tmp_path):
    views, labels = _views()
    base = ProtocolConfig(ae=TINY_AE)
    key = setting_key(views, labels, base)
    assert key == setting_key(views, labels, ProtocolConfig(ae=TINY_AE, dataset="other", log=print))
    other = {"a": views["a"].copy(), "b": views["b"].copy()}
    other["b"][0, 0] += 1.0
    changed = [
        setting_key(other, labels, base),
        setting_key(views, labels[::-1].copy(), base),
        setting_key(views, labels, ProtocolConfig(ae=AESettings(latent_dim=4))),
        setting_key(views, labels, ProtocolConfig(ae=TINY_AE, preprocess="none")),
        setting_key(views, labels, ProtocolConfig(ae=TINY_AE, labels_per_class=2)),
        setting_key(views, labels, ProtocolConfig(ae=TINY_AE, c_grid=(1.0,))),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_the_cell_file_round_trips_and_refuses_a_damaged_line(tmp_path):
    path = tmp_path / "cells.jsonl"
    store = CellStore(path)
    ok = Cell("aes_gw", 3, "ok", test=0.75, val=0.8, epoch=30, c=10.0, seconds=1.5,
              diagnostics={"a": {"spread": 0.3, "accuracy": 0.6}})  # fmt: skip
    bad = Cell("independent", 3, "diverged", epoch=2,
               divergence={"epoch": 2, "step": 5, "non_finite": ["rec_a"], "cause": "c", "fix": "f"})  # fmt: skip
    store.put("k", ok)
    store.put("k", bad)
    again = CellStore(path)
    assert again.get("k", 3, "aes_gw") == ok
    got = again.get("k", 3, "independent")
    assert got.diverged and math.isnan(got.test) and got.divergence == bad.divergence
    assert again.get("k", 4, "aes_gw") is None and again.get("other", 3, "aes_gw") is None
    assert all(json.loads(line)["key"] == "k" for line in path.read_text().splitlines())
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(ValueError, match="line 3 is not a cell record"):
        CellStore(path)


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def toy_npz(tmp_path):
    views, labels = _views()
    path = tmp_path / "toy.npz"
    np.savez(path, view_a=views["a"], view_b=views["b"], y=labels)
    return path


def test_cli_records_divergence_and_exits_3_only_when_asked(toy_npz, tmp_path, capsys):
    args = ["multiview", "--data", str(toy_npz), "--methods", "independent,cca", "--seeds", "2",
            "--epochs", "2", "--latent-dim", "3", "--lr", "100"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    # 96 training rows in one batch of 100: the second step is epoch 2's first
    assert "otae: 2 of 4 cells diverged: seed 0 independent (epoch 2: rec_a, " in err
    assert "Traceback" not in err and "internal error" not in err
    table = (tmp_path / "a" / "table.md").read_text()
    assert "diverged (2 of 2 seeds)" in table and "| CCA | paired | " in table
    # the second run takes every cell from cells.jsonl and still reports the divergence
    assert main([*args, "--out", str(tmp_path / "a"), "--fail-on-divergence"]) == 3
    err = capsys.readouterr().err
    assert err.count("finished before") == 4 and "2 of 4 cells diverged" in err
    assert (
        main(["multiview", "--data", str(toy_npz), "--lr", "0", "--out", str(tmp_path / "b")]) == 2
    )
    assert "--lr must be a finite number > 0" in capsys.readouterr().err



@pytest.mark.parametrize(
    "name, value, message",
    [
        ("epochs", 0, "epochs must be >= 1, got 0"),
        ("latent_dim", 0, "latent_dim must be >= 1, got 0"),
        ("latent_dim", (3, 0), "latent_dim must be >= 1, got (3, 0)"),
        ("tau", 1.5, "tau must lie in [0, 1], got 1.5"),
        ("tau", math.nan, "tau must lie in [0, 1], got nan"),
        ("gamma", -1.0, "gamma must be finite and >= 0, got -1.0"),
        ("gamma", math.inf, "gamma must be finite and >= 0, got inf"),
        ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
        ("lr", math.nan, "lr must be a finite number > 0, got nan"),
    ],
)
def test_ae_settings_check_their_ranges(name, value, message):
    # the library's check, which `otae multiview` reports under the option's name
    with pytest.raises(ValueError) as caught:
        AESettings(**{name: value})
    assert str(caught.value) == message
    assert AESettings(**{name: 1}) is not None  # 1 is in range for each

def test_scale_warning_names_the_views():
    views, _ = _views(scale_b=1e3)  # column variances ~1e6 against ~2-10
    line = scale_warning(views, "none")
    assert line.startswith("--preprocess none: the largest column variance is ")
    assert " in b and " in line and " in a (" in line and "--preprocess standardise" in line
    assert scale_warning(views, "standardise") is None
    assert scale_warning(_views()[0], "none") is None


def test_cli_warns_before_raw_training_of_mismatched_scales(tmp_path, capsys):
    views, labels = _views(scale_b=1e3)
    np.savez(tmp_path / "toy.npz", view_a=views["a"], view_b=views["b"], y=labels)
    args = ["multiview", "--data", str(tmp_path / "toy.npz"), "--methods", "cca", "--seeds", "1",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*args, "--preprocess", "none"]) == 0
    assert "warning: --preprocess none: the largest column variance" in capsys.readouterr().err
    assert main(args) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, seeds",
    [
        ("5", [0, 1, 2, 3, 4]),
        ("1", [0]),
        ("3,", [3]),
        ("2,7", [2, 7]),
        (" 4, 1 ", [4, 1]),
        ("3-6", [3, 4, 5, 6]),
        ("2-2", [2]),
    ],  # fmt: skip
)
def test_seed_parser(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, needle",
    [
        ("0", "a count N >= 1"),
        ("abc", "a count N >= 1"),
        ("-1", "a range reads A-B"),
        ("5-2", "a range reads A-B"),
        (",", "a list holds seeds"),
        ("2,x", "a list holds seeds"),
        ("2,2", "lists a seed twice"),
        ("1-2,", "a list holds seeds"),
    ],  # fmt: skip
)
def test_seed_parser_refuses(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_seeds(text)


def test_the_table_gives_each_method_its_paired_difference_to_independent(tmp_path):
    accuracies = {
        "independent": [0.50, 0.52, 0.54, math.nan],
        "aes_gw": [0.55, 0.58, 0.56, 0.60],
        "cca": [0.50, 0.52, 0.54, 0.9],
    }
    text = write_table(accuracies, tmp_path / "t.md", tmp_path / "t.csv", dataset="toy")
    d = np.array([5.0, 6.0, 2.0])  # seed 3 has no Independent value: left out
    se = d.std(ddof=1) / math.sqrt(3)
    expected = f"{d.mean():+.2f} ± {se:.2f} ({d.mean() / se:+.1f} SE)"
    assert expected == "+4.33 ± 1.20 (+3.6 SE)"
    assert f"| AEs+GW | unpaired | 57.25 ± 2.22 | {expected} |" in text
    spread = np.std([50.0, 52.0, 54.0, 90.0], ddof=1)
    assert f"| CCA | paired | 61.50 ± {spread:.2f} | +0.00 ± 0.00 (+0.0 SE) |" in text
    assert "| Independent AEs | unpaired | 52.00 ± 2.00 (3 of 4 seeds; 1 diverged) | — |" in text
