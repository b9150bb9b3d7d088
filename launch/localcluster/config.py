"""Where the local Slurm cluster lives and what its configuration says (used by ``launch/local_cluster.py``): the
state directory, the settings it keeps in ``cluster.json`` (ports, database password, mode), the ``Layout`` of
paths, ports and node names, and the text of ``slurm.conf`` and ``slurmdbd.conf`` (pure functions of a layout)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import zlib
from pathlib import Path

from launch.localcluster.processes import ClusterError, read_file
from memorymodels.experiment import state_dir as project_state_dir
from memorymodels.fileio import write_text_atomic

MULTINODE_PARTITION = "multinode"
GPU_PARTITION = "gpu"
GPU_SHAPE = {"gpus": 8, "cpus": 128, "memory_mb": 2_000_000, "features": ("v100", "a100", "h100")}
"""What each namespace node advertises in the GPU-shaped mode (``up --gpu-shaped``): the largest shipped GPU
profile's request fits (a100x8: 8 GPUs, 128 CPUs; h100x8: 1600 GB), every profile's ``constraint`` matches, and the
partition is the one the profiles name. The sizes are believed because of ``SlurmdParameters=config_overrides``; the
GPUs are stand-in character devices (:func:`fake_gpu_files`), since count-only GRES is refused at registration."""


# --------------------------------------------------------------------------------------------------------------------
# Where things are

def state_dir() -> Path:
    """``<state>/slurm`` (``memorymodels.experiment.state_dir``: ``$MEMORYMODELS_STATE`` or ``<repo>/.state``); the
    local profiles' ``slurm_conf`` names the ``slurm.conf`` in it."""
    return project_state_dir().expanduser().resolve() / "slurm"


def fake_gpu_dir(state: Path) -> Path:
    """Where the GPU-shaped mode's stand-in device files live (``nvidia0`` ... ``nvidia7``)."""
    return state / "fakegpu"


def conf_path(state: Path | None = None) -> Path:
    """The local cluster's ``slurm.conf`` (it exists once ``up`` has run)."""
    return (state or state_dir()) / "slurm.conf"


def settings_path(state: Path) -> Path:
    """``cluster.json``: the ports, the database password and the mode (accounting, namespace network)."""
    return state / "cluster.json"


def load_settings(state: Path) -> dict:
    """The settings in ``cluster.json``, or {} before the first ``up``."""
    path = settings_path(state)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ClusterError(f"{path}: not valid JSON ({err}); run `python launch/local_cluster.py down` and remove "
                           f"{state} to start afresh") from err


def write_atomic(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` through a temporary name; return whether the content changed."""
    if path.exists() and path.read_text() == text:
        return False
    write_text_atomic(path, text, mode=mode)
    return True


def save_settings(state: Path, settings: dict) -> None:
    write_atomic(settings_path(state), json.dumps(settings, indent=2, sort_keys=True) + "\n", 0o600)


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

    @property
    def gpu_shaped(self) -> bool:
        return bool(self.settings.get("gpu_shaped")) and self.net is not None

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


def init_settings(state: Path) -> dict:
    """The saved settings, with ports and a database password chosen when there are none yet (not saved here)."""
    settings = load_settings(state)
    if "ports" not in settings:
        base = _free_port_block(state)
        settings["ports"] = {"slurmctld": base, "slurmd": base + 1, "slurmdbd": base + 2, "mysql": base + 3}
    settings.setdefault("db_password", secrets.token_hex(12))
    return settings


# --------------------------------------------------------------------------------------------------------------------
# slurm.conf and slurmdbd.conf

def _machine_memory_mb() -> int:
    for line in read_file(Path("/proc/meminfo")).splitlines():
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
        shape = GPU_SHAPE
        size = (f"CPUs={shape['cpus']} RealMemory={shape['memory_mb']} Gres=gpu:{shape['gpus']} "
                f"Features={','.join(shape['features'])}") if lay.gpu_shaped else f"CPUs=4 RealMemory={memory // 4}"
        for node in lay.net["nodes"]:
            lines.append(f"NodeName={node['name']} NodeAddr={node['address']} {size} State=UNKNOWN")
        lines.append(f"PartitionName={MULTINODE_PARTITION} Nodes={','.join(names)} MaxTime=INFINITE State=UP")
        if lay.gpu_shaped:
            lines.append(f"PartitionName={GPU_PARTITION} Nodes={','.join(names)} MaxTime=INFINITE State=UP")
    return lines


def gres_conf_text(lay: Layout) -> str:
    """``gres.conf`` beside ``slurm.conf``: in the GPU-shaped mode the namespace nodes' GPUs are the stand-in device
    files (pure; written by ``up``)."""
    lines = ["# Written by `python launch/local_cluster.py up`; do not edit.", "AutoDetect=off"]
    if lay.gpu_shaped:
        names = ",".join(n["name"] for n in lay.net["nodes"])
        last = GPU_SHAPE["gpus"] - 1
        lines.append(f"NodeName={names} Name=gpu File={fake_gpu_dir(lay.state)}/nvidia[0-{last}]")
    return "\n".join(lines) + "\n"


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
        *(["GresTypes=gpu"] if lay.gpu_shaped else []),
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
