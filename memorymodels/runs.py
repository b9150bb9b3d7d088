"""Run directories: naming and collisions, the trainer's lock, run.json, metrics.jsonl, progress for dashboards.

A run directory sits directly under the checkpoint root and holds::

    run.json              resolved config, command, git, versions, host, world size, Slurm attempts, times, status
    run.json.bak          the previous version of run.json (to restore it from if run.json is ever damaged)
    .trainer.lock         flock'ed by the trainer process that writes the directory; holds its pid and host
    metrics.jsonl         one JSON object per logging step (step, loss, eval_loss, learning_rate, tokens_per_s, ...)
    checkpoint-STEP/      a Trainer checkpoint; it counts only once its COMPLETE marker (written last) exists
                          (rules in ``memorymodels.checkpoints``)
    eval.json             written by ``python -m memorymodels.evaluate``

Every file here is written through ``memorymodels.fileio`` (a temporary name, then a rename), so a reader never sees
half a file. A run.json that exists but cannot be read stops the trainer (:class:`RunDirError`, saying how to
repair it) instead of letting it pick a fresh directory and silently start over.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from memorymodels.checkpoints import COMPLETE, checkpoint_step, checkpoints
from memorymodels.experiment import Experiment, experiment_dict, identity, run_name
from memorymodels.fileio import (CorruptFileError, read_json, read_json_lines, write_bytes_atomic, write_json,
                                 write_text_atomic)

RUN_JSON = "run.json"
RUN_JSON_BACKUP = "run.json.bak"
METRICS = "metrics.jsonl"
LOCK = ".trainer.lock"
STATUSES = ("running", "interrupted", "completed", "failed")


class RunDirError(Exception):
    """A run directory cannot be used as asked: another config's run, foreign files, a damaged run.json."""


class RunLockedError(RunDirError):
    """Another live process holds the run directory's lock (a second trainer on the same run)."""


# ---- naming and collisions -------------------------------------------------------------------------------------


def read_run_json(run_dir: Path) -> dict | None:
    """``run_dir/run.json``, None when missing; a damaged one raises :class:`RunDirError` saying how to repair it."""
    path = Path(run_dir) / RUN_JSON
    try:
        return read_json(path, expect=dict)
    except CorruptFileError as exc:
        raise RunDirError(damaged_run_json_message(exc)) from None


def damaged_run_json_message(exc: CorruptFileError) -> str:
    """One line: what is wrong with run.json, that nothing was touched, and how to repair it."""
    path = exc.path
    backup = path.with_name(RUN_JSON_BACKUP)
    try:
        usable = read_json(backup, expect=dict) is not None
    except CorruptFileError:
        usable = False
    repair = (f"restore the previous version with 'cp {backup} {path}'" if usable
              else f"repair it by hand (no usable {backup.name})")
    return (f"{exc}: this run's record is damaged, so it is unclear whose run {path.parent} is; nothing was "
            f"changed. To resume it, {repair}; to start fresh, move {path.parent} away")


def _owner(run_dir: Path) -> str | None:
    """The identity recorded in ``run_dir/run.json``; '' for a directory that exists but is not one of our runs.

    Raises :class:`RunDirError` for a run.json that exists but is damaged: treating it as foreign would make the
    same config choose another directory and start over without a word.
    """
    if not run_dir.exists():
        return None
    info = read_run_json(run_dir)
    if info is None:
        # Free when empty (temporary files of a run.json being written aside, the lock): another rank may be
        # creating it.
        return "" if any(not p.name.startswith(".") for p in run_dir.iterdir()) else None
    return str(info.get("identity", ""))


def run_dir_for(experiment: Experiment, world_size: int) -> Path:
    """The run directory of ``experiment`` at ``world_size`` under ``output.checkpoint_root``.

    The same config (same identity) finds the same directory; a different config whose name is taken gets
    ``NAME-<identity>`` instead, so nothing is ever overwritten. Pure apart from reading existing run.json files.
    """
    root = Path(experiment.output.checkpoint_root)
    name = run_name(experiment, world_size)
    ident = identity(experiment, world_size)
    for candidate in (root / name, root / f"{name}-{ident}"):
        owner = _owner(candidate)
        if owner is None or owner == ident:
            return candidate
    for n in range(2, 1000):  # only when a foreign directory already holds the hashed name
        candidate = root / f"{name}-{ident}-{n}"
        owner = _owner(candidate)
        if owner is None or owner == ident:
            return candidate
    raise RunDirError(f"{root}: more than 1000 directories named {name}-{ident}-N; clean up the checkpoint root")


