"""The error boundary's translation: any exception -> one line, a fitting exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.cli.boundary import debug_requested
from agentmesh.cli.failures import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandFailed,
    explain,
    lacks_jetstream,
    reading,
)
from agentmesh.errors import AuthenticationFailed, NotConnected, StreamError
from agentmesh.policy.errors import PolicyLoadError
from iatp.errors import KeystoreError
from registry.errors import RegistryError


class ServiceUnavailableError(Exception):
    """Stands for nats-py's class of that name: the transport keeps only the cause."""


def _no_jetstream() -> StreamError:
    try:
        try:
            raise ServiceUnavailableError("503")
        except ServiceUnavailableError as cause:
            raise StreamError("nats: stream info failed") from cause
    except StreamError as error:
        return error


@pytest.mark.parametrize(
    ("error", "code", "fragment"),
    [
        (KeystoreError("a.id", "wrong passphrase or tampered file"), EXIT_USAGE, "passphrase"),
        (PolicyLoadError("bad rule", file="p.yaml"), EXIT_USAGE, "p.yaml: bad rule"),
        (NotConnected("could not connect to ['nats://x:1']"), EXIT_FAILED, "cannot reach"),
        (AuthenticationFailed("refused"), EXIT_FAILED, "--jwt"),
        (_no_jetstream(), EXIT_FAILED, "no JetStream"),
        (RegistryError("card expired"), EXIT_FAILED, "card expired"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), EXIT_USAGE, "UTF-8"),
        (FileNotFoundError(2, "No such file or directory", "x.yaml"), EXIT_USAGE, "x.yaml"),
        (ConnectionResetError(104, "reset"), EXIT_FAILED, "network error"),
        (TimeoutError(), EXIT_FAILED, "timed out"),
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
        (RuntimeError("bug"), EXIT_FAILED, "--debug"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_explain_gives_each_failure_its_words_and_exit_code(
    error: BaseException, code: int, fragment: str
) -> None:
    failure = explain(error)
    assert failure.exit_code == code
    assert fragment in failure.line()
    assert failure.line().startswith("agentmesh: error")


def test_no_jetstream_is_told_apart_from_other_stream_errors() -> None:
    assert lacks_jetstream(_no_jetstream())
    assert not lacks_jetstream(StreamError("stream not found"))
    assert "JetStream" not in explain(StreamError("stream not found")).line()


def test_typed_errors_keep_their_code_in_the_line() -> None:
    assert explain(RegistryError("nope")).line().startswith("agentmesh: error (registry_error): ")


@given(what=st.text(), todo=st.text())
def test_a_failure_is_always_one_line(what: str, todo: str) -> None:
    line = CommandFailed(what, todo).line()
    assert len(line.splitlines()) == 1
    assert line.startswith("agentmesh: error:")
    assert " ".join(what.split()) in line


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "does not exist"), (b"\xff\xfe", "is not UTF-8 text")],
)
def test_reading_names_the_file_it_could_not_read(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "input.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CommandFailed) as caught, reading(path, "--policy"):
        path.read_text(encoding="utf-8")
    assert caught.value.exit_code == EXIT_USAGE
    assert f"--policy {path} {fragment}" in caught.value.line()


@pytest.mark.parametrize(
    ("args", "environ", "wanted"),
    [
        (["--debug", "node", "run"], {}, True),
        (["node", "run", "--reason", "--debug"], {}, False),  # a value, not the root's flag
        (["node", "run"], {"AGENTMESH_DEBUG": "1"}, True),
        (["node", "run"], {"AGENTMESH_DEBUG": "0"}, False),
        ([], {}, False),
    ],
)
def test_debug_is_the_root_flag_or_the_environment(
    args: list[str], environ: dict[str, str], wanted: bool
) -> None:
    assert debug_requested(args, environ) is wanted
