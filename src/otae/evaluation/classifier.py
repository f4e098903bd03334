"""A cheap Fréchet distance for quick CPU comparisons on MNIST: "classifier FD" (NOT FID).

FID needs Inception-v3 at 299x299 (about 0.13 s per image on a CPU core). For quick
comparisons between MNIST models this module trains, once, a small CNN classifier
(:class:`MnistClassifier`: two conv layers, a 128-d penultimate layer, a linear layer to
the 10 classes) and uses its penultimate activations as features
(:class:`ClassifierFeatureExtractor`, 128-d, thousands of images per second).

Data other than MNIST gets a classifier of its own (:func:`load_or_train_data_classifier`:
the same network, sized to its images and classes, trained on its labelled training
set and cached under a hash of that set), since a Fréchet distance must be measured in a
feature space of the data it compares; unlabelled data has no classifier FD (use FID).

The Fréchet distance computed from these features (with :func:`otae.evaluation.fid.fid`
and the other functions of :mod:`otae.evaluation.fid`) is a Fréchet distance in *this
small classifier's* feature space. Call it **"classifier FD"** in tables. It is **not
FID**: its scale and behaviour differ, and it must never be compared with FID values
(nor with a classifier FD from another seed or number of epochs; the extractor's
``name`` carries both, so cached statistics never mix them).

Training (:func:`load_or_train_mnist_classifier`) is deterministic: fixed seed for the
initialisation (``torch.manual_seed`` inside ``torch.random.fork_rng``, so the caller's
global RNG is untouched), an explicit ``torch.Generator`` for the shuffling, Adam, and a
single CPU thread while training (multi-threaded CPU kernels sum in a
thread-count-dependent order, so the weights would otherwise depend on the machine).
The trained weights (``torch.save`` of the ``state_dict``, read back with
``torch.load(weights_only=True)``) and a JSON file with the test accuracy, the seed,
the epochs and the training time are cached in ``$OTAE_CACHE_DIR`` (default
``~/.cache/otae``). Measured: 2 epochs on the 60k training images take about 30 s on
one core and reach about 98.3% test accuracy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._io import atomic_write
from ..data.batches import iter_batches, labels_of, num_items, take_batch
from .fid import default_cache_dir
from .metrics import eval_mode

__all__ = [
    "ClassifierFeatureExtractor",
    "MnistClassifier",
    "classifier_accuracy",
    "classifier_name",
    "dataset_identity",
    "load_or_train_data_classifier",
    "load_or_train_mnist_classifier",
    "train_mnist_classifier",
]

CLASSIFIER_VERSION = "v1"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FEATURE_DIM = 128
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


def classifier_name(seed: int = 0, epochs: int = 2, train_subset: int | None = None) -> str:
    """``mnist-classifier-fd-v1-seed<seed>-e<epochs>[-sub<n>]``: names weights and features."""
    name = f"mnist-classifier-fd-{CLASSIFIER_VERSION}-seed{int(seed)}-e{int(epochs)}"
    if train_subset is not None:
        name += f"-sub{int(train_subset)}"
    return name


class MnistClassifier(nn.Module):
    """Small CNN for 1x28x28 images in ``[0, 1]``: conv(16)-pool-conv(32)-pool-fc(128)-fc(10).

    :meth:`penultimate` returns the 128 ReLU activations that the last linear layer
    reads: the features of classifier FD. ``name`` identifies the trained weights.
    The same network serves other labelled image data (:func:`load_or_train_data_classifier`):
    ``image_shape`` ``(C, H, W)`` (``H, W >= 4``), ``n_classes`` and the pixel ``mean`` /
    ``std`` of its training set.
    """

    def __init__(
        self,
        name: str = f"mnist-classifier-fd-{CLASSIFIER_VERSION}-untrained",
        *,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        n_classes: int = 10,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
    ):
        super().__init__()
        self.name = name
        self.image_shape = tuple(int(s) for s in image_shape)
        channels, height, width = self.image_shape
        if min(height, width) < 4 or int(n_classes) < 2 or not std > 0:
            raise ValueError(
                f"the classifier needs images of at least 4x4 pixels, 2 classes and std > 0, "
                f"got shape {self.image_shape}, {n_classes} classes, std {std}"
            )
        self.mean, self.std = float(mean), float(std)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (height // 4) * (width // 4), FEATURE_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(FEATURE_DIM, int(n_classes))

    def penultimate(self, x: Tensor) -> Tensor:
        """``(N, 128)`` penultimate activations of ``(N, C, H, W)`` images in ``[0, 1]``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            shape = ", ".join(str(s) for s in self.image_shape)
            raise ValueError(
                f"the classifier {self.name} takes images of shape (N, {shape}), "
                f"got {tuple(x.shape)}"
            )
        return self.features((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, 10)``."""
        return self.head(self.penultimate(x))


def classifier_accuracy(classifier: nn.Module, dataset: Any, batch_size: int = 1000) -> float:
    """Fraction of ``dataset`` (images + labels) that ``classifier`` labels correctly."""
    correct, total = 0, 0
    with eval_mode(classifier):
        for x, y in iter_batches(dataset, batch_size):
            if y is None:
                raise ValueError("classifier_accuracy needs a labelled dataset")
            correct += int((classifier(x.float()).argmax(1) == y.long()).sum())
            total += int(x.shape[0])
    if total == 0:
        raise ValueError("classifier_accuracy needs at least one image")
    return correct / total


def train_mnist_classifier(
    train_set: Any,
    *,
    seed: int = 0,
    epochs: int = 2,
    batch_size: int = BATCH_SIZE,
    lr: float = LEARNING_RATE,
    name: str | None = None,
    log: Callable[[str], Any] | None = print,
    network: dict[str, Any] | None = None,
) -> MnistClassifier:
    """A :class:`MnistClassifier` trained on ``train_set`` (deterministic given ``seed``).

    Initialised under ``torch.manual_seed(seed)`` in a forked RNG (the global RNG is
    left as it was), shuffled each epoch by a ``torch.Generator`` seeded with ``seed``,
    Adam (``lr``) on the cross-entropy, one CPU thread (restored afterwards).
    ``network``: keyword arguments of :class:`MnistClassifier` (image shape, classes,
    normalisation) for data other than MNIST.
    """
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    n = num_items(train_set)
    if n < 1:
        raise ValueError("the training set is empty")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        classifier = MnistClassifier(name or classifier_name(seed, epochs), **(network or {}))
    generator = torch.Generator().manual_seed(int(seed))
    optimiser = torch.optim.Adam(classifier.parameters(), lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        classifier.train()
        for epoch in range(int(epochs)):
            order = torch.randperm(n, generator=generator)
            total, count = 0.0, 0
            for start in range(0, n, int(batch_size)):
                x, y = take_batch(train_set, order[start : start + int(batch_size)])
                if y is None:
                    raise ValueError("training the classifier needs a labelled dataset")
                loss = F.cross_entropy(classifier(x.float()), y.long())
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * x.shape[0]
                count += int(x.shape[0])
            if log is not None:
                log(f"  epoch {epoch + 1}/{epochs}: training cross-entropy {total / count:.4f}")
    finally:
        torch.set_num_threads(threads)
    classifier.eval()
    return classifier


def _load_cached(weights: Path, meta: Path, name: str) -> tuple[MnistClassifier, dict] | None:
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        classifier = MnistClassifier(name, **dict(info.get("network") or {}))
        classifier.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, ValueError, RuntimeError, KeyError, EOFError, TypeError):
        return None
    if not isinstance(info, dict) or info.get("name") != name or "test_accuracy" not in info:
        return None
    return classifier.eval(), info


def _from_cache(cache_dir, name: str, log, describe: Callable[[dict], str]):
    """``(weights path, info path, (classifier, info) or None)`` for classifier ``name``."""
    directory = default_cache_dir() if cache_dir is None else Path(cache_dir)
    weights, meta = directory / f"{name}.pt", directory / f"{name}.json"
    cached = _load_cached(weights, meta, name)
    if cached is None:
        return weights, meta, None
    classifier, info = cached
    if log is not None:
        log(f"loaded {name} from {weights} ({describe(info)})")
    return weights, meta, (classifier, {**info, "cached": True})


def load_or_train_mnist_classifier(
    cache_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    epochs: int = 2,
    log: Callable[[str], Any] | None = print,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> tuple[MnistClassifier, dict[str, Any]]:
    """The MNIST classifier of classifier FD: from the cache, or trained once and cached.

    Looks for ``<name>.pt`` (state dict) and ``<name>.json`` (info) in ``cache_dir``
    (default :func:`~otae.evaluation.fid.default_cache_dir`), ``name`` being
    :func:`classifier_name` ``(seed, epochs, train_subset)``. Otherwise trains on the
    embedded MNIST training set (its first ``train_subset`` images if given; tests use
    that), measures the accuracy on the test set (its first ``test_subset`` images if
    given) and writes both files.

    Returns ``(classifier, info)``; ``info`` has ``name``, ``test_accuracy``, ``n_test``,
    ``seed``, ``epochs``, ``n_train``, ``train_subset``, ``batch_size``, ``lr``,
    ``train_seconds``, ``torch`` (version) and ``cached`` (whether it was loaded).
    """
    from ..data import build_dataset

    name = classifier_name(seed, epochs, train_subset)
    weights, meta, cached = _from_cache(
        cache_dir, name, log, lambda info: f"test accuracy {float(info['test_accuracy']):.4f}"
    )
    if cached is not None:
        return cached

    train_set = build_dataset("mnist", "train", subset=train_subset)
    test_set = build_dataset("mnist", "test", subset=test_subset)
    if log is not None:
        log(
            f"training {name} for classifier FD ({len(train_set)} images, {epochs} epochs, "
            f"seed {seed}); cached in {weights.parent}"
        )
    start = time.perf_counter()
    classifier = train_mnist_classifier(train_set, seed=seed, epochs=epochs, name=name, log=log)
    seconds = time.perf_counter() - start
    accuracy = classifier_accuracy(classifier, test_set)
    info: dict[str, Any] = {
        "name": name,
        "test_accuracy": accuracy,
        "n_test": len(test_set),
        "seed": int(seed),
        "epochs": int(epochs),
        "n_train": len(train_set),
        "train_subset": train_subset,
        "batch_size": BATCH_SIZE,
        "lr": LEARNING_RATE,
        "train_seconds": round(seconds, 2),
        "torch": torch.__version__,
        "trained_on": "mnist (the MNIST training set)",
    }
    if log is not None:
        log(f"{name}: test accuracy {accuracy:.4f} after {seconds:.1f} s of training")
    _save_cached(weights, meta, classifier, info)
    return classifier, {**info, "cached": False}


def _save_cached(weights: Path, meta: Path, classifier: MnistClassifier, info: dict) -> None:
    atomic_write(weights, lambda f: torch.save(classifier.state_dict(), f))
    atomic_write(
        meta, lambda f: f.write(json.dumps(info, indent=2, sort_keys=True) + "\n"), mode="w"
    )


def dataset_identity(dataset: Any, batch_size: int = 4096) -> str:
    """A 16-hex-digit hash of every image and label of ``dataset`` (its cache identity).

    Two datasets share it only if they hold the same images (at 8-bit precision, in
    the same order), with the same labels and shape.
    """
    n = num_items(dataset)
    digest = hashlib.sha256(f"{CLASSIFIER_VERSION}:{n}:".encode())
    for x, y in iter_batches(dataset, batch_size):
        pixels = x.detach().to("cpu", torch.float32).mul(255).round().to(torch.uint8)
        digest.update(str(tuple(pixels.shape[1:])).encode())
        digest.update(pixels.contiguous().numpy().tobytes())
        labels = torch.full((len(x),), -1) if y is None else y
        digest.update(labels.to("cpu", torch.int64).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_or_train_data_classifier(
    train_set: Any,
    test_set: Any | None,
    *,
    dataset: str,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    epochs: int = 2,
    log: Callable[[str], Any] | None = print,
) -> tuple[MnistClassifier, dict[str, Any]]:
    """The classifier-FD classifier of a labelled dataset other than MNIST.

    A Fréchet distance needs a feature space of the data it compares: the MNIST
    classifier's features say little about other images. This trains the same small
    CNN (:class:`MnistClassifier`, sized to the images and classes, normalised by the
    training set's pixel mean and std) on ``train_set``, once, and caches it in
    ``cache_dir`` under a name made of ``dataset`` (a short description) and
    :func:`dataset_identity` of ``train_set``, so another dataset never reuses it.
    The accuracy is measured on ``test_set`` (None or unlabelled: not measured).

    Raises ``ValueError`` if ``train_set`` is not labelled (every label ``>= 0``) with
    at least 2 classes. Returns ``(classifier, info)`` like
    :func:`load_or_train_mnist_classifier`, ``info["trained_on"]`` naming the data.
    """
    labels = labels_of(train_set)
    if labels is None or int(labels.max()) < 1:
        raise ValueError(
            f"classifier FD needs a classifier trained on the run's own data, and the "
            f"{dataset} training images are not labelled with at least 2 classes; "
            "use FID (--fid) for this data"
        )
    identity = dataset_identity(train_set)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", dataset).strip("-").lower()[:40] or "data"
    name = f"{tag}-classifier-fd-{CLASSIFIER_VERSION}-{identity}-seed{int(seed)}-e{int(epochs)}"
    weights, meta, cached = _from_cache(
        cache_dir, name, log, lambda info: f"trained on {info['trained_on']}"
    )
    if cached is not None:
        return cached

    n = num_items(train_set)
    total, total_sq = 0.0, 0.0
    for x, _ in iter_batches(train_set, 4096):
        x = x.double()
        total, total_sq = total + float(x.sum()), total_sq + float(x.pow(2).sum())
    shape = tuple(int(s) for s in take_batch(train_set, torch.arange(1))[0].shape[1:])
    count = n * math.prod(shape)
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0)) or 1.0
    network = {
        "image_shape": list(shape),
        "n_classes": int(labels.max()) + 1,
        "mean": mean,
        "std": std,
    }
    if log is not None:
        log(
            f"training {name} for classifier FD on {dataset} ({n} images, "
            f"{network['n_classes']} classes, {epochs} epochs, seed {seed}); "
            f"cached in {weights.parent}"
        )
    start = time.perf_counter()
    classifier = train_mnist_classifier(
        train_set, seed=seed, epochs=epochs, name=name, log=log, network=network
    )
    seconds = time.perf_counter() - start
    accuracy = None
    if test_set is not None and labels_of(test_set) is not None:
        accuracy = classifier_accuracy(classifier, test_set)
    info = {
        "name": name,
        "trained_on": f"{dataset} ({n} training images)",
        "dataset_identity": identity,
        "network": network,
        "test_accuracy": accuracy,
        "n_test": None if accuracy is None else num_items(test_set),
        "seed": int(seed),
        "epochs": int(epochs),
        "n_train": n,
        "batch_size": BATCH_SIZE,
        "lr": LEARNING_RATE,
        "train_seconds": round(seconds, 2),
        "torch": torch.__version__,
    }
    if log is not None:
        shown = "not measured (unlabelled test set)" if accuracy is None else f"{accuracy:.4f}"
        log(f"{name}: test accuracy {shown} after {seconds:.1f} s of training")
    _save_cached(weights, meta, classifier, info)
    return classifier, {**info, "cached": False}


class ClassifierFeatureExtractor:
    """Penultimate (128-d) features of an :class:`MnistClassifier`, for "classifier FD".

    Callable ``images (N, 1, 28, 28) in [0, 1] -> (N, 128)`` float64 numpy (clamped to
    ``[0, 1]``, batches of ``batch_size``, eval mode and no grad). ``name`` is the
    classifier's (``mnist-classifier-fd-v1-seed<s>-e<epochs>``). The Fréchet distance
    of these features is **not FID** and is never to be compared with FID values.
    """

    def __init__(self, classifier: MnistClassifier, batch_size: int = 1000) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.classifier = classifier
        self.batch_size = int(batch_size)
        self.name = str(getattr(classifier, "name", "")) or classifier_name()
        self.dim = FEATURE_DIM

    def __call__(self, images: Tensor) -> np.ndarray:
        images = torch.as_tensor(images)
        n = num_items(images)
        device = next(self.classifier.parameters()).device
        parts = []
        with eval_mode(self.classifier):
            for start in range(0, n, self.batch_size):
                x = images[start : start + self.batch_size].to(device, torch.float32).clamp(0, 1)
                parts.append(self.classifier.penultimate(x).double().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, self.dim))

    def __repr__(self) -> str:
        return f"ClassifierFeatureExtractor(name={self.name!r})"
