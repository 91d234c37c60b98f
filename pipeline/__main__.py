"""``python -m pipeline`` is the ``tessera`` command (for when the script is not on PATH)."""

import sys

from pipeline.cli import main

sys.exit(main())
