"""Job collection for the dashboard: parsers replaying output captured from the real local Slurm
(``tests/launch/fixtures``, re-record with ``python tests/launch/fixtures/record.py``), then the collector against the
live cluster with every kind of job, with accounting disabled for the collector, and with the cluster's accounting
really off (last: it restarts the shared cluster's controller and restores accounting)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from launch.slurm.client import SlurmError
from launch.monitor.queue import Collector, read_journal
from launch.monitor.rows import infer_state
from launch.slurm.output import expand_array, explain_reason, normalize_state, parse_duration, parse_sacct, parse_squeue, squeue_command

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "jobs.json").read_text())
IDS = RECORDED["jobs"]


# ---------------------------------------------------------------- parsing (replayed real output)


def test_squeue_fixture_every_kind_of_queued_job():
    records, bad = parse_squeue((FIXTURES / "squeue_active.txt").read_text())
    assert bad == 0
    assert records[IDS["running"]]["state"] == "RUNNING"
    assert records[IDS["running"]]["node"] and records[IDS["running"]]["time_limit_s"] == 1800
    assert records[IDS["running"]]["elapsed_s"] > 0
    assert (records[IDS["held"]]["state"], records[IDS["held"]]["reason"]) == ("PENDING", "JobHeldUser")
    assert records[IDS["begin_later"]]["reason"] == "BeginTime"
    assert records[IDS["dependency"]]["reason"] == "Dependency"
    assert records[IDS["requeued"]]["restarts"] == 1
    array = IDS["array_held"]
    assert [f"{array}_{i}" in records for i in range(10)] == [True] * 10  # -r: one line per task
    for finished in ("completed", "failed", "timeout", "cancelled_running", "cancelled_pending"):
        assert IDS[finished] not in records


def test_squeue_all_states_includes_recent_endings():
    records, bad = parse_squeue((FIXTURES / "squeue.txt").read_text())
    assert bad == 0
    expected = {key: value for key, value in RECORDED["expected"].items() if not key.startswith("array")}
    assert {key: records[IDS[key]]["state"] for key in expected} == expected
    mixed = [records[f"{IDS['array_mixed']}_{i}"]["state"] for i in range(4)]
    assert ",".join(mixed) == RECORDED["expected"]["array_mixed"]
    assert records[IDS["failed"]]["reason"] == "NonZeroExitCode" and records[IDS["completed"]]["end"] is not None
    assert records[IDS["completed"]]["time_limit_s"] is None  # Slurm shows no limit as 365 days


def test_squeue_without_r_gives_one_line_per_array_which_is_expanded():
    expanded, _ = parse_squeue((FIXTURES / "squeue_active.txt").read_text())
    collapsed, bad = parse_squeue((FIXTURES / "squeue_unexpanded.txt").read_text())
    assert bad == 0
    assert collapsed.keys() == expanded.keys()  # '0-9%2' became tasks 0..9


def test_sacct_fixture_finished_states_requeue_records_and_array_ranges():
    records, ranges, bad = parse_sacct((FIXTURES / "sacct.txt").read_text())
    assert bad == 0
    expected = {key: value for key, value in RECORDED["expected"].items() if not key.startswith("array")}
    assert {key: records[IDS[key]]["state"] for key in expected} == expected
    assert records[IDS["failed"]]["exit_code"] == "3:0"
    assert records[IDS["timeout"]]["time_limit_s"] == 60 and records[IDS["timeout"]]["elapsed_s"] >= 60
    assert records[IDS["requeued"]]["restarts"] == 1 and records[IDS["completed"]]["restarts"] == 0
    mixed = [records[f"{IDS['array_mixed']}_{i}"]["state"] for i in range(4)]
    assert ",".join(mixed) == RECORDED["expected"]["array_mixed"]
    assert ranges[IDS["array_held"]][0][0] == list(range(10))  # 'N_[0-9%2]': tasks that never started


def test_parsers_survive_odd_lines_and_other_slurm_versions():
    sep = "\x1f"
    text = "\n".join([
        "garbage",
        sep.join(["7", "7", "N/A", "R", "None", "1-02:03:04", "INVALID", "n1", "", "N/A", "N/A", "name|with\x1fseps"]),
        sep.join(["8", "8", "N/A", "FUTURE_STATE", "(null)", "", "UNLIMITED", "", "x", "N/A", "N/A", "a"]),
        sep.join(["9", "9", "[1-3,5]", "PD", "QOSMaxGRESPerUser", "0:00", "5", "", "0", "N/A", "N/A", "arr"]),
    ])
    records, bad = parse_squeue(text)
    assert bad == 1
    assert records["7"]["state"] == "RUNNING" and records["7"]["elapsed_s"] == 93784
    assert records["7"]["time_limit_s"] is None and records["7"]["slurm_name"] == "name|with\x1fseps"
    assert records["8"]["state"] == "FUTURE_STATE" and records["8"]["restarts"] is None
    assert sorted(records) == ["7", "8", "9_1", "9_2", "9_3", "9_5"] and records["9_1"]["time_limit_s"] == 300
    sacct = "1|1|COMPLETED|0:0\n2|2|FAILED|1:0|00:00:01|UNLIMITED|n1|None|x|y|z|name|with|bars\n3.batch|3|X|" \
            + "|" * 10
    records, _, bad = parse_sacct(sacct)
    assert bad == 1 and list(records) == ["2"] and records["2"]["slurm_name"] == "name|with|bars"


def test_words_durations_states_arrays():
    assert explain_reason("Priority") == "waiting behind higher-priority jobs"
    assert explain_reason("(JobHeldUser)").startswith("held by you")
    assert explain_reason("QOSMaxGRESPerUser") == "the QOS's limit on gres per user is reached"
    assert explain_reason("AssocGrpCPURunMinutesLimit") == "your account's limit on cpu run minutes is reached"
    assert explain_reason("SomethingNew") == "SomethingNew" and explain_reason("None") == ""
    assert [parse_duration(t) for t in ("1-00:00:00", "02:03:04", "3:04", "5", "1-02", "1-02:03", "UNLIMITED",
                                        "Partition_Limit")] == [86400, 7384, 184, 300, 93600, 93780, None, None]
    assert [normalize_state(s) for s in ("CANCELLED by 0", "PD", "completed", "", "RUNNING+")] \
        == ["CANCELLED", "PENDING", "COMPLETED", "UNKNOWN", "RUNNING"]
    assert expand_array("[0-6:3,10]") == [0, 3, 6, 10] and expand_array("x") is None


def test_finished_state_inferred_from_slurmstepd_lines_and_run_json():
    logs = FIXTURES / "logs"
    assert infer_state({}, [logs / "cancelled_running.out"])[0] == "CANCELLED"
    assert infer_state({"status": "running"}, [None, logs / "timeout.out"])[0] == "TIMEOUT"
    assert infer_state({"status": "completed"}, [logs / "completed.out"])[0] == "COMPLETED"
    assert infer_state({"status": "failed"}, [logs / "failed.out"])[0] == "FAILED"
    assert infer_state({"status": "interrupted"}, [])[0] == "INTERRUPTED"
    state, words = infer_state({}, [logs / "missing.out"])
    assert state == "UNKNOWN" and "never started" in words


# ---------------------------------------------------------------- the collector on replayed output


def write_journal(folder: Path, submission: str, jobs: list[dict], *, sweep: dict | None = None,
                  created: float | None = None) -> None:
    """A journal file in the documented format (what launch/records/journal.py's record() writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"submission_id": submission, "created": created or time.time(), "profile": "local-slurm",
            "kind": "sweep" if sweep is not None else "job", "sweep": sweep,
            "jobs": [{"cell": None, "stdout": None, "stderr": None, **job} for job in jobs]}
    (folder / f"{submission}.json").write_text(json.dumps(data))


