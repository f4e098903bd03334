"""A trained run as a folder people can share and reload: ``otae export``.

:func:`export_run` writes what :meth:`~otae.models.Autoencoder.save_pretrained` writes
(``config.json`` + ``model.safetensors``, reloaded by
:func:`~otae.models.from_pretrained`), plus the data spec the model expects and the
training settings it came from (in ``config.json``), a grid of samples
(``samples.png``) and a model card (``README.md``) with YAML metadata
(``library_name: otae``), the run's measured numbers from its ``metrics.json``, and the
lines of Python that load it. :func:`encode_dataset_to_file` writes the codes of a
dataset (``otae encode``) from an export folder or a run directory.

:func:`push_to_hub` uploads an export folder to the Hugging Face Hub (``otae export RUN
OUT --push user/name``; optional: ``pip install 'otae[hub]'``), from where
:func:`~otae.models.from_pretrained` loads it by its repo id. :func:`evaluate_export`
measures an export folder on a dataset (``otae eval FOLDER``): reconstruction, clustering
where the data has labels, disentanglement where it has generative factors.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write, atomic_write_text
from ._optional import require
from ._version import __version__
from .data import build_dataset
from .data.batches import iter_batches, labels_of, num_items
from .evaluation.figures import save_image_grid
from .evaluation.metrics import eval_mode
from .models import Autoencoder, from_pretrained
from .models.pretrained import (
    CONFIG_FILE,
    HUB_FILES,
    WEIGHTS_FILE,
    HubError,
    first_line,
    is_hub_repo_id,
    read_config,
    resolve_folder,
)
from .training import config_to_dict, load_run

__all__ = [
    "CARD_FILE",
    "SAMPLES_FILE",
    "encode_dataset_to_file",
    "evaluate_export",
    "export_run",
    "load_model",
    "push_to_hub",
]

CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"

#: metrics.json entries the card shows, with their label (when present)
CARD_METRICS = {
    "test_rec_loss": "Reconstruction loss (test, per-image sum of squared errors)",
    "test_mse_per_pixel": "MSE per pixel (test)",
    "mean_image_baseline_rec_loss": "Mean-image baseline reconstruction loss",
    "fid": "FID (Inception-v3 pool3)",
    "classifier_fd": "Classifier FD (small classifier of the dataset; not FID)",
    "cluster_acc_kmeans": "Clustering ACC (k-means on the test codes)",
    "cluster_nmi_kmeans": "Clustering NMI (k-means)",
    "cluster_acc_prior": "Clustering ACC (the prior's components)",
    "mig": "MIG (binned posterior means)",
    "mig_posterior": "MIG (q): Chen et al.'s estimator on the posteriors",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness": "DCI informativeness",
    "factorvae_score": "FactorVAE score",
    "epochs": "Epochs trained",
    "parameters": "Parameters",
}


def _numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{name}_"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                flat[name] = float(value)
    return flat


def _number(value: float) -> str:
    return f"{int(value):,}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"


def _card(name: str, model: Autoencoder, config, epoch: int, checkpoint: str,
          metrics: dict[str, Any], repo_id: str | None = None) -> str:  # fmt: skip
    numbers = _numbers(metrics)
    rows = [
        f"| {label} | {_number(numbers[key])} |"
        for key, label in CARD_METRICS.items()
        if key in numbers
    ]
    summary = (type(model).__doc__ or "").strip().splitlines()
    lines = [
        "---",
        "library_name: otae",
        "license: mit",
        "tags:",
        "  - autoencoder",
        "  - optimal-transport",
        f"  - {config.model.name}",
        "datasets:",
        f"  - {config.data.name}",
        "---",
        "",
        f"# {name}: {config.model.name} on {config.data.name}",
        "",
        (summary[0] if summary else f"An otae {config.model.name} model."),
        "",
        f"Trained by otae {__version__} (`otae train`, config `{config.name}`), "
        f"{checkpoint} checkpoint, epoch {epoch}; {config.network.architecture} networks, "
        f"latent dimension {config.model.latent_dim}, images "
        f"{'x'.join(str(s) for s in model.build_spec['image_shape'])} in [0, 1].",
        "",
        "## Measured",
        "",
    ]
    if rows:
        lines += ["| metric | value |", "|---|---|", *rows, ""]
        lines.append("All values from the run's `metrics.json` (protocols: the otae docs, "
                     "docs/evaluation.md).")  # fmt: skip
    else:
        lines.append("The run has no `metrics.json`: evaluate it with `otae eval RUN_DIR`.")
    lines += [
        "",
        f"![samples from the prior]({SAMPLES_FILE})",
        "",
        "## Load",
        "",
        "```python",
        "from otae.models import from_pretrained",
        f'model = from_pretrained("{repo_id or "path/to/this/folder"}")  '
        "# no code from the folder runs",
        "codes = model.embed(images)                    # images: (N, C, H, W) in [0, 1]",
        "```",
        "",
        "A Hub repo id (`user/name`) is downloaded first, its data files only (config.json, "
        "model.safetensors, README.md, samples.png); `pip install 'otae[hub]'`.",
        "",
        "Or from the command line: `otae encode FOLDER --data "
        f"{config.data.name} --out codes.npz`.",
        "",
    ]
    return "\n".join(lines)


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    checkpoint: str | None = None,
    n_samples: int = 64,
    *,
    repo_id: str | None = None,
    with_critic: bool = False,
) -> Path:
    """Export the run in ``run_dir`` to ``out_dir`` (module docstring); ``checkpoint``:
    ``best``, ``last`` or None: ``best.pt`` (the best held-out loss, or the best
    monitored validation value with early stopping) where the run has one, else
    ``last.pt``.
    ``repo_id``: the Hub repo the folder is meant for (the card's loading line names it;
    :func:`push_to_hub` uploads). ``with_critic``: keep the modules only training uses
    (GWAE's critic, FactorVAE's discriminator), left out by default."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if checkpoint is None:
        checkpoint = "best" if (run_dir / "checkpoints" / "best.pt").is_file() else "last"
    config, model, state = load_run(run_dir, checkpoint, "cpu")
    chosen = checkpoint
    data = {
        "dataset": config.data.name,
        "image_shape": list(model.build_spec["image_shape"]),
        "value_range": [0.0, 1.0],
        "normalisation": "none: pixel values scaled to [0, 1]",
        "image_size": config.data.image_size,
    }
    model.save_pretrained(out_dir, data=data, training=config_to_dict(config)["training"],
                          with_critic=with_critic)  # fmt: skip
    metrics_path = run_dir / "metrics.json"
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except ValueError:
            metrics = {}
    with eval_mode(model):
        images = model.sample(n_samples, torch.Generator().manual_seed(0)).clamp(0, 1)
    save_image_grid(images, out_dir / SAMPLES_FILE, nrow=max(1, round(math.sqrt(n_samples))))
    card = _card(config.name, model, config, int(state.get("epoch", 0)), chosen, metrics,
                 repo_id)  # fmt: skip
    atomic_write_text(out_dir / CARD_FILE, card)
    return out_dir


