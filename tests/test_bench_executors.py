"""`otae bench` cells and executors: idempotent cells, and submitit's local executor
(no Slurm needed) giving the local executor's table, skipping finished cells, resuming a
cell killed mid-run and naming a failed one."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time

import pytest

from otae.bench import (
    StaleCellError,
    SubmititExecutor,
    cell_config,
    cell_identity,
    load_bench,
    run_bench,
)
from otae.cli import main

from .helpers import TINY_SET_SETTINGS

submitit = pytest.importorskip("submitit")

TINY = "\nname: cells\n" + TINY_SET_SETTINGS
TWO = TINY + """  - {name: VAE, config: mnist/vae-quick}
  - {name: RAE (D), config: mnist/drae-quick}
"""
#: a cell long enough to be killed after its first epochs, and one whose training raises
KILLED_AND_FAILED = TINY + """  - {name: ok, config: mnist/drae-quick}
  - {name: slow, config: mnist/drae-quick, overrides: [training.epochs=60]}
  - {name: broken, config: mnist/drae-quick, overrides: ["network.options={bogus: 1}"]}
"""
#: table.csv columns that say when, where and how fast, not what was measured
NOT_MEASURED = {"seconds_per_epoch", "regulariser_share", "machine", "accelerator",
                "torch_version", "date", "concurrent_runs"}  # fmt: skip


def _bench(tmp_path, text, name="set.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_bench(path)


def _table(folder):
    with (folder / "table.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k not in NOT_MEASURED}
                for row in csv.DictReader(handle)]  # fmt: skip


def _same_table(a, b):
    assert [r["method"] for r in a] == [r["method"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            try:
                assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-5), key
            except ValueError:
                assert x[key] == y[key], key


def _history(run_dir):
    with (run_dir / "history.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _local_submitit(out):
    return SubmititExecutor(out / "submitit", cluster="local")


def test_submitit_cells_give_the_local_table_and_are_skipped_once_finished(tmp_path):
    bench = _bench(tmp_path, TWO)
    local = run_bench(bench, tmp_path / "local", log=lambda m: None)
    messages = []
    out = tmp_path / "sub"
    run_bench(bench, out, executor=_local_submitit(out), log=messages.append)
    assert sum("submitted to submitit's local executor" in m for m in messages) == 1, messages
    _same_table(_table(out), _table(local))
    # each cell: named by its run and seed, fingerprinted by its settings
    for run in bench.runs:
        run_dir = out / ("vae" if run.name == "VAE" else "rae--d") / "seed0"
        cell = json.loads((run_dir / "cell.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert cell["cell"] == metrics["cell"] == f"{run_dir.parent.name}/seed0"
        assert cell["config_hash"] == metrics["cell_hash"]
        assert cell["settings"] == cell_identity(cell_config(bench, run, 0))
        assert cell["last_attempt"]["job"]  # the submitit job that trained it
    # the same command again: every cell finished, nothing submitted, nothing trained
    checkpoints = sorted(out.glob("*/seed0/checkpoints/last.pt"))
    written = [p.stat().st_mtime_ns for p in checkpoints]
    table = (out / "table.csv").read_text()
    messages.clear()
    run_bench(bench, out, executor=_local_submitit(out), log=messages.append)
    assert sum("skipped" in m for m in messages) == 2 and not any("submitted" in m for m in messages)
    assert [p.stat().st_mtime_ns for p in checkpoints] == written
    assert (out / "table.csv").read_text() == table
    # another config for the same cells is refused before anything runs, naming the cell
    stale = r"cell VAE seed 0: .* other settings \(data\.train_subset \(100 -> 80\)\)"
    with pytest.raises(StaleCellError, match=stale):
        run_bench(bench, out, overrides=["data.train_subset=80"], log=lambda m: None)
    assert [p.stat().st_mtime_ns for p in checkpoints] == written
    # ... but settings a resumed run may change (evaluation here) keep the cells
    run_bench(bench, out, overrides=["evaluation.latent_points=40"], log=lambda m: None)
    assert [p.stat().st_mtime_ns for p in checkpoints] == written


def test_tables_are_rebuilt_from_cells_finished_elsewhere(tmp_path):
    """Cells trained by two separate invocations (two machines sharing the folder) into
    one --out: either invocation's tables hold both, whatever the order."""
    bench = _bench(tmp_path, TWO.replace("training.epochs=2", "training.epochs=1"))
    out = tmp_path / "out"
    run_bench(bench, out, only=["RAE (D)"], results_dir=tmp_path / "a", log=lambda m: None)
    run_bench(bench, out, only=["VAE"], results_dir=tmp_path / "b", log=lambda m: None)
    assert [r["method"] for r in _table(tmp_path / "b")] == ["VAE", "RAE (D)"]
    run_bench(bench, out, only=["RAE (D)"], results_dir=tmp_path / "a", log=lambda m: None)
    _same_table(_table(tmp_path / "a"), _table(tmp_path / "b"))


