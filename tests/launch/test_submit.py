"""Submission: journal, preflight on recorded and live cluster output, worker discovery, and real jobs that train,
get interrupted, requeue and finish, on the local Slurm cluster and with submitit's local executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.records import journal
from memorymodels.configuration import ConfigError
from launch.slurm.cluster import ClusterInfo, parse_config, parse_nodes, parse_partitions
from launch.slurm.client import SlurmError, explain, run_slurm
from launch.submission.preflight import check_plan
from memorymodels.attempts import (attempts, describe_attempts, goodput, read_events, record_event, record_reconciled,
                                   unsettled)
from launch.node.task import worker_pids
from launch.planning.plan import plan_job
from launch.planning.profiles import REPO_ROOT, load_profile
from tests.launch.helpers import job_line, last_step, release_requeued, run_json, wait_until

HERE = Path(__file__).parent
SCONTROL = HERE / "recorded" / "scontrol"
DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private state directory (journal) sharing the project's cache of prepared data (the jobs inherit it)."""
    from memorymodels.experiment import state_dir

    cache = state_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "cache").symlink_to(cache.resolve())
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


# ---- journal ------------------------------------------------------------------------------------------------------


def test_journal_records_and_loads_in_order(state):
    first = journal.record(profile="local-slurm", jobs=[{"job_id": 12, "name": "a", "run_dir": "/r/a",
                                                         "stdout": "/r/a/o", "stderr": "/r/a/e"}])
    second = journal.record(profile="v100x8", kind="sweep", sweep={"name": "s"}, created=first["created"] + 1,
                            jobs=[{"job_id": "13_0", "name": "s", "run_dir": "/r/s0", "cell": {"model.kernel": 2}}])
    files = sorted((state / "journal").glob("*.json"))
    assert [f.stem for f in files] == sorted([first["submission_id"], second["submission_id"]])
    loaded = journal.load_all()
    assert [s["submission_id"] for s in loaded] == [first["submission_id"], second["submission_id"]]
    assert loaded[0]["jobs"][0] == {"job_id": "12", "name": "a", "run_dir": "/r/a", "cell": None,
                                    "stdout": "/r/a/o", "stderr": "/r/a/e"}
    assert loaded[1]["kind"] == "sweep" and loaded[1]["jobs"][0]["cell"] == {"model.kernel": 2}
    assert journal.find_job("13")[1]["run_dir"] == "/r/s0" and journal.find_job("99") is None
    with pytest.raises(FileExistsError):
        journal.record(profile="x", jobs=[{"job_id": 1, "run_dir": "/r"}], submission_id=first["submission_id"])
    with pytest.raises(ValueError, match="lacks job_id"):
        journal.record(profile="x", jobs=[{"run_dir": "/r"}])
    (state / "journal" / "broken.json").write_text("{")
    assert len(journal.load_all()) == 2  # skipped with a warning


# ---- cluster_info: parsers on output captured from the real local cluster, then the checks ------------------------


def recorded_info() -> ClusterInfo:
    return ClusterInfo(partitions=parse_partitions((SCONTROL / "show_partition.txt").read_text()),
                       nodes=parse_nodes((SCONTROL / "show_node.txt").read_text()),
                       max_array_size=parse_config((SCONTROL / "show_config.txt").read_text())["MaxArraySize"])


def test_parsers_read_recorded_scontrol_output():
    info = recorded_info()
    assert list(info.partitions) == ["debug", "multinode"] and info.partitions["debug"].default
    assert info.partitions["debug"].max_time_min is None and info.partitions["debug"].state == "UP"
    assert info.partitions["multinode"].nodes == ["node1", "node2"] and not info.partitions["multinode"].default
    assert sorted(info.nodes) == ["node1", "node2", "vm"]
    vm = info.nodes["vm"]
    assert vm.cpus == 16 and vm.memory_mb > 1000 and vm.gpus == 0 and vm.partitions == ["debug"]
    assert info.nodes["node1"].cpus == 4 and info.nodes["node1"].partitions == ["multinode"]
    assert info.max_array_size == 20001


