"""`otae bench` end to end on a tiny set; regulariser timing; interpolations."""

from __future__ import annotations

import csv
import os
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from otae.bench import load_bench, run_bench, summarise, write_tables
from otae.evaluation.figures import interpolations
from otae.models import build_model, model_config_from_dict
from otae.training import shipped_configs

from .helpers import make_trainer, tiny_bench, tiny_config, train_tiny_run


def test_interpolations_are_straight_lines_between_codes():
    torch.manual_seed(0)
    model = build_model(
        model_config_from_dict({"name": "drae", "latent_dim": 3}),
        (1, 8, 8),
        "mlp",
        {"hidden": (16,)},
    ).eval()
    images = torch.rand(4, 1, 8, 8)
    rows = interpolations(model, images, n_pairs=2, n_steps=5).reshape(2, 7, 1, 8, 8)
    with torch.no_grad():
        codes = model.embed(images)
        for pair in range(2):
            a, b = images[2 * pair], images[2 * pair + 1]
            assert torch.equal(rows[pair, 0], a) and torch.equal(rows[pair, -1], b)
            za, zb = codes[2 * pair], codes[2 * pair + 1]
            for step, t in enumerate(torch.linspace(0, 1, 5)):
                expected = model.decode(((1 - t) * za + t * zb)[None])[0]
                assert torch.allclose(rows[pair, 1 + step], expected, atol=1e-6)


def test_regulariser_share_times_both_steps_without_touching_the_run(tmp_path, monkeypatch):
    """The real steps run (on a copy of the model), timed by a fake clock that advances by
    known durations: full steps 4, 3, 5 s after a 9 s warm-up, reconstruction-only steps
    2, 1.5, 1 s after a 7 s warm-up. Warm-up excluded, the fastest are 3 s and 1 s:
    share_min = 1 - 1/3; paired differences 2, 1.5, 4 s (orders FT, TF, FT: median 3 s,
    then 1.5 s, mean 2.25 s) over the median full step 4 s: share = 0.5625."""
    import types

    import otae.training.trainer as trainer_module

    trainer = make_trainer(tiny_config("drae", epochs=1), tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    durations = {True: [9.0, 4.0, 3.0, 5.0], False: [7.0, 2.0, 1.5, 1.0]}
    clock = types.SimpleNamespace(now=0.0)
    real_step = trainer_module.Trainer.step
    stepped: list[tuple[bool, int]] = []

    def step(self, x, generator, regularise=True):
        terms = real_step(self, x, generator, regularise)
        stepped.append((regularise, id(self.model)))
        clock.now += durations[regularise].pop(0)
        return terms

    # the profiling copy is another Trainer: patch the class, not the instance
    monkeypatch.setattr(trainer_module.Trainer, "step", step)
    monkeypatch.setattr(
        trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock.now)
    )
    timing = trainer.regulariser_share(n_steps=3, n_warmup=1)
    assert [r for r, _ in stepped] == [True, False, False, True, True, False, False, True]
    assert all(model != id(trainer.model) for _, model in stepped)  # a copy was stepped
    assert timing["step_times_s"] == [4.0, 3.0, 5.0]
    assert timing["step_times_without_regulariser_s"] == [2.0, 1.5, 1.0]
    assert timing["step_time_s"] == 3.0 and timing["step_time_without_regulariser_s"] == 1.0
    assert timing["regulariser_share_min"] == pytest.approx(2.0 / 3.0, rel=1e-12)
    assert timing["regulariser_share"] == pytest.approx(0.5625, rel=1e-12)
    assert timing["regulariser_share_quartiles"] == pytest.approx(
        [q / 4.0 for q in statistics.quantiles([2.0, 1.5, 4.0], n=4)[::2]], rel=1e-12
    )
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_regulariser_share_pairs_cancel_a_drifting_clock(tmp_path, monkeypatch):
    """Fake steps: 3 s with the regulariser, 1 s without, each later step 0.5 s slower and
    the first step of every pair 1 s slower. Alternating the order within pairs and
    averaging the two orders' median differences (2.5 s and 1.5 s) recovers exactly
    2 s; the plain median over 5 pairs would give 2.5 s."""
    import types

    import otae.training.trainer as trainer_module

    trainer = make_trainer(tiny_config("drae", epochs=1), tmp_path / "run")
    clock = types.SimpleNamespace(now=0.0, calls=0)

    def step(self, x, generator, regularise=True):
        clock.calls += 1
        first_of_pair = clock.calls % 2 == 1
        clock.now += (3.0 if regularise else 1.0) + 0.5 * clock.calls + first_of_pair

    monkeypatch.setattr(trainer_module.Trainer, "step", step)
    monkeypatch.setattr(
        trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock.now)
    )
    timing = trainer.regulariser_share(n_steps=5, n_warmup=0)
    # full steps are calls 1, 4, 5, 8, 9 (orders alternate: TF, FT, TF, FT, TF)
    durations_with = [3.0 + 0.5 * c + c % 2 for c in (1, 4, 5, 8, 9)]
    assert timing["step_times_s"] == durations_with
    assert timing["regulariser_share"] == pytest.approx(2.0 / statistics.median(durations_with))


