"""Benchmark: submit a 1,000-cell sweep to the local Slurm, from command to job ids, counting sbatch calls.

    python launch/local_cluster.py up
    python benchmarks/sweep_submit.py                 # 1,000 cells, held and cancelled right after
    python benchmarks/sweep_submit.py --cells 2500 --max-array-size 1001

It times ``python launch/submit.py --profile <held profile> --sweep <file> --json`` as a subprocess (interpreter start
included), the way a user runs it. The profile extends ``local-slurm`` with ``sbatch_extra: {hold: true}``, so no
training starts; every array is cancelled (``scancel``) as soon as the ids are printed. ``sbatch`` calls are counted
by a wrapper put first on PATH that appends one line to a file and then runs the real ``sbatch``. The run
directories go to a temporary folder under ``runs/`` (the local-slurm profile's checkpoint root, so the file system
is the one real sweeps write to), deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_root() -> Path:
    root = REPO / "runs"
    root.mkdir(exist_ok=True)
    return root


def write_inputs(folder: Path, cells: int, max_array_size: int) -> tuple[Path, Path]:
    """A held profile and a sweep of ``cells`` cells over the debug experiment: a grid of 4 kernels x cells/4 seeds
    (or a list of seeds when ``cells`` is not a multiple of 4)."""
    profile = folder / "held.yaml"
    profile.write_text(f"extends: local-slurm\nmax_array_size: {max_array_size}\narray_parallelism: 4\n"
                       "sbatch_extra: {hold: true}\n")
    if cells % 4 == 0:
        grid = f"{{model.params.kernel: [1, 2, 4, 8], train.seed: {list(range(cells // 4))}}}"
    else:
        grid = f"{{train.seed: {list(range(cells))}}}"
    sweep = folder / "bench.yaml"
    sweep.write_text(f"experiment: {REPO / 'configs/experiments/debug.yaml'}\n"
                     f"overrides: {{output.checkpoint_root: {folder / 'runs'}}}\ngrid: {grid}\n")
    return profile, sweep


def counting_sbatch(folder: Path) -> tuple[dict, Path]:
    """An environment whose ``sbatch`` logs each call to a file, then runs the real one."""
    real = shutil.which("sbatch")
    if real is None:
        sys.exit("sbatch is not installed; start the local cluster first: python launch/local_cluster.py up")
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    calls = folder / "sbatch-calls.txt"
    wrapper = bin_dir / "sbatch"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    from launch.localcluster.cluster import slurm_environ

    env = slurm_environ()  # SLURM_CONF of the project's cluster, found before the state folder is moved
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env, calls


def compare_planning(folder: Path, cells: int, max_array_size: int) -> tuple[float, float]:
    """Seconds to plan every cell: ``plan_sweep`` (the experiment file read once for all cells) vs ``plan_job`` for
    each cell on its own (reading it each time)."""
    from launch.planning.plan import plan_job
    from launch.planning.profiles import load_profile
    from launch.planning.sweep_file import cell_items, load_sweep
    from launch.planning.sweep import plan_sweep

    profile_path, sweep_path = write_inputs(folder, cells, max_array_size)
    profile, sweep = load_profile(profile_path), load_sweep(sweep_path)
    start = time.perf_counter()
    plan = plan_sweep(sweep, profile)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    common = cell_items(sweep.overrides)
    slow = [plan_job(profile, plan.jobs[0].experiment, overrides=common + cell_items(c.overrides), run_dir=c.run_dir,
                     request=plan.request) for c in plan.cells]
    per_cell = time.perf_counter() - start
    assert slow == plan.jobs
    return fast, per_cell


def phases(folder: Path, cells: int, max_array_size: int) -> dict[str, float]:
    """One submission in-process with the wall time of each phase (the functions are wrapped, not changed)."""
    import io

    from launch.planning import sweep as sweeps
    from launch.planning.profiles import load_profile
    from launch.planning.sweep_file import load_sweep
    from launch.submission import submit
    from launch.submission import sweep as submission

    times: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    wrapped = [(sweeps, "plan_sweep", "plan every cell"), (submission, "active_cells", "squeue (queued cells)"),
               (submission, "preflight", "preflight (scontrol, sbatch --test-only)"),
               (submit, "write_launch_files", "launcher: launch files"), (submit.journal, "update", "journal"),
               (submission, "submit_arrays", "launcher: submit_arrays (all of it)")]
    originals = [(module, attr, getattr(module, attr)) for module, attr, _ in wrapped]
    for module, attr, name in wrapped:
        setattr(module, attr, timed(name, getattr(module, attr)))
    try:
        profile, sweep = write_inputs(folder, cells, max_array_size)
        start = time.perf_counter()
        plan = sweeps.plan_sweep(load_sweep(sweep), load_profile(profile))
        result = submission.submit_sweep(plan, log=io.StringIO())
        times["total"] = time.perf_counter() - start
    finally:
        for module, attr, fn in originals:
            setattr(module, attr, fn)
    subprocess.run(["scancel", *[a["job_id"] for a in result["arrays"]]], check=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--max-array-size", type=int, default=1001)
    parser.add_argument("--repeat", type=int, default=3, help="submissions timed (each into a fresh folder)")
    args = parser.parse_args()
    from launch.localcluster.cluster import slurm_environ

    os.environ["SLURM_CONF"] = slurm_environ()["SLURM_CONF"]
    rows = []
    for attempt in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix=".sweep-bench-", dir=bench_root()) as tmp:
            folder = Path(tmp)
            profile, sweep = write_inputs(folder, args.cells, args.max_array_size)
            env, calls = counting_sbatch(folder)
            env["MEMORYMODELS_STATE"] = str(folder / "state")  # its journal entries stay out of the project's
            cmd = [sys.executable, str(REPO / "launch/submit.py"), "--profile", str(profile), "--sweep", str(sweep),
                   "--json"]
            cpu_before = _children_cpu()
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            cpu = _children_cpu() - cpu_before  # the command's own CPU time (user + sys), sbatch included
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
            result = json.loads(proc.stdout)
            ids = [a["job_id"] for a in result["arrays"]]
            subprocess.run(["scancel", *ids], env=env, check=True)
            sbatch_calls = len(calls.read_text().splitlines())
            cells = sum(len(a["cells"]) for a in result["arrays"])
            rows.append((attempt + 1, cells, len(ids), sbatch_calls, seconds, cpu, os.getloadavg()[0]))
            print(f"run {attempt + 1}: {cells} cells, {len(ids)} arrays ({', '.join(ids)}), {sbatch_calls} sbatch "
                  f"calls, {seconds:.2f} s from command to job ids ({cpu:.2f} s CPU)", file=sys.stderr)
    print("\n| run | cells | arrays | sbatch calls | command to job ids (s) | its CPU time (s) | load average |\n"
          "|---|---|---|---|---|---|---|")
    for run, cells, arrays, calls, seconds, cpu, load in rows:
        print(f"| {run} | {cells} | {arrays} | {calls} | {seconds:.2f} | {cpu:.2f} | {load:.1f} |")
    best = min(r[4] for r in rows)
    print(f"\nbest {best:.2f} s, median {sorted(r[4] for r in rows)[len(rows) // 2]:.2f} s (target: at most 5 s)")
    with tempfile.TemporaryDirectory(prefix=".sweep-bench-", dir=bench_root()) as tmp:
        fast, per_cell = compare_planning(Path(tmp), args.cells, args.max_array_size)
    print(f"\nplanning {args.cells} cells in-process: plan_sweep {fast:.2f} s, plan_job per cell {per_cell:.2f} s "
          f"(ratio {per_cell / fast:.1f}x; identical plans)")
    with tempfile.TemporaryDirectory(prefix=".sweep-bench-", dir=bench_root()) as tmp:
        os.environ["MEMORYMODELS_STATE"] = str(Path(tmp) / "state")
        times = phases(Path(tmp), args.cells, args.max_array_size)
    print("\none submission in-process, by phase:\n\n| phase | seconds |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
