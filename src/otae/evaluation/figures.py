"""Figures of a trained model: image grids, latent plots, loss and convergence curves.

Every ``*_grid`` / ``*_plot`` / ``*_curves`` function writes one PNG and returns
its :class:`~pathlib.Path`. Image grids are written with PIL (exact pixels:
``round(255 * clamp(x, 0, 1))``); plots with matplotlib's object API
(:class:`matplotlib.figure.Figure`, no pyplot, no global backend change).
Randomness comes only from the ``torch.Generator`` / ``seed`` arguments, so the
files are reproducible.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.batches import num_items, take_batch
from .metrics import encode_dataset, eval_mode, model_device_dtype

__all__ = [
    "central_code",
    "conditional_caption",
    "conditional_grid",
    "conditional_samples",
    "convergence_plot",
    "latent_embedding",
    "latent_plot",
    "latent_traversals",
    "loss_curves",
    "make_grid",
    "pca_fit",
    "project_codes",
    "reconstruction_grid",
    "reconstruction_pairs",
    "sample_grid",
    "save_image_grid",
    "traversal_codes",
    "traversal_grid",
]

PathLike = str | os.PathLike


# ---------------------------------------------------------------------- image grids
def make_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile ``(N, C, H, W)`` images into one ``(C, H', W')`` image, ``nrow`` per row.

    Tile ``(r, c)`` (row ``r``, column ``c``) is image ``r * nrow + c``, placed at
    ``[pad + r * (H + pad), pad + c * (W + pad)]``; ``padding`` pixels of
    ``pad_value`` surround every tile (also on the outer border), and missing
    tiles of an incomplete last row are filled with ``pad_value``. Values are
    copied unchanged (no clamping): ``H' = rows * (H + pad) + pad`` with
    ``rows = ceil(N / nrow)``, ``W' = min(N, nrow) * (W + pad) + pad``.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"make_grid expects images of shape (N, C, H, W), got {got}")
    if int(nrow) < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    if int(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    n, c, h, w = images.shape
    nrow, pad = int(nrow), int(padding)
    ncol = max(1, min(n, nrow))
    rows = max(1, math.ceil(n / nrow))
    grid = images.new_full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), float(pad_value))
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid


def _grid_to_uint8(grid: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` uint8 ``round(255 x)``."""
    array = torch.round(grid.detach().double().cpu().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    if array.shape[0] == 1:
        return array[0].numpy()
    if array.shape[0] == 3:
        return array.permute(1, 2, 0).contiguous().numpy()
    raise ValueError(f"can only save 1-channel or 3-channel images, got {array.shape[0]} channels")


def save_image_grid(
    images: Tensor,
    path: PathLike,
    nrow: int = 8,
    padding: int = 2,
    pad_value: float = 1.0,
    title: str | None = None,
) -> Path:
    """Clamp ``images`` to [0, 1], tile them with :func:`make_grid` and save a PNG.

    Grayscale for ``C = 1``, RGB for ``C = 3``. Pixel values are
    ``round(255 * grid)``. ``title`` (optional) is stored in the PNG's ``Title``
    text chunk.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    images = images.detach().cpu().clamp(0.0, 1.0)
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    array = _grid_to_uint8(grid)
    image = Image.fromarray(array, mode="L" if array.ndim == 2 else "RGB")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = None
    if title:
        info = PngInfo()
        info.add_text("Title", str(title))
    image.save(path, format="PNG", pnginfo=info)
    return path


def _default_nrow(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))


def sample_grid(
    model: nn.Module,
    path: PathLike,
    n: int = 64,
    generator: torch.Generator | None = None,
    nrow: int | None = None,
) -> Path:
    """Grid of ``n`` generated images ``model.sample(n, generator)`` (eval mode)."""
    with eval_mode(model):
        images = model.sample(int(n), generator)
    return save_image_grid(
        images, path, nrow=nrow or _default_nrow(int(n)), title=f"{int(n)} samples from the prior"
    )


def conditional_samples(
    model: nn.Module, n_per_component: int = 10, generator: torch.Generator | None = None
) -> Tensor:
    """``(K * n, C, H, W)``: rows ``model.sample_component(k, n, generator)``, k = 0..K-1.

    Components are drawn in order with the one ``generator`` (eval mode).
    """
    n_components = int(model.prior.n_components)
    with eval_mode(model):
        rows = [
            model.sample_component(k, int(n_per_component), generator) for k in range(n_components)
        ]
    return torch.cat(rows)


def conditional_caption(model: nn.Module, n_per_component: int = 10) -> str:
    """What :func:`conditional_grid` shows, including the one-component case."""
    n_components = int(model.prior.n_components)
    if n_components == 1:
        return (
            f"Conditional generation: the prior has a single component, so this is one row "
            f"of {n_per_component} unconditional samples"
        )
    return (
        f"Conditional generation: one row per prior component ({n_components} components), "
        f"{n_per_component} samples each"
    )


def conditional_grid(
    model: nn.Module,
    path: PathLike,
    n_per_component: int = 10,
    generator: torch.Generator | None = None,
) -> Path:
    """One row per prior component ``k``: ``model.sample_component(k, n_per_component)``.

    A one-component prior gives one row; the PNG's ``Title`` chunk (and
    :func:`conditional_caption`) says so.
    """
    images = conditional_samples(model, n_per_component, generator)
    return save_image_grid(
        images,
        path,
        nrow=int(n_per_component),
        title=conditional_caption(model, n_per_component),
    )


def _first_images(images: Any, n: int) -> Tensor:
    n = min(int(n), num_items(images))
    return take_batch(images, torch.arange(n))[0]


def reconstruction_pairs(model: nn.Module, images: Any, n: int = 32, nrow: int = 8) -> Tensor:
    """Originals and reconstructions interleaved row by row, ready for :func:`make_grid`.

    For each chunk of ``nrow`` originals: a row of originals, then a row of
    their reconstructions (an incomplete last chunk is padded with blank
    ``1.0`` tiles so that rows stay aligned).
    """
    originals = _first_images(images, n)
    device, dtype = model_device_dtype(model)
    with eval_mode(model):
        recon = model.reconstruct(originals.to(device=device, dtype=dtype)).cpu()
    originals = originals.detach().cpu().to(recon.dtype)
    rows = []
    for start in range(0, originals.shape[0], int(nrow)):
        for block in (originals, recon):
            chunk = block[start : start + int(nrow)]
            missing = int(nrow) - chunk.shape[0]
            if missing:
                chunk = torch.cat([chunk, chunk.new_ones(missing, *chunk.shape[1:])])
            rows.append(chunk)
    return torch.cat(rows)


def reconstruction_grid(
    model: nn.Module, images: Any, path: PathLike, n: int = 32, nrow: int = 8
) -> Path:
    """First ``n`` images and their reconstructions, interleaved row by row."""
    pairs = reconstruction_pairs(model, images, n=n, nrow=nrow)
    return save_image_grid(
        pairs,
        path,
        nrow=int(nrow),
        title="Reconstructions: each row of test images is followed by its reconstructions",
    )


def interpolations(model: nn.Module, images: Any, n_pairs: int = 8, n_steps: int = 10) -> Tensor:
    """Decoded straight lines between the codes of test images ``2i`` and ``2i + 1``.

    Returns ``(n_pairs * (n_steps + 2), C, H, W)``: each row is the first image,
    the ``n_steps`` decodings of ``(1 - t) z_a + t z_b`` for ``t`` evenly spaced in
    ``[0, 1]``, then the second image.
    """
    x = _first_images(images, 2 * int(n_pairs))
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    t = torch.linspace(0.0, 1.0, int(n_steps), device=device, dtype=dtype)
    with eval_mode(model):
        codes = model.embed(x)
        z_a, z_b = codes[0::2], codes[1::2]
        path = z_a[:, None] + t[None, :, None] * (z_b - z_a)[:, None]
        decoded = model.decode(path.reshape(-1, codes.shape[1])).reshape(
            len(z_a), int(n_steps), *x.shape[1:]
        )
    rows = torch.cat([x[0::2, None], decoded, x[1::2, None]], dim=1)
    return rows.reshape(-1, *x.shape[1:]).cpu()


def interpolation_grid(
    model: nn.Module, images: Any, path: PathLike, n_pairs: int = 8, n_steps: int = 10
) -> Path:
    """Latent interpolations between pairs of test images, one pair per row."""
    rows = interpolations(model, images, n_pairs, n_steps)
    return save_image_grid(
        rows,
        path,
        nrow=int(n_steps) + 2,
        title="Interpolations: test image, decoded straight line between the codes, test image",
    )


def central_code(codes: Tensor) -> int:
    """Index of the code nearest the coordinate-wise median of ``codes`` ``(N, d)``, in
    units of each dimension's standard deviation (ties: the first).

    A real data point's code: on data made of separate objects (``shapes``) the mean
    code decodes to a faint blend of them, an image no input resembles, so traversals
    start from this code instead."""
    codes = torch.as_tensor(codes).detach().double()
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise ValueError(f"codes must have shape (N, d) with N >= 1, got {tuple(codes.shape)}")
    spread = codes.std(0, unbiased=False).clamp_min(1e-12)
    distance = ((codes - codes.median(0).values) / spread).pow(2).sum(1)
    return int(distance.argmin())


def traversal_codes(
    codes: Tensor, dims: Sequence[int], n_steps: int = 10, low: float = 0.05,
    high: float = 0.95, base: Tensor | None = None,
) -> Tensor:
    """``(len(dims), n_steps, d)`` codes of a latent traversal: row ``r`` is the ``base``
    code (default: the mean code) with dimension ``dims[r]`` set to ``n_steps`` evenly
    spaced values from its ``low`` to its ``high`` quantile over ``codes`` ``(N, d)``
    (linear interpolation, as ``torch.quantile``); every other dimension stays at the
    base's value."""
    codes = torch.as_tensor(codes)
    if codes.dim() != 2 or codes.shape[0] < 1:
        raise ValueError(f"codes must have shape (N, d) with N >= 1, got {tuple(codes.shape)}")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    if int(n_steps) < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    dims = [int(j) for j in dims]
    if not dims or not all(0 <= j < codes.shape[1] for j in dims):
        raise ValueError(
            f"dims must be indices of the {codes.shape[1]} code dimensions, got {dims}"
        )
    codes = codes.detach().double()
    t = torch.linspace(0.0, 1.0, int(n_steps), dtype=codes.dtype, device=codes.device)
    if base is None:
        start = codes.mean(0)
    else:
        start = torch.as_tensor(base).detach().to(codes)
        if start.shape != codes.shape[1:]:
            raise ValueError(f"base must be one code of shape ({codes.shape[1]},), got "
                             f"{tuple(start.shape)}")
    rows = start.repeat(len(dims), int(n_steps), 1)
    for r, j in enumerate(dims):
        lo, hi = torch.quantile(codes[:, j], torch.tensor([low, high], dtype=codes.dtype))
        rows[r, :, j] = lo + t * (hi - lo)
    return rows


