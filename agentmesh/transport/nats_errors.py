"""The one place where nats-py exceptions become :mod:`agentmesh.errors`.

Every call into nats-py from the NATS transport runs inside
:func:`translated_errors`, so callers only ever see the documented
``TransportError`` family. :data:`NATS_ERROR_MAP` is ordered most specific first
(the first ``isinstance`` match wins) and names every exception class nats-py
defines; a test checks that no row is shadowed by an earlier one and that a new
nats-py exception class does not slip through unmapped.

It also gives back cancellations that Python 3.11 loses there: ``asyncio.wait_for``
(ours around JetStream calls, and nats-py's inside every request and flush)
returns the call's result when its task is cancelled in the loop iteration in
which that result lands (CPython gh-86296). The task is then marked as cancelling
but goes on running: a lease keeper or a bucket guard cancelled that way looped
forever, and whoever awaited it after cancelling it hung with it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import nats.errors as core
import nats.js.errors as js

from agentmesh.errors import (
    ConnectionLost,
    InvalidSubject,
    KeyExists,
    KeyNotFound,
    KeyValueError,
    NoResponders,
    NotConnected,
    PayloadTooLarge,
    RequestTimeout,
    RevisionMismatch,
    StreamError,
    TransportError,
)

NATS_ERROR_MAP: tuple[tuple[type[BaseException], type[TransportError]], ...] = (
    # Key-value (subclasses of JetStream API errors, so they come first).
    (js.KeyWrongLastSequenceError, RevisionMismatch),
    (js.KeyDeletedError, KeyNotFound),
    (js.KeyNotFoundError, KeyNotFound),
    (js.NoKeysError, KeyNotFound),
    (js.KeyHistoryTooLargeError, KeyValueError),
    (js.BucketNotFoundError, KeyValueError),
    (js.BadBucketError, KeyValueError),
    (js.KeyValueError, KeyValueError),
    (js.KeyValueLimitMarkerTTLNotSupportedError, KeyValueError),
    (js.InvalidKeyError, InvalidSubject),
    (js.InvalidBucketNameError, InvalidSubject),
    # Object store (not used by agentmesh; mapped so nothing escapes untranslated).
    (js.ObjectNotFoundError, StreamError),
    (js.ObjectDeletedError, StreamError),
    (js.ObjectAlreadyExists, StreamError),
    (js.InvalidObjectNameError, StreamError),
    (js.BadObjectMetaError, StreamError),
    (js.LinkIsABucketError, StreamError),
    (js.DigestMismatchError, StreamError),
    # JetStream streams and consumers.
    (js.FetchTimeoutError, RequestTimeout),
    (js.NoStreamResponseError, StreamError),
    (js.ConsumerInvalidResetError, StreamError),
    (js.ConsumerSequenceMismatchError, StreamError),
    (js.TooManyStalledMsgsError, StreamError),
    (js.ServiceUnavailableError, StreamError),
    (js.ServerError, StreamError),
    (js.NotFoundError, StreamError),
    (js.BadRequestError, StreamError),
    (js.APIError, StreamError),
    (js.Error, StreamError),
    (core.NotJSMessageError, StreamError),
    (core.MsgAlreadyAckdError, StreamError),
    # Core protocol.
    (core.NoRespondersError, NoResponders),
    (core.FlushTimeoutError, RequestTimeout),
    (core.DrainTimeoutError, RequestTimeout),
    (core.TimeoutError, RequestTimeout),
    (core.MaxPayloadError, PayloadTooLarge),
    (core.BadSubjectError, InvalidSubject),
    (core.UnexpectedEOF, ConnectionLost),
    (core.StaleConnectionError, ConnectionLost),
    (core.ConnectionClosedError, NotConnected),
    (core.ConnectionDrainingError, NotConnected),
    (core.ConnectionReconnectingError, NotConnected),
    (core.OutboundBufferLimitError, NotConnected),
    (core.NoServersError, NotConnected),
    (core.ServerNotInPoolError, NotConnected),
    (core.AuthorizationError, TransportError),
    (core.InvalidUserCredentialsError, TransportError),
    (core.SecureConnRequiredError, TransportError),
    (core.SecureConnWantedError, TransportError),
    (core.SecureConnFailedError, TransportError),
    (core.BadHeaderError, TransportError),
    (core.BadSubscriptionError, TransportError),
    (core.SlowConsumerError, TransportError),
    (core.BadTimeoutError, TransportError),
    (core.JsonParseError, TransportError),
    (core.ProtocolError, TransportError),
    (core.InvalidCallbackTypeError, TransportError),
    (core.Error, TransportError),
    # Raised by asyncio.wait_for around nats-py calls, and by sockets.
    (TimeoutError, RequestTimeout),
    (OSError, ConnectionLost),
)
"""(nats-py or builtin exception class, agentmesh error class), first match wins."""

JETSTREAM_ERR_CODES: dict[int, type[TransportError]] = {
    10077: KeyExists,  # max messages per subject: a write-once key is already written
    10054: PayloadTooLarge,  # message size exceeds the stream's max_msg_size
}
"""JetStream ``err_code`` values that have a more precise agentmesh error."""

TRANSLATED: tuple[type[BaseException], ...] = (core.Error, TimeoutError, OSError)
"""What :func:`translated_errors` catches; anything else propagates unchanged."""


def translate_error(error: BaseException) -> TransportError:
    """The agentmesh error for a nats-py (or timeout/socket) exception.

    Our own ``TransportError`` instances pass through unchanged.
    """
    if isinstance(error, TransportError):
        return error
    try:
        detail = str(error) or type(error).__name__
    except Exception:  # some nats-py __str__ methods assume fields that may be unset
        detail = type(error).__name__
    err_code = getattr(error, "err_code", None)  # some subclasses never set it
    if isinstance(error, js.APIError) and err_code in JETSTREAM_ERR_CODES:
        return JETSTREAM_ERR_CODES[err_code](f"{detail} ({type(error).__name__})")
    for source, target in NATS_ERROR_MAP:
        if isinstance(error, source):
            return target(f"{detail} ({type(error).__name__})")
    return TransportError(f"{detail} ({type(error).__name__})")


class translated_errors:  # noqa: N801 (used like the function it replaced: `with translated_errors():`)
    """Run a block of nats-py calls, re-raising its exceptions as agentmesh errors.

    A class rather than a ``@contextmanager`` generator: it wraps every publish,
    where the generator machinery cost more than the rest of the wrapper.

    Args:
        on_key_exists: Translate a lost "create" compare-and-set into KeyExists
            (nats-py reports it as a wrong last sequence, like a failed update).
        expected_revision: Put on RevisionMismatch as ``expected``.

    Raises:
        TransportError: The translated exception, chained to the original.
        asyncio.CancelledError: The task was cancelled during the block, and the
            block returned or failed instead of ending with the cancellation.
    """

    __slots__ = ("_cancels", "_expected_revision", "_on_key_exists", "_task")

    def __init__(
        self, *, on_key_exists: bool = False, expected_revision: int | None = None
    ) -> None:
        self._on_key_exists = on_key_exists
        self._expected_revision = expected_revision
        self._task: asyncio.Task[object] | None = None
        self._cancels = 0

    def __enter__(self) -> None:
        task = self._task = _current_task()
        self._cancels = task.cancelling() if task is not None else 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # never swallows: falsy, and typed so that mypy knows
        task = self._task
        cancelled = task is not None and task.cancelling() > self._cancels
        if error is None:
            if cancelled:
                raise asyncio.CancelledError
            return
        if not isinstance(error, Exception):
            return  # a cancellation (or exit) goes on as it is
        if cancelled:
            raise asyncio.CancelledError from error
        translated = _translated(error, self._on_key_exists, self._expected_revision)
        if translated is error:
            return
        raise translated from error


def _translated(error: Exception, on_key_exists: bool, expected_revision: int | None) -> Exception:
    """What :func:`translated_errors` raises for ``error`` (itself when not ours to map)."""
    if isinstance(error, TransportError) or not isinstance(error, TRANSLATED):
        return error
    translated = translate_error(error)
    if isinstance(translated, RevisionMismatch):
        if on_key_exists:
            return KeyExists(str(translated))
        translated.expected = expected_revision
    return translated


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a block of synchronous calls)
        return None
