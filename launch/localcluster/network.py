"""Two nodes on one machine for the local Slurm cluster (``launch/local_cluster.py up --nodes 2``): a bridge, and
per node a network namespace with one end of a veth pair and an /etc/hosts entry. ``net_plan`` picks names and a
free subnet, ``net_up`` creates what is missing, ``net_down`` removes exactly what ``net_up`` created."""

from __future__ import annotations

from pathlib import Path

from launch.localcluster.processes import ClusterError, read_file, run

HOSTS_MARKER = "# memorymodels-local-cluster"
NET_LOCK_DIR = Path("/run/lock/memorymodels-local-cluster")


def _hosts_claimed() -> dict[int, str]:
    """Subnet index -> state directory, for every local cluster that has entries in /etc/hosts."""
    claimed = {}
    for line in read_file(Path("/etc/hosts")).splitlines():
        if HOSTS_MARKER in line and line.startswith("10.231."):
            claimed[int(line.split(".")[2])] = line.split(HOSTS_MARKER, 1)[1].strip()
    return claimed


def net_plan(state: Path) -> dict:
    """Names and addresses for two namespace nodes: ``node1``/``node2`` on 10.231.0.0/24 for the first cluster that
    asks, ``c<k>-node1``/``c<k>-node2`` on 10.231.<k>.0/24 for a k-th one running beside it."""
    claimed = _hosts_claimed()
    namespaces = run(["ip", "netns", "list"], check=False).stdout.split()

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
    return run(["ip", "link", "show", name], check=False).returncode == 0


def net_up(net: dict, state: Path) -> None:
    """Create what is missing of the bridge, namespaces, veth pairs and /etc/hosts entries (idempotent)."""
    bridge = net["bridge"]
    if not _link_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    if f" {net['bridge_address']}/" not in run(["ip", "-o", "addr", "show", "dev", bridge]).stdout:
        run(["ip", "addr", "add", f"{net['bridge_address']}/24", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    namespaces = run(["ip", "netns", "list"]).stdout.split()
    for node in net["nodes"]:
        ns, veth = node["netns"], node["veth"]
        if ns not in namespaces:
            run(["ip", "netns", "add", ns])
        if not _link_exists(veth):
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        if f" {node['address']}/" not in run(["ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"]).stdout:
            run(["ip", "-n", ns, "addr", "add", f"{node['address']}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "set", veth, "master", bridge, "up"])
    _hosts_set(state, [(n["address"], n["name"]) for n in net["nodes"]])


def net_down(net: dict, state: Path) -> None:
    """Remove exactly what ``net_up`` created for this state directory."""
    _hosts_set(state, [])
    namespaces = run(["ip", "netns", "list"], check=False).stdout.split()
    for node in net["nodes"]:
        if _link_exists(node["veth"]):
            run(["ip", "link", "del", node["veth"]])
        if node["netns"] in namespaces:
            run(["ip", "netns", "del", node["netns"]])
    if _link_exists(net["bridge"]):
        run(["ip", "link", "del", net["bridge"]])


def _hosts_set(state: Path, entries: list[tuple[str, str]]) -> None:
    """Make this cluster's marked lines in /etc/hosts exactly ``entries``; other lines stay as they are."""
    hosts = Path("/etc/hosts")
    mark = f"{HOSTS_MARKER} {state}"
    old = read_file(hosts)
    kept = [line for line in old.splitlines() if not line.endswith(mark)]
    new = "\n".join(kept + [f"{address}\t{name}\t{mark}" for address, name in entries]) + "\n"
    if new != old:
        # In place: /etc/hosts is often a bind mount (containers), which a rename cannot replace.
        with open(hosts, "r+") as f:
            f.write(new)
            f.truncate()