class Replay:
    """Answers the collector's Slurm calls with captured output and counts them."""

    def __init__(self, sacct: str | Exception | None = None, squeue: str = "squeue_active.txt"):
        self.calls: list[str] = []
        self.sacct = (FIXTURES / "sacct.txt").read_text() if sacct is None else sacct
        self.squeue: str | Exception = (FIXTURES / squeue).read_text()

    def __call__(self, argv: list[str]) -> str:
        self.calls.append(argv[0])
        answer = self.squeue if argv[0] == "squeue" else self.sacct
        if isinstance(answer, Exception):
            raise answer
        return answer


def fixture_journal(folder: Path) -> None:
    jobs = [{"job_id": IDS[k], "name": k, "run_dir": f"/nonexistent/{k}"} for k in RECORDED["expected"]
            if not k.startswith("array")]
    jobs[1]["stderr"] = str(FIXTURES / "logs" / "failed.out")
    write_journal(folder, "s1", jobs)
    cells = [{"job_id": f"{IDS['array_mixed']}_{i}", "name": f"cell{i}", "run_dir": f"/nonexistent/m{i}",
              "cell": {"train.learning_rate": 10.0 ** -i}} for i in range(4)]
    cells += [{"job_id": f"{IDS['array_held']}_{i}", "name": f"held{i}", "run_dir": f"/nonexistent/h{i}"}
              for i in range(10)]
    write_journal(folder, "s2", cells, sweep={"name": "lr", "file": "sweeps/lr.yaml"})