def test_gres_and_hostlists():
    text = ("NodeName=gpu7 CPUTot=40 RealMemory=512000 Gres=gpu:v100:8(S:0-1) AvailableFeatures=v100,e5 "
            "State=IDLE Partitions=gpu\n")
    node = parse_nodes(text)["gpu7"]
    assert (node.gpus, node.gpu_type, node.features) == (8, "V100", ["v100", "e5"])
    part = parse_partitions("PartitionName=gpu Nodes=gpu[1-3,7] MaxTime=1-00:00:00 Default=NO State=UP\n")["gpu"]
    assert part.nodes == ["gpu1", "gpu2", "gpu3", "gpu7"] and part.max_time_min == 1440


def test_check_plan_fits_and_names_what_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path))
    info = recorded_info()
    fits = plan_job(load_profile("local-slurm", [f"checkpoint_root={tmp_path}"]), DEBUG)
    assert check_plan(fits, info) == []
    missing = plan_job(load_profile("local-slurm", [f"checkpoint_root={tmp_path}", "partition=gpu"]), DEBUG)
    assert check_plan(missing, info) == [
        "cluster_profiles/local-slurm.yaml (with --set profile.checkpoint_root=%s profile.partition=gpu): "
        "'partition: gpu' does not exist on this cluster; partitions: debug, multinode" % tmp_path]
    gpus = plan_job(load_profile("v100x8", ["partition=debug", "constraint=null"]), DEBUG)
    (problem,) = check_plan(gpus, info)
    assert "one node must offer 8 GPU(s) V100" in problem and "no node of partition 'debug' does" in problem
    info.partitions["debug"].max_time_min = 20
    (problem,) = check_plan(fits, info, array_size=30000)[:1]
    assert "'time_limit: 30m' exceeds partition 'debug''s limit 00:20:00" in problem
    assert "exceeds this cluster's MaxArraySize 20001" in check_plan(fits, info, array_size=30000)[-1]


def test_slurm_calls_fail_in_one_line_naming_the_command_with_a_hint(tmp_path):
    with pytest.raises(SlurmError, match=r"^'no-such-sbatch' is not installed here$") as missing:
        run_slurm(["no-such-sbatch", "--parsable"])
    assert "python launch/local_cluster.py up" in missing.value.hint
    failing = [sys.executable, "-c", "import sys; sys.exit('squeue: error: Unable to contact slurm controller')"]
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    with pytest.raises(SlurmError, match=r"' exited with 1: squeue: error: Unable to contact slurm controller$") as err:
        run_slurm(failing, env=dict(os.environ, SLURM_CONF=str(conf)))
    assert explain(err.value).splitlines()[1].startswith(f"SLURM_CONF={conf}: for the project's development cluster run")
    start = time.monotonic()
    with pytest.raises(SlurmError, match=r"^SLURM_CONF=/nonexistent/slurm.conf: no such file$"):
        run_slurm(["scontrol", "show", "config"], env=dict(os.environ, SLURM_CONF="/nonexistent/slurm.conf"))
    assert time.monotonic() - start < 1, "a missing slurm.conf must not wait for Slurm's minute of retries"


def test_preflight_names_a_missing_slurm_conf_and_submits_nothing(state, tmp_path, capsys):
    from tests.launch.test_plan import run_main

    out = run_main(capsys, "--profile", "local-slurm", "--experiment", str(DEBUG), "--set",
                   f"profile.checkpoint_root={tmp_path}", "--set", "profile.slurm_conf=/nonexistent/slurm.conf")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "preflight: SLURM_CONF=/nonexistent/slurm.conf: no such file\npoint the profile's slurm_conf" in out.stderr
    assert not (state / "journal").exists() or not list((state / "journal").glob("*.json"))


# ---- what runs inside the job: worker discovery and the attempt history -------------------------------------------


def test_worker_pids_finds_the_training_processes_not_their_children(tmp_path):
    # launcher (no LOCAL_RANK) -> worker (LOCAL_RANK=0) -> dataloader-like child (inherits LOCAL_RANK)
    script = ("import os, subprocess, sys, time\n"
              "if len(sys.argv) == 1:\n"
              "    p = subprocess.Popen([sys.executable, __file__, 'w'], env={**os.environ, 'LOCAL_RANK': '0'})\n"
              "elif sys.argv[1] == 'w':\n"
              "    p = subprocess.Popen([sys.executable, __file__, 'd'])\n"
              "time.sleep(30)\n")
    path = tmp_path / "tree.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_RANK"}
    root = subprocess.Popen([sys.executable, str(path)], env=env)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            found = worker_pids(root.pid)
            if found != [root.pid]:
                break
            time.sleep(0.1)
        (worker,) = found
        assert worker != root.pid
        assert Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(root.pid)
    finally:
        subprocess.run(["pkill", "-P", str(root.pid)], check=False)  # the tree this test started
        root.kill()
        root.wait()


