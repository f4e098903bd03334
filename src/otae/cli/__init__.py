"""The ``otae`` command: train, eval, sample, bench, multiview, list, fid-weights, fid.

:mod:`.app` builds the parser, runs the command and turns errors into one line (its
docstring: which errors are the user's, exit statuses, ``OTAE_DEBUG``); each command is a
module: :mod:`.train`, :mod:`.evaluate` (``otae eval``), :mod:`.sample`, :mod:`.bench`,
:mod:`.multiview`, :mod:`.listing` (``otae list``), :mod:`.fid` (``otae fid-weights``
and ``otae fid``). A command module imports the heavy parts of otae inside its ``run``,
so that ``otae --help`` stays fast.
"""

from .app import build_parser as build_parser
from .app import main as main
from .multiview import parse_seeds as parse_seeds
