"""The project's own Slurm cluster on this machine: MUNGE, MariaDB, slurmdbd, slurmctld and slurmd, run as root.

    python launch/local_cluster.py up                  # one node with accounting (sacct works)
    python launch/local_cluster.py up --no-accounting  # no slurmdbd: sacct fails, squeue works
    python launch/local_cluster.py up --nodes 2        # plus node1, node2 in network namespaces (partition multinode)
    python launch/local_cluster.py status              # what runs (exit 0 when up, 3 when not)
    python launch/local_cluster.py down                # stop what `up` started, by process id

Everything lives in ``<state>/slurm`` (``<repo>/.state`` unless ``$MEMORYMODELS_STATE`` is set): ``slurm.conf`` and
``slurmdbd.conf``, a MUNGE key and socket, a MariaDB data directory on a private port, Slurm's state, spool, pid and
log files. Clients find it through ``SLURM_CONF`` (see ``slurm_environ()``); ``/etc/slurm`` is never touched. Ports
are chosen once per state directory, so a second state directory runs a second, independent cluster beside it.

``up`` is idempotent: a running cluster in the asked-for mode is found in about a second; a changed mode (accounting
on or off, node count) restarts only the daemons whose configuration changed. When the Debian packages are missing,
``up`` installs them with apt-get (root, non-interactive). When it cannot, it says why and exits non-zero.

Library use (the launcher and the dashboard): ``slurm_environ()``, ``conf_path()``, ``is_up()``, ``wait_for_job()``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APT_PACKAGES = ("slurm-wlm", "munge", "mariadb-server", "slurmdbd")
NEEDED_PROGRAMS = ("munged", "munge", "unmunge", "mariadbd", "mariadb-install-db", "mariadb", "slurmdbd",
                   "slurmctld", "slurmd", "sacctmgr", "sbatch", "scontrol", "sinfo")
MULTINODE_PARTITION = "multinode"
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
HOSTS_MARKER = "# memorymodels-local-cluster"
NET_LOCK_DIR = Path("/run/lock/memorymodels-local-cluster")


class ClusterError(RuntimeError):
    """The local cluster cannot be started or reached; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# Where things are

def state_dir() -> Path:
    """``$MEMORYMODELS_STATE/slurm``, or ``<repo>/.state/slurm``."""
    root = os.environ.get("MEMORYMODELS_STATE")
    return (Path(root).expanduser().resolve() if root else REPO / ".state") / "slurm"


def conf_path(state: Path | None = None) -> Path:
    """The local cluster's ``slurm.conf`` (it exists once ``up`` has run)."""
    return (state or state_dir()) / "slurm.conf"


def _settings_path(state: Path) -> Path:
    return state / "cluster.json"


