"""Fault benchmark: one two-node job through a schedule of faults; goodput, and seconds from each fault to training again.

    MEMORYMODELS_STATE=... SLURM_CONF=... .venv/bin/python benchmarks/faults.py          # on the two-node local cluster
    .venv/bin/python benchmarks/faults.py --steps 300 --faults preempt:60 hang:140 kill:220 --hang-timeout 15

The job is ``launch/submit.py --profile local-slurm-2node --launcher torchrun`` on ``configs/experiments/debug.yaml``
(2 nodes x 2 CPU processes). Each fault is injected once the run has logged its step, into a training process on the
second node (found through its heartbeat file):

- ``preempt``: ``scancel --signal=USR2`` (what a preempting scheduler or ``sbatch --signal`` sends): checkpoint, requeue;
- ``hang``: SIGSTOP: the launcher sees the rank silent for ``hang_timeout_s``, writes the stacks, ends the attempt;
- ``kill``: SIGKILL: the attempt ends on both nodes at once.

Slurm holds a requeued job back about two minutes (BeginTime); the benchmark releases it (``scontrol update
StartTime=now``) three seconds after each requeue, as the tests do, so "to training again" measures the launcher
and the restart, not that hold; add 120 s per fault for a cluster that keeps it. For each fault the table gives the
seconds to its detection (the ``fault``/``signal`` event), to the requeue, to the next attempt's start, and to the
first step trained after it, the steps lost (trained past the last checkpoint, trained again), and at the end the
run's goodput from its history of attempts (kept training node-seconds / allocated node-seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorymodels.attempts import attempts, read_events  # noqa: E402
from memorymodels.heartbeat import read_beats  # noqa: E402
from memorymodels.metrics import read_metrics, run_goodput, run_progress  # noqa: E402
from memorymodels.rundir import RunPaths  # noqa: E402
from tests.launch.helpers import job_line, last_step, wait_until  # noqa: E402  (as benchmarks/models.py uses tests/)


def submit(root: Path, steps: int, save_steps: int, hang_timeout: int) -> dict:
    sets = [f"profile.checkpoint_root={root}", f"profile.hang_timeout_s={hang_timeout}", f"train.max_steps={steps}",
            "train.logging_steps=1", f"train.save_steps={save_steps}", "train.eval_steps=0", "train.batch_size=8",
            "train.seed=7"]
    args = [sys.executable, "launch/submit.py", "--profile", "local-slurm-2node", "--launcher", "torchrun",
            "--experiment", "configs/experiments/debug.yaml", "--json", *(a for s in sets for a in ("--set", s))]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"faults.py: submit.py exited {out.returncode}\n{out.stderr}")
    return json.loads(out.stdout)


def node2_rank(run_dir: Path, host: str) -> dict:
    def found():
        beats = [b for b in read_beats(RunPaths(run_dir).heartbeats)
                 if b.get("host") == host and b.get("phase") == "step" and Path(f"/proc/{b['pid']}").exists()]
        return max(beats, key=lambda b: b["rank"]) if beats else None
    return wait_until(found, 60, f"a training process on {host}")


def release_after_requeue(job_id: str, run_dir: Path, count: int) -> None:
    wait_until(lambda: sum(e["event"] == "requeue" for e in read_events(run_dir)) >= count, 180, f"requeue {count}")
    time.sleep(3)  # slurmd refuses credentials issued in the second they were revoked
    for _ in range(60):
        line = job_line(job_id, dict(os.environ))
        if "JobState=PENDING" in line:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        elif "JobState=RUNNING" in line and f"Restarts={count}" in line:
            return
        time.sleep(1)


def inject(kind: str, job_id: str, run_dir: Path, host: str) -> float:
    if kind == "preempt":
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    else:
        beat = node2_rank(run_dir, host)
        os.kill(beat["pid"], signal.SIGSTOP if kind == "hang" else signal.SIGKILL)
    return time.time()


def analyse(run_dir: Path, faults: list[tuple[str, int, float]]) -> list[dict]:
    events, metrics = read_events(run_dir), read_metrics(run_dir)
    starts = [e for e in events if e["event"] == "start"]
    rows = []
    for k, (kind, at_step, t) in enumerate(faults):
        detect = next((e["time"] for e in events if e["event"] in ("fault", "signal") and e["time"] >= t - 1), None)
        requeue = next((e["time"] for e in events if e["event"] == "requeue" and e["time"] >= t), None)
        exit_event = next((e for e in events if e["event"] == "exit" and e["time"] >= t), {})
        start = starts[k + 1]["time"] if len(starts) > k + 1 else None
        again = next((m["time"] for m in metrics if start and m["time"] > start), None)
        stopped_at = exit_event.get("step") or at_step
        resumed = next((m["step"] - 1 for m in metrics if start and m["time"] > start), None)
        rows.append({"fault": kind, "step": at_step,
                     "detected_s": None if detect is None else round(detect - t, 1),
                     "requeued_s": None if requeue is None else round(requeue - t, 1),
                     "restarted_s": None if start is None else round(start - t, 1),
                     "training_again_s": None if again is None else round(again - t, 1),
                     "steps_lost": None if resumed is None else max(0, stopped_at - resumed)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--hang-timeout", type=int, default=15)
    parser.add_argument("--faults", nargs="*", default=["preempt:60", "hang:140", "kill:220"],
                        help="KIND:STEP, KIND in preempt, hang, kill; none: the same job without faults")
    parser.add_argument("--root", type=Path, default=Path("/tmp/memorymodels-faults"))
    parser.add_argument("--host", default="node2", help="the node whose rank is hit")
    args = parser.parse_args(argv)
    root = args.root / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.time()
    job = submit(root, args.steps, args.save_steps, args.hang_timeout)
    job_id, run_dir = job["job_id"], Path(job["run_dir"])
    done = []
    for k, spec in enumerate(args.faults, 1):
        kind, at = spec.split(":")
        wait_until(lambda: last_step(run_dir) >= int(at), 600, f"step {at}")
        t = inject(kind, job_id, run_dir, args.host)
        done.append((kind, last_step(run_dir), t))
        release_after_requeue(job_id, run_dir, k)
    wait_until(lambda: (run_progress(run_dir).get("status") == "completed"
                        and any(e["event"] == "exit" and e.get("outcome") == "completed" for e in read_events(run_dir))),
               900, "the run to complete")
    rows = analyse(run_dir, done)
    print(f"job {job_id}: {args.steps} steps on 2 nodes x 2 processes, {len(done)} faults, "
          f"{time.time() - t0:.0f} s from submission to completion; run dir {run_dir}")
    print("| fault | at step | detected (s) | requeued (s) | next attempt (s) | training again (s) | steps lost |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {r['step']} | {r['detected_s']} | {r['requeued_s']} | {r['restarted_s']} | "
              f"{r['training_again_s']} | {r['steps_lost']} |")
    g = run_goodput(run_dir)
    print(f"goodput: {g.get('kept_node_s')} node-s of training kept / {g.get('allocated_node_s')} node-s allocated = "
          f"{g.get('ratio')} over {g.get('attempts')} attempts; "
          f"outcomes {[a['outcome'] for a in attempts(run_dir)]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as exc:  # wait_until's timeout (tests.launch.helpers): one line, as before
        raise SystemExit(f"faults.py: {exc}") from None
