"""Dashboard refresh benchmark: 10,000 queued array tasks on the local Slurm, one refresh (collection + rendering).

    .venv/bin/python launch/local_cluster.py up
    .venv/bin/python benchmarks/status.py                       # 10,000 tasks; writes benchmarks/status.md
    .venv/bin/python benchmarks/status.py --tasks 2000 --out -  # a quick look, markdown on stdout

What it does, in one run:

1. submits one held job array of ``--tasks`` tasks (``sbatch --hold``: they stay queued) and a journal entry for
   it as a sweep (one cell per task, with hyperparameter values and a run directory each), in a temporary state
   directory, so the dashboard sees what a real 10,000-cell sweep shows;
2. times ``Collector.refresh()`` followed by rendering the live view onto a 200x50 console (the screen the
   dashboard fills: pending tasks collapse to one range row), ``--repeat`` times, counting every Slurm command
   the collector runs; then the same without a screen limit (``--once``) and for ``--all`` (every job of the
   user from squeue and sacct, no journal: its size depends on what else ran on the cluster that day);
3. cancels the array (also on failure) and writes the markdown table.

Target (issue 8): one refresh <= 0.5 s with one ``squeue`` and at most one ``sacct`` call.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from launch.monitor import queue  # noqa: E402
from launch.slurm.client import run_slurm  # noqa: E402
from launch.localcluster.cluster import slurm_environ  # noqa: E402
from launch.monitor.dashboard import render_view  # noqa: E402

TARGET_S = 0.5


class Counting:
    """The collector's Slurm runner, counting calls per command."""

    def __init__(self, env: dict):
        self.env, self.calls, self.seconds = env, {}, 0.0

    def __call__(self, argv: list[str]) -> str:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        start = time.perf_counter()
        try:
            return run_slurm(argv, env=self.env)
        finally:
            self.seconds += time.perf_counter() - start


def submit_array(tasks: int, env: dict) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--hold", f"--array=0-{tasks - 1}", "-J", "mm-status-bench",
                          "-o", "/dev/null", "--wrap", "true"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"sbatch --array=0-{tasks - 1} failed: {out.stderr.strip()} (is the local cluster up? "
                         f"python launch/local_cluster.py up; MaxArraySize must exceed {tasks})")
    return out.stdout.strip().split(";")[0]


def write_journal(folder: Path, array_id: str, tasks: int) -> None:
    folder.mkdir(parents=True)
    jobs = [{"job_id": f"{array_id}_{i}", "name": f"lr{i % 100}-dim{64 * (1 + i // 100 % 4)}",
             "run_dir": str(folder.parent / "runs" / f"cell{i}"),
             "cell": {"train.learning_rate": round(1e-4 * (1 + i % 100), 6), "model.dim": 64 * (1 + i // 100 % 4)},
             "stdout": str(folder.parent / "logs" / f"{i}.out"), "stderr": str(folder.parent / "logs" / f"{i}.err")}
            for i in range(tasks)]
    data = {"submission_id": "bench", "created": time.time(), "profile": "local-slurm", "kind": "sweep",
            "sweep": {"name": "bench", "file": "sweeps/bench.yaml"}, "jobs": jobs}
    (folder / "bench.json").write_text(json.dumps(data))


def time_refresh(collector: queue.Collector, counter: Counting, *, height: int, max_rows: int | None,
                 repeat: int) -> dict:
    times, cpu, slurm, calls, rows = [], [], [], [], 0
    for _ in range(repeat):
        counter.calls, counter.seconds = {}, 0.0
        console = Console(file=io.StringIO(), width=200, height=height, color_system=None)
        start, start_cpu = time.perf_counter(), _cpu()
        snapshot = collector.refresh()
        console.print(render_view(snapshot, now=time.time(), width=200, max_rows=max_rows))
        times.append(time.perf_counter() - start)
        cpu.append(_cpu() - start_cpu)
        slurm.append(counter.seconds)
        calls.append(dict(counter.calls))
        rows = len(snapshot.rows)
        assert not snapshot.stale, snapshot.error
    steady = times[1:] or times
    return {"median": statistics.median(steady), "max": max(steady), "first": times[0], "calls": calls, "rows": rows,
            "cpu_first": cpu[0], "cpu_median": statistics.median(cpu[1:] or cpu),
            "slurm_first": slurm[0], "slurm_median": statistics.median(slurm[1:] or slurm)}


def _cpu() -> float:
    """CPU seconds of this process and of the Slurm commands it ran (not the controller's)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=6, help="refreshes per case (the first is reported apart)")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".md")), help="markdown file, or - for stdout")
    args = parser.parse_args(argv)
    env = slurm_environ()
    counter = Counting(env)
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="mm-status-bench-"))
    array_id = submit_array(args.tasks, env)
    try:
        write_journal(root / "journal", array_id, args.tasks)
        results = {}
        live = queue.Collector(journal_dir=root / "journal", run=counter)
        results["live view (journal, 200x50 screen)"] = time_refresh(live, counter, height=50, max_rows=48,
                                                                     repeat=args.repeat)
        results["--once (no screen limit; queued tasks as one range row)"] = time_refresh(
            live, counter, height=50, max_rows=None, repeat=max(1, args.repeat // 2))
        everyone = queue.Collector(journal_dir=root / "none", all_jobs=True, run=counter)
        results["--all (no journal), 200x50 screen"] = time_refresh(everyone, counter, height=50, max_rows=48,
                                                                    repeat=args.repeat)
    finally:
        subprocess.run(["scancel", array_id], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    lines = [
        "## Dashboard refresh (`launch/status.py`, issue 8)",
        "",
        f"Command: `.venv/bin/python benchmarks/status.py --tasks {args.tasks} --repeat {args.repeat}` on the local "
        f"Slurm ({platform.machine()}, {os.cpu_count()} CPUs, load average {load_before:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after, Python {platform.python_version()}); one held array "
        f"of {args.tasks} tasks, journal with one sweep cell per task. A refresh = `Collector.refresh()` + "
        "rendering the view on a 200-column console; Slurm calls counted per refresh. *first*: the first refresh "
        "of a new dashboard (reads the 10,000-job journal); median/max: the refreshes after it, what the live view "
        "repeats every interval. The target is judged on every refresh, the first included. CPU: seconds of CPU "
        "used by the dashboard process and its squeue/sacct children (wall time on a loaded machine waits for a "
        "CPU; the controller's own time is not included). *Waiting for Slurm*: wall time inside the squeue/sacct "
        "calls (the controller's answer included).",
        "",
        "| refresh | rows | first (s) | median (s) | max (s) | waiting for Slurm, first / median (s) "
        "| CPU first / median (s) | Slurm calls per refresh | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in results.items():
        calls = sorted({", ".join(f"{k} {v}" for k, v in sorted(c.items())) for c in r["calls"]})
        ok = max(r["max"], r["first"]) <= TARGET_S and all(c.get("squeue", 0) == 1 and c.get("sacct", 0) <= 1 for c in r["calls"])
        lines.append(f"| {name} | {r['rows']} | {r['first']:.3f} | {r['median']:.3f} | {r['max']:.3f} | "
                     f"{r['slurm_first']:.2f} / {r['slurm_median']:.2f} | {r['cpu_first']:.2f} / {r['cpu_median']:.2f} | "
                     f"{' / '.join(calls)} | {'met' if ok else 'MISSED'} (<= {TARGET_S} s, 1 squeue, <= 1 sacct) |")
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        print(text)
    else:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
