"""A whole experiment: train (or resume), evaluate, write metrics.json and the report.

This sits above :mod:`otae.training` and :mod:`otae.evaluation` and is what
``otae train`` / ``otae eval`` call. A run directory holds::

    config.yaml          the resolved config (re-runnable with `otae train`)
    history.csv          every loss term and test metric per epoch
    tensorboard/         the same, for TensorBoard
    checkpoints/         last.pt, best.pt (atomic, weights-only loadable)
    metrics.json         final test metrics
    figures/, report.html
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .evaluation.metrics import mean_image_baseline, reconstruction_metrics
from .nn import count_parameters
from .parallel import local_batches
from .training import (
    CheckpointError,
    ExperimentConfig,
    Trainer,
    build_split,
    config_to_dict,
    derived_seed,
    load_run,
)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    report: Path | None


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-").lower()


def frechet_metrics(
    model,
    config: ExperimentConfig,
    test_data,
    classifier_fd_samples: int,
    fid_samples: int,
    log=print,
) -> dict[str, float]:
    """Classifier FD and/or FID between ``n`` generated and ``n`` test images (0: skip).

    The classifier FD is measured in the feature space of a small MNIST
    classifier trained once and cached (:mod:`otae.evaluation.classifier`); it
    is a cheap CPU comparison, not FID. FID uses Inception-v3 pool3 features
    (:mod:`otae.evaluation.fid`). Real-image statistics are cached.
    """
    from .evaluation import fid as fid_lib

    out: dict[str, float] = {}
    device = next(model.parameters()).device
    dataset_key = slug(f"{config.data.name}-test-{config.data.root or 'embedded'}")
    jobs = []
    if classifier_fd_samples > 0:
        from .evaluation.classifier import (
            ClassifierFeatureExtractor,
            load_or_train_mnist_classifier,
        )

        classifier, info = load_or_train_mnist_classifier(log=log)
        jobs.append(
            ("classifier_fd", ClassifierFeatureExtractor(classifier), classifier_fd_samples)
        )
        out["classifier_test_accuracy"] = float(info["test_accuracy"])
    if fid_samples > 0:
        jobs.append(("fid", fid_lib.InceptionFeatureExtractor(device=device), fid_samples))
    for key, extractor, n in jobs:
        n_real = min(n, len(test_data))
        real = fid_lib.dataset_statistics(test_data, extractor, n_real, key=dataset_key)
        generator = torch.Generator(device=device).manual_seed(
            derived_seed(config.training.seed, 0, 6)
        )
        fake = fid_lib.generated_statistics(model, extractor, n, generator=generator)
        out[key] = fid_lib.frechet_distance(*real, *fake)
        out[f"{key}_samples"] = n
        out[f"{key}_real_samples"] = n_real
    return out


def default_run_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / config.name


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless asked to (nothing is lost by accident)."""
    has_run = (run_dir / "checkpoints").exists() or (run_dir / "history.csv").exists()
    if has_run and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{run_dir} already holds a run: pass --resume to continue it, --overwrite "
                "to start again, or choose another directory with --run-dir"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, values: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def evaluate_model(
    model,
    config: ExperimentConfig,
    run_dir: Path,
    history: list[dict[str, float]],
    *,
    train_data=None,
    test_data=None,
    report: bool = True,
    extra: dict[str, Any] | None = None,
    log=print,
) -> RunResult:
    """Final metrics (spec §1 units) and, optionally, the figures and HTML report."""
    train_data = train_data or build_split(config.data, "train")
    test_data = test_data or build_split(config.data, "test")
    rec = reconstruction_metrics(model, test_data, config.training.eval_batch_size)
    baseline = mean_image_baseline(train_data, test_data, config.training.eval_batch_size)
    times = [row["epoch_time_s"] for row in history if "epoch_time_s" in row]
    metrics: dict[str, Any] = {
        "model": config.model.name,
        "dataset": config.data.name,
        "architecture": config.network.architecture,
        "epochs": len(history),
        "test_images": rec["n_images"],
        "test_rec_loss": rec["rec_loss"],
        "test_mse_per_pixel": rec["mse_per_pixel"],
        "mean_image_baseline_rec_loss": baseline["rec_loss"],
        "seconds_per_epoch": sum(times) / len(times) if times else None,
        "parameters": count_parameters(model),
        "seed": config.training.seed,
    }
    if history:
        metrics.update({f"last_{k}": v for k, v in history[-1].items() if k != "epoch"})
    metrics.update(extra or {})
    ev = config.evaluation
    if ev.classifier_fd_samples > 0 or ev.fid_samples > 0:
        metrics.update(
            frechet_metrics(
                model, config, test_data, ev.classifier_fd_samples, ev.fid_samples, log=log
            )
        )
    _write_json(run_dir / "metrics.json", metrics)
    report_path = None
    if report and config.evaluation.report:
        from .evaluation.report import generate_report

        n_points = min(len(test_data), config.evaluation.latent_points)
        images, labels = test_data.get_batch(torch.arange(n_points))
        device = next(model.parameters()).device
        report_path = generate_report(
            model,
            run_dir,
            images.to(device),
            labels,
            metrics=metrics,
            history=history,
            config=config_to_dict(config),
            generator=torch.Generator(device=device).manual_seed(
                derived_seed(config.training.seed, 0, 4)
            ),
            latent_method=config.evaluation.latent_method,
            max_points=config.evaluation.latent_points,
        )
    return RunResult(run_dir, metrics, report_path)


def run_experiment(
    config: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = True,
    log=None,
) -> RunResult | None:
    """Train ``config`` (continuing from the last checkpoint with ``resume``), then evaluate.

    Under torchrun every rank trains; rank 0 alone prepares the run directory,
    evaluates and writes the report; the other ranks return ``None``.
    """
    from .training import distributed

    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    is_main = distributed.world()[1] == 0
    if is_main:
        prepare_run_dir(run_dir, resume, overwrite)
    distributed.barrier()
    trainer = Trainer(config, run_dir, log=log)
    start = time.perf_counter()
    history = trainer.fit(resume=resume)
    wall = time.perf_counter() - start
    if not is_main:
        return None
    extra: dict[str, Any] = {
        "device": str(trainer.device),
        "processes": trainer.world_size,
        "train_wall_time_s": wall,
    }
    # rank 0 alone from here on: the model must not wait for the other ranks
    with local_batches(trainer.model):
        if config.evaluation.timing_steps > 0:
            extra.update(trainer.regulariser_share(config.evaluation.timing_steps))
        return evaluate_model(
            trainer.model,
            config,
            run_dir,
            history,
            train_data=trainer.train_data,
            test_data=trainer.test_data,
            report=report,
            extra=extra,
            log=trainer.log,
        )


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    report: bool = True,
    device: str = "cpu",
    *,
    classifier_fd_samples: int | None = None,
    fid_samples: int | None = None,
) -> RunResult:
    """Re-evaluate a run directory from its checkpoint (``otae eval``).

    ``classifier_fd_samples`` / ``fid_samples`` override the run's config (None: keep).
    """
    run_dir = Path(run_dir)
    config, model, state = load_run(run_dir, checkpoint, device=device)
    if classifier_fd_samples is not None:
        config.evaluation.classifier_fd_samples = classifier_fd_samples
    if fid_samples is not None:
        config.evaluation.fid_samples = fid_samples
    if "history" not in state:
        raise CheckpointError(f"{run_dir}: checkpoint has no history")
    return evaluate_model(
        model,
        config,
        run_dir,
        list(state["history"]),
        report=report,
        extra={"checkpoint": checkpoint, "device": device},
    )