def load_model(path: str | os.PathLike, checkpoint: str | None = None) -> Autoencoder:
    """The model of an export folder (``config.json`` + ``model.safetensors``) or of a run
    directory (its ``checkpoint``: best, last, or None for the final one), in eval mode.
    A Hugging Face Hub repo id (``user/name``) that is no local folder is loaded by
    :func:`~otae.models.from_pretrained`."""
    if not Path(path).exists() and is_hub_repo_id(path):
        return from_pretrained(os.fspath(path))
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file():
        return from_pretrained(path)
    if (path / "checkpoints").is_dir():
        return load_run(path, checkpoint, "cpu")[1]
    raise ValueError(
        f"{path} is neither an export folder ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a run "
        "directory (checkpoints/)"
    )


def encode_dataset_to_file(
    model: Autoencoder,
    dataset: str,
    out: str | os.PathLike,
    *,
    split: str = "test",
    root: str | None = None,
    sample: bool = False,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, tuple[int, ...]]:
    """Codes of ``dataset`` (a name of :data:`otae.data.DATASETS`) under ``model`` into the
    npz file ``out``: ``codes`` (posterior means, ``model.embed``), with ``sample`` also
    ``samples`` (one draw of the posterior per image, seeded by ``seed``), ``labels``
    where the data has them and ``factors`` (with ``factor_names``) where it has known
    generative factors. Returns the arrays' shapes."""
    image_size = model.build_spec["image_shape"][-1] if model.build_spec else None
    data = build_dataset(dataset, split, root=root, image_size=image_size)
    want = tuple(model.build_spec["image_shape"]) if model.build_spec else None
    if want is not None and tuple(data.image_shape) != want:
        raise ValueError(
            f"{dataset} {split} images are {tuple(data.image_shape)}, the model takes {want}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    codes, draws = [], []
    with eval_mode(model):
        for x, _ in iter_batches(data, batch_size):
            x = x.float()
            codes.append(model.embed(x).cpu())
            if sample:
                mean, logvar = model.encode(x)
                if logvar is None:
                    draws.append(mean.cpu())
                else:
                    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
                    draws.append((mean + (0.5 * logvar).exp() * noise).cpu())
    arrays: dict[str, np.ndarray] = {
        "codes": torch.cat(codes).numpy() if codes else np.zeros((0, model.config.latent_dim))
    }
    if sample:
        arrays["samples"] = torch.cat(draws).numpy() if draws else arrays["codes"].copy()
    labels = labels_of(data)
    if labels is not None and len(labels) == num_items(data):
        arrays["labels"] = labels.numpy()
    factors = getattr(data, "factors", None)
    if factors is not None:
        arrays["factors"] = np.asarray(factors)
        arrays["factor_names"] = np.asarray(list(getattr(data, "factor_names", [])))
    atomic_write(Path(out), lambda handle: np.savez_compressed(handle, **arrays))
    return {k: tuple(v.shape) for k, v in arrays.items()}


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload the export folder ``folder`` (its :data:`~otae.models.pretrained.HUB_FILES`
    only: config.json, model.safetensors, README.md, samples.png) to the model repo
    ``repo_id`` of the Hugging Face Hub, creating the repo if needed (``private``: its
    visibility then); returns the commit's URL. ``token``: default ``HF_TOKEN`` or the
    token of ``hf auth login``. One line for a missing token, no network or a refusal
    (:class:`~otae.models.pretrained.HubError`)."""
    folder = Path(folder)
    if not is_hub_repo_id(repo_id):
        raise ValueError(f"--push needs a Hub repo id, user/name; got {repo_id!r}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} holds no {name}: not an export folder")
    hub = require("huggingface_hub", feature="pushing to the Hugging Face Hub",
                  install="otae[hub]")  # fmt: skip
    from huggingface_hub import errors

    token = token or hub.get_token()
    if not token:
        raise HubError(
            f"pushing to the Hugging Face Hub ({repo_id}) needs a token: `hf auth login` "
            "(or `huggingface-cli login`), or set HF_TOKEN"
        )
    api = hub.HfApi(token=token, library_name="otae", library_version=__version__)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            allow_patterns=list(HUB_FILES),
            commit_message=commit_message or f"otae {__version__} export",
        )
    except errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        why = " (the token may lack write access)" if status in (401, 403) else ""
        raise HubError(
            f"the Hugging Face Hub refused to push {repo_id}{why}: {first_line(err)}"
        ) from None
    except Exception as err:
        # no network: OSError (requests) or the HTTP client's transport errors (httpx)
        package = type(err).__module__.split(".")[0]
        transport = package.startswith(("httpx", "requests", "urllib3"))
        if not (isinstance(err, OSError) or transport):
            raise
        raise HubError(
            f"could not reach the Hugging Face Hub to push {repo_id} (no network?): "
            f"{first_line(err)}"
        ) from None
    return str(getattr(info, "commit_url", None) or f"https://huggingface.co/{repo_id}")


def evaluate_export(
    folder: str | os.PathLike,
    *,
    data: str | None = None,
    out: str | os.PathLike | None = None,
    root: str | None = None,
    split: str = "test",
    subset: int | None = None,
    batch_size: int = 500,
    device: str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Evaluate the model of an export folder (or a Hub repo id) on the ``split`` of
    dataset ``data`` (default: the dataset its ``config.json`` names), its first
    ``subset`` images if given; writes ``metrics.json`` (and ``test_codes.npz``) to
    ``out`` (default ``FOLDER/eval``) and returns ``(out, metrics)``.

    The metrics are those ``otae eval`` writes for a run, with the same keys and
    functions (:mod:`otae.evaluation`): the reconstruction loss (the mean per-image sum
    of squared errors, pixels in [0, 1]) and the mean-image baseline (mean of the
    ``train`` split; skipped where the data has none), the clustering scores where the
    images have labels, the disentanglement scores (MIG, DCI, FactorVAE) where they have
    generative factors. Not here: the figures and report.html, FID and the classifier FD
    (they need a run directory)."""
    from .evaluation.clustering import dataset_clustering_metrics
    from .evaluation.metrics import mean_image_baseline, reconstruction_metrics
    from .nn import count_parameters

    local = Path(folder).is_dir() or not is_hub_repo_id(folder)
    if out is None and not local:
        raise ValueError(f"{folder} is a Hub repo id: give the folder to write (--out)")
    directory = resolve_folder(folder)
    model = from_pretrained(directory, device)
    config = read_config(directory)
    spec = config.get("data") if isinstance(config.get("data"), dict) else {}
    name = data or spec.get("dataset")
    if not name:
        raise ValueError(
            f"{directory / CONFIG_FILE} names no dataset (data.dataset): pass --data NAME"
        )
    image_shape = tuple(model.build_spec["image_shape"])
    # the size the model was trained at, for its own dataset; another one as it comes
    size = spec.get("image_size") if name == spec.get("dataset") else None
    test = build_dataset(name, split, root=root, subset=subset, image_size=size)
    if tuple(test.image_shape) != image_shape:
        raise ValueError(f"{name} {split} images are {tuple(test.image_shape)}, the model "
                         f"takes {image_shape}")  # fmt: skip
    out = Path(out) if out is not None else directory / "eval"
    out.mkdir(parents=True, exist_ok=True)
    rec = reconstruction_metrics(model, test, batch_size)
    metrics: dict[str, Any] = {
        "model": model.config.name,
        "dataset": name,
        "split": split,
        "source": os.fspath(folder),
        "architecture": model.build_spec["architecture"],
        "test_images": rec["n_images"],
        "test_rec_loss": rec["rec_loss"],
        "test_mse_per_pixel": rec["mse_per_pixel"],
        "parameters": count_parameters(model),
    }
    try:
        train = build_dataset(name, "train", root=root, image_size=size)
    except (ValueError, OSError) as err:
        metrics["mean_image_baseline"] = f"skipped: no train split ({first_line(err)})"
    else:
        baseline = mean_image_baseline(train, test, batch_size)
        metrics["mean_image_baseline_rec_loss"] = baseline["rec_loss"]
    codes_path = out / "test_codes.npz"
    metrics.update(dataset_clustering_metrics(model, test, batch_size, codes_path=codes_path))
    if getattr(test, "factors", None) is not None:
        from .evaluation.traversals import dataset_disentanglement_metrics

        scores, _, _ = dataset_disentanglement_metrics(
            model, test, batch_size, codes_path=codes_path,
            reuse_codes="clustering_codes_file" in metrics,
        )  # fmt: skip
        metrics.update(scores)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return out, metrics
