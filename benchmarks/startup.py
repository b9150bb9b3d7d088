"""Startup benchmark: how soon a debug job trains after it starts, and what ``import memorymodels.train`` costs.

    .venv/bin/python benchmarks/startup.py                                   # this checkout, local profile, 3 rounds
    git worktree add --detach /tmp/startup-before 7511d19
    .venv/bin/python benchmarks/startup.py --checkout before=/tmp/startup-before --rounds 5    # side by side
    SLURM_CONF=.state/slurm/slurm.conf .venv/bin/python benchmarks/startup.py --profile local-slurm --requeue \\
        --checkout before=/tmp/startup-before                               # on the local (two-node) Slurm cluster

Each checkout named by ``--checkout NAME=PATH`` (this one is ``after``) is measured with the same interpreter, in
turn within every round, so both see the same load:

- ``import memorymodels.train`` in a fresh interpreter run from the checkout (wall and CPU seconds), its bytecode
  cached beforehand under a private ``PYTHONPYCACHEPREFIX``: the imports themselves, not compiling our modules;
- the one-node debug job (``configs/experiments/debug.yaml``, 3 steps, ``cpus_per_gpu=1`` as on the local cluster),
  submitted through the checkout's own launcher: with ``--profile local`` submitit's local executor runs the same
  ``NodeLaunch`` a Slurm task runs, and the job starts when its process does (read from /proc); with ``--profile
  local-slurm`` it starts at Slurm's ``StartTime`` (``scontrol show job``: whole seconds, so up to a second early,
  half a second on average);
- with ``--requeue``, one two-node debug job (``local-slurm-2node``, torchrun, 2 nodes x 2 processes) preempted
  (``scancel --signal=USR2``) once it has a checkpoint, released at once (Slurm holds a requeued job two minutes),
  and timed from the requeued attempt's ``StartTime`` to its first step.

A first step is the time of its metrics.jsonl record (``logging_steps=1``), which every checkout writes; where the
checkout records startup phases (``memorymodels.startup``) their medians are listed too. Each checkout first runs
one job that is not timed (data preparation, the code snapshot). The environment is passed through as it is;
``PYTHONDONTWRITEBYTECODE`` (which keeps jobs from caching compiled modules) is printed. Results: BENCHMARKS.md,
"Startup".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorymodels.attempts import attempts  # noqa: E402
from memorymodels.fileio import read_json  # noqa: E402
from memorymodels.rundir import RunPaths  # noqa: E402
from memorymodels.startup import PHASES, process_start  # noqa: E402
from tests.launch.helpers import job_line, release_requeued, wait_until  # noqa: E402  (as benchmarks/faults.py)

EXPERIMENT = "configs/experiments/debug.yaml"
ONE_NODE = ["train.max_steps=3", "train.logging_steps=1", "train.eval_steps=0", "train.save_steps=1000"]
TWO_NODES = ["train.max_steps=2000", "train.logging_steps=1", "train.eval_steps=0", "train.save_steps=20"]

# Run in the checkout under test (its launch/ and memorymodels/ first on the path): plan and submit a job, print its
# id and, for the local executor, its process id at once, then wait for a local job (a Slurm job is polled).
JOB = """
import json, sys
from pathlib import Path
from launch.planning.plan import plan_job
from launch.planning.profiles import load_profile
from launch.submission.submit import submit_job
profile, root, run_dir, experiment, overrides = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], \\
    sys.argv[5:]
plan = plan_job(load_profile(profile, [f"checkpoint_root={root}", "cpus_per_gpu=1"]), experiment, overrides=overrides,
                run_dir=run_dir)
submission = submit_job(plan)
job_id = submission.jobs[0]["job_id"]
job = submission.handles.get(job_id)
print(json.dumps({"job_id": job_id, "pid": getattr(getattr(job, "_process", None), "pid", None)}), flush=True)
if profile == "local":
    job.result()
"""


def checkout_env(checkout: Path, pycache: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}
    if pycache is not None:  # compiled once, then read: the import alone is timed
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def time_import(checkout: Path, pycache: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of a fresh interpreter importing memorymodels.train from ``checkout``."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import memorymodels.train"], cwd=checkout,
                   env=checkout_env(checkout, pycache), check=True)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def submit(checkout: Path, profile: str, run_dir: Path, overrides: list[str]) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", JOB, profile, str(run_dir.parent), str(run_dir), EXPERIMENT,
                             *overrides], cwd=checkout, env=checkout_env(checkout), stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"startup.py: submitting from {checkout} failed (exit {proc.wait()})")
    return proc, json.loads(line)


def slurm_time(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def job_field(job_id: str, name: str) -> str:
    fields = dict(f.split("=", 1) for f in job_line(job_id, dict(os.environ)).split() if "=" in f)
    return fields.get(name, "")


def still_queued(job_id: str) -> str:
    """The job's state while squeue still lists it (pending, running, completing: processes left), else ""."""
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def first_step_after(run_dir: Path, start: float) -> float | None:
    """The time of the first metrics.jsonl record written after ``start``."""
    try:
        lines = RunPaths(run_dir).metrics.read_text().splitlines()
    except OSError:
        return None
    times = [r["time"] for r in map(json.loads, filter(None, lines)) if r.get("time", 0) >= start]
    return min(times) if times else None