def test_reconstruction_objective_is_the_loss_without_regulariser():
    torch.manual_seed(0)
    config = model_config_from_dict({"name": "drae", "latent_dim": 3, "gamma": 0.0})
    model = build_model(config, (1, 8, 8), "mlp", {"hidden": (16,)})
    x = torch.rand(6, 1, 8, 8)
    rec = model.reconstruction_objective(x, torch.Generator().manual_seed(1))
    full = model.loss(x, torch.Generator().manual_seed(1))["total"]
    assert torch.allclose(rec, full)


def test_shipped_bench_sets_load_and_name_existing_configs():
    names = shipped_configs(bench_sets=True)
    assert {"bench/mnist-quick", "bench/mnist-paper", "bench/celeba-paper"} <= set(names)
    configs = set(shipped_configs())
    for name in names:
        bench = load_bench(name)
        for run in bench.runs:
            assert run.config in configs, (name, run.config)
    quick = load_bench("mnist-quick")
    assert len(quick.seeds) >= 3 and len(quick.runs) == 13


def test_a_run_name_with_a_comma_is_refused(tmp_path):
    """--models splits on commas, so such a run could never be picked alone."""
    path = tmp_path / "set.yaml"
    path.write_text("name: s\nseeds: [0]\nruns:\n"
                    "  - {name: 'GWAE (gmm, full)', config: mnist/gwae-quick}\n")  # fmt: skip
    with pytest.raises(ValueError, match="cannot contain a comma .*'GWAE \\(gmm, full\\)'"):
        load_bench(path)


def test_bench_end_to_end_on_two_models(tmp_path):
    bench_file = tmp_path / "tiny.yaml"
    bench_file.write_text(
        """
name: tiny
seeds: [0, 1]
overrides: [data.train_subset=100, data.test_subset=50, training.epochs=1,
            training.batch_size=50, training.progress=false, training.tensorboard=false,
            network.architecture=mlp, "network.options={hidden: [16]}",
            evaluation.latent_points=50, evaluation.timing_steps=2]
runs:
  - {name: VAE, config: mnist/vae-quick}
  - {name: RAE (D), config: mnist/drae-quick}
paper:
  VAE: {rec: 16.6, fid: 156.11}
"""
    )
    bench = load_bench(bench_file)
    out = run_bench(bench, tmp_path / "out", log=lambda m: None)
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["run"], r["seed"]) for r in rows] == [
        ("VAE", "0"),
        ("VAE", "1"),
        ("RAE (D)", "0"),
        ("RAE (D)", "1"),
    ]
    table = (out / "table.md").read_text()
    for name in ("| VAE | P | 2 |", "| RAE (D) | D | 2 |", "16.6", "156.11"):
        assert name in table, name
    # the table's mean ± std is the mean and std of the per-seed values
    rec = [float(r["test_rec_loss"]) for r in rows if r["run"] == "VAE"]
    mean, std = sum(rec) / 2, abs(rec[0] - rec[1]) / 2**0.5
    assert f"{mean:.2f} ± {std:.2f}" in table
    assert "regulariser share" in (out / "runtime.md").read_text()
    assert (out / "report.html").is_file() and (out / "conditional_all.png").is_file()
    # a second call reuses the finished runs (no retraining): same numbers
    again = run_bench(bench, tmp_path / "out", log=lambda m: None)
    assert list(csv.DictReader((again / "runs.csv").open())) == rows