def collision_message(experiment: Experiment, world_size: int, run_dir: Path) -> str | None:
    """Why ``run_dir`` is not the plain name (a different config holds it), or None."""
    plain = Path(experiment.output.checkpoint_root) / run_name(experiment, world_size)
    if Path(run_dir) == plain:
        return None
    return (f"run directory {plain} belongs to a different config (see its run.json); "
            f"this run uses {run_dir} instead")


def check_run_dir(run_dir: Path, ident: str) -> None:
    """Refuse a directory (given by --run-dir) that holds another config's run or foreign files."""
    owner = _owner(Path(run_dir))
    if owner is None or owner == ident:
        return
    what = "another config's run" if owner else "files that are not a run (no run.json)"
    raise RunDirError(
        f"{run_dir}: holds {what}; refusing to overwrite it. Pick another --run-dir, or omit --run-dir to let "
        f"the trainer choose a free directory."
    )


# ---- the trainer's lock -------------------------------------------------------------------------------------


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.trainer.lock`` held for a whole attempt by the process that writes the
    run directory. The kernel releases it when that process ends, however it ends (exit, kill -9, OOM), so a stale
    lock never blocks a rerun; the file's content (pid, host, time) only serves the message of a refused trainer."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_holder(path: Path) -> str:
    """'pid 123 on host h since 12:00:01' from the lock file (the holder may be writing it: retry briefly)."""
    for _ in range(20):
        try:
            info = json.loads(path.read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["time"]))
            return f"pid {info['pid']} on host {info['host']} since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "pid unknown"


def lock_run_dir(run_dir: Path) -> RunLock:
    """Take the run directory's lock (creating the directory) or raise :class:`RunLockedError` at once."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by subprocesses (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLockedError(
            f"{run_dir}: another trainer is running in this run directory ({_lock_holder(path)}; lock {path}); "
            f"refusing to train it twice at once. Wait for that one to end, or stop it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode())
    return RunLock(path, fd)


# ---- metrics ------------------------------------------------------------------------------------------------


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one line to metrics.jsonl (one write call, so a line is never interleaved)."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """All parsable lines of metrics.jsonl (a torn last line is skipped)."""
    return read_json_lines(Path(run_dir) / METRICS)


def roll_back_metrics(run_dir: Path, step: int) -> int:
    """On resume from ``step``: move lines logged after it (by an attempt killed before saving) aside.

    They go to ``metrics.rolledback.jsonl`` (appended; nothing is lost) and metrics.jsonl is rewritten atomically
    with the rest, so the curve continues from the checkpoint. Returns how many lines moved.
    """
    path = Path(run_dir) / METRICS
    if not path.exists():
        return 0
    keep, drop = [], []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            drop.append(line)
            continue
        (drop if record.get("step", 0) > step else keep).append(line)
    if drop:
        with open(Path(run_dir) / "metrics.rolledback.jsonl", "a") as f:
            f.write("".join(line + "\n" for line in drop))
        write_text_atomic(path, "".join(line + "\n" for line in keep))
    return len(drop)


def tail_records(path: Path, max_bytes: int = 65536) -> list[dict]:
    """The JSON lines in the last ``max_bytes`` of a file (a cut first line is skipped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            blob = f.read()
    except OSError:
        return []
    lines = blob.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def run_progress(run_dir: Path) -> dict:
    """What the dashboard and the sweep report show about a run; fast and tolerant of missing files.

    Keys: status, step, max_steps, loss, eval_loss, tokens_per_s, checkpoint_step, checkpoint_time, updated,
    goodput (the share of the allocated node time that went into training kept, which the launcher records in
    run.json) and excluded_nodes (nodes the launcher left out of a retry) (unknown values are None). Reads run.json,
    the tail of metrics.jsonl and the checkpoint markers only.
    """
    run_dir = Path(run_dir)
    try:
        info = read_json(run_dir / RUN_JSON) or {}
    except CorruptFileError:
        info = {}
    progress: dict[str, Any] = {key: None for key in ("status", "step", "max_steps", "loss", "eval_loss",
                                                       "tokens_per_s", "checkpoint_step", "checkpoint_time",
                                                       "updated", "goodput", "excluded_nodes")}
    progress["status"] = info.get("status")
    progress["goodput"] = (info.get("goodput") or {}).get("ratio")
    excluded = [f["excluded"]["node"] for f in info.get("faults") or [] if (f.get("excluded") or {}).get("excluded")]
    progress["excluded_nodes"] = excluded or None
    progress["max_steps"] = ((info.get("config") or {}).get("train") or {}).get("max_steps")
    metrics_path = run_dir / METRICS
    for window in (1 << 16, 1 << 19, 1 << 22):  # widen only while the last eval is further back than the tail
        records = tail_records(metrics_path, window)
        for record in records:  # oldest to newest: later lines win
            progress["step"] = record.get("step", progress["step"])
            for key in ("loss", "eval_loss", "tokens_per_s"):
                if record.get(key) is not None:
                    progress[key] = record[key]
        if progress["eval_loss"] is not None or len(records) * 200 < window:
            break
    complete = checkpoints(run_dir)[0]
    if complete:
        try:
            marker = read_json(complete[-1] / COMPLETE) or {}
        except CorruptFileError:
            marker = {}
        progress["checkpoint_step"] = checkpoint_step(complete[-1])
        progress["checkpoint_time"] = marker.get("time")
        if progress["step"] is None or progress["checkpoint_step"] > progress["step"]:
            progress["step"] = progress["checkpoint_step"]
    times = [p.stat().st_mtime for p in (run_dir / RUN_JSON, metrics_path) if p.exists()]
    progress["updated"] = max(times) if times else None
    return progress


# ---- run.json -----------------------------------------------------------------------------------------------


SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
              "SLURM_JOB_NODELIST", "SLURM_JOB_NAME", "SLURM_NNODES")


