"""A federation lab on one machine: organizations with real secured servers, linked.

For trying federation, the example and the tests. Each :class:`LabOrg` is what
an organization would have: a secured mesh (``mesh init``), its own
``nats-server`` on a loopback port, its authority. :meth:`FederationLab.agree`
writes and signs an agreement as both authorities would, :meth:`FederationLab.link`
compiles it into both servers' configuration (one listens, the other connects),
and :meth:`FederationLab.start` runs the servers (listeners first), provisions
the stores and publishes each organization's federation facts. Needs the
``nats-server`` binary (``apt-get install nats-server``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentmesh.broker.authority import AUTHORITY_JWT, MeshAuthority, init_mesh, read_jwt
from agentmesh.broker.config import SERVER_CONFIG_FILE, MeshSecurityConfig
from agentmesh.broker.credentials import BrokerCredentials
from agentmesh.broker.provision import provision
from agentmesh.broker.subject_map import Role
from agentmesh.directory.revocations import RevocationList
from agentmesh.errors import MeshError, StreamError
from agentmesh.federation.agreement import Ceilings, Export, FederationAgreement, Party
from agentmesh.federation.operations import issue_member, link_mesh, publish_federation
from agentmesh.federation.orgdir import OrgDirectory
from agentmesh.transport.nats import NatsTransport
from iatp.clock import SystemClock
from iatp.identity import AgentIdentity
from iatp.keystore import save_identity
from registry.revocation import RevocationAuthorities, RevocationKind, sign_revocation

READY = "Server is ready"
LAB_PASSPHRASE = "federation-lab"  # noqa: S105 - encrypts throwaway lab keys only
DAY_MS = 86_400_000
PROVISION_WAIT = 10.0  # seconds a just-started org server gets to bring JetStream up


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LabOrg:
    """One organization of the lab: its mesh directory, authority and server."""

    name: str
    directory: Path
    authority: AgentIdentity
    config: MeshSecurityConfig
    leaf_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def did(self) -> str:
        return self.authority.did

    @property
    def powers(self) -> MeshAuthority:
        return MeshAuthority(self.config, self.authority, directory=self.directory)

    @property
    def link_key(self) -> str:
        return OrgDirectory(self.directory).link_identity().did

    def user_jwt(self, did: str, role: Role = Role.AGENT) -> str:
        """A broker credential of this organization's mesh for ``did``."""
        return self.powers.issue_user(did, role)

    def credentials(self, identity: AgentIdentity, role: Role = Role.AGENT) -> BrokerCredentials:
        return BrokerCredentials(identity, self.user_jwt(identity.did, role))

    def authority_transport(self, name: str = "authority") -> NatsTransport:
        credentials = BrokerCredentials(self.authority, read_jwt(self.directory / AUTHORITY_JWT))
        return NatsTransport(self.url, name=name, config=credentials.nats_config())

    async def issue_member(
        self,
        agent: str,
        *,
        roles: tuple[str, ...] = (),
        capabilities: tuple[str, ...] = (),
        days: float = 30.0,
    ) -> str:
        """A membership credential of this organization for ``agent`` (didkit)."""
        return await issue_member(
            self.directory,
            self.authority,
            agent,
            roles=roles,
            capabilities=capabilities,
            days=days,
        )

    async def quarantine(self, did: str, reason: str) -> None:
        """This organization's authority quarantines ``did`` (stored in its revocation log)."""
        order = sign_revocation(
            self.authority,
            subject=did,
            kind=RevocationKind.QUARANTINED,
            reason=reason,
            issued_at_ms=SystemClock().now_ms(),
            sequence=secrets.randbits(32),
        )
        transport = self.authority_transport("lab-quarantine")
        await transport.connect(timeout=5.0)
        try:
            revocations = RevocationList(
                transport,
                mesh=self.name,
                authorities=RevocationAuthorities(mesh=frozenset({self.did})),
            )
            await revocations.start()
            try:
                await revocations.issue(order, signer=self.authority)
            finally:
                await revocations.aclose()
        finally:
            await transport.aclose()

    def save_authority(self) -> Path:
        """The authority's identity file (``LAB_PASSPHRASE``), for the CLI's ``--identity``."""
        path = self.directory / "authority.id"
        if not path.exists():
            save_identity(self.authority, path, LAB_PASSPHRASE)
        return path

    def save_user_jwt(self, did: str, role: Role = Role.AGENT) -> Path:
        """A broker credential for ``did`` in a file, for ``--jwt``."""
        path = self.directory / f"{did[-12:]}.jwt"
        path.write_text(self.user_jwt(did, role) + "\n")
        return path

    def start(self, *, timeout: float = 10.0) -> None:
        binary = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
        )
        if binary is None:
            raise MeshError("nats-server is not installed (apt-get install -y nats-server)")
        log = self.directory / "server.log"
        log.unlink(missing_ok=True)
        self.process = subprocess.Popen(  # noqa: S603 - our binary, our config
            [binary, "-c", str(self.directory / SERVER_CONFIG_FILE), "-l", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and READY in log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        text = log.read_text(errors="replace") if log.exists() else ""
        self.stop()
        raise MeshError(f"nats-server of {self.name} did not start:\n{text[-2000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def server_log(self) -> str:
        log = self.directory / "server.log"
        return log.read_text(errors="replace") if log.exists() else ""


class FederationLab:
    """Organizations under ``root``, each with a secured mesh and a server (module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.orgs: dict[str, LabOrg] = {}
        self.agreements: list[FederationAgreement] = []

    def add_org(self, name: str) -> LabOrg:
        authority = AgentIdentity.generate()
        directory = self.root / name
        config = init_mesh(directory, authority, LAB_PASSPHRASE, mesh=name, port=free_port())
        org = LabOrg(name, directory, authority, config)
        self.orgs[name] = org
        return org

    def agree(
        self,
        first: str,
        second: str,
        *,
        exports: dict[str, list[Export]] | None = None,
        ceilings: dict[str, Ceilings] | None = None,
        agreement_id: str | None = None,
        version: int = 1,
        valid_days: float = 30.0,
    ) -> FederationAgreement:
        """An agreement between two organizations, signed by both authorities."""
        now = SystemClock().now_ms()
        parties = tuple(
            Party(
                org=name,
                name=name.capitalize(),
                authority=self.orgs[name].did,
                link_key=self.orgs[name].link_key,
                exports=tuple((exports or {}).get(name, ())),
                ceilings=(ceilings or {}).get(name, Ceilings()),
            )
            for name in (first, second)
        )
        agreement = FederationAgreement(
            id=agreement_id or f"{first}-{second}",
            version=version,
            parties=(parties[0], parties[1]),
            not_before_ms=now - 60_000,
            not_after_ms=now + int(valid_days * DAY_MS),
        )
        signed = agreement.signed_by(self.orgs[first].authority).signed_by(
            self.orgs[second].authority
        )
        self.agreements.append(signed)
        return signed

    def link(self, agreement: FederationAgreement, *, listener: str, connector: str) -> None:
        """Compile ``agreement`` into both servers' configuration (restart them after)."""
        accepting = self.orgs[listener]
        result = link_mesh(
            accepting.directory,
            accepting.authority,
            agreement,
            listen=f"127.0.0.1:{accepting.leaf_port}",
        )
        assert result.issued_leaf_jwt is not None
        joining = self.orgs[connector]
        link_mesh(
            joining.directory,
            joining.authority,
            agreement,
            connect=f"nats-leaf://127.0.0.1:{accepting.leaf_port}",
            leaf_jwt=read_jwt(result.issued_leaf_jwt),
        )

    async def start(self) -> None:
        """Start every server (leaf listeners first), provision stores, publish federation facts."""
        listeners = [o for o in self.orgs.values() if _listens(o)]
        for org in [*listeners, *(o for o in self.orgs.values() if o not in listeners)]:
            await asyncio.to_thread(org.start)
        for org in self.orgs.values():
            transport = org.authority_transport("lab-setup")
            await transport.connect(timeout=5.0)
            try:
                await _provision_when_up(transport, org)
                await publish_federation(transport, org.name, OrgDirectory(org.directory))
            finally:
                await transport.aclose()

    async def publish(self, name: str) -> None:
        """Publish ``name``'s agreements, revocation notices and status list again."""
        org = self.orgs[name]
        transport = org.authority_transport("lab-publish")
        await transport.connect(timeout=5.0)
        try:
            await publish_federation(transport, org.name, OrgDirectory(org.directory))
        finally:
            await transport.aclose()

    def stop(self) -> None:
        for org in self.orgs.values():
            with contextlib.suppress(Exception):
                org.stop()

    async def __aenter__(self) -> FederationLab:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()


async def _provision_when_up(
    transport: NatsTransport, org: LabOrg, *, timeout: float = PROVISION_WAIT
) -> None:
    """Provision ``org``'s stores on its server that just started: its account's
    JetStream may answer 503 for a moment after "Server is ready" (seen on a
    clean-clone CI run), so a refusal is retried until ``timeout``, then raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await provision(transport, org.powers.subjects)
            return
        except StreamError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.25)


def _listens(org: LabOrg) -> bool:
    from agentmesh.broker.links import MeshLinks

    return MeshLinks.load(org.directory).leaf_listen is not None


__all__ = ["FederationLab", "LabOrg", "free_port"]
