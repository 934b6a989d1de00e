"""AutoGen ``FunctionTool``s whose every call goes through the mesh's governor.

``governed_tool(governor, transfer, action="payments.transfer", cost_arg="amount")``
is a ``FunctionTool`` for an ``AssistantAgent``: each call is decided by
:func:`agentmesh.policy.governed` (quarantine, ring capability, policy rules,
egress guard on URL arguments, rate limits, budgets) for the mesh agent that
makes it, and a refused call raises :class:`ToolCallRefused` (its text starts
with ``[agentmesh:refused``, so the agent sees why and a judge can count it);
the function never runs.

The calling agent is the one the runtime delivers to: it runs every handler
inside ``acting_as(<its host DID>)``. AutoGen runs a *sync* tool function in a
thread pool, which loses that context; so the decision is made on the event
loop and only the function body goes to the pool, with the caller's context.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

from autogen_core.tools import FunctionTool

from agentmesh.integrations.autogen.errors import ToolCallRefused
from agentmesh.policy.errors import PolicyDenied
from agentmesh.policy.governed import governed
from agentmesh.policy.governor import Governor


def _as_async(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as a coroutine function; a sync body runs in the pool with our context."""
    if inspect.iscoroutinefunction(function):
        return function

    async def body(*args: Any, **kwargs: Any) -> Any:
        context = contextvars.copy_context()
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, context.run, call)

    functools.update_wrapper(body, function)
    return body


def governed_tool(
    governor: Governor,
    function: Callable[..., Any],
    *,
    action: str | None = None,
    name: str | None = None,
    description: str | None = None,
    resource_arg: str | None = None,
    url_args: tuple[str, ...] = (),
    tokens_arg: str | None = None,
    cost_arg: str | None = None,
) -> FunctionTool:
    """A ``FunctionTool`` for ``function`` whose calls the governor decides first.

    Args:
        governor: the governor of the process that runs the agent.
        function: the tool's function (sync or async, typed parameters as for
            ``FunctionTool``).
        action: the action the policy sees (default: the tool's name).
        name: the tool's name for the model (default: the function's name).
        description: for the model (default: the function's docstring, else its name).
        resource_arg, url_args, tokens_arg, cost_arg: see :func:`agentmesh.policy.governed`.

    Raises (from a call):
        ToolCallRefused: the governor refused; ``denial_code`` says which check.
    """
    tool_name = name or function.__name__
    checked = governed(
        governor,
        action or tool_name,
        resource_arg=resource_arg,
        url_args=url_args,
        tokens_arg=tokens_arg,
        cost_arg=cost_arg,
    )(_as_async(function))

    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await checked(*args, **kwargs)
        except ToolCallRefused:
            raise
        except PolicyDenied as denied:
            raise ToolCallRefused(denied) from denied

    functools.update_wrapper(call, function)
    text = description or inspect.getdoc(function) or tool_name
    return FunctionTool(call, description=text, name=tool_name)


__all__ = ["governed_tool"]
