"""Real multi-node training through the launcher on the project's two-node local cluster (issue 9).

    .venv/bin/pytest tests/launch/test_multinode.py -x -q     # brings up the two-node cluster (as root) if needed

``python launch/submit.py --profile local-slurm-2node --launcher torchrun`` runs one torchrun per node (node1 and
node2, network namespaces at 10.231.0.11/.12; 2 processes each, world size 4), the rendezvous address and node ranks
worked out inside the job from Slurm's environment (``launch/node/task.py``). What the tests hold it to:

- every logged loss (and eval loss) equals a single-process ``python -m memorymodels.train`` run with the same global
  batch (batch_size x 4) and seed: same data order, gradients averaged correctly over the four ranks;
- one shared run directory: rank 0 alone writes metrics.jsonl and run.json (one line per step, world size 4, the
  node list), the ranks of both nodes their RNG states into the same checkpoint;
- ``scancel --signal=USR2`` (the launcher's checkpoint signal, what ``sbatch --signal`` sends before the time limit)
  stops the workers on both nodes at the same step, they checkpoint, the job requeues, resumes on both nodes and
  ends with exactly max_steps, its losses still step for step those of the uninterrupted single-process run.

The two jobs and the reference run side by side (each job takes 2 of each node's 4 CPUs): on a busy 2-core machine
most of a job's time is Python start-up and rendezvous. That ``local_cluster.py down`` leaves no namespace, link or
host-name entry behind is tested in ``test_local_cluster.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memorymodels.attempts import attempts, describe_attempts, read_events
from launch.localcluster.cluster import wait_for_job
from launch.planning.profiles import REPO_ROOT
from tests.launch.helpers import job_line, last_step, release_requeued, run_json, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]


def node_names(cluster) -> list[str]:
    """The namespace nodes of this cluster: node1, node2 (c<k>-node1, ... when another local cluster runs beside)."""
    return [node["name"] for node in cluster.net["nodes"]]


def nodelist(cluster) -> str:
    """Slurm's compressed node list of the two nodes, e.g. ``node[1-2]``."""
    first = node_names(cluster)[0]
    return f"{first[:-1]}[1-2]"


DEBUG = REPO_ROOT / "configs" / "experiments" / "debug.yaml"
WORLD = 4  # 2 nodes x 2 processes (cluster_profiles/local-slurm-2node.yaml)
BATCH = 8  # per process; the single-process reference takes BATCH x WORLD
CONTEXT = 64  # debug.yaml's data.context
MAX_STEPS = 80
# Every step logged: the loss logged at step s then covers step s alone, so a run that logs at the step it was stopped
# compares step by step with an uninterrupted one. Eval at 40 and 80 compares the sharded evaluation too.
TRAIN = [f"train.max_steps={MAX_STEPS}", "train.logging_steps=1", "train.eval_steps=40", "train.eval_rows=64",
         "train.save_steps=40", "train.seed=7"]