def test_summarise_mean_and_std():
    records = [
        {"run": "A", "encoder": "D", "seed": 0, "test_rec_loss": 1.0},
        {"run": "A", "encoder": "D", "seed": 1, "test_rec_loss": 3.0},
    ]
    (row,) = summarise(records)
    assert row["test_rec_loss"] == 2.0 and row["test_rec_loss_std"] == pytest.approx(2**0.5)
    assert row["test_rec_loss_n"] == 2


def test_summarise_averages_a_metric_over_the_seeds_that_have_it(tmp_path):
    # seed 0 lacks the FID (e.g. measured later on another machine): it used to be
    # dropped for every seed, because only the first seed's keys were averaged
    records = [
        {"run": "A", "encoder": "D", "seed": 0, "test_rec_loss": 1.0},
        {"run": "A", "encoder": "D", "seed": 1, "test_rec_loss": 3.0, "fid": 10.0},
        {"run": "A", "encoder": "D", "seed": 2, "test_rec_loss": 5.0, "fid": 14.0},
    ]
    (row,) = summarise(records)
    assert (row["fid"], row["fid_n"], row["test_rec_loss_n"]) == (12.0, 2, 3)
    assert row["fid_std"] == pytest.approx(8**0.5)
    rows = [{**r, "_history": [], "run_dir": str(tmp_path)} for r in records]
    write_tables(tiny_bench(tmp_path), rows, tmp_path / "tables")
    table = (tmp_path / "tables" / "table.md").read_text()
    assert "| 3.00 ± 2.00 | 12.00 ± 2.83 (2 of 3 seeds) |" in table
    # spread: se: each spread over the seeds that have the metric (2 / sqrt 3, sqrt 8 / sqrt 2)
    bench = tiny_bench(tmp_path)
    bench.spread = "se"
    write_tables(bench, rows, tmp_path / "tables-se")
    table = (tmp_path / "tables-se" / "table.md").read_text()
    assert "| 3.00 ± 1.15 | 12.00 ± 2.00 (2 of 3 seeds) |" in table
    assert "Mean ± standard error (std / sqrt(seeds)) over seeds [0, 1, 2]" in table


def test_runtime_reports_the_machine_load_of_each_row(tmp_path, monkeypatch):
    """A bench counts its own runs at once, not other work on the machine: each row
    records the 15-minute load average when its training ended, and runtime.md shows
    the mean over seeds (none where the system has no load average)."""
    from otae.bench.measure import provenance

    monkeypatch.setattr(os, "getloadavg", lambda: (0.25, 0.5, 1.75))
    assert provenance(tiny_config())["load_average_15min"] == 1.75
    monkeypatch.delattr(os, "getloadavg")
    assert "load_average_15min" not in provenance(tiny_config())
    records = [
        {"run": "A", "encoder": "P", "seed": 0, "test_rec_loss": 1.0, "load_average_15min": 2.0},
        {"run": "A", "encoder": "P", "seed": 1, "test_rec_loss": 1.0, "load_average_15min": 3.0},
        {"run": "B", "encoder": "P", "seed": 0, "test_rec_loss": 1.0},
    ]
    rows = [{**r, "_history": [], "run_dir": str(tmp_path)} for r in records]
    write_tables(tiny_bench(tmp_path), rows, tmp_path / "tables")
    lines = (tmp_path / "tables" / "runtime.md").read_text().splitlines()

    def cells(start):
        return [c.strip() for c in next(x for x in lines if x.startswith(start)).split("|")]

    column = cells("| method").index("load")
    assert cells("| A |")[column] == "2.5"
    assert cells("| B |")[column] == "—"  # no load measured


