"""How the commands print a rich table: to a terminal at its width; to a pipe or a file whole.

    print_table(table)     # status.py --once, sweep_report.py
    exit_quietly_on_a_closed_pipe()     # `| head` ends the command without a traceback

A pipe reports 80 columns to rich, which would then cut every cell of a wide table to "…"; piped output is for
``grep`` and files, so there nothing is cut or wrapped and there are no colours.
"""

from __future__ import annotations

import signal
import sys

from rich.console import Console

UNCUT_WIDTH = 100_000  # piped output: rich never cuts or wraps a line shorter than this


def print_uncut(renderable) -> None:
    """Print for a pipe or a file: nothing cut or wrapped (``| grep kernel=4`` sees whole rows), no colours."""
    console = Console(width=UNCUT_WIDTH, color_system=None, force_terminal=False, soft_wrap=True)
    with console.capture() as captured:
        console.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def print_table(renderable) -> None:
    """At the terminal's width on a terminal (rich fits the columns), else :func:`print_uncut`."""
    if sys.stdout.isatty():
        Console().print(renderable)
    else:
        print_uncut(renderable)


def exit_quietly_on_a_closed_pipe() -> None:
    """``status.py --once | head``: when the reader goes away, end at once as other Unix tools do (SIGPIPE's default
    action) instead of a BrokenPipeError traceback."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