def test_attempts_tell_apart_preemption_timeout_node_failure_and_errors(tmp_path):
    record_event(tmp_path, "start", job_id="7", restart_count=0, host="n1")
    record_event(tmp_path, "signal", reason="preemption", signal="SIGUSR2")
    record_event(tmp_path, "exit", code=1, outcome="stopped", step=30)
    record_event(tmp_path, "requeue", reason="preemption")
    record_event(tmp_path, "start", job_id="7", restart_count=1, host="n2")  # never ends: node failure
    record_event(tmp_path, "start", job_id="7", restart_count=2, host="n1")
    record_event(tmp_path, "signal", reason="timeout", signal="SIGUSR2")
    record_event(tmp_path, "exit", code=1, outcome="stopped", step=60)
    record_event(tmp_path, "requeue", reason="timeout")
    record_event(tmp_path, "start", job_id="7", restart_count=3, host="n1")
    record_event(tmp_path, "exit", code=1, outcome="failed", step=61, log_tail="ValueError: boom")
    with open(tmp_path / "launch" / "events.jsonl", "a") as f:
        f.write('{"event": "start", "job_id": "8", "tim')  # a line cut by a dying node is skipped
    outcomes = [a["outcome"] for a in attempts(tmp_path)]
    assert outcomes == ["requeued-preemption", "lost", "requeued-timeout", "failed"]
    assert "ended without a word (killed, or its node failed; no accounting" in describe_attempts(tmp_path)
    # Slurm's accounting settles the silent attempt: its state, and the allocation it held
    record_event(tmp_path, "reconciled", job_id="7", restart_count=1, state="NODE_FAIL", start=100.0, end=160.0,
                 nodes=1, source="sacct")
    history = attempts(tmp_path)
    assert [a["outcome"] for a in history] == ["requeued-preemption", "node-failure", "requeued-timeout", "failed"]
    assert (history[1]["start"], history[1]["end"]) == (100.0, 160.0)
    text = describe_attempts(tmp_path)
    assert "was preempted: checkpointed and requeued at step 30" in text
    assert "ended with its node (Slurm: NODE_FAIL)" in text
    assert "hit its time limit: checkpointed and requeued at step 60" in text
    assert "failed (program error) at step 61 (exit 1)" in text and "ValueError: boom" in text
    assert len(read_events(tmp_path)) == 12


SETTLED = [  # what the attempt recorded, what Slurm's accounting says -> the outcome the history keeps
    ({"exit": "interrupted-outside"}, "CANCELLED", "cancelled"),
    ({"exit": "completed"}, "COMPLETED", "completed"),
    ({"exit": "requeued"}, "REQUEUED", "requeued-preemption"),  # the attempt knew better: it asked for the requeue
    ({}, "CANCELLED", "cancelled"),  # killed before the launcher could write a word
    ({}, "TIMEOUT", "timeout"),
    ({}, "PREEMPTED", "preempted"),
    ({}, "OUT_OF_MEMORY", "failed"),
    ({"trainer_end": "interrupted"}, "CANCELLED", "cancelled"),  # scancel: SIGTERM, the trainer saved and said so
    ({"trainer_end": "interrupted"}, None, "interrupted-outside"),  # no accounting: what the trainer said
]


