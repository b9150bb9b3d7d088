"""run.json: the run's record (config, identity, code, versions, host, status, compute) and its one writer.

    python -c "import json; print(json.load(open('RUN_DIR/run.json'))['status'])"

The trainer (rank 0) writes it at each attempt's start and end (:func:`start_run`, :func:`update_run`), the
submission writes the stub that claims a new run directory (:func:`claim`). Nobody else writes it. Every write goes
through ``memorymodels.fileio`` (a temporary name, then a rename) and keeps the replaced version as run.json.bak, so a
reader never sees half a file; a run.json that exists but cannot be read stops the trainer (:class:`RunDirError`,
saying how to repair it) instead of letting it pick a fresh directory and silently start over. The attempts
themselves are in their history (``memorymodels.attempts``); run.json keeps the summary of it that readers of the
record alone need (the Slurm job-id chain, the restart count).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from memorymodels import attempts as history
from memorymodels.codemanifest import code_manifest
from memorymodels.experiment import Experiment, experiment_dict, identity
from memorymodels.fileio import CorruptFileError, read_json, write_bytes_atomic, write_json, write_text_atomic
from memorymodels.rundir import RunDirError, RunPaths

STATUSES = ("running", "interrupted", "completed", "failed")


def read_run_json(run_dir: Path) -> dict | None:
    """``run_dir/run.json``, None when missing; a damaged one raises :class:`RunDirError` saying how to repair it."""
    try:
        return read_json(RunPaths(run_dir).run_json, expect=dict)
    except CorruptFileError as exc:
        raise RunDirError(damaged_run_json_message(exc)) from None


def damaged_run_json_message(exc: CorruptFileError) -> str:
    """One line: what is wrong with run.json, that nothing was touched, and how to repair it."""
    path = exc.path
    backup = RunPaths(path.parent).run_json_backup
    try:
        usable = read_json(backup, expect=dict) is not None
    except CorruptFileError:
        usable = False
    repair = (f"restore the previous version with 'cp {backup} {path}'" if usable
              else f"repair it by hand (no usable {backup.name})")
    return (f"{exc}: this run's record is damaged, so it is unclear whose run {path.parent} is; nothing was "
            f"changed. To resume it, {repair}; to start fresh, move {path.parent} away")


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


ENVIRONMENT_KEYS = ("CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE", "NCCL_P2P_DISABLE",
                    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "OMP_NUM_THREADS", "APPTAINER_NAME", "SINGULARITY_NAME",
                    "APPTAINER_CONTAINER", "ENROOT_ROOTFS", "PYXIS_VERSION")


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


def _attempt_fields(world_size: int, environ: dict | None = None) -> dict:
    """What the trainer says of its attempt (a Slurm job, a requeue, a local rerun): host, pid, world size, Slurm ids."""
    import socket

    environ = os.environ if environ is None else environ
    slurm = {key[len("SLURM_"):].lower(): environ[key] for key in SLURM_KEYS if key in environ}
    return {"host": socket.gethostname(), "pid": os.getpid(), "world_size": world_size, "slurm": slurm,
            "job_id": slurm.get("job_id") if "array_job_id" not in slurm
            else f"{slurm['array_job_id']}_{slurm.get('array_task_id')}",
            "restart_count": int(slurm.get("restart_count", 0) or 0)}


def start_run(run_dir: Path, experiment: Experiment, world_size: int, *, command: list[str],
              model_summary: dict, repo: Path, extension: dict | None = None) -> dict:
    """Create or update run.json for a new attempt and record the attempt's start in the history (rank 0 only).
    ``extension``: this attempt continues the run to a longer schedule (``memorymodels.extension``); added to
    ``extensions`` in the same write that gives the run its new identity."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = read_run_json(run_dir) or {}
    snapshot = code_manifest(repo)  # running from a launcher's code snapshot: its checkout's git, not git here
    git = {**snapshot.get("git", {}), "diff": None} if snapshot else git_info(repo)
    before = history.attempts(run_dir)
    attempt = _attempt_fields(world_size)
    diff_file = RunPaths(run_dir).git_diff(len(before) + 1).name if git.get("diff") else None
    now = time.time()
    job_ids = [((a["trainer"] or {}).get("slurm") or {}).get("job_id") for a in before] + [attempt["slurm"].get("job_id")]
    info.update({
        "identity": identity(experiment, world_size),
        "name": run_dir.name,
        "config": experiment_dict(experiment),
        "source": experiment.source,
        "command": command,
        "git": {"sha": git.get("sha"), "dirty": git.get("dirty"), "diff_file": diff_file},
        "versions": package_versions(),
        "host": attempt["host"],
        "world_size": world_size,
        "model": model_summary,
        # The job-id chain across attempts (a requeued job keeps its id; a resubmission adds one).
        "slurm_job_ids": list(dict.fromkeys(j for j in job_ids if j)),
        "restart_count": attempt["restart_count"],
        "created": info.get("created", now),
        "start": now,
        "end": None,
        "status": "running",
        "error": None,
    })
    if extension is not None:
        info["extensions"] = [*info.get("extensions", []), extension]
    info.pop("attempts", None)  # written by versions before the history: the history is the one record now
    # run.json first: until it exists the directory stays empty, so other ranks deriving the run directory at the
    # same time (run_dir_for) never mistake it for a foreign one.
    write_run_json(run_dir, info)
    if git.get("diff"):
        write_text_atomic(run_dir / diff_file, git["diff"])
    history.record_event(run_dir, "trainer-start", **attempt, command=command, git_sha=git.get("sha"),
                         code=snapshot.get("hash") if snapshot else None, environment=runtime_environment(),
                         git_diff=diff_file, resumed_from_step=None)
    return info


