"""The Trainer takes built objects: a model the library has never heard of (no
register_model), trained, resumed exactly and evaluated; from_config keeps the
config-driven path, and the deprecated Trainer(config, run_dir) form still works."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from otae import discrepancies as D
from otae import models, nn, priors
from otae.evaluation import reconstruction_metrics
from otae.training import (
    CheckpointError,
    EarlyStoppingConfig,
    Trainer,
    TrainingConfig,
    config_from_dict,
    load_checkpoint,
)

from .helpers import tiny_data


@dataclasses.dataclass
class CustomConfig(models.ModelConfig):
    name: str = "nobody-registered-this"
    mmd_weight: float = 0.5


class CustomAutoencoder(models.PriorSampleAutoencoder):
    """Sliced W2^2 plus a weighted MMD between codes and prior samples."""

    config_class = CustomConfig

    def discrepancy(self, z, y, generator):
        return D.sliced_wasserstein(z, y, generator=generator) + self.config.mmd_weight * D.mmd(
            z, y
        )


def custom_model(seed=0, latent=2):
    torch.manual_seed(seed)
    encoder, decoder = nn.build_networks("mlp", (1, 8, 8), latent, probabilistic=False,
                                         hidden=[16])  # fmt: skip
    prior = priors.build_prior("normal", latent, generator=torch.Generator().manual_seed(seed))
    return CustomAutoencoder(CustomConfig(latent_dim=latent), encoder, decoder, prior)


def settings(epochs, **changes):
    values = dict(batch_size=12, seed=5, device="cpu", progress=False, tensorboard=False,
                  eval_batch_size=16)  # fmt: skip
    return TrainingConfig(epochs=epochs, **{**values, **changes})


def test_the_model_is_not_registered():
    assert "nobody-registered-this" not in models.MODELS
    assert CustomAutoencoder not in models.MODELS.values()


def test_a_custom_model_trains_resumes_exactly_and_evaluates(tmp_path):
    train, test = tiny_data(), tiny_data(16, seed=1)
    straight = Trainer(custom_model(), train, test, settings(3), tmp_path / "straight",
                       log=lambda m: None)  # fmt: skip
    before = {k: v.clone() for k, v in straight.model.state_dict().items()}
    history = straight.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert any(not torch.equal(before[k], v) for k, v in straight.model.state_dict().items())
    state = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert state["model_name"] == f"{__name__}.CustomAutoencoder"
    assert state["config"]["model"]["mmd_weight"] == 0.5

    # interrupted after 2 epochs, resumed with a freshly built model for 3
    Trainer(custom_model(), train, test, settings(2), tmp_path / "resumed",
            log=lambda m: None).fit()  # fmt: skip
    resumed = Trainer(custom_model(seed=99), train, test, settings(3), tmp_path / "resumed",
                      log=lambda m: None)  # fmt: skip
    resumed.fit(resume=True)
    assert resumed.epoch == 3
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    # evaluation against an independent computation of the same reconstruction error
    metrics = resumed.evaluate()
    reference = reconstruction_metrics(resumed.model, test.get_batch(torch.arange(16))[0])
    assert metrics["test_rec_loss"] == pytest.approx(reference["rec_loss"], rel=1e-5)
    assert history[-1]["test_rec_loss"] == pytest.approx(metrics["test_rec_loss"], rel=1e-6)


def test_early_stopping_and_best_checkpoint_work_on_a_custom_model(tmp_path):
    training = settings(4, early_stopping=EarlyStoppingConfig(enabled=True, patience=1))
    trainer = Trainer(custom_model(), tiny_data(60), tiny_data(16, seed=1), training,
                      tmp_path / "run", log=lambda m: None)  # fmt: skip
    assert len(trainer.val_data) == 6 and len(trainer.train_data) == 54
    history = trainer.fit()
    assert all("val_total" in row for row in history)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_resuming_a_custom_run_with_a_changed_setting_or_another_model_is_refused(tmp_path):
    train, test = tiny_data(), tiny_data(16, seed=1)
    Trainer(custom_model(), train, test, settings(1), tmp_path, log=lambda m: None).fit()
    changed = Trainer(custom_model(), train, test, settings(2, batch_size=6), tmp_path,
                      log=lambda m: None)  # fmt: skip
    with pytest.raises(ValueError, match=r"training\.batch_size \(12 -> 6\)"):
        changed.resume()
    other = models.build_model(config_from_dict({"model": {"name": "wae", "latent_dim": 2}}).model,
                               (1, 8, 8), "mlp", {"hidden": [16]})  # fmt: skip
    with pytest.raises(CheckpointError, match=rf"holds a '{__name__}.CustomAutoencoder' model, this trainer trains 'wae'"):
        Trainer(other, train, test, settings(2), tmp_path, log=lambda m: None).resume()
    # a free change (more epochs, the learning rate) resumes
    more = Trainer(custom_model(), train, test, settings(2), tmp_path, log=lambda m: None)
    assert more.resume() and more.epoch == 1


def test_bad_arguments_are_one_clear_error(tmp_path):
    with pytest.raises(TypeError, match="trains an otae.models.Autoencoder"):
        Trainer(torch.nn.Linear(2, 2), tiny_data(), run_dir=tmp_path)
    with pytest.raises(TypeError, match="needs the training data"):
        Trainer(custom_model(), run_dir=tmp_path)
    with pytest.raises(TypeError, match="needs run_dir"):
        Trainer(custom_model(), tiny_data())
    with pytest.raises(ValueError, match="training.epochs must be >= 1"):
        Trainer(custom_model(), tiny_data(), training=settings(0), run_dir=tmp_path)


def _vae_config(epochs=2):
    return config_from_dict({
        "model": {"name": "vae", "latent_dim": 2},
        "network": {"architecture": "mlp", "options": {"hidden": [16]}},
        "data": {"train_subset": 48, "test_subset": 16},
        "training": {"epochs": epochs, "batch_size": 12, "seed": 3, "device": "cpu",
                     "progress": False, "tensorboard": False, "eval_batch_size": 16},
    })  # fmt: skip


def test_from_config_and_the_deprecated_form_train_the_same_weights(tmp_path):
    new = Trainer.from_config(_vae_config(), tmp_path / "a", log=lambda m: None)
    new.fit()
    with pytest.warns(DeprecationWarning, match=r"use Trainer\.from_config"):
        old = Trainer(_vae_config(), tmp_path / "b", log=lambda m: None)
    old.fit()
    for key, value in new.model.state_dict().items():
        assert torch.equal(value, old.model.state_dict()[key]), key
    # and the seeded build is the config's: another seed gives other weights
    other = Trainer.from_config(
        dataclasses.replace(_vae_config(), training=dataclasses.replace(
            _vae_config().training, seed=4)), tmp_path / "c", log=lambda m: None)  # fmt: skip
    assert not torch.equal(other.model.encoder.mean_head.weight, new.model.encoder.mean_head.weight)


def test_a_registered_model_given_as_an_object_keeps_its_registered_name(tmp_path):
    config = _vae_config()
    model = models.build_model(config.model, (1, 8, 8), "mlp", {"hidden": [16]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer = Trainer(model, tiny_data(), tiny_data(16, seed=1), config.training, tmp_path,
                          log=lambda m: None)  # fmt: skip
    assert trainer.model_name == "vae" and trainer.state_dict()["model_name"] == "vae"
