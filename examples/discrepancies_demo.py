"""Every otae discrepancy on two real point clouds (`make demo`).

Cloud A: 8-d PCA codes of 1,000 MNIST test digits (standardised), i.e. what an
encoder's batch of latent codes looks like. Cloud B: 1,000 stratified samples of a
10-component diagonal Gaussian mixture prior, the RAE paper's learnable prior at
initialisation (means N(0, I), unit standard deviations). B' is an independent sample
of the same prior: D(B, B') is each estimator's noise floor, D(A, B) should stand
well above it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import otae.discrepancies as D
from otae.data import load_mnist

N, DIM, K = 1000, 8, 10


def mnist_codes(generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    images, labels = load_mnist("test")
    idx = torch.randperm(len(images), generator=generator)[:N].numpy()
    x = torch.from_numpy(images[idx].reshape(N, -1).astype(np.float32) / 255.0)
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    codes = x @ v[:DIM].T
    return codes / codes.std(0), labels[idx]


def gmm_prior(generator: torch.Generator, means: torch.Tensor | None = None):
    means = torch.randn(K, DIM, generator=generator) if means is None else means
    stds = torch.ones(K, DIM)
    component = torch.arange(N) % K  # stratified: exactly N/K draws per component
    samples = means[component] + stds[component] * torch.randn(N, DIM, generator=generator)
    return samples, means, stds


def main() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    codes, _ = mnist_codes(g)
    prior, means, stds = gmm_prior(g)
    prior_again, _, _ = gmm_prior(g, means)

    def seeded(seed=1):
        return torch.Generator().manual_seed(seed)

    posterior_std = torch.full_like(codes, 0.1)  # a probabilistic encoder's sigma
    rows = [
        ("sliced FGW (beta=0.1, L=50)", lambda a, b: D.sliced_fgw(a, b, generator=seeded())),
        ("sliced FGW, RAE authors' scale", lambda a, b: D.sliced_fgw(
            a, b, generator=seeded(), scale="rae_authors")),
        ("sliced GW (beta=1)", lambda a, b: D.sliced_gw(a, b, generator=seeded())),
        ("sliced W2^2 (SWAE)", lambda a, b: D.sliced_wasserstein(a, b, generator=seeded())),
        ("max-sliced FGW", lambda a, b: D.max_sliced_fgw(a, b, generator=seeded())),
        ("SSFG (vMF, kappa=50)", lambda a, b: D.ssfg(a, b, generator=seeded())),
        ("MSSFG (5 vMFs)", lambda a, b: D.mssfg(a, b, generator=seeded())),
        ("PSSFG (power spherical)", lambda a, b: D.pssfg(a, b, generator=seeded())),
        ("hierarchical FGW vs the GMM (20 prox. it.)", lambda a, b: D.hierarchical_fgw(
            a, posterior_std, means, stds, beta=0.1)),
        ("MMD, IMQ kernel (WAE)", lambda a, b: D.mmd(a, b)),
        ("MMD, Gaussian kernel", lambda a, b: D.mmd(a, b, kernel="gaussian")),
        ("Sinkhorn <P,C> (eps=1, 100 it.)", lambda a, b: D.sinkhorn(a, b, epsilon=1.0)),
        ("Sinkhorn divergence (GeomLoss)", lambda a, b: D.sinkhorn_divergence(a, b, epsilon=1.0)),
        ("empirical FGW (POT, on 200 points)", lambda a, b: D.empirical_fgw(a[:200], b[:200])),
        ("empirical GW (POT, on 200 points)", lambda a, b: D.empirical_gw(a[:200], b[:200])),
        ("KL(q || N(0,I)), mean per code", lambda a, b: D.kl_standard_normal(
            a, 2 * posterior_std.log()).mean()),
        ("MC KL(q || GMM), mean per code", lambda a, b: D.kl_monte_carlo_mixture(
            a + posterior_std * torch.randn(a.shape, generator=seeded()), a,
            2 * posterior_std.log(), means, 2 * stds.log()).mean()),
    ]
    print(f"A = {N} MNIST PCA codes ({DIM}-d), B and B' = two samples of {N} from a "
          f"{K}-component GMM prior.\n")
    header = f"{'discrepancy':44s} {'D(A, B)':>12s} {'D(B, B`)':>12s} {'time (s)':>9s}"
    print(header)
    print("-" * len(header))
    for name, fn in rows:
        start = time.perf_counter()
        value = float(fn(codes, prior))
        elapsed = time.perf_counter() - start
        floor = float(fn(prior_again, prior))
        print(f"{name:44s} {value:12.4f} {floor:12.4f} {elapsed:9.3f}")
    print("\nTimes are for D(A, B) on this machine's CPU, first call included. In the "
          "hierarchical FGW and KL rows, the second column treats B' as the encoder's codes.")


if __name__ == "__main__":
    main()
