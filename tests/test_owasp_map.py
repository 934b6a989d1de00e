"""docs/owasp-agentic.md: ten rows ASI01..ASI10, every claim linked to a test that exists.

The linked tests are found with :mod:`ast`, never imported, so a link to a test
module with heavy optional imports is checked as cheaply as any other.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "owasp-agentic.md"
RISK_IDS = [f"ASI{n:02d}" for n in range(1, 11)]
COLUMNS = 4  # risk | agentmesh does | agentmesh does not | proved by

# [`tests/path/test_file.py::test_name`](../tests/path/test_file.py); the name may be
# Class::method and may end in a parameter id: test_name[case].
LINK = re.compile(
    r"\[(?:`(?P<quoted>tests/[^`]+)`|(?P<plain>tests/(?:[^\[\]]|\[[^\[\]]*\])+))\]"
    r"\((?P<target>[^)\s]+)\)"
)
# Any markdown link into tests/: each one must have been read as a test link above.
INTO_TESTS = re.compile(r"\]\((?:\.\./)*tests/")


@dataclass(frozen=True)
class TestLink:
    node: str  # tests/path/test_file.py::name (pytest's node id)
    target: str  # where the markdown link points, relative to the document

    __test__ = False  # a data class, not a test class


@dataclass(frozen=True)
class Row:
    risk: str
    does: str
    does_not: str
    links: tuple[TestLink, ...]


def parse_rows(text: str) -> list[Row]:
    """The table rows whose first cell names a risk (``ASI..``), in document order."""
    rows: list[Row] = []
    for line in text.splitlines():
        if not line.startswith("| ASI"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == COLUMNS, f"{cells[0][:5]}: {len(cells)} cells, want {COLUMNS}"
        links = tuple(
            TestLink(match["quoted"] or match["plain"], match["target"])
            for match in LINK.finditer(line)
        )
        unread = len(INTO_TESTS.findall(line)) - len(links)
        assert unread == 0, f"{cells[0]}: {unread} link(s) into tests/ not named as a test"
        rows.append(Row(cells[0], cells[1], cells[2], links))
    return rows


def defined_tests(source: str) -> set[str]:
    """Test functions of a module, and test methods as ``Class::method``."""
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}::{item.name}")
    return names


def missing_tests(links: tuple[TestLink, ...], doc: Path, root: Path) -> list[str]:
    """What is wrong with each link; empty when every linked test exists."""
    problems: list[str] = []
    sources: dict[Path, set[str]] = {}
    for link in links:
        path, sep, name = link.node.partition("::")
        name = re.sub(r"\[[^\]]*\]$", "", name)  # a parameter id: the function is what exists
        if not sep or not name:
            problems.append(f"{link.node}: no test name after '::'")
            continue
        if (doc.parent / link.target).resolve() != (root / path).resolve():
            problems.append(f"{link.node}: the link points to {link.target}")
            continue
        file = root / path
        if not file.is_file():
            problems.append(f"{link.node}: no file {path}")
            continue
        if not name.split("::")[-1].startswith("test"):
            problems.append(f"{link.node}: pytest does not collect {name!r}")
            continue
        if file not in sources:
            sources[file] = defined_tests(file.read_text(encoding="utf-8"))
        if name not in sources[file]:
            problems.append(f"{link.node}: {name} is not defined in {path}")
    return problems


def doc_rows() -> list[Row]:
    return parse_rows(DOC.read_text(encoding="utf-8"))


def test_exactly_the_ten_risks_in_order() -> None:
    risks = [row.risk for row in doc_rows()]
    assert [risk.split()[0] for risk in risks] == RISK_IDS
    assert all(len(risk.split()) > 1 for risk in risks), "each risk is named, not only numbered"


def test_every_row_says_what_it_does_and_does_not_and_links_a_test() -> None:
    for row in doc_rows():
        assert row.does, f"{row.risk}: empty 'does'"
        assert row.does_not, f"{row.risk}: empty 'does not'"
        assert row.links, f"{row.risk}: no test link"


def test_every_linked_test_exists() -> None:
    links = tuple(link for row in doc_rows() for link in row.links)
    assert missing_tests(links, DOC, ROOT) == []


def test_the_document_names_the_owasp_version() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "OWASP Top 10 for Agentic Applications, version 2026" in text


def test_the_checker_reports_made_up_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    tests = tmp_path / "tests"
    (tests / "sub").mkdir(parents=True)
    (tests / "sub" / "test_real.py").write_text(
        "def test_here():\n    pass\n\n"
        "async def test_async():\n    pass\n\n"
        "def helper():\n    pass\n\n"
        "class TestGroup:\n    def test_method(self):\n        pass\n",
        encoding="utf-8",
    )
    doc = tmp_path / "docs" / "map.md"
    target = "../tests/sub/test_real.py"
    row = (
        "| ASI01 Example | does | does not | "
        f"[`tests/sub/test_real.py::test_here`]({target}), "
        f"[tests/sub/test_real.py::test_async[case]]({target}), "
        f"[`tests/sub/test_real.py::TestGroup::test_method`]({target}), "
        f"[`tests/sub/test_real.py::test_made_up`]({target}), "
        f"[`tests/sub/test_real.py::TestGroup::test_made_up`]({target}), "
        f"[`tests/sub/test_real.py::helper`]({target}), "
        "[`tests/sub/test_missing.py::test_here`](../tests/sub/test_missing.py), "
        f"[`tests/sub/test_other.py::test_here`]({target}), "
        f"[`tests/sub/test_real.py`]({target}) |"
    )
    [parsed] = parse_rows(row)
    assert len(parsed.links) == 9
    assert missing_tests(parsed.links, doc, tmp_path) == [
        "tests/sub/test_real.py::test_made_up: test_made_up is not defined in "
        "tests/sub/test_real.py",
        "tests/sub/test_real.py::TestGroup::test_made_up: TestGroup::test_made_up is not "
        "defined in tests/sub/test_real.py",
        "tests/sub/test_real.py::helper: pytest does not collect 'helper'",
        "tests/sub/test_missing.py::test_here: no file tests/sub/test_missing.py",
        "tests/sub/test_other.py::test_here: the link points to ../tests/sub/test_real.py",
        "tests/sub/test_real.py: no test name after '::'",
    ]


def test_the_parser_refuses_a_test_link_it_cannot_read() -> None:
    with pytest.raises(AssertionError, match="1 link"):
        parse_rows("| ASI01 x | a | b | [the test](../tests/test_x.py) |")


def test_the_parser_reads_cells_and_skips_other_lines() -> None:
    text = (
        "| risk | does | does not | proved by |\n|---|---|---|---|\n"
        "| ASI02 Tool Misuse |  | nothing | none |\nprose | ASI03\n"
    )
    [row] = parse_rows(text)
    assert (row.risk, row.does, row.does_not, row.links) == ("ASI02 Tool Misuse", "", "nothing", ())
