"""Differentiable optimal-transport discrepancies between point clouds and mixtures.

Pure functions of tensors. Conventions (see ``docs`` and each docstring):
``beta`` is the weight of the Gromov-Wasserstein part of a fused GW value
(POT's ``alpha``); point clouds are (N, d) with uniform weights; directions are
(d, L); outputs follow the dtype and device of the inputs.
"""

from ._validation import input_checks
from .one_dimensional import fgw_1d, fgw_1d_dense
from .sliced import sliced_fgw, sliced_gw, sliced_wasserstein

__all__ = [
    "input_checks",
    "fgw_1d",
    "fgw_1d_dense",
    "sliced_fgw",
    "sliced_gw",
    "sliced_wasserstein",
]
