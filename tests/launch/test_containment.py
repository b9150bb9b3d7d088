"""The pieces of failure containment that need no cluster: profile keys, the setup lines, heartbeats and their
timeouts, torchrun's report of a killed rank, the retry budget, blame, goodput, the rendezvous port.

    .venv/bin/pytest tests/launch/test_containment.py -q

The faults themselves run on the two-node cluster in ``test_faults.py``.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from launch.node import rendezvous, watchdog
from launch.node.faults import fault_cause
from launch.planning.command import GPU_ENV, job_env, setup_lines
from launch.planning.profiles import load_profile
from memorymodels.attempts import attempts, failures_without_progress, goodput, record_event
from memorymodels.configuration import ConfigError
from memorymodels.heartbeat import Heartbeat, read_beats
from memorymodels.rundir import exit_meaning


def test_failure_keys_default_and_validate():
    p = load_profile("local-slurm-2node")
    assert (p.hang_timeout_s, p.max_failure_retries, p.collective_timeout_s, p.env) == (None, 2, 600, {})
    assert load_profile("local-slurm-2node", ["hang_timeout_s=30"]).hang_timeout_s == 30
    for item, words in [("hang_timeout_s=3", "'hang_timeout_s: 3' must be 10 or more"),
                        ("max_failure_retries=-1", "'max_failure_retries' must be 0 or more"),
                        ("collective_timeout_s=0", "'collective_timeout_s: 0' must be 10 or more"),
                        ("env={1BAD: x}", "'env' key '1BAD' is not an environment variable name"),
                        ("env={NCCL_DEBUG: [a]}", "'env.NCCL_DEBUG' must be one string or number"),
                        ('env={A: "x\\ny"}', "'env.A' contains a control character")]:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
            load_profile("local-slurm-2node", [item])
        assert "\n" not in str(err.value)


def test_job_env_gpu_defaults_and_profile_env_wins():
    assert job_env(load_profile("local-slurm")) == {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    gpu = job_env(load_profile("h100x8", ["env={NCCL_DEBUG: INFO, NCCL_SOCKET_IFNAME: ib0, X: true}"]))
    assert gpu["NCCL_DEBUG"] == "INFO" and gpu["NCCL_SOCKET_IFNAME"] == "ib0" and gpu["X"] == "true"
    assert gpu["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == GPU_ENV["TORCH_NCCL_ASYNC_ERROR_HANDLING"]


def test_setup_lines_stop_at_the_first_failing_line_and_name_it(tmp_path):
    script = tmp_path / "s.sh"
    script.write_text("\n".join(setup_lines(["echo one", "test -e /nonexistent && echo 'no'", "echo three"])) + "\n")
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == "one\n"
    assert out.stderr == "memorymodels: setup line 2 of 3 failed (exit 1): test -e /nonexistent && echo 'no'\n"


def test_heartbeats_time_phases_and_silence_is_judged_per_phase(tmp_path):
    beat = Heartbeat(tmp_path, rank=3, local_rank=1)
    beat.beat("setup")
    beat.beat("step", 1)
    beat.beat("step", 2)
    beat.beat("save", 2)
    beat.beat("step", 2)
    beat.close()
    (record,) = read_beats(tmp_path)
    assert (record["rank"], record["local_rank"], record["phase"], record["step"]) == (3, 1, "step", 2)
    assert set(record["slowest"]) == {"setup", "step", "save"}
    now = record["time"]
    pids, host = {record["pid"]}, record["host"]
    assert watchdog.silent_ranks([record], pids, host, 20, now + 19) == []
    (hung,) = watchdog.silent_ranks([record], pids, host, 20, now + 21)
    assert hung["timeout_s"] == 20 and hung["silent_s"] == 21
    assert watchdog.silent_ranks([record], {1}, host, 20, now + 99) == []  # not a live local process
    assert watchdog.silent_ranks([{**record, "phase": "end"}], pids, host, 20, now + 9999) == []
    assert watchdog.phase_timeout("setup", 20, {}) == watchdog.SETUP_MIN_S
    assert watchdog.phase_timeout("step", None, {"step": 2.0}) == watchdog.AUTO_FLOOR_S
    assert watchdog.phase_timeout("save", None, {"step": 1.0, "save": 90.0}) == 900


def test_stacks_of_a_stopped_process_are_read(tmp_path):
    proc = subprocess.Popen(["python3", "-c", "import time\ndef waiting():\n    time.sleep(60)\nwaiting()"])
    try:
        time.sleep(0.5)
        proc.send_signal(19)  # SIGSTOP
        time.sleep(0.2)
        assert watchdog.is_stopped(proc.pid)
        how, text = watchdog.stack_text(proc.pid, tmp_path, 0)
        assert how in ("py-spy --nonblocking", "py-spy", "none")
        if how != "none":
            assert "waiting" in text
    finally:
        proc.kill()
        proc.wait()


def test_killed_ranks_come_from_torchrun_s_report_after_the_attempt_s_offset(tmp_path):
    log = tmp_path / "0_log.err"
    old = "torch.distributed.elastic.multiprocessing.api: failed (exitcode: -9) local_rank: 0 (pid: 11) of binary: x\n"
    log.write_text(old)
    offset = watchdog.log_size(log)
    with open(log, "a") as f:
        f.write("failed (exitcode: 1) local_rank: 0 (pid: 12) of binary: x\n"
                "failed (exitcode: -9) local_rank: 1 (pid: 13) of binary: x\n")
    assert watchdog.killed_ranks(log, offset) == [{"local_rank": 1, "signal": 9, "pid": 13}]
    assert fault_cause({"cause": "killed", "host": "n2", "killed": [{"local_rank": 1, "signal": 9}]}, 1) == \
        "local rank 1 on n2 was killed by SIGKILL"


REPORTS = [
    # (id, torchrun's report lines after the attempt's offset, the trainer's refusal read from them)
    ("diverged", ["failed (exitcode: 76) local_rank: 0 (pid: 12) of binary: x"], 76),
    ("disk-full-on-rank-1", ["failed (exitcode: 1) local_rank: 0 (pid: 12) of binary: x",
                             "failed (exitcode: 74) local_rank: 1 (pid: 13) of binary: x"], 74),
    ("program-error", ["failed (exitcode: 1) local_rank: 0 (pid: 12) of binary: x"], None),  # retried
    ("killed", ["failed (exitcode: -9) local_rank: 0 (pid: 12) of binary: x"], None),  # the node's fault
    ("requeue", ["failed (exitcode: 75) local_rank: 0 (pid: 12) of binary: x"], None),  # no refusal
    ("no-report", [], None),
]


@pytest.mark.parametrize("lines, refusal", [r[1:] for r in REPORTS], ids=[r[0] for r in REPORTS])
def test_the_trainers_refusal_comes_from_torchrun_s_report_after_the_attempt_s_offset(tmp_path, lines, refusal):
    log = tmp_path / "0_log.err"
    log.write_text("failed (exitcode: 76) local_rank: 0 (pid: 11) of binary: x\n")  # an earlier attempt's
    offset = watchdog.log_size(log)
    with open(log, "a") as f:
        f.write("".join(line + "\n" for line in lines))
    assert watchdog.trainer_refusal(log, offset) == refusal
    if refusal:
        assert fault_cause({"cause": "trainer-exit", "code": refusal, "host": "n1"}, 1) == \
            f"the trainer exited {refusal}{exit_meaning(refusal)} on n1"


def test_blame_goes_to_the_killed_then_the_stopped_then_the_oldest_beat():
    waiting = {"cause": "hang", "host": "n1", "last_beat": 10.5, "stopped": False}
    stopped = {"cause": "hang", "host": "n2", "last_beat": 10.9, "stopped": True}
    older = {"cause": "hang", "host": "n3", "last_beat": 9.0, "stopped": False}
    killed = {"cause": "killed", "host": "n4", "time": 12.0}
    error = {"cause": "error", "host": "n5", "time": 1.0}
    assert sorted([waiting, stopped, older, error], key=watchdog.culprit_key)[0] is stopped
    assert sorted([waiting, older, error], key=watchdog.culprit_key)[0] is older
    assert sorted([waiting, stopped, killed], key=watchdog.culprit_key)[0] is killed


def test_retry_budget_counts_failures_at_the_same_checkpoint(tmp_path):
    def attempt(outcome: str, checkpoint: int, reason: str = "failure"):
        record_event(tmp_path, "start", job_id="5", nodes=["a", "b"], restart_count=0)
        record_event(tmp_path, "exit", outcome="failed" if outcome == "requeue" else outcome, checkpoint=checkpoint)
        if outcome == "requeue":
            record_event(tmp_path, "requeue", reason=reason)

    attempt("requeue", 40)
    attempt("requeue", 40, "hang")
    record_event(tmp_path, "start", job_id="5", nodes=["a", "b"])
    assert [a["outcome"] for a in attempts(tmp_path)] == ["requeued-failure", "requeued-hang", "running"]
    assert failures_without_progress(tmp_path, 40) == 2
    assert failures_without_progress(tmp_path, 80) == 0  # the attempt got past checkpoint 40: the count starts again


def test_goodput_weighs_node_time_held_against_training_kept(tmp_path):
    for kind, fields in [("start", {"nodes": ["a", "b"], "time": 100.0}), ("exit", {"time": 200.0}),
                         ("requeue", {"reason": "hang", "time": 201.0}),
                         ("start", {"nodes": ["a", "b"], "time": 300.0}), ("exit", {"time": 400.0})]:
        (tmp_path / "launch").mkdir(exist_ok=True)
        with open(tmp_path / "launch" / "events.jsonl", "a") as f:
            f.write(json.dumps({"event": kind, **fields}) + "\n")
    # 2 attempts x 2 nodes x ~100 s held; 120 s of training kept on 2 nodes
    assert goodput(attempts(tmp_path), 120.0) == {"allocated_node_s": 400.0, "kept_node_s": 240.0, "ratio": 0.6,
                                                  "attempts": 2}


def test_head_port_lies_below_the_ephemeral_range():
    ports = {rendezvous.derived_port(str(job), restart) for job in range(0, 5000, 7) for restart in range(3)}
    assert min(ports) >= 20000 and max(ports) < 32768
    assert rendezvous.derived_port("123", 0) != rendezvous.derived_port("123", 1)
    assert 20000 <= rendezvous.free_port(rendezvous.derived_port("123", 0)) < 32000


@pytest.mark.slurm
def test_submitting_from_inside_an_allocation_hands_the_job_none_of_it(slurm_cluster, tmp_path, monkeypatch):
    """A submission from inside salloc or a batch job (fake allocation variables set here) queues a job that runs:
    without ``without_allocation`` the job's srun would see both memory options ("mutually exclusive") and the old
    job's node list and id."""
    import os
    import sys

    from launch.planning.profiles import REPO_ROOT

    fake = {"SLURM_JOB_ID": "999999", "SLURM_JOBID": "999999", "SLURM_NODELIST": "nonode[1-9]",
            "SLURM_JOB_NODELIST": "nonode[1-9]", "SLURM_MEM_PER_CPU": "100", "SLURM_MEM_PER_NODE": "100",
            "SLURM_NTASKS": "64", "SLURM_CPUS_PER_TASK": "64"}
    out = subprocess.run([sys.executable, "launch/submit.py", "--profile", "local-slurm", "--wait", "--json",
                          "--set", f"profile.checkpoint_root={tmp_path}", "--set", "train.max_steps=2",
                          "--set", "train.eval_steps=0"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, **fake})
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["job_id"] != "999999"
    run = json.loads((tmp_path / result["run_dir"] / "run.json").read_text())
    slurm = attempts(tmp_path / result["run_dir"])[0]["trainer"]["slurm"]
    assert run["status"] == "completed" and slurm["job_id"] == result["job_id"]
    assert "nonode" not in slurm["job_nodelist"]


