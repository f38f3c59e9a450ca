"""``python -m mdflow.cli``: the same as the ``mdflow`` command."""

import sys

from .main import main

sys.exit(main())
