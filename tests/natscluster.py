"""A real 3-server nats-server cluster on loopback, from the configs the product writes.

The configs come from :func:`agentmesh.broker.cluster.write_cluster` (what
``agentmesh mesh cluster-init`` writes), so the tests also prove that a cluster
started from them forms and replicates. The servers run a ``nats-server`` >= 2.10
(``sync_interval``), the one the ``cluster`` extra puts in the virtualenv.

    with NatsCluster() as cluster:
        transport = NatsTransport(cluster.urls.split(","))
        cluster.kill(0)      # kill -9 of s1
        cluster.restart(0)   # same port, same store
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from agentmesh.broker.cluster import ClusterPlan, plan_cluster, write_cluster
from tests.natsserver import NatsServerProcess, find_recent_nats_server

_META_LEADER = ("new metadata leader", "Self is new JetStream cluster metadata leader")


def free_ports(count: int) -> list[int]:
    """``count`` loopback ports nobody listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class NatsCluster:
    """``size`` servers with JetStream clustered; ``sync`` is the plan's sync setting.

    ``secured``: a secured mesh's ``nats-server.conf`` text that every server runs.
    """

    def __init__(self, size: int = 3, *, sync: str = "always", secured: str | None = None) -> None:
        self._size = size
        self._sync = sync
        self._secured = secured
        self._dir = Path(tempfile.mkdtemp(prefix="agentmesh-cluster-"))
        self.plan: ClusterPlan | None = None
        self.servers: list[NatsServerProcess] = []

    @property
    def urls(self) -> str:
        """Every server's client URL, comma-separated (the ``--nats`` value)."""
        assert self.plan is not None
        return self.plan.urls

    def url(self, index: int) -> str:
        assert self.plan is not None
        return self.plan.servers[index].url

    def index_of(self, server_name: str) -> int:
        """``s2`` -> 1."""
        assert self.plan is not None
        return [s.name for s in self.plan.servers].index(server_name)

    def start(self) -> Self:
        ports = free_ports(2 * self._size)
        self.plan = plan_cluster(
            size=self._size,
            client_ports=ports[: self._size],
            cluster_ports=ports[self._size :],
            sync=self._sync,
        )
        write_cluster(self._dir, self.plan, secured=self._secured)
        binary = find_recent_nats_server()
        for server in self.plan.servers:
            self.servers.append(
                NatsServerProcess(
                    port=server.client_port,
                    jetstream=False,
                    config_file=str(self.plan.config_path(self._dir, server)),
                    binary=binary,
                    ready_timeout=20.0,
                )
            )
        try:
            for process in self.servers:
                process.start()
            self.wait_for_meta_leader(range(self._size))
        except BaseException:
            self.close()
            raise
        return self

    def wait_for_meta_leader(self, indexes: range | list[int], timeout: float = 30.0) -> None:
        """Until every listed server logged a JetStream meta leader (a quorum formed)."""
        deadline = time.monotonic() + timeout
        pending = list(indexes)
        while pending:
            pending = [
                i
                for i in pending
                if not any(mark in self.servers[i].log_text() for mark in _META_LEADER)
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self.servers[i].log_text()[-2000:] for i in pending)
                raise RuntimeError(f"no JetStream meta leader after {timeout}s:\n{logs}")
            time.sleep(0.05)

    def kill(self, index: int) -> None:
        """``kill -9`` one server."""
        self.servers[index].kill()

    def restart(self, index: int) -> None:
        """Start a stopped server again (same port, same store) and wait until it rejoined."""
        self.servers[index].start()
        self.wait_for_meta_leader([index])

    def close(self) -> None:
        for process in self.servers:
            process.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