def test_collector_one_squeue_one_sacct_then_finished_jobs_are_cached(tmp_path):
    fixture_journal(tmp_path / "journal")
    replay = Replay()
    collector = Collector(journal_dir=tmp_path / "journal", run=replay, accounting="auto")
    snapshot = collector.refresh()
    assert replay.calls == ["squeue", "sacct"] and snapshot.calls == {"squeue": 1, "sacct": 1}
    by_name = {row.name: row for row in snapshot.rows}
    for key, state in RECORDED["expected"].items():
        if not key.startswith("array"):
            assert by_name[key].state == state, key
    assert by_name["held"].reason_text.startswith("held by you")
    assert by_name["requeued"].restarts == 1
    assert [by_name[f"cell{i}"].state for i in range(4)] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
    assert {by_name[f"held{i}"].state for i in range(10)} == {"PENDING"}
    assert by_name["failed"].log_tail == ["RuntimeError: loss is nan"]
    [sweep] = snapshot.sweeps
    assert (sweep.name, sweep.total, sweep.counts) == ("lr", 14, {"COMPLETED": 2, "FAILED": 2, "PENDING": 10})
    collector.refresh()  # the finished jobs are known now, the others are queued: no sacct call
    assert replay.calls[2:] == ["squeue"]


def test_collector_squeue_all_states_needs_no_sacct_for_recent_endings(tmp_path):
    fixture_journal(tmp_path / "journal")
    replay = Replay(squeue="squeue.txt")
    snapshot = Collector(journal_dir=tmp_path / "journal", run=replay).refresh()
    assert replay.calls == ["squeue"]
    by_name = {row.name: row for row in snapshot.rows}
    assert (by_name["failed"].state, by_name["timeout"].state) == ("FAILED", "TIMEOUT")
    assert by_name["failed"].reason_text == "exited with a non-zero code"


def test_collector_without_accounting_makes_no_sacct_call(tmp_path, monkeypatch):
    fixture_journal(tmp_path / "journal")
    replay = Replay()
    monkeypatch.setenv("MEMORYMODELS_SACCT", "off")
    snapshot = Collector(journal_dir=tmp_path / "journal", run=replay).refresh()
    assert replay.calls == ["squeue"] and not snapshot.accounting
    by_name = {row.name: row for row in snapshot.rows}
    assert by_name["running"].state == "RUNNING"
    assert by_name["completed"].state == "UNKNOWN" and by_name["completed"].source == "rundir"


def test_collector_falls_back_when_sacct_fails_and_marks_stale_when_squeue_fails(tmp_path):
    fixture_journal(tmp_path / "journal")
    replay = Replay(sacct=SlurmError("sacct exited with 1: sacct: error: Slurm accounting storage is disabled"))
    collector = Collector(journal_dir=tmp_path / "journal", run=replay)
    first = collector.refresh()
    assert not first.accounting and any("accounting storage is disabled" in w for w in first.warnings)
    assert collector.refresh().calls == {"squeue": 1, "sacct": 0}  # not asked again for a minute
    replay.squeue = SlurmError("squeue: no answer from the controller within 20 s")
    stale = collector.refresh()
    assert stale.stale and "no answer" in stale.error
    assert [r.state for r in stale.rows] == [r.state for r in first.rows]  # the last good rows
    fresh = Collector(journal_dir=tmp_path / "journal", run=replay).refresh()  # no good data yet: states unknown
    assert fresh.stale and {r.state for r in fresh.rows} == {"UNKNOWN"} and len(fresh.rows) == len(first.rows)


