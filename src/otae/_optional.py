"""Optional dependencies: imported when a feature needs them, with one clear error if absent.

otae's core (every model, the trainer, the CLI) needs torch, numpy, scipy and the
logging / figure libraries only. Features built on a further library import it through
:func:`require` at the moment they run, so a lean install stays lean and ``import otae``
stays fast (POT alone costs about 2 s of import time: it imports scikit-learn).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "require"]


class MissingDependencyError(ImportError):
    """An optional library a requested feature needs is not installed (the message says
    which feature and the ``pip install`` line that adds it)."""


def require(module: str, *, feature: str, install: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError`.

    Args:
        module: the import name, e.g. ``"ot"``.
        feature: what needs it, for the message, e.g. ``"empirical_gw"``.
        install: the pip requirement that provides it, e.g. ``"otae[pot]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        quoted = f"'{install}'" if "[" in install else install  # shells glob brackets
        raise MissingDependencyError(
            f"{feature} needs the optional package {module!r}, which is not installed "
            f"({err}); install it with `pip install {quoted}`"
        ) from None
