"""``python -m pipeline`` is the ``tessera`` command (for when the script is not on PATH)."""

import sys

if sys.argv[1:2] == ["forkserver"]:
    # The local provider's fork server (pipeline/workers/forkserver.py): not a command for people.
    from pipeline.workers.forkserver import main as forkserver_main

    sys.exit(forkserver_main(sys.argv[2:]))

from pipeline.cli.main import main

sys.exit(main())
