"""Exactly once, on the real local Slurm: the same job submitted twice at once, the same sweep twice at once, and a
submitter killed with SIGKILL between two ``sbatch`` calls. Every job is submitted held (``sbatch --hold``), so the
queue keeps it while the test looks, and cancelled at the end."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from launch.planning.command import array_tag, run_tag
from launch.records import journal
from memorymodels.experiment import REPO_ROOT

DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"
SUBMIT = [sys.executable, str(REPO_ROOT / "launch" / "submit.py")]
HELD = ["--set", "profile.sbatch_extra={hold: true}"]


@pytest.fixture
def state(tmp_path, monkeypatch):
    """A private journal; the jobs the test queued are cancelled afterwards."""
    monkeypatch.setenv("MEMORYMODELS_STATE", str(tmp_path / "state"))
    yield tmp_path / "state"
    ids = [job["job_id"].split("_")[0] for s in journal.load_all() for job in s["jobs"]]
    if ids:
        subprocess.run(["scancel", *dict.fromkeys(ids)], check=False)


def queued_with(*tags: str) -> list[str]:
    """Job ids (array tasks one by one) in the queue whose --comment tag starts with one of ``tags``."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%k"], capture_output=True, text=True, check=True).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[1].startswith(tags)]


def sweep_tags() -> tuple[str, ...]:
    """The tag prefixes of this test's sweep submissions (its own journal: other tests share the cluster)."""
    return tuple(array_tag(s["submission_id"], 0).rsplit(":", 1)[0] + ":" for s in journal.load_all()) or ("none",)


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*SUBMIT, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or dict(os.environ))


@pytest.mark.slurm
def test_the_same_job_submitted_twice_at_once_is_queued_once(slurm_cluster, state, tmp_path):
    args = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
            *HELD, "--json"]
    procs = [start(*args), start(*args)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    accepted = json.loads(next(out for code, out, _ in results if code == 0))
    refused = next(err for code, _, err in results if code == 2)
    assert f"is already queued as job {accepted['job_id']}; nothing was submitted" in refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    assert queued_with(run_tag(accepted["run_dir"])) == [accepted["job_id"]]
    launch = Path(accepted["run_dir"]) / "launch"
    submitted = (launch / "slurm" / f"{accepted['job_id']}_submission.sh").read_text()
    assert submitted == (launch / "job.sbatch").read_text(), "sbatch receives the planned script byte for byte"
    assert submitted.splitlines()[2].startswith("# Run with: python launch/submit.py --profile local-slurm")
    # and a third, later, is refused the same way
    late = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert late.returncode == 2 and f"already queued as job {accepted['job_id']}" in late.stderr


def stand_in_sbatch(tmp_path: Path, body: str) -> Path:
    """A folder holding an ``sbatch`` that counts its calls (``$n``: earlier calls) and runs ``body`` (``$real`` is
    Slurm's sbatch); put it first in PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = subprocess.run(["which", "sbatch"], capture_output=True, text=True, check=True).stdout.strip()
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(f"#!/bin/bash\nreal={real}\nn=$(cat {tmp_path}/calls 2>/dev/null || echo 0)\n"
                       f"echo $((n + 1)) > {tmp_path}/calls\n{body}\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.slurm
def test_a_submitter_killed_after_sbatch_before_the_journal_leaves_a_job_the_rerun_finds(slurm_cluster, state,
                                                                                         tmp_path):
    """sbatch accepts the job, then the submitter dies (SIGKILL) before it can write the journal: the rerun refuses
    to queue the run again, naming the queued job, and records it in the journal."""
    bin_dir = stand_in_sbatch(tmp_path, 'if [ "$n" = 1 ]; then "$real" "$@"; kill -9 $PPID; sleep 5; exit 0; fi\n'
                                        'exec "$real" "$@"')
    args = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
            *HELD]
    killed = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    assert journal.load_all() == []
    queued = [line.split("|")[0] for line in subprocess.run(["squeue", "-h", "-o", "%i|%k"], capture_output=True,
              text=True).stdout.splitlines() if line.split("|")[1].startswith("memorymodels:run:")]
    rerun = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 2 and "is already queued as job" in rerun.stderr, rerun.stderr
    job_id = rerun.stderr.split("is already queued as job ")[1].split(";")[0]
    assert job_id in queued
    assert [job["job_id"] for s in journal.load_all() for job in s["jobs"]] == [job_id]


def write_sweep(tmp_path: Path, cells: int) -> Path:
    path = tmp_path / "once.yaml"
    path.write_text(f"experiment: {DEBUG}\noverrides: {{output.checkpoint_root: {tmp_path}/runs, train.max_steps: 2}}\n"
                    f"grid: {{train.seed: {list(range(cells))}}}\n")
    return path


@pytest.mark.slurm
def test_the_same_sweep_submitted_twice_at_once_queues_every_cell_once(slurm_cluster, state, tmp_path):
    sweep = write_sweep(tmp_path, 4)
    args = ["--profile", "local-slurm", "--sweep", str(sweep), *HELD]
    procs = [start(*args), start(*args)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    assert any("nothing to do" in out for _, out, _ in results), results
    assert len(queued_with(*sweep_tags())) == 4


@pytest.mark.slurm
def test_a_submitter_killed_between_two_sbatch_calls_never_submits_a_cell_twice(slurm_cluster, state, tmp_path):
    """max_array_size 1: one sbatch per cell. A stand-in ``sbatch`` first in PATH kills its parent (the submitter)
    with SIGKILL on its third call (the first is the preflight's --test-only), before submitting the second array;
    the rerun must submit the other cells only, and the cell queued before the kill must show in the journal
    (recorded as pending, then adopted)."""
    bin_dir = stand_in_sbatch(tmp_path, 'if [ "$n" = 2 ]; then kill -9 $PPID; sleep 5; exit 1; fi\nexec "$real" "$@"')
    sweep = write_sweep(tmp_path, 3)
    args = ["--profile", "local-slurm", "--sweep", str(sweep), "--set", "profile.max_array_size=1", *HELD]
    killed = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    first = queued_with(*sweep_tags())
    assert len(first) == 1
    pending = [s for s in journal.load_all() if s.get("status") == "pending"]
    assert len(pending) == 1 and len(pending[0]["arrays"]) == 3
    rerun = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 cell(s) still queued or running from an earlier submission, not submitted again" in rerun.stdout
    queued = queued_with(*sweep_tags())
    assert len(queued) == 3 and first[0] in queued
    journaled = {job["job_id"] for s in journal.load_all() for job in s["jobs"]}
    assert set(queued) <= journaled, "every queued cell is in the journal (the orphan adopted), so the dashboard shows it"


@pytest.mark.slurm
def test_a_profile_that_moves_the_tag_to_the_wckey_is_still_queued_once(slurm_cluster, state, tmp_path):
    """``tag_field: wckey`` (a site keeping --comment for accounting): the tag is found in squeue's %w, the second
    submission is refused, and the comment is the site's."""
    args = ["--profile", "local-slurm", "--experiment", str(DEBUG), "--set", f"profile.checkpoint_root={tmp_path}",
            "--set", "profile.tag_field=wckey", "--set", "profile.sbatch_extra={hold: true, comment: project-7}",
            "--json"]
    first = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    accepted = json.loads(first.stdout)
    out = subprocess.run(["squeue", "-h", "-j", accepted["job_id"], "-o", "%k|%w"], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == f"project-7|{run_tag(accepted['run_dir'])}"
    again = subprocess.run([*SUBMIT, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert again.returncode == 2 and f"is already queued as job {accepted['job_id']}" in again.stderr, again.stderr