def test_journal_unreadable_file_is_a_warning_and_local_jobs_are_recognised(tmp_path):
    folder = tmp_path / "journal"
    write_journal(folder, "a", [{"job_id": "4242", "name": "here", "run_dir": "runs/x", "executor": "local"}])
    (folder / "broken.json").write_text("{")
    jobs, warnings = read_journal(folder)
    assert len(jobs) == 1 and not jobs[0]["slurm"] and jobs[0]["pid"] == 4242
    assert Path(jobs[0]["run_dir"]).is_absolute()
    assert len(warnings) == 1 and "broken.json" in warnings[0] and "fix or remove" in warnings[0]


def test_local_runs_show_from_their_run_directory_and_process(tmp_path):
    """Runs of the ``local`` profile (submitit's local executor: the job id is the process id)."""
    import os

    now = time.time()
    for name, status in (("alive", "running"), ("gone", "running"), ("done", "completed"), ("stuck", "running")):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"status": status, "config": {"train": {"max_steps": 100}}}))
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0, "tokens_per_s": 900.0,
                                                               "time": now - 40 + s}) + "\n" for s in (10, 30)))
    old = now - 3600
    os.utime(tmp_path / "runs" / "stuck" / "run.json", (old, old))
    os.utime(tmp_path / "runs" / "stuck" / "metrics.jsonl", (old, old))
    dead = subprocess.Popen(["true"])
    dead.wait()
    write_journal(tmp_path / "journal", "local", [
        {"job_id": str(os.getpid()), "name": "alive", "run_dir": str(tmp_path / "runs" / "alive"), "executor": "local"},
        {"job_id": str(dead.pid), "name": "gone", "run_dir": str(tmp_path / "runs" / "gone"), "executor": "local"},
        {"job_id": "1", "name": "done", "run_dir": str(tmp_path / "runs" / "done"), "executor": "local"},
        {"job_id": str(os.getpid()), "name": "stuck", "run_dir": str(tmp_path / "runs" / "stuck"),
         "executor": "local"}])
    replay = Replay()
    rows = {r.name: r for r in Collector(journal_dir=tmp_path / "journal", run=replay).refresh().rows}
    assert replay.calls == ["squeue"]  # local jobs are never asked about in sacct
    alive = rows["alive"]
    assert (alive.state, alive.source, alive.step, alive.max_steps, alive.loss) == ("RUNNING", "local", 30, 100, 3.0)
    assert alive.eta_s == pytest.approx(70, abs=1) and not alive.eta_past_limit  # 1 step/s, no time limit
    assert rows["gone"].state == "UNKNOWN" and "is gone" in rows["gone"].reason_text
    assert rows["done"].state == "COMPLETED"
    assert rows["stuck"].reason_text.startswith("no new metrics for 60 min: hung?")


def test_dashboards_share_one_squeue_answer_per_interval(tmp_path):
    fixture_journal(tmp_path / "journal")
    replay = Replay()
    shared = dict(journal_dir=tmp_path / "journal", run=replay, shared_cache=tmp_path / "cache", min_interval=0.5)
    first, second = Collector(**shared), Collector(**shared)
    rows = [(r.job_id, r.state) for r in first.refresh().rows]
    snapshot = second.refresh()
    assert replay.calls == ["squeue", "sacct", "sacct"]  # endings are remembered per collector, squeue is shared
    assert snapshot.calls == {"squeue": 0, "sacct": 1, "shared": 1}
    assert [(r.job_id, r.state) for r in snapshot.rows] == rows
    time.sleep(0.6)
    second.refresh()
    assert replay.calls[-1] == "squeue"
    second.forget_shared()
    first.refresh()
    assert replay.calls.count("squeue") == 3
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary file left behind


def test_squeue_command_is_one_call_expanding_arrays():
    argv = squeue_command("me")
    assert argv[:3] == ["squeue", "-r", "-h"] and "-O" in argv and argv[argv.index("-u") + 1] == "me"


