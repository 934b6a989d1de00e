"""What an organization keeps about its federation, next to its secured mesh.

``DIR/federation/`` inside the mesh directory (``agentmesh mesh init``)::

    link.creds-seed            the server's leaf-link key (hex seed, 0600; public: link_key)
    agreements/{id}.json       agreements this organization signed (both signatures)
    revocations/{id}.json      revocation notices this organization issued or received
    memberships.json           issued membership credentials: agent DID -> status index
    memberships/{key}.jwt      each issued credential (public: it is a signed statement)
    status.bin                 the newest signed status list of this organization
    leaf/{partner}.creds       this server's leaf credentials for a partner (0600)
    leaf/{partner}.jwt         the leaf user JWT this organization issued to a partner
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agentmesh.federation.agreement import (
    AgreementRevocation,
    FederationAgreement,
    decode_agreement,
)
from agentmesh.federation.errors import FederationError
from agentmesh.federation.status import StatusList, decode_status_list
from agentmesh.node.addressing import MeshAddressing
from iatp.identity import AgentIdentity

FEDERATION_DIR = "federation"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


class OrgDirectory:
    """The ``federation/`` part of a mesh directory (see the module docstring)."""

    def __init__(self, mesh_directory: str | Path) -> None:
        self.root = Path(mesh_directory) / FEDERATION_DIR
        self._memberships: tuple[int, dict[str, str]] | None = None

    def _path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- the server's link key -----------------------------------------------------------

    def link_identity(self) -> AgentIdentity:
        """The key this organization's server presents on leaf links (created on first use)."""
        path = self._path("link.creds-seed")
        if path.exists():
            try:
                return AgentIdentity.from_seed(bytes.fromhex(path.read_text().strip()))
            except ValueError as exc:
                raise FederationError(f"{path} does not hold a key seed: {exc}") from None
        identity = AgentIdentity.generate()
        _write_private(path, identity.seed().hex() + "\n")
        return identity

    # -- agreements and revocations ------------------------------------------------------

    def save_agreement(self, agreement: FederationAgreement) -> Path:
        path = self._path("agreements", f"{agreement.id}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(agreement.encode() + b"\n")
        return path

    def agreements(self) -> list[FederationAgreement]:
        folder = self._path("agreements")
        if not folder.is_dir():
            return []
        return [decode_agreement(p.read_bytes().strip()) for p in sorted(folder.glob("*.json"))]

    def save_revocation(self, notice: AgreementRevocation) -> Path:
        path = self._path("revocations", f"{notice.agreement_id}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(notice.encode() + b"\n")
        return path

    def revocations(self) -> list[bytes]:
        folder = self._path("revocations")
        if not folder.is_dir():
            return []
        return [p.read_bytes().strip() for p in sorted(folder.glob("*.json"))]

    # -- memberships and the status list -------------------------------------------------

    def _registry(self) -> dict[str, int]:
        path = self._path("memberships.json")
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {str(k): int(v) for k, v in data["issued"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FederationError(f"{path} is corrupt: {exc}") from None

    def status_index(self, agent: str) -> int:
        """``agent``'s index in the status list (allocated on first use, never reused)."""
        registry = self._registry()
        if agent not in registry:
            registry[agent] = max(registry.values(), default=-1) + 1
            path = self._path("memberships.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"issued": registry}, indent=2, sort_keys=True) + "\n")
        return registry[agent]

    def indices(self) -> dict[str, int]:
        return self._registry()

    def save_membership(self, agent: str, token: str) -> Path:
        path = self._path("memberships", f"{MeshAddressing.agent_key(agent)}.jwt")
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(".tmp")
        staged.write_text(token + "\n")
        os.replace(staged, path)  # a new directory entry: memberships() sees the change
        return path

    def memberships(self) -> dict[str, str]:
        """Agent DID -> the newest credential this organization issued it.

        Read again only when the folder changed (the steward asks on every shipment).
        """
        folder = self._path("memberships")
        if not folder.is_dir():
            return {}
        stamp = folder.stat().st_mtime_ns
        if self._memberships is None or self._memberships[0] != stamp:
            issued = {
                f"did:key:{p.stem}": p.read_text().strip() for p in sorted(folder.glob("*.jwt"))
            }
            self._memberships = (stamp, issued)
        return dict(self._memberships[1])

    def status_list(self) -> StatusList | None:
        path = self._path("status.bin")
        return decode_status_list(path.read_bytes()) if path.exists() else None

    def save_status_list(self, status: StatusList) -> None:
        path = self._path("status.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(status.encode())

    # -- leaf credentials ----------------------------------------------------------------

    def save_leaf_creds(self, partner: str, text: str) -> Path:
        path = self._path("leaf", f"{partner}.creds")
        _write_private(path, text)
        return path

    def save_issued_leaf_jwt(self, partner: str, token: str) -> Path:
        path = self._path("leaf", f"{partner}.jwt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(token + "\n")
        return path


__all__ = ["FEDERATION_DIR", "OrgDirectory"]