def latent_traversals(
    model: nn.Module, codes: Tensor, dims: Sequence[int], n_steps: int = 10, **options: Any
) -> Tensor:
    """Decoded :func:`traversal_codes` (``options``: its ``low``, ``high``, ``base``):
    ``(len(dims) * n_steps, C, H, W)``, row by row."""
    path = traversal_codes(codes, dims, n_steps, **options)
    device, dtype = model_device_dtype(model)
    with eval_mode(model):
        decoded = model.decode(path.reshape(-1, path.shape[-1]).to(device=device, dtype=dtype))
    return decoded.cpu()


def traversal_grid(
    model: nn.Module, codes: Tensor, dims: Sequence[int], path: PathLike, n_steps: int = 10
) -> Path:
    """Latent traversals (:func:`latent_traversals`), one code dimension per row, from the
    :func:`central_code` of ``codes`` (a real image's code, not the mean code)."""
    codes = torch.as_tensor(codes)
    images = latent_traversals(model, codes, dims, n_steps, base=codes[central_code(codes)])
    return save_image_grid(
        images,
        path,
        nrow=int(n_steps),
        title="Latent traversals: the code of the test image nearest the median code, "
        "one dimension swept over its 5-95% range",
    )


# ---------------------------------------------------------------------- latent plots
def pca_fit(codes: Tensor, n_components: int = 2) -> tuple[Tensor, Tensor]:
    """``(center (d,), basis (d, k))`` of PCA on ``codes``: SVD of the centred codes.

    Project with ``(x - center) @ basis``. Computed in float64.
    """
    codes = codes.detach().double().cpu()
    center = codes.mean(0)
    _, _, vh = torch.linalg.svd(codes - center, full_matrices=False)
    basis = vh[: int(n_components)].T
    return center, basis