def recorded_startups(run_dir: Path) -> list[dict | None]:
    """Each attempt's startup record: from the run's history, or from run.json's ``attempts`` where an older checkout
    (a 'before' measurement) kept them there."""
    history = attempts(run_dir)
    if any(a["startup"] for a in history):
        return [a["startup"] for a in history]
    info = read_json(RunPaths(run_dir).run_json) or {}
    return [a.get("startup") for a in info.get("attempts") or []]


def phases(run_dir: Path, attempt: int = -1) -> dict | None:
    startups = recorded_startups(run_dir)
    return (startups[attempt] or {}).get("phases") if startups else None


def one_node_job(checkout: Path, profile: str, run_dir: Path) -> dict:
    """One debug job: seconds from its start to its first step, and the phases its trainer recorded."""
    proc, job = submit(checkout, profile, run_dir, ONE_NODE)
    if profile == "local":
        started = process_start(job["pid"])
        proc.stdout.read()
        if proc.wait() != 0 or started is None:
            raise SystemExit(f"startup.py: the job from {checkout} failed (exit {proc.returncode}); see {run_dir}")
    else:
        proc.wait()
        wait_until(lambda: not still_queued(job["job_id"]), 300, f"job {job['job_id']} to end")
        if job_field(job["job_id"], "JobState") != "COMPLETED":
            raise SystemExit(f"startup.py: job {job['job_id']} from {checkout} did not complete; see {run_dir}")
        started = slurm_time(job_field(job["job_id"], "StartTime"))
    return {"first_step_s": first_step_after(run_dir, started) - started, "phases": phases(run_dir)}


def requeued_job(checkout: Path, run_dir: Path) -> dict:
    """A two-node debug job preempted after its first checkpoint: seconds from the requeued attempt's start to its
    first step, and the phases its trainer recorded."""
    proc, job = submit(checkout, "local-slurm-2node", run_dir, TWO_NODES)
    proc.wait()
    job_id = job["job_id"]
    try:
        wait_until(lambda: (run_dir / "checkpoint-20" / "COMPLETE").exists(), 300, f"job {job_id}'s checkpoint")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        wait_until(lambda: "JobState=PENDING" in job_line(job_id, dict(os.environ)), 120, f"job {job_id}'s requeue")
        release_requeued(job_id, dict(os.environ))
        wait_until(lambda: job_field(job_id, "JobState") == "RUNNING" and job_field(job_id, "Restarts") == "1", 120,
                   f"job {job_id}'s second attempt")
        started = slurm_time(job_field(job_id, "StartTime"))
        first = wait_until(lambda: first_step_after(run_dir, started), 300, f"job {job_id}'s first step again")
        recorded = wait_until(lambda: len(recorded_startups(run_dir)) == 2 and recorded_startups(run_dir)[-1], 60,
                              "the second attempt's startup") and phases(run_dir)
    finally:  # the next measurement starts once this job's processes are gone
        subprocess.run(["scancel", job_id], check=False)
        wait_until(lambda: not still_queued(job_id), 120, f"job {job_id} to end")
    return {"first_step_s": first - started, "phases": recorded}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, min {min(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


def job_lines(name: str, what: str, jobs: list[dict]) -> list[str]:
    lines = [f"{name}: {what}, start to first step: {summary([j['first_step_s'] for j in jobs])}"]
    recorded = [j["phases"] for j in jobs if j["phases"]]
    if recorded:
        ends = {p: statistics.median(r[p] for r in recorded if p in r) for p in PHASES if any(p in r for r in recorded)}
        lines.append(f"{name}: {what}, recorded phases (median end, s after the start): "
                     + ", ".join(f"{p} {e:.2f}" for p, e in ends.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH",
                        help="another checkout to measure beside this one (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=("local", "local-slurm"), default="local",
                        help="where the one-node job runs (local-slurm: the local cluster, SLURM_CONF)")
    parser.add_argument("--requeue", action="store_true", help="also a requeued two-node attempt (local-slurm-2node)")
    args = parser.parse_args(argv)
    checkouts = {name: Path(path).resolve() for name, path in (c.split("=", 1) for c in args.checkout)}
    checkouts["after"] = ROOT
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, profile {args.profile}, runs under {work}", flush=True)
    imports = {name: [] for name in checkouts}
    jobs = {name: [] for name in checkouts}
    requeued = {name: [] for name in checkouts}
    for name, checkout in checkouts.items():  # not timed: bytecode, data, the code snapshot
        time_import(checkout, work / "pycache" / name)
        one_node_job(checkout, args.profile, work / name / "warm")
    for rnd in range(args.rounds):
        for name, checkout in checkouts.items():
            imports[name].append(time_import(checkout, work / "pycache" / name))
            jobs[name].append(one_node_job(checkout, args.profile, work / name / f"round{rnd}"))
            line = (f"round {rnd} {name}: import {imports[name][-1][0]:.2f} s, one-node job start to first step "
                    f"{jobs[name][-1]['first_step_s']:.2f} s")
            if args.requeue:
                requeued[name].append(requeued_job(checkout, work / name / f"requeue{rnd}"))
                line += f", requeued two-node attempt {requeued[name][-1]['first_step_s']:.2f} s"
            print(f"{line} (load {os.getloadavg()[0]:.1f})", flush=True)
    for name in checkouts:
        print(f"{name}: import memorymodels.train: wall {summary([w for w, _ in imports[name]])}; "
              f"CPU {summary([c for _, c in imports[name]])}")
        print("\n".join(job_lines(name, f"one-node job ({args.profile})", jobs[name])))
        if args.requeue:
            print("\n".join(job_lines(name, "requeued two-node attempt", requeued[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
