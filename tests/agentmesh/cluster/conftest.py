"""A 3-server cluster shared by the cluster tests of one module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.natscluster import NatsCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[NatsCluster]:
    with NatsCluster() as started:
        yield started


@pytest.fixture(autouse=True)
def every_server_up(request: pytest.FixtureRequest) -> None:
    """A test that killed a server leaves it for the next one to restart."""
    if "cluster" not in request.fixturenames:
        return
    cluster: NatsCluster = request.getfixturevalue("cluster")
    for index, server in enumerate(cluster.servers):
        if not server.running:
            cluster.restart(index)