@pytest.mark.parametrize("recorded, state, outcome", SETTLED)
def test_slurms_accounting_settles_what_an_attempt_could_not_say(tmp_path, recorded, state, outcome):
    record_event(tmp_path, "start", job_id="9", restart_count=0, host="n1", cluster="slurm")
    record_event(tmp_path, "trainer-start", job_id="9", restart_count=0, host="n1")
    if "trainer_end" in recorded:
        record_event(tmp_path, "trainer-end", status=recorded["trainer_end"], step=12)
    if recorded.get("exit") == "requeued":
        record_event(tmp_path, "exit", code=0, outcome="stopped", step=12)
        record_event(tmp_path, "requeue", reason="preemption")
    elif "exit" in recorded:
        record_event(tmp_path, "exit", code=0, outcome=recorded["exit"], step=12)
    record_event(tmp_path, "start", job_id="10", restart_count=0, host="n1", cluster="slurm")  # a resubmission
    history = attempts(tmp_path)
    assert unsettled(history) == [("9", 0), ("10", 0)]
    accounting = {("9", 0): {"state": state, "start": 1000.0, "end": 1100.0, "nodes": 2},
                  ("10", 0): {"state": "RUNNING", "start": 1200.0, "end": None, "nodes": 2}} if state else {}
    assert record_reconciled(tmp_path, history, accounting) == (1 if state else 0)
    first, second = attempts(tmp_path)
    assert first["outcome"] == outcome and second["outcome"] == "running"
    if state:  # the node time is Slurm's allocation: 2 nodes x 100 s, counted though the attempt was cancelled
        assert (first["start"], first["end"], first["nodes"]) == (1000.0, 1100.0, 2)
        assert goodput([first], 50.0)["allocated_node_s"] == 200.0
        assert unsettled(attempts(tmp_path)) == [("10", 0)]  # settled once; the running job stays open


def test_goodput_never_exceeds_one_and_counts_every_attempt(tmp_path):
    """A cancelled attempt's allocation is counted: before, an attempt without an end held no node time at all
    (goodput 412 % for a cancelled and resumed sweep cell)."""
    record_event(tmp_path, "start", job_id="1", restart_count=0, cluster="slurm", nodes=["a"], allocated=0.0)
    record_event(tmp_path, "trainer-start", job_id="1", restart_count=0)
    record_event(tmp_path, "start", job_id="2", restart_count=0, cluster="slurm", nodes=["a"], allocated=100.0)
    record_event(tmp_path, "exit", code=0, outcome="completed", step=10)
    history = attempts(tmp_path)
    history[-1]["end"] = 130.0
    lost = goodput(history, 100.0)  # the first attempt's end is unknown: its last word bounds it (0 s)
    assert lost["ratio"] == 1.0
    record_event(tmp_path, "reconciled", job_id="1", restart_count=0, state="CANCELLED", start=0.0, end=70.0,
                 nodes=1)
    history = attempts(tmp_path)
    history[-1]["end"] = 130.0
    assert goodput(history, 71.8) == {"allocated_node_s": 100.0, "kept_node_s": 71.8, "ratio": 0.718,
                                      "attempts": 2}


def test_requeueing_stops_afterattempts_without_progress(tmp_path):
    from launch.node.task import MAX_ATTEMPTS_WITHOUT_PROGRESS
    from memorymodels.attempts import attempts_without_progress

    for step in (None, 0, 0):  # a time limit shorter than the startup: stopped before the first step, again and again
        record_event(tmp_path, "start", job_id="9")
        record_event(tmp_path, "signal", reason="timeout")
        record_event(tmp_path, "exit", code=1, outcome="stopped", step=step)
        record_event(tmp_path, "requeue", reason="timeout")
    record_event(tmp_path, "start", job_id="9")
    record_event(tmp_path, "signal", reason="timeout")
    assert attempts_without_progress(tmp_path, None) == 3 == MAX_ATTEMPTS_WITHOUT_PROGRESS
    assert attempts_without_progress(tmp_path, 5) == 0  # this attempt trained: requeue it
    record_event(tmp_path, "exit", code=1, outcome="no-progress", step=0)
    assert "without training a step: not requeued (raise time_limit)" in describe_attempts(tmp_path)


# ---- real jobs ----------------------------------------------------------------------------------------------------


def submit_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/submit.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


@pytest.mark.slurm
def test_preflight_stops_a_job_the_cluster_cannot_run(slurm_cluster, state, tmp_path, capsys):
    from tests.launch.test_plan import run_main

    out = run_main(capsys, "--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
                     "--set", "profile.partition=gpu")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "preflight found problems; nothing was submitted" in out.stderr
    assert "'partition: gpu' does not exist on this cluster; partitions: debug" in out.stderr
    assert not (state / "journal").exists() or not list((state / "journal").glob("*.json"))


