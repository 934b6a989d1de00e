"""Account links of a secured mesh: what crosses to another organization's broker.

A mesh account sees nothing of any other account. A federation link adds, on
this mesh's server, one *link account* per partner organization and a leaf-node
connection that binds it to the partner's link account on the partner's server
(docs/federation.md). Only service subjects cross, in both directions:

* the mesh account **exports** each of its agents the partner may call
  (``{mesh}.agent.{key}.inbox`` and ``.sealed``); the link account imports them as
  ``fed.{mesh}.{key}.inbox`` / ``.sealed``, which is all the partner can reach;
* the link account **exports** ``fed.{partner}.>`` (the partner's agents, as the
  partner's link account imports them) and the mesh account imports it as
  ``{mesh}.fed.{partner}.>``, where this mesh's agents address them.

Replies return through the server's response mapping (``_R_.``). This module is
the NATS-level description (``links.json`` in the mesh directory): subjects and
account keys, no agreement semantics; ``agentmesh.federation`` compiles it from
signed agreements. The mesh account JWT carries its exports and imports, so
every push of that JWT (revocations too) keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmesh.broker.errors import MeshSecurityError
from agentmesh.broker.jwt import ServiceExport, ServiceImport

LINKS_FILE = "links.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImportedService(_Model):
    """A service of ``account`` (its ``subject``), reachable locally as ``local_subject``."""

    account: str
    subject: str
    local_subject: str

    def claim(self) -> ServiceImport:
        return ServiceImport(self.account, self.subject, self.local_subject)


class LinkAccount(_Model):
    """The account on this server that faces one partner organization."""

    partner: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    account: str
    exports: tuple[str, ...] = ()
    imports: tuple[ImportedService, ...] = ()


class LeafRemote(_Model):
    """An outgoing leaf-node connection of this server to a partner's link listener."""

    partner: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str
    account: str
    credentials: str


class MeshLinks(_Model):
    """Everything ``links.json`` says: mesh account exports/imports, link accounts, leaf."""

    format: Literal["agentmesh-mesh-links"] = "agentmesh-mesh-links"
    version: Literal[1] = 1
    mesh_exports: tuple[str, ...] = ()
    mesh_imports: tuple[ImportedService, ...] = ()
    accounts: tuple[LinkAccount, ...] = ()
    leaf_listen: str | None = None
    remotes: tuple[LeafRemote, ...] = ()

    def export_claims(self) -> tuple[ServiceExport, ...]:
        return tuple(ServiceExport(subject) for subject in self.mesh_exports)

    def import_claims(self) -> tuple[ServiceImport, ...]:
        return tuple(i.claim() for i in self.mesh_imports)

    def account(self, partner: str) -> LinkAccount | None:
        return next((a for a in self.accounts if a.partner == partner), None)

    def save(self, directory: Path) -> None:
        (directory / LINKS_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> MeshLinks:
        """``DIR/links.json``, or no links when the file does not exist.

        Raises:
            MeshSecurityError: The file is unreadable or invalid.
        """
        path = Path(directory) / LINKS_FILE
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MeshSecurityError(f"{path} is unreadable: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(root)"
            raise MeshSecurityError(f"{path}: {where}: {first['msg']}") from None


__all__ = ["LINKS_FILE", "ImportedService", "LeafRemote", "LinkAccount", "MeshLinks"]
