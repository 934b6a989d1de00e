"""Govern any Python callable, sync or async: ``@governed(governor, "http.get")``.

Works for plain functions, CrewAI/AutoGen tool functions, or methods. Every call
is checked by the :class:`~agentmesh.policy.governor.Governor` with the calling
agent's identity and context, taken from :func:`acting_as` (a context variable,
so it follows asyncio tasks). A call without an agent identity is refused.
A refused call raises the typed :class:`~agentmesh.policy.errors.PolicyDenied`
subclass that says why; the tool never runs.

Example::

    @governed(governor, "payments.transfer", cost_arg="amount")
    async def transfer(account: str, amount: float) -> str: ...

    with acting_as(agent.did, context={"saga": saga_id}):
        await transfer("acct-1", 25.0)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ParamSpec, TypeVar, cast

from agentmesh import telemetry
from agentmesh.policy.decision import DecisionRequest
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governor import Governor, Usage

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Who is calling, and what else the policy may look at (``context.*`` paths)."""

    did: str
    org: str | None = None
    context: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


_CURRENT: contextvars.ContextVar[AgentContext | None] = contextvars.ContextVar(
    "agentmesh_current_agent", default=None
)


@contextlib.contextmanager
def acting_as(
    did: str, *, org: str | None = None, context: Mapping[str, Any] | None = None
) -> Iterator[AgentContext]:
    """Run the block as agent ``did``: governed calls inside it are decided for that agent."""
    agent = AgentContext(did, org, MappingProxyType(dict(context or {})))
    token = _CURRENT.set(agent)
    try:
        yield agent
    finally:
        _CURRENT.reset(token)


def current_agent() -> AgentContext | None:
    return _CURRENT.get()


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """How to read a call: which arguments are the resource, URLs, tokens and cost."""

    action: str
    resource_arg: str | None = None
    url_args: tuple[str, ...] = ()
    tokens_arg: str | None = None
    cost_arg: str | None = None


def _number(arguments: Mapping[str, Any], name: str | None, did: str) -> float:
    if name is None:
        return 0.0
    value = arguments.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise PolicyDenied(
            f"argument {name!r} must be a non-negative number (it is budgeted)",
            did=did,
            rule="budget",
        )
    return float(value)


_SIMPLE = inspect.Parameter.POSITIONAL_OR_KEYWORD
_IMPLICIT = ("self", "cls")


