"""Every shipped config builds and trains one step (on a tiny MNIST subset)."""

from __future__ import annotations

import math

import pytest
import torch

from otae.data import build_dataset
from otae.training import Trainer, load_config, shipped_configs

TRAIN = build_dataset("mnist", "train", subset=8)
TEST = build_dataset("mnist", "test", subset=4)


def _marked(name):
    # The paper nets (11M parameters each side) take ~4 s per config: one stays in
    # the fast suite, the rest run with `make test-slow`.
    slow = name.endswith("-paper") and name != "mnist/drae-paper"
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


@pytest.mark.parametrize("name", [_marked(n) for n in shipped_configs()])
def test_shipped_config_trains_one_epoch(name, tmp_path):
    config = load_config(
        name,
        [
            "training.epochs=1",
            "training.batch_size=4",
            "training.progress=false",
            "training.tensorboard=false",
            "training.device=cpu",
        ],
    )
    trainer = Trainer.from_config(config, tmp_path, train_data=TRAIN, test_data=TEST, log=lambda m: None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    (row,) = trainer.fit()
    assert all(math.isfinite(v) for v in row.values()), row
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(
        k.startswith("decoder.") for k in changed
    )


def test_paper_configs_follow_the_paper_protocol():
    for name in shipped_configs():
        if not name.endswith("-paper"):
            continue
        config = load_config(name)
        assert config.model.latent_dim == 8 and config.training.epochs == 50, name
        assert config.network.architecture == "paper_mnist", name
        if config.model.name != "gwae":  # GWAE has its own optimiser and batch (docs/gwae.md)
            assert config.training.batch_size == 100 and config.training.optimizer.lr == 1e-3
            assert tuple(config.training.optimizer.betas) == (0.5, 0.999)
            assert config.model.reduction == "sum"
        if hasattr(config.model, "beta"):
            assert config.model.beta == 0.1, name
        if config.model.prior == "gmm":
            assert config.model.n_components == 10, name
    drae, prae = load_config("mnist/drae-paper").model, load_config("mnist/prae-paper").model
    assert drae.n_projections == 50 and drae.scale == "rae_authors"
    assert prae.n_outer == 20
