"""The dashboard: rendering (pure, fixed-width console, colours off), fitting rows to a screen, the CLI."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console

from launch.monitor.rows import JobRow, Snapshot, label_rows, summarize_sweeps
from launch.monitor.dashboard import fit_rows, fmt_duration, render, render_view, scancel_ids
from launch.cli.status import parse_args


def console_text(renderable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False, legacy_windows=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def sample_rows() -> list[JobRow]:
    rows = [
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
    label_rows(rows, {})
    return rows


WIDE = """\
job    name                  state      reason                     step   loss        eta  time/limit       node   requeues  tok/s  ckpt age  goodput
101_0  learning_rate=0.001…  RUNNING                          1200/5000  3.215  2:30:00 !  1:02:05/2:00:00  node1         1  45.2k        5m        -
101_1  learning_rate=0.003…  PENDING    waiting behind high…          -      -          -  -/2:00:00        -             -      -         -        -
101_2  learning_rate=0.01 …  FAILED                                   -      -          -  1:05/2:00:00     node1         -      -         -        -
102    debug                 COMPLETED                            20/20  5.000       0:00  0:30/10:00       -             -      -         -        -"""

# a narrow console keeps the columns of highest priority: job, name, state, reason
NARROW = """\
job    name                  state      reason
101_0  learning_rate=0.001…  RUNNING
101_1  learning_rate=0.003…  PENDING    waiting behind hig…
101_2  learning_rate=0.01 …  FAILED
102    debug                 COMPLETED"""


def test_render_wide_console_shows_every_column_on_one_line_per_job():
    assert console_text(render(sample_rows(), width=150), 150) == WIDE


def test_goodput_and_excluded_nodes_are_shown():
    row = JobRow(job_id="7", state="RUNNING", node="node1", goodput=0.49, excluded_nodes=["node2"])
    text = console_text(render([row], width=250), 250)
    assert "49%" in text and "node1 (excluded node2)" in text


def test_render_narrow_console_keeps_the_columns_of_highest_priority():
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
                        stale=True, error="squeue exited with 1: no controller",
                        accounting=False, answered=0.0)
    lines = console_text(render_view(snapshot, now=200.0, width=150), 150).splitlines()
    assert lines[:3] == [
        "jobs at 00:03:20: 1 running, 1 pending, 1 failed, 1 completed",
        "STALE: the controller did not answer (squeue exited with 1: no controller); states "
        "from its answer of 00:00:00 (3m ago) and the run directories",
        "sweep lr-sweep (s1): 3 cells: 1 running, 1 pending, 1 failed; best eval loss 3.3000 (101_0 "
        "learning_rate=0.001 dim=256)",
    ]
    assert lines[3:8] == WIDE.splitlines()
    assert lines[8:] == ["FAILED 101_2 mixer-lr1e-2  exit 1:0  /runs/x/101_2.err",
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


def test_view_cut_drops_the_oldest_finished_rows_first_and_keeps_the_selected_one():
    finished = [JobRow(job_id=str(100 + i), state="COMPLETED", end=float(i)) for i in range(50)]
    running = [JobRow(job_id=str(900 + i), state="RUNNING") for i in range(30)]
    rows = running + pending_array(1000) + [JobRow(job_id="999", state="FAILED", end=60.0)] + finished[::-1]
    snapshot = Snapshot(rows=rows, sweeps=[], time=0.0, calls={"squeue": 1})
    lines = console_text(render_view(snapshot, now=0.0, width=120, max_rows=40), 120).splitlines()
    assert len(lines) == 40 and lines[-1].startswith("... 45 more rows (the oldest finished go first")
    shown = [line.split()[0] for line in lines[2:-1]]
    assert shown == [*[str(900 + i) for i in range(30)], "500_[0-999]", "999", "149", "148", "147", "146", "145"]
    lines = console_text(render_view(snapshot, now=0.0, width=120, max_rows=40, selected="100"), 120).splitlines()
    assert [line.split()[0] for line in lines[2:-1]][-2:] == ["146", "100"]


def test_live_view_on_a_small_screen_keeps_active_sweeps_and_shortens_failure_logs():
    from launch.monitor.rows import SweepSummary

    # newest first, as the collector orders them (old0 is the newest ended sweep); busy is older but active
    sweeps = [SweepSummary(name=f"old{i}", submission=f"s{i}", total=2, counts={"COMPLETED": 2}) for i in range(30)]
    sweeps.insert(10, SweepSummary(name="busy", submission="b", total=5, counts={"RUNNING": 1, "PENDING": 4}))
    failed = [JobRow(job_id=str(700 + i), state="FAILED", end=float(i), stderr=f"/logs/{i}.err",
                     log_tail=[f"line {k} of {i}" for k in range(12)]) for i in range(5)]
    snapshot = Snapshot(rows=pending_array(50) + failed, sweeps=sweeps, time=0.0, calls={"squeue": 1})
    lines = console_text(render_view(snapshot, now=0.0, width=100, max_rows=30), 100).splitlines()
    assert len(lines) <= 30
    assert [line.split()[1] for line in lines if line.startswith("sweep ")] == ["old0", "old1", "old2", "old3",
                                                                               "busy"]
    assert "... 26 more sweeps (see --once)" in lines
    failures = lines[lines.index("FAILED 704   /logs/4.err"):]  # newest first, the last line of each log
    assert failures == [f"{head}" for i in (4, 3, 2, 1, 0) for head in (f"FAILED 70{i}   /logs/{i}.err",
                                                                        f"  line 11 of {i}")]
    full = console_text(render_view(snapshot, now=0.0, width=100), 100)
    assert full.count("\nsweep ") == 31 and full.count("line 0 of") == 5  # --once: everything


def test_once_collapses_queued_tasks_even_when_the_screen_is_not_limited():
    rows = pending_array(300)
    fitted, cut = fit_rows(rows, None, collapse=True)
    assert [r.job_id for r in fitted] == ["500_[0-299]"] and cut == 0


def test_one_scancel_names_a_whole_array_by_its_id():
    every = pending_array(4) + [JobRow(job_id="600_0", state="RUNNING"), JobRow(job_id="600_1", state="PENDING"),
                                JobRow(job_id="600_2", state="COMPLETED"), JobRow(job_id="7", state="RUNNING")]
    assert scancel_ids(every[:4] + every[4:6] + every[7:], every) == ["7", "500", "600"]
    assert scancel_ids(every[1:3] + every[4:5], every) == ["500_1", "500_2", "600_0"]


def test_duration_format():
    assert [fmt_duration(s) for s in (None, 5, 65, 3725, 2 * 86400 + 3 * 3600)] == ["-", "0:05", "1:05", "1:02:05",
                                                                                   "2d03h"]


def test_interval_below_two_seconds_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--interval", "0.5"])
    assert "at most one refresh every 2 s" in capsys.readouterr().err
    assert parse_args(["--interval", "2"]).interval == 2.0


# ---------------------------------------------------------------- the command against the real local Slurm


class Terminal(io.StringIO):
    """Typed answers on a terminal, for the confirmation prompt."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def journal_jobs(slurm_cluster, tmp_path, monkeypatch):
    """A held 3-task sweep array, a held job and a failed job, recorded with launch.records.journal in a private state."""
    import subprocess

    from launch.records import journal
    from launch.localcluster.cluster import wait_for_job

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    logs = tmp_path / "logs"
    logs.mkdir()

    def sbatch(*args: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, check=True)
        return out.stdout.strip().split(";")[0]

    array = sbatch("--hold", "--array=0-2", "-J", "mm-status-cli", "-o", "/dev/null", "--wrap", "true")
    held = sbatch("--hold", "-J", "mm-status-cli", "-o", "/dev/null", "--wrap", "true")
    failed = sbatch("-J", "mm-status-cli", "-o", str(logs / "f.out"), "-e", str(logs / "f.err"), "--wrap",
                    "echo step 1; echo 'Traceback (most recent call last):' >&2; echo 'ValueError: bad batch' >&2; "
                    "exit 2")
    ids = [array, held, failed]
    try:
        wait_for_job(failed, timeout=60)
        journal.record(profile="local-slurm", kind="sweep", sweep={"name": "tiny", "file": "sweeps/tiny.yaml"},
                       jobs=[{"job_id": f"{array}_{i}", "name": f"cell{i}", "run_dir": str(tmp_path / f"c{i}"),
                              "cell": {"model.dim": 16 * (i + 1)}, "stdout": None, "stderr": None,
                              "executor": "slurm"} for i in range(3)])
        journal.record(profile="local-slurm", jobs=[
            {"job_id": held, "name": "held", "run_dir": str(tmp_path / "h"), "stdout": None, "stderr": None},
            {"job_id": failed, "name": "broken", "run_dir": str(tmp_path / "f"), "stdout": str(logs / "f.out"),
             "stderr": str(logs / "f.err")}])
        yield {"array": array, "held": held, "failed": failed}
    finally:
        subprocess.run(["scancel", *ids], capture_output=True)


