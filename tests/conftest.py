"""Test-session settings and the fixtures shared by several test modules (their plain
helper functions are in tests/helpers.py)."""

import os

import numpy as np
import pytest
import torch

from .helpers import TINY

# Under pytest-xdist each worker gets one core: a second torch thread per worker only
# spin-waits for a core that the other worker holds (measured: 11 ms -> 312 ms per call).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A finished one-epoch `otae train mnist/vae-quick` run (:data:`helpers.TINY`), once per
    module; copy it before changing it."""
    from otae.cli import main

    run_dir = tmp_path_factory.mktemp("runs") / "vae"
    args = ["train", "mnist/vae-quick", "training.epochs=1", *TINY, "--run-dir", str(run_dir)]
    assert main(args) == 0
    return run_dir


@pytest.fixture
def views_npz(tmp_path):
    """A toy multi-view .npz for `otae multiview`: views a (30 x 4), b (30 x 3), 3 classes."""
    rng = np.random.default_rng(0)
    path = tmp_path / "toy.npz"
    np.savez(
        path, view_a=rng.normal(size=(30, 4)), view_b=rng.normal(size=(30, 3)), y=np.arange(30) % 3
    )
    return path
