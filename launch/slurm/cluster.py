"""What the live cluster offers, for the preflight before anything is queued: partitions, nodes, MaxArraySize.

    python -m launch.slurm.cluster        # what the preflight sees (SLURM_CONF, or Slurm's default configuration)

Three ``scontrol`` calls (``show partition -o``, ``show node -o``, ``show config``), all ``Key=Value`` text that has
stayed stable across Slurm versions; parsing is separate from querying (:func:`parse_partitions`,
:func:`parse_nodes`, :func:`parse_config`) so tests replay output captured from the real local cluster. The
preflight (``launch.submission.preflight``) compares a plan with this picture.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

from launch.slurm.client import SlurmError, explain, run_slurm, slurm_environ
from launch.slurm.output import parse_duration
from launch.slurm.submitit_adapter import parse_node_list

def _records(text: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output (one record per line of ``Key=Value`` pairs) -> dicts."""
    records = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        record = {}
        for match in re.finditer(r"(\w[\w/:.]*)=(.*?)(?=\s+\w[\w/:.]*=|$)", line.strip()):
            record[match.group(1)] = match.group(2).strip()
        records.append(record)
    return records


def parse_time(value: str | None) -> int | None:
    """Slurm time (``UNLIMITED``, ``30``, ``1-00:00:00``, ``02:00:00``) -> minutes; None for unlimited/unknown."""
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    seconds = parse_duration(value)
    return None if seconds is None else int(-(-seconds // 60))


@dataclass
class Partition:
    name: str
    nodes: list[str]
    max_time_min: int | None
    default: bool
    state: str


@dataclass
class Node:
    name: str
    cpus: int
    memory_mb: int
    gpus: int
    gpu_type: str | None
    features: list[str]
    state: str
    partitions: list[str]


@dataclass
class ClusterInfo:
    partitions: dict[str, Partition] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    max_array_size: int = 1001

    @classmethod
    def query(cls, env: dict[str, str] | None = None) -> "ClusterInfo":
        """Ask the live cluster (three scontrol calls)."""
        return cls(partitions=parse_partitions(run_slurm(["scontrol", "show", "partition", "-o"], env)),
                   nodes=parse_nodes(run_slurm(["scontrol", "show", "node", "-o"], env)),
                   max_array_size=parse_config(run_slurm(["scontrol", "show", "config"], env)).get("MaxArraySize", 1001))


def expand_hostlist(text: str) -> list[str]:
    """``node[1-3,5],gpu7`` -> ``['node1', 'node2', 'node3', 'node5', 'gpu7']`` (submitit's parser)."""
    if not text or text in ("(null)", "None"):
        return []
    return parse_node_list(text)


def parse_partitions(text: str) -> dict[str, Partition]:
    """``scontrol show partition -o`` -> name -> Partition."""
    result = {}
    for r in _records(text):
        name = r.get("PartitionName")
        if name:
            result[name] = Partition(name=name, nodes=expand_hostlist(r.get("Nodes", "")),
                                     max_time_min=parse_time(r.get("MaxTime")), default=r.get("Default") == "YES",
                                     state=r.get("State", "UP"))
    return result


def _gpus(gres: str) -> tuple[int, str | None]:
    """``gpu:v100:8(S:0-1)`` -> (8, 'V100'); ``(null)`` -> (0, None)."""
    total, kind = 0, None
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        count = parts[-1]
        if count.isdigit():
            total += int(count)
            if len(parts) == 3:
                kind = parts[1].upper()
        elif len(parts) == 2:  # gpu:v100 without a count means 1
            total, kind = total + 1, parts[1].upper()
    return total, kind


def parse_nodes(text: str) -> dict[str, Node]:
    """``scontrol show node -o`` -> name -> Node."""
    result = {}
    for r in _records(text):
        name = r.get("NodeName")
        if not name:
            continue
        gpus, gpu_type = _gpus(r.get("Gres", ""))

        def number(key: str) -> int:
            value = r.get(key, "0")
            return int(value) if value.isdigit() else 0

        features = [f for f in r.get("AvailableFeatures", "").split(",") if f and f != "(null)"]
        result[name] = Node(name=name, cpus=number("CPUTot"), memory_mb=number("RealMemory"), gpus=gpus,
                            gpu_type=gpu_type, features=features, state=r.get("State", ""),
                            partitions=[p for p in r.get("Partitions", "").split(",") if p])
    return result


def parse_config(text: str) -> dict[str, Any]:
    """``scontrol show config`` -> the keys the preflight needs (``MaxArraySize`` as an int)."""
    config: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    if str(config.get("MaxArraySize", "")).isdigit():
        config["MaxArraySize"] = int(config["MaxArraySize"])
    return config


def mem_mb(text: str) -> int:
    """``'480G'`` / ``'1536M'`` (also ``GB``/``MB``, ``T``) -> MB."""
    number = float(re.match(r"[\d.]+", text).group())
    unit = text.upper().rstrip("B")[-1:]
    return int(number * {"T": 1024 * 1024, "G": 1024}.get(unit, 1))


def main() -> int:
    env = slurm_environ()
    try:
        info = ClusterInfo.query(env)
    except SlurmError as exc:
        print(f"cluster_info: {explain(exc)}", file=sys.stderr)
        return 1
    print(f"SLURM_CONF={env.get('SLURM_CONF', '(default)')}  MaxArraySize={info.max_array_size}")
    for p in info.partitions.values():
        print(f"partition {p.name}{' (default)' if p.default else ''}: {p.state}, max time "
              f"{p.max_time_min if p.max_time_min is not None else 'unlimited'} min, nodes {', '.join(p.nodes)}")
    for n in info.nodes.values():
        print(f"node {n.name}: {n.cpus} CPUs, {n.memory_mb} MB, {n.gpus} GPU(s) {n.gpu_type or ''} {n.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
