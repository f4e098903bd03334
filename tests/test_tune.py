"""`otae tune`: search spaces, one worker, two workers sharing a journal, a killed worker,
pruning, and the best config reproducing its trial's metric."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="otae tune needs optuna: pip install 'otae[tune]'")

from otae import tune as tuning  # noqa: E402
from otae.cli import main  # noqa: E402
from otae.experiment import run_experiment  # noqa: E402
from otae.training import load_config  # noqa: E402

CONFIG = "mnist/vae-quick"
#: about 0.5 s per trial on one CPU thread
TINY = [
    "data.train_subset=200",
    "data.test_subset=100",
    "training.epochs=2",
    "training.batch_size=50",
    "network.architecture=mlp",
    "network.options={hidden: [16]}",
    "model.latent_dim=2",
    "evaluation.timing_steps=0",
    "evaluation.report=false",
    "evaluation.latent_points=50",
]
SPACE = ["training.optimizer.lr=loguniform:1e-4:1e-2", "model.gamma=uniform:0.5:2"]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _study(out: Path, name: str = "vae-quick"):
    storage, _, _ = tuning.open_storage(None, out)
    return optuna.load_study(study_name=name, storage=storage)


def _worker(out: Path, trials: int, *extra: str) -> subprocess.Popen:
    """`python -m otae tune` in a process of its own (one torch thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "otae", "tune", CONFIG, *TINY, *SPACE,
           "--trials", str(trials), "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


# ---------------------------------------------------------------------- search spaces
def test_space_parses_each_distribution():
    space = tuning.parse_space([
        "model.gamma=loguniform:1e-3:10", "model.beta=uniform:0:0.5",
        "model.latent_dim=int:2:16", "training.optimizer.name=choice:adam,rmsprop",
        "network.options.hidden=choice:16,32",
    ])  # fmt: skip
    assert space["model.gamma"] == tuning.Dimension("model.gamma", "loguniform", 1e-3, 10.0,
                                                    spec="loguniform:1e-3:10")  # fmt: skip
    assert space["model.latent_dim"].low == 2 and isinstance(space["model.latent_dim"].high, int)
    assert space["training.optimizer.name"].choices == ("adam", "rmsprop")
    assert space["network.options.hidden"].choices == (16, 32)  # YAML values
    # what a study records: the same dimension however its bounds are written
    assert space["model.gamma"].canonical == "loguniform:0.001:10.0"
    assert tuning.parse_dimension("model.gamma", "loguniform:1e-3:1e1").canonical == (
        space["model.gamma"].canonical
    )
    assert space["training.optimizer.name"].canonical == 'choice:"adam","rmsprop"'


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("model.gamma=lognormal:1:2", "unknown distribution 'lognormal'"),
        ("model.gamma=loguniform:0:1", "must be positive"),
        ("model.gamma=uniform:2:1", "LOW must be below HIGH"),
        ("model.gamma=uniform:1", "expected uniform:LOW:HIGH"),
        ("model.gamma=uniform:a:1", "'a' is not a number"),
        ("model.gamma=uniform:1:inf", "finite"),
        ("model.latent_dim=int:2:8.5", "'8.5' is not an integer"),
        ("model.prior=choice:gmm", "two values or more"),
        ("model.prior=choice:gmm,gmm", "twice"),
        ("model.prior=choice:gmm,", "two values or more"),
        ("model..gamma=uniform:0:1", "dotted config key"),
        ("model.gamma", "KEY=SPEC"),
    ],
)
def test_bad_specs_are_one_line_errors(item, needle):
    with pytest.raises(ValueError, match="search space") as caught:
        tuning.parse_space([item])
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_command_line_splits_overrides_from_dimensions_and_reads_space_files(tmp_path):
    overrides, space = tuning.split_arguments(
        ["training.epochs=3", "model.gamma=loguniform:0.1:10", "name=uniform"]
    )
    assert overrides == ["training.epochs=3", "name=uniform"] and list(space) == ["model.gamma"]
    path = tmp_path / "space.yaml"
    path.write_text("search:\n  model.beta: uniform:0.01:0.5\n  model.gamma: loguniform:0.1:10\n")
    assert list(tuning.load_space(path)) == ["model.beta", "model.gamma"]
    path.write_text("search: {model.beta: uniform:0.01:0.5}\nmetric: fid\n")
    with pytest.raises(ValueError, match="unknown: metric"):
        tuning.load_space(path)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model.lam=loguniform:1e-3:10"], "model.lam"),  # D-RAE has no lam
        (["model.beta=uniform:0.5:2"], "at 2.0"),  # beta must lie in [0, 1]
        ([], "the search space is empty"),
        (["model.gamma=uniform:0:1", "--pruner", "median:x"], "--pruner"),
    ],
)
def test_cli_refuses_a_bad_search_before_any_trial(args, needle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tune", "mnist/drae-quick", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "otae: error:" in err and needle in err and "Traceback" not in err
    assert not list(out.glob("trial-*"))


def test_missing_optuna_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    assert main(["tune", CONFIG, "model.gamma=uniform:0.5:2"]) == 2
    assert "pip install 'otae[tune]'" in capsys.readouterr().err


# ---------------------------------------------------------------------- one worker
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished 3-trial study of one worker (the CLI, in this process)."""
    out = tmp_path_factory.mktemp("tune") / "out"
    args = ["tune", CONFIG, *TINY, *SPACE, "--trials", "3", "--out", str(out), "--sampler-seed", "0"]
    assert main(args) == 0
    return out


def test_one_worker_runs_the_trials_and_writes_the_outputs(searched):
    rows = _rows(searched)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert set(rows[0]) >= {"value", "duration_s", "training.optimizer.lr", "model.gamma"}
    assert sorted(p.name for p in searched.glob("trial-*")) == [f"trial-000{i}" for i in range(3)]
    report = (searched / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2  # history and importances
    assert (searched / "optimization_history.png").is_file()
    best = min(rows, key=lambda r: float(r["value"]))
    text = (searched / "best.yaml").read_text()
    assert f"trial {best['number']}" in text.splitlines()[0]
    config = load_config(searched / "best.yaml")
    assert config.training.optimizer.lr == float(best["training.optimizer.lr"])
    assert config.training.epochs == 2 and config.name == "vae-quick-tuned"
    # a worker of a finished study runs nothing and rebuilds the outputs
    assert main(["tune", CONFIG, *TINY, *SPACE, "--trials", "3", "--out", str(searched)]) == 0
    assert len(_rows(searched)) == 3


def test_best_config_reproduces_its_trial_metric(searched, tmp_path):
    best = min(_rows(searched), key=lambda r: float(r["value"]))
    result = run_experiment(load_config(searched / "best.yaml"), tmp_path / "rerun", report=False)
    assert result.metrics["test_rec_loss"] == float(best["value"])  # bit for bit
    trial = json.loads((Path(best["run_dir"]) / "metrics.json").read_text())
    assert trial["test_rec_loss"] == result.metrics["test_rec_loss"]


def test_joining_a_study_of_another_search_is_refused(searched):
    with pytest.raises(ValueError, match="searches"):
        tuning.tune(CONFIG, SPACE[:1], overrides=TINY, out=searched, n_trials=3)
    with pytest.raises(ValueError, match="training.epochs"):
        tuning.tune(CONFIG, SPACE, overrides=[*TINY, "training.epochs=3"], out=searched,
                    n_trials=3)  # fmt: skip
    with pytest.raises(ValueError, match="not maximize"):
        tuning.tune(CONFIG, SPACE, overrides=TINY, out=searched, n_trials=3,
                    direction="maximize")  # fmt: skip


def test_a_metric_missing_from_metrics_json_fails_the_trial(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'no_such_metric' is not in .*metrics.json"):
        tuning.tune(CONFIG, SPACE, overrides=TINY, out=out, n_trials=3, metric="no_such_metric",
                    log=lambda m: None)  # fmt: skip
    (trial,) = _study(out).get_trials()
    assert trial.state.name == "FAIL" and "no_such_metric" in trial.user_attrs["note"]
    assert _rows(out)[0]["state"] == "FAIL"


def test_pruning_stops_a_trial_at_an_epoch_boundary(tmp_path):
    out = tmp_path / "out"
    result = tuning.tune(
        CONFIG, SPACE, overrides=[*TINY, "training.epochs=3"], out=out, n_trials=1,
        pruner=optuna.pruners.ThresholdPruner(upper=0.0), log=lambda m: None,
    )  # fmt: skip
    assert result.states == {"PRUNED": 1}
    (row,) = _rows(out)
    assert row["state"] == "PRUNED" and row["epochs"] == "1" and "after epoch 1 of 3" in row["note"]
    run = out / "trial-0000"
    history = list(csv.DictReader(open(run / "history.csv")))
    assert len(history) == 1  # stopped after its first epoch
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "metrics.json").exists()
    assert not (out / "best.yaml").exists()  # nothing completed


# ---------------------------------------------------------------------- several workers
def test_two_workers_share_one_journal_and_run_exactly_n_trials(tmp_path):
    out, n = tmp_path / "out", 6
    # no pruner: whether the median pruner stops the last trial depends on which worker
    # reports first (its own test is above); this test is about sharing the journal
    workers = [_worker(out, n, "--sampler-seed", str(i), "--pruner", "none") for i in range(2)]
    logs = [w.communicate(timeout=240)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    rows = _rows(out)
    assert sorted(int(r["number"]) for r in rows) == list(range(n))
    assert {r["state"] for r in rows} == {"COMPLETE"}
    dirs = [r["run_dir"] for r in rows]
    assert len(set(dirs)) == n and sorted(p.name for p in out.glob("trial-*")) == sorted(
        Path(d).name for d in dirs
    )
    ran = {pid: sum(r["worker"] == pid for r in rows) for pid in {r["worker"] for r in rows}}
    assert sum(ran.values()) == n
    # each trial's line is in the log of the worker that ran it, and in no other
    for r in rows:
        lines = [log.count(f"[trial {r['number']}] training") for log in logs]
        assert sorted(lines) == [0, 1], (r["number"], lines)


def test_a_killed_worker_loses_only_its_running_trial(tmp_path):
    out, n = tmp_path / "out", 3
    worker = _worker(out, n, "--pruner", "none")
    running = out / "trial-0001" / "config.yaml"  # trial 0 done, trial 1 training
    deadline = time.monotonic() + 120
    while not running.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.poll() is None, worker.communicate()[0]
    worker.send_signal(signal.SIGKILL)
    worker.communicate(timeout=30)
    # the next invocation completes the study: the killed trial stays RUNNING (the journal
    # has no heartbeat) and counts once; the others complete
    result = tuning.tune(CONFIG, SPACE, overrides=TINY, out=out, n_trials=n, pruner="none",
                         log=lambda m: None)  # fmt: skip
    assert result.ran == [2]
    states = {r["number"]: r["state"] for r in _rows(out)}
    assert states == {"0": "COMPLETE", "1": "RUNNING", "2": "COMPLETE"}
    assert not (out / "trial-0001" / "metrics.json").exists()
    assert sorted(p.name for p in out.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    assert result.best_number in (0, 2)


def test_a_database_url_holds_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = tuning.tune(CONFIG, SPACE[:1], overrides=[*TINY, "training.epochs=1"],
                         out=tmp_path / "out", n_trials=2, storage=url, study_name="s",
                         pruner="none", log=lambda m: None)  # fmt: skip
    assert result.states == {"COMPLETE": 2} and result.storage == url
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    assert not (tmp_path / "out" / "study.journal").exists()
