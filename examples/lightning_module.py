"""A LightningModule whose regulariser is an otae loss module (``pip install lightning``).

The sliced Wasserstein module owns its generator (``seed=``): as a submodule its state
is part of the LightningModule's ``state_dict``, so Lightning checkpoints resume the
same random directions. ``python examples/lightning_module.py [max_steps]`` trains a
tiny autoencoder on random data on the CPU.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from otae.losses import SlicedWassersteinLoss


class SWAutoencoder(L.LightningModule):
    """Reconstruction + gamma * SW_2^2(codes, N(0, I) samples)."""

    def __init__(self, dim: int = 32, latent: int = 4, gamma: float = 1.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 32), nn.ReLU(), nn.Linear(32, dim))
        self.regulariser = SlicedWassersteinLoss(n_projections=50, seed=0)
        self.prior = torch.Generator().manual_seed(1)
        self.gamma = gamma

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z = self.encoder(x)
        reconstruction = (self.decoder(z) - x).pow(2).sum(1).mean()
        y = torch.randn(z.shape, generator=self.prior).to(z)
        loss = reconstruction + self.gamma * self.regulariser(z, y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def main(max_steps: int = 40) -> float:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(512, 32) @ torch.randn(32, 32) / 4)
    model = SWAutoencoder()
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False,
                        accelerator="cpu", enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=64, shuffle=True))
    loss = float(trainer.callback_metrics["loss"])
    print(f"final loss {loss:.4f}")
    return loss


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