# ---------------------------------------------------------------- the collector against the real local Slurm

JOB_SCRIPT = """#!/bin/bash
# What the trainer leaves behind, in small: run.json with a status, a metrics line; a failure says why on stderr.
run_dir=$1 status=$2 code=$3
if [ -n "$SLURM_ARRAY_TASK_ID" ]; then
  run_dir=$run_dir/$SLURM_ARRAY_TASK_ID
  if [ $((SLURM_ARRAY_TASK_ID % 2)) = 0 ]; then status=completed code=0; else status=failed code=1; fi
fi
mkdir -p "$run_dir"
eval_loss=2.$((75 + ${SLURM_ARRAY_TASK_ID:-0}))
echo "{\\"step\\": 20, \\"loss\\": 2.5, \\"eval_loss\\": $eval_loss, \\"tokens_per_s\\": 1000, \\"time\\": $(date +%s)}" \\
  >> "$run_dir/metrics.jsonl"
echo "{\\"status\\": \\"$status\\", \\"config\\": {\\"train\\": {\\"max_steps\\": 20}}}" > "$run_dir/run.json.tmp"
mv "$run_dir/run.json.tmp" "$run_dir/run.json"
if [ "$status" = failed ]; then echo "RuntimeError: loss is nan" >&2; fi
exit $code
"""


def _slurm(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout.strip()


def _wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def _squeue_state(job_id: str) -> str:
    return _slurm("squeue", "-h", "-t", "all", "-o", "%T", "-j", job_id)


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = _slurm("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids))
    return dict(line.split("|", 1) for line in out.splitlines())


def submit_every_kind(root: Path, accounting: bool = True) -> tuple[dict[str, str], Path]:
    """Submit one job of each kind (and two arrays) to the cluster in SLURM_CONF; write their journal under root.

    Returns ({kind: job id}, journal folder). The running ones sleep; callers cancel everything.
    """
    script = root / "job.sh"
    script.write_text(JOB_SCRIPT)
    logs, runs = root / "logs", root / "runs"
    logs.mkdir()
    ids: dict[str, str] = {}

    def sbatch(kind: str, *args: str, wrap: str | None = None, run: tuple[str, str, str] = ()) -> None:
        out = ["-o", str(logs / f"{kind}.out"), "-e", str(logs / f"{kind}.err")]
        command = ["--wrap", wrap] if wrap else [str(script), str(runs / kind), *run]
        ids[kind] = _slurm("sbatch", "--parsable", "-J", f"mm-status-{kind}", *out, *args, *command).split(";")[0]

    try:
        sbatch("completed", run=("completed", "0"))
        sbatch("failed", run=("failed", "3"))
        sbatch("running", "-t", "2", wrap="sleep 300")
        sbatch("cancelled_running", wrap="sleep 300")
        sbatch("requeued", "--requeue", wrap="sleep 300")
        sbatch("held", "--hold", wrap="true")
        sbatch("begin_later", "--begin=now+1hour", wrap="true")
        sbatch("cancelled_pending", "--hold", wrap="true")
        sbatch("array", "--array=0-3", "-o", str(logs / "array_%a.out"), "-e", str(logs / "array_%a.err"),
               run=("from-task-id", "0"))
        sbatch("array_held", "--hold", "--array=0-4", wrap="true")
        for kind in ("running", "cancelled_running", "requeued"):
            _wait(f"{kind} starts", lambda k=kind: _squeue_state(ids[k]) == "RUNNING")
        _slurm("scancel", ids["cancelled_running"], ids["cancelled_pending"])
        _slurm("scontrol", "requeue", ids["requeued"])
        _slurm("scontrol", "hold", ids["requeued"])  # stays pending, restart count 1
        ended = [ids[k] for k in ("completed", "failed", "cancelled_running")] + [f"{ids['array']}_{i}"
                                                                                  for i in range(4)]
        _wait("jobs end", lambda: all(_squeue_state(j) in ("COMPLETED", "FAILED", "CANCELLED") for j in ended)
              and _squeue_state(ids["requeued"]) == "PENDING")
        if accounting:  # the accounting record of a task lags its end by a moment
            _wait("sacct records", lambda: set(ended) <= set(_sacct_states(ended)))
    except BaseException:
        subprocess.run(["scancel", *ids.values()], capture_output=True)
        raise
    # The running job's trainer: 1 step/s, 980 steps to go, 2-minute limit: it will not finish in this allocation.
    now = time.time()
    (runs / "running").mkdir(parents=True)
    (runs / "running" / "run.json").write_text(
        json.dumps({"status": "running", "config": {"train": {"max_steps": 1000}}}))
    (runs / "running" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 4.0 - s / 100, "tokens_per_s": 5000.0, "time": now - 20 + s}) + "\n"
        for s in (10, 20)))
    journal = root / "journal"
    singles = [k for k in ids if not k.startswith("array")]
    write_journal(journal, "a-jobs", [{"job_id": ids[k], "name": k, "run_dir": str(runs / k),
                                      "stdout": str(logs / f"{k}.out"), "stderr": str(logs / f"{k}.err")}
                                     for k in singles], created=now - 2)
    cells = [{"job_id": f"{ids['array']}_{i}", "name": f"cell{i}", "run_dir": str(runs / "array" / str(i)),
              "cell": {"train.learning_rate": [1e-3, 3e-3, 1e-2, 3e-2][i]}, "stdout": str(logs / f"array_{i}.out"),
              "stderr": str(logs / f"array_{i}.err")} for i in range(4)]
    cells += [{"job_id": f"{ids['array_held']}_{i}", "name": f"held{i}", "run_dir": str(runs / "h" / str(i))}
              for i in range(5)]
    write_journal(journal, "b-sweep", cells, sweep={"name": "lr", "file": "sweeps/lr.yaml"}, created=now - 1)
    return ids, journal