def git_info(repo: Path) -> dict:
    """Commit SHA, whether the tree is dirty, and the diff (against HEAD) of tracked files."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "dirty": None, "diff": None}
    diff = git("diff", "HEAD") or ""
    return {"sha": sha.strip(), "dirty": bool(diff), "diff": diff}


def package_versions() -> dict:
    """Versions of the packages a run depends on."""
    from importlib import metadata

    versions = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy", "memorymodels",
                 "deepspeed", "datasets"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


CODE_MANIFEST = ".memorymodels-code.json"
"""What a code snapshot of the launcher (``launch.planning.code``) says about itself: hash and git of the checkout."""
ENVIRONMENT_KEYS = ("CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE", "NCCL_P2P_DISABLE",
                    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS", "APPTAINER_NAME", "SINGULARITY_NAME",
                    "APPTAINER_CONTAINER", "ENROOT_ROOTFS", "PYXIS_VERSION")


def code_manifest(repo: Path) -> dict | None:
    """The snapshot manifest of the code running from ``repo`` (None: a plain checkout)."""
    try:
        data = read_json(Path(repo) / CODE_MANIFEST)
    except CorruptFileError:
        return None
    return data if isinstance(data, dict) else None


def runtime_environment(environ: dict | None = None) -> dict:
    """What this attempt ran on, beyond the package versions: the interpreter, torch's CUDA, cuDNN and NCCL, the GPUs
    and the NVIDIA driver, and the environment variables that change distributed runs. Reads torch only when the
    process has loaded it (the launcher never does)."""
    environ = os.environ if environ is None else environ
    env = {"python": sys.version.split()[0], "executable": sys.executable,
           "variables": {key: environ[key] for key in ENVIRONMENT_KEYS if key in environ}}
    torch = sys.modules.get("torch")
    if torch is not None:
        env.update(torch=torch.__version__, cuda=torch.version.cuda, gpus=[])
        if torch.cuda.is_available():
            env["cudnn"] = torch.backends.cudnn.version()
            env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            try:
                env["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            except (AttributeError, RuntimeError):
                env["nccl"] = None
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        env["driver"] = next((w for w in first.split() if w[:1].isdigit() and "." in w), first)
    except (OSError, IndexError):
        env["driver"] = None
    return env


def attempt_record(world_size: int, environ: dict | None = None) -> dict:
    """One attempt of a run (a Slurm job, a requeue, a local rerun): host, world size, Slurm ids, start time."""
    import socket

    environ = os.environ if environ is None else environ
    slurm = {key[len("SLURM_"):].lower(): environ[key] for key in SLURM_KEYS if key in environ}
    return {"host": socket.gethostname(), "pid": os.getpid(), "world_size": world_size, "slurm": slurm,
            "start": time.time(), "end": None, "status": "running", "resumed_from_step": None}


def start_run(run_dir: Path, experiment: Experiment, world_size: int, *, command: list[str],
              model_summary: dict, repo: Path) -> dict:
    """Create or update run.json for a new attempt (rank 0 only) and return it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = read_run_json(run_dir) or {}
    snapshot = code_manifest(repo)  # running from a launcher's code snapshot: its checkout's git, not git here
    git = {**snapshot.get("git", {}), "diff": None} if snapshot else git_info(repo)
    attempts = list(info.get("attempts", []))
    for previous in attempts:
        if previous.get("status") == "running":  # it never recorded an end: killed (SIGKILL, node failure)
            previous["status"] = "lost"
    attempt = attempt_record(world_size)
    attempt["command"] = command
    attempt["git_sha"] = git.get("sha")
    attempt["code"] = snapshot.get("hash") if snapshot else None
    attempt["environment"] = runtime_environment()
    if git.get("diff"):
        attempt["git_diff"] = f"git-attempt{len(attempts) + 1}.diff"
    attempts.append(attempt)
    info.update({
        "identity": identity(experiment, world_size),
        "name": run_dir.name,
        "config": experiment_dict(experiment),
        "source": experiment.source,
        "command": command,
        "git": {"sha": git.get("sha"), "dirty": git.get("dirty"), "diff_file": attempt.get("git_diff")},
        "versions": package_versions(),
        "host": attempt["host"],
        "world_size": world_size,
        "model": model_summary,
        # The job-id chain across attempts (a requeued job keeps its id; a resubmission adds one).
        "slurm_job_ids": list(dict.fromkeys(a["slurm"]["job_id"] for a in attempts
                                            if a.get("slurm", {}).get("job_id"))),
        "restart_count": int(attempt["slurm"].get("restart_count", 0)),
        "attempts": attempts,
        "created": info.get("created", attempt["start"]),
        "start": attempt["start"],
        "end": None,
        "status": "running",
    })
    # run.json first: until it exists the directory stays empty, so other ranks deriving the run directory at the
    # same time (run_dir_for) never mistake it for a foreign one.
    write_run_json(run_dir, info)
    if git.get("diff"):
        write_text_atomic(run_dir / attempt["git_diff"], git["diff"])
    return info


