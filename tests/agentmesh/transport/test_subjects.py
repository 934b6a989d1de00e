"""Subject rules: examples plus properties checked against a regex reference model."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agentmesh.errors import InvalidSubject, TransportError
from agentmesh.transport.subjects import (
    normalize_headers,
    subject_matches,
    subjects_overlap,
    tokens_match,
    validate_kv_key,
    validate_name,
    validate_queue,
    validate_subject,
)

# A small alphabet makes collisions (and so matches) frequent.
tokens = st.text(alphabet="abc_-0", min_size=1, max_size=3)
subjects = st.lists(tokens, min_size=1, max_size=6).map(".".join)


@st.composite
def patterns_from(draw: st.DrawFn, subject: str) -> str:
    """A pattern derived from ``subject``: some tokens starred, maybe a ``>`` tail."""
    parts = subject.split(".")
    out = [("*" if draw(st.booleans()) else t) for t in parts]
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(out) - 1))
        out = [*out[:cut], ">"]
    return ".".join(out)


@st.composite
def any_patterns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.one_of(tokens, st.just("*")), min_size=1, max_size=5))
    if draw(st.booleans()):
        parts.append(">")
    return ".".join(parts)


def reference_match(pattern: str, subject: str) -> bool:
    """The textbook definition, as a regular expression over the whole subject."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.fullmatch(r"\.".join(parts), subject) is not None


@given(subjects)
def test_generated_subjects_are_valid_and_match_themselves(subject: str) -> None:
    validate_subject(subject, allow_wildcards=False)
    assert subject_matches(subject, subject)
    assert subject_matches(">", subject)


@given(subjects, st.data())
def test_derived_patterns_match_their_subject(subject: str, data: st.DataObject) -> None:
    pattern = data.draw(patterns_from(subject))
    assert subject_matches(pattern, subject)


@given(any_patterns(), subjects)
def test_matching_agrees_with_the_reference_model(pattern: str, subject: str) -> None:
    assert subject_matches(pattern, subject) == reference_match(pattern, subject)
    assert tokens_match(pattern.split("."), subject.split(".")) == reference_match(pattern, subject)


@given(subjects, subjects)
def test_literal_patterns_match_only_equal_subjects(a: str, b: str) -> None:
    assert subject_matches(a, b) == (a == b)


@given(subjects, tokens)
def test_star_matches_exactly_one_more_token(prefix: str, extra: str) -> None:
    assert subject_matches(f"{prefix}.*", f"{prefix}.{extra}")
    assert not subject_matches(f"{prefix}.*", prefix)
    assert not subject_matches(f"{prefix}.*", f"{prefix}.{extra}.{extra}")


@given(subjects, st.lists(tokens, min_size=1, max_size=4))
def test_tail_matches_one_or_more_tokens(prefix: str, rest: list[str]) -> None:
    assert subject_matches(f"{prefix}.>", ".".join([prefix, *rest]))
    assert not subject_matches(f"{prefix}.>", prefix)


@given(any_patterns(), any_patterns(), subjects)
def test_overlap_is_symmetric_and_sound(a: str, b: str, subject: str) -> None:
    assert subjects_overlap(a, b) == subjects_overlap(b, a)
    if subject_matches(a, subject) and subject_matches(b, subject):
        assert subjects_overlap(a, b)


@given(subjects, st.data())
def test_overlap_finds_patterns_sharing_a_subject(subject: str, data: st.DataObject) -> None:
    a = data.draw(patterns_from(subject))
    b = data.draw(patterns_from(subject))
    assert subjects_overlap(a, b)


@given(subjects, st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x7f"]), st.data())
def test_whitespace_and_control_characters_are_rejected(
    subject: str, bad: str, data: st.DataObject
) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(subject)))
    with pytest.raises(InvalidSubject):
        validate_subject(subject[:at] + bad + subject[at:], allow_wildcards=True)


@given(subjects, st.data())
def test_empty_tokens_are_rejected(subject: str, data: st.DataObject) -> None:
    parts = subject.split(".")
    at = data.draw(st.integers(min_value=0, max_value=len(parts)))
    broken = ".".join([*parts[:at], "", *parts[at:]])
    assume(broken != subject)
    with pytest.raises(InvalidSubject):
        validate_subject(broken, allow_wildcards=True)


@given(any_patterns())
def test_wildcards_only_where_allowed(pattern: str) -> None:
    validate_subject(pattern, allow_wildcards=True)
    if "*" in pattern.split(".") or pattern.endswith(">"):
        with pytest.raises(InvalidSubject):
            validate_subject(pattern, allow_wildcards=False)


@pytest.mark.parametrize("pattern", ["a.>.b", ">.a", "a*", "*a", "a.b>", ">>", "a.**", "a.*>"])
def test_malformed_wildcards(pattern: str) -> None:
    with pytest.raises(InvalidSubject):
        validate_subject(pattern, allow_wildcards=True)


def test_subject_matches_rejects_wildcards_in_the_subject() -> None:
    with pytest.raises(InvalidSubject):
        subject_matches("a.*", "a.*")


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a.>", "a.b", True),
        ("a.>", "a", False),
        ("a.*", "a.b.c", False),
        ("a.*.c", "a.b.*", True),
        ("a.b", "a.c", False),
        (">", "x.y.z", True),
    ],
)
def test_overlap_examples(a: str, b: str, expected: bool) -> None:
    assert subjects_overlap(a, b) is expected


def test_kv_keys_names_and_queues() -> None:
    validate_kv_key("agents.did_key_z6Mk-abc=")
    validate_kv_key("agents.*", allow_wildcards=True)
    validate_kv_key(">", allow_wildcards=True)
    for bad in ("", "a..b", "a/b", "a:b", "ü", "a.*"):
        with pytest.raises(InvalidSubject):
            validate_kv_key(bad)
    validate_name("KV_bucket-1")
    for bad in ("", "a.b", "a b", "a*", "a>"):
        with pytest.raises(InvalidSubject):
            validate_name(bad)
    validate_queue("workers.v1")
    for bad in ("", "two words", "tab\t"):
        with pytest.raises(InvalidSubject):
            validate_queue(bad)


def test_headers_are_normalized_like_nats() -> None:
    assert normalize_headers(None) == {}
    assert normalize_headers({"X-Id": "  padded  "}) == {"X-Id": "padded"}
    for bad in ({"": "v"}, {"a b": "v"}, {"X": "a\nb"}, {"X": "a\rb"}, {"ü": "v"}):
        with pytest.raises(TransportError):
            normalize_headers(bad)


def test_bad_char_scan_is_exactly_whitespace_and_control_characters() -> None:
    """The regex in ``_bad_char`` must agree with the plain definition on every code point."""
    import sys

    from agentmesh.transport.subjects import _bad_char

    disagreements = [
        code
        for code in range(sys.maxunicode + 1)
        if _bad_char(chr(code)) != (chr(code).isspace() or code < 0x20 or code == 0x7F)
    ]
    assert disagreements == []
    assert _bad_char("ok.token") is False
    assert _bad_char("tab\there") is True
