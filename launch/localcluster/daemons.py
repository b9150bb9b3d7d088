"""The daemons of the local Slurm cluster (used by ``launch/local_cluster.py``), in start order: munged, mariadbd,
slurmdbd, slurmctld and one slurmd per node (namespace nodes' slurmd run inside their network namespace).
``start_daemons`` starts what does not run and restarts what a changed configuration needs; ``stop_daemon`` stops
one by the pid in its pid file."""

from __future__ import annotations

import os
import shutil
import subprocess

from launch.localcluster.config import Layout
from memorymodels.fileio import write_text_atomic
from launch.localcluster.processes import SBIN_PATH, ClusterError, pid_of, run, spawn, stop_pid, wait_for, which


# --------------------------------------------------------------------------------------------------------------------
# The daemons, in start order

def daemon_pid(lay: Layout, name: str) -> int | None:
    """The pid of daemon ``name`` ("munged", ..., "slurmd node1") of this cluster, or None when it does not run."""
    return pid_of(lay.pidfiles()[name], lay.state, name.split()[0])


def _daemon_env(lay: Layout) -> dict:
    env = lay.environ()
    env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":" + SBIN_PATH
    return env


def _munge_works(lay: Layout) -> bool:
    env = _daemon_env(lay)
    cred = run(["munge", "-n", "-S", str(lay.munge_socket)], env=env, check=False, timeout=10)
    if cred.returncode != 0:
        return False
    return run(["unmunge", "-S", str(lay.munge_socket)], env=env, check=False, timeout=10,
               input=cred.stdout).returncode == 0


def _start_munged(lay: Layout) -> None:
    key = lay.state / "munge-key" / "munge.key"
    if not key.exists():
        write_text_atomic(key, os.urandom(1024), mode=0o400)
    # --force: run even when a directory above the socket is not searchable by all (a 0700 home or pytest's
    # tmp_path); every client of this cluster runs as root, so nothing is lost.
    spawn([which("munged"), "--force", f"--socket={lay.munge_socket}", f"--key-file={key}",
           f"--pid-file={lay.run}/munged.pid", f"--log-file={lay.log}/munged.log",
           f"--seed-file={lay.state}/munge-key/munged.seed"], lay.log / "munged.out", _daemon_env(lay))
    wait_for("munged", lambda: _munge_works(lay), 20, lay.log / "munged.log")


def _mysql(lay: Layout, sql: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["mariadb", "--no-defaults", f"--socket={lay.mysql_socket}", "-uroot", "-e", sql],
               check=check, timeout=30)


