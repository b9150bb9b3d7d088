"""Fault injection on the real two-node local cluster: a hung rank, a killed rank, both, and a bug that never goes away.

    .venv/bin/pytest tests/launch/test_faults.py -x -q -s     # brings up the two-node cluster (as root) if needed

Each job is ``launch/submit.py --profile local-slurm-2node`` (2 nodes x 2 CPU processes, as in test_multinode.py),
and the fault is injected into a training process on the second node, found through its heartbeat file:

- SIGSTOP (a hang: the process holds its sockets and says nothing) must be detected within ``hang_timeout_s`` plus a
  few seconds, the stacks of both ranks of that node must be on disk (py-spy reads a stopped process), the attempt
  must end on both nodes and the run must finish from its last checkpoint;
- SIGKILL (a dead rank) must end the attempt on both nodes and the run must finish;
- both faults in one job, one per attempt;
- a program error at the same step in every attempt must stop after ``max_failure_retries`` retries, the job FAILED,
  with the cause in one line.

Every finished run ends at exactly max_steps with each metrics step once and the losses of an uninterrupted
single-process run (the ``reference`` of test_multinode.py). The local partition has two nodes, so the node at fault
cannot be excluded from a two-node retry: the tests check that this is recorded, with the reason.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from launch.localcluster.cluster import wait_for_job
from memorymodels.attempts import attempts, describe_attempts, read_events
from memorymodels.heartbeat import read_beats
from memorymodels.metrics import run_goodput
from tests.launch.helpers import job_line, last_step, release_requeued, run_json, wait_until
from tests.launch.test_multinode import (MAX_STEPS, assert_one_writer, assert_same_losses, cancel_if_running, finished,
                                         node_names, reference, start_submit, state, submitted_job, training)

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]
__all__ = ["reference", "state"]  # fixtures shared with test_multinode.py

HANG_TIMEOUT_S = 12
DETECTION_MARGIN_S = 6  # one watch interval, the heartbeat's one-second throttle, the stack dumps
FAULT_AFTER_STEP = 43  # past checkpoint-40: the retry resumes from it and trains 41..80 again


def submit(tmp_path_factory, name: str, *extra: str) -> dict:
    return submitted_job(start_submit(tmp_path_factory.mktemp(name), f"profile.hang_timeout_s={HANG_TIMEOUT_S}",
                                      *extra))


def rank_on(run_dir: Path, host: str, job_id: str) -> dict:
    """The heartbeat of a training process on ``host`` in the running attempt (its pid is the process to hit)."""
    def found():
        beats = [b for b in read_beats(run_dir / "launch" / "heartbeats")
                 if b.get("host") == host and b.get("phase") == "step" and Path(f"/proc/{b['pid']}").exists()]
        return sorted(beats, key=lambda b: b["rank"])[-1] if beats else None
    return wait_until(found, 60, f"a training process of job {job_id} on {host}")


def inject(run_dir: Path, host: str, job_id: str, sig: signal.Signals, after_step: int) -> tuple[dict, float]:
    """Send ``sig`` to a training process on ``host`` once the run is past ``after_step``; (its beat, when)."""
    wait_until(lambda: training(run_dir, after_step), 240, f"step {after_step} of job {job_id}")
    beat = rank_on(run_dir, host, job_id)
    os.kill(beat["pid"], sig)
    return beat, time.time()


def requeued(job_id: str, run_dir: Path, env: dict, count: int) -> None:
    """Wait for the ``count``-th requeue and start the job again at once (Slurm holds a requeued job ~2 min)."""
    wait_until(lambda: sum(e["event"] == "requeue" for e in read_events(run_dir)) >= count, 120,
               f"requeue {count} of job {job_id}")

    def started_again():
        line = job_line(job_id, env)
        if "JobState=PENDING" in line:
            release_requeued(job_id, env)
            return False
        return not line or (f"Restarts={count}" in line and "JobState=RUNNING" in line) or "JobState=COMPLETED" in line

    wait_until(started_again, 180, f"job {job_id} to start again after requeue {count}")


def check_finished_run(run_dir: Path, reference, outcomes: list[str]) -> dict:
    info = run_json(run_dir)
    assert info["status"] == "completed", describe_attempts(run_dir)
    assert [a["outcome"] for a in attempts(run_dir)] == outcomes, describe_attempts(run_dir)
    assert last_step(run_dir) == MAX_STEPS and (run_dir / f"checkpoint-{MAX_STEPS}" / "COMPLETE").exists()
    assert_same_losses(assert_one_writer(run_dir), reference(), f"two-node run with faults {outcomes[:-1]}")
    goodput = run_goodput(run_dir)
    assert 0 < goodput["ratio"] < 1 and goodput["attempts"] == len(outcomes), goodput
    print(f"goodput {goodput}")
    return info


def check_hang(run_dir: Path, beat: dict, stopped_at: float, host: str) -> dict:
    # every node whose ranks fell silent reports; the blame goes to the stopped rank, the others waited for it
    (fault,) = [e for e in read_events(run_dir) if e["event"] == "fault" and e["cause"] == "hang" and e["host"] == host]
    assert fault["stopped"] and attempts(run_dir)[0]["cause"].startswith(f"rank {beat['rank']} on {host} hung: "), (
        attempts(run_dir)[0]["cause"])
    detected = fault["time"] - stopped_at
    print(f"hang of rank {beat['rank']} on {host} detected {detected:.1f} s after SIGSTOP (limit {HANG_TIMEOUT_S} s)")
    assert fault["host"] == host and fault["rank"] == beat["rank"], fault
    assert HANG_TIMEOUT_S - 2 <= detected <= HANG_TIMEOUT_S + DETECTION_MARGIN_S, detected
    # the stacks of both ranks of the node, the hung one read by py-spy although it is stopped
    assert len(fault["stacks"]) == 2, fault["stacks"]
    hung = Path(fault["stacks"][str(beat["rank"])]).read_text()
    assert "HUNG" in hung.splitlines()[0] and "py-spy" in hung.splitlines()[0], hung[:400]
    assert "Thread" in hung and "train" in hung, hung[:2000]
    return fault


def check_record(run_dir: Path, kind: str, host: str) -> None:
    """The history names the fault and says why the node was not excluded (two nodes in the partition)."""
    history = attempts(run_dir)
    # the attempt node 0 judged: the node it blamed (the exclude event), and that node's own fault of this kind (a
    # hang can be reported by both nodes: the other one's ranks wait in a collective for the stopped rank)
    judged = [a for a in history if a["excluded"] and any(f["cause"] == kind for f in a["faults"])]
    assert judged, describe_attempts(run_dir)
    excluded = judged[0]["excluded"]
    assert excluded["node"] == host and excluded["excluded"] is False, describe_attempts(run_dir)
    assert any(f["cause"] == kind and f["host"] == host for f in judged[0]["faults"]), judged[0]["faults"]
    assert "would keep 1 node(s) for a 2-node job" in excluded["detail"]


def test_hung_rank_on_node2_is_detected_dumped_and_retried(multinode_cluster, reference, tmp_path_factory):
    env = multinode_cluster.environ()
    job = submit(tmp_path_factory, "hang")
    job_id, run_dir, node2 = job["job_id"], Path(job["run_dir"]), node_names(multinode_cluster)[1]
    try:
        beat, stopped_at = inject(run_dir, node2, job_id, signal.SIGSTOP, FAULT_AFTER_STEP)
        requeued(job_id, run_dir, env, 1)
        finished(job, env, timeout=300)
    finally:
        cancel_if_running(job_id, env)
    check_hang(run_dir, beat, stopped_at, node2)
    assert not Path(f"/proc/{beat['pid']}").exists()  # the stopped process was ended with its attempt
    check_record(run_dir, "hang", node2)
    check_finished_run(run_dir, reference, ["requeued-hang", "completed"])


def test_killed_rank_on_node2_ends_the_attempt_on_both_nodes_and_is_retried(multinode_cluster, reference,
                                                                            tmp_path_factory):
    env = multinode_cluster.environ()
    job = submit(tmp_path_factory, "kill")
    job_id, run_dir, node2 = job["job_id"], Path(job["run_dir"]), node_names(multinode_cluster)[1]
    try:
        beat, killed_at = inject(run_dir, node2, job_id, signal.SIGKILL, FAULT_AFTER_STEP)
        requeued(job_id, run_dir, env, 1)
        ended = [e for e in read_events(run_dir) if e["event"] == "requeue"][0]["time"] - killed_at
        print(f"SIGKILL of rank {beat['rank']} on {node2}: attempt ended on both nodes and requeued {ended:.1f} s later")
        finished(job, env, timeout=300)
    finally:
        cancel_if_running(job_id, env)
    faults = [e for e in read_events(run_dir) if e["event"] == "fault"]
    killed = [f for f in faults if f["cause"] == "killed"]
    assert killed and killed[0]["host"] == node2 and killed[0]["killed"][0]["signal"] == signal.SIGKILL, faults
    (first,) = attempts(run_dir)[:1]
    assert first["cause"].startswith(f"local rank {killed[0]['killed'][0]['local_rank']} on {node2} was killed by "
                                     f"SIGKILL"), first["cause"]
    check_record(run_dir, "killed", node2)
    check_finished_run(run_dir, reference, ["requeued-failure", "completed"])


def test_hang_then_kill_in_one_job(multinode_cluster, reference, tmp_path_factory):
    env = multinode_cluster.environ()
    job = submit(tmp_path_factory, "both")
    job_id, run_dir, node2 = job["job_id"], Path(job["run_dir"]), node_names(multinode_cluster)[1]
    try:
        beat, stopped_at = inject(run_dir, node2, job_id, signal.SIGSTOP, FAULT_AFTER_STEP)
        requeued(job_id, run_dir, env, 1)
        # the second attempt resumes from checkpoint-40; kill a rank once it is past it again
        wait_until(lambda: len(attempts(run_dir)) == 2 and attempts(run_dir)[1]["outcome"] == "running", 120,
                   "the second attempt")
        wait_until(lambda: any(b.get("host") == node2 and b.get("phase") == "step" and b.get("step", 0) > 40
                               and b.get("pid") != beat["pid"]
                               for b in read_beats(run_dir / "launch" / "heartbeats")), 240, "the retry's steps")
        inject(run_dir, node2, job_id, signal.SIGKILL, FAULT_AFTER_STEP)
        requeued(job_id, run_dir, env, 2)
        finished(job, env, timeout=300)
    finally:
        cancel_if_running(job_id, env)
    check_hang(run_dir, beat, stopped_at, node2)
    check_finished_run(run_dir, reference, ["requeued-hang", "requeued-failure", "completed"])


BUG = '''
import os, sys, threading, time, json
def _watch(path, step):
    while True:
        try:
            beat = json.load(open(path))
            if beat["pid"] == os.getpid() and beat["step"] >= step:  # not the previous attempt's file
                print(f"RuntimeError: injected bug at step {step}", file=sys.stderr, flush=True)
                os._exit(1)
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
argv = sys.orig_argv  # sys.argv is not set yet when site imports this
if "memorymodels.train" in argv and os.environ.get("RANK") == "3" and "--heartbeat-dir" in argv:
    folder = argv[argv.index("--heartbeat-dir") + 1]
    threading.Thread(target=_watch, args=(os.path.join(folder, "rank-3.json"), {step}), daemon=True).start()
'''


def test_a_bug_at_the_same_step_stops_after_the_retry_budget(multinode_cluster, tmp_path_factory):
    """A rank on node2 fails at step 45 in every attempt (sitecustomize through the profile's env): one retry
    (max_failure_retries=1), then the job fails, the cause in one line."""
    env = multinode_cluster.environ()
    bug = tmp_path_factory.mktemp("bug")
    (bug / "sitecustomize.py").write_text(BUG.replace("{step}", "45"))
    pythonpath = f"{bug}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")
    job = submit(tmp_path_factory, "bug", "profile.max_failure_retries=1", f"profile.env={{PYTHONPATH: '{pythonpath}'}}")
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    try:
        requeued(job_id, run_dir, env, 1)
        states = wait_for_job(job_id, timeout=300, environ=env)
    finally:
        cancel_if_running(job_id, env)
    assert states == {job_id: "FAILED"}, (states, describe_attempts(run_dir))
    outcomes = [a["outcome"] for a in attempts(run_dir)]
    assert outcomes == ["requeued-failure", "failed"], describe_attempts(run_dir)
    last = attempts(run_dir)[-1]
    node2 = node_names(multinode_cluster)[1]
    assert last["cause"].startswith(f"training failed with exit code 1 on {node2}: RuntimeError"), last["cause"]
    assert last["checkpoint"] == attempts(run_dir)[0]["checkpoint"] == 40
    info = run_json(run_dir)
    assert info["status"] == "failed" and "\n" not in info["error"], info["error"]
    err = (run_dir / "launch" / "slurm" / f"{job_id}_0_log.err").read_text()
    assert "RuntimeError: injected bug at step 45; 2 attempt(s) in a row failed after checkpoint 40" in err, err[-2000:]
    assert "not retried (max_failure_retries: 1)" in err
    print(f"bug: {info['error']}; {describe_attempts(run_dir)}")
