"""The project's own Slurm cluster on this machine: MUNGE, MariaDB, slurmdbd, slurmctld and slurmd, run as root.

    python launch/local_cluster.py up                  # one node with accounting (sacct works)
    python launch/local_cluster.py up --no-accounting  # no slurmdbd: sacct fails, squeue works
    python launch/local_cluster.py up --nodes 2        # plus node1, node2 in network namespaces (partition multinode)
    python launch/local_cluster.py up --gpu-shaped     # node1, node2 look like 8-GPU nodes (partition gpu)
    python launch/local_cluster.py status              # what runs (exit 0 when up, 3 when not)
    python launch/local_cluster.py down                # stop what `up` started, by process id

Everything lives in ``<state>/slurm`` (``<repo>/.state`` unless ``$MEMORYMODELS_STATE`` is set): ``slurm.conf`` and
``slurmdbd.conf``, a MUNGE key and socket, a MariaDB data directory on a private port, Slurm's state, spool, pid and
log files. Clients find it through ``SLURM_CONF`` (see ``slurm_environ()``); ``/etc/slurm`` is never touched. Ports
are chosen once per state directory, so a second state directory runs a second, independent cluster beside it.

The GPU-shaped mode (``--gpu-shaped``, implies ``--nodes 2``) makes the two namespace nodes advertise what the
shipped GPU profiles ask for (``config.GPU_SHAPE``: 8 GPUs backed by stand-in character devices, 128 CPUs, 2 TB,
``Features=v100,a100,h100``, partition ``gpu``), so slurmctld itself judges their scripts (``sbatch --test-only``,
held submissions); nothing runs on GPUs. Use it in a separate state directory
(``MEMORYMODELS_STATE=/tmp/gpu-state python launch/local_cluster.py up --gpu-shaped --no-accounting``).

``up`` is idempotent: a running cluster in the asked-for mode is found in about a second; a changed mode (accounting
on or off, node count) restarts only the daemons whose configuration changed. When the Debian packages are missing,
``up`` installs them with apt-get (root, non-interactive). When it cannot, it says why and exits non-zero.

The launcher never imports this package: the local profiles name the cluster's ``slurm.conf`` (``slurm_conf:``),
as a profile of any other cluster would. Tests use ``slurm_environ()``, ``conf_path()``, ``is_up()`` and
``wait_for_job()``.

This module orders the steps (``up``, ``down``, ``status``) and holds the command line
(``launch/local_cluster.py`` runs it); the parts are ``config`` (state directory, ``cluster.json``, ``Layout``, the
text of ``slurm.conf``), ``daemons`` (starting and stopping each daemon), ``network`` (the two-node namespace
network) and ``processes`` (running programs, pid files, the preflight that installs the packages).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

from launch.localcluster.config import (GPU_SHAPE, Layout, conf_path, fake_gpu_dir, gres_conf_text, init_settings,
                                        load_settings, save_settings, settings_path, slurm_conf_text,
                                        slurmdbd_conf_text, state_dir, write_atomic)
from launch.localcluster.daemons import daemon_pid, start_daemons, stop_daemon
from launch.localcluster.network import NET_LOCK_DIR, net_down, net_plan, net_up
from launch.localcluster.processes import ClusterError, pid_of, preflight, run
from launch.slurm.output import TERMINAL_STATES


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


def up(*, accounting: bool = True, nodes: int | None = None, state: Path | None = None,
       gpu_shaped: bool | None = None) -> Layout:
    """Start the cluster, or find it running; restart only what a changed mode needs.

    ``nodes``: 1 (this host), 2 (this host plus two namespace nodes in partition ``multinode``), or None to keep
    what runs (1 when nothing does). ``gpu_shaped``: the namespace nodes look like 8-GPU nodes (partition ``gpu``;
    implies 2 nodes), False: plain CPU nodes, None: keep what runs."""
    state = (state or state_dir()).resolve()
    if nodes not in (None, 1, 2):
        raise ClusterError(f"--nodes {nodes}: the local cluster has 1 or 2 nodes")
    if gpu_shaped and nodes == 1:
        raise ClusterError("--gpu-shaped needs the two namespace nodes (--nodes 2)")
    if gpu_shaped:
        nodes = 2
    preflight(multinode=nodes == 2)
    with _locked(state):
        for sub in ("munge", "mysql", "run", "log", "ctld", "spool"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        # munged wants the socket's directories searchable by all, and the key's not writable by others.
        os.chmod(state, 0o755)
        (state / "munge-key").mkdir(mode=0o700, exist_ok=True)
        lay = _configure_nodes(state, accounting, nodes, gpu_shaped)
        (state / "plugstack.conf").touch()
        if lay.gpu_shaped:
            _make_fake_gpus(state)
        gres_changed = _write_gres_conf(lay)
        conf_changed = write_atomic(lay.conf, slurm_conf_text(lay, accounting)) or gres_changed
        dbd_changed = write_atomic(lay.dbd_conf, slurmdbd_conf_text(lay), 0o600)
        start_daemons(lay, accounting, conf_changed, dbd_changed)
    return lay


def _write_gres_conf(lay: Layout) -> bool:
    """``gres.conf`` in the GPU-shaped mode, none otherwise; whether it changed."""
    path = lay.state / "gres.conf"
    if lay.gpu_shaped:
        return write_atomic(path, gres_conf_text(lay))
    if path.exists():
        path.unlink()
        return True
    return False


def _make_fake_gpus(state: Path) -> None:
    """Character devices with the null device's numbers (1, 3) standing in for GPUs: slurmd counts the GRES files it
    finds, and refuses a node whose configured GPUs it cannot count ("gres/gpu count reported lower than
    configured")."""
    folder = fake_gpu_dir(state)
    folder.mkdir(exist_ok=True)
    for i in range(GPU_SHAPE["gpus"]):
        path = folder / f"nvidia{i}"
        if not path.exists():
            try:
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            except OSError as err:
                raise ClusterError(f"cannot create the stand-in GPU device {path} ({err.strerror}); the GPU-shaped "
                                   f"mode needs root on a file system that allows device files") from err


def _configure_nodes(state: Path, accounting: bool, nodes: int | None, gpu_shaped: bool | None = None) -> Layout:
    """Record the wanted mode in ``cluster.json`` and create (or remove) the namespace nodes' network."""
    settings = init_settings(state)
    old = Layout(state, dict(settings))
    want_nodes = nodes if nodes is not None else (2 if settings.get("net") else 1)
    with _locked(NET_LOCK_DIR):  # two clusters planning their networks at once would pick the same subnet
        if want_nodes == 2:
            settings["net"] = settings.get("net") or net_plan(state)
        else:
            settings.pop("net", None)
        settings["accounting"] = accounting
        if gpu_shaped is not None or want_nodes != 2:
            settings["gpu_shaped"] = bool(gpu_shaped) and want_nodes == 2
        save_settings(state, settings)  # before creating anything, so that `down` knows what to remove
        lay = Layout(state, settings)
        for node in set(old.nodes()) - set(lay.nodes()):
            stop_daemon(old, f"slurmd {node}")
        if old.net and not lay.net:
            net_down(old.net, state)
        if lay.net:
            net_up(lay.net, state)
    return lay


def down(state: Path | None = None) -> None:
    """Stop every daemon that ``up`` started (by the pids in its pid files) and remove its network objects."""
    state = (state or state_dir()).resolve()
    if not settings_path(state).exists():
        print(f"local_cluster: nothing to stop in {state}")
        return
    with _locked(state):
        settings = load_settings(state)
        lay = Layout(state, settings)
        # Nodes first, the controller next, the database last, MUNGE (everyone's authentication) at the very end.
        for name in [f"slurmd {n}" for n in lay.nodes()] + ["slurmctld", "slurmdbd", "mariadbd", "munged"]:
            stop_daemon(lay, name)
        if lay.net:
            with _locked(NET_LOCK_DIR):
                net_down(lay.net, state)
            settings.pop("net")
            save_settings(state, settings)


def status(state: Path | None = None) -> dict:
    """``{"state": dir, "conf": path, "accounting": bool, "daemons": {name: pid or None}, "nodes": {name: state}}``."""
    state = (state or state_dir()).resolve()
    settings = load_settings(state)
    info = {"state": str(state), "conf": str(conf_path(state)), "accounting": settings.get("accounting"),
            "daemons": {}, "nodes": {}}
    if "ports" not in settings:
        return info
    lay = Layout(state, settings)
    info["daemons"] = {name: daemon_pid(lay, name) for name in lay.pidfiles()}
    if info["daemons"]["slurmctld"]:
        proc = run(["sinfo", "-h", "-N", "-o", "%N %P %T"], env=lay.environ(), check=False, timeout=15)
        for line in proc.stdout.splitlines():
            name, partition, node_state = line.split()
            info["nodes"][name] = f"{node_state} (partition {partition.rstrip('*')})"
    return info


def is_up(state: Path | None = None) -> bool:
    """Whether the local cluster's slurmctld runs (cheap: reads a pid file, runs nothing)."""
    state = (state or state_dir()).resolve()
    return pid_of(state / "run" / "slurmctld.pid", state, "slurmctld") is not None


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
    p_up.add_argument("--gpu-shaped", action="store_true", default=None,
                      help="node1/node2 advertise 8 stand-in GPUs, 128 CPUs, 2 TB, features v100,a100,h100 in "
                           "partition gpu, so the GPU profiles' scripts meet a real slurmctld (implies --nodes 2)")
    sub.add_parser("down", help="stop what `up` started and remove its network namespaces and /etc/hosts entries")
    sub.add_parser("status", help="print what runs; exit 0 when the cluster is up, 3 when not")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            lay = up(accounting=not args.no_accounting, nodes=args.nodes, gpu_shaped=args.gpu_shaped)
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
