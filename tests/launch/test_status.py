"""The dashboard: rendering (pure, fixed-width console, colours off), fitting rows to a screen, the CLI."""

from __future__ import annotations

import dataclasses
import io
import textwrap

import pytest
from rich.console import Console

from launch.queue import JobRow, Snapshot, summarize_sweeps
from launch.status import fit_rows, fmt_duration, parse_args, render, render_view


def console_text(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, legacy_windows=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def sample_rows() -> list[JobRow]:
    return [
        JobRow(job_id="101_0", state="RUNNING", name="mixer-lr1e-3", submission="s1", sweep="lr-sweep",
               cell={"train.learning_rate": 0.001, "model.dim": 256}, elapsed_s=3725, time_limit_s=7200,
               node="node1", restarts=1, step=1200, max_steps=5000, loss=3.21456, eval_loss=3.3,
               tokens_per_s=45210.0, checkpoint_age_s=310, eta_s=9000, eta_past_limit=True),
        JobRow(job_id="101_1", state="PENDING", name="mixer-lr3e-3", submission="s1", sweep="lr-sweep",
               cell={"train.learning_rate": 0.003, "model.dim": 256}, reason="Priority",
               reason_text="waiting behind higher-priority jobs", time_limit_s=7200),
        JobRow(job_id="101_2", state="FAILED", name="mixer-lr1e-2", submission="s1", sweep="lr-sweep",
               cell={"train.learning_rate": 0.01, "model.dim": 256}, elapsed_s=65, time_limit_s=7200, node="node1",
               exit_code="1:0", stderr="/runs/x/101_2.err", eval_loss=4.5,
               log_tail=["Traceback (most recent call last):", "RuntimeError: loss is nan"]),
        JobRow(job_id="102", state="COMPLETED", name="debug", elapsed_s=30, time_limit_s=600, step=20, max_steps=20,
               loss=5.0, eta_s=0.0, source="sacct"),
    ]


WIDE = """\
job    name          cell                    state      reason                   time/limit       node   rst       step   loss  tok/s  ckpt        eta
101_0  mixer-lr1e-3  learning_rate=0.001 d…  RUNNING                             1:02:05/2:00:00  node1    1  1200/5000  3.215  45.2k    5m  2:30:00 !
101_1  mixer-lr3e-3  learning_rate=0.003 d…  PENDING    waiting behind higher-…  -/2:00:00        -        -          -      -      -     -          -
101_2  mixer-lr1e-2  learning_rate=0.01 di…  FAILED                              1:05/2:00:00     node1    -          -      -      -     -          -
102    debug                                 COMPLETED                           0:30/10:00       -        -      20/20  5.000      -     -       0:00"""

NARROW = """\
job    state      reason              step   loss        eta
101_0  RUNNING                   1200/5000  3.215  2:30:00 !
101_1  PENDING    waiting behi…          -      -          -
101_2  FAILED                            -      -          -
102    COMPLETED                     20/20  5.000       0:00"""


def test_render_wide_console_shows_every_column_on_one_line_per_job():
    assert console_text(render(sample_rows(), width=150), 150) == WIDE


def test_render_narrow_console_keeps_ids_states_and_numbers():
    assert console_text(render(sample_rows(), width=60), 60) == NARROW


def test_render_without_width_never_cuts():
    text = console_text(render(sample_rows()), 250)
    assert "learning_rate=0.001 dim=256" in text and "waiting behind higher-priority jobs" in text


@pytest.fixture
def utc(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_render_view_stale_no_accounting_sweep_and_failure_tail(utc):
    rows = sample_rows()
    snapshot = Snapshot(rows=rows, sweeps=summarize_sweeps(rows), time=0.0, calls={"squeue": 1, "sacct": 0},
                        stale=True, error="squeue exited with 1: Unable to contact slurm controller",
                        accounting=False)
    lines = console_text(render_view(snapshot, now=200.0, width=150), 150).splitlines()
    assert lines[:4] == [
        "jobs at 00:00:00: 1 running, 1 pending, 1 failed, 1 completed  [squeue 1, sacct 0]",
        "STALE: the controller did not answer (squeue exited with 1: Unable to contact slurm controller); "
        "showing data from 3m ago",
        "accounting unavailable: finished jobs inferred from run directories and logs",
        "sweep lr-sweep (s1): 3 cells: 1 running, 1 pending, 1 failed; best eval loss 3.3000 (101_0 "
        "learning_rate=0.001 dim=256)",
    ]
    assert lines[4:9] == WIDE.splitlines()
    assert lines[9:] == ["FAILED 101_2 mixer-lr1e-2  exit 1:0  /runs/x/101_2.err",
                         "  Traceback (most recent call last):", "  RuntimeError: loss is nan"]


def pending_array(n: int, base: str = "500") -> list[JobRow]:
    return [JobRow(job_id=f"{base}_{i}", state="PENDING", reason="JobHeldUser", reason_text="held by you",
                   submission="big", sweep="big") for i in range(n)]


def test_fit_rows_collapses_pending_array_tasks_into_ranges():
    running = JobRow(job_id="500_0", state="RUNNING", step=3, max_steps=10)
    rows = [running] + pending_array(10_000)[1:] + [JobRow(job_id="600", state="FAILED")]
    fitted, cut = fit_rows(rows, 20)
    assert cut == 0
    assert [(r.job_id, r.name, r.state) for r in fitted] == [
        ("500_0", "", "RUNNING"), ("500_[1-9999]", "(9999 tasks)", "PENDING"), ("600", "", "FAILED")]
    assert fit_rows(rows, 20_000) == (rows, 0)  # everything fits: nothing changes


def test_fit_rows_range_names_gaps_and_cuts_what_still_does_not_fit():
    rows = [r for r in pending_array(8) if r.job_id not in ("500_3", "500_4")]
    fitted, _ = fit_rows(rows + [JobRow(job_id="700", state="RUNNING")], 2)
    assert fitted[0].job_id == "500_[0-2,5-7]"
    many = [JobRow(job_id=str(1000 + i), state="RUNNING") for i in range(50)]
    fitted, cut = fit_rows(many, 10)
    assert len(fitted) == 9 and cut == 41


def test_view_fits_the_screen_with_ten_thousand_pending_tasks():
    rows = pending_array(10_000) + [JobRow(job_id=str(900 + i), state="RUNNING") for i in range(10)]
    snapshot = Snapshot(rows=rows, sweeps=summarize_sweeps(rows), time=0.0, calls={"squeue": 1})
    text = console_text(render_view(snapshot, now=0.0, width=120, max_rows=40), 120)
    assert len(text.splitlines()) == 2 + 1 + 11  # header, sweep line, table header, range row and 10 running
    assert "500_[0-9999]" in text and "(10000 tasks)" in text and "more rows" not in text


def test_view_cut_keeps_running_and_failed_jobs_before_finished_ones():
    finished = [JobRow(job_id=str(100 + i), state="COMPLETED") for i in range(50)]
    running = [JobRow(job_id=str(900 + i), state="RUNNING") for i in range(30)]
    rows = finished + pending_array(1000) + running + [JobRow(job_id="999", state="FAILED")]
    snapshot = Snapshot(rows=rows, sweeps=[], time=0.0, calls={"squeue": 1})
    lines = console_text(render_view(snapshot, now=0.0, width=120, max_rows=40), 120).splitlines()
    assert len(lines) == 40 and lines[-1].startswith("... 45 more rows")
    shown = [line.split()[0] for line in lines[2:-1]]
    assert shown[:1] == ["100"] and shown[-32:] == ["500_[0-999]", *[str(900 + i) for i in range(30)], "999"]


def test_once_collapses_queued_tasks_even_when_the_screen_is_not_limited():
    rows = pending_array(300)
    fitted, cut = fit_rows(rows, None, collapse=True)
    assert [r.job_id for r in fitted] == ["500_[0-299]"] and cut == 0


def test_duration_format():
    assert [fmt_duration(s) for s in (None, 5, 65, 3725, 2 * 86400 + 3 * 3600)] == ["-", "0:05", "1:05", "1:02:05",
                                                                                   "2d03h"]


def test_interval_below_two_seconds_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--interval", "0.5"])
    assert "at most one refresh every 2 s" in capsys.readouterr().err
    assert parse_args(["--interval", "2"]).interval == 2.0