@pytest.mark.slurm
def test_local_slurm_trains_debug_to_completion_in_the_planned_run_dir(slurm_cluster, state, tmp_path):
    args = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
            "--set", "train.max_steps=20"]
    planned = json.loads(submit_cli(*args, "--dry-run", "--json").stdout)["run_dir"]
    out = submit_cli(*args, "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    run_dir = Path(result["run_dir"])
    assert str(run_dir) == planned
    info = run_json(run_dir)
    assert info["status"] == "completed" and info["slurm_job_ids"] == [result["job_id"]]
    assert (run_dir / "checkpoint-20").is_dir() and last_step(run_dir) == 20
    assert (run_dir / "launch" / "job.sbatch").read_text().startswith("#!/bin/bash")
    assert Path(result["stdout"]).exists() and result["stdout"].startswith(str(run_dir / "launch" / "slurm"))
    (submission,) = journal.load_all()
    assert submission["jobs"][0]["job_id"] == result["job_id"] and submission["profile"] == "local-slurm"
    assert "completed at step 20" in describe_attempts(run_dir)


@pytest.mark.slurm
def test_scancel_signal_requeues_through_torchrun_and_finishes_exactly(slurm_cluster, state, tmp_path):
    """Two workers under torchrun; USR2 from scancel reaches them, they checkpoint, the job requeues, resumes."""
    max_steps = 600  # a debug step takes ~10 ms on a CPU: the run must outlast the signal's way to the workers
    out = submit_cli("--profile", "local-slurm", "--experiment", str(DEBUG), "--json",
                     "--set", f"profile.checkpoint_root={tmp_path}", "--set", "profile.processes_per_node=2",
                     "--set", f"train.max_steps={max_steps}", "--set", "train.save_steps=100000",
                     "--set", "train.eval_steps=0", "--set", "train.logging_steps=2")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    env = slurm_cluster.environ()
    wait_until(lambda: last_step(run_dir) >= 2, 120, "the first training steps")
    subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
    wait_until(lambda: any(e["event"] == "requeue" for e in read_events(run_dir)), 60, "the requeue")
    stopped_at = (attempts(run_dir)[0]["trainer"] or {}) if attempts(run_dir) else {}
    assert 0 < last_step(run_dir) < max_steps, "the signal arrived after the run finished; raise max_steps"

    def pending_then_release():
        state_line = job_line(job_id, env)
        if "JobState=PENDING" in state_line:
            release_requeued(job_id, env)
            return True
        return "JobState=RUNNING" in state_line and "Restarts=1" in state_line

    wait_until(pending_then_release, 60, "the requeued job to be pending")
    states = slurm_cluster_wait(job_id, env, 240)
    assert states == {job_id: "COMPLETED"}, describe_attempts(run_dir)
    info = run_json(run_dir)
    assert info["status"] == "completed" and info["restart_count"] == 1
    assert info["slurm_job_ids"] == [job_id]  # a requeued job keeps its id; the attempts count the restarts
    assert [(a["job_id"], a["restart_count"], a["trainer"]["slurm"].get("restart_count", "0"))
            for a in attempts(run_dir)] == [(job_id, 0, "0"), (job_id, 1, "1")]
    assert last_step(run_dir) == max_steps and (run_dir / f"checkpoint-{max_steps}").is_dir()
    assert stopped_at.get("status") == "interrupted"
    outcomes = [a["outcome"] for a in attempts(run_dir)]
    assert outcomes == ["requeued-preemption", "completed"], describe_attempts(run_dir)


def slurm_cluster_wait(job_id: str, env: dict, timeout: float) -> dict:
    from launch.localcluster.cluster import wait_for_job

    return wait_for_job(job_id, timeout=timeout, environ=env)


@pytest.mark.slurm
def test_planned_arrays_go_to_sbatch_byte_for_byte_with_one_sbatch_each(slurm_cluster, state, tmp_path):
    from launch.planning.sweep import plan_arrays, plan_sweep
    from launch.planning.sweep_file import load_sweep
    from launch.submission.submit import submit_arrays
    from launch.submission.sweep import sweep_record

    sweep_file = tmp_path / "steps.yaml"
    sweep_file.write_text(f"experiment: {DEBUG}\noverrides: {{output.checkpoint_root: {tmp_path}}}\n"
                          "grid: {train.max_steps: [6, 8]}\n")
    plan = plan_sweep(load_sweep(sweep_file), load_profile("local-slurm"))
    arrays = plan_arrays(plan, plan.pending, "test-submission")
    submission = submit_arrays(plan, arrays, sweep=sweep_record(plan), submission_id="test-submission")
    ids = [j["job_id"] for j in submission.jobs]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"]
    assert submission.record["kind"] == "sweep" and submission.jobs[1]["cell"] == {"train.max_steps": 8}
    submitted = submission.handles[ids[0]].paths.submission_file.read_text()
    assert submitted == arrays[0].script, "sbatch must receive the planned script byte for byte"
    assert submitted.splitlines()[1].startswith("# Generated by launch/submit.py for profile local-slurm")
    assert "#SBATCH --array=0-1%2" in submitted and "#SBATCH --comment=memorymodels:sweep:test-submission:0" in submitted
    states = slurm_cluster_wait(array, slurm_cluster.environ(), 240)
    assert set(states.values()) == {"COMPLETED"}, states
    assert [last_step(job.run_dir) for job in plan.jobs] == [6, 8]
    assert all(Path(j["stdout"]).exists() for j in submission.jobs)
    assert (arrays[0].folder / "job.sbatch").read_text() == arrays[0].script  # one copy for the array's cells
    assert all(json.loads((job.run_dir / "launch" / "plan.json").read_text())["script_file"] ==
               str(arrays[0].folder / "job.sbatch") for job in plan.jobs)
    assert all((job.run_dir / "launch" / "experiment.yaml").read_text() == job.experiment_text for job in plan.jobs)


def submitit_task(controller: int) -> int:
    """The pid of the submitit task process under the local controller."""
    def find():
        for pid in os.listdir("/proc"):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            if b"submitit.core._submit" in cmd and stat.rsplit(")", 1)[1].split()[1] == str(controller):
                return int(pid)
        return None

    return wait_until(find, 30, "the submitit task process")


def test_local_profile_runs_the_same_job_without_slurm_and_requeues(state, tmp_path, capsys):
    """submitit's local executor: the same NodeLaunch; an interrupt (USR2) checkpoints, requeues and resumes; the
    history shows both attempts and when each trained its first step."""
    from launch.cli.status import main as status_main
    from launch.monitor.follow import follow_local
    from launch.submission.submit import submit_job

    env_before = os.environ.get("SLURM_CONF")
    max_steps = 1000  # a debug step takes ~7 ms here: 60 steps were over before the signal reached the trainer
    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}", "cpus_per_gpu=1"]), DEBUG,  # 2 cores here
                    overrides=[f"train.max_steps={max_steps}", "train.save_steps=100000", "train.eval_steps=0",
                               "train.logging_steps=2"])
    submission = submit_job(plan)
    entry = submission.jobs[0]
    job = submission.handles[entry["job_id"]]
    wait_until(lambda: last_step(plan.run_dir) >= 2, 120, "the first training steps")
    # what submitit's local controller sends its task before the time limit: the preemption signal (USR2)
    os.kill(submitit_task(job._process.pid), signal.SIGUSR2)
    wait_until(lambda: any(e["event"] == "requeue" for e in read_events(plan.run_dir)), 60, "the requeue")
    assert 0 < last_step(plan.run_dir) < max_steps, "the signal arrived after the run finished; raise max_steps"
    assert follow_local(job, entry, out=open(os.devnull, "w")) == 0
    info = run_json(plan.run_dir)
    assert info["status"] == "completed" and len(attempts(plan.run_dir)) == 2
    assert last_step(plan.run_dir) == max_steps and (plan.run_dir / f"checkpoint-{max_steps}").is_dir()
    assert [a["outcome"] for a in attempts(plan.run_dir)] == ["requeued-preemption", "completed"]
    assert os.environ.get("SLURM_CONF") == env_before
    # each attempt's startup, recorded by its trainer, is found from the node task's start event (status --history)
    first, second = (a["startup"]["phases"] for a in attempts(plan.run_dir))
    assert list(first)[:3] == ["task", "python", "imports"] and "checkpoint" not in first and "first_step" in first
    assert second["checkpoint"] < second["first_step"]
    capsys.readouterr()
    assert status_main(["--history", entry["job_id"]]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # the lines wrap at the console's width
    assert "attempt 1 startup: first step" in shown and "attempt 2 startup: first step" in shown
    assert ", checkpoint " in shown.split("attempt 2 startup:")[1]


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_finishes(slurm_cluster, state, tmp_path):
    """A 2-minute time limit: sbatch --signal=USR2@90 stops the run mid-way; it requeues and finishes max_steps.

    The signal comes about 30 s into the first attempt (Slurm checks limits every few seconds), long before 3,000
    debug steps are done on any machine; the requeued job gets 10 minutes so that the test ends however slow this
    machine is (a few minutes)."""
    max_steps = 3000
    out = submit_cli("--profile", "local-slurm", "--experiment", str(DEBUG), "--json",
                     "--set", f"profile.checkpoint_root={tmp_path}", "--set", "profile.time_limit=2m",
                     "--set", "profile.signal_before_end_s=90", "--set", f"train.max_steps={max_steps}",
                     "--set", "train.save_steps=100000", "--set", "train.eval_steps=0")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    env = slurm_cluster.environ()
    released = 0
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        line = job_line(job_id, env)
        requeues = sum(e["event"] == "requeue" for e in read_events(run_dir))
        if "JobState=PENDING" in line and requeues > released:
            release_requeued(job_id, env, "TimeLimit=10")
            released = requeues
        if any(f"JobState={s}" in line for s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")):
            break
        time.sleep(2)
    outcomes = [a["outcome"] for a in attempts(run_dir)]
    assert "JobState=COMPLETED" in line, describe_attempts(run_dir)
    assert outcomes[0] == "requeued-timeout" and outcomes[-1] == "completed", outcomes
    assert last_step(run_dir) == max_steps and run_json(run_dir)["restart_count"] == len(outcomes) - 1


def test_local_profile_reports_a_trainer_killed_by_a_signal(state, tmp_path):
    """One process runs without torchrun: a trainer killed by SIGKILL is still told apart from a program error (the
    node task reads its end, where torchrun would have reported it); outside Slurm it is not requeued."""
    from launch.monitor.follow import follow_local
    from launch.submission.submit import submit_job
    from memorymodels.heartbeat import read_beats

    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}", "cpus_per_gpu=1"]), DEBUG,
                    overrides=["train.max_steps=100000", "train.save_steps=100000", "train.eval_steps=0"])
    assert "torch.distributed.run" not in plan.command
    submission = submit_job(plan)
    entry = submission.jobs[0]
    wait_until(lambda: last_step(plan.run_dir) >= 1, 120, "the first training steps")
    (beat,) = read_beats(plan.run_dir / "launch" / "heartbeats")
    os.kill(beat["pid"], signal.SIGKILL)
    out = plan.run_dir / "follow.txt"
    with open(out, "w") as f:
        assert follow_local(submission.handles[entry["job_id"]], entry, out=f) == 1
    (fault,) = [e for e in read_events(plan.run_dir) if e["event"] == "fault"]
    assert fault["cause"] == "killed" and fault["killed"][0]["signal"] == signal.SIGKILL
    assert [a["outcome"] for a in attempts(plan.run_dir)] == ["failed"]
    assert "local rank 0 on" in out.read_text() and "was killed by SIGKILL; not under Slurm" in out.read_text()


