"""What a mesh runtime enforces: the kill switch, the policy (with rings), trust, a judge.

:class:`Guards` holds the pieces; :class:`~agentmesh.integrations.autogen.runtime.MeshAgentRuntime`
installs them on every node it runs (the runtime's own and one per hosted agent type)::

    REVOCATION  QuarantineInterceptor   refuses quarantined / revoked senders and recipients
    POLICY      SenderBinding           the signer hosts the claimed sender; headers well formed
    POLICY      PolicyInterceptor       the governor: ring capability, policy rules, rate limits
    TRUST       EvidenceFilter          outcomes that are evidence -> signed trust receipts

and tools wrapped by :func:`~agentmesh.integrations.autogen.tools.governed_tool`
are decided by the same ``governor``. :func:`open_guards` builds the usual set from
a policy document, mesh authorities and a trust configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

from agentmesh.audit import AuditSink
from agentmesh.directory.revocations import RevocationList
from agentmesh.integrations.autogen.judge import Judge
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.governance import Governance
from agentmesh.policy.governor import Governor
from agentmesh.policy.killswitch import KillSwitch
from agentmesh.transport.base import Transport
from agentmesh.trustnet.service import MeshTrust
from iatp.clock import Clock
from iatp.identity import AgentIdentity
from registry.revocation import RevocationAuthorities
from trust.config import TrustConfig

TEAM_EVIDENCE = frozenset({"GroupChatAgentResponse", "GroupChatTeamResponse"})
"""The messages that are a team member's turn: one trust receipt per turn, not per echo."""


@dataclass(frozen=True)
class Guards:
    """The enforcement a runtime installs; every part is optional.

    Attributes:
        governor: decides messages (``PolicyInterceptor``) and governed tool calls.
        kill_switch: a started kill switch; refuses quarantined agents and hands
            their pending work to a standby host.
        trust: a started trust service; its receipts record outcomes, its engine ranks
            hosts and gates eligibility (drift, ring).
        judge: marks delivered results as bad (a failure receipt for the sender).
        evidence_types: AutoGen message types whose handled outcome is evidence
            (``None``: all; :data:`TEAM_EVIDENCE` for AgentChat teams). Refusals always are.
        max_ring: hosts in a higher ring are not eligible (3 = any ring).
    """

    governor: Governor | None = None
    kill_switch: KillSwitch | None = None
    trust: MeshTrust | None = None
    judge: Judge | None = None
    evidence_types: frozenset[str] | None = None
    max_ring: int = 3


@contextlib.asynccontextmanager
async def open_guards(
    transport: Transport,
    identity: AgentIdentity,
    *,
    mesh: str = "agentmesh",
    policy: CompiledPolicy | str | Path | None = None,
    authorities: Iterable[str] = (),
    trust: TrustConfig | bool = False,
    pre_trusted: Iterable[str] = (),
    recompute_every: int | None = 1,
    judge: Judge | None = None,
    evidence_types: frozenset[str] | None = None,
    egress: EgressGuard | None = None,
    max_ring: int = 3,
    audit: AuditSink | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[Guards]:
    """Start the kill switch (with ``authorities``), the trust service and the policy.

    Args:
        transport: a connected transport (its KV and streams hold the revocation
            list and the receipts).
        identity: who signs trust receipts and audits (the runtime's identity).
        policy: a compiled policy or a policy file; its ``rings`` section, if any,
            takes rings from the trust engine too.
        authorities: DIDs allowed to quarantine and release agents.
        trust: ``True`` or a :class:`TrustConfig` to follow the receipt stream.
        pre_trusted: the trust anchors (default: ``identity``).
        recompute_every: recompute trust every N folded receipts (deterministic).
        judge, evidence_types, max_ring: see :class:`Guards`.
        egress: the egress guard for governed tools' URLs.

    Raises:
        PolicyLoadError: the policy does not load.
        TransportError: the stores could not be opened.
    """
    authorities = tuple(authorities)
    async with contextlib.AsyncExitStack() as stack:
        kill_switch: KillSwitch | None = None
        if authorities:
            revocations = RevocationList(
                transport,
                mesh=mesh,
                authorities=RevocationAuthorities(mesh=frozenset(authorities)),
                audit=audit,
                node=identity.did,
                clock=clock,
            )
            await revocations.start()
            stack.push_async_callback(revocations.aclose)
            kill_switch = KillSwitch(
                transport, revocations, mesh=mesh, node=identity.did, audit=audit, clock=clock
            )
            await kill_switch.start()
            stack.push_async_callback(kill_switch.aclose)
        service: MeshTrust | None = None
        if trust is not False:
            service = MeshTrust(
                transport,
                identity,
                mesh=mesh,
                pre_trusted=tuple(pre_trusted) or (identity.did,),
                config=trust if isinstance(trust, TrustConfig) else None,
                clock=clock,
                audit=audit,
                recompute_interval=None,
                recompute_every=recompute_every,
            )
            await service.start()
            stack.push_async_callback(service.aclose)
        governor: Governor | None = None
        if policy is not None:
            compiled = (
                policy if isinstance(policy, CompiledPolicy) else CompiledPolicy.from_file(policy)
            )
            governance = Governance(
                compiled,
                ring_sources=[service.engine] if service is not None else [],
                blocked=kill_switch.is_blocked if kill_switch is not None else None,
                egress=egress,
                audit=audit,
                node=identity.did,
                clock=clock,
            )
            governor = governance.governor
        yield Guards(
            governor=governor,
            kill_switch=kill_switch,
            trust=service,
            judge=judge,
            evidence_types=evidence_types,
            max_ring=max_ring,
        )


__all__ = ["TEAM_EVIDENCE", "Guards", "open_guards"]
