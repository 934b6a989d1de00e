"""What a crew needs to join the mesh: one frozen configuration object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from agentmesh.integrations.crewai.delegation import DelegationSettings
from agentmesh.integrations.crewai.errors import CrewConfigError, TaskRequestError
from agentmesh.integrations.crewai.tasks import check_capability
from agentmesh.node.config import NodeConfig
from agentmesh.policy.egress import EgressGuard
from agentmesh.policy.engine import CompiledPolicy
from agentmesh.policy.governed import ToolSpec
from iatp.did import is_did
from trust.config import TrustConfig

_EMPTY_ROLES: Mapping[str, tuple[str, ...]] = MappingProxyType({})
_EMPTY_TOOLS: Mapping[str, ToolSpec] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CrewMeshConfig:
    """How one crew is put on the mesh.

    Attributes:
        policy: the crew's policy (tool calls of its members, tasks sent to them).
        name: the crew's name on the mesh (its identity's card and audit records).
        mesh: mesh name (subject namespace); crews that work together share it.
        capabilities: role -> capabilities the member offers other crews (its card).
        delegates: roles given the ``delegate_to_mesh`` tool.
        tools: tool name -> how the policy reads a call (action, resource, URL,
            token and cost arguments); unlisted tools are decided by their name.
        egress: checks the URL arguments named in ``tools`` (SSRF guard).
        authorities: DIDs whose signed quarantine orders the crew obeys.
        anchors: pre-trusted DIDs besides the crew's own (e.g. the crews it works
            with): their receipts count fully in ranking and drift detection.
        admission: serve only senders with a live card in the directory.
        report_tool_successes: issue success receipts for allowed tool calls too.
        delegation: how members delegate (timeouts, attempts, validation).
        card_ttl_ms: member cards' lifetime (renewed every third of it).
        trust: trust-model parameters (default: :class:`trust.config.TrustConfig`).
        recompute_every: recompute trust every K folded receipts (1: every one,
            deterministic; ``None``: every ``recompute_interval`` seconds instead).
        recompute_interval: seconds between recomputes when ``recompute_every`` is None.
        node: template for member nodes (``mesh`` is taken from this config).

    Raises (on construction):
        CrewConfigError: a bad capability name, role or anchor.
    """

    policy: CompiledPolicy
    name: str = "crew"
    mesh: str = "agentmesh"
    capabilities: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY_ROLES)
    delegates: tuple[str, ...] = ()
    tools: Mapping[str, ToolSpec] = field(default_factory=lambda: _EMPTY_TOOLS)
    egress: EgressGuard | None = None
    authorities: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    admission: bool = True
    report_tool_successes: bool = True
    delegation: DelegationSettings = field(default_factory=DelegationSettings)
    card_ttl_ms: int = 30_000
    trust: TrustConfig | None = None
    recompute_every: int | None = 1
    recompute_interval: float = 1.0
    node: NodeConfig = field(default_factory=NodeConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, CompiledPolicy):
            raise CrewConfigError("policy must be a CompiledPolicy (CompiledPolicy.from_file)")
        if not self.name or len(self.name) > 100:
            raise CrewConfigError("a crew name is 1..100 characters")
        object.__setattr__(
            self,
            "capabilities",
            MappingProxyType({role: tuple(names) for role, names in self.capabilities.items()}),
        )
        object.__setattr__(self, "tools", MappingProxyType(dict(self.tools)))
        object.__setattr__(self, "delegates", tuple(self.delegates))
        for role, names in self.capabilities.items():
            for capability in names:
                try:
                    check_capability(capability)
                except TaskRequestError:
                    raise CrewConfigError(
                        f"role {role!r}: bad capability name {capability!r}", role=role
                    ) from None
        for did in (*self.anchors, *self.authorities):
            if not is_did(did):
                raise CrewConfigError(f"{did[:80]!r} is not a did:key (anchors, authorities)")
        if self.card_ttl_ms < 1000:
            raise CrewConfigError("card_ttl_ms must be at least 1000")
        if self.recompute_every is not None and self.recompute_every < 1:
            raise CrewConfigError("recompute_every must be >= 1 (or None)")

    @property
    def roles(self) -> frozenset[str]:
        """Every role this configuration names."""
        return frozenset(self.capabilities) | frozenset(self.delegates)


__all__ = ["CrewMeshConfig"]
