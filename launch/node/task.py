"""What runs inside the job: one launcher process per node, and requeue that reaches through it to the trainer.

    # not run by hand: the submission pickles a NodeLaunch and submitit runs it in each Slurm task (one per node)
    python launch/status.py --history JOB_ID      # how each attempt ended (launch.records.events)

:class:`NodeLaunch` is a submitit ``Checkpointable``. In each Slurm task (one per node) its ``__call__`` sets
``HEAD_NODE``, ``HEAD_PORT``, ``NODE_RANK`` and ``RDZV_ID`` from Slurm's environment and runs the plan's launch
command (torchrun or ``accelerate launch``) as a child process with SIGUSR2 ignored: Slurm's ``--signal`` goes to
every process of the step, and SIGUSR2 would otherwise kill torchrun and the workers before they can save.

When the checkpoint signal arrives (SIGUSR2 from ``sbatch --signal`` before the time limit, from a preempting
scheduler or from ``scancel --signal=USR2``), each node's task sends SIGTERM straight to its training processes (the
workers below torchrun: torchrun itself would kill them 30 s after forwarding a signal), waits until they have saved a
checkpoint and exited (code 75), and the task of node 0 then lets submitit requeue the job (``scontrol requeue``).
The next attempt runs the same command; the trainer resumes from the newest complete checkpoint and records the job
id chain and restart count in run.json.

The node reads what the submission wrote and nothing else: the command in the pickled task, the accelerate config
and the resolved experiment in ``RUN_DIR/launch/``. Every attempt leaves lines in ``RUN_DIR/launch/events.jsonl``
(``launch.records.events``), so what happened is told apart afterwards: timeout, preemption, node failure and
program error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from launch.records.events import attempts_without_progress, record_event
from launch.slurm.submitit_adapter import requeue_signal
from memorymodels.fileio import tail_lines
from memorymodels.runs import run_progress

EXIT_REQUEUE = 75  # the trainer's code after a signal-triggered checkpoint (memorymodels.train.EXIT_REQUEUE)
TIMEOUT_MARGIN_S = 90  # Slurm may deliver the --signal up to a minute early
IGNORE_USR2 = 'trap "" USR2; exec '  # ignored dispositions survive exec and fork, down to every worker
TRAINER_EXITS = {2: " (a config or data error)",
                 65: " (the run directory cannot be used; the log says how to repair it)",
                 73: " (another trainer holds this run directory)",
                 74: " (the disk is full; free space, then resubmit)"}
"""What the trainer's exit codes mean (``memorymodels.train.EXIT_*``); none of them is requeued."""
MAX_ATTEMPTS_WITHOUT_PROGRESS = 3  # consecutive stopped attempts at the same step before requeueing stops












