"""Trust on the mesh: signed receipts in a stream, folded by every node.

* :class:`ReceiptLedger`: publish signed receipts; fold the stream (verified,
  de-duplicated, refused ones audited) into a :class:`trust.TrustEngine`.
* :class:`ReceiptInterceptor`: a node hook that turns handled messages into receipts.
* :class:`MeshTrust`: engine + ledger + live fold + periodic recompute for one node.
* :func:`find_trusted`: directory discovery ranked by global trust.
* :class:`SnapshotPolicy`, :class:`SnapshotStore`: signed snapshots to join from.
* :func:`find_trusted`: directory discovery ranked by global trust, distrusted left out.
* :class:`TrustedFinder`: a saga substitute finder ordered by a ``SelectionPolicy``.
"""

from agentmesh.trustnet.discovery import TrustedFinder, find_trusted
from agentmesh.trustnet.interceptor import OUTCOMES, ReceiptInterceptor
from agentmesh.trustnet.ledger import (
    AUDIT_KIND,
    ReceiptLedger,
    receipt_subject,
    receipt_subjects,
    stream_name,
)
from agentmesh.trustnet.service import MeshTrust
from agentmesh.trustnet.snapshots import SnapshotPolicy, SnapshotStore

__all__ = [
    "AUDIT_KIND",
    "OUTCOMES",
    "MeshTrust",
    "ReceiptInterceptor",
    "ReceiptLedger",
    "SnapshotPolicy",
    "SnapshotStore",
    "TrustedFinder",
    "find_trusted",
    "receipt_subject",
    "receipt_subjects",
    "stream_name",
]
