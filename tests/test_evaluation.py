"""Evaluation: metrics against brute force, exact grid pixels, PCA against numpy, reports."""

from __future__ import annotations

import base64
import html

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb
from PIL import Image

from otae.evaluation import (
    conditional_grid,
    conditional_samples,
    convergence_plot,
    encode_dataset,
    generate_report,
    latent_embedding,
    latent_plot,
    loss_curves,
    make_grid,
    mean_image_baseline,
    project_codes,
    reconstruction_grid,
    reconstruction_metrics,
    reconstruction_pairs,
    sample_grid,
    save_image_grid,
    write_report,
)
from otae.priors import GaussianMixturePrior

from .helpers import tiny_vae

IMAGE_SHAPE = (1, 8, 8)


def tiny_gmm_model(latent_dim: int = 3, n_components: int = 4):
    """A VAE whose prior is swapped for a GMM (no GMM model is registered yet)."""
    model = tiny_vae(latent_dim)
    gen = torch.Generator().manual_seed(11)
    model.prior = GaussianMixturePrior(latent_dim, n_components, generator=gen, init_scale=2.0)
    return model


def images(n: int, seed: int = 1, shape=IMAGE_SHAPE) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


class TinyDataset:
    """Dataset-like: ``__len__`` and ``get_batch(indices) -> (images, labels)``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.calls = 0

    def __len__(self) -> int:
        return self.x.shape[0]

    def get_batch(self, indices):
        self.calls += 1
        return self.x[indices], self.y[indices]


def png_array(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


# ---------------------------------------------------------------------- metrics
def test_reconstruction_metrics_equal_brute_force_loop_and_restore_mode():
    model = tiny_vae()
    x = images(23)
    expected = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            mean, _ = model.encode(x[i : i + 1])
            x_hat = model.decode(mean)[0].double()
            expected.append(float(((x_hat - x[i].double()) ** 2).sum()))
    expected = np.mean(expected)

    model.train()
    out = reconstruction_metrics(model, x, batch_size=5)
    assert model.training and all(m.training for m in model.modules())
    assert out["rec_loss"] == pytest.approx(expected, rel=1e-6)
    assert out["mse_per_pixel"] == pytest.approx(expected / 64, rel=1e-6)
    assert out["n_images"] == 23

    # mixed modes are restored module by module
    model.train()
    model.encoder.eval()
    dataset = TinyDataset(x, torch.arange(23) % 3)
    out_ds = reconstruction_metrics(model, dataset, batch_size=7)
    assert model.training and not model.encoder.training and model.decoder.training
    assert dataset.calls == 4  # batched: ceil(23 / 7)
    assert out_ds["rec_loss"] == pytest.approx(expected, rel=1e-6)
    assert torch.is_grad_enabled()  # no_grad did not leak


def test_mean_image_baseline_closed_form():
    # train: two 1x1x2 images (0, 0) and (1, 0.5) -> mean (0.5, 0.25)
    train = torch.tensor([[0.0, 0.0], [1.0, 0.5]]).reshape(2, 1, 1, 2)
    test = torch.tensor([[0.5, 0.25], [1.0, 1.0], [0.0, 0.0]]).reshape(3, 1, 1, 2)
    # per-image SSE: 0; 0.25 + 0.5625 = 0.8125; 0.25 + 0.0625 = 0.3125
    expected = (0.0 + 0.8125 + 0.3125) / 3
    out = mean_image_baseline(train, test, batch_size=1)
    assert out["rec_loss"] == pytest.approx(expected, abs=1e-12)
    assert out["mse_per_pixel"] == pytest.approx(expected / 2, abs=1e-12)
    ds = TinyDataset(test, torch.zeros(3))
    assert mean_image_baseline(TinyDataset(train, torch.zeros(2)), ds)["rec_loss"] == (
        pytest.approx(expected, abs=1e-12)
    )


def test_encode_dataset_equals_embed_for_tensor_and_dataset():
    model = tiny_vae(latent_dim=3)
    x = images(17)
    with torch.no_grad():
        expected = model.embed(x)
    assert torch.allclose(encode_dataset(model, x, batch_size=4), expected, atol=1e-6)
    ds = TinyDataset(x, torch.zeros(17))
    codes = encode_dataset(model, ds, batch_size=6)
    assert codes.shape == (17, 3)
    assert torch.allclose(codes, expected, atol=1e-6)


# ---------------------------------------------------------------------- grids
def test_make_grid_tiles_padding_and_saved_png(tmp_path):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(7, 1, 4, 5, generator=gen)
    nrow, pad, pad_value = 3, 2, 0.75
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=pad_value)
    rows = 3
    assert grid.shape == (1, rows * (4 + pad) + pad, nrow * (5 + pad) + pad)
    covered = torch.zeros_like(grid, dtype=torch.bool)
    for r in range(rows):
        for c in range(nrow):
            y0, x0 = pad + r * (4 + pad), pad + c * (5 + pad)
            tile = grid[:, y0 : y0 + 4, x0 : x0 + 5]
            i = r * nrow + c
            if i < 7:
                assert torch.equal(tile, x[i])
                covered[:, y0 : y0 + 4, x0 : x0 + 5] = True
    assert torch.all(grid[~covered] == pad_value)  # padding and missing tiles

    # RGB, values outside [0, 1] clamped on save; PNG = round(255 * grid)
    rgb = torch.rand(5, 3, 3, 3, generator=gen) * 1.4 - 0.2
    path = save_image_grid(rgb, tmp_path / "sub" / "grid.png", nrow=2, padding=1, pad_value=1.0)
    expected = make_grid(rgb.clamp(0, 1), nrow=2, padding=1, pad_value=1.0)
    expected = torch.round(255 * expected).to(torch.uint8).permute(1, 2, 0).numpy()
    with Image.open(path) as image:
        assert image.mode == "RGB"
    assert np.array_equal(png_array(path), expected)

    gray = save_image_grid(x, tmp_path / "gray.png", nrow=nrow, padding=pad, pad_value=pad_value)
    with Image.open(gray) as image:
        assert image.mode == "L"
    assert np.array_equal(png_array(gray), torch.round(255 * grid[0]).to(torch.uint8).numpy())


def tile(array: np.ndarray, r: int, c: int, h: int = 8, w: int = 8, pad: int = 2):
    y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
    return array[y0 : y0 + h, x0 : x0 + w]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    return torch.round(255 * img.double().clamp(0, 1)).to(torch.uint8)[0].numpy()


def test_conditional_grid_rows_are_sample_component(tmp_path):
    model = tiny_gmm_model(n_components=4)
    n = 5
    path = conditional_grid(model, tmp_path / "cond.png", n, torch.Generator().manual_seed(7))
    array = png_array(path)
    assert array.shape == (4 * 10 + 2, n * 10 + 2)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        rows = [model.sample_component(k, n, gen) for k in range(4)]
    # the rows really differ by component (different prior means)
    assert not torch.allclose(rows[0], rows[1])
    for k in range(4):
        for c in range(n):
            assert np.array_equal(tile(array, k, c), to_uint8(rows[k][c]))
    same = conditional_samples(model, n, torch.Generator().manual_seed(7))
    assert torch.equal(same, torch.cat(rows))
    with Image.open(path) as image:
        assert "one row per prior component (4 components)" in image.text["Title"]


def test_conditional_grid_single_component_and_sample_grid(tmp_path):
    model = tiny_vae()
    path = conditional_grid(model, tmp_path / "cond.png", 6, torch.Generator().manual_seed(1))
    assert png_array(path).shape == (12, 6 * 10 + 2)
    with Image.open(path) as image:
        assert "single component" in image.text["Title"]

    s1 = sample_grid(model, tmp_path / "a.png", n=9, generator=torch.Generator().manual_seed(2))
    s2 = sample_grid(model, tmp_path / "b.png", n=9, generator=torch.Generator().manual_seed(2))
    assert s1.read_bytes() == s2.read_bytes()  # deterministic given the generator
    with torch.no_grad():
        expected = model.sample(9, torch.Generator().manual_seed(2))
    array = png_array(s1)
    assert array.shape == (32, 32)
    assert np.array_equal(tile(array, 1, 2), to_uint8(expected[5]))


def test_reconstruction_grid_interleaves_rows(tmp_path):
    model = tiny_vae()
    x = images(11)
    pairs = reconstruction_pairs(model, x, n=10, nrow=4)
    assert pairs.shape == (24, *IMAGE_SHAPE)  # 3 chunks x (originals + reconstructions) x 4
    with torch.no_grad():
        recon = model.reconstruct(x[:10])
    assert torch.equal(pairs[0:4], x[0:4])
    assert torch.allclose(pairs[4:8], recon[0:4])
    assert torch.equal(pairs[8:12], x[4:8])
    assert torch.equal(pairs[16:18], x[8:10]) and torch.all(pairs[18:20] == 1.0)
    assert torch.allclose(pairs[20:22], recon[8:10]) and torch.all(pairs[22:24] == 1.0)
    ds = TinyDataset(x, torch.zeros(11))
    path = reconstruction_grid(model, ds, tmp_path / "rec.png", n=10, nrow=4)
    array = png_array(path)
    assert array.shape == (6 * 10 + 2, 4 * 10 + 2)
    assert np.array_equal(tile(array, 2, 1), to_uint8(x[5]))
    assert np.array_equal(tile(array, 3, 1), to_uint8(recon[5]))


# ---------------------------------------------------------------------- latent plots
def test_pca_projection_matches_numpy_svd_and_projects_means_with_same_map():
    gen = torch.Generator().manual_seed(5)
    codes = torch.randn(50, 5, generator=gen) * torch.tensor([3.0, 2.0, 1.0, 0.5, 0.1])
    means = torch.cat([codes[7:8], torch.randn(3, 5, generator=gen)])
    codes_2d, means_2d, description = project_codes(codes, means, "pca")
    assert "PCA" in description

    c = codes.double().numpy()
    center = c.mean(0)
    _, _, vt = np.linalg.svd(c - center, full_matrices=False)
    ref = (c - center) @ vt[:2].T
    ref_means = (means.double().numpy() - center) @ vt[:2].T
    signs = np.sign(np.sum(codes_2d * ref, axis=0))
    assert np.allclose(codes_2d, ref * signs, atol=1e-10)
    assert np.allclose(means_2d, ref_means * signs, atol=1e-10)
    assert np.allclose(means_2d[0], codes_2d[7], atol=1e-12)

    # 2-D latents are plotted as they are
    c2, m2, description = project_codes(codes[:, :2], means[:, :2], "pca")
    assert np.array_equal(c2, codes[:, :2].double().numpy()) and "no projection" in description
    assert np.array_equal(m2, means[:, :2].double().numpy())
    with pytest.raises(ValueError, match="unknown latent plot method"):
        project_codes(codes, means, "umap")


def test_latent_embedding_uses_model_codes_and_prior_means(tmp_path):
    model = tiny_gmm_model(latent_dim=3, n_components=4)
    x = images(40)
    labels = torch.arange(40) % 10
    data = latent_embedding(model, x, labels, method="pca", max_points=25, seed=3)
    idx = data["indices"]
    assert len(idx) == 25 and torch.equal(idx, idx.sort().values)
    assert np.array_equal(data["labels"], labels[idx].numpy())
    with torch.no_grad():
        codes = model.embed(x[idx]).double()
    means = model.prior.component_means().detach().double()
    ref_codes, ref_means, _ = project_codes(codes, means, "pca")
    assert np.allclose(data["codes_2d"], ref_codes, atol=1e-5)
    assert np.allclose(data["means_2d"], ref_means, atol=1e-5)

    ds = TinyDataset(x, labels)
    from_ds = latent_embedding(model, ds, None, method="pca", max_points=25, seed=3)
    assert np.array_equal(from_ds["labels"], data["labels"])

    # the plot itself: latent_plot_draws_the_embedding_it_returns checks its content
    # t-SNE: fitted jointly on codes + means, deterministic for a seed
    t1 = latent_embedding(model, x, labels, method="tsne", max_points=30, seed=0)
    t2 = latent_embedding(model, x, labels, method="tsne", max_points=30, seed=0)
    assert t1["codes_2d"].shape == (30, 2) and t1["means_2d"].shape == (4, 2)
    assert np.array_equal(t1["codes_2d"], t2["codes_2d"])
    assert "t-SNE" in t1["description"]


def saved_figures(monkeypatch) -> list:
    """Every matplotlib Figure saved from now on, in order (the PNG is still written)."""
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def spy(fig, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    return saved


def pixel_at(png: np.ndarray, ax, point) -> np.ndarray:
    """RGB of the PNG pixel under data point ``point`` of axes ``ax`` (PNG rows run down)."""
    px, py = ax.transData.transform(point)
    return png[int(png.shape[0] - py), int(px), :3].astype(float)


def closest_colour(rgb: np.ndarray, colours) -> int:
    """Index of the colour whose direction from white is closest to ``rgb``'s (alpha
    blending on white and overlaps of one colour keep that direction)."""
    v = 255.0 - rgb
    cos = [v @ (255.0 - c) / (np.linalg.norm(v) * np.linalg.norm(255.0 - c) + 1e-12)
           for c in colours]  # fmt: skip
    return int(np.argmax(cos))


def test_latent_plot_draws_the_embedding_it_returns(tmp_path, monkeypatch):
    """Each class's scatter holds exactly that class's projected codes in its tab10 colour,
    the prior means are black crosses, and the PNG shows them there: the pixel under
    every prior mean is black, and the pixel under a code has its class's hue."""
    from matplotlib import colormaps

    saved = saved_figures(monkeypatch)
    model = tiny_gmm_model(latent_dim=3, n_components=4)
    x = images(40)
    labels = torch.arange(40) % 3
    path = latent_plot(model, x, labels, tmp_path / "latent.png", method="pca", max_points=25)
    data = latent_embedding(model, x, labels, method="pca", max_points=25)
    (fig,) = saved
    ax = fig.axes[0]
    palette = [np.array(colormaps["tab10"](i)[:3]) for i in range(3)]
    *classes, means = ax.collections
    assert len(classes) == 3
    for cls, collection in enumerate(classes):
        np.testing.assert_allclose(
            collection.get_offsets(), data["codes_2d"][data["labels"] == cls], rtol=1e-6
        )
        np.testing.assert_allclose(collection.get_facecolor()[0, :3], palette[cls])
    np.testing.assert_allclose(means.get_offsets(), data["means_2d"], rtol=1e-6)
    np.testing.assert_allclose(means.get_edgecolor()[0], [0, 0, 0, 1])
    assert "PCA" in ax.get_title() and "25 test codes" in ax.get_title()

    png = png_array(path)
    assert png.shape[:2] == (550, 650)  # 6.5 x 5.5 in at 100 dpi
    for mean in data["means_2d"]:
        assert pixel_at(png, ax, mean).max() < 60, mean
    hues = [
        closest_colour(pixel_at(png, ax, code), [255 * c for c in palette])
        for code in data["codes_2d"]
    ]
    # overlapping points of two classes may blend; 1/3 would be chance
    assert np.mean(np.array(hues) == data["labels"]) >= 0.8


