"""``python -m pipeline`` is the ``tessera`` command (for when the script is not on PATH)."""

import sys

if sys.argv[1:2] == ["spare"]:
    from pipeline.spare import main as spare_main

    sys.exit(spare_main())

from pipeline.cli import main

sys.exit(main())