def test_a_killed_cell_resumes_and_a_failed_cell_is_named(tmp_path, capsys):
    bench_file = tmp_path / "set.yaml"
    bench_file.write_text(KILLED_AND_FAILED)
    out = tmp_path / "out"
    command = ["bench", str(bench_file), "--out", str(out), "--executor", "submitit",
               "--submitit-cluster", "local"]  # fmt: skip
    slow = out / "slow" / "seed0"
    result = {}
    first = threading.Thread(target=lambda: result.setdefault("rc", main(command)))
    first.start()
    # kill the slow cell's process once it has checkpointed an epoch (a pre-emption)
    deadline = time.time() + 240
    while time.time() < deadline and not (
        (slow / "cell.json").is_file() and (slow / "history.csv").is_file()
        and len(_history(slow)) >= 1
    ):  # fmt: skip
        time.sleep(0.05)
    os.kill(json.loads((slow / "cell.json").read_text())["last_attempt"]["pid"], signal.SIGKILL)
    first.join(timeout=240)
    assert not first.is_alive() and result["rc"] == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("otae: cell slow seed 0 failed: its job") and "killed" in err[0]
    assert err[1].startswith("otae: cell broken seed 0 failed: ValueError: unknown option(s) bogus")
    assert all("rerun the same command to retry it" in line for line in err)
    assert [r["method"] for r in _table(out)] == ["ok"]  # the tables of what finished
    before = _history(slow)
    assert 1 <= len(before) < 60 and not (slow / "metrics.json").exists()
    ok_checkpoint = out / "ok" / "seed0" / "checkpoints" / "last.pt"
    written = ok_checkpoint.stat().st_mtime_ns

    # the same command again: ok is skipped, slow continues where it stopped
    assert main(command) == 1  # broken fails again, and says so
    assert capsys.readouterr().err.count("failed") == 1
    assert ok_checkpoint.stat().st_mtime_ns == written
    after = _history(slow)
    assert [int(r["epoch"]) for r in after] == list(range(1, 61))
    assert after[: len(before)] == before  # epochs kept (their times too), not trained again
    assert [r["method"] for r in _table(out)] == ["ok", "slow"]
    assert _table(out)[1]["epochs"] == "60"


def test_resources_come_from_the_set_and_the_flags_win(tmp_path, monkeypatch):
    from otae.cli import bench as bench_cli
    from otae.cli.app import build_parser

    bench_file = tmp_path / "set.yaml"
    bench_file.write_text(TWO + "slurm: {partition: gpu, gpus_per_cell: 1, time_min: 30}\n")
    args = build_parser().parse_args(
        ["bench", str(bench_file), "--executor", "submitit", "--time-min", "90",
         "--cpus-per-cell", "4", "--array-parallelism", "3"]  # fmt: skip
    )
    executor = bench_cli._executor(args, load_bench(bench_file), tmp_path / "out")
    (fake := tmp_path / "bin").mkdir()  # a Slurm login node, as far as submitit can tell
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    slurm, cluster = executor._executor()
    assert cluster == "slurm"
    assert {k: slurm.parameters.get(k) for k in
            ("partition", "gpus_per_node", "cpus_per_task", "time", "array_parallelism")} == {
        "partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 4, "time": 90,
        "array_parallelism": 3}  # fmt: skip
    # slurm flags are for the submitit executor only
    assert main(["bench", str(bench_file), "--time-min", "5"]) == 2

