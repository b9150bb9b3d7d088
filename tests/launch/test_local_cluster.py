"""launch/local_cluster.py against real daemons: `up` is idempotent, `status` tells what runs, the no-accounting mode
(sacct fails, squeue works), `down` stops the daemons by pid, and the two-node cluster (namespaces, srun across
nodes, `down` leaves no namespace, link or /etc/hosts entry).

The shared cluster (the one every test session uses) is only ever brought up here; everything that stops daemons
or switches modes runs on a second cluster in its own state directory, beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.localcluster import cluster as local_cluster
from launch.localcluster.config import MULTINODE_PARTITION

REPO = Path(local_cluster.__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "launch" / "local_cluster.py")]


def _cli(*args: str, state: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if state is not None:
        env["MEMORYMODELS_STATE"] = str(state)
    return subprocess.run(SCRIPT + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def _slurm(cmd: list[str], conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ, SLURM_CONF=str(conf)))


@pytest.fixture
def second_state(tmp_path):
    """A state directory for a second cluster; whatever the test leaves running there is stopped at the end."""
    state = tmp_path / "state"
    yield state
    if (state / "slurm" / "cluster.json").exists():
        local_cluster.down(state / "slurm")


# --------------------------------------------------------------------------------------------------------------------
# Pure parts

def test_slurm_environ_points_at_the_running_cluster_and_keeps_a_set_slurm_conf(slurm_cluster):
    assert local_cluster.slurm_environ({})["SLURM_CONF"] == str(local_cluster.conf_path())
    assert local_cluster.slurm_environ({"SLURM_CONF": "/etc/slurm/slurm.conf"})["SLURM_CONF"] == \
        "/etc/slurm/slurm.conf"


def test_not_root_says_why_and_exits_non_zero():
    if os.geteuid() != 0:
        proc = _cli("up")
    else:
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(as_nobody + [sys.executable, "-c", "import launch.localcluster.cluster"], capture_output=True,
                               cwd="/")
        if probe.returncode != 0:
            pytest.skip(f"user nobody cannot run {sys.executable} here")
        proc = subprocess.run(as_nobody + SCRIPT + ["up"], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 1
    assert "must run as root" in proc.stderr


# --------------------------------------------------------------------------------------------------------------------
# The shared cluster: only `up` (idempotent) and `status`

@pytest.mark.slurm
def test_up_again_finds_the_running_cluster_fast_and_restarts_nothing(slurm_cluster):
    before = local_cluster.status()["daemons"]
    start = time.monotonic()
    proc = _cli("up")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "started" not in proc.stdout and "restarting" not in proc.stdout
    assert f"SLURM_CONF={slurm_cluster.conf}" in proc.stdout
    assert local_cluster.status()["daemons"] == before
    assert elapsed < 15, f"a second `up` took {elapsed:.1f}s"


@pytest.mark.slurm
def test_status_lists_every_daemon_with_its_pid_and_the_nodes(slurm_cluster):
    proc = _cli("status")
    assert proc.returncode == 0, proc.stderr
    info = local_cluster.status()
    for name, pid in info["daemons"].items():
        assert pid is not None and _alive(pid), f"{name} is not running"
        assert f"{name:<16} running, pid {pid}" in proc.stdout
    assert f"node {slurm_cluster.host}" in proc.stdout and "partition debug" in proc.stdout


@pytest.mark.slurm
def test_wait_for_job_times_out_naming_the_job(slurm_cluster, tmp_path):
    job = _slurm(["sbatch", "--parsable", "--hold", f"--chdir={tmp_path}", "--wrap", "true"], slurm_cluster.conf)
    job_id = job.stdout.strip()
    try:
        with pytest.raises(TimeoutError, match=f"Slurm job {job_id} not finished.*PENDING"):
            local_cluster.wait_for_job(job_id, timeout=1)
    finally:
        _slurm(["scancel", job_id], slurm_cluster.conf)
    assert local_cluster.wait_for_job(job_id, timeout=30) == {job_id: "CANCELLED"}


@pytest.mark.slurm
def test_arrays_of_thousands_of_tasks_are_accepted(slurm_cluster, tmp_path):
    # Slurm's defaults (MaxArraySize=1001) would refuse this; the sweep and dashboard tests need it.
    job = _slurm(["sbatch", "--parsable", "--hold", "--array=0-1999", f"--chdir={tmp_path}", "--output=/dev/null",
                  "--wrap", "true"], slurm_cluster.conf)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip()
    try:
        tasks = _slurm(["squeue", "-r", "-h", "-j", job_id, "-o", "%i"], slurm_cluster.conf).stdout.split()
        assert len(tasks) == 2000 and f"{job_id}_1999" in tasks
    finally:
        _slurm(["scancel", job_id], slurm_cluster.conf)


@pytest.mark.slurm
def test_several_one_cpu_jobs_run_at_once(slurm_cluster, tmp_path):
    jobs = [_slurm(["sbatch", "--parsable", "--cpus-per-task=1", "--mem=64M", f"--chdir={tmp_path}",
                    "--output=/dev/null", "--wrap", "sleep 4"], slurm_cluster.conf).stdout.strip() for _ in range(4)]
    try:
        deadline = time.monotonic() + 20
        running = set()
        while running != set(jobs) and time.monotonic() < deadline:
            out = _slurm(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], slurm_cluster.conf).stdout.split()
            running = set(jobs) & set(out)
            time.sleep(0.2)
        assert running == set(jobs), "4 one-CPU jobs did not run side by side"
    finally:
        _slurm(["scancel", *jobs], slurm_cluster.conf)


# --------------------------------------------------------------------------------------------------------------------
# A second cluster: modes and `down`

@pytest.mark.slurm
def test_second_cluster_without_then_with_accounting_and_down_stops_every_pid(slurm_cluster, second_state):
    shared_before = local_cluster.status()["daemons"]
    proc = _cli("up", "--no-accounting", state=second_state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    slurm = second_state / "slurm"
    conf = slurm / "slurm.conf"
    info = local_cluster.status(slurm)
    assert info["daemons"]["slurmdbd"] is None and info["daemons"]["mariadbd"] is None
    assert info["daemons"]["slurmctld"] and info["daemons"]["munged"]

    # A daemon that died is started again by the next `up`, and nothing else is touched.
    os.kill(info["daemons"][f"slurmd {slurm_cluster.host}"], 9)
    proc = _cli("up", "--no-accounting", state=second_state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("started") == 1 and f"started slurmd {slurm_cluster.host}" in proc.stdout
    assert local_cluster.status(slurm)["daemons"]["slurmctld"] == info["daemons"]["slurmctld"]

    # Without accounting: squeue (and scontrol) work, sacct does not.
    job = _slurm(["sbatch", "--parsable", f"--chdir={second_state}", "--wrap", "echo hi"], conf)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip()
    assert local_cluster.wait_for_job(job_id, environ={**os.environ, "SLURM_CONF": str(conf)}) == \
        {job_id: "COMPLETED"}
    squeue = _slurm(["squeue", "-t", "all", "-h", "-o", "%i %T"], conf)
    assert squeue.returncode == 0 and f"{job_id} COMPLETED" in squeue.stdout
    sacct = _slurm(["sacct", "-n", "-j", job_id], conf)
    assert sacct.returncode != 0 and "accounting storage is disabled" in sacct.stdout + sacct.stderr

    # Switching accounting on starts MariaDB and slurmdbd and restarts the controller; sacct then works.
    proc = _cli("up", state=second_state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restarting slurmctld" in proc.stdout
    info = local_cluster.status(slurm)
    assert all(info["daemons"].values()), info
    sacct = _slurm(["sacct", "-n", "-X", "-P", "-o", "JobID,State"], conf)
    assert sacct.returncode == 0, sacct.stderr

    pids = list(info["daemons"].values())
    proc = _cli("down", state=second_state)
    assert proc.returncode == 0, proc.stderr
    for pid in pids:
        assert f"(pid {pid})" in proc.stdout
        assert not _alive(pid)
    assert _cli("status", state=second_state).returncode == 3
    # The shared cluster did not notice.
    assert local_cluster.status()["daemons"] == shared_before


# --------------------------------------------------------------------------------------------------------------------
# Two nodes on one machine

def _netns() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


@pytest.mark.slurm
@pytest.mark.multinode
def test_two_node_job_runs_srun_on_both_namespace_nodes(multinode_cluster, tmp_path, wait_for_job):
    nodes = [n["name"] for n in multinode_cluster.net["nodes"]]
    job = _slurm(["sbatch", "--parsable", "-p", MULTINODE_PARTITION, "-N2", "--ntasks-per-node=1",
                  f"--chdir={tmp_path}", "--output=out.txt", "--wrap", "srun hostname"], multinode_cluster.conf)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip()
    assert wait_for_job(job_id, timeout=60) == {job_id: "COMPLETED"}
    assert sorted((tmp_path / "out.txt").read_text().split()) == sorted(nodes)


@pytest.mark.slurm
@pytest.mark.multinode
def test_down_removes_exactly_the_namespaces_links_and_hosts_entries_up_created(multinode_cluster, second_state):
    hosts_before = Path("/etc/hosts").read_text()
    proc = _cli("up", "--nodes", "2", "--no-accounting", state=second_state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    settings = local_cluster.load_settings(second_state / "slurm")
    net = settings["net"]
    assert net["index"] != multinode_cluster.net["index"], "two clusters must not share a subnet"
    names = [n["name"] for n in net["nodes"]]
    for node in net["nodes"]:
        assert node["netns"] in _netns()
        assert f"{node['address']}\t{node['name']}" in Path("/etc/hosts").read_text()
    sinfo = _slurm(["sinfo", "-h", "-N", "-p", MULTINODE_PARTITION, "-o", "%N %T"],
                   second_state / "slurm" / "slurm.conf")
    assert sorted(line.split()[0] for line in sinfo.stdout.splitlines()) == sorted(names)

    proc = _cli("down", state=second_state)
    assert proc.returncode == 0, proc.stderr
    assert not set(n["netns"] for n in net["nodes"]) & set(_netns())
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for name in [net["bridge"]] + [n["veth"] for n in net["nodes"]]:
        assert f" {name}:" not in links and f" {name}@" not in links
    assert Path("/etc/hosts").read_text() == hosts_before
    # The shared two-node cluster still has its nodes.
    assert all(ns in _netns() for ns in (n["netns"] for n in multinode_cluster.net["nodes"]))


# --------------------------------------------------------------------------------------------------------------------
# tests/conftest.py: where the cluster cannot start, Slurm tests skip with the reason, and fail under CI=true

PROBE = '''
import pytest

@pytest.mark.gpu
def test_needs_gpu():
    import torch
    assert torch.cuda.is_available()

@pytest.mark.slurm
def test_needs_slurm(slurm_cluster):
    pass
'''


@pytest.mark.parametrize("ci", [False, True])
def test_slurm_tests_skip_with_the_reason_where_the_cluster_cannot_start_and_fail_in_ci(ci, tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "not-a-directory").write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SLURM_CONF")}
    # A state directory that cannot be created: `up` fails the same way on every machine, root or not.
    env.update(CI="true" if ci else "false", MEMORYMODELS_STATE=str(tmp_path / "not-a-directory" / "state"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-c", str(REPO / "setup.cfg"), "-rs", f"--basetemp={tmp_path / 'tmp'}",
                           str(tmp_path / "test_probe.py")], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env)
    out = proc.stdout + proc.stderr
    assert "the local Slurm cluster is not up: cannot create the state directory" in out, out
    import torch

    if not torch.cuda.is_available():
        assert "needs a CUDA device" in out, out
    if ci:
        assert proc.returncode == 1 and "1 error" in out and "CI=true: Slurm tests must run" in out, out
    else:
        assert proc.returncode == 0 and "2 skipped" in out, out
