"""What a node's launcher watches while its training processes run: their heartbeats, and how they died.

    ls RUN_DIR/launch/heartbeats/     # rank-R.json: each rank's last beat (memorymodels.heartbeat)
    ls RUN_DIR/launch/hangs/          # job<J>-attempt<A>-rank<R>.txt: the stacks of a hung attempt's local ranks

:func:`silent_ranks` finds this node's training processes whose last heartbeat is older than their phase allows
(:func:`phase_timeout`); :func:`dump_stacks` writes the Python stacks of every local rank, with ``py-spy dump``
(reads a stopped or stuck process without its cooperation; ``--nonblocking`` when the process cannot be paused, as
with SIGSTOP), else through the rank's faulthandler (``memorymodels.heartbeat.STACK_SIGNAL``), else the process
state from /proc; :func:`killed_ranks` reads from torchrun's own report in the node's log which local ranks a
signal killed (a SIGKILL, the OOM killer, a segfault): the evidence that this node, not its peers, failed;
:func:`trainer_refusal` reads from it the trainer's own exit code when that is a refusal a retry cannot help.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from memorymodels.heartbeat import STACK_SIGNAL, stack_path
from memorymodels.rundir import REFUSALS

AUTO_FLOOR_S = 300
"""With ``hang_timeout_s: null``: the least silence taken for a hang."""
AUTO_FACTOR = 10
"""With ``hang_timeout_s: null``: silence longer than this many times the slowest step/checkpoint/evaluation seen."""
SETUP_MIN_S = 1800
"""Setup (data preparation, model building, the first rendezvous) may stay silent at least this long."""
_FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+) \(pid: (\d+)\)")


def phase_timeout(phase: str | None, configured: int | None, slowest: dict[str, float]) -> float | None:
    """Seconds of silence allowed in ``phase`` (None: not watched, after training ended). ``configured`` is the
    profile's ``hang_timeout_s``; ``slowest`` the slowest duration per phase the node's ranks have reported."""
    if phase in (None, "end"):
        return None
    if phase == "setup":
        return max(configured or 0, SETUP_MIN_S)
    if configured:
        return float(configured)
    seen = max(slowest.get(phase, 0.0), slowest.get("step", 0.0))
    return max(float(AUTO_FLOOR_S), AUTO_FACTOR * seen)


def silent_ranks(beats: list[dict], pids: set[int], host: str, configured: int | None,
                 now: float | None = None) -> list[dict]:
    """The beats of this node's live training processes (``pids`` on ``host``) silent for longer than their phase
    allows, each with ``silent_s`` and ``timeout_s`` added."""
    now = time.time() if now is None else now
    local = [b for b in beats if b.get("host") == host and b.get("pid") in pids]
    slowest: dict[str, float] = {}
    for b in local:
        for phase, seconds in (b.get("slowest") or {}).items():
            slowest[phase] = max(slowest.get(phase, 0.0), float(seconds))
    hung = []
    for b in local:
        limit = phase_timeout(b.get("phase"), configured, slowest)
        if limit is not None and now - float(b.get("time", now)) > limit:
            hung.append({**b, "silent_s": round(now - float(b["time"]), 1), "timeout_s": limit})
    return hung


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP, a debugger): state T or t in /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def culprit_key(fault: dict) -> tuple:
    """Order of blame among one attempt's faults: a rank killed by a signal, then a stopped process, then the hung
    rank whose last heartbeat is oldest (its peers wait for it in a collective and fall silent a little later)."""
    kind = fault.get("cause")
    return (0 if kind == "killed" else 1 if kind == "hang" else 2, not fault.get("stopped"),
            fault.get("last_beat") or fault.get("time") or 0, fault.get("step") or 0)


def _process_state(pid: int) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return "the process is gone"
    state = next((line.split(":", 1)[1].strip() for line in status.splitlines() if line.startswith("State:")), "?")
    return f"process state {state}, waiting in {wchan or '?'}"


def stack_text(pid: int, heartbeat_dir: Path, rank: int) -> tuple[str, str]:
    """(how, text): the Python stacks of ``pid`` by py-spy, by its faulthandler, or its /proc state."""
    spy = _py_spy()
    errors = []
    if spy:
        for extra in ([], ["--nonblocking"]):  # a SIGSTOPped process cannot be paused again: read it as it is
            try:
                out = subprocess.run([spy, "dump", "--pid", str(pid), *extra], capture_output=True, text=True,
                                     timeout=30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
                continue
            if out.returncode == 0 and out.stdout.strip():
                return "py-spy" + (" --nonblocking" if extra else ""), out.stdout
            errors.append((out.stderr or out.stdout).strip().splitlines()[0] if (out.stderr or out.stdout) else "")
    path = stack_path(heartbeat_dir, rank)
    try:
        before = path.stat().st_size
        os.kill(pid, STACK_SIGNAL)
        deadline = time.time() + 3
        while time.time() < deadline and path.stat().st_size == before:
            time.sleep(0.1)
        with open(path) as f:
            f.seek(before)
            text = f.read()
        if text.strip():
            return "faulthandler", text
    except OSError as exc:
        errors.append(str(exc))
    why = "; ".join(e for e in errors if e) or "py-spy is not installed"
    return "none", f"no Python stack could be read ({why}); {_process_state(pid)}\n"


def dump_stacks(beats: list[dict], heartbeat_dir: Path, out_dir: Path, tag: str, hung_ranks: set[int]) -> dict[int, str]:
    """Write the stacks of every rank in ``beats`` (this node's) to ``out_dir/<tag>-rank<R>.txt``; rank -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for b in sorted(beats, key=lambda b: b["rank"]):
        how, text = stack_text(int(b["pid"]), heartbeat_dir, int(b["rank"]))
        path = out_dir / f"{tag}-rank{b['rank']}.txt"
        state = "HUNG" if b["rank"] in hung_ranks else "waiting"
        head = (f"# rank {b['rank']} (local rank {b.get('local_rank')}) pid {b['pid']} on {b.get('host')}: {state}, "
                f"last heartbeat {time.time() - float(b['time']):.0f} s ago in phase {b.get('phase')} at step "
                f"{b.get('step')}; stacks by {how}\n")
        path.write_text(head + text)
        files[int(b["rank"])] = str(path)
    return files


def _reported_exits(log: Path | None, offset: int) -> list[tuple[int, int, int]]:
    """(exit code, local rank, pid) of every rank torchrun reported failed in ``log`` after byte ``offset``."""
    if log is None:
        return []
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [tuple(int(g) for g in match.groups()) for match in _FAILED.finditer(text)]


def killed_ranks(log: Path | None, offset: int = 0) -> list[dict]:
    """The local ranks torchrun reported dead by a signal (exit code < 0) in ``log`` after byte ``offset``:
    [{"local_rank", "signal", "pid"}]."""
    return [{"local_rank": local_rank, "signal": -code, "pid": pid}
            for code, local_rank, pid in _reported_exits(log, offset) if code < 0]


def trainer_refusal(log: Path | None, offset: int = 0) -> int | None:
    """The trainer's own refusal (``memorymodels.rundir.REFUSALS``: a config error, a full disk, a diverged loss,
    ...) a local rank exited with, as torchrun reported it in ``log`` after byte ``offset`` (torchrun itself exits
    1 whatever its ranks' codes were); None when no rank refused."""
    return next((code for code, _, _ in _reported_exits(log, offset) if code in REFUSALS), None)


def log_size(log: Path | None) -> int:
    try:
        return log.stat().st_size if log is not None else 0
    except OSError:
        return 0
