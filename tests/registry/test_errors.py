"""The registry error family: one root, distinct stable codes, the drawn tree is true."""

from __future__ import annotations

import inspect
import re

import registry
import registry.errors
from iatp.errors import AgentMeshError
from tests.test_public_api import _drawn_tree, _isort_key


def _classes() -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(registry.errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == "registry.errors"
    ]


def test_every_error_is_a_registry_error_with_its_own_code() -> None:
    codes: dict[str, str] = {}
    for cls in _classes():
        assert issubclass(cls, registry.errors.RegistryError)
        assert issubclass(cls, AgentMeshError)
        code = vars(cls)["code"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code)
        assert code not in codes, (cls.__name__, codes.get(code))
        codes[code] = cls.__name__
        assert cls.__name__ in registry.__all__


def test_the_drawn_tree_and_codes_match_the_classes() -> None:
    doc = registry.errors.__doc__ or ""
    nodes = dict(_drawn_tree(doc))
    for cls in _classes():
        parent = nodes[cls.__name__]
        assert parent == cls.__bases__[0].__name__, cls.__name__
    for name, code in re.findall(r"(\w+)\s+code \"([a-z_]+)\"", doc):
        assert getattr(registry.errors, name).code == code


def test_public_api_is_sorted_and_resolves() -> None:
    exported = list(registry.__all__)
    assert exported == sorted(exported, key=_isort_key)
    assert all(hasattr(registry, name) for name in exported)
    import agentmesh.directory as directory

    assert list(directory.__all__) == sorted(directory.__all__, key=_isort_key)
    assert all(hasattr(directory, name) for name in directory.__all__)
