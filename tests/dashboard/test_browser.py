"""The page in a real headless Chromium, watching a mesh on a real nats-server.

Playwright drives the system Chromium (``/usr/bin/chromium``, ``make chromium``);
no browser is downloaded. The page must load, list the running agents, follow a
quarantine live over server-sent events (no reload), and log no console errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.dashboard.app import create_app
from agentmesh.dashboard.operations import OperationGate
from agentmesh.dashboard.server import DashboardServer
from agentmesh.directory.revocations import RevocationList
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.transport.nats import NatsTransport
from registry.revocation import RevocationAuthorities
from tests.dashboard.conftest import SmallMesh, monitor_of
from tests.natsserver import NatsServerProcess

playwright = pytest.importorskip("playwright.async_api")

pytestmark = [pytest.mark.nats, pytest.mark.timeout(60)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def nats_mesh(nats_server: NatsServerProcess, uid: str) -> AsyncIterator[SmallMesh]:
    mesh = SmallMesh(lambda name: NatsTransport(nats_server.url, name=name), uid)
    await mesh.start()
    try:
        yield mesh
    finally:
        await mesh.aclose()


async def quarantine_from_the_cli_side(url: str, mesh: SmallMesh, did: str) -> None:
    """What ``agentmesh quarantine`` does: the authority signs, broadcasts and stores."""
    transport = NatsTransport(url, name="authority")
    await transport.connect(timeout=5.0)
    revocations = RevocationList(
        transport,
        mesh=mesh.mesh,
        authorities=RevocationAuthorities(mesh=frozenset({mesh.authority.did})),
    )
    try:
        await revocations.start()
        switch = KillSwitch(transport, revocations, mesh=mesh.mesh)
        await switch.quarantine(mesh.authority, did, "misbehaving in the browser test")
        await transport.flush()
    finally:
        await revocations.aclose()
        await transport.aclose()


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail("the system Chromium is missing: make chromium", pytrace=False)
    return CHROMIUM


async def test_the_page_shows_the_mesh_and_follows_a_quarantine_live(
    nats_server: NatsServerProcess, nats_mesh: SmallMesh, chromium: Path
) -> None:
    await nats_mesh.ask("carol", "bob")  # refused by bob's rule: a refusal to show
    stop = asyncio.Event()
    monitor = monitor_of(nats_mesh, NatsTransport(nats_server.url, name="dashboard"))
    errors: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(monitor)
        gate = OperationGate(monitor.apply, monitor.authorities, known=monitor.knows)
        app = create_app(monitor, operations=gate, stop=stop)
        server = await stack.enter_async_context(DashboardServer(app, port=0, stop=stop))
        driver = await stack.enter_async_context(playwright.async_playwright())
        browser = await driver.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        stack.push_async_callback(browser.close)
        page = await browser.new_page()
        page.on(
            "console",
            lambda message: errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: errors.append(str(error)))

        await page.goto(server.url)
        assert await page.title() == "agentmesh dashboard"
        for name in ("alice", "bob", "carol"):
            row = page.locator(f'#agents tr[data-did="{nats_mesh.did(name)}"]')
            await row.locator("td.name", has_text=name).wait_for(timeout=10_000)
            await row.locator("td.status", has_text="ok").wait_for(timeout=10_000)
        await page.locator("#connection", has_text="live").wait_for(timeout=10_000)
        refusal = page.locator('#refusals tr[data-code="policy_denied"]').first
        await refusal.locator("td.rule", has_text="no-carol").wait_for(timeout=10_000)
        await page.evaluate("window.loadedOnce = true")

        carol = nats_mesh.did("carol")
        await quarantine_from_the_cli_side(nats_server.url, nats_mesh, carol)
        await page.locator(f'#agents tr[data-did="{carol}"][data-status="quarantined"]').wait_for(
            timeout=10_000
        )
        await page.locator(f'#quarantines tr[data-did="{carol}"]').wait_for(timeout=10_000)
        assert await page.evaluate("window.loadedOnce === true")  # updated, not reloaded
        assert await page.locator("#access").inner_text() == "signed actions allowed"
        await page.close()
    assert errors == []
