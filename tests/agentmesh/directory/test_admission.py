"""Admission: valid signatures from DIDs the mesh does not know are refused (both transports)."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.directory import UNKNOWN_AGENT, Directory, DirectoryMembership
from agentmesh.errors import HandshakeRefused, RemoteError
from agentmesh.node.config import NodeConfig
from agentmesh.node.interceptors import InboundMessage
from agentmesh.node.node import MeshNode
from iatp.identity import AgentIdentity
from tests.conftest import TransportFactory


async def _echo(message: InboundMessage) -> bytes:
    return message.body


async def test_unknown_dids_are_refused_registered_and_admitted_ones_served(
    transport_factory: TransportFactory, uid: str
) -> None:
    server_id, member_id, stranger_id, friend_id = (AgentIdentity.generate() for _ in range(4))
    transport = await transport_factory.new("s")
    membership = DirectoryMembership(server_id, transport, mesh=uid)
    async with membership:
        server = MeshNode(server_id, transport, config=NodeConfig(mesh=uid))
        membership.install(server, admitted=frozenset({friend_id.did}))
        server.handle("echo", _echo)
        async with server:
            member_dir = Directory(await transport_factory.new("m"), mesh=uid)
            await member_dir.start()
            await member_dir.register(member_id, display_name="member")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while membership.directory.lookup(member_id.did) is None:
                assert loop.time() < deadline, "the member's card never arrived"
                await asyncio.sleep(0.01)
            nodes = {}
            for name, identity in (
                ("member", member_id),
                ("stranger", stranger_id),
                ("friend", friend_id),
            ):
                nodes[name] = MeshNode(
                    identity, await transport_factory.new(name), config=NodeConfig(mesh=uid)
                )
                await nodes[name].start()
            try:
                assert (await nodes["member"].request(server.did, "echo", b"hi")).body == b"hi"
                assert (await nodes["friend"].request(server.did, "echo", b"hi")).body == b"hi"
                with pytest.raises(RemoteError) as refused:
                    await nodes["stranger"].request(server.did, "echo", b"hi")
                assert refused.value.remote_code == UNKNOWN_AGENT
                with pytest.raises(HandshakeRefused) as shaken:
                    await nodes["stranger"].handshake(server.did)
                assert shaken.value.remote_code == UNKNOWN_AGENT
                assert server.counters.rejected[UNKNOWN_AGENT] >= 1
                assert UNKNOWN_AGENT in server.audit.codes("rejected")
                # A member that leaves (deregisters) is unknown again.
                await member_dir.deregister(member_id)
                while membership.directory.lookup(member_id.did) is not None:
                    assert loop.time() < deadline + 5
                    await asyncio.sleep(0.01)
                with pytest.raises(RemoteError) as gone:
                    await nodes["member"].request(server.did, "echo", b"hi")
                assert gone.value.remote_code == UNKNOWN_AGENT
            finally:
                for node in nodes.values():
                    await node.aclose()
                await member_dir.aclose()
