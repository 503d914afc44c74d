"""``python -m lstm``: see :mod:`lstm.cli`."""

import sys

from lstm.cli import main

sys.exit(main())
