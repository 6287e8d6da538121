"""A three-node RabbitMQ cluster on loopback, for the whole session (../shared/design/CLUSTER.md).

Nodes `mailer-node{1,2,3}@localhost` listen on 127.0.0.1:5681-5683 (distribution 25681-25683,
no management plugin), all three started at once, then 2 and 3 join 1. Tests stop and start
nodes for real; every test leaves all three running. Without rabbitmq-server the tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _unavailable

NODES = (1, 2, 3)
CTL_TIMEOUT = 120


def node_name(n: int) -> str:
    return f"mailer-node{n}@localhost"


def amqp_port(n: int) -> int:
    return 5680 + n


def ctl(n: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", "-n", node_name(n), *args],
        check=check,
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
    )


def _parallel(call: Callable[[int], object], items: Iterable[int]) -> list[object]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(call, items))


@dataclass
class Cluster:
    base: Path

    def env(self, n: int) -> dict[str, str]:
        folder = self.base / f"node{n}"
        return {
            **os.environ,
            "RABBITMQ_NODENAME": node_name(n),
            "RABBITMQ_NODE_PORT": str(amqp_port(n)),
            "RABBITMQ_DIST_PORT": str(20000 + amqp_port(n)),
            "RABBITMQ_CONFIG_FILE": str(self.base / f"node{n}.conf"),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.pid_file(n)),
        }

    def pid_file(self, n: int) -> Path:
        return self.base / f"node{n}" / "node.pid"

    def start(self, n: int) -> None:
        """Start node n (a member already: it rejoins) and wait until it serves."""
        self.pid_file(n).unlink(missing_ok=True)
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self.env(n), check=True, timeout=CTL_TIMEOUT
        )
        # `wait` follows the pid file until the node has booted; await_startup alone gives up
        # at once while the node is not yet registered.
        ctl(n, "wait", str(self.pid_file(n)), "--timeout", "90")

    def stop(self, n: int) -> None:
        ctl(n, "stop")

    def urls(self, vhost: str, nodes: tuple[int, ...] = NODES) -> list[str]:
        return [f"amqp://guest:guest@127.0.0.1:{amqp_port(n)}/{vhost}" for n in nodes]

    def new_vhost(self) -> str:
        vhost = f"mailer-cluster-{uuid.uuid4().hex[:8]}"
        ctl(1, "add_vhost", vhost)
        ctl(1, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return vhost

    def leader(self, vhost: str, queue: str, via: int) -> int:
        """The node leading a quorum queue."""
        out = ctl(via, "list_queues", "-p", vhost, "name", "leader", "--formatter", "json")
        for row in json.loads(out.stdout):
            if row["name"] == queue:
                return int(str(row["leader"]).split("@")[0].removeprefix("mailer-node"))
        raise LookupError(queue)

    def running(self) -> set[int]:
        return {n for n in NODES if ctl(n, "status", check=False).returncode == 0}

    def ensure_all_running(self) -> None:
        _parallel(self.start, sorted(set(NODES) - self.running()))


def _prepare(base: Path) -> None:
    for n in NODES:
        folder = base / f"node{n}"
        folder.mkdir(parents=True)
        (folder / "enabled_plugins").write_text("[].\n")
        (base / f"node{n}.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp_port(n)}\n"
            "loopback_users = none\n"
            "log.file.level = warning\n"
        )
    shutil.chown(base, "rabbitmq", "rabbitmq")
    for path in base.rglob("*"):
        shutil.chown(path, "rabbitmq", "rabbitmq")


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        _unavailable("rabbitmq-server (for the three-node cluster)")
    _parallel(lambda n: ctl(n, "stop", check=False), NODES)  # a session that died before
    base = Path(tempfile.mkdtemp(prefix="mailer-cluster-"))
    _prepare(base)
    cluster = Cluster(base)
    try:
        _parallel(cluster.start, NODES)

        def join(n: int) -> None:
            ctl(n, "stop_app")
            ctl(n, "reset")
            ctl(n, "join_cluster", node_name(1))
            ctl(n, "start_app")

        for n in NODES[1:]:
            join(n)
        yield cluster
    finally:
        _parallel(lambda n: ctl(n, "stop", check=False), NODES)
        shutil.rmtree(base, ignore_errors=True)