class _Checker:
    """Builds the request for one call and asks the governor."""

    def __init__(self, governor: Governor, spec: ToolSpec, function: Callable[..., Any]) -> None:
        self.governor = governor
        self.spec = spec
        self.signature = inspect.signature(function)
        parameters = list(self.signature.parameters.values())
        # Plain ``def f(a, b=1)`` signatures (nearly every tool) are bound without
        # inspect's general machinery; anything else, and every call that does not
        # fit, goes through Signature.bind, which also words the error.
        self._names: tuple[str, ...] | None = (
            tuple(p.name for p in parameters)
            if all(p.kind is _SIMPLE for p in parameters)
            else None
        )
        self._required = frozenset(p.name for p in parameters if p.default is p.empty)
        self._implicit = tuple(name for name in _IMPLICIT if name in self.signature.parameters)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        agent = _CURRENT.get()
        try:
            request, usage = self._read_call(agent, args, kwargs)
        except PolicyDenied as denied:
            spec = self.spec
            request = DecisionRequest(
                spec.action, kind="tool", direction="outbound", peer=agent.did if agent else None
            )
            self.governor.record_refusal(request, denied)
            raise
        self.governor.authorize(request, usage, enriched=True)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The call's arguments by name, or ``None`` when the fast path does not apply."""
        names = self._names
        if names is None or len(args) > len(names):
            return None
        arguments = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key in arguments or key not in self.signature.parameters:
                return None
            arguments[key] = value
        if not self._required.issubset(arguments):
            return None
        for name in self._implicit:
            arguments.pop(name, None)
        return arguments

    def _read_call(
        self, agent: AgentContext | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[DecisionRequest, Usage]:
        spec = self.spec
        if agent is None:
            raise PolicyDenied(
                f"{spec.action}: no calling agent (wrap the call in acting_as(did))",
                action=spec.action,
                rule="identity",
            )
        arguments = self._bind(args, kwargs)
        if arguments is None:
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise PolicyDenied(
                    f"{spec.action}: arguments do not fit the tool: {exc}",
                    did=agent.did,
                    action=spec.action,
                    rule="arguments",
                ) from None
            arguments = {k: v for k, v in bound.arguments.items() if k not in _IMPLICIT}
        resource = arguments.get(spec.resource_arg) if spec.resource_arg else None
        if spec.url_args or spec.tokens_arg or spec.cost_arg:
            urls = tuple(str(arguments[name]) for name in spec.url_args if arguments.get(name))
            tokens = _number(arguments, spec.tokens_arg, agent.did)
            cost = _number(arguments, spec.cost_arg, agent.did)
            usage = Usage(tokens=int(tokens), cost=cost, urls=urls)
        else:
            usage = _NO_USAGE
        request = self.governor.tool_request(
            spec.action,
            agent.did,
            org=agent.org,
            resource=None if resource is None else str(resource),
            args=MappingProxyType(arguments),
            context=agent.context,
        )
        return request, usage


_NO_USAGE = Usage()


def _tool_span(active: telemetry.Tracer, action: str) -> AbstractContextManager[telemetry.Span]:
    agent = _CURRENT.get()
    attributes: dict[str, telemetry.AttributeValue] = {"agentmesh.action": action}
    if agent is not None:
        attributes["agentmesh.agent"] = agent.did
    return active.span(f"agentmesh.tool {action}", attributes=attributes)


def _traced_check(
    check: _Checker, span: telemetry.Span, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The policy check inside a tool call's span (the governor annotates the decision)."""
    try:
        check(args, kwargs)
    except PolicyDenied as denied:
        span.refuse(denied.code, str(denied))  # also when refused before the governor ran
        raise


def governed(
    governor: Governor,
    action: str | None = None,
    *,
    resource_arg: str | None = None,
    url_args: tuple[str, ...] = (),
    tokens_arg: str | None = None,
    cost_arg: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: check every call of a sync or async callable before it runs.

    Args:
        governor: the node's governor.
        action: the tool name the policy sees (default: the function's qualified name).
        resource_arg: the argument that names the resource (``match.resources``).
        url_args: arguments holding URLs, checked by the egress guard.
        tokens_arg: the argument counted as tokens against budgets.
        cost_arg: the argument counted as cost against budgets.

    Raises (from the wrapped call):
        PolicyDenied and its subclasses: the call was refused and did not run.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        name = action or f"{function.__module__}.{function.__qualname__}"
        spec = ToolSpec(name, resource_arg, tuple(url_args), tokens_arg, cost_arg)
        check = _Checker(governor, spec, function)
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                active = telemetry.tracer
                if active is None:
                    check(args, kwargs)
                    return await function(*args, **kwargs)
                with _tool_span(active, name) as span:
                    _traced_check(check, span, args, kwargs)
                    return await function(*args, **kwargs)

            wrapper = cast(Callable[P, R], async_wrapper)
        else:

            @functools.wraps(function)
            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                active = telemetry.tracer
                if active is None:
                    check(args, kwargs)
                    return function(*args, **kwargs)
                with _tool_span(active, name) as span:
                    _traced_check(check, span, args, kwargs)
                    return function(*args, **kwargs)

            wrapper = sync_wrapper
        wrapper.__agentmesh_action__ = name  # type: ignore[attr-defined]
        return wrapper

    return decorate


def govern(
    governor: Governor, function: Callable[P, R], action: str, **options: Any
) -> Callable[P, R]:
    """Wrap an existing callable (a framework's tool) without decorator syntax."""
    return governed(governor, action, **options)(function)


__all__ = ["AgentContext", "ToolSpec", "acting_as", "current_agent", "govern", "governed"]