@pytest.mark.slurm
def test_cli_json_once_logs_and_cancel_with_confirmation(journal_jobs, capsys, monkeypatch):
    import json
    import subprocess

    from launch.cli.status import main

    ids = journal_jobs
    assert main(["--json"]) == 0
    rows = {row["job_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert {rows[f"{ids['array']}_{i}"]["state"] for i in range(3)} == {"PENDING"}
    assert rows[f"{ids['array']}_1"]["cell"] == {"model.dim": 32}
    assert (rows[ids["held"]]["state"], rows[ids["failed"]]["state"]) == ("PENDING", "FAILED")

    assert main(["--once"]) == 0
    out = capsys.readouterr().out
    assert f"{ids['array']}_[0-2]" in out and "sweep tiny" in out and "3 pending" in out
    assert "ValueError: bad batch" in out  # the recent failure, with its log tail

    assert main(["--logs", ids["failed"], "--lines", "1"]) == 0
    out = capsys.readouterr().out
    assert "step 1" in out and "ValueError: bad batch" in out and "Traceback" not in out

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: nothing is cancelled without --yes
    assert main(["--cancel", "tiny"]) == 1
    assert "add --yes" in "".join(capsys.readouterr())
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert main(["--cancel", ids["held"]]) == 1
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert main(["--cancel", "tiny"]) == 0  # the sweep by name: its three tasks, one scancel
    assert "cancelled 3 job(s)" in capsys.readouterr().out
    assert main(["--json"]) == 0
    rows = {row["job_id"]: row["state"] for row in json.loads(capsys.readouterr().out)}
    assert [rows[f"{ids['array']}_{i}"] for i in range(3)] == ["CANCELLED"] * 3 and rows[ids["held"]] == "PENDING"
    squeue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ids["array"]], capture_output=True,
                            text=True).stdout.split()
    assert squeue == [f"{ids['array']}_[0-2]", "CANCELLED"]  # one scancel named the whole array


