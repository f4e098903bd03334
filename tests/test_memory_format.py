"""training.memory_format: the layout of image batches and convolution weights.

The layout changes the kernels, never the model: a run in channels_last trains the same
weights as a contiguous one up to rounding, resumes bit for bit, and exports weights
that load into a contiguous model.
"""

from __future__ import annotations

import pytest
import torch

from otae.models import build_model, model_config_from_dict
from otae.training import Trainer, TrainingConfig
from otae.training.optim import select_memory_format

from .helpers import Killed, kill_in_epoch, make_trainer, tiny_config, tiny_data

CHANNELS_LAST = torch.channels_last
CONTIGUOUS = torch.contiguous_format


def conv_config(model="vae", epochs=2, memory_format="auto"):
    """:func:`tiny_config` on otae's small conv net (one 4-channel layer, 8x8 images)."""
    config = tiny_config(model, epochs=epochs)
    config.network.architecture = "small_conv"
    config.network.options = {"channels": [4], "hidden": 16}
    config.training.memory_format = memory_format
    return config


def conv_weights(model):
    return [p for p in model.parameters() if p.dim() == 4]


def test_auto_is_channels_last_for_conv_nets_on_a_cpu_only():
    conv = build_model(model_config_from_dict({"name": "vae", "latent_dim": 2}), (1, 8, 8),
                       "small_conv", {"channels": [4], "hidden": 16})  # fmt: skip
    mlp = build_model(model_config_from_dict({"name": "vae", "latent_dim": 2}), (1, 8, 8),
                      "mlp", {"hidden": [16]})  # fmt: skip
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert select_memory_format("auto", cpu, conv) == CHANNELS_LAST
    assert select_memory_format("auto", cpu, mlp) == CONTIGUOUS
    assert select_memory_format("auto", meta, conv) == CONTIGUOUS  # any non-CPU device
    assert select_memory_format("auto", cpu, None) == torch.preserve_format  # not otae's
    assert select_memory_format("auto", cpu, conv, compiled=True) == CONTIGUOUS
    assert select_memory_format("contiguous", cpu, conv) == CONTIGUOUS
    assert select_memory_format("channels_last", cpu, mlp) == CHANNELS_LAST


def test_trainer_puts_weights_and_batches_in_the_layout(tmp_path):
    trainer = make_trainer(conv_config(), tmp_path / "auto")
    assert trainer.memory_format == CHANNELS_LAST
    weights = conv_weights(trainer.model)
    assert weights and all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in weights)
    # a 1-channel 8x8 batch: channels_last strides differ from NCHW's (C=1 alone would not)
    images, _ = next(trainer._iterate(trainer.train_data, trainer.epoch_batches(0)))
    assert images.stride() == (64, 1, 8, 1) and images.is_contiguous(memory_format=CHANNELS_LAST)

    compiled = conv_config()
    compiled.training.compile = True  # inductor keeps convolutions NCHW: auto follows
    assert make_trainer(compiled, tmp_path / "compiled").memory_format == CONTIGUOUS

    plain = make_trainer(conv_config(memory_format="contiguous"), tmp_path / "plain")
    assert all(w.is_contiguous() for w in conv_weights(plain.model))
    images, _ = next(plain._iterate(plain.train_data, plain.epoch_batches(0)))
    assert images.is_contiguous()


def test_a_given_model_stays_contiguous_unless_asked(tmp_path):
    def given():
        torch.manual_seed(0)
        return build_model(model_config_from_dict({"name": "vae", "latent_dim": 2}), (1, 8, 8),
                           "small_conv", {"channels": [4], "hidden": 16})  # fmt: skip

    data = dict(train_data=tiny_data(), test_data=tiny_data(16, seed=1), log=lambda m: None)
    auto = Trainer(given(), run_dir=tmp_path / "a", **data)
    assert all(w.is_contiguous() for w in conv_weights(auto.model))
    images, _ = next(auto._iterate(auto.train_data, auto.epoch_batches(0)))
    assert images.is_contiguous()
    # a model its author put in channels_last stays so, and so does its profiling copy
    mine = given().to(memory_format=CHANNELS_LAST)
    kept = Trainer(mine, run_dir=tmp_path / "c", **data)
    assert all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in conv_weights(kept.model))
    probe = kept._profiling_copy()
    assert all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in conv_weights(probe.model))
    training = TrainingConfig(device="cpu", memory_format="channels_last")
    asked = Trainer(given(), run_dir=tmp_path / "b", training=training, **data)
    assert asked.memory_format == CHANNELS_LAST
    assert all(w.is_contiguous(memory_format=CHANNELS_LAST) for w in conv_weights(asked.model))


@pytest.mark.parametrize("model", ["vae", "gwae"])
def test_channels_last_trains_the_same_model_as_contiguous(tmp_path, model):
    runs = {}
    for layout in ("contiguous", "channels_last"):
        trainer = make_trainer(conv_config(model, memory_format=layout), tmp_path / layout)
        history = trainer.fit()
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        runs[layout] = ([row["test_total"] for row in history], state)
    (losses_a, state_a), (losses_b, state_b) = runs["contiguous"], runs["channels_last"]
    assert losses_b == pytest.approx(losses_a, rel=1e-4)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_channels_last_resume_is_bit_identical_and_exports_load_contiguous(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        full = make_trainer(conv_config(epochs=3), tmp_path / "full")
        full.fit()
        killed = kill_in_epoch(make_trainer(conv_config(epochs=3), tmp_path / "killed"), 3)
        with pytest.raises(Killed):
            killed.fit()
        resumed = make_trainer(conv_config(epochs=3), tmp_path / "killed")
        resumed.fit(resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed.memory_format == full.memory_format == CHANNELS_LAST
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key

    from otae.models import from_pretrained

    full.model.save_pretrained(tmp_path / "export")
    loaded = from_pretrained(tmp_path / "export")
    assert all(w.is_contiguous() for w in conv_weights(loaded))
    x = tiny_data(16, seed=1).get_batch(torch.arange(16))[0]
    full.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x)[0], full.model.encode(x)[0])
