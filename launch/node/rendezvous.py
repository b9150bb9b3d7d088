"""Where the nodes of one attempt meet: the head node's address and a free port, decided on the head node.

    cat RUN_DIR/launch/rendezvous/JOB-RESTART.json      # {"addr": "10.231.0.11", "port": 23456, "host": "node1"}

The head node (node 0) resolves its own address (its host name as it resolves there; when that is a loopback address,
the interface that reaches another node of the job) and binds a port to check it is free, starting from one derived
from the job id and restart count in 20000-31999, below Linux's ephemeral range (32768-60999 by default) so an
outgoing connection cannot be holding it. It writes both to a file in the run directory (shared by all nodes); the
other nodes wait for that file. Hostnames can resolve to another interface elsewhere (accelerate #1489).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from pathlib import Path

PORT_LOW, PORT_SPAN = 20000, 12000
WAIT_S = 180
"""How long the other nodes wait for the head's file (node 0's task may start later than theirs)."""


def derived_port(job_id: str, restart: int) -> int:
    """The first port tried: spread by job id, a fresh one for each restart (the old one may linger in TIME_WAIT)."""
    raw = "".join(ch for ch in str(job_id) if ch.isdigit()) or str(os.getpid())
    return PORT_LOW + (int(raw) * 7 + restart * 131) % PORT_SPAN


def free_port(first: int, tries: int = 50) -> int:
    """``first`` or the next port in range that can be bound here now."""
    for k in range(tries):
        port = PORT_LOW + (first - PORT_LOW + k) % PORT_SPAN
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("", port))
                return port
            except OSError:
                continue
    return first


def own_address(peers: list[str]) -> str:
    """This host's address as the other nodes should reach it."""
    name = socket.gethostname()
    try:
        addr = socket.gethostbyname(name)
    except OSError:
        addr = None
    if addr and not ipaddress.ip_address(addr).is_loopback:
        return addr
    for peer in peers:  # the interface the route to a peer leaves by (a UDP connect sends nothing)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((peer, 9))
                return s.getsockname()[0]
        except OSError:
            continue
    return name


def _file(folder: Path, job_id: str, restart: int) -> Path:
    return Path(folder) / f"{job_id}-{restart}.json"


def publish(folder: Path, job_id: str, restart: int, peers: list[str]) -> dict:
    """On the head node: choose the address and port and write them for the others."""
    info = {"addr": own_address(peers), "port": free_port(derived_port(job_id, restart)), "host": socket.gethostname()}
    path = _file(folder, job_id, restart)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
    return info


def wait_for_head(folder: Path, job_id: str, restart: int, timeout: float = WAIT_S) -> dict | None:
    """On the other nodes: the head's address and port, or None when it did not write them in time."""
    path = _file(folder, job_id, restart)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(0.5)
    return None
