"""CrewAI offline and contained: no telemetry, no tracing, no files outside a scratch dir.

CrewAI writes settings and a credentials key under ``$HOME`` and its task-output
database under ``CREWAI_STORAGE_DIR`` *when it is imported*, and reads its
telemetry switches then and at run time. So this conftest imports CrewAI once,
here, with the environment pointed at a scratch directory, and every test of
this package runs with the same environment (restored after each test). Worker
processes get it explicitly (:func:`crewai_environment`).

Fixtures:
    bus: an InMemoryBus for crews that should see each other.
    authority: a mesh authority identity (kill-switch orders).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.transport.memory import InMemoryBus
from iatp.identity import AgentIdentity

SCRATCH = Path(tempfile.mkdtemp(prefix="agentmesh-crewai-tests-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def crewai_environment(root: Path = SCRATCH) -> dict[str, str]:
    """The variables that keep CrewAI offline and its files under ``root``."""
    return {
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "xdg-data"),
        "XDG_CACHE_HOME": str(root / "xdg-cache"),
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "CREWAI_STORAGE_DIR": str(root / "storage"),
        "CREWAI_DISABLE_TELEMETRY": "true",
        "CREWAI_DISABLE_TRACKING": "true",
        "OTEL_SDK_DISABLED": "true",
        "CREWAI_TRACING_ENABLED": "false",
        "CREWAI_DISABLE_VERSION_CHECK": "true",
        "CREWAI_TESTING": "true",
    }


def _import_crewai_contained() -> None:
    saved = {key: os.environ.get(key) for key in crewai_environment()}
    os.environ.update(crewai_environment())
    try:
        import crewai
        import crewai.hooks  # noqa: F401
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_import_crewai_contained()


@pytest.fixture(autouse=True)
def _crewai_contained(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Offline environment for the test; afterwards, no CrewAI hook may be left behind."""
    from crewai.hooks import InterceptionPoint, get_hooks

    for key, value in crewai_environment().items():
        monkeypatch.setenv(key, value)
    before = {p: len(get_hooks(p)) for p in InterceptionPoint}
    yield
    leaked = {p.value: len(get_hooks(p)) - n for p, n in before.items() if len(get_hooks(p)) != n}
    assert not leaked, f"CrewAI hooks left registered: {leaked}"


@pytest.fixture
def bus() -> InMemoryBus:
    return InMemoryBus()


@pytest.fixture
def authority() -> AgentIdentity:
    return AgentIdentity.generate()


def pytest_configure(config: pytest.Config) -> None:
    # CrewAI 1.15 reads its own deprecated agent fields on every kickoff.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:crewai.*")