def update_run(run_dir: Path, **fields: Any) -> dict:
    """Update top-level run.json fields and the current (last) attempt's status/end; atomic."""
    info = read_run_json(run_dir) or {}
    info.update(fields)
    if info.get("attempts"):
        attempt = info["attempts"][-1]
        for key in ("status", "end", "resumed_from_step", "error"):
            if key in fields:
                attempt[key] = fields[key]
    write_run_json(run_dir, info)
    return info


def record_startup(run_dir: Path, startup: dict) -> None:
    """The current (last) attempt's ``startup``: when each phase ended (``memorymodels.startup``); atomic."""
    info = read_run_json(run_dir) or {}
    if info.get("attempts"):
        info["attempts"][-1]["startup"] = startup
        write_run_json(run_dir, info)


def write_run_json(run_dir: Path, info: dict) -> None:
    """Write run.json atomically, keeping the version it replaces (when readable) as run.json.bak."""
    path = Path(run_dir) / RUN_JSON
    try:
        previous = path.read_bytes()
        json.loads(previous)
    except (OSError, ValueError):
        previous = None
    if previous is not None:
        write_bytes_atomic(path.with_name(RUN_JSON_BACKUP), previous)
    write_json(path, info)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Run directories among ``paths`` (a path holding run.json, or the run directories directly under it)."""
    found = []
    for path in map(Path, paths):
        if (path / RUN_JSON).exists() or (path / METRICS).exists():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if (p / RUN_JSON).exists()))
    return found
