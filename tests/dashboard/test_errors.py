"""The dashboard's errors: one root, a drawn tree that matches, codes nobody else uses."""

from __future__ import annotations

import re

import agentmesh.dashboard.errors as dashboard_errors
from agentmesh.observability.status import StatusReportInvalid
from iatp.errors import AgentMeshError
from tests.test_public_api import _all_error_classes, _drawn_tree, _exception_classes


def test_the_drawn_tree_matches_the_classes() -> None:
    nodes = _drawn_tree(dashboard_errors.__doc__ or "")
    drawn = {name for name, _ in nodes}
    classes = _exception_classes(dashboard_errors)
    assert {cls.__name__ for cls in classes} <= drawn
    for name, parent in nodes:
        if parent is None:
            assert name == "AgentMeshError"
            continue
        cls = getattr(dashboard_errors, name)
        assert cls.__bases__[0].__name__ == parent, f"{name} is drawn under {parent}"
    assert sorted(c.__name__ for c in classes) == sorted(dashboard_errors.__all__)


def test_codes_are_distinct_across_the_project() -> None:
    mine = [*_exception_classes(dashboard_errors), StatusReportInvalid]
    others = {vars(cls).get("code") for cls in _all_error_classes()}
    seen: set[str] = set()
    for cls in mine:
        assert issubclass(cls, AgentMeshError)
        code = vars(cls)["code"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code)
        assert code not in others, code
        assert code not in seen, code
        seen.add(code)
