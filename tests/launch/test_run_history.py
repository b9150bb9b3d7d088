"""A run over its life on the real local Slurm: cancelled mid-training, resubmitted, finished.

    pytest -m slurm tests/launch/test_run_history.py -s

One history of attempts (``memorymodels.attempts``), settled with sacct (``launch.monitor.history``), is what
``--history``, the goodput, the dashboard's rows and the sweep report all show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.planning.profiles import REPO_ROOT
from memorymodels.attempts import attempts, describe_attempts
from memorymodels.metrics import run_goodput
from tests.launch.helpers import last_step, wait_until

DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private journal sharing the project's prepared data (the jobs inherit it)."""
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    return tmp_path / "state"


def cli(script: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"launch/{script}", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def sacct_node_seconds(job_ids: list[str], env: dict) -> tuple[float, list[str]]:
    """By hand: every attempt's ElapsedRaw x NNodes, and the states, from sacct."""
    out = subprocess.run(["sacct", "-X", "-D", "-P", "-n", "-j", ",".join(job_ids), "-o", "JobID,State,ElapsedRaw,NNodes"],
                         env=env, capture_output=True, text=True, check=True).stdout
    lines = [line.split("|") for line in out.splitlines() if line.strip()]
    return sum(int(e) * int(n) for _, _, e, n in lines), [s.split()[0] for _, s, _, _ in lines]


def wait_for_state(job_id: str, env: dict, states: set[str], timeout: float) -> str:
    def state():
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], env=env, capture_output=True,
                             text=True).stdout.split("\n")
        state = out[0].split()[0] if out and out[0].strip() else None  # "CANCELLED by 0"
        return state if state in states else None
    return wait_until(state, timeout, f"job {job_id} to end ({', '.join(sorted(states))})")


@pytest.mark.slurm
def test_a_cancelled_and_resubmitted_run_has_one_true_history(slurm_cluster, state, tmp_path):
    env = slurm_cluster.environ()
    args = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
            "--set", "train.max_steps=1500", "--set", "train.save_steps=100", "--set", "train.eval_steps=0",
            "--set", "train.logging_steps=10"]
    first = cli("submit.py", *args, "--json")
    assert first.returncode == 0, first.stderr
    first = json.loads(first.stdout)
    run_dir, first_id = Path(first["run_dir"]), first["job_id"]
    wait_until(lambda: last_step(run_dir) >= 150, 300, "training past the first checkpoint")
    subprocess.run(["scancel", first_id], env=env, check=True)  # plain scancel: SIGTERM, no requeue
    wait_for_state(first_id, env, {"CANCELLED"}, 120)
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", first_id], env=env, capture_output=True,
                                          text=True).stdout.strip(), 120, f"job {first_id} to leave the queue")
    wait_until(lambda: attempts(run_dir) and attempts(run_dir)[0]["trainer"].get("end"), 60, "the trainer's end")
    cancelled_at = attempts(run_dir)[0]["step"]
    assert 100 <= cancelled_at < 1500, describe_attempts(run_dir)

    second = cli("submit.py", *args, "--wait", "--json", timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    second_id = json.loads(second.stdout)["job_id"]
    assert second_id != first_id and last_step(run_dir) == 1500

    # --history of the cancelled job, piped: settled from sacct, whole lines, its own step
    history = cli("status.py", "--history", first_id)
    assert history.returncode == 0, history.stderr
    assert "…" not in history.stdout, history.stdout
    (line1,) = [line for line in history.stdout.splitlines() if line.split()[:2] == ["1", first_id]]
    # the trainer saved on scancel's SIGTERM and exited 75 (TrainerExit.REQUEUE); sacct says the job was cancelled
    assert "cancelled (scancel)" in line1 and line1.split()[-1] in ("-", "75"), history.stdout
    assert f" {cancelled_at} " in f" {line1} ", history.stdout
    (line2,) = [line for line in history.stdout.splitlines() if line.split()[:2] == ["2", second_id]]
    assert "completed" in line2 and " 1500 " in f" {line2} ", history.stdout
    outcomes = [(a["job_id"], a["outcome"], a["reconciled"]["state"]) for a in attempts(run_dir)]
    assert outcomes == [(first_id, "cancelled", "CANCELLED"), (second_id, "completed", "COMPLETED")]

    # goodput: the training kept over every attempt's allocation, the cancelled one included, as sacct counts it
    by_hand, states = sacct_node_seconds([first_id, second_id], env)
    goodput = run_goodput(run_dir)
    assert states == ["CANCELLED", "COMPLETED"]
    assert goodput["allocated_node_s"] == pytest.approx(by_hand, abs=0.01), (goodput, by_hand)
    assert 0 < goodput["ratio"] <= 1 and goodput["attempts"] == 2, goodput
    print(f"goodput {goodput}; sacct {by_hand} node-s")

    # the dashboard: the cancelled job's row shows its own last step, the resubmission's its own
    once = cli("status.py", "--json")
    assert once.returncode == 0, once.stderr
    rows = {row["job_id"]: row for row in json.loads(once.stdout)}
    assert rows[first_id]["step"] == cancelled_at and rows[second_id]["step"] == 1500, (rows[first_id],
                                                                                         rows[second_id])