@pytest.fixture(scope="module")
def live(slurm_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("status-live")
    ids, journal = submit_every_kind(root)
    yield ids, journal
    subprocess.run(["scancel", *ids.values()], capture_output=True)


def check_rows(snapshot, *, inferred: bool = False) -> dict:
    rows = {row.name: row for row in snapshot.rows}
    assert (rows["running"].state, rows["running"].node is not None) == ("RUNNING", True)
    assert rows["running"].eta_s == pytest.approx(980, abs=30) and rows["running"].eta_past_limit
    assert rows["running"].time_limit_s == 120
    assert (rows["held"].state, rows["held"].reason_text) == ("PENDING", "held by you (scontrol release JOBID)")
    assert rows["begin_later"].reason_text == "its start time (--begin) is not reached yet"
    assert (rows["requeued"].state, rows["requeued"].restarts) == ("PENDING", 1)
    assert (rows["completed"].state, rows["completed"].step, rows["completed"].max_steps) == ("COMPLETED", 20, 20)
    assert rows["failed"].state == "FAILED" and rows["failed"].log_tail == ["RuntimeError: loss is nan"]
    assert rows["cancelled_running"].state == "CANCELLED"
    assert rows["cancelled_pending"].state == ("UNKNOWN" if inferred else "CANCELLED")
    assert [rows[f"cell{i}"].state for i in range(4)] == ["COMPLETED", "FAILED", "COMPLETED", "FAILED"]
    assert {rows[f"held{i}"].state for i in range(5)} == {"PENDING"}
    [sweep] = snapshot.sweeps
    assert sweep.counts == {"COMPLETED": 2, "FAILED": 2, "PENDING": 5}
    assert (sweep.best_eval_loss, sweep.best_cell) == (2.75, {"train.learning_rate": 1e-3})
    return rows


@pytest.mark.slurm
def test_live_every_kind_of_job_one_squeue_one_sacct_call(live):
    ids, journal = live
    collector = Collector(journal_dir=journal)
    snapshot = collector.refresh()
    assert snapshot.calls == {"squeue": 1, "sacct": 1} and snapshot.accounting and not snapshot.stale
    rows = check_rows(snapshot)
    assert rows["failed"].source == "sacct" and rows["failed"].exit_code == "3:0"
    assert rows["running"].source == "squeue"
    assert collector.refresh().calls == {"squeue": 1, "sacct": 0}  # endings are final: asked once


@pytest.mark.slurm
def test_live_recent_endings_from_squeue_alone(live):
    ids, journal = live
    snapshot = Collector(journal_dir=journal, squeue_states="all", accounting="off").refresh()
    assert snapshot.calls == {"squeue": 1, "sacct": 0}  # they ended within MinJobAge: squeue -t all has them
    rows = check_rows(snapshot)
    assert rows["failed"].source == "squeue"


@pytest.mark.slurm
def test_live_without_sacct_endings_come_from_run_dirs_and_logs(live, monkeypatch):
    ids, journal = live
    monkeypatch.setenv("MEMORYMODELS_SACCT", "off")
    snapshot = Collector(journal_dir=journal, squeue_states="pending,running,completing").refresh()
    assert snapshot.calls == {"squeue": 1, "sacct": 0} and not snapshot.accounting
    rows = check_rows(snapshot, inferred=True)
    assert rows["cancelled_running"].source == "rundir"  # from the slurmstepd line in its log
    assert "never started" in rows["cancelled_pending"].reason_text


@pytest.mark.slurm
def test_live_cluster_without_accounting(slurm_cluster, tmp_path_factory, monkeypatch):
    """A real cluster with accounting off: its own small cluster beside the shared one (a private state
    directory, about a second to start), so the shared cluster's accounting is never switched off under others."""
    import tempfile

    from launch.localcluster import cluster as local_cluster

    state = Path(tempfile.mkdtemp(prefix="mm-noacct-"))
    state.chmod(0o755)  # munged insists that every directory above its socket be searchable
    try:
        layout = local_cluster.up(accounting=False, state=state)
        monkeypatch.setenv("SLURM_CONF", str(layout.conf))
        with pytest.raises(AssertionError, match="accounting storage is disabled"):
            _slurm("sacct", "-X", "-n")
        ids, journal = submit_every_kind(tmp_path_factory.mktemp("status-noacct"), accounting=False)
        try:
            collector = Collector(journal_dir=journal, timeout=3)
            snapshot = collector.refresh()
            assert snapshot.calls == {"squeue": 1, "sacct": 1} and not snapshot.accounting
            assert any("accounting storage is disabled" in w for w in snapshot.warnings)
            check_rows(snapshot, inferred=True)  # this time from run directories and logs
            again = collector.refresh()  # sacct is not asked again for a minute; squeue now lists recent endings
            assert again.calls == {"squeue": 1, "sacct": 0}
            assert check_rows(again)["cancelled_pending"].source == "squeue"
        finally:
            subprocess.run(["scancel", *ids.values()], capture_output=True)
        local_cluster.down(state=state)  # the controller stops answering: the last good rows, marked stale
        stale = collector.refresh()
        assert stale.stale and "no answer from the controller within 3 s" in stale.error
        assert stale.rows == collector.last.rows and stale.time == collector.last.time
    finally:
        local_cluster.down(state=state)
        import shutil

        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slurm
def test_live_all_jobs_of_the_user_without_journal(live, tmp_path):
    from launch.slurm.client import run_slurm

    ids, _ = live
    argvs: list[list[str]] = []

    def run(argv: list[str]) -> str:
        argvs.append(argv)
        return run_slurm(argv)

    collector = Collector(journal_dir=tmp_path / "empty", all_jobs=True, run=run)
    rows = {row.job_id: row for row in collector.refresh().rows}
    assert (rows[ids["failed"]].state, rows[ids["running"]].state) == ("FAILED", "RUNNING")
    assert rows[ids["held"]].name == "mm-status-held" and rows[f"{ids['array_held']}_4"].state == "PENDING"
    assert [a[0] for a in argvs] == ["squeue", "sacct"] and argvs[1][argvs[1].index("-S") + 1] == "now-1days"
    assert argvs[0][argvs[0].index("-t") + 1] == "all"  # recent endings come from squeue between sacct calls
    collector.refresh()
    assert [a[0] for a in argvs] == ["squeue", "sacct", "squeue"]  # sacct at most once a minute
    collector._sacct_asked -= 60
    collector.refresh()  # the next sacct asks only about what changed since the last answer
    assert argvs[4][0] == "sacct" and argvs[4][argvs[4].index("-S") + 1].startswith(time.strftime("%Y-"))
