"""``python launch/sweep_report.py``: the results of a sweep, as a table, a CSV and a plot.

    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml              # the file's cells, as submitted last
    python launch/sweep_report.py 20261127-211500-ab12cd                      # a submission id from the journal
    python launch/sweep_report.py sweeps/kernel_heads_debug.yaml --plot model.params.kernel --metric eval_loss
    python launch/sweep_report.py SWEEP --evaluate     # first run memorymodels.evaluate on complete cells

What the columns hold is ``launch.monitor.report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launch.cli.args import Parser
from launch.cli.output import exit_quietly_on_a_closed_pipe, print_table
from launch.monitor.history import settle_runs
from launch.monitor.report import (METRICS, add_usage, collect_rows, evaluate_missing, load_cells, plot, plot_axis,
                                   render, resource_usage, slurm_env_of, sweep_jobs, usage_summary, write_csv)
from memorymodels.configuration import ConfigError, one_line
from memorymodels.fileio import exits_on_full_disk


@exits_on_full_disk
def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python launch/sweep_report.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a sweep file (sweeps/NAME.yaml) or a submission id from the journal")
    parser.add_argument("--profile", help="profile giving the checkpoint root of a sweep file never submitted")
    parser.add_argument("--csv", type=Path, help="CSV output (default <sweep folder>/report.csv)")
    parser.add_argument("--plot", metavar="AXIS", help="plot --metric against this axis (as the table names it, "
                        "kernel, or its dotted key, model.params.kernel)")
    parser.add_argument("--metric", default="eval_loss", help=f"one of {', '.join(METRICS)} (default eval_loss)")
    parser.add_argument("--out", type=Path, help="plot file (default <sweep folder>/<metric>_vs_<axis>.png)")
    parser.add_argument("--evaluate", action="store_true", help="evaluate completed cells lacking eval.json first")
    args = parser.parse_args(argv)
    exit_quietly_on_a_closed_pipe()
    try:
        title, axes, cells = load_cells(args.sweep, args.profile)
        axis = plot_axis(axes, args.plot, args.metric) if args.plot else None  # before anything is written
        jobs = sweep_jobs(cells)
        if jobs:  # cancelled and killed attempts first get Slurm's word on how they ended and the time they held
            settle_runs([cell["run_dir"] for cell in cells], slurm_env_of(jobs))
        rows = collect_rows(cells, axes)
        if args.evaluate:
            evaluate_missing(rows)
            rows = collect_rows(cells, axes)
        usage, error = resource_usage(jobs)
        add_usage(rows, usage)
        folder = Path(cells[0]["run_dir"]).parent  # <checkpoint root>/<sweep name>
        print_table(render(rows, axes, title))
        summary = usage_summary(rows, error)
        if summary:
            print(summary)
        csv_path = args.csv or folder / "report.csv"
        write_csv(rows, axes, csv_path)
        print(f"csv: {csv_path}")
        if axis:
            out = args.out or folder / f"{args.metric}_vs_{axis.rsplit('.', 1)[-1]}.png"
            points = plot(rows, axes, axis, args.metric, out)
            print(f"plot: {out} ({points} points{'; no cell has this metric yet' if not points else ''})")
    except ConfigError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0
