"""``agentmesh federation`` from the command line: the offline steps of two organizations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agentmesh.broker.links import MeshLinks
from agentmesh.federation.agreement import decode_agreement, decode_revocation
from agentmesh.federation.lab import LAB_PASSPHRASE, FederationLab, free_port
from agentmesh.federation.membership import verify_membership
from agentmesh.federation.orgdir import OrgDirectory
from iatp.identity import AgentIdentity

ENV = {**os.environ, "LAB_PASS": LAB_PASSPHRASE, "COLUMNS": "200"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmesh", "federation", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        check=False,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def orgs(tmp_path_factory: pytest.TempPathFactory) -> FederationLab:
    lab = FederationLab(tmp_path_factory.mktemp("cli"))
    lab.add_org("acme")
    lab.add_org("globex")
    return lab


def test_two_organizations_agree_link_and_issue_memberships(
    orgs: FederationLab, tmp_path: Path
) -> None:
    acme, globex = orgs.orgs["acme"], orgs.orgs["globex"]
    keys = {}
    for org in (acme, globex):
        result = cli("link-key", "--mesh-dir", str(org.directory))
        assert result.returncode == 0, result.stderr
        keys[org.name] = result.stdout.strip()
        assert keys[org.name] == OrgDirectory(org.directory).link_identity().did
    bob = AgentIdentity.generate().did
    terms = {
        "id": "acme-globex",
        "version": 1,
        "not_before_ms": 0,
        "not_after_ms": 4_000_000_000_000,
        "parties": [
            {"org": "acme", "name": "Acme", "authority": acme.did, "link_key": keys["acme"]},
            {
                "org": "globex",
                "name": "Globex",
                "authority": globex.did,
                "link_key": keys["globex"],
                "exports": [{"agent": bob, "operations": ["quote.*"], "capabilities": ["quote"]}],
                "ceilings": {"max_ring": 3, "rate_per_second": 5, "burst": 10},
            },
        ],
    }
    terms_file = tmp_path / "terms.yaml"
    terms_file.write_text(yaml.safe_dump(terms))
    agreement_file = tmp_path / "agreement.json"
    auth = ("--passphrase-env", "LAB_PASS")
    result = cli(
        "propose", str(terms_file), "--identity", str(acme.save_authority()),
        "--out", str(agreement_file), *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "lacks globex's signature" in flat(result.stdout)
    result = cli("sign", str(agreement_file), "--identity", str(globex.save_authority()), *auth)
    assert result.returncode == 0, result.stderr
    assert "signed by both" in flat(result.stdout)
    agreement = decode_agreement(agreement_file.read_bytes())
    agreement.check_signatures()
    shown = flat(cli("show", str(agreement_file)).stdout)
    assert "quote.*" in shown
    assert "ring >= 3, 5/s burst 10" in shown

    port = free_port()
    result = cli(
        "link", str(agreement_file), "--mesh-dir", str(acme.directory),
        "--identity", str(acme.save_authority()), "--listen", f"127.0.0.1:{port}", *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    leaf_jwt = acme.directory / "federation" / "leaf" / "globex.jwt"
    assert str(leaf_jwt) in flat(result.stdout)
    result = cli(
        "link", str(agreement_file), "--mesh-dir", str(globex.directory),
        "--identity", str(globex.save_authority()),
        "--connect", f"nats-leaf://127.0.0.1:{port}", "--leaf-jwt", str(leaf_jwt), *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    links = MeshLinks.load(globex.directory)
    assert links.remotes[0].url == f"nats-leaf://127.0.0.1:{port}"
    assert f"globex.agent.{bob.removeprefix('did:key:')}.inbox" in links.mesh_exports

    vc_file = tmp_path / "bob.vc"
    result = cli(
        "issue-membership", bob, "--mesh-dir", str(globex.directory),
        "--identity", str(globex.save_authority()), "--out", str(vc_file),
        "--role", "supplier", "--days", "2", *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    membership = verify_membership(vc_file.read_text().strip(), trusted={globex.did: "globex"})
    assert membership.agent == bob
    assert membership.roles == ("supplier",)
    result = cli(
        "revoke-membership", bob, "--mesh-dir", str(globex.directory),
        "--identity", str(globex.save_authority()), "--no-push", *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    status = OrgDirectory(globex.directory).status_list()
    assert status is not None
    assert status.is_revoked(membership.status_index)

    result = cli(
        "revoke", str(agreement_file), "--mesh-dir", str(acme.directory),
        "--identity", str(acme.save_authority()), "--reason", "done", "--no-push", *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (notice,) = OrgDirectory(acme.directory).revocations()
    assert decode_revocation(notice, agreement).issuer == acme.did
    result = cli(
        "unlink", "globex", "--mesh-dir", str(acme.directory),
        "--identity", str(acme.save_authority()), "--no-push", *auth,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert MeshLinks.load(acme.directory).accounts == ()
    assert "leafnodes" not in (acme.directory / "nats-server.conf").read_text()


def test_bad_input_is_one_line_and_a_non_zero_exit(orgs: FederationLab, tmp_path: Path) -> None:
    acme = orgs.orgs["acme"]
    auth = ("--passphrase-env", "LAB_PASS")
    bad_terms = tmp_path / "bad.json"
    party = {"org": "acme", "name": "A", "authority": acme.did, "link_key": acme.did}
    bad_terms.write_text(
        json.dumps(
            {
                "id": "x",
                "version": 1,
                "not_before_ms": 0,
                "not_after_ms": 1,
                "parties": [party, party],
            }
        )
    )
    result = cli(
        "propose", str(bad_terms), "--identity", str(acme.save_authority()), "--out", "x", *auth
    )
    assert result.returncode == 1
    assert "agreement_invalid" in result.stderr
    result = cli("show", str(bad_terms))
    assert result.returncode == 1
    assert "is not an agreement" in flat(result.stderr)
    result = cli("issue-membership", "not-a-did", "--mesh-dir", str(acme.directory),
                 "--identity", str(acme.save_authority()), "--out", "x", *auth)  # fmt: skip
    assert result.returncode == 2
    assert "not an Ed25519 did:key" in flat(result.stderr)