# ---------------------------------------------------------------------- curves and reports
def test_loss_curves_and_convergence_plot_draw_the_values(tmp_path, monkeypatch):
    """One subplot per quantity with the logged values at the logged epochs (splits as
    separate lines, text skipped); the convergence plot sorts each model's points; the
    PNGs show the markers in their lines' colours."""
    saved = saved_figures(monkeypatch)
    history = [
        {"epoch": e, "train_reconstruction": 30.0 / e, "test_reconstruction": 40.0 / e + 5,
         "regulariser": 1.0 + e, "total": 31.0 / e + 1, "time": 2.5, "note": "text"}
        for e in (1, 2, 4, 8)
    ]  # fmt: skip
    epochs = [1.0, 2.0, 4.0, 8.0]
    path = loss_curves(history, tmp_path / "loss.png")
    fig = saved[-1]
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["reconstruction", "regulariser", "total", "time"]
    want = {
        "reconstruction": {"train": [30.0 / e for e in epochs],
                           "test": [40.0 / e + 5 for e in epochs]},
        "regulariser": {"regulariser": [1.0 + e for e in epochs]},
        "total": {"total": [31.0 / e + 1 for e in epochs]},
        "time": {"time": [2.5] * 4},
    }  # fmt: skip
    png = png_array(path)
    assert png.shape[:2] == (640, 1260)  # 2 x 3 subplots of 4.2 x 3.2 in at 100 dpi
    for ax in axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == set(want[ax.get_title()])
        for label, values in want[ax.get_title()].items():
            line = lines[label]
            assert list(line.get_xdata()) == epochs
            np.testing.assert_allclose(line.get_ydata(), values, rtol=1e-12)
            colour = 255 * np.array(to_rgb(line.get_color()))
            for point in zip(epochs, values, strict=True):
                assert np.abs(pixel_at(png, ax, point) - colour).max() < 40, (label, point)

    curves = {"wae": [(2, 2.0), (1, 3.0), (3, 1.0)], "rae": [(3, 0.5), (1, 4.0), (2, 1.5)]}
    path = convergence_plot(curves, tmp_path / "conv.png", ylabel="test rec loss", title="T")
    ax = saved[-1].axes[0]
    assert ax.get_ylabel() == "test rec loss" and ax.get_title() == "T"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["wae", "rae"]
    png = png_array(path)
    for line, name in zip(ax.get_lines(), ("wae", "rae"), strict=True):
        points = sorted(curves[name])
        assert line.get_label() == name
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == points
        colour = 255 * np.array(to_rgb(line.get_color()))
        for point in points:
            assert np.abs(pixel_at(png, ax, point) - colour).max() < 40, (name, point)


