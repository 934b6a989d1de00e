"""Subject rules shared by every transport: pure functions, no I/O.

A subject is a non-empty sequence of dot-separated, non-empty tokens without
whitespace or control characters. Patterns (used by subscriptions, KV watches and
stream filters) may also use two wildcards, each as a whole token: ``*`` matches
exactly one token and ``>`` matches one or more trailing tokens (so it may only be
the last token). These are the NATS rules, checked here before anything reaches a
server, so that both transports reject the same subjects with the same error.

KV keys, bucket names and stream or consumer names are narrower: they end up
inside JetStream subjects and API subjects, so they use small ASCII alphabets.
Header names are HTTP tokens; header values are single lines (NATS trims them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from agentmesh.errors import InvalidSubject, TransportError

SINGLE_WILDCARD = "*"
"""Matches exactly one token."""

TAIL_WILDCARD = ">"
"""Matches one or more trailing tokens; only valid as the last token."""

_KEY_TOKEN = re.compile(r"[A-Za-z0-9_=-]+")
_NAME = re.compile(r"[A-Za-z0-9_-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


# Exactly the characters for which ``c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F``
# (checked over all of Unicode by a test); a regex scan is ~20x faster than a loop.
_BAD_CHAR = re.compile(r"[\s\x00-\x1f\x7f]")


def _bad_char(token: str) -> bool:
    return _BAD_CHAR.search(token) is not None


def _check_tokens(value: str, tokens: Sequence[str], *, allow_wildcards: bool, what: str) -> None:
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if not token:
            raise InvalidSubject(f"{what} {value!r} has an empty token")
        if token == TAIL_WILDCARD:
            if not allow_wildcards:
                raise InvalidSubject(f"{what} {value!r}: wildcards are not allowed here")
            if index != last:
                raise InvalidSubject(f"{what} {value!r}: '>' must be the last token")
        elif token == SINGLE_WILDCARD:
            if not allow_wildcards:
                raise InvalidSubject(f"{what} {value!r}: wildcards are not allowed here")
        elif SINGLE_WILDCARD in token or TAIL_WILDCARD in token:
            raise InvalidSubject(f"{what} {value!r}: a wildcard must be a whole token")


def validate_subject(subject: str, *, allow_wildcards: bool) -> None:
    """Check that ``subject`` is a well-formed subject (or pattern).

    Args:
        subject: The subject to check.
        allow_wildcards: Whether ``*`` and ``>`` tokens are allowed (subscriptions
            and filters) or not (publishing, reply subjects).

    Raises:
        InvalidSubject: Empty subject or token, whitespace or control characters,
            a wildcard mixed with other characters, ``>`` not last, or a wildcard
            where ``allow_wildcards`` is false.
    """
    if not isinstance(subject, str) or not subject:
        raise InvalidSubject("a subject must be a non-empty string")
    if _bad_char(subject):
        raise InvalidSubject(f"subject {subject!r} contains whitespace or control characters")
    _check_tokens(subject, subject.split("."), allow_wildcards=allow_wildcards, what="subject")


def validate_queue(queue: str) -> None:
    """Check a queue group name: non-empty, no whitespace or control characters.

    Raises:
        InvalidSubject: The name is empty or contains whitespace.
    """
    if not isinstance(queue, str) or not queue or _bad_char(queue):
        raise InvalidSubject(f"invalid queue group name {queue!r}")


def validate_kv_key(key: str, *, allow_wildcards: bool = False) -> None:
    """Check a KV key (or a watch pattern over keys).

    Keys are dot-separated tokens of ``[A-Za-z0-9_=-]``.

    Raises:
        InvalidSubject: The key is empty, has an empty token or a character outside
            the key alphabet, or uses a wildcard where none is allowed.
    """
    if not isinstance(key, str) or not key:
        raise InvalidSubject("a KV key must be a non-empty string")
    tokens = key.split(".")
    _check_tokens(key, tokens, allow_wildcards=allow_wildcards, what="KV key")
    for token in tokens:
        if token not in (SINGLE_WILDCARD, TAIL_WILDCARD) and not _KEY_TOKEN.fullmatch(token):
            raise InvalidSubject(f"KV key {key!r}: token {token!r} is outside [A-Za-z0-9_=-]")


def validate_name(name: str, *, what: str = "name") -> None:
    """Check a bucket, stream or consumer name: ``[A-Za-z0-9_-]+``.

    Raises:
        InvalidSubject: The name is empty or uses another character.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidSubject(f"invalid {what} {name!r}: use [A-Za-z0-9_-]+")


def normalize_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Validate message headers and return them as NATS delivers them (values trimmed).

    Raises:
        TransportError: A header name is not an HTTP token, or a value spans lines.
    """
    if not headers:
        return {}
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise TransportError(f"invalid header name {name!r}")
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            raise TransportError(f"header {name!r} must be a single-line string")
        out[name] = value.strip()
    return out


def tokens_match(pattern: Sequence[str], subject: Sequence[str]) -> bool:
    """Match pre-split tokens (no validation): the hot path of the in-memory bus."""
    n = len(pattern)
    if n > len(subject):
        return False
    for index, token in enumerate(pattern):
        if token == TAIL_WILDCARD:
            return True  # at least one subject token remains: n <= len(subject)
        if token != SINGLE_WILDCARD and token != subject[index]:
            return False
    return n == len(subject)


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a literal ``subject`` is matched by ``pattern``.

    Args:
        pattern: A subject that may contain ``*`` and ``>`` wildcards.
        subject: A literal subject.

    Returns:
        True when every token matches: equal, ``*`` for any one token, or ``>``
        for the (non-empty) rest.

    Raises:
        InvalidSubject: Either argument is malformed, or ``subject`` has wildcards.
    """
    validate_subject(pattern, allow_wildcards=True)
    validate_subject(subject, allow_wildcards=False)
    return tokens_match(pattern.split("."), subject.split("."))


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some literal subject is matched by both patterns ``a`` and ``b``.

    JetStream refuses two streams whose subjects overlap; the in-memory transport
    applies the same rule with this function.

    Raises:
        InvalidSubject: Either pattern is malformed.
    """
    validate_subject(a, allow_wildcards=True)
    validate_subject(b, allow_wildcards=True)
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if TAIL_WILDCARD in (x, y):
            return True
        if x != y and SINGLE_WILDCARD not in (x, y):
            return False
    return len(left) == len(right)


def server_urls(url: str) -> list[str]:
    """The servers of ``url``: one ``nats://HOST:PORT`` or a comma-separated cluster list.

    Raises:
        ValueError: empty, or a URL whose scheme is neither ``nats://`` nor ``tls://``.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("no server URL given: use nats://HOST:PORT")
    for server in servers:
        if not server.startswith(("nats://", "tls://")):
            raise ValueError(
                f"unsupported transport URL {server!r}: use nats://HOST:PORT "
                "(a cluster: nats://HOST1:PORT1,nats://HOST2:PORT2)"
            )
    return servers


__all__ = [
    "SINGLE_WILDCARD",
    "TAIL_WILDCARD",
    "normalize_headers",
    "server_urls",
    "subject_matches",
    "subjects_overlap",
    "tokens_match",
    "validate_kv_key",
    "validate_name",
    "validate_queue",
    "validate_subject",
]
