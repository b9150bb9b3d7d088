"""Shared pytest setup: the ``gpu``, ``slurm`` and ``multinode`` markers, the local Slurm cluster and a job waiter.

- ``gpu`` tests are skipped without CUDA.
- ``slurm`` tests run against the project's local cluster (``launch/local_cluster.py``), found running or brought up
  once per session, with ``SLURM_CONF`` set in ``os.environ``; ``multinode`` tests get the two-node cluster
  (partition ``multinode``). When the cluster cannot start, these tests are skipped with the reason, except with
  ``CI=true``, where they fail: CI must run them.
- Fixtures: ``slurm_cluster`` / ``multinode_cluster`` (the cluster's ``Layout``: ``.conf``, ``.nodes()``,
  ``.environ()``), ``wait_for_job`` (``wait_for_job(job_id, timeout=120) -> {id: state}``, see
  ``launch.localcluster.cluster.wait_for_job``).
"""

from __future__ import annotations

import contextlib
import os

import pytest

_clusters: dict[int | None, tuple[object, str | None]] = {}


def _cluster(nodes: int | None):
    """The local cluster's Layout (brought up once per session and node count), or skip/fail with the reason."""
    if nodes not in _clusters:
        from launch.localcluster import cluster as local_cluster

        try:
            _clusters[nodes] = (local_cluster.up(nodes=nodes), None)
        except Exception as err:  # any failure to start is reported the same way, with its message
            _clusters[nodes] = (None, f"the local Slurm cluster is not up: {err}")
    layout, reason = _clusters[nodes]
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: Slurm tests must run)", pytrace=False)
        pytest.skip(reason)
    os.environ["SLURM_CONF"] = str(layout.conf)
    return layout


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_runtest_setup(item):
    if item.get_closest_marker("multinode"):
        _cluster(2)
    elif item.get_closest_marker("slurm"):
        _cluster(None)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local one-node (or already running two-node) Slurm cluster, with SLURM_CONF set in os.environ."""
    return _cluster(None)


@pytest.fixture(scope="session")
def multinode_cluster():
    """The local cluster with its two namespace nodes (partition ``multinode``), SLURM_CONF set in os.environ."""
    return _cluster(2)


@pytest.fixture
def wait_for_job(slurm_cluster):
    """``wait_for_job(job_id, timeout=120) -> {"12": "COMPLETED"}`` (``"12_3"`` keys for array tasks)."""
    from launch.localcluster.cluster import wait_for_job as wait

    return wait


@pytest.fixture
def full_disk(tmp_path):
    """A folder on its own small file system (tmpfs, 2 MiB) filled to the last byte: every write there fails with
    ENOSPC, while creating folders and empty files still works (what a full disk does). Needs root to mount;
    skipped otherwise."""
    import subprocess

    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip() or 'mount failed'}")
    filler = tmp_path / "full" / ".filler"
    try:
        with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 4096)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