def test_write_report_escapes_text_and_embeds_figures(tmp_path):
    fig_a = save_image_grid(images(4), tmp_path / "figs" / "a.png", nrow=2)
    fig_b = save_image_grid(images(6, seed=2), tmp_path / "figs" / "b.png", nrow=3)
    metrics = {"rec_loss": 12.5, "fid": 41.99, "n_images": 10000, "nested": {"x<y": 0.25}}
    figures = {"Samples <b>bold</b> & more": fig_a, "Reconstructions": fig_b}
    history = [{"epoch": 1, "train_reconstruction": 20.75}, {"epoch": 2, "time": 3.5}]
    config = {"model": {"name": "rae", "gamma": 1.0, "hidden": (16, 8)}, "seed": 0}
    path = write_report(
        tmp_path / "run", title="Run <1>", config=config, metrics=metrics,
        figures=figures, history=history,
    )  # fmt: skip
    assert path == tmp_path / "run" / "report.html"
    text = path.read_text(encoding="utf-8")
    for value in ("12.5", "41.99", "10000", "0.25", "20.75", "3.5"):
        assert f">{value}</td>" in text
    assert html.escape("nested.x<y") in text and "x<y" not in text
    assert html.escape("Samples <b>bold</b> & more") in text
    assert "<b>bold</b>" not in text
    assert "Run &lt;1&gt;" in text and "Reconstructions" in text
    for fig in (fig_a, fig_b):
        assert base64.b64encode(fig.read_bytes()).decode("ascii") in text
    assert "gamma: 1.0" in text and "hidden: [16, 8]" in text


def test_generate_report_makes_all_figures(tmp_path):
    model = tiny_gmm_model(latent_dim=3, n_components=3)
    x = images(30)
    labels = torch.arange(30) % 10
    history = [{"epoch": 1, "train_reconstruction": 9.0, "test_reconstruction": 9.5}]
    metrics = reconstruction_metrics(model, x)
    path = generate_report(
        model, tmp_path / "run", x, labels, metrics=metrics, history=history,
        config={"model": {"name": "vae"}}, generator=torch.Generator().manual_seed(0),
        n_samples=9, n_reconstructions=8, n_per_component=4,
    )  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "run" / "figures").iterdir())
    assert names == [
        "conditional.png", "interpolations.png", "latent_pca.png", "loss_curves.png",
        "reconstructions.png", "samples.png",
    ]  # fmt: skip
    text = path.read_text(encoding="utf-8")
    for name in names:
        data = (tmp_path / "run" / "figures" / name).read_bytes()
        assert base64.b64encode(data).decode("ascii") in text
    assert f"{metrics['rec_loss']:.6g}" in text
    assert "one row per prior component (3 components)" in text