def project_codes(
    codes: Tensor, means: Tensor | None = None, method: str = "pca", seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """2-D coordinates of ``codes`` and of the prior ``means`` with one shared map.

    * ``latent_dim == 2``: the codes themselves (no projection);
    * ``latent_dim == 1``: the code on the x axis, 0 on the y axis;
    * ``"pca"``: PCA fitted on the codes, then applied to the means;
    * ``"tsne"``: t-SNE cannot place new points, so it is fitted on the codes and
      the means stacked together (``random_state=seed``).

    Returns ``(codes_2d (N, 2), means_2d (K, 2) or None, description)``.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown latent plot method {method!r}; use 'pca' or 'tsne'")
    codes = codes.detach().double().cpu()
    means = None if means is None else means.detach().double().cpu().reshape(-1, codes.shape[1])
    dim = codes.shape[1]
    if dim == 2:
        return (
            codes.numpy(),
            None if means is None else means.numpy(),
            "latent codes (2-D, no projection)",
        )
    if dim == 1:

        def pad(x: Tensor) -> np.ndarray:
            return torch.cat([x, torch.zeros_like(x)], 1).numpy()

        return pad(codes), None if means is None else pad(means), "latent codes (1-D, y = 0)"
    if method == "pca":
        center, basis = pca_fit(codes)
        codes_2d = ((codes - center) @ basis).numpy()
        means_2d = None if means is None else ((means - center) @ basis).numpy()
        return codes_2d, means_2d, f"PCA of the {dim}-D latent codes"
    else:
        from sklearn.manifold import TSNE

        stacked = codes if means is None else torch.cat([codes, means])
        n = stacked.shape[0]
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
        tsne = TSNE(n_components=2, perplexity=perplexity, random_state=int(seed), init="pca")
        embedded = tsne.fit_transform(stacked.numpy())
        n_codes = codes.shape[0]
        means_2d = None if means is None else embedded[n_codes:]
        return (
            embedded[:n_codes],
            means_2d,
            f"t-SNE of the {dim}-D latent codes (fitted jointly with the prior means)",
        )


def _prior_means(model: nn.Module) -> Tensor | None:
    try:
        return model.prior.component_means().detach().cpu()
    except (NotImplementedError, AttributeError):
        return None


def latent_embedding(
    model: nn.Module,
    images: Any,
    labels: Tensor | Sequence[int] | None = None,
    method: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
    batch_size: int = 500,
) -> dict[str, Any]:
    """The data behind :func:`latent_plot`.

    At most ``max_points`` images (a random subset drawn with ``seed``, kept in
    index order) are encoded to their posterior means, and projected to 2-D
    together with the prior component means (:func:`project_codes`). Returns
    ``codes``, ``codes_2d``, ``means``, ``means_2d``, ``labels`` (numpy or
    None), ``indices`` and ``description``.
    """
    n = num_items(images)
    if n > int(max_points):
        gen = torch.Generator().manual_seed(int(seed))
        indices = torch.randperm(n, generator=gen)[: int(max_points)].sort().values
    else:
        indices = torch.arange(n)
    if isinstance(images, Tensor):
        subset: Any = images[indices.to(images.device)]
        batch_labels = None
    else:
        subset, batch_labels = take_batch(images, indices)
    if labels is not None:
        batch_labels = torch.as_tensor(labels)[indices]
    codes = encode_dataset(model, subset, batch_size=batch_size)
    means = _prior_means(model)
    codes_2d, means_2d, description = project_codes(codes, means, method=method, seed=seed)
    return {
        "codes": codes,
        "codes_2d": codes_2d,
        "means": means,
        "means_2d": means_2d,
        "labels": None if batch_labels is None else torch.as_tensor(batch_labels).cpu().numpy(),
        "indices": indices,
        "description": description,
    }


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _save_figure(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def latent_plot(
    model: nn.Module,
    images: Any,
    labels: Tensor | Sequence[int] | None,
    path: PathLike,
    method: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
    batch_size: int = 500,
) -> Path:
    """Scatter of the 2-D latent embedding coloured by label, prior means as black crosses.

    Up to 10 distinct labels get the categorical ``tab10`` palette and a legend;
    more get a continuous colour map and a colorbar. The projection used (PCA,
    t-SNE, or none for 2-D latents) is in the title. See :func:`latent_embedding`.
    """
    data = latent_embedding(
        model,
        images,
        labels,
        method=method,
        max_points=max_points,
        seed=seed,
        batch_size=batch_size,
    )
    codes_2d, means_2d, y = data["codes_2d"], data["means_2d"], data["labels"]
    fig = _new_figure(6.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    if y is None:
        ax.scatter(codes_2d[:, 0], codes_2d[:, 1], s=6, alpha=0.7, color="tab:blue", label="codes")
    else:
        classes = np.unique(y)
        if len(classes) <= 10:
            from matplotlib import colormaps

            palette = colormaps["tab10"]
            for i, cls in enumerate(classes):
                mask = y == cls
                ax.scatter(
                    codes_2d[mask, 0],
                    codes_2d[mask, 1],
                    s=6,
                    alpha=0.7,
                    color=palette(i % 10),
                    label=str(cls),
                )
        else:
            points = ax.scatter(codes_2d[:, 0], codes_2d[:, 1], s=6, alpha=0.7, c=y, cmap="viridis")
            fig.colorbar(points, ax=ax, label="label")
    if means_2d is not None:
        ax.scatter(
            means_2d[:, 0],
            means_2d[:, 1],
            marker="x",
            s=80,
            linewidths=2,
            color="black",
            label="prior means",
        )
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="best", fontsize="small", markerscale=2, framealpha=0.8)
    name = {"pca": "PCA", "tsne": "t-SNE"}.get(method, method)
    dim = data["codes"].shape[1]
    shown = name if dim > 2 else "none (latent is 2-D)" if dim == 2 else "none (latent is 1-D)"
    ax.set_title(f"Latent space, projection: {shown}; {len(codes_2d)} test codes")
    ax.set_xlabel("component 1" if dim > 2 else "z1")
    ax.set_ylabel("component 2" if dim > 2 else ("z2" if dim == 2 else ""))
    fig.tight_layout()
    return _save_figure(fig, path)


# ---------------------------------------------------------------------- curves
_SPLITS = ("train", "test", "val", "valid", "validation")


def _split_key(key: str) -> tuple[str, str]:
    """``"test_reconstruction"`` -> ``("reconstruction", "test")``; no split -> ``(key, "")``."""
    for split in _SPLITS:
        for prefix in (f"{split}_", f"{split}/", f"{split}."):
            if key.startswith(prefix) and len(key) > len(prefix):
                return key[len(prefix) :], split
        for suffix in (f"_{split}", f"/{split}", f".{split}"):
            if key.endswith(suffix) and len(key) > len(suffix):
                return key[: -len(suffix)], split
    return key, ""


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, Tensor):
        return value.numel() == 1
    return isinstance(value, (int, float, np.integer, np.floating))


def loss_curves(history: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    """One subplot per logged quantity, x = epoch.

    ``history`` is one dict per epoch; ``epoch`` (if present, else 1, 2, ...) is
    the x axis, every other numeric key is plotted. Keys differing only by a
    split prefix/suffix (``train_``, ``test_``, ``val_``...) share a subplot,
    one line per split.
    """
    groups: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for i, entry in enumerate(history):
        epoch = entry.get("epoch", i + 1)
        epoch = float(epoch) if _is_number(epoch) else float(i + 1)
        for key, value in entry.items():
            if key == "epoch" or not _is_number(value):
                continue
            quantity, split = _split_key(str(key))
            xs, ys = groups.setdefault(quantity, {}).setdefault(split or str(key), ([], []))
            xs.append(epoch)
            ys.append(float(value))
    n = max(1, len(groups))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.2 * ncols, 3.2 * nrows)
    if not groups:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no numeric history logged", ha="center", va="center")
        ax.set_axis_off()
    for index, (quantity, lines) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_title(quantity)
        ax.set_xlabel("epoch")
        if len(lines) > 1 or next(iter(lines)) != quantity:
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def convergence_plot(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: PathLike,
    ylabel: str,
    title: str | None = None,
    xlabel: str = "epoch",
    logy: bool = False,
) -> Path:
    """Several models' curves on one plot: ``curves[model_name] = [(epoch, value), ...]``."""
    fig = _new_figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        points = sorted((float(x), float(y)) for x, y in points)
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        ax.plot(xs, ys, marker="o", markersize=3, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)