def _children() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and ')'
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _is_worker(pid: int) -> bool:
    """A torchrun/accelerate training process: it has LOCAL_RANK in its environment."""
    try:
        return b"\0LOCAL_RANK=" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def worker_pids(root: int) -> list[int]:
    """The training processes under the launcher ``root``: the topmost descendants with LOCAL_RANK set (DataLoader
    workers below them are left alone). Falls back to ``[root]`` when there are none (plain python, or workers not
    started yet: the launcher then forwards the signal itself)."""
    tree, found, todo = _children(), [], [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            if _is_worker(child):
                found.append(child)
            else:
                todo.append(child)
    return sorted(found) or [root]




def _log_tail(path: Path | None, lines: int = 20) -> str:
    """The last words of a failed run from its log: what the training processes printed just before torchrun's
    "failed (exitcode: N)" report when there is one (torchrun's own summary names no cause), else the last lines."""
    text = tail_lines(path, 1000)
    marks = [i for i, line in enumerate(text) if "failed (exitcode:" in line]
    if marks:
        start = marks[0]
        while start > 0 and "failed (exitcode:" not in text[start - 1] and marks[0] - start < lines:
            start -= 1
        return "\n".join(text[start:marks[0] + 1])
    return "\n".join(text[-lines:])


def _run_status(run_dir: Path) -> tuple[str | None, int | None]:
    """(run.json status, last step) as the trainer left them."""
    try:
        progress = run_progress(run_dir)
        return progress.get("status"), progress.get("step")
    except Exception:  # noqa: BLE001 - a half-written run dir must not hide the job's own outcome
        return None, None


class LaunchFailed(RuntimeError):
    """The training command failed; the message holds the exit code, the log path and the log's last lines."""


class NodeLaunch(submitit.helpers.Checkpointable):
    """One node's share of a planned job; submitit runs it once per Slurm task (``ntasks_per_node=1``)."""

    def __init__(self, *, name: str, command: str, run_dir: str | Path, env: dict[str, str], time_limit_s: int,
                 signal_before_end_s: int):
        self.name = name
        self.command = command
        self.run_dir = Path(run_dir)
        self.env = dict(env)
        self.time_limit_s = time_limit_s
        self.signal_before_end_s = signal_before_end_s
        self._proc: subprocess.Popen | None = None
        self._started = 0.0
        self._stopped_for: str | None = None
        self._signum = 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_proc=None, _stopped_for=None, _signum=0)
        return state

    # ---- inside the job -----------------------------------------------------------------------------------------

    def __call__(self) -> dict:
        job_env = submitit.JobEnvironment()
        self._started = time.time()
        rank0 = job_env.global_rank == 0
        restart = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        if rank0:
            record_event(self.run_dir, "start", job_id=job_env.job_id, restart_count=restart,
                         host=socket.gethostname(), nodes=list(job_env.hostnames), cluster=job_env.cluster)
        env = {**os.environ, **self.env, **self._rendezvous(job_env, restart)}
        env.pop("LOCAL_RANK", None)  # LOCAL_RANK marks the workers (see worker_pids)
        usr_sig = requeue_signal(job_env)
        submitit_handler = signal.getsignal(usr_sig)
        # The handler only notes the signal; the loop below acts on it (waiting on a child inside a signal handler
        # can deadlock on Popen's lock).
        signal.signal(usr_sig, lambda signum, frame: self._note_signal(signum))
        # Ctrl-C on a foreground local run (make demo): the training processes live in their own session so the
        # terminal's SIGINT does not kill them mid-step; this task asks them to checkpoint instead (no requeue).
        signal.signal(signal.SIGINT, lambda signum, frame: self._note_signal(signum, "interrupt"))
        self._proc = subprocess.Popen(["bash", "-c", IGNORE_USR2 + self.command], env=env, start_new_session=True)
        forwarded = False
        while (code := self._proc.poll()) is None:
            if self._stopped_for is not None and not forwarded:
                self._forward_stop(rank0)
                forwarded = True
            time.sleep(0.2)
        if self._stopped_for is not None:
            self._requeue_after_stop(code, job_env, usr_sig, submitit_handler)
        return self._finish(code, job_env)

    def _rendezvous(self, job_env, restart: int) -> dict[str, str]:
        """HEAD_NODE, HEAD_PORT, NODE_RANK, RDZV_ID from Slurm's environment (submitit parses the node list)."""
        raw = "".join(ch for ch in str(job_env.job_id) if ch.isdigit()) or str(os.getpid())
        port = 20000 + (int(raw) * 7 + restart * 131) % 20000  # a requeue on the same node gets a fresh port
        return {"HEAD_NODE": job_env.hostnames[0], "HEAD_PORT": str(port), "NODE_RANK": str(job_env.node),
                "RDZV_ID": f"{job_env.job_id}-{restart}"}

    def _timed_out(self) -> bool:
        """Whether the signal came because the time limit is near (else: preemption or a manual signal)."""
        due = self._started + self.time_limit_s - self.signal_before_end_s - TIMEOUT_MARGIN_S
        return time.time() >= due

    def _note_signal(self, signum: int, reason: str | None = None) -> None:
        if self._stopped_for is None:
            self._signum = signum
            self._stopped_for = reason or ("timeout" if self._timed_out() else "preemption")

    def _forward_stop(self, rank0: bool) -> None:
        """SIGTERM to this node's training processes (not to torchrun, which would kill them 30 s later)."""
        name = signal.Signals(self._signum).name
        if rank0:
            record_event(self.run_dir, "signal", reason=self._stopped_for, signal=name)
        print(f"launch: {name} ({self._stopped_for}) on {socket.gethostname()}: asking the training processes "
              f"to save a checkpoint and exit", file=sys.stderr, flush=True)
        for pid in worker_pids(self._proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _requeue_after_stop(self, code: int, job_env, usr_sig, submitit_handler) -> None:
        """After a checkpoint signal: node 0 has submitit requeue the job (it exits); a run that completed anyway
        falls through to :meth:`_finish`."""
        status, step = _run_status(self.run_dir)
        if status == "completed" or (code == 0 and status != "interrupted"):
            return
        if job_env.global_rank != 0:
            sys.exit(0)  # node 0 requeues the whole job
        if self._stopped_for == "interrupt":
            record_event(self.run_dir, "exit", code=code, outcome="interrupted-outside", step=step)
            raise LaunchFailed(f"{self.name}: stopped by Ctrl-C; checkpoint at step {step} in {self.run_dir}. Run the "
                               f"same command again to resume.")
        stalled = attempts_without_progress(self.run_dir, step)
        if stalled >= MAX_ATTEMPTS_WITHOUT_PROGRESS:
            record_event(self.run_dir, "exit", code=code, outcome="no-progress", step=step)
            raise LaunchFailed(
                f"{self.name}: {stalled + 1} attempts in a row were stopped at step {step or 0} without training a "
                f"step; not requeued again. The time left after startup is too short: raise the profile's time_limit "
                f"or lower signal_before_end_s, then submit again (the run resumes from its checkpoint).")
        record_event(self.run_dir, "exit", code=code, outcome="stopped", step=step)
        if callable(submitit_handler):
            submitit_handler(usr_sig, None)  # calls checkpoint(), then scontrol requeue, then exits
        raise LaunchFailed(f"{self.name}: stopped by {signal.Signals(self._signum).name} at step {step}, but no "
                           f"requeue handler is installed (not run by submitit); submit again to resume")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on node 0 once the training processes have saved and exited: requeue this job."""
        record_event(self.run_dir, "requeue", reason=self._stopped_for or "preemption")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _finish(self, code: int, job_env) -> dict:
        status, step = _run_status(self.run_dir)
        rank0 = job_env.global_rank == 0
        if code == 0 or status == "completed":
            if rank0:
                record_event(self.run_dir, "exit", code=code, outcome="completed", step=step)
            return {"run_dir": str(self.run_dir), "status": "completed", "step": step}
        log = self._log_path(job_env)
        tail = _log_tail(log)
        if status == "interrupted":
            message = (f"{self.name}: the training processes were stopped by a signal that did not come through the "
                       f"launcher (scancel without --signal=USR2, or the scheduler); they saved a checkpoint at step "
                       f"{step} in {self.run_dir}. Submit the same command again to resume.")
            outcome = "interrupted-outside"
        else:
            message = (f"{self.name}: training failed with exit code {code}{TRAINER_EXITS.get(code, '')} on "
                       f"{socket.gethostname()}; "
                       f"log {log}\n--- last lines ---\n{tail}")
            outcome = "failed"
        if rank0:
            record_event(self.run_dir, "exit", code=code, outcome=outcome, step=step, log_tail=tail)
        raise LaunchFailed(message)

    @staticmethod
    def _log_path(job_env) -> Path | None:
        try:
            return Path(job_env.paths.stderr)
        except Exception:  # noqa: BLE001 - no submitit folder (run directly): no log to point at
            return None
