"""A tiny MNIST autoencoder regularised by sliced FGW in a plain PyTorch loop.

The loss module :class:`otae.losses.SlicedFGWLoss` owns its generator (``seed=``), so
the random directions are reproducible and saved with ``state_dict()``. The prior is
N(0, I); the regulariser pulls the batch of codes towards as many prior samples.
Runs in a few seconds on a CPU: ``python examples/plain_loop.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from otae.data import load_mnist
from otae.losses import SlicedFGWLoss

STEPS, BATCH, LATENT, GAMMA = 30, 64, 4, 1.0


def main() -> None:
    torch.manual_seed(0)
    images, _ = load_mnist("test")
    data = torch.from_numpy(images[:2048].reshape(-1, 784).astype(np.float32) / 255.0)
    encoder = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, LATENT))
    decoder = nn.Sequential(nn.Linear(LATENT, 64), nn.ReLU(), nn.Linear(64, 784), nn.Sigmoid())
    regulariser = SlicedFGWLoss(beta=0.1, n_projections=50, seed=0)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimiser = torch.optim.Adam(params, lr=3e-3)
    batches = torch.Generator().manual_seed(1)  # batch order and prior samples
    for step in range(STEPS):
        x = data[torch.randint(len(data), (BATCH,), generator=batches)]
        z = encoder(x)
        reconstruction = (decoder(z) - x).pow(2).sum(1).mean()
        prior_samples = torch.randn(BATCH, LATENT, generator=batches)
        loss = reconstruction + GAMMA * regulariser(z, prior_samples)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step:3d} loss {loss.item():.4f}")
    # the module's generator state travels with a checkpoint
    checkpoint = {"encoder": encoder.state_dict(), "regulariser": regulariser.state_dict()}
    print("checkpoint keys of the regulariser:", sorted(checkpoint["regulariser"]))


if __name__ == "__main__":
    main()
