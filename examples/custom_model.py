"""Your own regulariser as an otae model: subclass, train in a plain loop, then with the Trainer.

``PriorSampleAutoencoder`` is the base of otae's deterministic models (WAE, SWAE, D-RAE,
SAE, the spherical family): it draws as many prior samples as there are codes and asks
:meth:`discrepancy` for one scalar. Everything else (encoding, decoding, the loss terms
in the RAE paper's units, ``sample``, ``sample_component``) is inherited.

1. The model is used directly, in a plain PyTorch loop.
2. The same model, unregistered, is trained by otae's :class:`~otae.training.Trainer`
   (checkpoints, history.csv, exact resume, callbacks), killed after one epoch, resumed
   for a second, and evaluated.
3. To name it in a config (``Trainer.from_config``), register it under a name with a
   config dataclass whose ``name`` defaults to it. The registry is global and lives in
   this process only: the ``otae`` command line does not see the model.

Runs in a few seconds on a CPU: ``python examples/custom_model.py``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from otae import discrepancies as D
from otae import models, nn, priors
from otae.data import build_dataset, load_mnist
from otae.training import Trainer, TrainingConfig, config_from_dict

STEPS, BATCH, LATENT = 30, 64, 8


@dataclass
class MyConfig(models.ModelConfig):
    name: str = "sw_mmd"  # the name the Trainer's config refers to
    prior: str = "gmm"


@models.register_model("sw_mmd")
class MyAutoencoder(models.PriorSampleAutoencoder):
    """Deterministic encoder; R = sliced W2^2 + MMD between the codes and prior samples."""

    config_class = MyConfig

    def discrepancy(self, z, y, generator):
        return D.sliced_wasserstein(z, y, generator=generator) + D.mmd(z, y)


def plain_loop() -> None:
    torch.manual_seed(0)
    images, _ = load_mnist("test")
    data = torch.from_numpy(images[:2048, None].astype(np.float32) / 255.0)  # (N, 1, 28, 28)
    encoder, decoder = nn.build_networks("small_conv", (1, 28, 28), LATENT, probabilistic=False)
    prior = priors.build_prior("gmm", LATENT, 10, generator=torch.Generator().manual_seed(0))
    model = MyAutoencoder(MyConfig(latent_dim=LATENT), encoder, decoder, prior)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.Generator().manual_seed(1)  # batch order, prior samples, directions
    for step in range(STEPS):
        x = data[torch.randint(len(data), (BATCH,), generator=batches)]
        terms = model.loss(x, generator=batches)  # total, reconstruction, regulariser
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        model.end_of_batch()  # the prior's own hook (a no-op for the GMM)
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step:3d} loss {terms['total'].item():.4f}")
    print("samples:", tuple(model.sample(16).shape))


def build_model(seed: int = 0) -> MyAutoencoder:
    torch.manual_seed(seed)  # the network weights
    encoder, decoder = nn.build_networks("small_conv", (1, 28, 28), LATENT, probabilistic=False)
    prior = priors.build_prior("gmm", LATENT, 10, generator=torch.Generator().manual_seed(seed))
    return MyAutoencoder(MyConfig(latent_dim=LATENT), encoder, decoder, prior)


def with_the_trainer() -> None:
    train = build_dataset("mnist", "train", subset=1000)
    test = build_dataset("mnist", "test", subset=200)
    settings = TrainingConfig(epochs=1, batch_size=100, progress=False, tensorboard=False)
    with tempfile.TemporaryDirectory() as run_dir:
        Trainer(build_model(), train, test, settings, run_dir).fit()  # "killed" after epoch 1
        more = TrainingConfig(epochs=2, batch_size=100, progress=False, tensorboard=False)
        trainer = Trainer(build_model(), train, test, more, run_dir)
        trainer.fit(resume=True)  # epoch 2 only: the weights of an uninterrupted run
        held_out = trainer.evaluate()["test_rec_loss"]
        print("trained for", trainer.epoch, "epochs; held-out reconstruction", held_out)


def from_a_config() -> None:
    config = config_from_dict({
        "name": "sw-mmd-example",
        "model": {"name": "sw_mmd", "latent_dim": LATENT},
        "data": {"train_subset": 1000, "test_subset": 200},
        "training": {"epochs": 1, "device": "cpu"},
    })
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer.from_config(config, run_dir)
        trainer.fit()
        print("trained", type(trainer.model).__name__, "for", trainer.epoch, "epoch")


if __name__ == "__main__":
    plain_loop()
    with_the_trainer()
    from_a_config()