RTOL = 1e-4  # gloo sums the ranks' gradients in another order than one process sums its batch (seen: 2e-7)


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A private state directory (journal) sharing the project's prepared-data cache; the jobs inherit it."""
    from memorymodels.experiment import state_dir

    cache = state_dir() / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("multinode-state")
    (root / "cache").symlink_to(cache.resolve())
    before = os.environ.get("MEMORYMODELS_STATE")
    os.environ["MEMORYMODELS_STATE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("MEMORYMODELS_STATE", None)
    else:
        os.environ["MEMORYMODELS_STATE"] = before


@pytest.fixture(scope="module")
def reference(state, tmp_path_factory):
    """The single-process run with the global batch, started at once and awaited when read. Returns a function
    giving its metrics (one dict per logged step)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    log_path = run_dir.parent / "train.log"
    overrides = [*TRAIN, f"train.batch_size={BATCH * WORLD}"]
    command = [sys.executable, "-m", "memorymodels.train", "--experiment", str(DEBUG), "--run-dir", str(run_dir),
               "--no-eval", *(arg for item in overrides for arg in ("--set", item))]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    def metrics() -> list[dict]:
        code = proc.wait(timeout=300)
        assert code == 0, f"the single-process reference failed (exit {code}):\n{log_path.read_text()[-3000:]}"
        return read_metrics(run_dir)

    yield metrics
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def jobs(multinode_cluster, state, tmp_path_factory):
    """Both two-node jobs, submitted at once through the CLI: ``completed`` trains uninterrupted, ``interrupted`` is
    stopped by its test (no step checkpoints: the one it has is the one the signal made). Cancelled at the end if
    a failed test left one behind."""
    extra = {"interrupted": ["train.save_steps=100000"], "completed": []}
    procs = {name: start_submit(tmp_path_factory.mktemp(name), *items) for name, items in extra.items()}
    submitted = {name: submitted_job(proc) for name, proc in procs.items()}
    yield submitted
    for job in submitted.values():
        cancel_if_running(job["job_id"], multinode_cluster.environ())


def start_submit(checkpoint_root: Path, *extra: str) -> subprocess.Popen:
    """``python launch/submit.py --profile local-slurm-2node --launcher torchrun --experiment debug.yaml --json``."""
    overrides = [f"profile.checkpoint_root={checkpoint_root}", *TRAIN, f"train.batch_size={BATCH}", *extra]
    args = [sys.executable, "launch/submit.py", "--profile", "local-slurm-2node", "--launcher", "torchrun",
            "--experiment", str(DEBUG), "--json", *(arg for item in overrides for arg in ("--set", item))]
    return subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def submitted_job(proc: subprocess.Popen) -> dict:
    """The submission's --json line: job_id, run_dir, stdout, stderr."""
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"submit.py exited {proc.returncode}\n{stdout}\n{stderr}"
    return json.loads(stdout)


def cancel_if_running(job_id: str, env: dict) -> None:
    """A test that failed half-way must not leave its job holding the two nodes."""
    subprocess.run(["scancel", job_id], env=env, capture_output=True, check=False)


def finished(job: dict, env: dict, timeout: float) -> Path:
    """Wait for the job to complete; its run directory. A failure shows how each attempt ended and the log tails."""
    run_dir = Path(job["run_dir"])
    states = wait_for_job(job["job_id"], timeout=timeout, environ=env)
    if states != {job["job_id"]: "COMPLETED"}:
        logs = "\n".join(f"--- {p.name} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted((run_dir / "launch" / "slurm").glob("*_log.err")))
        pytest.fail(f"job {job['job_id']}: {states}\n{describe_attempts(run_dir)}\n{logs}")
    return run_dir


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def training(run_dir: Path, steps: int = 3) -> bool:
    """Whether the run has logged ``steps`` steps; fails at once (with how it ended) if the job ended before."""
    if last_step(run_dir) >= steps:
        return True
    ended = [a for a in attempts(run_dir) if a["outcome"] != "running"]
    assert not ended, f"the job ended before training {steps} steps:\n{describe_attempts(run_dir)}"
    return False


def assert_same_losses(run: list[dict], ref: list[dict], where: str) -> None:
    """Every train and eval loss of ``run`` equals the reference's at the same step (relative ``RTOL``)."""
    for key in ("loss", "eval_loss"):
        got = {m["step"]: m[key] for m in run if m.get(key) is not None}
        want = {m["step"]: m[key] for m in ref if m.get(key) is not None}
        assert got.keys() == want.keys(), f"{where}: {key} logged at steps {sorted(got)}, reference {sorted(want)}"
        bad = [(s, got[s], want[s]) for s in sorted(want) if not math.isclose(got[s], want[s], rel_tol=RTOL)]
        assert not bad, f"{where}: {key} differs from the single-process run at (step, 2 nodes, 1 process) {bad[:5]}"
        worst = max(abs(got[s] - want[s]) / abs(want[s]) for s in want)
        print(f"{where}: {len(want)} {key} values within {worst:.1e} (relative) of the single-process run")


def print_phases(run_dir: Path, where: str) -> None:
    """Seconds from each attempt's job start to the trainer's start (imports, rendezvous, data), to the end of
    training, and to the launcher's exit record (rank 0's end-of-run evaluation): shown with ``pytest -s``."""
    starts = [e for e in read_events(run_dir) if e["event"] == "start"]
    exits = [e for e in read_events(run_dir) if e["event"] == "exit"]
    for i, (start, attempt, end) in enumerate(zip(starts, attempts(run_dir), exits), 1):
        t0, trainer = start["time"], attempt["trainer"]
        print(f"{where}, attempt {i}: trainer started {trainer['start'] - t0:.1f} s after the job, trained until "
              f"{trainer['end'] - t0:.1f} s, launcher exit record at {end['time'] - t0:.1f} s ({end['outcome']})")


def assert_one_writer(run_dir: Path) -> list[dict]:
    """Rank 0 alone wrote metrics.jsonl: one train line per step, none twice; the metrics."""
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics if m["loss"] is not None] == list(range(1, MAX_STEPS + 1))
    assert [m["step"] for m in metrics if m["eval_loss"] is not None] == [40, 80]
    assert all(m["tokens"] == m["step"] * BATCH * WORLD * CONTEXT for m in metrics)
    return metrics


# The requeue test comes first: its job must be stopped mid-run; the completed job trains alongside.
def test_interrupted_two_node_job_requeues_and_resumes_on_both_nodes(multinode_cluster, reference, jobs):
    env = multinode_cluster.environ()
    job = jobs["interrupted"]
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    wait_until(lambda: training(run_dir), 180, "the first training steps of the two-node job")
    # the launcher's checkpoint signal, to the job's step (one submitit task per node), as sbatch --signal sends it
    subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
    wait_until(lambda: any(e["event"] == "requeue" for e in read_events(run_dir)), 90, "the requeue")
    stop_step = last_step(run_dir)
    assert run_json(run_dir)["status"] == "interrupted" and 0 < stop_step < MAX_STEPS, (
        f"stopped at step {stop_step} of {MAX_STEPS}: the signal came too late; raise MAX_STEPS")
    assert (run_dir / f"checkpoint-{stop_step}" / "COMPLETE").exists()

    def started_again():
        line = job_line(job_id, env)
        if "JobState=PENDING" in line:
            release_requeued(job_id, env)
            return False
        # not yet requeued (COMPLETING, REQUEUED), running again, or already done (gone from the controller)
        return not line or ("Restarts=1" in line and "JobState=RUNNING" in line) or "JobState=COMPLETED" in line

    wait_until(started_again, 180, "the requeued job to start again")
    finished(job, env, timeout=240)

    info = run_json(run_dir)
    assert info["status"] == "completed" and info["restart_count"] == 1, describe_attempts(run_dir)
    assert info["slurm_job_ids"] == [job_id] and info["world_size"] == WORLD  # a requeued job keeps its id
    assert [(t["slurm"]["job_id"], t["slurm"]["job_nodelist"], t["world_size"], t["resumed_from_step"])
            for t in (a["trainer"] for a in attempts(run_dir))] == [(job_id, nodelist(multinode_cluster), WORLD, None),
                                           (job_id, nodelist(multinode_cluster), WORLD, stop_step)]
    starts = [e for e in read_events(run_dir) if e["event"] == "start"]
    nodes = node_names(multinode_cluster)
    assert [(e["restart_count"], e["nodes"]) for e in starts] == [(0, nodes), (1, nodes)]
    assert [a["outcome"] for a in attempts(run_dir)] == ["requeued-preemption", "completed"], describe_attempts(run_dir)
    assert last_step(run_dir) == MAX_STEPS and (run_dir / f"checkpoint-{MAX_STEPS}" / "COMPLETE").exists()
    # the resumed attempt continued the data order and the optimizer state: step for step the uninterrupted losses
    assert_same_losses(assert_one_writer(run_dir), reference(), f"two-node run stopped at step {stop_step}")
    print_phases(run_dir, "interrupted two-node run")


def test_two_node_torchrun_matches_a_single_process_run(multinode_cluster, reference, jobs):
    completed_job = jobs["completed"]
    run_dir = finished(completed_job, multinode_cluster.environ(), timeout=300)
    info = run_json(run_dir)
    assert info["status"] == "completed" and info["world_size"] == WORLD and info["restart_count"] == 0
    (attempt,) = attempts(run_dir)
    trainer = attempt["trainer"]
    assert trainer["slurm"]["job_nodelist"] == nodelist(multinode_cluster) and trainer["world_size"] == WORLD
    assert info["slurm_job_ids"] == [completed_job["job_id"]]
    (start,) = [e for e in read_events(run_dir) if e["event"] == "start"]
    assert start["nodes"] == node_names(multinode_cluster) and start["host"] == node_names(multinode_cluster)[0]
    # the ranks of both nodes saved into the one shared run directory: the RNG states of all four ranks
    for step in (40, 80):
        names = {p.name for p in (run_dir / f"checkpoint-{step}").iterdir()}
        assert {"COMPLETE", "model.safetensors", "optimizer.pt"} <= names, names
        assert {n for n in names if n.startswith("rng_state")} == {f"rng_state_{r}.pth" for r in range(WORLD)}
    assert_same_losses(assert_one_writer(run_dir), reference(), "two-node run")
    print_phases(run_dir, "two-node run")