@pytest.mark.slurm
def test_script_entry_point_runs_from_anywhere(journal_jobs, tmp_path):
    """``python launch/status.py`` as documented, from another directory."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "launch" / "status.py"
    proc = subprocess.run([sys.executable, str(script), "--once"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{journal_jobs['array']}_[0-2]" in proc.stdout


def test_a_sweep_submitted_three_times_is_one_sweep_line_with_each_cell_once():
    def row(job, submission, cell, state, sweep_key="/runs/kh"):
        return JobRow(job_id=job, state=state, submission=submission, sweep="kh", sweep_key=sweep_key,
                      run_dir=f"/runs/kh/cell{cell}", submitted=float(job.split("_")[0]))
    rows = [row("300_0", "s3", 1, "RUNNING"),  # newest first: the third submission reran cell 1 ...
            row("200_0", "s2", 0, "COMPLETED"), row("200_1", "s2", 1, "CANCELLED"),  # ... cancelled in the second
            row("100_0", "s1", 0, "CANCELLED"), row("100_1", "s1", 1, "CANCELLED"),
            row("400_0", "t1", 0, "PENDING", sweep_key="/runs/other")]
    first, other = summarize_sweeps(rows)
    assert (first.name, first.submission, first.submissions, first.total) == ("kh", "s3", ["s3", "s2", "s1"], 2)
    assert first.counts == {"RUNNING": 1, "COMPLETED": 1}  # each cell in the state of its newest job
    assert other.total == 1 and other.submissions == ["t1"]
    line = console_text(render_view(Snapshot(rows=rows, sweeps=[first, other], time=0.0), now=0.0, width=80), 80)
    assert "sweep kh (s3, 3 submissions): 2 cells: " in line and line.count("\nsweep ") == 2


@pytest.mark.slurm
def test_filters_that_match_nothing_say_so_and_a_failed_job_was_never_held(journal_jobs, capsys):
    """``--job`` / ``--state`` matching none of the journal's jobs say which filter, not "no jobs in the journal";
    the failed job (submitted held in no way) shows no waiting reason; an unknown state is refused."""
    from launch.cli.status import main

    assert main(["--once", "--job", "999999"]) == 0
    out = capsys.readouterr().out
    assert "no job matches --job 999999 (of 5 job(s) in the journal)" in out and "no jobs in the journal" not in out
    assert main(["--once", "--state", "timeout"]) == 0
    assert "no job matches --state timeout (of 5 job(s) in the journal)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--once", "--state", "RUNING,failed"])
    assert exit_.value.code == 2
    assert "--state RUNING,failed: RUNING is not a job state" in capsys.readouterr().err


def test_a_failed_or_ended_job_keeps_no_waiting_reason():
    from launch.monitor.rows import record_fields

    assert record_fields({"state": "FAILED", "reason": "JobHeldUser"}, "sacct")["reason_text"] == ""
    assert record_fields({"state": "FAILED", "reason": "NonZeroExitCode"}, "sacct")["reason_text"] == \
        "exited with a non-zero code"
    assert record_fields({"state": "PENDING", "reason": "JobHeldUser"}, "squeue")["reason_text"].startswith("held by")


@pytest.mark.slurm
def test_following_a_log_stops_when_the_job_ends(slurm_cluster, tmp_path, monkeypatch):
    """``--logs JOB -f`` prints what the job writes and ends by itself once Slurm says the job ended."""
    import subprocess
    import sys

    from launch.records import journal

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    out = tmp_path / "j.out"
    job = subprocess.run(["sbatch", "--parsable", "-J", "mm-follow", "-o", str(out), "--wrap",
                          "echo first; sleep 4; echo last"], capture_output=True, text=True,
                         check=True).stdout.strip().split(";")[0]
    journal.record(profile="local-slurm", slurm_conf=os.environ.get("SLURM_CONF"),
                   jobs=[{"job_id": job, "name": "follow", "run_dir": str(tmp_path / "r"), "stdout": str(out),
                          "stderr": str(tmp_path / "j.err")}])
    script = Path(__file__).resolve().parents[2] / "launch" / "status.py"
    done = subprocess.run([sys.executable, str(script), "--logs", job, "-f"], capture_output=True, text=True,
                          timeout=90, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "last" in lines and lines[-1] == f"==> job {job} ended COMPLETED; stopped following <==", lines


LINES = [(["--lines", "-5"], "argument --lines: -5: must be 0 or more"), (["--state", ","], "is not a job state")]


@pytest.mark.parametrize("args, message", LINES, ids=[" ".join(a) for a, _ in LINES])
def test_status_flags_that_mean_nothing_are_refused(capsys, tmp_path, monkeypatch, args, message):
    from launch.cli.status import main

    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--once"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_log_tail_of_zero_lines_is_not_called_empty(tmp_path):
    from launch.monitor.logs import LogFile, labelled_tail

    log = tmp_path / "x.out"
    log.write_text("one\ntwo\n")
    assert labelled_tail(LogFile(job_id="1", stream="stdout", path=str(log)), 0)[1:] == []
    log.write_text("")
    assert labelled_tail(LogFile(job_id="1", stream="stdout", path=str(log)), 5)[1:] == ["(empty)"]