def test_eval_adds_the_classifier_fd(tmp_path, monkeypatch, capsys):
    import functools
    import json

    from otae.cli import main
    from otae.evaluation import classifier as classifier_lib

    monkeypatch.setenv("OTAE_CACHE_DIR", str(tmp_path / "cache"))
    small = functools.partial(
        classifier_lib.load_or_train_mnist_classifier,
        train_subset=300, test_subset=100, epochs=1, log=lambda m: None,
    )  # fmt: skip
    monkeypatch.setattr(classifier_lib, "load_or_train_mnist_classifier", small)
    run = train_tiny_run(tmp_path / "run")
    assert main(["eval", str(run), "--no-report", "--classifier-fd", "40"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classifier_fd"] > 0 and metrics["classifier_fd_samples"] == 40
    assert metrics["classifier_fd_real_samples"] == 40
    assert "classifier_fd" in capsys.readouterr().out
    # the real statistics were cached for the next evaluation
    assert any((tmp_path / "cache").rglob("*.npz"))


def _rows(folder):
    return {r["run"]: r for r in csv.DictReader((folder / "runs.csv").open())}


def test_an_epoch_starts_only_if_it_ends_before_the_deadline(tmp_path):
    import time

    trainer = make_trainer(tiny_config(), tmp_path)
    now = time.time()
    assert trainer._time_for_an_epoch(None) and trainer._time_for_an_epoch(now - 5)  # first
    trainer.history = [{"epoch": 1, "epoch_time_s": 30.0}, {"epoch": 2, "epoch_time_s": 10.0}]
    assert trainer._time_for_an_epoch(now + 60)  # mean 20 s fits in 60 s
    assert not trainer._time_for_an_epoch(now + 15)
    assert trainer._time_for_an_epoch(None)


def test_a_deadline_allows_for_each_epochs_evaluation(tmp_path, monkeypatch):
    """The epoch's evaluation counts: with 1 s of training and 3 s of evaluation per epoch
    (a fake clock), a 10 s deadline stops after epoch 2 (8 s), where the training time
    alone (1 s) would start a third that ends at 12 s."""
    import types

    import otae.training.trainer as trainer_module
    from otae.training.callbacks import Callback

    clock = [0.0]
    fake_time = types.SimpleNamespace(time=lambda: clock[0], perf_counter=lambda: clock[0])
    monkeypatch.setattr(trainer_module, "time", fake_time)

    class SlowEvaluation(Callback):
        def on_evaluate(self, trainer, epoch):
            clock[0] += 3.0
            return {}

    config = tiny_config()
    config.training.epochs = 5
    trainer = make_trainer(config, tmp_path, callbacks=[SlowEvaluation()])
    train_epoch = trainer.train_epoch

    def one_second(epoch):
        clock[0] += 1.0
        return train_epoch(epoch)

    trainer.train_epoch = one_second
    trainer.fit(deadline=10.0)
    assert trainer.epoch == 2 and clock[0] == 8.0
    assert trainer.epoch_wall_s == [4.0, 4.0]
    assert [row["epoch_time_s"] for row in trainer.history] == [1.0, 1.0]
    # resumed in a new process: epoch 2's checkpoint holds epoch 1's wall time (its own
    # ends after the checkpoint is written), so the next slice still allows for evaluation
    resumed = make_trainer(config, tmp_path)
    assert resumed.resume() and resumed.epoch_wall_s == [4.0]
    clock[0] = 0.0
    assert resumed._time_for_an_epoch(4.0) and not resumed._time_for_an_epoch(3.5)
    # a checkpoint without wall times (written before they were kept): training time alone
    from otae.training.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    del state["epoch_wall_s"]
    older = make_trainer(config, tmp_path)
    older.load_state_dict(state)
    assert older.epoch == 2 and older.epoch_wall_s == []
    assert older._time_for_an_epoch(1.5) and not older._time_for_an_epoch(0.5)


def test_a_bench_updates_a_shared_results_folder_under_its_lock(tmp_path, monkeypatch):
    """Benches with their own --out may share one --results at the same time: each
    rewrites it under the folder's lock, so none writes back rows read before another's
    update. A holder that does not let go in time gets one clear error, and the trained
    cell is kept for the next invocation."""
    from otae._io import FolderInUseError
    from otae.bench import runner

    from .test_io import hold_in_another_process

    bench = tiny_bench(tmp_path)
    results = tmp_path / "results"
    quiet = {"log": lambda m: None, "results_dir": results}
    monkeypatch.setattr(runner, "RESULTS_WAIT_S", 0.2)
    holder = hold_in_another_process(results)
    try:
        with pytest.raises(FolderInUseError, match=rf"bench results folder {results} is in use"):
            run_bench(bench, tmp_path / "out-a", only=["VAE"], **quiet)
    finally:
        holder.kill()
        holder.wait()
    assert not (results / "runs.csv").exists()
    run_bench(bench, tmp_path / "out-b", only=["RAE (D)"], **quiet)
    run_bench(bench, tmp_path / "out-a", only=["VAE"], **quiet)  # trained before: not again
    assert set(_rows(results)) == {"VAE", "RAE (D)"}


def test_bench_rows_accumulate_and_a_time_limit_marks_short_rows(tmp_path, monkeypatch):
    from otae.training import Trainer

    bench = tiny_bench(tmp_path)
    out, results = tmp_path / "out", tmp_path / "results"
    quiet = {"log": lambda m: None, "results_dir": results}
    # a limit that leaves time for one epoch only (the rule itself is tested above)
    monkeypatch.setattr(Trainer, "_time_for_an_epoch", lambda self, deadline: not self.history)
    run_bench(bench, out, only=["VAE"], time_limit=3600, **quiet)
    monkeypatch.undo()
    vae = _rows(results)["VAE"]
    assert (vae["epochs"], vae["protocol_epochs"]) == ("1", "2")
    table = (results / "table.md").read_text()
    assert "| VAE † | P | 1 | 1/2 |" in table and "not the protocol's result" in table
    assert vae["torch_version"] == torch.__version__ and vae["accelerator"] == "cpu"
    assert "command-line overrides" not in table
    # another model later: its row joins, the VAE row is kept exactly as it was; the
    # command line's overrides change its protocol, and the table says so for its row
    run_bench(bench, out, only=["RAE (D)"], overrides=["evaluation.latent_points=40"], **quiet)
    rows = _rows(results)
    assert list(rows) == ["VAE", "RAE (D)"] and rows["VAE"] == vae
    assert rows["RAE (D)"]["epochs"] == "2"
    assert rows["RAE (D)"]["command_overrides"] == "evaluation.latent_points=40"
    assert ("Trained with command-line overrides `evaluation.latent_points=40` (RAE (D) seed 0)"
            in (results / "table.md").read_text())
    # running VAE again without a limit continues it from its checkpoint to the protocol
    run_bench(bench, out, only=["VAE"], **quiet)
    history = list(csv.DictReader((out / "vae" / "seed0" / "history.csv").open()))
    assert [int(h["epoch"]) for h in history] == [1, 2]
    assert history[0]["test_rec_loss"] == vae["last_test_rec_loss"]  # epoch 1 kept, not redone
    table = (results / "table.md").read_text()
    assert "| VAE | P | 1 | 2/2 |" in table and "† " not in table.split("|---")[-1]
    assert (results / "histories" / "vae-seed0.csv").is_file()
    throughput = list(csv.DictReader((results / "throughput.csv").open()))
    assert [int(t["epochs"]) for t in throughput] == [1, 2, 1]


def test_bench_tables_are_rewritten_as_each_cell_finishes(tmp_path, monkeypatch):
    """The results can be read before a long bench ends: after the first cell, the tables
    hold its row alone (the second has not started); at the end, both."""
    import otae.bench.runner as runner

    bench = tiny_bench(tmp_path)
    seen = []
    write = runner.write_tables

    def spy(bench_, records, out_dir):
        seen.append(sorted(r["run"] for r in records))
        write(bench_, records, out_dir)
        seen.append((out_dir / "table.md").read_text())

    monkeypatch.setattr(runner, "write_tables", spy)
    lines = []
    run_bench(bench, tmp_path / "out", log=lines.append)
    assert seen[0::2] == [["VAE"], ["RAE (D)", "VAE"], ["RAE (D)", "VAE"]]
    assert "| VAE | P | 1 | 2/2 |" in seen[1] and "RAE (D)" not in seen[1]
    assert [line for line in lines if "tables updated" in line] == [
        f"[bench] VAE seed 0: tables updated in {tmp_path / 'out'}",
        f"[bench] RAE (D) seed 0: tables updated in {tmp_path / 'out'}",
    ]


def test_bench_jobs_train_in_worker_processes(tmp_path):
    bench = tiny_bench(tmp_path)
    sequential = run_bench(bench, tmp_path / "seq", log=lambda m: None)
    messages = []
    parallel = run_bench(bench, tmp_path / "par", jobs=2, log=messages.append)
    assert sum("started" in m for m in messages) == 2, messages
    seq, par = _rows(sequential), _rows(parallel)
    for name in ("VAE", "RAE (D)"):
        assert par[name]["concurrent_runs"] == "2" and seq[name]["concurrent_runs"] == "1"
        # the same seeded run, whichever process trains it
        assert float(par[name]["test_rec_loss"]) == pytest.approx(
            float(seq[name]["test_rec_loss"]), rel=1e-6
        )
    assert (tmp_path / "par" / "vae" / "seed0.log").is_file()
    (row,) = csv.DictReader((parallel / "throughput.csv").open())
    assert row["concurrent_runs"] == "2" and int(row["epochs"]) == 4


def test_bench_saves_the_samples_its_distances_score(tmp_path):
    import numpy as np

    from otae.evaluation.fid import generate_samples, load_samples_npz
    from otae.training import derived_seed, load_run

    bench = tiny_bench(tmp_path)
    out = run_bench(bench, tmp_path / "out", only=["RAE (D)"], save_samples=True,
                    log=lambda m: None)  # fmt: skip
    run_dir = tmp_path / "out" / "rae--d" / "seed0"
    saved = load_samples_npz(run_dir / "samples.npz")
    assert saved.dtype == np.uint8 and saved.shape == (10000, 1, 28, 28)
    _, model, _ = load_run(run_dir, "last")
    generator = torch.Generator().manual_seed(derived_seed(0, 0, 6))
    expected = generate_samples(model, 10000, generator=generator)
    quantised = np.rint(np.clip(expected.double().numpy(), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(saved, quantised)
    assert _rows(out)["RAE (D)"]["samples_file"] == str(run_dir / "samples.npz")


def test_default_jobs_is_one_on_a_cpu_and_seven_per_gpu(tmp_path, monkeypatch):
    from otae.bench import bench_tasks, default_jobs
    from otae.bench import jobs as bench_jobs  # where default_jobs looks up the device

    bench = tiny_bench(tmp_path)
    tasks = bench_tasks(bench)
    assert default_jobs(bench, tasks, []) == 1  # no GPU here: auto -> cpu
    monkeypatch.setattr(bench_jobs, "device_of", lambda config: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_jobs(bench, tasks, []) == 2  # never more runs at once than runs
    many = tasks * 10
    assert default_jobs(bench, many, []) == 14


def test_bench_scores_the_clustering_an_older_run_lacks(tmp_path):
    """A finished run whose metrics predate a clustering key is re-scored (not retrained):
    the restored scores equal those of the run's own evaluation."""
    import json

    bench = tiny_bench(tmp_path)
    out = tmp_path / "out"
    run_bench(bench, out, only=["RAE (D)"], log=lambda m: None)
    path = out / "rae--d" / "seed0" / "metrics.json"
    scored = json.loads(path.read_text())
    assert scored["cluster_prior_components"] == 10
    assert 1 <= scored["cluster_prior_components_used"] <= 10
    old = {k: v for k, v in scored.items() if k != "cluster_prior_components_used"}
    path.write_text(json.dumps(old))
    (out / "rae--d" / "seed0" / "test_codes.npz").unlink()
    run_bench(bench, out, only=["RAE (D)"], log=lambda m: None)
    again = json.loads(path.read_text())
    for key in [k for k in scored if k.startswith("cluster_") and k != "clustering_time_s"]:
        assert again[key] == scored[key], key
    assert again["epochs"] == scored["epochs"] and again["train_wall_time_s"] == scored[
        "train_wall_time_s"]  # not retrained
    assert (out / "rae--d" / "seed0" / "test_codes.npz").is_file()


def test_a_setting_added_later_keeps_earlier_cells(tmp_path):
    """cell.json written by an otae without a setting: the setting takes the value the
    run's config.yaml gives it through today's configs (its default), so the cell still
    matches; a setting that really changed is still refused, naming it."""
    import json

    from otae.bench.cells import cell_config, stale_cell_message, write_cell
    from otae.training.config import save_config

    bench = tiny_bench(tmp_path)
    run = bench.runs[0]
    config = cell_config(bench, run, 0)
    run_dir = tmp_path / "vae" / "seed0"
    run_dir.mkdir(parents=True)
    write_cell(bench, run, 0, run_dir, config)
    save_config(config, run_dir / "config.yaml")
    assert stale_cell_message(run, 0, run_dir, config) is None
    cell = json.loads((run_dir / "cell.json").read_text())
    # an older otae: no critic_lr in either file
    del cell["settings"]["training.optimizer.critic_lr"]
    (run_dir / "cell.json").write_text(json.dumps(cell))
    yaml_text = (run_dir / "config.yaml").read_text()
    assert "critic_lr: null" in yaml_text
    (run_dir / "config.yaml").write_text(
        "".join(line for line in yaml_text.splitlines(keepends=True) if "critic_lr" not in line)
    )
    assert "critic_lr" not in (run_dir / "config.yaml").read_text()
    assert stale_cell_message(run, 0, run_dir, config) is None
    # a recorded value that differs from today's is a change
    changed = cell_config(bench, run, 0, ["training.optimizer.critic_lr=0.5"])
    assert "training.optimizer.critic_lr (None -> 0.5)" in stale_cell_message(
        run, 0, run_dir, changed
    )


def test_a_restarted_cells_worker_log_keeps_every_start(tmp_path, monkeypatch):
    """The worker log is appended to, a dated line before each start; a failure is named by
    the last line of its own start's output (or its exit status when it printed none)."""
    import sys
    import types

    from otae.bench import jobs

    outputs = iter(["print('epoch 1'); print('otae: error: first failure'); raise SystemExit(2)",
                    "raise SystemExit(3)", "print('epoch 2')"])  # fmt: skip
    monkeypatch.setattr(jobs, "_worker_command",
                        lambda cell, threads: [sys.executable, "-c", next(outputs)])  # fmt: skip
    cell = types.SimpleNamespace(out_dir=str(tmp_path), run=types.SimpleNamespace(name="r"),
                                 seed=0, name="r seed 0")  # fmt: skip
    failures = [jobs.train_in_parallel([cell], 1, lambda m: None) for _ in range(3)]
    assert [[f.error for f in fs] for fs in failures] == [["first failure"], ["exit 3"], []]
    lines = (tmp_path / "r" / "seed0.log").read_text().splitlines()
    assert [line for line in lines if not line.startswith("[bench] r seed 0: worker started ")] \
        == ["epoch 1", "otae: error: first failure", "epoch 2"]
    assert len(lines) == 6


TERMINATED_COORDINATOR = """
import sys, types
from otae.bench import jobs
marker = sys.argv[2]
jobs._worker_command = lambda cell, threads: [
    sys.executable, "-c", "import time; time.sleep(120)", marker]
cells = [types.SimpleNamespace(out_dir=sys.argv[1], run=types.SimpleNamespace(name=f"r{i}"),
                               seed=0, name=f"r{i} seed 0") for i in range(2)]
jobs.train_in_parallel(cells, 2, lambda message: print(message, flush=True))
"""


def _processes_with(marker: str) -> list[int]:
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode():
                found.append(int(proc.name))
        except OSError:
            continue  # ended meanwhile
    return found


def _coordinator_with_two_workers(tmp_path):
    """A process running the local pool with two sleeping workers, once both have
    started: ``(coordinator, marker)``, the marker in the workers' command lines."""
    import subprocess
    import sys
    import uuid

    marker = f"otae-test-worker-{uuid.uuid4().hex}"
    coordinator = subprocess.Popen(
        [sys.executable, "-c", TERMINATED_COORDINATOR, str(tmp_path), marker],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    started = [coordinator.stdout.readline() for _ in range(2)]
    assert all("started" in line for line in started), started
    # Popen returns when the worker's exec closes its close-on-exec pipe, which the
    # kernel does before it sets the new program's arguments: for a moment the
    # worker's /proc cmdline is empty, so wait for the exec to complete
    deadline = time.monotonic() + 30
    while True:
        workers = [pid for pid in _processes_with(marker) if pid != coordinator.pid]
        if len(workers) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(workers) == 2
    return coordinator, marker


def _stop_all(coordinator, marker):
    import signal

    coordinator.kill()
    coordinator.wait()
    for pid in _processes_with(marker):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc")
def test_a_terminated_bench_terminates_its_workers(tmp_path):
    """SIGTERM to the process that runs the local pool stops its workers too (no worker
    trains on unseen, to collide with the next invocation's), and it says how to go on."""
    import signal

    coordinator, marker = _coordinator_with_two_workers(tmp_path)
    try:
        coordinator.send_signal(signal.SIGTERM)
        assert coordinator.wait(timeout=60) == 128 + signal.SIGTERM
        rest = coordinator.stdout.read()
        assert "stopping 2 worker(s); rerun the same command to continue" in rest, rest
        assert _processes_with(marker) == []
    finally:
        _stop_all(coordinator, marker)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_bench_leaves_no_worker_training(tmp_path):
    """SIGKILL gives the pool no chance to stop its workers: the kernel sends them SIGTERM
    when their parent dies (the workers here sleep, with SIGTERM's default action)."""
    import signal

    coordinator, marker = _coordinator_with_two_workers(tmp_path)
    try:
        coordinator.send_signal(signal.SIGKILL)
        assert coordinator.wait(timeout=60) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker) == []
    finally:
        _stop_all(coordinator, marker)
