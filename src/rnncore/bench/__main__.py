"""``python -m rnncore.bench``: the ``rnncore-bench`` command."""
import sys

from .cli import main

sys.exit(main())