def test_preflight_catches_bad_model_parameters_before_queueing(state, tmp_path):
    from launch.submission.preflight import SubmitError, preflight

    with pytest.raises(ConfigError, match="model 'autoencoding_mixer': unknown key 'bogus'"):
        plan_job(load_profile("local", [f"checkpoint_root={tmp_path}"]), DEBUG, overrides=["model.params.bogus=1"])
    missing = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}"]), DEBUG,
                       overrides=["data.corpus=/nonexistent/*.txt"])
    with pytest.raises(SubmitError, match="'data.corpus: /nonexistent/\\*.txt' matches no file") as err:
        preflight([missing]).raise_problems()
    assert "preflight found problems; nothing was submitted" in str(err.value)


def test_preflight_refuses_a_data_root_where_the_corpus_cannot_be_prepared(state, tmp_path):
    from launch.submission.preflight import SubmitError, preflight

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    plan = plan_job(load_profile("local", [f"checkpoint_root={tmp_path}", f"data_root={blocker}/cache"]), DEBUG)
    assert plan.settings.data.cache_dir == str(blocker / "cache")  # where the job prepares stdlib-small
    with pytest.raises(SubmitError) as err:
        preflight([plan]).raise_problems()
    assert (f"'data_root': cannot prepare 'stdlib-small' in {blocker}/cache ({blocker} is not a writable folder)"
            in str(err.value))


