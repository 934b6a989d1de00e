"""The public API: explicit re-exports, an isort-sorted ``__all__``, one error tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from types import ModuleType

import pytest

import agentmesh
import agentmesh.errors
import iatp
import iatp.errors
from iatp.errors import AgentMeshError

# Public-looking names in iatp modules that are deliberately not re-exported:
# base58 is an implementation detail of did:key, and the in-memory keystore
# functions sit below save_identity/load_identity.
IATP_INTERNAL = {
    "iatp.base58.Base58Error",
    "iatp.base58.b58decode",
    "iatp.base58.b58encode",
    "iatp.keystore.decrypt_identity",
    "iatp.keystore.encrypt_identity",
}


def _isort_key(name: str) -> tuple[int, list[object]]:
    """The order of ruff's RUF022: CONSTANTS, then CamelCase, then the rest, each naturally."""
    if name.isupper():
        category = 0
    elif name[:1].isupper():
        category = 1
    else:
        category = 2
    natural: list[object] = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    return category, natural


def _package(name: str) -> ModuleType:
    if name == "agentmesh.transport":
        return pytest.importorskip(name)
    return importlib.import_module(name)


PACKAGES = [
    "iatp",
    "registry",
    "trust",
    "agentmesh.audit",
    "agentmesh.broker",
    "agentmesh.directory",
    "agentmesh.errors",
    "agentmesh.policy",
    "agentmesh.resilience",
    "agentmesh.saga",
    "agentmesh.transport",
    "agentmesh.trustnet",
]
ERROR_MODULES = [
    "iatp.errors",
    "registry.errors",
    "trust.errors",
    "agentmesh.errors",
    "agentmesh.broker.errors",
    "agentmesh.policy.errors",
    "agentmesh.saga.errors",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_present_and_free_of_duplicates(name: str) -> None:
    module = _package(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert exported, f"{name}.__all__ is empty"
    assert len(exported) == len(set(exported)), f"duplicates in {name}.__all__"
    assert all(isinstance(n, str) and not n.startswith("_") for n in exported)


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted(name: str) -> None:
    exported = list(_package(name).__all__)
    assert exported == sorted(exported, key=_isort_key)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_resolves(name: str) -> None:
    module = _package(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


@pytest.mark.parametrize("name", PACKAGES)
def test_star_import_gives_exactly_all(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(_package(name).__all__)


def _iatp_modules() -> list[ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(iatp.__path__, "iatp.")
        if not info.name.rsplit(".", 1)[-1].startswith("_")
    ]


def test_every_public_class_and_function_of_iatp_is_exported() -> None:
    exported = set(iatp.__all__)
    not_exported = []
    for module in _iatp_modules():
        for attr, obj in vars(module).items():
            if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if obj.__module__ != module.__name__:
                continue  # imported from elsewhere
            qualified = f"{module.__name__}.{attr}"
            if attr not in exported and qualified not in IATP_INTERNAL:
                not_exported.append(qualified)
            if attr in exported:
                assert getattr(iatp, attr) is obj, f"iatp.{attr} is not {qualified}"
    assert not not_exported, f"public but not in iatp.__all__: {not_exported}"


def test_internal_allowlist_is_not_stale() -> None:
    for qualified in IATP_INTERNAL:
        module_name, attr = qualified.rsplit(".", 1)
        assert hasattr(importlib.import_module(module_name), attr), qualified


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]


def test_every_iatp_error_is_exported_from_iatp() -> None:
    classes = _exception_classes(iatp.errors)
    assert len(classes) >= 25
    for cls in classes:
        assert cls.__name__ in iatp.__all__, cls.__name__
        assert getattr(iatp, cls.__name__) is cls


def test_every_agentmesh_error_is_exported_from_agentmesh_errors() -> None:
    for cls in _exception_classes(agentmesh.errors):
        assert cls.__name__ in agentmesh.errors.__all__, cls.__name__


def test_there_is_a_single_error_root() -> None:
    assert agentmesh.errors.AgentMeshError is AgentMeshError
    assert iatp.AgentMeshError is AgentMeshError
    for module in (iatp.errors, agentmesh.errors):
        for cls in _exception_classes(module):
            assert issubclass(cls, AgentMeshError), cls.__name__
    for cls in _exception_classes(iatp.errors):
        if cls is not AgentMeshError:
            assert issubclass(cls, iatp.IATPError), cls.__name__


def test_every_error_class_has_its_own_distinct_code() -> None:
    classes = {*_exception_classes(iatp.errors), *_exception_classes(agentmesh.errors)}
    codes: dict[str, str] = {}
    for cls in sorted(classes, key=lambda c: c.__name__):
        assert "code" in vars(cls), f"{cls.__name__} inherits its code"
        code = vars(cls)["code"]
        assert isinstance(code, str)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code), code
        assert code not in codes, f"{cls.__name__} and {codes[code]} share code {code!r}"
        codes[code] = cls.__name__


def _drawn_tree(doc: str) -> list[tuple[str, str | None]]:
    """(class, drawn parent) for every node of the tree after the ``::`` line."""
    lines = doc.split("::", 1)[1].splitlines()
    stack: list[tuple[int, str]] = []
    nodes: list[tuple[str, str | None]] = []
    for line in lines:
        match = re.search(r"[A-Za-z]\w*", line)
        if not match:
            continue
        column, name = match.start(), match.group()
        while stack and stack[-1][0] >= column:
            stack.pop()
        nodes.append((name, stack[-1][1] if stack else None))
        stack.append((column, name))
    return nodes


@pytest.mark.parametrize("module", [iatp.errors, agentmesh.errors], ids=lambda m: m.__name__)
def test_error_tree_in_the_docstring_matches_the_classes(module: ModuleType) -> None:
    nodes = _drawn_tree(module.__doc__ or "")
    drawn = {name for name, _ in nodes}
    for cls in _exception_classes(module):
        assert cls.__name__ in drawn, f"{cls.__name__} missing from the drawn tree"
    for name, parent in nodes:
        cls = getattr(module, name, None) or getattr(iatp.errors, name)
        if parent is None:
            assert cls is AgentMeshError
        else:
            assert cls.__bases__[0].__name__ == parent, f"{name} is drawn under {parent}"


def test_codes_drawn_in_the_iatp_tree_are_the_real_codes() -> None:
    documented = dict(re.findall(r"(\w+)\s+code \"([a-z_]+)\"", iatp.errors.__doc__ or ""))
    assert len(documented) >= 20
    for name, code in documented.items():
        assert getattr(iatp.errors, name).code == code, name


def test_envelope_errors_carry_envelope_id_and_sender() -> None:
    err = iatp.ExpiredEnvelope("late", envelope_id=b"\x01" * 16, sender="did:key:z6Mk")
    assert err.envelope_id == b"\x01" * 16
    assert err.sender == "did:key:z6Mk"
    assert iatp.ReplayedEnvelope("again").envelope_id is None


@pytest.mark.parametrize("package", [iatp, agentmesh])
def test_packages_ship_py_typed(package: ModuleType) -> None:
    assert (Path(package.__file__ or "").parent / "py.typed").is_file()


def _all_error_classes() -> list[type[BaseException]]:
    return [
        cls for name in ERROR_MODULES for cls in _exception_classes(importlib.import_module(name))
    ]


def test_every_error_of_every_package_has_the_single_root() -> None:
    classes = _all_error_classes()
    assert len(classes) >= 60
    strays = [cls.__qualname__ for cls in classes if not issubclass(cls, AgentMeshError)]
    assert strays == []


def test_every_error_code_means_one_thing() -> None:
    """Counters, audit records and error replies key on ``code``: no two classes share one."""
    owners: dict[str, list[str]] = {}
    for cls in _all_error_classes():
        code = vars(cls).get("code")
        if isinstance(code, str):
            owners.setdefault(code, []).append(f"{cls.__module__}.{cls.__qualname__}")
    shared = {code: names for code, names in owners.items() if len(names) > 1}
    assert shared == {}
