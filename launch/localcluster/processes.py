"""Programs and processes of the local Slurm cluster (``launch/local_cluster.py``): finding programs (also in sbin),
running them with errors that name the command, starting daemons detached and waiting for them, identifying a
daemon by its pid file, stopping it; and the preflight that installs the Debian packages when programs are missing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

APT_PACKAGES = ("slurm-wlm", "munge", "mariadb-server", "slurmdbd")
NEEDED_PROGRAMS = ("munged", "munge", "unmunge", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd",
                   "slurmctld", "slurmd", "sacctmgr", "sbatch", "scontrol", "sinfo")
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class ClusterError(RuntimeError):
    """The local cluster cannot be started or reached; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# Running programs

def which(program: str) -> str | None:
    """The path of ``program``, looked up on ``$PATH`` and then in the sbin directories."""
    return shutil.which(program, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def read_file(path: Path) -> str:
    """The text of ``path``, or "" when it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return ""


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, timeout: float = 60,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` and capture its output; a failure (with ``check``) or a timeout raises ClusterError naming it."""
    cmd = [which(cmd[0]) or cmd[0], *cmd[1:]]  # ip, slurmd & co. live in /usr/sbin, not always on PATH
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as err:
        raise ClusterError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s") from err
    if check and proc.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def spawn(cmd: list[str], log: Path, env: dict) -> None:
    """Start a daemon detached from this process (it is re-parented to init, so it never lingers as our zombie)."""
    with open(log, "ab") as out:
        subprocess.run(["setsid", "sh", "-c", '"$@" </dev/null &', "sh", *cmd], stdout=out, stderr=out,
                       env=env, check=True)


def wait_for(what: str, check, timeout: float, log: Path | None = None) -> None:
    """Poll ``check()`` until it is true; after ``timeout`` raise ClusterError with the last lines of ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\nlast lines of " + str(log) + ":\n" + "\n".join(read_file(log).splitlines()[-15:])
    raise ClusterError(f"{what} did not come up within {timeout:.0f}s{tail}")


# --------------------------------------------------------------------------------------------------------------------
# Processes, identified by their pid files and checked against their name, command line and environment

def pid_of(pidfile: Path, state: Path, program: str) -> int | None:
    """The live ``program`` process named in ``pidfile`` whose command line or environment (``SLURM_CONF``) mentions
    ``state``: a stale pid file whose pid now belongs to something else does not count."""
    try:
        pid = int(pidfile.read_text().split()[0])
        proc = Path(f"/proc/{pid}")
        identity = proc.joinpath("cmdline").read_bytes() + proc.joinpath("environ").read_bytes()
        comm = proc.joinpath("comm").read_text().strip()
        status = proc.joinpath("status").read_text()
    except (OSError, ValueError, IndexError):
        return None
    if comm != program[:15] or "State:\tZ" in status or str(state).encode() + b"/" not in identity:
        return None
    return pid


def stop_pid(pid: int, name: str, timeout: float = 20.0) -> None:
    """SIGTERM, and SIGKILL when the process still runs after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "State:\tZ" in read_file(Path(f"/proc/{pid}/status")):
            return
        time.sleep(0.1)
    print(f"local_cluster: {name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------------------------------
# Preconditions

def preflight(multinode: bool) -> None:
    """Check that this machine can run the cluster; install the Debian packages when they are missing."""
    if not sys.platform.startswith("linux"):
        raise ClusterError(f"the local Slurm cluster needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise ClusterError("it must run as root: it starts MUNGE, MariaDB and the Slurm daemons as root "
                           "(run `sudo .venv/bin/python launch/local_cluster.py up`)")
    needed = list(NEEDED_PROGRAMS) + (["ip", "nsenter", "unshare"] if multinode else [])
    missing = [p for p in needed if which(p) is None]
    if not missing:
        return
    packages = list(APT_PACKAGES) + (["iproute2", "util-linux"] if multinode else [])
    if which("apt-get") is None:
        raise ClusterError(f"programs {', '.join(missing)} are missing and there is no apt-get to install them; "
                           f"install the packages {' '.join(packages)} (or your system's equivalents)")
    print(f"local_cluster: {', '.join(missing)} missing; installing {' '.join(packages)} with apt-get "
          "(a few minutes on a fresh machine)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=1200)
    missing = [p for p in needed if which(p) is None]
    if missing:
        raise ClusterError(f"apt-get installed {' '.join(packages)} but {', '.join(missing)} is still missing")
