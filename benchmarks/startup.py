"""Startup benchmark: how soon a one-node debug job trains after it starts, and what ``import memorymodels.train`` costs.

    .venv/bin/python benchmarks/startup.py                                        # this checkout, 3 rounds
    git worktree add --detach /tmp/startup-before 7511d19
    .venv/bin/python benchmarks/startup.py --checkout before=/tmp/startup-before --rounds 5   # side by side

Each checkout named by ``--checkout NAME=PATH`` (this one is ``after``) is measured with the same interpreter, in
turn within every round, so both see the same load:

- ``import memorymodels.train`` in a fresh interpreter run from the checkout (wall and CPU seconds), its bytecode
  cached beforehand under a private ``PYTHONPYCACHEPREFIX``: the imports themselves, not compiling our modules;
- the one-node debug job (``configs/experiments/debug.yaml``, 3 steps) through the ``local`` profile: submitit's local
  executor runs the same ``NodeLaunch`` a Slurm task runs (code snapshot, torchrun where the checkout uses it, the
  trainer), with ``cpus_per_gpu=1`` as on the local Slurm cluster. Its start is the start of the local executor's job
  process (read from /proc while it runs; Slurm's own start would come a scheduling step earlier and be counted in
  whole seconds); its first step is the time of the first metrics.jsonl record (``logging_steps=1``), which both
  checkouts write. Where the checkout records startup phases (``memorymodels.startup``), their medians are listed.

Each checkout first runs one job that is not timed (data preparation, the code snapshot). The environment is passed
through as it is; ``PYTHONDONTWRITEBYTECODE`` (which keeps a job from caching its compiled modules) is printed.
Results: BENCHMARKS.md, "Startup".
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

from memorymodels.startup import PHASES, process_start  # noqa: E402

EXPERIMENT = "configs/experiments/debug.yaml"
OVERRIDES = ["train.max_steps=3", "train.logging_steps=1", "train.eval_steps=0", "train.save_steps=1000"]

# Run in the checkout under test (its launch/ and memorymodels/ first on the path): plan and submit the debug job
# through the local profile, print the local job's process id at once, then wait for the job.
JOB = """
import json, sys
from pathlib import Path
from launch.planning.plan import plan_job
from launch.planning.profiles import load_profile
from launch.submission.submit import submit_job
root, run_dir, experiment, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
plan = plan_job(load_profile("local", [f"checkpoint_root={root}", "cpus_per_gpu=1"]), experiment,
                overrides=overrides, run_dir=run_dir)
submission = submit_job(plan)
job = submission.handles[submission.jobs[0]["job_id"]]
print(json.dumps({"pid": job._process.pid}), flush=True)
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


def run_job(checkout: Path, root: Path, name: str) -> dict:
    """One debug job from ``checkout``: seconds from its process start to the first step, and recorded phases."""
    run_dir = root / name
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(root), str(run_dir), EXPERIMENT, *OVERRIDES],
                            cwd=checkout, env=checkout_env(checkout), stdout=subprocess.PIPE, text=True)
    pid = json.loads(proc.stdout.readline())["pid"]
    started = process_start(pid)
    proc.stdout.read()
    if proc.wait() != 0 or started is None:
        raise SystemExit(f"startup.py: the job from {checkout} failed (exit {proc.returncode}); see {run_dir}")
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["time"]
    info = json.loads((run_dir / "run.json").read_text())
    return {"first_step_s": first - started, "phases": (info["attempts"][-1].get("startup") or {}).get("phases")}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s, min {min(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


def report(name: str, imports: list[tuple[float, float]], jobs: list[dict]) -> list[str]:
    lines = [f"{name}: import memorymodels.train: wall {summary([w for w, _ in imports])}; "
             f"CPU {summary([c for _, c in imports])}",
             f"{name}: job start to first step: {summary([j['first_step_s'] for j in jobs])}"]
    recorded = [j["phases"] for j in jobs if j["phases"]]
    if recorded:
        ends = {p: statistics.median(r[p] for r in recorded if p in r) for p in PHASES if any(p in r for r in recorded)}
        lines.append(f"{name}: recorded phases (median end, s after the start): "
                     + ", ".join(f"{p} {e:.2f}" for p, e in ends.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=PATH",
                        help="another checkout to measure beside this one (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    checkouts = {name: Path(path).resolve() for name, path in (c.split("=", 1) for c in args.checkout)}
    checkouts["after"] = ROOT
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, runs under {work}", flush=True)
    imports = {name: [] for name in checkouts}
    jobs = {name: [] for name in checkouts}
    for name, checkout in checkouts.items():  # not timed: bytecode, data, the code snapshot
        time_import(checkout, work / "pycache" / name)
        run_job(checkout, work / name, "warm")
    for rnd in range(args.rounds):
        for name, checkout in checkouts.items():
            imports[name].append(time_import(checkout, work / "pycache" / name))
            jobs[name].append(run_job(checkout, work / name, f"round{rnd}"))
            print(f"round {rnd} {name}: import {imports[name][-1][0]:.2f} s, job start to first step "
                  f"{jobs[name][-1]['first_step_s']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    for name in checkouts:
        print("\n".join(report(name, imports[name], jobs[name])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
