"""The shipped GPU profiles meet a real slurmctld: a GPU-shaped local cluster (``local_cluster.py up --gpu-shaped``:
two namespace nodes with 8 stand-in GPUs, 128 CPUs, 2 TB, features v100/a100/h100, partition gpu) accepts every
shipped GPU profile's script, with each launcher, on one and two nodes; a held submission is queued as planned; and
a job bigger than the nodes is refused by our preflight, naming the key, with Slurm's own reason beside it.

    .venv/bin/pytest tests/launch/test_gpu_shaped.py -q

The cluster runs in a temporary state directory beside the shared one (its own ports, subnet and node names) and is
stopped at the end. Where it cannot start (not root, no Slurm packages), the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from launch.localcluster import cluster as local_cluster
from launch.localcluster.config import GPU_PARTITION, GPU_SHAPE
from launch.planning.plan import plan_job
from launch.planning.profiles import list_profiles, load_profile
from launch.slurm.client import slurm_environ
from launch.slurm.cluster import ClusterInfo
from launch.submission.preflight import preflight
from launch.submission.preflight import test_only as slurm_test_only
from launch.submission.submit import submit_job
from tests.launch.test_plan import EXPERIMENT

pytestmark = pytest.mark.slurm

GPU_PROFILES = [name for name in list_profiles() if load_profile(name, ["checkpoint_root=/x"]).gpu_type]


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    """A GPU-shaped cluster without accounting in its own state directory; SLURM_CONF of it."""
    state = tmp_path_factory.mktemp("gpu-state") / "slurm"
    try:
        lay = local_cluster.up(accounting=False, gpu_shaped=True, state=state)
    except Exception as err:  # noqa: BLE001 - any failure to start is a reason to skip, named
        if os.environ.get("CI") == "true":
            pytest.fail(f"the GPU-shaped local cluster did not start: {err} (CI=true: Slurm tests must run)")
        pytest.skip(f"the GPU-shaped local cluster did not start: {err}")
    try:
        yield lay
    finally:
        local_cluster.down(state)


@pytest.fixture
def roots(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    return tmp_path


def gpu_plan(name: str, cluster, *, launcher: str | None = None, nodes: int | None = None, sets=()):
    profile = load_profile(name, [f"slurm_conf={cluster.conf}", *sets])
    return plan_job(profile, EXPERIMENT, launcher=launcher, nodes=nodes)


def test_the_nodes_advertise_what_the_profiles_ask_for(gpu_cluster):
    info = ClusterInfo.query(slurm_environ(gpu_cluster.conf))
    partition = info.partitions[GPU_PARTITION]
    nodes = [info.nodes[n] for n in partition.nodes]
    assert len(nodes) == 2 and partition.state == "UP"
    for node in nodes:
        assert node.gpus == GPU_SHAPE["gpus"] and node.cpus == GPU_SHAPE["cpus"]
        assert set(GPU_SHAPE["features"]) <= set(node.features)


def test_every_shipped_gpu_profile_is_accepted_with_each_launcher_on_one_and_two_nodes(gpu_cluster, roots):
    info = ClusterInfo.query(slurm_environ(gpu_cluster.conf))
    checked = []
    for name in GPU_PROFILES:
        for launcher in ("torchrun", "fsdp", "deepspeed"):
            for nodes in (1, 2):
                plan = gpu_plan(name, gpu_cluster, launcher=launcher, nodes=nodes)
                result = preflight([plan], info=info)  # our checks and `sbatch --test-only` of the planned script
                assert result.problems == [] and result.skipped is None, (name, launcher, nodes, result.problems)
                checked.append((name, launcher, nodes))
    assert {c[0] for c in checked} >= {"v100x8", "a100x8", "h100x8"} and len(checked) == len(GPU_PROFILES) * 6
    # the site settings too: whole nodes, extra srun arguments, a pyxis container
    site = gpu_plan("h100x8", gpu_cluster, nodes=2, sets=["exclusive=true", "srun_args=[--mpi=pmi2]",
                                                          "container={image: nvcr.io#nvidia/pytorch:24.05-py3}"])
    assert preflight([site], info=info).problems == []


def test_a_held_submission_is_queued_as_planned(gpu_cluster, roots, monkeypatch):
    monkeypatch.setenv("MEMORYMODELS_STATE", str(roots / "state"))  # the journal of this test
    plan = gpu_plan("v100x8", gpu_cluster, launcher="fsdp", nodes=2, sets=["sbatch_extra={hold: true}"])
    job_id = submit_job(plan).jobs[0]["job_id"]
    env = slurm_environ(gpu_cluster.conf)
    try:
        line = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True, text=True,
                              check=True).stdout
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert fields["JobState"] == "PENDING" and fields["Partition"] == GPU_PARTITION
        assert fields["NumNodes"] in ("2", "2-2") and fields["Features"] == "v100" and fields["Requeue"] == "1"
        assert "gpu:8" in fields.get("TresPerNode", "") and fields["WorkDir"] == str(plan.code.path)
        assert (plan.code.path / "launch" / "node" / "task.py").is_file()  # the snapshot it will run from
    finally:
        subprocess.run(["scancel", job_id], env=env, check=False)


@pytest.mark.parametrize("sets, nodes, ours, slurms", [
    (["gpus_per_node=16"], 1, "one node must offer 16 GPU(s) V100", "Requested node configuration is not available"),
    (["mem_per_gpu_gb=300"], 1, "one node must offer 8 GPU(s) V100, 40 CPUs and 2400G", "Requested node configuration is not available"),
    ([], 3, "the job needs 3 nodes but partition 'gpu' has only 2", "Requested node configuration is not available"),
])
def test_a_job_bigger_than_the_nodes_is_refused_by_our_preflight_and_by_slurm(gpu_cluster, roots, sets, nodes, ours,
                                                                             slurms):
    plan = gpu_plan("v100x8", gpu_cluster, nodes=nodes, sets=sets)
    problems = preflight([plan]).problems
    assert any(ours in p and "cluster_profiles/v100x8.yaml" in p for p in problems), problems
    assert any(p.startswith("sbatch --test-only refused") and slurms in p for p in problems), problems
    assert any(slurms in p for p in slurm_test_only(plan.script, slurm_environ(gpu_cluster.conf), plan.profile))