def update_run(run_dir: Path, **fields: Any) -> dict:
    """Update top-level run.json fields; atomic. An attempt's end goes to the history too (:func:`end_attempt`)."""
    info = read_run_json(run_dir) or {}
    info.update(fields)
    write_run_json(run_dir, info)
    return info


def end_attempt(run_dir: Path, status: str, *, step: int | None = None, error: str | None = None) -> dict:
    """The trainer's end of this attempt: run.json's status and the history's ``trainer-end`` (rank 0)."""
    now = time.time()
    info = update_run(run_dir, status=status, end=now, **({"error": error} if error else {}))
    history.record_event(run_dir, "trainer-end", status=status, step=step, error=error)
    return info


def record_resume(run_dir: Path, step: int) -> None:
    """The checkpoint step this attempt resumed from (rank 0)."""
    history.record_event(run_dir, "trainer-resume", step=step)


def record_startup(run_dir: Path, startup: dict) -> None:
    """When this attempt reached each startup phase (``memorymodels.startup``), in the history (rank 0)."""
    history.record_event(run_dir, "startup", phases=startup)


def claim(run_dir: Path, *, ident: str, config: dict, source: str | None, world_size: int,
          code: dict | None) -> None:
    """The submission's stub run.json for a run directory without one: whose it is (identity, config, world size)
    and the code it is submitted with; no ``status`` (the trainer writes that when it starts)."""
    write_json(RunPaths(run_dir).run_json, {"identity": ident, "name": Path(run_dir).name, "config": config,
                                            "source": source, "world_size": world_size, "code": code,
                                            "created": time.time()})


def record_code(run_dir: Path, info: dict, code: dict) -> None:
    """A resubmission with new code: run.json's ``code`` becomes ``code``, the earlier ones go to ``code_history``."""
    history_ = list(info.get("code_history", [])) + ([info["code"]] if info.get("code") else [])
    write_run_json(run_dir, {**info, "code": code, "code_history": history_})


def write_run_json(run_dir: Path, info: dict) -> None:
    """Write run.json atomically, keeping the version it replaces (when readable) as run.json.bak."""
    path = RunPaths(run_dir).run_json
    try:
        previous = path.read_bytes()
        json.loads(previous)
    except (OSError, ValueError):
        previous = None
    if previous is not None:
        write_bytes_atomic(RunPaths(run_dir).run_json_backup, previous)
    write_json(path, info)
