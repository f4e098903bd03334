"""``python -m otae`` is the ``otae`` command (also what torchrun launches)."""

import sys

from .cli import main

sys.exit(main())