def test_what_is_not_retried_and_why():
    from launch.node.faults import blame, why_not_retried

    killed = {"cause": "killed", "host": "n2", "killed": [{"local_rank": 1, "signal": 9}], "time": 5.0}
    peer = {"cause": "peer", "host": "n1", "of": "n2", "time": 5.5}
    first, culprit = blame([peer, killed], peer)
    assert first is killed and culprit is killed
    first, culprit = blame([peer], peer)
    assert first is peer and culprit is None

    def why(faults, again=0, slurm=True):
        return why_not_retried(faults, "CAUSE", 1, slurm=slurm, again=again, budget=2, checkpoint=40, step=45)

    assert why([killed, peer]) is None
    assert why([killed, peer], again=2) == ("CAUSE; 3 attempt(s) in a row failed after checkpoint 40 (this one at step "
                                            "45), not retried (max_failure_retries: 2)")
    assert why([killed], slurm=False).startswith("CAUSE; not under Slurm")
    assert why([{"cause": "trainer-exit", "code": 74, "host": "n1"}, peer]) == (
        "training failed with exit code 74 (the disk is full; free space, then resubmit) on n1; not retried")
    setup_error = {"cause": "error", "host": "n1", "in_setup": True, "code": 1}
    assert "failed before training began" in why([setup_error, {**setup_error, "host": "n2"}])
    assert why([setup_error, {**setup_error, "host": "n2", "in_setup": False}]) is None


def test_time_limit_is_told_by_slurm_s_end_time_not_the_launcher_s_start(monkeypatch):
    from launch.node.task import NodeLaunch

    task = NodeLaunch(name="x", command="true", run_dir="/tmp/x", env={}, time_limit_s=3600, signal_before_end_s=120)
    task._started = time.time()  # by its own start the launcher is an hour from its limit
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 150))  # setup ate most of the allocation
    assert task._timed_out()
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 3000))
    assert not task._timed_out()
    monkeypatch.delenv("SLURM_JOB_END_TIME")
    assert not task._timed_out()  # no end time known: the start time and the profile's limit
