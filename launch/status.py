"""``python launch/status.py``: the job dashboard. The commands are in ``launch/cli/status.py``'s docstring."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project from the repository root, not from launch/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from launch.cli.status import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
