"""The first Slurm round trip on the project's local cluster: a batch job and a 4-task array are seen in
``squeue --json`` while held, run to COMPLETED once released, and are listed by ``sacct``."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

pytestmark = pytest.mark.slurm


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _json_state(record: dict) -> str:
    state = record.get("job_state")
    return state[0] if isinstance(state, list) else state  # a list in Slurm >= 23.02


def test_batch_job_and_array_run_to_completed_and_are_seen_by_squeue_and_sacct(slurm_cluster, wait_for_job,
                                                                               tmp_path):
    batch = _run("sbatch", "--parsable", "--hold", "--job-name=mm-smoke", f"--chdir={tmp_path}",
                 "--output=batch-%j.out", "--wrap", "echo hello from $SLURM_JOB_ID").strip()
    array = _run("sbatch", "--parsable", "--hold", "--job-name=mm-smoke-array", "--array=0-3", f"--chdir={tmp_path}",
                 "--output=array-%A_%a.out", "--wrap", "echo task $SLURM_ARRAY_TASK_ID").strip()
    try:
        # Held, both are pending: squeue --json lists the job, and the array as one record for its 4 tasks.
        jobs = json.loads(_run("squeue", "--json"))["jobs"]
        by_id = {str(j["job_id"]): j for j in jobs}
        assert _json_state(by_id[batch]) == "PENDING"
        array_records = [j for j in jobs if str(j.get("array_job_id")) == array]
        assert array_records and all(_json_state(j) == "PENDING" for j in array_records)
        assert array_records[0]["name"] == "mm-smoke-array"
    finally:
        _run("scontrol", "release", batch, array)

    assert wait_for_job(batch, timeout=60) == {batch: "COMPLETED"}
    assert wait_for_job(array, timeout=60) == {f"{array}_{i}": "COMPLETED" for i in range(4)}
    assert (tmp_path / f"batch-{batch}.out").read_text() == f"hello from {batch}\n"
    for i in range(4):
        assert (tmp_path / f"array-{array}_{i}.out").read_text() == f"task {i}\n"

    want = {batch: "COMPLETED", **{f"{array}_{i}": "COMPLETED" for i in range(4)}}
    deadline = time.monotonic() + 30
    while True:  # the controller sends job records to slurmdbd asynchronously
        lines = _run("sacct", "-n", "-P", "-X", "-j", f"{batch},{array}", "-o", "JobID,State").split()
        seen = dict(line.split("|", 1) for line in lines)
        if seen == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert seen == want
