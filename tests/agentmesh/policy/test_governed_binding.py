"""The fast argument binding of ``@governed`` sees exactly what ``Signature.bind`` sees."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentmesh.audit import MemoryAuditSink
from agentmesh.policy import (
    CompiledPolicy,
    Decision,
    DecisionRequest,
    Governor,
    PolicyDenied,
    PolicyEngine,
    acting_as,
    governed,
)
from agentmesh.policy.governor import Usage

ALICE = "did:key:z6MkAlice"
POLICY = {
    "version": 1,
    "name": "binding",
    "rules": [{"id": "any", "effect": "allow", "match": {"actions": ["tool.*"]}}],
}


class RecordingGovernor(Governor):
    """Keeps every request it is asked to authorize."""

    def __init__(self) -> None:
        self.sink = MemoryAuditSink()
        super().__init__(PolicyEngine(CompiledPolicy.from_data(POLICY)), audit=self.sink)
        self.requests: list[DecisionRequest] = []

    def authorize(
        self, request: DecisionRequest, usage: Usage | None = None, **options: Any
    ) -> Decision:
        self.requests.append(request)
        return super().authorize(request, usage, **options)


def plain(a: int, b: int = 2, c: str | None = None) -> tuple[int, int, str | None]:
    return a, b, c


def keyword_only(a: int, *, b: int = 2) -> tuple[int, int]:
    return a, b


def variadic(a: int, *rest: object, **more: object) -> int:
    return len(rest) + len(more)


class Tools:
    def method(self, a: int, b: int = 2) -> int:
        return a + b


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((1,), {}),
    ((1, 5), {}),
    ((1, 5, "x"), {}),
    ((), {"a": 1}),
    ((1,), {"c": "y"}),
    ((), {"c": "y", "b": 3, "a": 1}),
    # calls that do not fit: refused, the tool never runs
    ((), {}),
    ((1, 2, 3, 4), {}),
    ((1,), {"a": 2}),
    ((1,), {"d": 4}),
    ((), {"b": 3}),
]


def expected(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    try:
        bound = inspect.signature(function).bind(*args, **kwargs)
    except TypeError:
        return None
    return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}


@pytest.mark.parametrize("function", [plain, keyword_only, variadic])
@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_arguments_match_signature_bind(
    function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    governor = RecordingGovernor()
    ran: list[object] = []

    def spy(*a: Any, **k: Any) -> Any:
        ran.append(1)
        return function(*a, **k)

    spy.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    tool = governed(governor, "tool.x")(spy)
    want = expected(function, args, kwargs)
    with acting_as(ALICE):
        if want is None:
            with pytest.raises(PolicyDenied) as refused:
                tool(*args, **kwargs)
            assert refused.value.rule == "arguments"
            assert ran == []
            assert governor.requests == []
            assert governor.sink.codes() == ["policy_denied"]  # the refusal is audited
        else:
            tool(*args, **kwargs)
            assert ran == [1]
            assert dict(governor.requests[0].args) == want
            assert governor.sink.codes() == ["allowed"]


def test_a_method_does_not_show_self_to_the_policy() -> None:
    governor = RecordingGovernor()
    Tools.method = governed(governor, "tool.m")(Tools.method)  # type: ignore[method-assign]
    with acting_as(ALICE):
        assert Tools().method(1, b=4) == 5
    assert dict(governor.requests[0].args) == {"a": 1, "b": 4}


@given(
    positional=st.lists(st.integers(), max_size=4),
    keywords=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(), max_size=4),
)
def test_any_call_shape_binds_like_signature_bind(
    positional: list[int], keywords: dict[str, int]
) -> None:
    governor = RecordingGovernor()
    tool = governed(governor, "tool.x")(plain)
    want = expected(plain, tuple(positional), keywords)
    with acting_as(ALICE):
        if want is None:
            with pytest.raises(PolicyDenied):
                tool(*positional, **keywords)  # type: ignore[arg-type]
        else:
            tool(*positional, **keywords)  # type: ignore[arg-type]
            assert dict(governor.requests[0].args) == want
            request = governor.requests[0]
            assert (request.peer, request.kind, request.direction) == (ALICE, "tool", "outbound")
