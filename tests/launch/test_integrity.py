"""Corruption of the same size, on the local cluster: nothing edited in place is used, nothing secret is copied.

    .venv/bin/pytest tests/launch/test_integrity.py -q       # needs the local Slurm cluster (marker: slurm)

A bit flipped in a completed run's newest checkpoint (same size, still loadable) is set aside when the run is
submitted again, and the run resumes from the previous checkpoint to the same end. A code snapshot edited after
submission (one letter, same size) never runs: the job fails at once, naming the file, and is not requeued; the next
submission of that code copies the snapshot afresh and the job completes. An untracked ``.env`` in the checkout is
refused by name, and once git ignores it, it is not copied; run directories and snapshots are their owner's alone.
(Without a cluster: tests/training/test_checkpoints.py, tests/training/test_faults.py,
tests/launch/test_code_snapshot.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from launch.localcluster.cluster import wait_for_job
from memorymodels import checkpoints, metrics
from memorymodels.attempts import attempts
from memorymodels.experiment import REPO_ROOT, state_dir
from memorymodels.rundir import TrainerExit
from tests.launch.helpers import job_line, run_json
from tests.launch.test_code_snapshot import checkout, submit_from  # noqa: F401  (checkout is a fixture)
from tests.training.test_checkpoints import flip_member

DEBUG = ["--profile", "local-slurm", "--experiment", "configs/experiments/debug.yaml", "--json",
         "--set", "train.eval_steps=0", "--set", "train.logging_steps=1"]


def _environment(tmp_path: Path, code: Path) -> dict:
    """A state directory of the test's own whose cache is this checkout's (the debug corpus is prepared once), and
    the checkout ``code`` first on the path."""
    cache = state_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "cache").symlink_to(cache.resolve())
    return {**os.environ, "PYTHONPATH": str(code), "MEMORYMODELS_STATE": str(tmp_path / "state")}


def _submitted(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _log(job: dict) -> str:
    return "".join(Path(job[key]).read_text() for key in ("stdout", "stderr") if Path(job[key]).exists())


@pytest.mark.slurm
def test_a_bit_flipped_in_a_checkpoint_is_set_aside_before_the_run_resumes(slurm_cluster, tmp_path):
    env = _environment(tmp_path, REPO_ROOT)
    args = [*DEBUG, "--set", f"profile.checkpoint_root={tmp_path / 'runs'}", "--set", "train.max_steps=6",
            "--set", "train.save_steps=2"]
    first = _submitted(submit_from(REPO_ROOT, env, *args))
    assert wait_for_job(first["job_id"], timeout=600, environ=slurm_cluster.environ()) == {first["job_id"]: "COMPLETED"}
    run_dir = Path(first["run_dir"])
    assert [p.name for p in checkpoints.checkpoints(run_dir)[0]] == ["checkpoint-4", "checkpoint-6"]
    optimizer = run_dir / "checkpoint-6" / "optimizer.pt"
    size = optimizer.stat().st_size
    flip_member(optimizer)  # one bit of the optimizer's state, in place: same size, torch.load still reads it
    assert optimizer.stat().st_size == size

    second = _submitted(submit_from(REPO_ROOT, env, *args))
    state = wait_for_job(second["job_id"], timeout=600, environ=slurm_cluster.environ())
    log = _log(second)
    assert state == {second["job_id"]: "COMPLETED"}, log[-3000:]
    said = [line for line in log.splitlines() if "is damaged" in line]
    assert len(said) == 1 and f"{optimizer}: changed since the checkpoint was completed" in said[0], log[-3000:]
    assert "set aside as checkpoint-6.damaged-1, falling back to the previous complete checkpoint" in said[0]
    assert run_json(run_dir)["status"] == "completed"
    assert attempts(run_dir)[-1]["trainer"]["resumed_from_step"] == 4
    assert [r["step"] for r in metrics.read_metrics(run_dir)] == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 once, again
    checkpoints.verify_checkpoint(run_dir / "checkpoint-6")  # trained again, intact


@pytest.mark.slurm
def test_an_edited_snapshot_never_runs_and_a_credential_is_never_copied(slurm_cluster, checkout, tmp_path):
    env = _environment(tmp_path, checkout)
    runs = tmp_path / "runs"
    args = [*DEBUG, "--set", f"profile.checkpoint_root={runs}", "--set", "train.max_steps=4",
            "--set", "train.save_steps=100000"]
    slurm_env = slurm_cluster.environ()

    (checkout / ".env").write_text("OPENAI_API_KEY=sk-not-a-real-key\n")  # untracked, not ignored
    refused = submit_from(checkout, env, *args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert ".env look(s) like credentials" in refused.stderr and "snapshot_include" in refused.stderr
    assert not runs.exists()  # nothing copied, no run directory
    with open(checkout / ".git" / "info" / "exclude", "a") as f:
        f.write(".env\n")  # what the refusal says to do: git ignores it now

    job = _submitted(submit_from(checkout, env, *args, "--set", "profile.sbatch_extra={hold: true}"))
    run_dir, code = Path(job["run_dir"]), run_json(job["run_dir"])["code"]
    snapshot = Path(code["path"])
    assert (snapshot / "memorymodels" / "train.py").is_file() and not (snapshot / ".env").exists()
    for folder in (runs / ".code", snapshot, snapshot / "memorymodels", run_dir):
        assert os.stat(folder).st_mode & 0o777 == 0o700, folder  # the owner's alone (the profile names no group)
    assert os.stat(snapshot / "memorymodels" / "train.py").st_mode & 0o777 == 0o400

    victim = snapshot / "memorymodels" / "checkpoints.py"
    text = victim.read_text()
    os.chmod(victim, 0o600)
    victim.write_text(text.replace("Checkpoint directories", "Checkpoint directoriez", 1))  # same size
    os.chmod(victim, 0o400)
    subprocess.run(["scontrol", "release", job["job_id"]], env=slurm_env, check=True)
    state = wait_for_job(job["job_id"], timeout=600, environ=slurm_env)
    log = _log(job)
    assert state == {job["job_id"]: "FAILED"}, log[-3000:]
    assert f"error: {victim}: changed since code snapshot {code['hash']} was made" in log, log[-3000:]
    assert "Restarts=0" in job_line(job["job_id"], slurm_env)  # a refusal: not requeued
    assert attempts(run_dir)[-1]["exit_code"] == TrainerExit.CODE and attempts(run_dir)[-1]["outcome"] == "refused"
    assert not list(run_dir.glob("checkpoint-*")) and not metrics.read_metrics(run_dir)  # nothing ran

    again = submit_from(checkout, env, *args)  # the same code: the snapshot is copied afresh
    job = _submitted(again)
    assert f"note: {victim}: changed since code snapshot {code['hash']} was made" in again.stderr, again.stderr
    assert f"moved aside to {runs / '.code' / ('.' + code['hash'] + '.damaged-1')}" in again.stderr
    state = wait_for_job(job["job_id"], timeout=600, environ=slurm_env)
    assert state == {job["job_id"]: "COMPLETED"}, _log(job)[-3000:]
    assert victim.read_text() == text and run_json(run_dir)["status"] == "completed"
    assert [a["trainer"]["code"] for a in attempts(run_dir) if a["trainer"]] == [code["hash"]]
