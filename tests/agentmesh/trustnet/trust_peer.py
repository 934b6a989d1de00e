"""One process of the cross-process trust test (``python -m tests.agentmesh.trustnet.trust_peer``).

Roles: ``server`` (a MeshNode whose handled requests become receipts), ``client``
(sends requests and publishes its own receipts about the server), ``publisher``
(publishes a fixed set of signed receipts in a seeded order, plus a forged one),
``late`` (starts after the others are done and catches up from the stream, from a
signed snapshot with ``--snapshot-signer``), ``history`` (publishes half of the
receipts, writes a signed snapshot with ``--write-snapshot``, then the rest).
Every role folds the stream until it has seen ``--expect`` receipts, recomputes
at ``--at-ms`` from a cold start and prints one JSON result line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage, Stage
from agentmesh.node.node import MeshNode
from agentmesh.transport.factory import make_transport
from agentmesh.trustnet import MeshTrust, SnapshotPolicy
from iatp.identity import AgentIdentity
from trust import Outcome, Receipt, SignedReceipt, TrustConfig, sign_receipt
from trust.evidence import RECEIPT_DOMAIN

T0 = 1_700_000_000_000
WORLD_SIZE = 60
TRAITOR_RECEIPTS = 8
RECOMPUTE_EVERY = 10


def identity(i: int) -> AgentIdentity:
    return AgentIdentity.from_seed(bytes([i]) * 32)


WORLD = [identity(i) for i in range(1, 7)]
SERVER, CLIENT = identity(20), identity(21)
SNAPSHOTTER = identity(40)
PRE_TRUSTED = [WORLD[0].did, SERVER.did]


def world_receipts() -> list[SignedReceipt]:
    rng = random.Random(42)
    out = []
    for k in range(WORLD_SIZE):
        o, s = rng.sample(WORLD, 2)
        outcome = Outcome.SUCCESS if rng.random() < 0.85 else Outcome.FAILURE
        receipt = Receipt.create(
            observer=o.did, subject=s.did, interaction_id=f"w{k}", outcome=outcome, at_ms=T0 + k
        )
        out.append(sign_receipt(receipt, o))
    # The client is vouched for by the anchor too, so it earns some trust.
    receipt = Receipt.create(
        observer=WORLD[0].did,
        subject=CLIENT.did,
        interaction_id="w-client",
        outcome=Outcome.SUCCESS,
        at_ms=T0,
    )
    out.append(sign_receipt(receipt, WORLD[0]))
    # A traitor: the anchor sees WORLD[4] violate policy repeatedly (a drift alarm).
    for k in range(TRAITOR_RECEIPTS):
        receipt = Receipt.create(
            observer=WORLD[0].did,
            subject=WORLD[4].did,
            interaction_id=f"t{k}",
            outcome=Outcome.POLICY_VIOLATION,
            at_ms=T0 + 500 + k,
        )
        out.append(sign_receipt(receipt, WORLD[0]))
    return out


def forged_receipt() -> SignedReceipt:
    claim = Receipt.create(
        observer=WORLD[0].did,
        subject=WORLD[1].did,
        interaction_id="forged",
        outcome=Outcome.POLICY_VIOLATION,
        at_ms=T0,
    )
    return SignedReceipt(claim, WORLD[5].sign(RECEIPT_DOMAIN + claim.canonical_body()))


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def wait_folded(trust: MeshTrust, expect: int, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if trust.ledger.folded >= expect:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"folded {trust.ledger.folded} of {expect}")


def result(trust: MeshTrust, at_ms: int) -> dict[str, object]:
    engine = trust.engine
    engine.recompute(at_ms=at_ms, cold=True)
    agents = sorted(engine.agents)
    return {
        "scores": {d: engine.score(d).hex() for d in agents},
        "rings": {d: engine.ring(d) for d in agents},
        "local": {
            f"{o}>{s}": engine.local(o, s, at_ms=at_ms).positive.hex()
            for o in agents
            for s in agents
            if engine.local(o, s, at_ms=at_ms).known
        },
        "flagged": [d for d in agents if engine.flagged(d)],
        "recomputes": engine.recomputes,
        "folded": trust.ledger.folded,
        "refused": dict(trust.ledger.refused),
        "remembered": engine.remembered_receipts,
    }


async def run(args: argparse.Namespace) -> None:
    me = {"server": SERVER, "client": CLIENT, "history": SNAPSHOTTER}.get(
        args.role, identity(30 + args.seed)
    )
    signers = frozenset({args.snapshot_signer} if args.snapshot_signer else ())
    config = TrustConfig(receipt_horizon_ms=args.horizon_ms) if args.horizon_ms else None
    async with (
        make_transport(args.nats, name=f"trust-{args.role}") as transport,
        MeshTrust(
            transport,
            me,
            mesh=args.mesh,
            pre_trusted=PRE_TRUSTED,
            # Deterministic recomputes only (every 10 folded receipts, at receipt time):
            # every process passes through the same engine states.
            recompute_interval=None,
            recompute_every=RECOMPUTE_EVERY,
            config=config,
            snapshots=SnapshotPolicy(signers=signers) if signers or args.write_snapshot else None,
        ) as trust,
    ):
        if args.role == "server":
            async with MeshNode(SERVER, transport, config=NodeConfig(mesh=args.mesh)) as node:
                node.add_interceptor(trust.interceptor, stage=Stage.TRUST)

                async def work(message: InboundMessage) -> bytes:
                    return b"done"

                node.handle("work", work)
                emit("ready", did=SERVER.did)
                await wait_folded(trust, args.expect)
        elif args.role == "client":
            async with MeshNode(CLIENT, transport, config=NodeConfig(mesh=args.mesh)) as node:
                for k in range(args.requests):
                    await node.request(SERVER.did, "work", b"job", timeout=10)
                    receipt = Receipt.create(
                        observer=CLIENT.did,
                        subject=SERVER.did,
                        interaction_id=f"c{k}",
                        outcome=Outcome.SUCCESS,
                        at_ms=T0 + 1000 + k,
                        action="work.reply",
                    )
                    await trust.ledger.publish(sign_receipt(receipt, CLIENT))
                emit("sent", count=args.requests)
                await wait_folded(trust, args.expect)
        elif args.role == "publisher":
            receipts = world_receipts()
            random.Random(args.seed).shuffle(receipts)
            for receipt in receipts[: len(receipts) // 2]:
                await trust.ledger.publish(receipt)
            await trust.ledger.publish(forged_receipt())
            for receipt in receipts[len(receipts) // 2 :]:
                await trust.ledger.publish(receipt)
            emit("published", count=len(receipts))
            await wait_folded(trust, args.expect)
        elif args.role == "history":
            receipts = world_receipts()
            half = len(receipts) // 2
            for receipt in receipts[:half]:
                await trust.ledger.publish(receipt)
            await wait_folded(trust, half)
            if args.write_snapshot:
                manifest = await trust.write_snapshot()
                emit("snapshot", seq=manifest.seq, folded=manifest.folded)
            await trust.ledger.publish(forged_receipt())
            for receipt in receipts[half:]:
                await trust.ledger.publish(receipt)
            await wait_folded(trust, args.expect)
        else:
            emit(
                "caught_up",
                folded=trust.ledger.folded,
                started_from=trust.started_from_seq,
                refused_snapshots=dict(trust.snapshot_refused),
            )
            await wait_folded(trust, args.expect)
        emit("result", role=args.role, **result(trust, args.at_ms))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--role", choices=["server", "client", "publisher", "late", "history"], required=True
    )
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--at-ms", type=int, required=True)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-signer", default="")
    parser.add_argument("--write-snapshot", action="store_true")
    parser.add_argument("--horizon-ms", type=int, default=0)
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
