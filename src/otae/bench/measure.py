"""One (run, seed) of a bench: trained (or resumed) and measured (Fréchet distances,
clustering, step times on ``--retime``), its metrics kept in the run's ``metrics.json``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text
from ._common import device_of
from .cells import (
    cell_config,
    cell_id,
    cell_identity,
    check_cell,
    identity_hash,
    read_metrics,
    record_of,
    trained_to_protocol,
    write_cell,
)
from .config import BenchConfig, BenchRun, RunOptions, run_dir_of


def measure_run(
    bench: BenchConfig,
    run: BenchRun,
    seed: int,
    out_dir: Path,
    options: RunOptions,
    *,
    train: bool = True,
    log=print,
) -> dict[str, Any] | None:
    """Train (unless finished; resuming an interrupted run), measure, and return its record.

    With ``train=False`` (the runs were trained by worker processes) a run without
    metrics is reported and left out (None). Metrics are written to the run's
    ``metrics.json`` after each stage, so an interrupted bench loses nothing done.
    """
    from ..experiment import run_experiment
    from ..training import build_split, load_run

    run_dir = run_dir_of(out_dir, run, seed)
    config = cell_config(bench, run, seed, options.overrides)
    check_cell(run, seed, run_dir, config)
    metrics_path = run_dir / "metrics.json"
    metrics = read_metrics(run_dir)
    # an early-stopped run is finished before training.epochs
    finished = trained_to_protocol(metrics, config)
    if train and not finished:
        _check_frechet_possible(bench, config)
        if options.deadline is not None and time.time() >= options.deadline:
            log(f"[bench] {run.name} seed {seed}: time limit reached before it started")
        else:
            log(f"[bench] {run.name} seed {seed}: training in {run_dir}")
            write_cell(bench, run, seed, run_dir, config)
            start = time.perf_counter()
            resume = (run_dir / "checkpoints" / "last.pt").exists()
            result = run_experiment(
                config, run_dir, resume=resume, report=True, deadline=options.deadline
            )
            metrics = result.metrics
            metrics["bench_wall_time_s"] = time.perf_counter() - start
            metrics.update(provenance(config, options.concurrent_runs))
            # the protocol the set's description states, changed on the command line
            metrics["command_overrides"] = " ".join(options.overrides)
            metrics["cell"] = cell_id(run, seed)
            metrics["cell_hash"] = identity_hash(cell_identity(config))
            atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if metrics is None:
        log(f"[bench] {run.name} seed {seed}: no metrics in {run_dir}; left out of the table")
        return None
    if options.retime:
        metrics.update(_retime(config, run_dir))
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if not _has_frechet(metrics, bench) or (options.save_samples and not _has_samples(run_dir)):
        _, model, _ = load_run(run_dir, None, device=str(device_of(config)))
        test_data = build_split(config.data, "test")
        metrics.update(
            frechet_metrics_of_run(model, config, test_data, bench, options, run_dir, log)
        )
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if _lacks_clustering(metrics, config):  # a run measured before clustering was
        from ..evaluation.clustering import dataset_clustering_metrics

        _, model, _ = load_run(run_dir, None, device=str(device_of(config)))
        metrics.update(
            dataset_clustering_metrics(
                model,
                build_split(config.data, "test"),
                config.training.eval_batch_size,
                codes_path=run_dir / "test_codes.npz",
            )
        )
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if _lacks_posterior_mig(metrics, run_dir, config):  # scored before MIG (q) existed
        from ..evaluation.traversals import dataset_disentanglement_metrics

        _, model, _ = load_run(run_dir, None, device=str(device_of(config)))
        scores, _, _ = dataset_disentanglement_metrics(
            model, build_split(config.data, "test"), config.training.eval_batch_size,
            codes_path=run_dir / "test_codes.npz", reuse_codes=True,
        )  # fmt: skip
        metrics.update(scores)
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    if _lacks_per_factor_mig(metrics, run_dir):  # a run scored before the per-factor gaps
        from ..evaluation.traversals import per_factor_mig_from_codes

        metrics.update(per_factor_mig_from_codes(
            run_dir / "test_codes.npz", metrics["disentanglement_factors"], metrics["mig"]
        ))  # fmt: skip
        atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    log(
        f"[bench] {run.name} seed {seed}: rec {metrics['test_rec_loss']:.2f}"
        + "".join(f", {k} {metrics[k]:.2f}" for k in ("classifier_fd", "fid") if k in metrics)
        + f" ({metrics.get('epochs')}/{config.training.epochs} epochs)"
    )
    return record_of(run, seed, run_dir, config, metrics)


def cell_complete(bench: BenchConfig, run: BenchRun, seed: int, out_dir: Path, options) -> bool:
    """Whether a cell has nothing left to do: trained to its protocol and measured as the
    set and ``options`` ask (no ``retime``, Fréchet distances, clustering, samples)."""
    run_dir = run_dir_of(out_dir, run, seed)
    metrics = read_metrics(run_dir)
    if metrics is None or options.retime:
        return False
    config = cell_config(bench, run, seed, options.overrides)
    return (
        trained_to_protocol(metrics, config)
        and _has_frechet(metrics, bench)
        and not (options.save_samples and not _has_samples(run_dir))
        and not _lacks_clustering(metrics, config)
        and not _lacks_per_factor_mig(metrics, run_dir)
        and not _lacks_posterior_mig(metrics, run_dir, config)
    )


def _check_frechet_possible(bench: BenchConfig, config) -> None:
    """Refuse before training a set's classifier FD that the data cannot give."""
    import copy

    from ..experiment import check_frechet_possible

    wanted = copy.deepcopy(config)
    wanted.evaluation.classifier_fd_samples = bench.classifier_fd_samples
    check_frechet_possible(wanted)


