"""What runs inside the job: one launcher process per node, and requeue that reaches through it to the trainer.

    # not run by hand: the submission pickles a NodeLaunch and submitit runs it in each Slurm task (one per node)
    python launch/status.py --history JOB_ID      # how each attempt ended (memorymodels.attempts)

:class:`NodeLaunch` is a submitit ``Checkpointable``. In each Slurm task (one per node) its ``__call__`` sets
``HEAD_NODE``, ``HEAD_PORT``, ``NODE_RANK`` and ``RDZV_ID`` from Slurm's environment and runs the plan's launch
command (torchrun or ``accelerate launch``; the trainer itself for one process on one node) as a child process with
SIGUSR2 ignored: Slurm's ``--signal`` goes to every process of the step, and SIGUSR2 would otherwise kill torchrun
and the workers before they can save. A trainer started directly is its own only worker (:func:`worker_pids`): it gets
the signals, its heartbeat is watched and its death by a signal is reported as torchrun's report of a killed rank
would be; its exit code reaches the task unchanged (torchrun turns every failure into 1).

When the checkpoint signal arrives (SIGUSR2 from ``sbatch --signal`` before the time limit, from a preempting
scheduler or from ``scancel --signal=USR2``), each node's task sends SIGTERM straight to its training processes (the
workers below torchrun: torchrun itself would kill them 30 s after forwarding a signal), waits until they have saved a
checkpoint and exited (code 75), and the task of node 0 then lets submitit requeue the job (``scontrol requeue``).
The next attempt runs the same command; the trainer resumes from the newest complete checkpoint and records the job
id chain and restart count in run.json.

Failure containment (README, "Failure containment"). While training runs, each node's task watches its local
ranks' heartbeats (``memorymodels.heartbeat``, ``launch.node.watchdog``) and the run's events every second:

- a local rank silent for longer than its phase allows (the profile's ``hang_timeout_s``) is a hang: the task writes
  the stacks of every local rank to ``RUN_DIR/launch/hangs/``, records a ``fault`` event naming rank, node and stack
  files, and ends its training processes (SIGKILL: a hung peer leaves nothing to save);
- a node whose training ends with an error records a ``fault`` too (a rank killed by a signal, read from torchrun's
  report in the node's log, or a program error);
- a ``fault`` of this attempt from another node ends this node's training at once.

Node 0 decides for the job: it waits a few seconds for the other nodes' reports, names the cause in one line, and
requeues the job (``scontrol requeue``: the run resumes from its last complete checkpoint) unless the trainer's own
exit code says a retry cannot help (config, run directory, lock, full disk) or ``max_failure_retries`` attempts in a
row already failed at the same step; the node that hung or lost a rank is excluded from the retry when the partition
has nodes to spare (``launch.slurm.jobcontrol``). The other nodes' tasks exit 0, as do node 0's on every requeue, so
``srun --kill-on-bad-exit`` ends the step on every node only when a task really failed (or its node died).

The node reads what the submission wrote and nothing else: the command in the pickled task, the accelerate config
and the resolved experiment in ``RUN_DIR/launch/`` (paths from ``memorymodels.rundir.RunPaths``). Every attempt leaves
lines in the run's history (``memorymodels.attempts``), so what happened is told apart afterwards: timeout (by Slurm's
end time for the job), preemption, hang, a dead rank, node failure and program error; node 0 first records Slurm's
accounting of earlier attempts that could not say how they ended (a cancel, a kill, a lost node), and this attempt's
allocation start, so the goodput counts every allocation. The node task writes no run.json: the trainer owns it.
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

from launch.node import rendezvous, watchdog
from launch.node.faults import blame, checkpoint_step, error_line, fault_cause, why_not_retried
from launch.slurm import jobcontrol
from launch.slurm.client import SlurmError
from launch.slurm.submitit_adapter import requeue_signal
from memorymodels.attempts import (attempt_faults, attempts, attempts_without_progress, failures_without_progress,
                                   record_event, record_reconciled, unsettled)
from memorymodels.fileio import tail_lines
from memorymodels.heartbeat import read_beats
from memorymodels.metrics import run_progress
from memorymodels.rundir import RunPaths, exit_meaning
from memorymodels.startup import allocation_start, attempt_env

TIMEOUT_MARGIN_S = 90  # Slurm may deliver the --signal up to a minute early
WATCH_INTERVAL_S = 1.0  # how often heartbeats and the other nodes' faults are looked at
CLOCK_SKEW_S = 5.0  # run.json's attempt start (rank 0's clock) against this task's start
FAULT_GRACE_S = 10.0  # how long node 0 waits for the other nodes' reports before naming a cause
PEER_GRACE_S = 5.0  # how long a node whose peer reported a fault lets its own launcher end first (a killed local rank)
IGNORE_USR2 = 'trap "" USR2; exec '  # ignored dispositions survive exec and fork, down to every worker
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


def _run_status(run_dir: Path, since: float | None = None) -> tuple[str | None, int | None]:
    """(run.json status, last step) as the trainer left them; the status is None when the trainer has not recorded an
    attempt started after ``since`` (run.json still describes an earlier attempt: this one died before it wrote)."""
    try:
        progress = run_progress(run_dir)
        status = progress.get("status")
        if since is not None:
            trainer = next((a["trainer"] for a in reversed(attempts(run_dir)) if a["trainer"]), None) or {}
            status = trainer.get("status") if (trainer.get("start") or 0) >= since - CLOCK_SKEW_S else None
        return status, progress.get("step")
    except Exception:  # noqa: BLE001 - a half-written run dir must not hide the job's own outcome
        return None, None


class LaunchFailed(RuntimeError):
    """The training command failed; the message holds the exit code, the log path and the log's last lines."""


