"""Two agents on the embedded mesh: a mutual handshake, then a signed request.

Run: ``python examples/quickstart.py`` (add ``--nats nats://127.0.0.1:4222`` to use
a real server). The tests run this file.
"""

from __future__ import annotations

import argparse
import asyncio

from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from agentmesh.transport.factory import make_transport
from agentmesh.transport.memory import InMemoryBus
from iatp import AgentIdentity


async def main(nats_url: str | None) -> None:
    bus = InMemoryBus()  # ignored when nats_url is given
    alice_transport = make_transport(nats_url, name="alice", bus=bus)
    bob_transport = make_transport(nats_url, name="bob", bus=bus)
    async with (
        MeshNode(AgentIdentity.generate(), alice_transport) as alice,
        MeshNode(AgentIdentity.generate(), bob_transport) as bob,
    ):

        @bob.on("greet")
        async def greet(message: InboundMessage) -> bytes:
            return b"hello " + message.body

        keys = await alice.handshake(bob.did)  # both prove their keys; session keys derived
        reply = await alice.request(bob.did, "greet", b"alice")
        print(f"session {keys.session_id.hex()[:8]} with {bob.did}")
        print(f"reply from {reply.sender}: {reply.body.decode()}")
        assert reply.body == b"hello alice"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nats", help="NATS URL (default: the embedded in-memory mesh)")
    asyncio.run(main(parser.parse_args().nats))