def frechet_metrics_of_run(model, config, test_data, bench, options, run_dir, log):
    """The set's Fréchet distances of one trained run (and its saved samples if asked)."""
    from ..experiment import frechet_metrics

    samples_path = run_dir / "samples.npz" if options.save_samples else None
    return frechet_metrics(
        model,
        config,
        test_data,
        bench.classifier_fd_samples,
        bench.fid_samples,
        log=log,
        inception_weights=options.inception_weights,
        samples_path=samples_path,
    )


def _has_samples(run_dir: Path) -> bool:
    return (run_dir / "samples.npz").is_file()


def provenance(config, concurrent_runs: int = 1) -> dict[str, Any]:
    """Where and how a row was measured: machine, accelerator, torch, date, concurrency,
    and the machine's 15-minute load average when training ended (where the system
    reports one). A bench knows its own runs at once, not the other work on the
    machine; the load counts both."""
    import datetime
    import platform

    device = device_of(config)
    accelerator = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    )
    return {
        "machine": platform.node(),
        "accelerator": accelerator,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "concurrent_runs": concurrent_runs,
        "precision": config.training.precision,
        "compiled": bool(config.training.compile),
        "date": datetime.date.today().isoformat(),
        **_load_average(),
    }


def _load_average() -> dict[str, float]:
    try:
        return {"load_average_15min": round(float(os.getloadavg()[2]), 2)}
    except (AttributeError, OSError):  # no load average on this system (Windows)
        return {}


def _retime(config, run_dir: Path) -> dict[str, float]:
    """Time the training step of a finished run again (e.g. on an otherwise idle machine)."""
    from ..training import Trainer

    trainer = Trainer.from_config(config, run_dir, log=lambda m: None)
    trainer.resume()
    return trainer.regulariser_share(max(config.evaluation.timing_steps, 20))


def _has_frechet(metrics: dict[str, Any], bench: BenchConfig) -> bool:
    wanted = [("classifier_fd", bench.classifier_fd_samples), ("fid", bench.fid_samples)]
    return all(n == 0 or metrics.get(f"{key}_samples") == n for key, n in wanted)


def _lacks_per_factor_mig(metrics: dict[str, Any], run_dir: Path) -> bool:
    """Whether a run scored for disentanglement lacks a factor's ``mig_factor_*`` gap
    that its saved test codes can give."""
    from ..evaluation.traversals import mig_factor_key

    names = metrics.get("disentanglement_factors")
    if metrics.get("mig") is None or not names:
        return False
    missing = any(mig_factor_key(name) not in metrics for name in names)
    return missing and (Path(run_dir) / "test_codes.npz").is_file()


def _lacks_posterior_mig(metrics: dict[str, Any], run_dir: Path, config) -> bool:
    """Whether a probabilistic run scored for disentanglement lacks ``mig_posterior``."""
    from ..models import get_model_class

    return (
        metrics.get("mig") is not None
        and "mig_posterior" not in metrics
        and get_model_class(config.model.name).probabilistic
        and (Path(run_dir) / "test_codes.npz").is_file()
    )


def _lacks_clustering(metrics: dict[str, Any], config) -> bool:
    """Whether a run's metrics miss the clustering scores (or their note) that it wants,
    or one of them (a run scored before ``cluster_prior_components_used`` existed)."""
    wanted = config.evaluation.clustering
    return wanted and "cluster_prior_components_used" not in metrics and "clustering" not in metrics
