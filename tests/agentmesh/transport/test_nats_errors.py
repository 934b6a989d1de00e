"""Every nats-py exception is translated, and every row of the map is reachable."""

from __future__ import annotations

import inspect
from types import ModuleType

import nats.errors
import nats.js.errors
import pytest

from agentmesh.errors import (
    KeyExists,
    NotConnected,
    RequestTimeout,
    RevisionMismatch,
    TransportError,
)
from agentmesh.transport.nats_errors import NATS_ERROR_MAP, translate_error, translated_errors


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]


def _instance(cls: type[BaseException]) -> BaseException:
    if cls is nats.errors.SlowConsumerError:
        return cls(subject="s", reply="", sid=1, sub=None)  # type: ignore[arg-type]
    return cls()


NATS_CLASSES = _exception_classes(nats.errors) + _exception_classes(nats.js.errors)


@pytest.mark.parametrize(
    ("source", "target"), NATS_ERROR_MAP, ids=[s.__qualname__ for s, _ in NATS_ERROR_MAP]
)
def test_every_row_is_reachable(source: type[BaseException], target: type[TransportError]) -> None:
    # An earlier, broader row would shadow this one and give another class.
    assert type(translate_error(_instance(source))) is target


@pytest.mark.parametrize(
    "cls", NATS_CLASSES, ids=[c.__module__ + "." + c.__qualname__ for c in NATS_CLASSES]
)
def test_every_nats_exception_class_has_its_own_row(cls: type[BaseException]) -> None:
    # A new nats-py exception must be mapped deliberately, not by accident of its base.
    assert cls in {source for source, _ in NATS_ERROR_MAP}
    assert isinstance(translate_error(_instance(cls)), TransportError)


def test_map_has_no_duplicate_rows() -> None:
    sources = [source for source, _ in NATS_ERROR_MAP]
    assert len(sources) == len(set(sources))


def test_our_errors_pass_through() -> None:
    error = NotConnected("closed")
    assert translate_error(error) is error


def test_translated_errors_chains_the_original() -> None:
    original = nats.errors.TimeoutError()
    with pytest.raises(RequestTimeout) as caught, translated_errors():
        raise original
    assert caught.value.__cause__ is original


def test_lost_create_becomes_key_exists() -> None:
    with pytest.raises(KeyExists), translated_errors(on_key_exists=True):
        raise nats.js.errors.KeyWrongLastSequenceError(description="wrong last sequence: 4")


def test_lost_update_carries_expected_revision() -> None:
    with pytest.raises(RevisionMismatch) as caught, translated_errors(expected_revision=3):
        raise nats.js.errors.KeyWrongLastSequenceError(description="wrong last sequence: 4")
    assert caught.value.expected == 3


def test_unrelated_exceptions_propagate_unchanged() -> None:
    with pytest.raises(KeyError), translated_errors():
        raise KeyError("not ours to translate")
