"""Federation across organizations (``agentmesh.federation``), over real linked nats-servers.

The cross-organization cases start a :class:`~agentmesh.federation.lab.FederationLab`
in a temporary directory: two organizations, ``acme`` and ``globex``, each with
its secured mesh and its own ``nats-server`` (operator mode, JWT auth,
JetStream), an agreement signed by both authorities (globex exports its
responder agents for ``bench.*`` with capability ``bench``, acme exports a raw
listener; both sides' ceilings at rate 1e6/s, burst 1,000,000, so no ceiling
bites), compiled into a leaf-node link (acme listens, globex connects), and
membership credentials issued with didkit. Each organization's steward
(:func:`~agentmesh.federation.service.run_steward`) runs in a peer process
(``python -m benchmarks.mesh_peer fed_steward``), so status lists and exported
cards flow between the organizations as they would in production. Everything
started is stopped when the case ends, whatever happens.

* **signed request/reply across the link** (latency, goal p50 ratio <= 1.3): this
  process's acme :class:`MeshNode` (``NodeFederation`` installed, its membership
  credential attached by the route) does ``node.request(peer, "bench.echo", 256 B)``
  to a federated MeshNode of globex in a peer process (``mesh_peer fed_responder``
  on globex's server): acme server, leaf link, globex server and back, the
  membership verified by globex's guard (cached after the first). Floor: the same
  request from the same node to a federated MeshNode of acme in another peer
  process on acme's own server (same code; no route, no credential, no link).
  Both responders live for the whole case, so rounds interleave.
* **raw request/reply across the link** (latency, no goal): the transport floor
  of the above: a raw nats-py request from this process (as acme's client agent)
  to ``acme.fed.globex.{key}.inbox``, answered by a raw nats-py responder on the
  exported agent's inbox in globex's responder process, against the same raw
  request to a raw responder in acme's responder process on acme's server.
  Payloads mirror the signed cross-organization request (with its credential
  headers) and reply frames' sizes on both sides.
* **membership VC verification** (throughput, goal ratio >= 1): the hot path's
  ``verify_membership(token, trusted=..., agent=...)`` (PyNaCl over the JWS bytes,
  uncached) against didkit's ``verify_jwt_credential(token)`` on the same
  credential. No server.
* **membership VC verification, cached view** (throughput, no goal): what a node
  does per message, ``FederationView.verify_membership(token, agent)`` (cache hit
  plus agreement, expiry and status-list checks), view over an in-memory bucket
  holding the agreement and the issuer's status list; the same didkit floor.
* **membership revocation to refusal across the link** (latency, goal: absolute
  p99 <= 1 s): per operation, globex's authority (this process) revokes one
  member (``revoke_member``: a new signed status list) and stores it in globex's
  federation bucket (``publish_federation``); globex's steward ships it through
  the link, acme's steward stores it in acme's bucket, and this process's acme
  node's view takes it: the latency runs from the revoke call until that view's
  ``verify_membership`` of the member's (previously accepted, cached) credential
  raises ``MembershipRevoked`` (checked in the view's change listener). Members
  are fresh each operation (issued and accepted by acme's view before the round,
  not timed), so globex's status list and its directory of issued credentials
  grow by one per operation (to ~600 by the last round, ~40 with ``--quick``); the
  steward reads every issued credential on each shipment, so later rounds are
  slower than the first (the min / max columns). Floor: "tell the other organization something": a
  raw 8-byte core-NATS publish from this process as a globex agent to
  ``globex.fed.acme.{key}.inbox``, received by a raw subscriber on an exported
  acme agent's inbox in a peer process (``mesh_peer broker_agents``), through the
  same link, stamped on receipt with ``time.monotonic()`` (shared by the processes
  of one Linux host).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.didkit_bridge import verify_jwt_credential
from agentmesh.federation.agreement import Ceilings, Export, FederationAgreement, Party
from agentmesh.federation.errors import MembershipRevoked
from agentmesh.federation.guard import credential_headers
from agentmesh.federation.lab import FederationLab, LabOrg
from agentmesh.federation.membership import issue_membership, verify_membership
from agentmesh.federation.operations import publish_federation, revoke_member
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.federation.runtime import NodeFederation, route_base
from agentmesh.federation.status import issue_status_list
from agentmesh.federation.store import agreement_key, federation_bucket, status_key
from agentmesh.federation.view import FederationView
from agentmesh.node.config import NodeConfig
from agentmesh.node.node import MeshNode
from agentmesh.transport.memory import InMemoryTransport
from agentmesh.transport.nats import NatsTransport
from benchmarks.bench_mesh import BODY_SIZE, REQUEST_TIMEOUT, PeerProcess, _raw_request
from benchmarks.harness import (
    Benchmark,
    Pair,
    RunConfig,
    async_stack,
    at_least,
    at_most,
    event_loop,
    within,
)
from benchmarks.mesh_peer import ECHO_TYPE, raw_connect_options
from iatp.clock import SystemClock
from iatp.envelope import new_envelope, seal_envelope
from iatp.identity import AgentIdentity

BENCHMARK = Benchmark(
    name="federation",
    title="Federation: cross-organization traffic through a leaf link vs same-org, "
    "membership credentials",
    description=(
        "The cross-organization cases start a `FederationLab` in a temporary directory: "
        "two organizations (`acme`, `globex`), each with its own secured `nats-server` "
        "(JWT auth, JetStream), a signed agreement compiled into a leaf-node link (acme "
        "listens, globex connects; ceilings 1e6/s, burst 1,000,000), membership "
        "credentials issued with didkit, and each organization's steward "
        "(`run_steward`) in a peer process, so status lists and exported cards flow as "
        "in production. Request/reply: this process's acme `MeshNode` (with "
        "`NodeFederation`, its credential attached by the route) asks a federated "
        "globex node in a peer process through the link; the floor is the same node "
        "asking a federated acme node in another peer process on acme's own server, "
        "256 B body, both alive for the whole case. The raw case is the transport "
        "floor of the same path (raw nats-py, payloads of the signed frames' sizes). "
        "Verification: the hot path's PyNaCl `verify_membership` (uncached) and a node's "
        "cached `FederationView.verify_membership` against didkit's "
        "`verify_jwt_credential` on the same credential. Revocation: from globex's "
        "`revoke_member` + `publish_federation` (this process) until this process's acme "
        "view refuses the member's cached credential (`MembershipRevoked`), shipped by "
        "both stewards through the link; fresh members each operation, so globex's status "
        "list and issued credentials grow by one per operation (to ~600; the steward reads "
        "them all on each shipment: later rounds are slower); the floor is a raw 8-byte "
        "publish from globex through the link to a raw subscriber on acme (another "
        "process), for scale: the goal is absolute (p99 <= 1 s)."
    ),
)

ACME, GLOBEX = "acme", "globex"
READY_TIMEOUT = 60.0  # the stewards have shipped what a case needs by then, or it fails
WAIT_TIMEOUT = 10.0  # a revocation not refused by then fails the case
RESYNC = 10.0  # stewards' re-shipment period (the default); changes ship at once anyway
NUDGE_EVERY = 0.25  # while waiting for readiness: re-publish both organizations this often


# --------------------------------------------------------------------------- set-up


def _generous() -> Ceilings:
    return Ceilings(rate_per_second=1e6, burst=1_000_000)


@dataclass
class World:
    """A started two-organization lab and the identities the case needs."""

    directory: Path
    lab: FederationLab
    acme: LabOrg
    globex: LabOrg
    client: AgentIdentity  # acme's agent in this process
    tokens: dict[str, str] = field(default_factory=dict)  # DID -> membership credential
    peers: dict[str, PeerProcess] = field(default_factory=dict)

    def write(self, name: str, text: str) -> str:
        path = self.directory / name
        path.write_text(text + "\n", encoding="utf-8")
        return str(path)

    def jwt_file(self, org: LabOrg, identity: AgentIdentity, name: str) -> str:
        """A file holding a user JWT of ``org``'s mesh for ``identity`` (an agent)."""
        return self.write(f"{name}.jwt", org.user_jwt(identity.did))

    def agent_args(self, org: LabOrg, identity: AgentIdentity, name: str) -> tuple[str, ...]:
        """``--seed HEX --jwt FILE`` for a peer process running as ``org``'s agent."""
        return ("--seed", identity.seed().hex(), "--jwt", self.jwt_file(org, identity, name))


