"""``python -m otae.cli``: the ``otae`` command, as ``python -m otae``."""

import sys

from .app import main

sys.exit(main())