def _start_mariadbd(lay: Layout) -> None:
    data = lay.state / "mysql" / "data"
    if not data.exists():
        tmp = data.with_name("data.initialising")
        shutil.rmtree(tmp, ignore_errors=True)
        with open(lay.log / "mariadb-install-db.log", "w") as out:
            subprocess.run([which("mariadb-install-db"), "--no-defaults", f"--datadir={tmp}", "--user=root",
                            "--skip-test-db"], stdout=out, stderr=out, check=True, timeout=300)
        os.replace(tmp, data)
    spawn([which("mariadbd"), "--no-defaults", f"--datadir={data}", f"--socket={lay.mysql_socket}",
           f"--port={lay.mysql_port}", "--bind-address=127.0.0.1", f"--pid-file={lay.run}/mariadbd.pid",
           f"--log-error={lay.log}/mariadbd.log", "--user=root", "--skip-name-resolve", "--skip-log-bin",
           # The values slurmdbd asks for at start-up (it warns otherwise).
           "--innodb-buffer-pool-size=128M", "--innodb-lock-wait-timeout=900"], lay.log / "mariadbd.out",
          _daemon_env(lay))
    wait_for("mariadbd", lambda: _mysql(lay, "SELECT 1", check=False).returncode == 0, 60,
             lay.log / "mariadbd.log")
    password = lay.settings["db_password"]
    _mysql(lay, "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
                f"CREATE USER IF NOT EXISTS 'slurm'@'%' IDENTIFIED BY '{password}'; "
                f"ALTER USER 'slurm'@'%' IDENTIFIED BY '{password}'; "
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'%'; FLUSH PRIVILEGES;")


def _sacctmgr(lay: Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["sacctmgr", "-i", "-n", "-P", *args], env=_daemon_env(lay), check=check, timeout=30)


def _start_slurmdbd(lay: Layout) -> None:
    # slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
    spawn([which("slurmdbd")], lay.log / "slurmdbd.out", _daemon_env(lay))
    wait_for("slurmdbd", lambda: _sacctmgr(lay, "show", "cluster", "format=cluster", check=False).returncode == 0,
             60, lay.log / "slurmdbd.log")
    if "local" not in _sacctmgr(lay, "show", "cluster", "format=cluster").stdout.split():
        _sacctmgr(lay, "add", "cluster", "local")


def _ctld_up(lay: Layout) -> bool:
    proc = run(["scontrol", "ping"], env=_daemon_env(lay), check=False, timeout=15)
    return "is UP" in proc.stdout


def _start_slurmctld(lay: Layout) -> None:
    spawn([which("slurmctld"), "-f", str(lay.conf)], lay.log / "slurmctld.out", _daemon_env(lay))
    wait_for("slurmctld", lambda: _ctld_up(lay), 60, lay.log / "slurmctld.log")


def _start_slurmd(lay: Layout, node: str) -> None:
    slurmd = [which("slurmd"), "-f", str(lay.conf), "-N", node]
    netns = {n["name"]: n["netns"] for n in (lay.net or {}).get("nodes", [])}
    if node in netns:
        # nsenter, not `ip netns exec`: the latter remounts /sys and slurmd then finds no cgroup filesystem. The
        # node gets its own hostname (torchrun advertises it to the other workers; it resolves via /etc/hosts).
        cmd = [which("nsenter"), f"--net=/run/netns/{netns[node]}", which("unshare"), "--uts", "sh", "-c",
               f'hostname {node} && exec "$@"', "sh", *slurmd]
    else:
        cmd = slurmd
    (lay.state / "spool" / node).mkdir(parents=True, exist_ok=True)
    spawn(cmd, lay.log / f"slurmd-{node}.out", _daemon_env(lay))
    wait_for(f"slurmd {node}", lambda: _node_ready(lay, node), 60, lay.log / f"slurmd-{node}.log")


def _node_ready(lay: Layout, node: str) -> bool:
    proc = run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], env=_daemon_env(lay), check=False,
               timeout=15)
    state = proc.stdout.strip().split("\n")[0] if proc.stdout.strip() else ""
    if state.endswith("*") or not state:
        return False
    if state.startswith(("down", "drain")):
        run(["scontrol", "update", f"nodename={node}", "state=resume"], env=_daemon_env(lay), check=False)
        return False
    return state not in ("unknown", "not_responding")


# --------------------------------------------------------------------------------------------------------------------
# Starting what is missing, restarting what changed, stopping

def start_daemons(lay: Layout, accounting: bool, conf_changed: bool, dbd_changed: bool) -> None:
    """Start every daemon of ``lay`` that does not run (stop slurmdbd and mariadbd without ``accounting``), restart
    those whose configuration file changed, and wait until every node is ready."""
    _ensure(lay, "munged", _start_munged)
    if accounting:
        _ensure(lay, "mariadbd", _start_mariadbd)
        _ensure(lay, "slurmdbd", _start_slurmdbd, restart=dbd_changed)
    else:
        stop_daemon(lay, "slurmdbd")
        stop_daemon(lay, "mariadbd")
    _ensure(lay, "slurmctld", _start_slurmctld, restart=conf_changed)
    for node in lay.nodes():
        _ensure(lay, f"slurmd {node}", lambda lay, node=node: _start_slurmd(lay, node), restart=conf_changed)
    for node in lay.nodes():
        wait_for(f"node {node}", lambda node=node: _node_ready(lay, node), 60, lay.log / f"slurmd-{node}.log")
    for name in lay.pidfiles():
        if (accounting or name not in ("mariadbd", "slurmdbd")) and daemon_pid(lay, name) is None:
            raise ClusterError(f"{name} stopped right after it started; see the logs in {lay.log}")


def _ensure(lay: Layout, name: str, start, restart: bool = False) -> None:
    pid = daemon_pid(lay, name)
    if pid is not None and restart:
        print(f"local_cluster: restarting {name} (its configuration changed)", flush=True)
        stop_pid(pid, name)
        pid = None
    if pid is None:
        start(lay)
        # A restarted controller reports a node ready from its saved state before the new slurmd wrote its pid.
        wait_for(f"{name}'s pid file", lambda: daemon_pid(lay, name) is not None, 30)
        print(f"local_cluster: started {name} (pid {daemon_pid(lay, name)})", flush=True)


def stop_daemon(lay: Layout, name: str) -> bool:
    """Stop daemon ``name`` of this cluster; return whether it ran."""
    pid = daemon_pid(lay, name)
    if pid is None:
        return False
    stop_pid(pid, name)
    print(f"local_cluster: stopped {name} (pid {pid})", flush=True)
    return True
