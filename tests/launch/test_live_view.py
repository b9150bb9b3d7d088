"""The dashboard for daily use: keys, screens and logs (pure), the stale answer, readable names, filters, the pollers'
one queue call, and the live view driven in a real terminal (pexpect: a pseudo-terminal from a pip package, no apt
step; pyte: the screen it draws, as a terminal would show it) on the real local Slurm cluster."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from rich.console import Console

from launch.monitor import live
from launch.monitor.dashboard import render_history, render_view, select_rows
from launch.monitor.logs import LogFile, labelled_tail, run_logs
from launch.monitor.queue import Collector
from launch.monitor.rows import JobRow, Snapshot, label_rows
from launch.monitor.screen import ScreenState, handle_key, render_screen
from launch.slurm.client import SlurmError
from launch.slurm.output import explain_dependency
from memorymodels.experiment import REPO_ROOT
from memorymodels.startup import describe

STATUS = [sys.executable, str(REPO_ROOT / "launch" / "status.py")]
SUBMIT = [sys.executable, str(REPO_ROOT / "launch" / "submit.py")]
DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"


def text_of(renderable, width: int = 80, height: int = 24) -> list[str]:
    console = Console(width=width, height=height, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(renderable)
    return [line.rstrip() for line in console.file.getvalue().splitlines()]


# ---------------------------------------------------------------- pure: keys, screens, words


def test_keys_decode_and_drive_the_screen_state():
    assert live.decode_keys("\x1b[A\x1b[Bq\x1bOA\t\r?\x1b") == ["up", "down", "q", "up", "tab", "enter", "?", "esc"]
    rows = [JobRow(job_id="7", state="RUNNING"), JobRow(job_id="8", state="COMPLETED")]
    state = ScreenState(selected="7")
    state, action = handle_key(state, "down", rows)
    assert (state.selected, action) == ("8", None)
    assert handle_key(state, "c", rows)[0].message == "8 is completed: nothing to cancel"
    state, action = handle_key(ScreenState(selected="7"), "c", rows)
    assert state.mode == "confirm" and action is None
    assert handle_key(state, "n", rows)[0].message == "nothing cancelled"
    assert handle_key(state, "y", rows)[1] == "cancel"
    state, action = handle_key(ScreenState(selected="7"), "l", rows)
    assert (state.mode, action) == ("log", "log")
    assert handle_key(state, "tab", rows)[0].log_index == 1
    assert handle_key(state, "q", rows)[0].mode == "table"  # q leaves the log; q in the table quits
    assert handle_key(ScreenState(), "q", rows)[1] == "quit"
    assert handle_key(ScreenState(), "?", rows)[0].mode == "help"


def test_screen_fills_the_terminal_with_the_footer_on_the_last_line():
    rows = [JobRow(job_id=str(100 + i), state="COMPLETED", end=float(i), submitted=float(i)) for i in range(40)]
    snapshot = Snapshot(rows=rows[::-1], sweeps=[], time=0.0)
    lines = text_of(render_screen(snapshot, ScreenState(selected="100"), now=0.0, width=80, height=24, interval=5),
                    80, 24)
    assert len(lines) == 24 and lines[-1].startswith("q quit  ↑↓ select  l log  c cancel  ? help")
    assert any(line.startswith("100 ") for line in lines)  # the selected row stays, however old
    state = ScreenState(mode="log", selected="100", log_title="job 100 stdout: /x/100.out",
                        log_lines=[f"line {i}" for i in range(100)])
    lines = text_of(render_screen(snapshot, state, now=0.0, width=80, height=24, interval=5), 80, 24)
    assert lines[0] == "job 100 stdout: /x/100.out" and lines[-2] == "line 99" and lines[-1].startswith("q/esc back")


def test_pending_reasons_name_the_dependency_and_the_array_limit():
    assert explain_dependency("afterok:142(unfulfilled)") == "waiting for job 142 to complete"
    assert explain_dependency("afterany:144_*(unfulfilled)") == "waiting for job 144 (every task) to end"
    assert "never start" in explain_dependency("afterok:5(failed)")
    from launch.monitor.rows import explain_array_limits

    rows = [JobRow(job_id=f"9_{i}", state="RUNNING") for i in range(2)]
    rows += [JobRow(job_id="9_2", state="PENDING", reason="JobArrayTaskLimit")]
    explain_array_limits(rows)
    assert rows[-1].reason_text == "waiting for a free slot: the array runs at most 2 tasks at once"
    assert "%N" not in rows[-1].reason_text


def test_names_say_what_differs_and_the_default_view_is_recent_newest_first(tmp_path):
    for name, lr in (("a", 0.001), ("a-0123456789ab", 0.003)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"config": {"train": {"learning_rate": lr, "max_steps": 4}, "output": {"name": name}}}))
    rows = [JobRow(job_id="5", state="RUNNING", name="a", run_dir=str(tmp_path / "a"), submitted=50.0),
            JobRow(job_id="6", state="PENDING", name="a-0123456789ab", run_dir=str(tmp_path / "a-0123456789ab"),
                   submitted=60.0),
            JobRow(job_id="7_1", state="COMPLETED", cell={"model.params.kernel": 4, "model.dim": 8}, end=10.0)]
    label_rows(rows, {})
    assert [row.label for row in rows] == ["a learning_rate=0.001", "a learning_rate=0.003", "kernel=4 dim=8"]
    now = 10.0 + 86400 + 1
    snapshot = Snapshot(rows=rows, sweeps=[], time=now)
    shown, hidden = select_rows(snapshot, now=now)
    assert [row.job_id for row in shown.rows] == ["5", "6"] and hidden == 1
    assert [r.job_id for r in select_rows(snapshot, now=now, since_s=None)[0].rows] == ["5", "6", "7_1"]
    assert [r.job_id for r in select_rows(snapshot, now=now, since_s=None, states={"active"})[0].rows] == ["5", "6"]
    assert [r.job_id for r in select_rows(snapshot, now=now, job="6")[0].rows] == ["6"]


def test_piped_output_is_never_cut(capsys):
    from launch.cli.output import print_uncut

    long = {f"model.params.key_{i}": i for i in range(30)}
    row = JobRow(job_id="1_0", state="PENDING", cell=long, reason_text="waiting for job 1234 to complete " * 4)
    label_rows([row], {})
    print_uncut(render_view(Snapshot(rows=[row], sweeps=[], time=0.0), now=0.0))
    out = capsys.readouterr().out
    assert "…" not in out and row.label in out and row.reason_text.strip() in out


class Flaky:
    """squeue answers once, then the controller is down."""

    def __init__(self, text: str):
        self.text, self.calls = text, 0

    def __call__(self, argv):
        self.calls += 1
        if self.calls > 1:
            raise SlurmError("'squeue ...' exited with 1: Unable to contact slurm controller")
        assert argv[0] == "squeue" and "-u" in argv
        return self.text


def test_controller_down_keeps_the_last_real_answer_with_its_age_and_run_json_wins(tmp_path):
    from launch.slurm.output import SEP

    run_dir = tmp_path / "done"
    run_dir.mkdir()
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "s1.json").write_text(json.dumps({"submission_id": "s1", "created": time.time(), "kind": "job",
        "jobs": [{"job_id": "41", "name": "done", "run_dir": str(run_dir)},
                 {"job_id": "42", "name": "queued", "run_dir": str(tmp_path / "queued")}]}))
    line = lambda job: SEP.join([job, job, "N/A", "RUNNING" if job == "41" else "PENDING", "None", "1:00", "30:00",
                                 "vm", "0", "N/A", "N/A", "N/A", "(null)", "x"])  # noqa: E731
    shared = tmp_path / "queue"
    flaky = Flaky(f"{line('41')}\n{line('42')}\n")
    first = Collector(journal_dir=journal, accounting="off", shared_cache=shared, run=flaky, user="me").refresh()
    assert not first.stale and {r.job_id: r.state for r in first.rows} == {"41": "RUNNING", "42": "PENDING"}
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))
    time.sleep(0.05)
    later = Collector(journal_dir=journal, accounting="off", shared_cache=shared, run=flaky, user="me",
                      min_interval=0.0).refresh()  # a new process: only the shared answer is left
    assert later.stale and later.answered == pytest.approx(first.time, abs=1.0)
    assert {r.job_id: r.state for r in later.rows} == {"41": "COMPLETED", "42": "PENDING"}
    lines = text_of(render_view(later, now=later.answered + 600, width=200), 200)
    assert "(10m ago)" in lines[1] and lines[1].startswith("STALE")
    never = Collector(journal_dir=journal, accounting="off", shared_cache=tmp_path / "empty", run=flaky, user="me")
    snap = never.refresh()
    assert snap.stale and snap.answered is None and {r.job_id: r.state for r in snap.rows}["41"] == "COMPLETED"
    assert "no answer received yet" in text_of(render_view(snap, now=time.time(), width=200), 200)[1]


def test_pollers_ask_squeue_for_this_users_jobs_through_run_slurm(monkeypatch, tmp_path):
    from launch.monitor import queue

    asked = []
    monkeypatch.setattr(queue, "run_slurm", lambda argv, env=None, timeout=None: asked.append(argv) or "")
    assert queue.queue_states(["12_3"], env={}, user="someone") == {}
    assert asked[0][0] == "squeue" and asked[0][asked[0].index("-u") + 1] == "someone"
    assert asked[0][asked[0].index("-t") + 1] == "all"


def test_logs_are_labelled_by_stream_and_attempt_and_found_from_the_run_dir(tmp_path):
    run_dir = tmp_path / "runs" / "kernel=4"
    run_dir.mkdir(parents=True)
    err = tmp_path / "sweep" / "slurm-logs" / "s1" / "array-0" / "60_1_0_log.err"
    err.parent.mkdir(parents=True)
    err.write_text("submitit INFO - Starting with JobEnvironment(job_id=60_1)\nfirst\n"
                   "submitit INFO - Starting with JobEnvironment(job_id=60_1)\nsecond\n")
    jobs = [{"job_id": "60_1", "run_dir": str(run_dir), "stdout": str(err.with_suffix(".out")), "stderr": str(err)}]
    logs = run_logs(run_dir, jobs)
    assert [(log.job_id, log.stream) for log in logs] == [("60_1", "stdout"), ("60_1", "stderr")]
    lines = labelled_tail(logs[1], 10)
    assert lines[0] == f"==> job 60_1 stderr: {err} <=="
    assert lines[1:] == ["--- attempt 1 ---", *err.read_text().splitlines()[:2], "--- attempt 2 ---",
                         *err.read_text().splitlines()[2:]]
    assert labelled_tail(LogFile("9", "stdout", str(tmp_path / "none")), 5)[1].startswith("(no such file yet")


def test_history_shows_start_end_node_cause_and_step_per_attempt():
    attempts = [{"job_id": "5", "host": "vm", "start": 0.0, "end": 60.0, "outcome": "requeued-timeout", "step": 40,
                 "exit_code": 75, "log_tail": None},
                {"job_id": "5", "host": "node2", "start": 100.0, "end": 130.0, "outcome": "failed", "step": 52,
                 "exit_code": 1, "log_tail": "RuntimeError: loss is nan"}]
    lines = text_of(render_history(attempts), 120)
    assert lines[0].split() == ["attempt", "job", "node", "start", "end", "ran", "how", "it", "ended", "step", "exit"]
    assert "vm" in lines[1] and "1:00" in lines[1] and "time limit: checkpointed, requeued" in lines[1]
    assert lines[1].split()[-2:] == ["40", "75"] and "program error" in lines[2] and lines[-1].strip() == \
        "RuntimeError: loss is nan"


def test_history_shows_each_attempt_s_startup_phases():
    phases = {"task": 0.4, "python": 0.5, "imports": 3.3, "data": 3.4, "model": 3.5, "rendezvous": 3.6,
              "trainer": 3.9, "checkpoint": 4.1, "first_step": 4.6}
    attempts = [{"job_id": "5", "host": "vm", "start": 0.0, "end": 60.0, "outcome": "requeued-timeout", "step": 40,
                 "exit_code": 75, "log_tail": None, "startup": None},  # its trainer recorded none
                {"job_id": "5", "host": "vm", "start": 100.0, "end": None, "outcome": "running", "step": None,
                 "exit_code": None, "log_tail": None,
                 "startup": {"job_id": "5", "restart_count": 0, "start": 99.0, "phases": phases}}]
    lines = text_of(render_history(attempts), 200)
    assert lines[-1] == ("attempt 2 startup: first step 4.6 s after the start (task 0.4 s, python 0.1 s, imports 2.8 s, "
                         "data 0.1 s, model 0.1 s, rendezvous 0.1 s, trainer 0.3 s, checkpoint 0.2 s, first step 0.5 s)")
    assert not any("attempt 1 startup" in line for line in lines)  # its trainer recorded none
    assert describe({"start": 1.0, "phases": {"python": 0.1, "imports": 2.0}}) == \
        "no step yet (python 0.1 s, imports 1.9 s)"


# ---------------------------------------------------------------- the real terminal, the real cluster


@pytest.fixture
def held_jobs(slurm_cluster, tmp_path, monkeypatch):
    """Two held jobs of one experiment with another learning rate (submit.py), and a finished job with a log."""
    from launch.records import journal
    from launch.localcluster.cluster import wait_for_job
    from memorymodels.experiment import state_dir

    cache = state_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "cache").symlink_to(cache.resolve())
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    ids = {}
    try:
        for lr in ("0.001", "0.003"):
            out = subprocess.run([*SUBMIT, "--profile", "local-slurm", "--experiment", str(DEBUG), "--json",
                                  "--set", f"profile.checkpoint_root={tmp_path / 'runs'}",
                                  "--set", "profile.sbatch_extra={hold: true}", "--set", f"train.learning_rate={lr}"],
                                 capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
            assert out.returncode == 0, out.stderr
            ids[lr] = json.loads(out.stdout)["job_id"]
        log = tmp_path / "said.out"
        done = subprocess.run(["sbatch", "--parsable", "-o", str(log), "--wrap", "echo hello-from-the-log"],
                              capture_output=True, text=True, check=True).stdout.strip()
        wait_for_job(done, timeout=60)
        journal.record(profile="local-slurm", jobs=[{"job_id": done, "name": "said", "run_dir": str(tmp_path / "s"),
                                                     "stdout": str(log), "stderr": str(log)}])
        ids["done"] = done
        yield ids
    finally:
        subprocess.run(["scancel", *ids.values()], capture_output=True)


@pytest.mark.slurm
def test_filters_on_the_local_cluster(held_jobs):
    def rows(*args):
        out = subprocess.run([*STATUS, "--json", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return {row["job_id"]: row for row in json.loads(out.stdout)}

    every = rows()
    assert set(every) == set(held_jobs.values())
    assert list(every)[0] == held_jobs["done"]  # newest submission first
    labels = {every[held_jobs[lr]]["label"] for lr in ("0.001", "0.003")}
    assert labels == {f"{every[held_jobs['0.001']]['name']} learning_rate=0.001",
                      f"{every[held_jobs['0.001']]['name']} learning_rate=0.003"}
    assert set(rows("--job", held_jobs["0.003"])) == {held_jobs["0.003"]}
    assert set(rows("--state", "pending")) == {held_jobs["0.001"], held_jobs["0.003"]}
    assert set(rows("--state", "ended")) == {held_jobs["done"]}
    piped = subprocess.run([*STATUS, "--once"], capture_output=True, text=True, timeout=60).stdout
    assert "learning_rate=0.003" in piped and "…" not in piped


class Terminal:
    """The dashboard in a pseudo-terminal (pexpect), its screen kept by a terminal emulator (pyte)."""

    def __init__(self, args: list[str], rows: int = 24, cols: int = 80):
        import pexpect
        import pyte

        command = " ".join(f"'{a}'" for a in [*STATUS, *args])
        self.child = pexpect.spawn("bash", ["-c", f"{command}; echo EXIT=$?; stty -a"], dimensions=(rows, cols),
                                   encoding="utf-8", env={**os.environ, "TERM": "xterm-256color"})
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.raw = ""

    def pump(self, seconds: float) -> None:
        import pexpect

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.05)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return
            self.raw += data
            self.stream.feed(data)

    def wait_for(self, predicate, what: str, timeout: float = 20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.1)
            if predicate(self.screen.display):
                return self.screen.display
        raise AssertionError(f"{what}: not on the screen within {timeout:.0f} s:\n" + "\n".join(self.screen.display))

    def read_until(self, text: str, timeout: float) -> str:
        """What the terminal received from ``text`` on (once it is there); AssertionError after ``timeout``."""
        end = time.monotonic() + timeout
        while text not in self.raw:
            assert time.monotonic() < end, f"{text!r} not printed within {timeout} s: {self.raw[-500:]!r}"
            self.pump(0.05)
        self.pump(0.3)
        return self.raw[self.raw.index(text):]

    def selected(self) -> str:
        """The job id of the highlighted (reverse video) row."""
        for y in range(self.screen.lines):
            if self.screen.buffer[y][0].reverse and not self.screen.display[y].startswith("q quit"):
                return self.screen.display[y].split()[0]
        return ""


@pytest.mark.slurm
@pytest.mark.slow
def test_live_view_in_a_real_terminal_refreshes_selects_opens_a_log_and_quits(held_jobs):
    term = Terminal(["--interval", "2"])
    screen = term.wait_for(lambda lines: any(line.startswith(held_jobs["done"]) for line in lines)
                           and lines[-1].startswith("q quit"), "the jobs and the footer")
    assert screen[-1].startswith("q quit  ↑↓ select  l log  c cancel  ? help") and len(screen) == 24
    assert "\x1b[?1049h" in term.raw  # the alternate screen
    clock = screen[0].split()[2]
    term.wait_for(lambda lines: lines[0].split()[2] != clock, "a refresh", timeout=10)
    assert term.selected() == held_jobs["done"]
    term.child.send("\x1b[B")
    term.wait_for(lambda lines: term.selected() == held_jobs["0.003"], "the next row selected")
    term.child.send("\x1b[A")
    term.wait_for(lambda lines: term.selected() == held_jobs["done"], "the first row selected again")
    term.child.send("l")
    screen = term.wait_for(lambda lines: "hello-from-the-log" in "\n".join(lines), "the log")
    assert screen[0].startswith(f"job {held_jobs['done']} stdout: ")
    term.child.send("q")
    term.wait_for(lambda lines: lines[-1].startswith("q quit"), "back to the table")
    term.child.send("?")
    term.wait_for(lambda lines: any(line.startswith("ckpt age") for line in lines), "the help")
    term.child.send("x")
    term.wait_for(lambda lines: lines[-1].startswith("q quit"), "the table after the help")
    start = time.monotonic()
    term.child.send("q")
    term.read_until("EXIT=0", timeout=1.0)
    assert time.monotonic() - start < 1.0
    term.read_until("echoctl", timeout=5)  # stty -a, after the dashboard
    settings = term.raw[term.raw.index("EXIT=0"):].split()
    assert "\x1b[?1049l" in term.raw  # the alternate screen left
    assert "icanon" in settings and "echo" in settings and "-icanon" not in settings and "-echo" not in settings


@pytest.mark.slurm
@pytest.mark.slow
def test_live_view_restores_the_terminal_on_ctrl_c(held_jobs):
    term = Terminal([])
    term.wait_for(lambda lines: lines[-1].startswith("q quit"), "the footer")
    term.child.sendintr()
    term.read_until("EXIT=0", timeout=5)
    term.read_until("echoctl", timeout=5)
    settings = term.raw[term.raw.index("EXIT=0"):].split()
    assert "\x1b[?1049l" in term.raw and "icanon" in settings and "echo" in settings and "-echo" not in settings
