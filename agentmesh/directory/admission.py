"""Admission: a node serves only agents the mesh knows, unless it is told otherwise.

A valid signature proves who sent a message, not that the sender belongs to the
mesh: anyone can make a ``did:key``. :class:`AdmissionInterceptor` refuses
messages and handshakes from DIDs that have no live, verified card in the mesh's
directory and are not admitted by name (``unknown_agent``). It is the default of
``agentmesh node run`` (``--admission registered``); ``--admission open`` serves
any valid DID and is labelled as such. On a secured broker (docs/broker.md) the
server already refuses identities the authority never issued a credential for;
admission adds the mesh's own view (a card, not revoked) on top.
"""

from __future__ import annotations

from collections.abc import Container

from agentmesh.directory.directory import Directory
from agentmesh.node.interceptors import ALLOW, InboundMessage, Outcome, Verdict
from iatp.envelope import Envelope
from iatp.handshake import PeerOffer

UNKNOWN_AGENT = "unknown_agent"


class AdmissionInterceptor:
    """Allows senders with a live card in ``directory``, or in ``admitted``.

    ``admitted`` is any container: a set of DIDs, or a live view such as the
    federation wing's verified members of partner organizations.

    Install at :attr:`~agentmesh.node.interceptors.Stage.REVOCATION` (before policy).
    Outbound messages are not checked: a node may call whom it chooses.
    """

    def __init__(self, directory: Directory, admitted: Container[str] = frozenset()) -> None:
        self.directory = directory
        self.admitted = admitted

    def _verdict(self, did: str, what: str) -> Verdict:
        if did in self.admitted or self.directory.lookup(did, follow_rotation=False) is not None:
            return ALLOW
        return Verdict.deny(
            UNKNOWN_AGENT, f"{what} {did} has no card in the mesh directory and is not admitted"
        )

    async def check_inbound(self, message: InboundMessage) -> Verdict:
        return self._verdict(message.sender, "sender")

    async def check_outbound(self, envelope: Envelope) -> Verdict:
        return ALLOW

    async def check_handshake(self, offer: PeerOffer) -> Verdict:
        return self._verdict(offer.did, "peer")

    async def record_outcome(self, message: InboundMessage, outcome: Outcome) -> None:
        return None


__all__ = ["UNKNOWN_AGENT", "AdmissionInterceptor"]
