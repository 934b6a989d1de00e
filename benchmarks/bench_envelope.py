"""IATP envelope seal and open per second, against raw PyNaCl sign / verify.

From the foundation issue: seal (encode + sign) and open (verify + decode +
replay check) per second, each as a ratio to raw ``nacl.signing`` sign / verify
of the same bytes in the same run. Goal: >= 0.85 for both.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from time import perf_counter

from nacl.signing import SigningKey, VerifyKey

from benchmarks.harness import Benchmark, Pair, RunConfig, at_least
from iatp.clock import ManualClock, SystemClock
from iatp.envelope import (
    SIGNING_DOMAIN,
    encode_payload,
    new_envelope,
    open_envelope,
    parse_frame,
    seal_envelope,
)
from iatp.identity import AgentIdentity
from iatp.replay import ReplayCache

BENCHMARK = Benchmark(
    name="envelope",
    title="IATP envelope seal / open vs raw Ed25519 (PyNaCl)",
    description=(
        "Single thread, one sender identity, a `did:key` recipient, no headers, no "
        "correlation id. The floors sign / verify exactly the bytes the envelope signs "
        "(`b'iatp/1/envelope\\x00' || payload`), so the ratio is the share of the "
        "time left to Ed25519 itself. Goal from the foundation issue: >= 0.85."
    ),
)

MESSAGE_TYPE = "bench.message"
BODY_SIZES = {"256 B": 256, "4 KiB": 4096}
GOAL = at_least(0.85)


def _parties() -> tuple[AgentIdentity, str]:
    sender = AgentIdentity.from_seed(bytes(range(32)))
    recipient = AgentIdentity.from_seed(bytes(range(32, 64)))
    return sender, recipient.did


def _body(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _seal_case(size: int) -> Callable[[RunConfig], Pair]:
    def factory(config: RunConfig) -> Pair:
        sender, recipient = _parties()
        did, body, clock = sender.did, _body(size), SystemClock()
        signing_key = SigningKey(sender.seed())
        sample = new_envelope(
            sender=did, type=MESSAGE_TYPE, recipient=recipient, body=body, now_ms=clock.now_ms()
        )
        message = SIGNING_DOMAIN + encode_payload(sample)  # exactly what seal signs

        def subject(n: int) -> float:
            start = perf_counter()
            for _ in range(n):
                seal_envelope(
                    new_envelope(
                        sender=did,
                        type=MESSAGE_TYPE,
                        recipient=recipient,
                        body=body,
                        now_ms=clock.now_ms(),
                    ),
                    sender,
                )
            return perf_counter() - start

        def floor(n: int) -> float:
            start = perf_counter()
            for _ in range(n):
                signing_key.sign(message)
            return perf_counter() - start

        return Pair(subject, floor)

    return factory


def _open_case(size: int) -> Callable[[RunConfig], Pair]:
    def factory(config: RunConfig) -> Pair:
        sender, recipient = _parties()
        did, body, clock = sender.did, _body(size), ManualClock()
        verify_key = VerifyKey(sender.public_key)

        def fresh_frames(n: int) -> list[bytes]:
            # Distinct random ids, all valid at the (frozen) clock's time.
            return [
                seal_envelope(
                    new_envelope(
                        sender=did,
                        type=MESSAGE_TYPE,
                        recipient=recipient,
                        body=body,
                        now_ms=clock.now_ms(),
                    ),
                    sender,
                )
                for _ in range(n)
            ]

        def subject(n: int) -> float:
            frames = fresh_frames(n)
            replay = ReplayCache()
            start = perf_counter()
            for frame in frames:
                open_envelope(frame, clock=clock, audience=recipient, replay=replay)
            elapsed = perf_counter() - start
            assert len(replay) == n
            return elapsed

        def floor(n: int) -> float:
            signed = []
            for frame in fresh_frames(n):
                parsed = parse_frame(frame)
                signed.append(parsed.signature + SIGNING_DOMAIN + parsed.payload)
            start = perf_counter()
            for signed_message in signed:
                verify_key.verify(signed_message)
            return perf_counter() - start

        return Pair(subject, floor)

    return factory


for _label, _size in BODY_SIZES.items():
    BENCHMARK.throughput(
        f"seal {_label}",
        subject=f"`seal_envelope(new_envelope(...), identity)`, {_label} body "
        "(build + validate + encode + sign + frame)",
        floor="`SigningKey.sign(domain || payload)` on the same bytes",
        goal=GOAL,
    )(_seal_case(_size))
    BENCHMARK.throughput(
        f"open {_label}",
        subject=f"`open_envelope(frame, clock, audience, replay=ReplayCache())`, {_label} "
        "body, distinct pre-sealed frames (parse + verify + decode + rules + replay)",
        floor="`VerifyKey.verify(signature || domain || payload)` on the same bytes",
        goal=GOAL,
    )(_open_case(_size))