def _world(
    stack: contextlib.ExitStack,
    loop: asyncio.AbstractEventLoop,
    *,
    globex_exports: list[AgentIdentity],
    acme_exports: list[AgentIdentity],
    members: dict[str, list[AgentIdentity]],
) -> World:
    """Two organizations, an agreement, the link and memberships; servers started.

    ``members`` get a membership of their organization, and so does ``World.client``
    (acme's agent in this process).
    """
    directory = Path(tempfile.mkdtemp(prefix="agentmesh-bench-federation-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)  # last: after the servers
    lab = FederationLab(directory / "lab")
    stack.callback(lab.stop)  # registered first: stopped even if start() fails half-way
    acme, globex = lab.add_org(ACME), lab.add_org(GLOBEX)
    world = World(directory, lab, acme, globex, AgentIdentity.generate())

    def export(identity: AgentIdentity) -> Export:
        return Export(agent=identity.did, operations=("bench.*",), capabilities=("bench",))

    agreement = lab.agree(
        ACME,
        GLOBEX,
        exports={
            GLOBEX: [export(i) for i in globex_exports],
            ACME: [export(i) for i in acme_exports],
        },
        ceilings={ACME: _generous(), GLOBEX: _generous()},
    )
    lab.link(agreement, listener=ACME, connector=GLOBEX)

    async def start() -> None:
        for name, identities in (*members.items(), (ACME, [world.client])):
            org = lab.orgs[name]
            for identity in identities:
                world.tokens[identity.did] = await org.issue_member(
                    identity.did, capabilities=("bench",)
                )
        await lab.start()

    loop.run_until_complete(start())
    return world


def _start_peers(
    stack: contextlib.ExitStack, world: World, specs: dict[str, tuple[str, LabOrg, tuple[str, ...]]]
) -> None:
    """Start ``name: (role, org, extra args)`` peers in parallel; each closed by ``stack``."""
    for name, (role, org, extra) in specs.items():
        # PeerProcess passes the benchmarks' --mesh first; a later --mesh wins (argparse).
        peer = PeerProcess(role, org.url, "--mesh", org.name, *extra)
        stack.callback(peer.close)
        world.peers[name] = peer
    for peer in world.peers.values():
        peer.wait_ready()


def _steward_specs(world: World) -> dict[str, tuple[str, LabOrg, tuple[str, ...]]]:
    return {
        f"{org.name}-steward": (
            "fed_steward",
            org,
            (
                "--mesh-dir",
                str(org.directory),
                "--seed",
                org.authority.seed().hex(),
                "--resync",
                str(RESYNC),
            ),
        )
        for org in (world.acme, world.globex)
    }


async def _connected(url: str, credentials: BrokerCredentials, name: str) -> NatsTransport:
    transport = NatsTransport(url, name=name, config=credentials.nats_config())
    await transport.connect(timeout=10.0)
    return transport


async def _client_node(
    astack: contextlib.AsyncExitStack, world: World
) -> tuple[MeshNode, NodeFederation]:
    """This process's acme node, federated, with its membership credential on its routes."""
    client, acme = world.client, world.acme
    transport = await _connected(acme.url, acme.credentials(client), "bench-fed-client")
    astack.push_async_callback(transport.aclose)
    federation = await astack.enter_async_context(
        NodeFederation(
            transport,
            client,
            mesh=ACME,
            organization=acme.did,
            membership=world.tokens[client.did],
        )
    )
    node = MeshNode(client, transport, config=NodeConfig(mesh=ACME))
    federation.install(node)
    await node.start()
    astack.push_async_callback(node.aclose)
    return node, federation


async def _until(
    world: World,
    ready: Callable[[], Awaitable[bool]],
    what: str,
    diagnose: Callable[[], str] = lambda: "",
) -> None:
    """Wait for ``ready()``, nudging both stewards (re-publishing is a change) meanwhile.

    A steward ships at once on every change of its view and every ``RESYNC``
    seconds; what was registered after its first shipment (a card), or refused
    because a partner's status list had not arrived yet, would otherwise wait for
    the next resync. (A steward whose partner's steward is not subscribed yet
    waits its feed request's whole 2 s timeout: most of a case's readiness wait.)
    """
    deadline = monotonic() + READY_TIMEOUT
    nudged = monotonic()
    while not await ready():
        if monotonic() > deadline:
            raise RuntimeError(
                f"federation not ready after {READY_TIMEOUT:g}s: {what}\n{diagnose()}"
            )
        if monotonic() - nudged > NUDGE_EVERY:
            for name in (ACME, GLOBEX):
                await world.lab.publish(name)
            nudged = monotonic()
        await asyncio.sleep(0.05)


def _diagnose(world: World) -> Callable[[], str]:
    def diagnose() -> str:
        lines = []
        for name, peer in world.peers.items():
            if peer.role == "broker_agents":
                continue
            command = "view" if peer.role == "fed_responder" else "stats"
            try:
                lines.append(f"{name}: {peer.call(command, timeout=5)}")
            except RuntimeError as exc:
                lines.append(f"{name}: {exc}")
        return "\n".join(lines)

    return diagnose


# --------------------------------------------------------------------------- request/reply


@dataclass
class Responders:
    world: World
    astack: contextlib.AsyncExitStack  # closed on the case's loop, before the servers stop
    node: MeshNode
    federation: NodeFederation
    globex: dict[str, Any]  # the globex responder peer's ready line
    acme: dict[str, Any]


def _responders(stack: contextlib.ExitStack, loop: asyncio.AbstractEventLoop) -> Responders:
    """The lab, both stewards, a federated responder per org (with a raw one), our node."""
    globex_node, globex_raw = AgentIdentity.generate(), AgentIdentity.generate()
    acme_node, acme_raw = AgentIdentity.generate(), AgentIdentity.generate()
    world = _world(
        stack,
        loop,
        globex_exports=[globex_node, globex_raw],
        acme_exports=[],
        members={GLOBEX: [globex_node], ACME: [acme_node]},
    )

    def responder(org: LabOrg, node: AgentIdentity, raw: AgentIdentity) -> tuple[str, ...]:
        membership = world.write(f"{org.name}-responder.vc", world.tokens[node.did])
        return (
            *world.agent_args(org, node, f"{org.name}-responder"),
            "--organization",
            org.did,
            "--membership",
            membership,
            "--raw-seed",
            raw.seed().hex(),
            "--raw-jwt",
            world.jwt_file(org, raw, f"{org.name}-raw"),
        )

    _start_peers(
        stack,
        world,
        {
            "globex-responder": (
                "fed_responder",
                world.globex,
                responder(world.globex, globex_node, globex_raw),
            ),
            "acme-responder": (
                "fed_responder",
                world.acme,
                responder(world.acme, acme_node, acme_raw),
            ),
            **_steward_specs(world),
        },
    )
    astack = async_stack(stack, loop)  # closed before the servers stop
    node, federation = loop.run_until_complete(_client_node(astack, world))
    globex_info = world.peers["globex-responder"].info
    acme_info = world.peers["acme-responder"].info
    body = b"ready?"

    async def ready() -> bool:
        if federation.view.partner_agent(globex_info["did"]) is None:
            return False  # globex's card not shipped to acme yet: the departure check is partial
        try:
            for did in (globex_info["did"], acme_info["did"]):
                await node.request(did, ECHO_TYPE, body, timeout=2.0)
        except Exception:  # refused until acme's status list reached globex, and so on
            return False
        return True

    loop.run_until_complete(
        _until(world, ready, "request/reply to both responders", _diagnose(world))
    )
    return Responders(world, astack, node, federation, globex_info, acme_info)


async def _requests(node: MeshNode, peer: str, body: bytes, n: int) -> list[float]:
    latencies = []
    for _ in range(n):
        start = perf_counter()
        reply = await node.request(peer, ECHO_TYPE, body, timeout=REQUEST_TIMEOUT)
        latencies.append(perf_counter() - start)
    if reply.body != body:
        raise RuntimeError("the echo reply does not carry the request body")
    return latencies


@BENCHMARK.latency(
    "signed request/reply across the link",
    subject="acme's `node.request(peer, 'bench.echo', 256 B)` to a federated globex MeshNode "
    "in a peer process: acme server, leaf link, globex server; membership credential in "
    "the signed headers, checked by globex's guard",
    floor="the same request from the same node to a federated acme MeshNode in another peer "
    "process on acme's own server (no route, no link)",
    goal=at_most(1.3, metric="p50"),
    ops=1500,
    quick_ops=200,
)
def request_reply_link(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        setup = _responders(stack, loop)
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)
        node, globex_did, acme_did = setup.node, setup.globex["did"], setup.acme["did"]
        yield Pair(
            lambda n: loop.run_until_complete(_requests(node, globex_did, body, n)),
            lambda n: loop.run_until_complete(_requests(node, acme_did, body, n)),
        )


def _linked_frame_sizes(body: bytes, token: str) -> tuple[int, int]:
    """Sizes of a signed cross-org ``bench.echo`` request (with its credential) and reply."""
    now = SystemClock().now_ms()
    me, peer = AgentIdentity.generate(), AgentIdentity.generate()
    request = seal_envelope(
        new_envelope(
            sender=me.did,
            type=ECHO_TYPE,
            recipient=peer.did,
            body=body,
            now_ms=now,
            headers=credential_headers(token),
        ),
        me,
    )
    reply = seal_envelope(
        new_envelope(
            sender=peer.did,
            type=ECHO_TYPE + ".reply",
            recipient=me.did,
            body=body,
            now_ms=now,
            correlation_id=bytes(16),
        ),
        peer,
    )
    return len(request), len(reply)


@BENCHMARK.latency(
    "raw request/reply across the link",
    subject="raw nats-py request from this process (acme's client agent) to "
    "`acme.fed.globex.{key}.inbox`, answered by a raw nats-py responder on an exported "
    "globex agent's inbox in a peer process",
    floor="the same raw request to a raw responder on an acme agent's inbox in a peer "
    "process on acme's own server; both with the signed cross-org frames' sizes",
    ops=1500,
    quick_ops=200,
)
def raw_request_reply_link(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        setup = _responders(stack, loop)
        world = setup.world
        body = random.Random(BODY_SIZE).randbytes(BODY_SIZE)
        request_size, reply_size = _linked_frame_sizes(body, world.tokens[world.client.did])
        raw = _raw_request(reply_size, request_size)
        linked = f"{route_base(ACME, GLOBEX, setup.globex['raw_did'])}.inbox"
        local = setup.acme["raw_subject"]

        async def connect() -> NatsClient:
            options = raw_connect_options(world.acme.credentials(world.client).nats_config())
            nc = await nats.connect(world.acme.url, name="bench-fed-raw-client", **options)
            setup.astack.push_async_callback(nc.close)
            return nc

        nc = loop.run_until_complete(connect())

        async def requests(subject: str, n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                start = perf_counter()
                reply = await nc.request(subject, raw, timeout=REQUEST_TIMEOUT)
                latencies.append(perf_counter() - start)
            if len(reply.data) != reply_size:
                raise RuntimeError(f"raw reply of {len(reply.data)} bytes, not {reply_size}")
            return latencies

        yield Pair(
            lambda n: loop.run_until_complete(requests(linked, n)),
            lambda n: loop.run_until_complete(requests(local, n)),
        )


# --------------------------------------------------------------------------- verification


@dataclass
class Credential:
    organization: AgentIdentity
    agent: AgentIdentity
    token: str


def _credential(loop: asyncio.AbstractEventLoop) -> Credential:
    """A globex membership credential issued with didkit, checked by didkit and PyNaCl."""
    globex, agent = AgentIdentity.generate(), AgentIdentity.generate()
    token = loop.run_until_complete(
        issue_membership(
            globex, org=GLOBEX, agent=agent.did, status_index=7, capabilities=("bench",)
        )
    )
    errors = loop.run_until_complete(verify_jwt_credential(token))
    if errors:
        raise RuntimeError(f"didkit does not verify the credential: {errors}")
    verify_membership(token, trusted={globex.did: GLOBEX}, agent=agent.did)
    return Credential(globex, agent, token)


def _didkit_floor(loop: asyncio.AbstractEventLoop, token: str) -> Callable[[int], float]:
    async def verify(n: int) -> float:
        start = perf_counter()
        for _ in range(n):
            errors = await verify_jwt_credential(token)
        elapsed = perf_counter() - start
        if errors:
            raise RuntimeError(f"didkit does not verify the credential: {errors}")
        return elapsed

    return lambda n: loop.run_until_complete(verify(n))


@BENCHMARK.throughput(
    "membership VC verification",
    subject="`verify_membership(token, trusted=..., agent=...)`: the hot path, PyNaCl over "
    "the JWS bytes, uncached",
    floor="didkit `verify_jwt_credential(token)` on the same credential",
    goal=at_least(1.0),
)
def membership_verification(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        credential = _credential(loop)
        token, agent = credential.token, credential.agent.did
        trusted = {credential.organization.did: GLOBEX}

        def subject(n: int) -> float:
            start = perf_counter()
            for _ in range(n):
                verify_membership(token, trusted=trusted, agent=agent)
            return perf_counter() - start

        yield Pair(subject, _didkit_floor(loop, token))


async def _memory_view(credential: Credential) -> FederationView:
    """acme's view over an in-memory bucket holding the agreement and globex's status list."""
    acme, globex = AgentIdentity.generate(), credential.organization
    now = SystemClock().now_ms()
    parties = tuple(
        Party(
            org=org,
            name=org.capitalize(),
            authority=authority.did,
            link_key=AgentIdentity.generate().did,
            exports=exports,
        )
        for org, authority, exports in (
            (ACME, acme, ()),
            (GLOBEX, globex, (Export(agent=credential.agent.did, operations=("bench.*",)),)),
        )
    )
    agreement = (
        FederationAgreement(
            id="acme-globex",
            version=1,
            parties=(parties[0], parties[1]),
            not_before_ms=now - 60_000,
            not_after_ms=now + 86_400_000,
        )
        .signed_by(acme)
        .signed_by(globex)
    )
    transport = InMemoryTransport(name="bench-view")
    await transport.connect(timeout=5.0)
    bucket = await transport.key_value(federation_bucket(ACME))
    await bucket.put(agreement_key(agreement.id), agreement.encode(), timeout=5.0)
    status = issue_status_list(globex, version=1, revoked=(), now_ms=now)
    await bucket.put(status_key(globex.did), status.encode(), timeout=5.0)
    view = FederationView(transport, mesh=ACME, organization=acme.did, org=ACME)
    await view.start()
    view.verify_membership(credential.token, credential.agent.did)  # fills the cache
    return view


@BENCHMARK.throughput(
    "membership VC verification, cached view",
    subject="`FederationView.verify_membership(token, agent)`: what a node does per message "
    "(cache hit, agreement in force, expiry, issuer's status list)",
    floor="didkit `verify_jwt_credential(token)` on the same credential",
)
def membership_verification_cached(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        astack = async_stack(stack, loop)
        credential = _credential(loop)
        view = loop.run_until_complete(_memory_view(credential))
        astack.push_async_callback(view.aclose)
        token, agent = credential.token, credential.agent.did

        def subject(n: int) -> float:
            start = perf_counter()
            for _ in range(n):
                view.verify_membership(token, agent)
            return perf_counter() - start

        yield Pair(subject, _didkit_floor(loop, credential.token))


# --------------------------------------------------------------------------- revocation


@BENCHMARK.latency(
    "membership revocation to refusal across the link",
    subject="globex's `revoke_member` (new signed status list) + `publish_federation`, "
    "shipped by globex's steward through the link and stored by acme's, until this "
    "process's acme view refuses the member's cached credential (`MembershipRevoked`)",
    floor="a raw 8-byte publish from this process as a globex agent to "
    "`globex.fed.acme.{key}.inbox` until a raw subscriber on acme (a peer process) "
    "received it through the same link (for scale; the goal is on the absolute p99)",
    goal=within(1.0, metric="p99"),
    ops=60,
    quick_ops=10,
)
def revocation(config: RunConfig) -> Iterator[Pair]:
    with contextlib.ExitStack() as stack:
        loop = event_loop(stack)
        listener, teller = AgentIdentity.generate(), AgentIdentity.generate()
        world = _world(
            stack,
            loop,
            globex_exports=[],
            acme_exports=[listener],
            members={GLOBEX: [teller]},  # globex's first member makes its status list
        )
        astack = async_stack(stack, loop)  # closed before the servers stop
        globex = world.globex
        _start_peers(
            stack,
            world,
            {
                "acme-listener": (
                    "broker_agents",
                    world.acme,
                    world.agent_args(world.acme, listener, "acme-listener"),
                ),
                **_steward_specs(world),
            },
        )
        listener_peer = world.peers["acme-listener"]
        _, federation = loop.run_until_complete(_client_node(astack, world))
        view = federation.view

        async def globex_connections() -> tuple[NatsTransport, NatsClient]:
            authority = globex.authority_transport("bench-globex-authority")
            await authority.connect(timeout=10.0)
            astack.push_async_callback(authority.aclose)
            options = raw_connect_options(globex.credentials(teller).nats_config())
            nc = await nats.connect(globex.url, name="bench-globex-teller", **options)
            astack.push_async_callback(nc.close)
            return authority, nc

        authority, nc = loop.run_until_complete(globex_connections())
        bucket_of_globex = OrgDirectory(globex.directory)

        async def status_arrived() -> bool:
            return (
                view.status_of(globex.did) is not None and view.partnership(globex.did) is not None
            )

        loop.run_until_complete(
            _until(world, status_arrived, "globex's status list in acme's view", _diagnose(world))
        )

        # the member being revoked, and the moment acme's view refused it
        watched: dict[str, Any] = {}

        def on_change() -> None:
            target = watched.get("member")
            if target is None or watched["waiter"].done():
                return
            try:
                view.verify_membership(*target)
            except MembershipRevoked:
                watched["waiter"].set_result(perf_counter())

        view.add_listener(on_change)

        async def members(n: int) -> list[tuple[str, str]]:
            """``n`` fresh globex members acme's view accepts now (not timed)."""
            out = []
            for _ in range(n):
                did = AgentIdentity.generate().did
                token = await globex.issue_member(did)
                view.verify_membership(token, did)  # accepted (and cached) before the revocation
                out.append((token, did))
            return out

        async def revoke(targets: list[tuple[str, str]]) -> list[float]:
            latencies = []
            for token, did in targets:
                waiter = loop.create_future()
                watched.update(member=(token, did), waiter=waiter)
                start = perf_counter()
                revoke_member(globex.directory, globex.authority, did)
                await publish_federation(authority, GLOBEX, bucket_of_globex)
                try:
                    refused_at = await asyncio.wait_for(waiter, WAIT_TIMEOUT)
                except TimeoutError:
                    raise RuntimeError(
                        f"acme's view did not refuse a revoked member in {WAIT_TIMEOUT:g}s\n"
                        f"{_diagnose(world)()}"
                    ) from None
                latencies.append(refused_at - start)
            watched.clear()
            return latencies

        subject_to_listener = f"{route_base(GLOBEX, ACME, listener.did)}.inbox"
        sequence = iter(range(1 << 62))

        async def tell(n: int) -> list[float]:
            latencies = []
            for _ in range(n):
                seq = next(sequence)
                start = monotonic()
                await nc.publish(subject_to_listener, seq.to_bytes(8, "big"))
                got = await asyncio.to_thread(
                    listener_peer.call,
                    "wait_message",
                    seq=seq,
                    within=WAIT_TIMEOUT,
                    timeout=WAIT_TIMEOUT + 5,
                )
                latencies.append(float(got["received_at"]) - start)
            return latencies

        def subject(n: int) -> list[float]:
            targets = loop.run_until_complete(members(n))
            return loop.run_until_complete(revoke(targets))

        yield Pair(subject, lambda n: loop.run_until_complete(tell(n)))