def _load_settings(state: Path) -> dict:
    path = _settings_path(state)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ClusterError(f"{path}: not valid JSON ({err}); run `python launch/local_cluster.py down` and remove "
                           f"{state} to start afresh") from err


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` through a temporary name; return whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _save_settings(state: Path, settings: dict) -> None:
    _write_atomic(_settings_path(state), json.dumps(settings, indent=2, sort_keys=True) + "\n", 0o600)


# --------------------------------------------------------------------------------------------------------------------
# Processes, identified by their pid files and checked against their name, command line and environment

def _pid_of(pidfile: Path, state: Path, program: str) -> int | None:
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


def _daemon_pid(lay: "Layout", name: str) -> int | None:
    """The pid of daemon ``name`` ("munged", ..., "slurmd node1") of this cluster, or None when it does not run."""
    return _pid_of(lay.pidfiles()[name], lay.state, name.split()[0])


def _stop_pid(pid: int, name: str, timeout: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "State:\tZ" in _read(Path(f"/proc/{pid}/status")):
            return
        time.sleep(0.1)
    print(f"local_cluster: {name} (pid {pid}) ignored SIGTERM for {timeout:.0f}s; sending SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _run(cmd: list[str], *, env: dict | None = None, check: bool = True, timeout: float = 60,
         input: str | None = None) -> subprocess.CompletedProcess:
    cmd = [_which(cmd[0]) or cmd[0], *cmd[1:]]  # ip, slurmd & co. live in /usr/sbin, not always on PATH
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as err:
        raise ClusterError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f}s") from err
    if check and proc.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def _spawn(cmd: list[str], log: Path, env: dict) -> None:
    """Start a daemon detached from this process (it is re-parented to init, so it never lingers as our zombie)."""
    with open(log, "ab") as out:
        subprocess.run(["setsid", "sh", "-c", '"$@" </dev/null &', "sh", *cmd], stdout=out, stderr=out,
                       env=env, check=True)


def _wait_for(what: str, check, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\nlast lines of " + str(log) + ":\n" + "\n".join(_read(log).splitlines()[-15:])
    raise ClusterError(f"{what} did not come up within {timeout:.0f}s{tail}")


# --------------------------------------------------------------------------------------------------------------------
# Layout of one cluster

class Layout:
    """Paths, ports and node names of the cluster in one state directory."""

    def __init__(self, state: Path, settings: dict):
        self.state = state
        self.settings = settings
        self.host = socket.gethostname().split(".")[0]
        self.conf = conf_path(state)
        self.dbd_conf = state / "slurmdbd.conf"
        self.munge_socket = state / "munge" / "munge.socket.2"
        self.mysql_socket = state / "mysql" / "mysqld.sock"
        self.run = state / "run"
        self.log = state / "log"
        ports = settings["ports"]
        self.ctld_port, self.slurmd_port, self.dbd_port, self.mysql_port = (
            ports["slurmctld"], ports["slurmd"], ports["slurmdbd"], ports["mysql"])

    @property
    def net(self) -> dict | None:
        return self.settings.get("net")

    def nodes(self) -> list[str]:
        """All node names: this host, then the namespace nodes."""
        return [self.host] + [n["name"] for n in (self.net or {}).get("nodes", [])]

    def environ(self) -> dict:
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env

    def pidfiles(self) -> dict[str, Path]:
        files = {"munged": self.run / "munged.pid", "mariadbd": self.run / "mariadbd.pid",
                 "slurmdbd": self.run / "slurmdbd.pid", "slurmctld": self.run / "slurmctld.pid"}
        for node in self.nodes():
            files[f"slurmd {node}"] = self.run / f"slurmd-{node}.pid"
        return files


def _free_port_block(state: Path) -> int:
    """A block of 4 free TCP ports, chosen from the state directory's path so that it is stable and rarely clashes."""
    start = 20000 + (zlib.crc32(str(state).encode()) % 1000) * 10
    for offset in range(0, 10000, 10):
        base = 20000 + (start - 20000 + offset) % 10000
        if all(_port_free(base + i) for i in range(4)):
            return base
    raise ClusterError("no block of 4 free TCP ports between 20000 and 29999 for the local cluster")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _init_settings(state: Path) -> dict:
    settings = _load_settings(state)
    if "ports" not in settings:
        base = _free_port_block(state)
        settings["ports"] = {"slurmctld": base, "slurmd": base + 1, "slurmdbd": base + 2, "mysql": base + 3}
    settings.setdefault("db_password", secrets.token_hex(12))
    return settings


def _machine_memory_mb() -> int:
    for line in _read(Path("/proc/meminfo")).splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


def _node_lines(lay: Layout) -> list[str]:
    # Nodes advertise more CPUs than the machine has (config_overrides): tests submit many 1-CPU jobs that mostly
    # sleep or wait, and should run side by side rather than queue behind two cores.
    cpus = max(16, 4 * (os.cpu_count() or 1))
    memory = _machine_memory_mb() * 3 // 4
    lines = [f"NodeName={lay.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN",
             f"PartitionName=debug Nodes={lay.host} Default=YES MaxTime=INFINITE State=UP"]
    if lay.net:
        names = [n["name"] for n in lay.net["nodes"]]
        for node in lay.net["nodes"]:
            lines.append(f"NodeName={node['name']} NodeAddr={node['address']} CPUs=4 RealMemory={memory // 4} "
                         "State=UNKNOWN")
        lines.append(f"PartitionName={MULTINODE_PARTITION} Nodes={','.join(names)} MaxTime=INFINITE State=UP")
    return lines


def slurm_conf_text(lay: Layout, accounting: bool) -> str:
    """The ``slurm.conf`` for this layout (pure; written by ``up``)."""
    s = lay.state
    # Explicit addresses: the host name need not resolve (some CI machines have no entry for it).
    ctld_host = f"{lay.host}({lay.net['bridge_address'] if lay.net else '127.0.0.1'})"
    storage = "accounting_storage/slurmdbd" if accounting else "accounting_storage/none"
    lines = [
        "# Written by `python launch/local_cluster.py up`; rewritten on every `up`, do not edit.",
        "ClusterName=local",
        f"SlurmctldHost={ctld_host}",
        f"SlurmctldPort={lay.ctld_port}",
        f"SlurmdPort={lay.slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={lay.munge_socket}",
        f"StateSaveLocation={s}/ctld",
        f"SlurmdSpoolDir={s}/spool/%n",
        f"SlurmctldPidFile={lay.run}/slurmctld.pid",
        f"SlurmdPidFile={lay.run}/slurmd-%n.pid",
        f"SlurmctldLogFile={lay.log}/slurmctld.log",
        f"SlurmdLogFile={lay.log}/slurmd-%n.log",
        f"PlugStackConfig={s}/plugstack.conf",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",
        "DefMemPerCPU=256",
        "JobAcctGatherType=jobacct_gather/linux",
        f"AccountingStorageType={storage}",
        "AccountingStorageHost=localhost",
        f"AccountingStoragePort={lay.dbd_port}",
        # With slurmdbd, "Pass" names the MUNGE socket for talking to it (AuthInfo does not reach that connection).
        f"AccountingStoragePass={lay.munge_socket}",
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        # Thousands of array tasks in the sweep and dashboard tests. Every task of an array counts towards
        # MaxJobCount until MinJobAge after it ended (cancelled held arrays too), and several test sessions share
        # the cluster: 50000 ran out with a few 10000-task arrays; a pending array is still one record in memory.
        "MaxArraySize=20001",
        "MaxJobCount=200000",
        # Finished jobs stay visible in `squeue -t all` for 5 minutes: the squeue-only status path reads them.
        "MinJobAge=300",
        # Schedule at once, not on Slurm's one-minute default tick, so tests do not wait.
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_interval=2,sched_min_interval=0,bf_interval=1",
        "KillWait=5",
        "InactiveLimit=0",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=60",
        "MessageTimeout=20",
        *_node_lines(lay),
    ]
    return "\n".join(lines) + "\n"


def slurmdbd_conf_text(lay: Layout) -> str:
    """The ``slurmdbd.conf`` for this layout (pure; written by ``up`` with mode 600)."""
    return "\n".join([
        "# Written by `python launch/local_cluster.py up`; do not edit.",
        "AuthType=auth/munge",
        f"AuthInfo=socket={lay.munge_socket}",
        "DbdHost=localhost",
        f"DbdPort={lay.dbd_port}",
        "SlurmUser=root",
        "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1",
        f"StoragePort={lay.mysql_port}",
        "StorageUser=slurm",
        f"StoragePass={lay.settings['db_password']}",
        "StorageLoc=slurm_acct_db",
        f"LogFile={lay.log}/slurmdbd.log",
        f"PidFile={lay.run}/slurmdbd.pid",
    ]) + "\n"


# --------------------------------------------------------------------------------------------------------------------
# Preconditions

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def _preflight(multinode: bool) -> None:
    """Check that this machine can run the cluster; install the Debian packages when they are missing."""
    if not sys.platform.startswith("linux"):
        raise ClusterError(f"the local Slurm cluster needs Linux (this is {sys.platform})")
    if os.geteuid() != 0:
        raise ClusterError("it must run as root: it starts MUNGE, MariaDB and the Slurm daemons as root "
                           "(run `sudo .venv/bin/python launch/local_cluster.py up`)")
    needed = list(NEEDED_PROGRAMS) + (["ip", "nsenter", "unshare"] if multinode else [])
    missing = [p for p in needed if _which(p) is None]
    if not missing:
        return
    packages = list(APT_PACKAGES) + (["iproute2", "util-linux"] if multinode else [])
    if _which("apt-get") is None:
        raise ClusterError(f"programs {', '.join(missing)} are missing and there is no apt-get to install them; "
                           f"install the packages {' '.join(packages)} (or your system's equivalents)")
    print(f"local_cluster: {', '.join(missing)} missing; installing {' '.join(packages)} with apt-get "
          "(a few minutes on a fresh machine)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-q"], env=env, timeout=600)
    _run(["apt-get", "install", "-y", "-q", *packages], env=env, timeout=1200)
    missing = [p for p in needed if _which(p) is None]
    if missing:
        raise ClusterError(f"apt-get installed {' '.join(packages)} but {', '.join(missing)} is still missing")


# --------------------------------------------------------------------------------------------------------------------
# The daemons, in start order

def _daemon_env(lay: Layout) -> dict:
    env = lay.environ()
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":" + SBIN_PATH
    return env


def _munge_works(lay: Layout) -> bool:
    env = _daemon_env(lay)
    cred = _run(["munge", "-n", "-S", str(lay.munge_socket)], env=env, check=False, timeout=10)
    if cred.returncode != 0:
        return False
    return _run(["unmunge", "-S", str(lay.munge_socket)], env=env, check=False, timeout=10,
                input=cred.stdout).returncode == 0


def _start_munged(lay: Layout) -> None:
    key = lay.state / "munge-key" / "munge.key"
    if not key.exists():
        tmp = key.with_name(".munge.key.tmp")
        tmp.write_bytes(os.urandom(1024))
        os.chmod(tmp, 0o400)
        os.replace(tmp, key)
    # --force: run even when a directory above the socket is not searchable by all (a 0700 home or pytest's
    # tmp_path); every client of this cluster runs as root, so nothing is lost.
    _spawn([_which("munged"), "--force", f"--socket={lay.munge_socket}", f"--key-file={key}",
            f"--pid-file={lay.run}/munged.pid", f"--log-file={lay.log}/munged.log",
            f"--seed-file={lay.state}/munge-key/munged.seed"], lay.log / "munged.out", _daemon_env(lay))
    _wait_for("munged", lambda: _munge_works(lay), 20, lay.log / "munged.log")


def _mysql(lay: Layout, sql: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["mariadb", "--no-defaults", f"--socket={lay.mysql_socket}", "-uroot", "-e", sql],
                check=check, timeout=30)


def _start_mariadbd(lay: Layout) -> None:
    data = lay.state / "mysql" / "data"
    if not data.exists():
        tmp = data.with_name("data.initialising")
        shutil.rmtree(tmp, ignore_errors=True)
        with open(lay.log / "mariadb-install-db.log", "w") as out:
            subprocess.run([_which("mariadb-install-db"), "--no-defaults", f"--datadir={tmp}", "--user=root",
                            "--skip-test-db"], stdout=out, stderr=out, check=True, timeout=300)
        os.replace(tmp, data)
    _spawn([_which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={lay.mysql_socket}",
            f"--port={lay.mysql_port}", "--bind-address=127.0.0.1", f"--pid-file={lay.run}/mariadbd.pid",
            f"--log-error={lay.log}/mariadbd.log", "--user=root", "--skip-name-resolve", "--skip-log-bin",
            # The values slurmdbd asks for at start-up (it warns otherwise).
            "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900"], lay.log / "mariadbd.out",
           _daemon_env(lay))
    _wait_for("mariadbd", lambda: _mysql(lay, "SELECT 1", check=False).returncode == 0, 60,
              lay.log / "mariadbd.log")
    password = lay.settings["db_password"]
    _mysql(lay, "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                f"CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY '{password}'; "
                f"ALTER USER 'slurm'@'%' IDENTIFIED BY '{password}'; "
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%'; FLUSH PRIVILEGES;")


def _sacctmgr(lay: Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["sacctmgr", "-i", "-n", "-P", *args], env=_daemon_env(lay), check=check, timeout=30)


def _start_slurmdbd(lay: Layout) -> None:
    # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
    _spawn([_which("slurmdbd")], lay.log / "slurmdbd.out", _daemon_env(lay))
    _wait_for("slurmdbd", lambda: _sacctmgr(lay, "show", "cluster", "format=cluster", check=False).returncode == 0,
              60, lay.log / "slurmdbd.log")
    if "local" not in _sacctmgr(lay, "show", "cluster", "format=cluster").stdout.split():
        _sacctmgr(lay, "add", "cluster", "local")


def _ctld_up(lay: Layout) -> bool:
    proc = _run(["scontrol", "ping"], env=_daemon_env(lay), check=False, timeout=15)
    return "is UP" in proc.stdout


def _start_slurmctld(lay: Layout) -> None:
    _spawn([_which("slurmctld"), "-f", str(lay.conf)], lay.log / "slurmctld.out", _daemon_env(lay))
    _wait_for("slurmctld", lambda: _ctld_up(lay), 60, lay.log / "slurmctld.log")


def _start_slurmd(lay: Layout, node: str) -> None:
    slurmd = [_which("slurmd"), "-f", str(lay.conf), "-N", node]
    netns = {n["name"]: n["netns"] for n in (lay.net or {}).get("nodes", [])}
    if node in netns:
        # nsenter, not `ip netns exec`: the latter remounts /sys and slurmd then finds no cgroup filesystem. The
        # node gets its own hostname (torchrun advertises it to the other workers; it resolves via /etc/hosts).
        cmd = [_which("nsenter"), f"--net=/run/netns/{netns[node]}", _which("unshare"), "--uts", "sh", "-c",
               f'hostname {node} && exec "$@"', "sh", *slurmd]
    else:
        cmd = slurmd
    (lay.state / "spool" / node).mkdir(parents=True, exist_ok=True)
    _spawn(cmd, lay.log / f"slurmd-{node}.out", _daemon_env(lay))
    _wait_for(f"slurmd {node}", lambda: _node_ready(lay, node), 60, lay.log / f"slurmd-{node}.log")


def _node_ready(lay: Layout, node: str) -> bool:
    proc = _run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=_daemon_env(lay), check=False,
                timeout=15)
    state = proc.stdout.strip().split("\n")[0] if proc.stdout.strip() else ""
    if state.endswith("*") or not state:
        return False
    if state.startswith(("down", "drain")):
        _run(["scontrol", "update", f"nodename={node}", "state=resume"], env=_daemon_env(lay), check=False)
        return False
    return state not in ("unknown", "not_responding")


# --------------------------------------------------------------------------------------------------------------------
# Two nodes on one machine: a bridge, and per node a network namespace with one end of a veth pair

def _hosts_claimed() -> dict[int, str]:
    """Subnet index -> state directory, for every local cluster that has entries in /etc/hosts."""
    claimed = {}
    for line in _read(Path("/etc/hosts")).splitlines():
        if HOSTS_MARKER in line and line.startswith("10.231."):
            claimed[int(line.split(".")[2])] = line.split(HOSTS_MARKER, 1)[1].strip()
    return claimed


def _net_plan(state: Path) -> dict:
    """Names and addresses for two namespace nodes: ``node1``/``node2`` on 10.231.0.0/24 for the first cluster that
    asks, ``c<k>-node1``/``c<k>-node2`` on 10.231.<k>.0/24 for a k-th one running beside it."""
    claimed = _hosts_claimed()
    namespaces = _run(["ip", "netns", "list"], check=False).stdout.split()

    def free(k: int) -> bool:
        if k in claimed:
            return claimed[k] == str(state)
        return not any(ns.startswith(f"mm{k}-") for ns in namespaces)  # left by a cluster whose state is gone

    index = next((k for k in range(250) if free(k)), None)
    if index is None:
        raise ClusterError("no free subnet 10.231.<k>.0/24 for the namespace nodes; `down` other local clusters")
    prefix = "" if index == 0 else f"c{index}-"
    return {"index": index, "bridge": f"mm{index}-br", "bridge_address": f"10.231.{index}.1",
            "nodes": [{"name": f"{prefix}node{i}", "address": f"10.231.{index}.1{i}", "netns": f"mm{index}-node{i}",
                       "veth": f"mm{index}-node{i}"} for i in (1, 2)]}


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _net_up(net: dict, state: Path) -> None:
    """Create what is missing of the bridge, namespaces, veth pairs and /etc/hosts entries (idempotent)."""
    bridge = net["bridge"]
    if not _link_exists(bridge):
        _run(["ip", "link", "add", bridge, "type", "bridge"])
    if f" {net['bridge_address']}/" not in _run(["ip", "-o", "addr", "show", "dev", bridge]).stdout:
        _run(["ip", "addr", "add", f"{net['bridge_address']}/24", "dev", bridge])
    _run(["ip", "link", "set", bridge, "up"])
    namespaces = _run(["ip", "netns", "list"]).stdout.split()
    for node in net["nodes"]:
        ns, veth = node["netns"], node["veth"]
        if ns not in namespaces:
            _run(["ip", "netns", "add", ns])
        if not _link_exists(veth):
            _run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        if f" {node['address']}/" not in _run(["ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"]).stdout:
            _run(["ip", "-n", ns, "addr", "add", f"{node['address']}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "link", "set", veth, "master", bridge, "up"])
    _hosts_set(state, [(n["address"], n["name"]) for n in net["nodes"]])


def _net_down(net: dict, state: Path) -> None:
    """Remove exactly what ``_net_up`` created for this state directory."""
    _hosts_set(state, [])
    namespaces = _run(["ip", "netns", "list"], check=False).stdout.split()
    for node in net["nodes"]:
        if _link_exists(node["veth"]):
            _run(["ip", "link", "del", node["veth"]])
        if node["netns"] in namespaces:
            _run(["ip", "netns", "del", node["netns"]])
    if _link_exists(net["bridge"]):
        _run(["ip", "link", "del", net["bridge"]])


def _hosts_set(state: Path, entries: list[tuple[str, str]]) -> None:
    """Make this cluster's marked lines in /etc/hosts exactly ``entries``; other lines stay as they are."""
    hosts = Path("/etc/hosts")
    mark = f"{HOSTS_MARKER} {state}"
    old = _read(hosts)
    kept = [line for line in old.splitlines() if not line.endswith(mark)]
    new = "\n".join(kept + [f"{address}\t{name}\t{mark}" for address, name in entries]) + "\n"
    if new != old:
        # In place: /etc/hosts is often a bind mount (containers), which a rename cannot replace.
        with open(hosts, "r+") as f:
            f.write(new)
            f.truncate()


# --------------------------------------------------------------------------------------------------------------------
# up, down, status

@contextlib.contextmanager
def _locked(state: Path):
    """One `up`/`down` at a time per state directory (several test sessions may call `up` at once)."""
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClusterError(f"cannot create the state directory {state} ({err.strerror}); set MEMORYMODELS_STATE "
                           "to a writable directory") from err
    with open(state / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(*, accounting: bool = True, nodes: int | None = None, state: Path | None = None) -> Layout:
    """Start the cluster, or find it running; restart only what a changed mode needs.

    ``nodes``: 1 (this host), 2 (this host plus two namespace nodes in partition ``multinode``), or None to keep
    what runs (1 when nothing does)."""
    state = (state or state_dir()).resolve()
    if nodes not in (None, 1, 2):
        raise ClusterError(f"--nodes {nodes}: the local cluster has 1 or 2 nodes")
    _preflight(multinode=nodes == 2)
    with _locked(state):
        for sub in ("munge", "mysql", "run", "log", "ctld", "spool"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        # munged wants the socket's directories searchable by all, and the key's not writable by others.
        os.chmod(state, 0o755)
        (state / "munge-key").mkdir(mode=0o700, exist_ok=True)
        lay = _configure_nodes(state, accounting, nodes)
        (state / "plugstack.conf").touch()
        conf_changed = _write_atomic(lay.conf, slurm_conf_text(lay, accounting))
        dbd_changed = _write_atomic(lay.dbd_conf, slurmdbd_conf_text(lay), 0o600)
        _start_daemons(lay, accounting, conf_changed, dbd_changed)
    return lay


def _configure_nodes(state: Path, accounting: bool, nodes: int | None) -> Layout:
    """Record the wanted mode in ``cluster.json`` and create (or remove) the namespace nodes' network."""
    settings = _init_settings(state)
    old = Layout(state, dict(settings))
    want_nodes = nodes if nodes is not None else (2 if settings.get("net") else 1)
    with _locked(NET_LOCK_DIR):  # two clusters planning their networks at once would pick the same subnet
        if want_nodes == 2:
            settings["net"] = settings.get("net") or _net_plan(state)
        else:
            settings.pop("net", None)
        settings["accounting"] = accounting
        _save_settings(state, settings)  # before creating anything, so that `down` knows what to remove
        lay = Layout(state, settings)
        for node in set(old.nodes()) - set(lay.nodes()):
            _stop(old, f"slurmd {node}")
        if old.net and not lay.net:
            _net_down(old.net, state)
        if lay.net:
            _net_up(lay.net, state)
    return lay


def _start_daemons(lay: Layout, accounting: bool, conf_changed: bool, dbd_changed: bool) -> None:
    _ensure(lay, "munged", _start_munged)
    if accounting:
        _ensure(lay, "mariadbd", _start_mariadbd)
        _ensure(lay, "slurmdbd", _start_slurmdbd, restart=dbd_changed)
    else:
        _stop(lay, "slurmdbd")
        _stop(lay, "mariadbd")
    _ensure(lay, "slurmctld", _start_slurmctld, restart=conf_changed)
    for node in lay.nodes():
        _ensure(lay, f"slurmd {node}", lambda lay, node=node: _start_slurmd(lay, node), restart=conf_changed)
    for node in lay.nodes():
        _wait_for(f"node {node}", lambda node=node: _node_ready(lay, node), 60, lay.log / f"slurmd-{node}.log")
    for name in lay.pidfiles():
        if (accounting or name not in ("mariadbd", "slurmdbd")) and _daemon_pid(lay, name) is None:
            raise ClusterError(f"{name} stopped right after it started; see the logs in {lay.log}")


def _ensure(lay: Layout, name: str, start, restart: bool = False) -> None:
    pid = _daemon_pid(lay, name)
    if pid is not None and restart:
        print(f"local_cluster: restarting {name} (its configuration changed)", flush=True)
        _stop_pid(pid, name)
        pid = None
    if pid is None:
        start(lay)
        # A restarted controller reports a node ready from its saved state before the new slurmd wrote its pid.
        _wait_for(f"{name}'s pid file", lambda: _daemon_pid(lay, name) is not None, 30)
        print(f"local_cluster: started {name} (pid {_daemon_pid(lay, name)})", flush=True)


def _stop(lay: Layout, name: str) -> bool:
    pid = _daemon_pid(lay, name)
    if pid is None:
        return False
    _stop_pid(pid, name)
    print(f"local_cluster: stopped {name} (pid {pid})", flush=True)
    return True


def down(state: Path | None = None) -> None:
    """Stop every daemon that ``up`` started (by the pids in its pid files) and remove its network objects."""
    state = (state or state_dir()).resolve()
    if not _settings_path(state).exists():
        print(f"local_cluster: nothing to stop in {state}")
        return
    with _locked(state):
        settings = _load_settings(state)
        lay = Layout(state, settings)
        # Nodes first, the controller next, the database last, MUNGE (everyone's authentication) at the very end.
        for name in [f"slurmd {n}" for n in lay.nodes()] + ["slurmctld", "slurmdbd", "mariadbd", "munged"]:
            _stop(lay, name)
        if lay.net:
            with _locked(NET_LOCK_DIR):
                _net_down(lay.net, state)
            settings.pop("net")
            _save_settings(state, settings)


def status(state: Path | None = None) -> dict:
    """``{"state": dir, "conf": path, "accounting": bool, "daemons": {name: pid or None}, "nodes": {name: state}}``."""
    state = (state or state_dir()).resolve()
    settings = _load_settings(state)
    info = {"state": str(state), "conf": str(conf_path(state)), "accounting": settings.get("accounting"),
            "daemons": {}, "nodes": {}}
    if "ports" not in settings:
        return info
    lay = Layout(state, settings)
    info["daemons"] = {name: _daemon_pid(lay, name) for name in lay.pidfiles()}
    if info["daemons"]["slurmctld"]:
        proc = _run(["sinfo", "-h", "-N", "-o", "%N %P %T"], env=lay.environ(), check=False, timeout=15)
        for line in proc.stdout.splitlines():
            name, partition, node_state = line.split()
            info["nodes"][name] = f"{node_state} (partition {partition.rstrip('*')})"
    return info


def is_up(state: Path | None = None) -> bool:
    """Whether the local cluster's slurmctld runs (cheap: reads a pid file, runs nothing)."""
    state = (state or state_dir()).resolve()
    return _pid_of(state / "run" / "slurmctld.pid", state, "slurmctld") is not None


def slurm_environ(base: dict | None = None) -> dict:
    """A copy of ``base`` (default ``os.environ``) with ``SLURM_CONF`` pointing at the local cluster when it is up
    and ``SLURM_CONF`` is not already set (a real cluster's setting always wins)."""
    env = dict(os.environ if base is None else base)
    if "SLURM_CONF" not in env and is_up():
        env["SLURM_CONF"] = str(conf_path())
    return env


def wait_for_job(job_id: str | int, timeout: float = 120.0, *, environ: dict | None = None) -> dict[str, str]:
    """Wait until job ``job_id`` (every task, for an array) is in a terminal state; return ``{id: state}``, ids like
    ``"12"`` or ``"12_3"``. Reads ``scontrol show job`` (works without accounting), then ``sacct`` once the
    controller has forgotten the job. Raises TimeoutError naming the job, its states and its output file."""
    env = environ or slurm_environ()
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while True:
        states, stdout = _job_states(str(job_id), env)
        if states and all(s in TERMINAL_STATES for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm job {job_id} not finished after {timeout:.0f}s: states {states or 'unknown'}"
                               f"; output {stdout or 'unknown'}; see `scontrol show job {job_id}`")
        time.sleep(0.5)


def _job_states(job_id: str, env: dict) -> tuple[dict[str, str], str]:
    proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True,
                          timeout=30)
    states, stdout = {}, ""
    for line in proc.stdout.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId')}_{task}" if task else fields.get("JobId", job_id)
        pending_range = task is not None and not task.isdigit()  # "0-3" or "2-3%1": tasks not started yet
        states[key] = "PENDING" if pending_range else fields.get("JobState", "UNKNOWN")
        stdout = stdout or fields.get("StdOut", "")
    if proc.returncode == 0 and states:
        return states, stdout
    acct = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"], env=env,
                          capture_output=True, text=True, timeout=30)
    for line in acct.stdout.splitlines():
        key, _, state = line.partition("|")
        if key and "[" not in key:
            states[key] = state.split()[0] if state else "UNKNOWN"
    return states, stdout


# --------------------------------------------------------------------------------------------------------------------

def _print_status(info: dict) -> None:
    print(f"local Slurm cluster in {info['state']}: {'up' if info['daemons'].get('slurmctld') else 'down'}")
    print(f"  SLURM_CONF={info['conf']}")
    if not info["daemons"]:
        print("  never started (run `python launch/local_cluster.py up`)")
        return
    print(f"  accounting: {'on (slurmdbd, sacct works)' if info['accounting'] else 'off (squeue only)'}")
    for name, pid in info["daemons"].items():
        print(f"  {name:<16} {'running, pid ' + str(pid) if pid else 'stopped'}")
    for name, node_state in info["nodes"].items():
        print(f"  node {name:<11} {node_state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster, or find it running")
    p_up.add_argument("--no-accounting", action="store_true", help="no slurmdbd/MariaDB: sacct fails, squeue works")
    p_up.add_argument("--nodes", type=int, choices=(1, 2), default=None,
                      help="1: this host; 2: plus node1/node2 in network namespaces (default: keep what runs)")
    sub.add_parser("down", help="stop what `up` started and remove its network namespaces and /etc/hosts entries")
    sub.add_parser("status", help="print what runs; exit 0 when the cluster is up, 3 when not")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            lay = up(accounting=not args.no_accounting, nodes=args.nodes)
            print(f"local_cluster: up; export SLURM_CONF={lay.conf}")
        elif args.command == "down":
            down()
        else:
            info = status()
            _print_status(info)
            return 0 if info["daemons"].get("slurmctld") else 3
    except ClusterError as err:
        print(f"local_cluster: cannot {args.command} the local Slurm cluster: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
