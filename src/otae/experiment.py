"""A whole experiment: train (or resume), evaluate, write metrics.json and the report.

This sits above :mod:`otae.training` and :mod:`otae.evaluation` and is what
``otae train`` / ``otae eval`` call. A run directory holds::

    config.yaml          the resolved config (re-runnable with `otae train`)
    history.csv          every loss term and test metric per epoch
    tensorboard/         the same, for TensorBoard
    wandb/, mlruns/      the same, with training.loggers: [wandb] / [mlflow]
    checkpoints/         last.pt, best.pt (atomic, weights-only loadable)
    metrics.json         final test metrics (with training.early_stopping: of best.pt)
    figures/, report.html
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ._io import LOCK_FILE, FolderLock, atomic_write_text
from .data.batches import labels_of
from .evaluation.metrics import mean_image_baseline, reconstruction_metrics
from .nn import count_parameters
from .parallel import local_batches
from .training import (
    CheckpointError,
    DataConfig,
    ExperimentConfig,
    Trainer,
    build_split,
    carve_validation,
    config_to_dict,
    derived_seed,
    final_checkpoint,
    load_checkpoint,
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
    inception_weights=None,
    samples_path: str | Path | None = None,
) -> dict[str, float]:
    """Classifier FD and/or FID between ``n`` generated and ``n`` test images (0: skip).

    The classifier FD is measured in the feature space of a small classifier
    trained once and cached (:mod:`otae.evaluation.classifier`): the MNIST one for
    MNIST runs, otherwise one trained on the run's own labelled training data
    (:func:`fd_classifier`); ``classifier_trained_on`` records which. It is a cheap
    CPU comparison, not FID. FID uses Inception-v3 pool3 features
    (:mod:`otae.evaluation.fid`) from ``inception_weights`` (a path; None:
    ``$OTAE_INCEPTION_WEIGHTS``, else the installed package's). Real-image statistics
    are cached. ``samples_path``: also save the generated images the distances score
    (uint8 npz, :func:`otae.evaluation.fid.save_samples_npz`), to score them elsewhere
    with ``otae fid``.
    """
    from .evaluation import fid as fid_lib

    out: dict[str, Any] = {}
    device = next(model.parameters()).device
    dataset_key = slug(f"{config.data.name}-test-{config.data.root or 'embedded'}")
    jobs = []
    if classifier_fd_samples > 0:
        from .evaluation.classifier import ClassifierFeatureExtractor

        classifier, info = fd_classifier(config.data, log=log)
        jobs.append(
            ("classifier_fd", ClassifierFeatureExtractor(classifier), classifier_fd_samples)
        )
        accuracy = info.get("test_accuracy")
        out["classifier_trained_on"] = info["trained_on"]
        out["classifier_name"] = info["name"]
        out["classifier_test_accuracy"] = None if accuracy is None else float(accuracy)
    if fid_samples > 0:
        extractor = fid_lib.InceptionFeatureExtractor(device=device, path=inception_weights)
        jobs.append(("fid", extractor, fid_samples))
    def sample_generator() -> torch.Generator:
        # the same samples for every distance (and the saved file)
        return torch.Generator(device=device).manual_seed(derived_seed(config.training.seed, 0, 6))

    for key, extractor, n in jobs:
        n_real = min(n, len(test_data))
        real = fid_lib.dataset_statistics(test_data, extractor, n_real, key=dataset_key)
        fake = fid_lib.generated_statistics(model, extractor, n, generator=sample_generator())
        out[key] = fid_lib.frechet_distance(*real, *fake)
        out[f"{key}_samples"] = n
        out[f"{key}_real_samples"] = n_real
    if samples_path is not None:
        n = max(fid_samples, classifier_fd_samples) or 10000
        images = fid_lib.generate_samples(model, n, generator=sample_generator())
        out["samples_file"] = str(fid_lib.save_samples_npz(images, samples_path))
    return out


def uses_mnist_classifier(data: DataConfig) -> bool:
    """Whether ``data`` is MNIST as the MNIST classifier of classifier FD saw it."""
    return data.name == "mnist" and data.root is None and data.image_size in (None, 28)


def fd_classifier(data: DataConfig, log=print):
    """``(classifier, info)`` whose features define the classifier FD of runs on ``data``.

    MNIST (:func:`uses_mnist_classifier`): the cached MNIST classifier. Any other
    data: a classifier trained on that data's whole labelled training split, cached
    by the data's identity; unlabelled data raises ``ValueError``. ``info["trained_on"]``
    says which data the classifier was trained on.
    """
    from .evaluation.classifier import (
        load_or_train_data_classifier,
        load_or_train_mnist_classifier,
    )

    if uses_mnist_classifier(data):
        classifier, info = load_or_train_mnist_classifier(log=log)
        return classifier, {"trained_on": "mnist (the MNIST training set)", **info}
    full = DataConfig(name=data.name, root=data.root, image_size=data.image_size)
    where = f" at {data.root}" if data.root else ""
    return load_or_train_data_classifier(
        build_split(full, "train"),
        build_split(full, "test"),
        dataset=f"{data.name}{where}",
        log=log,
    )


def check_frechet_possible(config: ExperimentConfig, train_data=None) -> None:
    """Raise ``ValueError`` now if the requested Fréchet metrics cannot be computed later.

    Classifier FD on data other than MNIST needs labelled training data (a classifier
    is trained on it).
    """
    if config.evaluation.classifier_fd_samples <= 0 or uses_mnist_classifier(config.data):
        return

    data = train_data if train_data is not None else build_split(config.data, "train")
    if labels_of(data) is None:
        raise ValueError(
            "classifier FD needs a classifier trained on the run's own data, and the "
            f"{config.data.name} training images are not labelled; use FID "
            "(evaluation.fid_samples / --fid) instead, or set evaluation.classifier_fd_samples=0"
        )


def default_run_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / config.name


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> FolderLock:
    """Refuse to clobber an existing run unless asked to (nothing is lost by accident);
    the run directory's lock, held (:class:`~otae._io.FolderLock`): refused while another
    process trains there, before ``overwrite`` clears anything."""
    has_run = (run_dir / "checkpoints").exists() or (run_dir / "history.csv").exists()
    if resume and not run_dir.exists():
        raise FileNotFoundError(
            f"--resume: no run directory at {run_dir}; check the path (or --run-dir), or "
            "drop --resume to start a new run"
        )
    if resume and not has_run and not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(
            f"--resume: {run_dir} exists but holds no otae run to continue (no checkpoints/, "
            "history.csv or config.yaml); check the path, or drop --resume to start a new run"
        )
    if has_run and not resume and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it, --overwrite "
            "to start again, or choose another directory with --run-dir"
        )
    lock = FolderLock(run_dir, "run directory").acquire()
    if has_run and not resume:
        try:
            for child in run_dir.iterdir():
                if child.name == LOCK_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        except BaseException:
            lock.release()
            raise
    return lock


def _write_json(path: Path, values: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=False) + "\n")


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
    inception_weights=None,
) -> RunResult:
    """Final metrics and, optionally, the figures and HTML report.

    The reconstruction losses are the mean over test images of the per-image sum of
    squared errors, pixels in [0, 1] (the RAE paper's "Rec. loss" unit).

    ``inception_weights``: the FID weights file (:func:`frechet_metrics`). Unless
    ``evaluation.clustering`` is false, the test codes are clustered against the test
    labels (:func:`otae.evaluation.clustering.dataset_clustering_metrics`) and saved
    to ``test_codes.npz``. Test data with generative factors (a ``factors`` attribute,
    e.g. ``shapes``) also gets the disentanglement scores of those codes
    (:func:`otae.evaluation.traversals.dataset_disentanglement_metrics`: MIG, DCI,
    FactorVAE score, their time), the factors added to ``test_codes.npz``, and a latent
    traversal figure in the report (one row per factor, its most important dimension).
    """
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
    check_frechet_possible(config, train_data)
    if ev.classifier_fd_samples > 0 or ev.fid_samples > 0:
        metrics.update(
            frechet_metrics(
                model,
                config,
                test_data,
                ev.classifier_fd_samples,
                ev.fid_samples,
                log=log,
                inception_weights=inception_weights,
            )
        )
    # clustering is cheap (about 1 s for 10k codes) but can be switched off
    if ev.clustering:
        from .evaluation.clustering import dataset_clustering_metrics

        metrics.update(
            dataset_clustering_metrics(
                model,
                test_data,
                config.training.eval_batch_size,
                codes_path=run_dir / "test_codes.npz",
            )
        )
    traversal = None
    if getattr(test_data, "factors", None) is not None:  # e.g. shapes: disentanglement
        from .evaluation.traversals import dataset_disentanglement_metrics, factor_traversal_rows

        scores, codes, importance = dataset_disentanglement_metrics(
            model,
            test_data,
            config.training.eval_batch_size,
            codes_path=run_dir / "test_codes.npz",
            # the clustering above saved these codes: not encoded twice
            reuse_codes="clustering_codes_file" in metrics,
        )
        metrics.update(scores)
        if importance is not None:
            names = scores["disentanglement_factors"]
            traversal = (codes, factor_traversal_rows(importance, names))
    _write_json(run_dir / "metrics.json", metrics)
    report_path = None
    if report and config.evaluation.report:
        from .evaluation.report import generate_report

        n_points = min(len(test_data), config.evaluation.latent_points)
        images, labels = test_data.get_batch(torch.arange(n_points))
        device = next(model.parameters()).device
        clusters = None
        if metrics.get("cluster_classes"):  # the clusters scored above, for their plot
            from .evaluation.clustering import saved_clusters

            found, source = saved_clusters(run_dir / "test_codes.npz")
            clusters = (found[:n_points], source)
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
            clusters=clusters,
            traversal=traversal,
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
    deadline: float | None = None,
    callbacks: list | None = None,
) -> RunResult | None:
    """Train ``config`` (continuing from the last checkpoint with ``resume``), then evaluate.

    ``deadline`` (a ``time.time()`` value) ends training early at an epoch boundary
    (:meth:`Trainer.fit`); the metrics then describe the epochs done (``epochs``).

    With ``training.early_stopping`` the final metrics and the report are those of
    ``best.pt`` (the best epoch by the monitored validation metric; ``checkpoint`` and
    ``checkpoint_epoch`` say so), and ``early_stopping_*`` record the monitor, the best
    epoch and value and the stopping epoch (None: it ran to ``training.epochs``).

    Under torchrun every rank trains; rank 0 alone prepares the run directory,
    evaluates and writes the report; the other ranks return ``None``.

    ``callbacks`` are added to the trainer's (:class:`~otae.training.Trainer`); all of
    them (:mod:`otae.training.callbacks`) also get the final
    metrics and report path (``on_run_end``), or the error of a failed evaluation
    (``on_exception``), then ``teardown``.
    """
    from .training import distributed

    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    is_main = distributed.world()[1] == 0
    lock = prepare_run_dir(run_dir, resume, overwrite) if is_main else None
    try:
        distributed.barrier()
        return _train_and_evaluate(config, run_dir, resume, report, log, deadline, callbacks,
                                   is_main)  # fmt: skip
    finally:
        if lock is not None:
            lock.release()


def _train_and_evaluate(config, run_dir, resume, report, log, deadline, callbacks, is_main):
    """:func:`run_experiment` once the run directory is prepared (and locked)."""
    trainer = Trainer.from_config(config, run_dir, log=log, callbacks=callbacks)
    # refused now, not after training: a Fréchet metric the data cannot have
    check_frechet_possible(config, trainer.train_data)
    start = time.perf_counter()
    if resume and not trainer.resume():
        trainer.log(f"no checkpoint in {trainer.checkpoint_dir}: starting from scratch")
    resumed_at = trainer.epoch
    trained = False
    try:
        # the callbacks stay open for the final metrics (on_run_end), torn down below
        history = trainer.fit(deadline=deadline, teardown=False)
        trained = True
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
                extra.update(_step_timings(trainer, config.evaluation.timing_steps))
            if trainer.early_stopping is not None:
                extra.update(_early_stopping_record(trainer.early_stopping.state_dict(),
                                                    config, len(trainer.val_data)))
                best_epoch = trainer.restore_best()  # None: no epoch was evaluated
                extra["checkpoint"] = "last" if best_epoch is None else "best"
                extra["checkpoint_epoch"] = trainer.epoch if best_epoch is None else best_epoch
            result = evaluate_model(
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
        trainer.callbacks.on_run_end(trainer, result.metrics, result.report)
        return result
    except BaseException as err:
        if trained:  # a failure of fit() was reported to the callbacks there
            trainer.notify_failure(err)
        # the epoch of last.pt now: a failed checkpoint write (full disk) leaves the
        # previous one, which metrics.json still describes
        saved = resumed_at if trainer.checkpoint_epoch is None else trainer.checkpoint_epoch
        if is_main and saved != resumed_at:
            _drop_stale_metrics(run_dir, saved, trainer.log)
        raise
    finally:
        trainer.teardown()


def _early_stopping_record(
    state: dict[str, Any], config: ExperimentConfig, validation_images: int | None
) -> dict[str, Any]:
    """metrics.json's account of early stopping, from its checkpointed state."""
    es = config.training.early_stopping
    return {
        "early_stopping_monitor": es.monitor,
        "early_stopping_mode": es.mode,
        "early_stopping_patience": es.patience,
        "early_stopping_best_epoch": state.get("best_epoch"),
        "early_stopping_best_value": state.get("best_value"),
        "early_stopping_stopped_epoch": state.get("stopped_epoch"),
        "validation_images": validation_images,
    }


def _step_timings(trainer: Trainer, steps: int) -> dict[str, Any]:
    """The step-timing pass; a failure there is reported, never the end of a trained run."""
    try:
        return trainer.regulariser_share(steps)
    except Exception as err:  # a measurement: the trained run and its metrics come first
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        trainer.log(f"warning: the step-timing pass failed ({reason}); no step timings")
        return {"timing_error": reason}


def _drop_stale_metrics(run_dir: Path, epoch: int, log) -> None:
    """Remove metrics.json if it describes an earlier state than the run's checkpoints now."""
    path = run_dir / "metrics.json"
    try:
        recorded = json.loads(path.read_text()).get("epochs")
    except (OSError, ValueError, AttributeError):
        return
    if recorded != epoch:
        path.unlink(missing_ok=True)
        log(
            f"removed {path}: it described epoch {recorded}, the run has gone on to epoch "
            f"{epoch}; `otae eval {run_dir}` evaluates the latest checkpoint"
        )


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str | None = None,
    report: bool = True,
    device: str = "cpu",
    *,
    classifier_fd_samples: int | None = None,
    fid_samples: int | None = None,
    inception_weights=None,
) -> RunResult:
    """Re-evaluate a run directory from its checkpoint (``otae eval``).

    ``report``: write the figures and report.html, also for a run trained without them
    (``--no-report`` / ``evaluation.report: false``); False: metrics.json only.

    ``checkpoint``: last, best, or None: the run's final model (best with
    ``training.early_stopping``, as at the end of ``otae train``; the history and the
    early-stopping record then come from last.pt, which holds the whole run).
    ``classifier_fd_samples`` / ``fid_samples`` override the run's config (None: keep);
    ``inception_weights``: the FID weights file (None: ``$OTAE_INCEPTION_WEIGHTS``, else
    the installed package's).
    """
    run_dir = Path(run_dir)
    config, model, state = load_run(run_dir, checkpoint or "last", device=device)
    last = state if checkpoint in (None, "last") else None
    if checkpoint is None:
        checkpoint = final_checkpoint(config)
        if checkpoint != "last":
            config, model, state = load_run(run_dir, checkpoint, device=device)
    extra: dict[str, Any] = {"checkpoint": checkpoint, "device": device}
    train_data = None
    es = config.training.early_stopping
    if es.enabled:
        # the rows the run trained on (the mean-image baseline's), and the whole history
        train_data, val_data = carve_validation(build_split(config.data, "train"), es)
        last = last or load_checkpoint(run_dir / "checkpoints" / "last.pt")
        if "history" in last and "early_stopping" in last:
            state = {**state, "history": last["history"]}
            extra.update(_early_stopping_record(last["early_stopping"], config, len(val_data)))
        extra["checkpoint_epoch"] = state.get("epoch")
    if classifier_fd_samples is not None:
        config.evaluation.classifier_fd_samples = classifier_fd_samples
    if fid_samples is not None:
        config.evaluation.fid_samples = fid_samples
    # an explicit evaluation asks for the report the run's training may have skipped
    config.evaluation.report = bool(report)
    if "history" not in state:
        raise CheckpointError(f"{run_dir}: checkpoint has no history")
    return evaluate_model(
        model,
        config,
        run_dir,
        list(state["history"]),
        train_data=train_data,
        report=report,
        extra=extra,
        inception_weights=inception_weights,
    )