@pytest.mark.slurm
def test_a_program_error_is_reported_with_its_cause(slurm_cluster, state, tmp_path):
    out = submit_cli("--profile", "local-slurm", "--experiment", str(DEBUG), "--no-preflight", "--wait",
                     "--set", f"profile.checkpoint_root={tmp_path}",
                     "--set", f"model.params.frozen_encoder={tmp_path}/no-such-encoder.safetensors")
    assert out.returncode == 1, out.stdout + out.stderr
    # the trainer's own exit code (2: a config error), not torchrun's 1: one process runs without torchrun (and
    # torchrun's report gives it where it runs): a refusal, not retried
    assert "FAILED" in out.stdout and "was refused by the trainer (exit 2)" in out.stdout, out.stdout
    assert "no-such-encoder.safetensors" in out.stdout  # the trainer's own words, not only torchrun's summary


@pytest.mark.slurm
def test_dependency_holds_the_job_and_preflight_refuses_one_that_can_never_hold(slurm_cluster, state, tmp_path,
                                                                                wait_for_job):
    from launch.monitor.queue import Collector

    env = slurm_cluster.environ()

    def sbatch(*args: str) -> str:
        return subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", *args], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()

    held, failed = sbatch("--hold", "--wrap", "true"), sbatch("--wrap", "false")
    waiting = None
    try:
        out = submit_cli("--profile", "local-slurm", "--experiment", str(DEBUG), "--json", "--dependency",
                         f"afterok:{held}", "--set", f"profile.checkpoint_root={tmp_path}")
        assert out.returncode == 0, out.stderr
        waiting = json.loads(out.stdout)["job_id"]
        script = (Path(json.loads(out.stdout)["run_dir"]) / "launch" / "job.sbatch").read_text()
        assert f"#SBATCH --dependency=afterok:{held}\n" in script
        time.sleep(1)  # let the scheduler look at it once
        queued = subprocess.run(["squeue", "-h", "-j", waiting, "-o", "%T %r"], env=env, capture_output=True,
                                text=True).stdout.split()
        assert queued == ["PENDING", "Dependency"]
        row = next(r for r in Collector().refresh().rows if r.job_id == waiting)
        assert row.reason_text == f"waiting for job {held} to complete", row

        assert wait_for_job(failed, timeout=60) == {failed: "FAILED"}
        out = submit_cli("--profile", "local-slurm", "--experiment", str(DEBUG), "--dependency", f"afterok:{failed}",
                         "--set", f"profile.checkpoint_root={tmp_path / 'second'}")
        assert out.returncode == 2, out.stdout + out.stderr
        assert (f"--dependency afterok:{failed}: job {failed} already ended FAILED; 'afterok' can never hold"
                in out.stderr)
        assert not (tmp_path / "second").exists() and len(list((state / "journal").glob("*.json"))) == 1
    finally:
        subprocess.run(["scancel", held, *([waiting] if waiting else [])], env=env, check=False)


def test_sbatch_runs_with_the_profiles_cluster_and_without_an_enclosing_allocation(tmp_path, monkeypatch):
    """The local profiles' ``slurm_conf: ${SLURM_CONF:-...}`` is expanded in the submitter's environment (not in the
    one sbatch gets), and the variables of an enclosing ``salloc`` never reach the new job."""
    from launch.submission.submit import _cluster_environment

    conf = tmp_path / "elsewhere.conf"
    monkeypatch.setenv("SLURM_CONF", str(conf))
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    monkeypatch.setenv("SLURM_NODELIST", "old-node")
    plan = plan_job(load_profile("local-slurm", [f"checkpoint_root={tmp_path}"]), DEBUG)
    with _cluster_environment(plan):
        inside = dict(os.environ)
    assert inside["SLURM_CONF"] == str(conf)
    assert "SLURM_JOB_ID" not in inside and "SLURM_NODELIST" not in inside
    assert os.environ["SLURM_JOB_ID"] == "999", "the submitter's own environment is restored"
