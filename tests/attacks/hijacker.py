"""An attacker process on an open server: answers every request and handshake it sees with junk.

``python -m tests.attacks.hijacker URL MESH`` subscribes to every agent's inbox,
session and handshake subject of MESH and, for each request, publishes to its reply subject
at once: random bytes, a fake no-responders status, an unsigned handshake
``refused`` and an unsigned ``ok`` (for handshakes). It prints ``ready`` when
subscribed and, on SIGTERM, a JSON line with how many junk replies it sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import msgpack
import nats
from nats.aio.msg import Msg


async def main(url: str, mesh: str) -> None:
    nc = await nats.connect(url, name="hijacker")
    sent = {"requests": 0, "handshakes": 0}

    async def junk(msg: Msg, kind: str) -> None:
        if not msg.reply:
            return
        sent[kind] += 1
        await nc.publish(msg.reply, b"", headers={"Status": "503"})
        await nc.publish(msg.reply, os.urandom(64))
        if kind == "handshakes":
            await nc.publish(msg.reply, msgpack.packb(["refused", "busy", "go away"]))
            await nc.publish(msg.reply, msgpack.packb(["ok"]))
            await nc.publish(msg.reply, msgpack.packb(["ok", os.urandom(64)]))
            fake = ["refused", "unknown_agent", "no", os.urandom(64)]
            await nc.publish(msg.reply, msgpack.packb(fake, use_bin_type=True))

    async def on_inbox(msg: Msg) -> None:
        await junk(msg, "requests")

    async def on_handshake(msg: Msg) -> None:
        await junk(msg, "handshakes")

    await nc.subscribe(f"{mesh}.agent.*.inbox", cb=on_inbox)
    await nc.subscribe(f"{mesh}.agent.*.session", cb=on_inbox)
    await nc.subscribe(f"{mesh}.agent.*.handshake", cb=on_handshake)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await nc.flush()
    print(json.dumps(sent), flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