class NodeLaunch(submitit.helpers.Checkpointable):
    """One node's share of a planned job; submitit runs it once per Slurm task (``ntasks_per_node=1``)."""

    def __init__(self, *, name: str, command: str, run_dir: str | Path, env: dict[str, str], time_limit_s: int,
                 signal_before_end_s: int, hang_timeout_s: int | None = None, max_failure_retries: int = 2):
        self.name = name
        self.command = command
        self.run_dir = Path(run_dir)  # every path in it: self.paths (memorymodels.rundir)
        self.env = dict(env)
        self.time_limit_s = time_limit_s
        self.signal_before_end_s = signal_before_end_s
        self.hang_timeout_s = hang_timeout_s
        self.max_failure_retries = max_failure_retries
        self._proc: subprocess.Popen | None = None
        self._started = 0.0
        self._stopped_for: str | None = None
        self._signum = 0
        self._fault: dict | None = None
        self._attempt: dict = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_proc=None, _stopped_for=None, _signum=0, _fault=None, _attempt={})
        return state

    def __setstate__(self, state: dict) -> None:
        # tasks pickled before the failure settings existed
        self.__dict__.update({"hang_timeout_s": None, "max_failure_retries": 2, "_fault": None, "_attempt": {}},
                             **state)

    # ---- inside the job -----------------------------------------------------------------------------------------

    def __call__(self) -> dict:
        job_env = submitit.JobEnvironment()
        self._started = time.time()
        rank0 = job_env.global_rank == 0
        restart = int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)
        log = self._log_path(job_env)
        self._attempt = {"job_id": str(job_env.job_id), "restart_count": restart, "host": socket.gethostname(),
                         "log": log, "log_offset": watchdog.log_size(log), "slurm": job_env.cluster == "slurm"}
        allocated = self._allocated_at()
        if rank0:
            self._settle_earlier_attempts()
            record_event(self.run_dir, "start", job_id=job_env.job_id, restart_count=restart,
                         host=socket.gethostname(), nodes=list(job_env.hostnames), cluster=job_env.cluster,
                         allocated=allocated)
        env = {**os.environ, **self.env, **self._rendezvous(job_env, restart),
               # the trainer records its startup phases from the allocation's start (memorymodels.startup)
               **attempt_env(job_env.job_id, restart, allocated, self._started),
               # torchrun --tee prefixes each line of a rank's output with this: node and global rank
               "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": f"[{socket.gethostname().split('.')[0]} rank ${{rank}}]:"}
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
        code = self._supervise(rank0)
        if self._stopped_for is not None:
            self._requeue_after_stop(code, job_env, usr_sig, submitit_handler)
        status, _ = _run_status(self.run_dir, self._started)
        if self._fault is not None or (code != 0 and status not in ("completed", "interrupted")):
            return self._after_failure(code, job_env)
        return self._finish(code, job_env)

    def _supervise(self, rank0: bool) -> int:
        """Wait for the training command; forward a checkpoint signal; every second look for a hung local rank and
        for another node's fault, and end this node's training on either. The command's exit code."""
        forwarded, next_watch = False, time.time() + WATCH_INTERVAL_S
        while (code := self._proc.poll()) is None:
            if self._stopped_for is not None and not forwarded:
                self._forward_stop(rank0)
                forwarded = True
            elif not forwarded and self._fault is None and time.time() >= next_watch:
                next_watch = time.time() + WATCH_INTERVAL_S
                self._fault = self._hang() or self._peer_fault()
                if self._fault is not None:
                    self._end_training()
            time.sleep(0.2)
        return code

    def _rendezvous(self, job_env, restart: int) -> dict[str, str]:
        """HEAD_NODE (the head's address as resolved on the head), HEAD_PORT (checked free there, outside the
        ephemeral range), NODE_RANK, RDZV_ID (``launch.node.rendezvous``)."""
        job_id, hosts = str(job_env.job_id), list(job_env.hostnames)
        head = {"addr": hosts[0], "port": rendezvous.derived_port(job_id, restart)}
        if len(hosts) > 1:
            folder = self.paths.rendezvous
            if job_env.node == 0:
                head = rendezvous.publish(folder, job_id, restart, hosts[1:])
            else:
                head = rendezvous.wait_for_head(folder, job_id, restart) or head
        return {"HEAD_NODE": str(head["addr"]), "HEAD_PORT": str(head["port"]), "NODE_RANK": str(job_env.node),
                "RDZV_ID": f"{job_env.job_id}-{restart}"}

    def _timed_out(self) -> bool:
        """Whether the signal came because the time limit is near (else: preemption or a manual signal), by Slurm's
        end time for the job (``SLURM_JOB_END_TIME``, else squeue: a time limit updated since the start counts),
        else by the time this task started."""
        end = None
        if os.environ.get("SLURM_JOB_END_TIME", "").isdigit():
            end = float(os.environ["SLURM_JOB_END_TIME"])
        if self._attempt.get("slurm"):
            end = jobcontrol.end_time(self._attempt["job_id"]) or end
        if end is None:
            end = self._started + self.time_limit_s
        return time.time() >= end - self.signal_before_end_s - TIMEOUT_MARGIN_S

    def _note_signal(self, signum: int, reason: str | None = None) -> None:
        if self._stopped_for is None:
            self._signum = signum
            self._stopped_for = reason or "pending"  # timeout or preemption: decided in the loop (it asks Slurm)

    def _forward_stop(self, rank0: bool) -> None:
        """SIGTERM to this node's training processes (not to torchrun, which would kill them 30 s later)."""
        if self._stopped_for == "pending":
            self._stopped_for = "timeout" if self._timed_out() else "preemption"
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

    # ---- faults -------------------------------------------------------------------------------------------------

    def _fault_event(self, cause: str, **fields: Any) -> dict:
        a = self._attempt
        return record_event(self.run_dir, "fault", cause=cause, host=a["host"], job_id=a["job_id"],
                            restart_count=a["restart_count"], **fields)

    def _hang(self) -> dict | None:
        """A fault event when a local rank has been silent too long, after writing every local rank's stacks."""
        beats_dir = self.paths.heartbeats
        # this attempt's beats only: a new worker may reuse the pid of an earlier attempt's rank
        beats = [b for b in read_beats(beats_dir) if b.get("time", 0) >= self._started]
        pids, host = set(worker_pids(self._proc.pid)), self._attempt["host"]
        hung = watchdog.silent_ranks(beats, pids, host, self.hang_timeout_s)
        if not hung:
            return None
        local = [b for b in beats if b.get("host") == host and b.get("pid") in pids]
        # which ranks are stopped, read before py-spy attaches to them (attaching and detaching can wake a stopped one)
        stopped_ranks = {b["rank"]: watchdog.is_stopped(int(b["pid"])) for b in hung}
        tag = f"job{self._attempt['job_id']}-attempt{self._attempt['restart_count'] + 1}"
        stacks = watchdog.dump_stacks(local, beats_dir, self.paths.hangs, tag,
                                      {b["rank"] for b in hung})
        first = min(hung, key=lambda b: (not stopped_ranks[b["rank"]], b["time"], b["step"]))
        stopped = stopped_ranks[first["rank"]]
        print(f"launch: rank {first['rank']} on {host} made no progress for {first['silent_s']:.0f} s (phase "
              f"{first['phase']}, step {first['step']}; limit {first['timeout_s']:.0f} s): stacks in "
              f"{stacks[first['rank']]}; ending this attempt on every node", file=sys.stderr, flush=True)
        return self._fault_event("hang", ranks=sorted(b["rank"] for b in hung), rank=first["rank"],
                                 phase=first["phase"], step=first["step"], silent_s=first["silent_s"],
                                 timeout_s=first["timeout_s"], last_beat=first["time"], stopped=stopped, stacks=stacks)

    def _peer_fault(self) -> dict | None:
        """Another node's fault in this attempt (it ended or hung): this node's training cannot go on. Unless a rank
        of this node was killed: the other node's ranks then fail at once in their collectives and may report before
        this node's launcher notices its dead rank, so the launcher gets ``PEER_GRACE_S`` to end and say so first
        (None: :meth:`_after_failure` reports the kill)."""
        a = self._attempt
        event = next((e for e in attempt_faults(self.run_dir, a["job_id"], a["restart_count"])
                      if e.get("host") != a["host"] and e.get("cause") != "peer"), None)
        if event is None:
            return None
        try:
            self._proc.wait(timeout=PEER_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        else:
            if self._killed_ranks(self._proc.returncode):
                return None
        print(f"launch: {event.get('host')} reported a fault ({event.get('cause')}); ending the training "
              f"processes on {a['host']}", file=sys.stderr, flush=True)
        return self._fault_event("peer", of=event.get("host"))

    def _end_training(self) -> None:
        """SIGKILL this node's training processes and the launcher above them (their own session)."""
        for pid in worker_pids(self._proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _after_failure(self, code: int, job_env) -> dict:
        """This node's training ended by a fault or an error: report it; node 0 then decides for the job, the
        other nodes exit 0 (so ``--kill-on-bad-exit`` does not end node 0's decision)."""
        if self._fault is None:
            killed = self._killed_ranks(code)
            # torchrun exits 1 whatever its ranks' codes: the trainer's refusal is in its report
            code = watchdog.trainer_refusal(self._attempt["log"], self._attempt["log_offset"]) or code
            cause = "trainer-exit" if exit_meaning(code) else "killed" if killed else "error"
            self._fault = self._fault_event(cause, code=code, killed=killed, in_setup=self._in_setup(),
                                            error=error_line(self._attempt["log"]))
        if job_env.global_rank != 0:
            print(f"launch: training on {self._attempt['host']} ended ({self._fault.get('cause')}, exit {code}); "
                  f"node 0 decides whether the job is retried", file=sys.stderr, flush=True)
            raise SystemExit(0)
        return self._decide(code, job_env)

    def _killed_ranks(self, code: int | None) -> list[dict]:
        """This node's ranks killed by a signal in this attempt: torchrun's report in the log, else, where the command
        ran the trainer itself (one process: no torchrun to report), the command's own end by a signal."""
        killed = watchdog.killed_ranks(self._attempt["log"], self._attempt["log_offset"])
        if not killed and code is not None and code < 0:
            killed = [{"local_rank": 0, "signal": -code, "pid": self._proc.pid}]
        return killed

    def _in_setup(self) -> bool:
        """Whether no training process of this node had begun training in this attempt (heartbeats since its start)."""
        beats = [b for b in read_beats(self.paths.heartbeats)
                 if b.get("host") == self._attempt["host"] and b.get("time", 0) >= self._started]
        return not any(b.get("trained") for b in beats)

    def _attempt_faults(self, nodes: int) -> list[dict]:
        """This attempt's faults, after waiting up to FAULT_GRACE_S for every node's report (the first node to
        report is not always the one that failed; a node that ended because of another's reports ``peer``)."""
        a, deadline = self._attempt, time.time() + FAULT_GRACE_S
        while True:
            faults = attempt_faults(self.run_dir, a["job_id"], a["restart_count"])
            if len({f.get("host") for f in faults}) >= nodes or time.time() >= deadline:
                return faults
            time.sleep(0.5)

    def _decide(self, code: int, job_env) -> dict:
        """Node 0: name the cause, then requeue (excluding a bad node) or fail the job in one line."""
        faults = self._attempt_faults(len(job_env.hostnames))
        first, culprit = blame(faults, self._fault)
        cause = fault_cause(first, code)
        status, step = _run_status(self.run_dir, self._started)
        checkpoint = checkpoint_step(self.run_dir)
        again = failures_without_progress(self.run_dir, checkpoint)
        log, tail = self._attempt["log"], _log_tail(self._attempt["log"])
        stop = why_not_retried(faults, cause, code, slurm=self._attempt["slurm"], again=again,
                               budget=self.max_failure_retries, checkpoint=checkpoint, step=step)
        record_event(self.run_dir, "exit", code=code, outcome="failed", step=step, checkpoint=checkpoint, cause=cause,
                     log_tail=tail)
        if stop is not None:
            raise LaunchFailed(f"{self.name}: {stop}; log {log}\n--- last lines ---\n{tail}")
        reason = "hang" if first and first.get("cause") == "hang" else "failure"
        record_event(self.run_dir, "requeue", reason=reason, retry=again + 1, of=self.max_failure_retries)
        print(f"launch: {cause}; requeueing (retry {again + 1} of {self.max_failure_retries} from checkpoint "
              f"{checkpoint or 0})", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Slurm ends the step now: finish the exclusion first
        try:
            jobcontrol.requeue(self._attempt["job_id"])
        except SlurmError as exc:
            raise LaunchFailed(f"{self.name}: {cause}; the requeue failed ({exc}): submit the same command again to "
                               f"resume from checkpoint {checkpoint or 0}") from None
        if culprit is not None:
            excluded, detail = jobcontrol.exclude_node(self._attempt["job_id"], culprit["host"],
                                                       len(job_env.hostnames))
            record_event(self.run_dir, "exclude", node=culprit["host"], excluded=excluded, detail=detail)
        raise SystemExit(0)  # a requeue is not a failure: leave --kill-on-bad-exit out of it

    def _requeue_after_stop(self, code: int, job_env, usr_sig, submitit_handler) -> None:
        """After a checkpoint signal: node 0 has submitit requeue the job (it exits); a run that completed anyway
        falls through to :meth:`_finish`."""
        if self._stopped_for == "pending":  # the training processes ended before the loop looked at the signal
            self._stopped_for = "timeout" if self._timed_out() else "preemption"
        status, step = _run_status(self.run_dir, self._started)
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
            try:
                submitit_handler(usr_sig, None)  # calls checkpoint(), then scontrol requeue, then sys.exit(-1)
            except SystemExit as exc:
                # requeued by scontrol: exit 0, not submitit's -1, which would trip --kill-on-bad-exit on the other
                # nodes (the local executor's requeue code is left as it is: its controller restarts on it)
                if exc.code == -1:
                    raise SystemExit(0) from exc
                raise
        raise LaunchFailed(f"{self.name}: stopped by {signal.Signals(self._signum).name} at step {step}, but no "
                           f"requeue handler is installed (not run by submitit); submit again to resume")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on node 0 once the training processes have saved and exited: requeue this job."""
        record_event(self.run_dir, "requeue", reason=self._stopped_for or "preemption")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def _finish(self, code: int, job_env) -> dict:
        status, step = _run_status(self.run_dir, self._started)
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
            message = (f"{self.name}: training failed with exit code {code}{exit_meaning(code)} on "
                       f"{socket.gethostname()}; "
                       f"log {log}\n--- last lines ---\n{tail}")
            outcome = "failed"
        if rank0:
            record_event(self.run_dir, "exit", code=code, outcome=outcome, step=step, log_tail=tail)
        raise LaunchFailed(message)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.run_dir)

    def _allocated_at(self) -> float:
        """When this attempt's allocation started: Slurm's start time for it (the history counts node time from
        there; ``squeue`` where the environment lacks it), else this process's start (``memorymodels.startup``)."""
        if self._attempt.get("slurm") and not os.environ.get("SLURM_JOB_START_TIME", "").isdigit():
            return jobcontrol.start_time(self._attempt["job_id"]) or allocation_start()
        return allocation_start()

    def _settle_earlier_attempts(self) -> None:
        """Node 0, before this attempt starts: Slurm's word on earlier attempts that could not record their own end
        (cancelled, killed, lost with their node), into the history."""
        if not self._attempt.get("slurm"):
            return
        try:
            earlier = attempts(self.run_dir)
            keys = unsettled(earlier)
            if keys:
                record_reconciled(self.run_dir, earlier, jobcontrol.attempt_accounting([k[0] for k in keys]))
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not stop the attempt
            print(f"launch: could not settle earlier attempts from sacct ({exc})", file=sys.stderr, flush=True)

    @staticmethod
    def _log_path(job_env) -> Path | None:
        try:
            return Path(job_env.paths.stderr)
        except Exception:  # noqa: BLE001 - no submitit folder (run directly): no log to point at
            return None
