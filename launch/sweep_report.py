"""``python launch/sweep_report.py``: the results of a sweep. The commands are in ``launch/cli/report.py``'s docstring."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the project from the repository root, not from launch/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from launch.cli.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
