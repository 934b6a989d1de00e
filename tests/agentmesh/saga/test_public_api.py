"""agentmesh.saga's public API: sorted ``__all__``, every error exported with a stable code."""

from __future__ import annotations

import inspect

import agentmesh.saga
import agentmesh.saga.errors
from agentmesh.errors import MeshError
from tests.test_public_api import _isort_key


def test_all_is_sorted_unique_and_resolves() -> None:
    exported = list(agentmesh.saga.__all__)
    assert exported == sorted(exported, key=_isort_key)
    assert len(set(exported)) == len(exported)
    assert all(hasattr(agentmesh.saga, name) for name in exported)


def test_every_saga_error_is_exported_with_its_own_stable_code() -> None:
    errors = [
        obj
        for obj in vars(agentmesh.saga.errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == "agentmesh.saga.errors"
    ]
    assert len(errors) >= 8
    codes = [cls.code for cls in errors]
    assert len(set(codes)) == len(codes)
    for cls in errors:
        assert issubclass(cls, MeshError)
        assert cls.code.startswith("saga_")
        assert cls.__name__ in agentmesh.saga.__all__
        assert cls.__name__ in agentmesh.saga.errors.__all__
