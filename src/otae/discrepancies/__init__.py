"""Differentiable optimal-transport discrepancies between point clouds and mixtures.

Pure functions of tensors. Conventions (each docstring gives the math and shapes):
``beta`` is the weight of the Gromov-Wasserstein part of a fused GW value (POT's
``alpha``); point clouds are (N, d) with uniform weights unless sample weights ``a``,
``b`` are given (sliced W / FGW / GW, MMD); directions are (d, L); outputs follow
the dtype and device of the inputs; bad input raises ``ValueError`` or ``TypeError``
naming the argument (switch the checks off in hot loops with :func:`input_checks`).
"""

from ..checks import NonFiniteInputError, input_checks
from .gaussian import gaussian_w2_squared, pairwise_gaussian_w2_squared
from .gromov import empirical_fgw, empirical_gw
from .hierarchical import fgw_objective, fgw_proximal_point, hierarchical_fgw
from .kl import (
    kl_diagonal_gaussians,
    kl_monte_carlo,
    kl_monte_carlo_mixture,
    kl_standard_normal,
    log_prob_diagonal_gaussian,
    log_prob_gaussian_mixture,
)
from .mmd import mmd
from .one_dimensional import fgw_1d, fgw_1d_dense
from .sinkhorn import sinkhorn, sinkhorn_divergence
from .sliced import sliced_fgw, sliced_gw, sliced_wasserstein
from .spherical import max_sliced_fgw, mssfg, pssfg, spherical_sliced_fgw, ssfg

__all__ = [
    "NonFiniteInputError",
    "input_checks",
    # 1-D and sliced
    "fgw_1d",
    "fgw_1d_dense",
    "sliced_fgw",
    "sliced_gw",
    "sliced_wasserstein",
    # spherical sliced family
    "max_sliced_fgw",
    "spherical_sliced_fgw",
    "ssfg",
    "mssfg",
    "pssfg",
    # Gaussian mixtures and discrete GW
    "gaussian_w2_squared",
    "pairwise_gaussian_w2_squared",
    "hierarchical_fgw",
    "fgw_objective",
    "fgw_proximal_point",
    "empirical_fgw",
    "empirical_gw",
    # kernels, divergences, entropic OT
    "mmd",
    "kl_standard_normal",
    "kl_diagonal_gaussians",
    "kl_monte_carlo",
    "kl_monte_carlo_mixture",
    "log_prob_diagonal_gaussian",
    "log_prob_gaussian_mixture",
    "sinkhorn",
    "sinkhorn_divergence",
]
