"""A throwaway JetStream ``nats-server`` the simulation owns (so it can restart it).

``--nats local`` runs a scenario on one of these: a loopback port, a temporary
store directory, and :meth:`LocalNatsServer.restart` for the ``server_restart``
fault (``kill -9`` of the server, a pause, the same port and store again:
JetStream state survives, clients reconnect).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from simulations.spec import ScenarioError


def nats_server_binary() -> str | None:
    """The ``nats-server`` on PATH (or Debian's /usr/sbin one), None when not installed."""
    found = shutil.which("nats-server")
    if found is None and Path("/usr/sbin/nats-server").exists():
        return "/usr/sbin/nats-server"
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LocalNatsServer:
    """One loopback ``nats-server -js`` with its own store (see the module docstring)."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or nats_server_binary()
        if found is None:
            raise ScenarioError(
                "nats-server is not installed: apt-get install -y nats-server "
                "(or pass --nats URL of a running server)"
            )
        self.binary = found
        self.port = _free_port()
        self.store = tempfile.mkdtemp(prefix="agentmesh-sim-js-")
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 10.0) -> str:
        self.process = subprocess.Popen(  # noqa: S603 - the nats-server found on PATH
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self.url
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise ScenarioError(f"nats-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """``kill -9``: no flush, no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self, *, down_s: float = 1.0) -> None:
        """Kill the server, stay down ``down_s``, start it on the same port and store."""
        self.kill()
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None
        shutil.rmtree(self.store, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def local_nats_server() -> Iterator[str | None]:
    """A throwaway server's URL for the block (None: nats-server is not installed)."""
    if nats_server_binary() is None:
        yield None
        return
    with LocalNatsServer() as server:
        yield server.url


__all__ = ["LocalNatsServer", "local_nats_server", "nats_server_binary"]
