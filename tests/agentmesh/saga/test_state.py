"""The pure core: definitions, record encoding and signatures, the state machine."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmesh.saga import (
    IllegalTransition,
    SagaDefinition,
    SagaDefinitionError,
    SagaLogCorrupt,
    SagaState,
    SagaStatus,
)
from agentmesh.saga.records import (
    RecordKind,
    SagaRecord,
    decode_record,
    encode_record,
    open_record,
    seal_record,
)
from agentmesh.saga.state import BeginCompensation, Compensate, Finish, RunSteps
from iatp.identity import AgentIdentity

COORD = AgentIdentity.from_seed(bytes(32))
A, B, C = (AgentIdentity.from_seed(bytes([i]) * 32).did for i in (1, 2, 3))

DEFINITION = {
    "name": "order",
    "steps": [
        {
            "name": "reserve",
            "capability": "inventory",
            "request": {"action": "reserve"},
            "compensation": {"action": "release"},
        },
        {
            "parallel": [
                {
                    "name": "charge",
                    "capability": "payment",
                    "request": {"action": "charge"},
                    "compensation": {"action": "refund"},
                },
                {"name": "notify", "agent": C, "request": {"action": "notify"}},
            ]
        },
        {"name": "ship", "capability": "shipping", "request": {"action": "ship"}},
    ],
}


class Script:
    """Builds records in order for one saga."""

    def __init__(self) -> None:
        self.state = SagaState("s")

    def record(
        self,
        kind: RecordKind,
        step: str | None = None,
        agent: str | None = None,
        attempt: int = 0,
        **data: Any,
    ) -> SagaRecord:
        return SagaRecord(
            "s", self.state.next_number, kind, 1, COORD.did, step, agent, attempt, data
        )

    def do(
        self,
        kind: RecordKind,
        step: str | None = None,
        agent: str | None = None,
        attempt: int = 0,
        **data: Any,
    ) -> None:
        self.state.apply(self.record(kind, step, agent, attempt, **data))


def started() -> Script:
    script = Script()
    script.do(RecordKind.SAGA_STARTED, definition=DEFINITION)
    return script


# -- definitions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutation", "needle"),
    [
        (lambda d: d["steps"].append(d["steps"][0]), "used twice"),
        (lambda d: d["steps"][0].pop("capability"), "neither a capability nor an agent"),
        (lambda d: d["steps"][0].update(name="bad name!"), "name"),
        (lambda d: d["steps"][0].update(required_ring=7), "required_ring"),
        (lambda d: d["steps"][0].update(timeout_s=0), "timeout_s"),
        (lambda d: d["steps"][0].update(agent="did:web:nope"), "agent"),
        (lambda d: d.update(steps=[]), "steps"),
        (lambda d: d["steps"][0].update(surprise=1), "surprise"),
    ],
)
def test_bad_definitions_are_refused_with_a_reason(mutation: Any, needle: str) -> None:
    import copy

    data = copy.deepcopy(DEFINITION)
    mutation(data)
    with pytest.raises(SagaDefinitionError, match=needle) as caught:
        SagaDefinition.load(data)
    assert caught.value.code == "saga_invalid_definition"


def test_definition_groups_and_keys() -> None:
    definition = SagaDefinition.load(DEFINITION)
    assert [[s.name for s in g] for g in definition.groups()] == [
        ["reserve"],
        ["charge", "notify"],
        ["ship"],
    ]
    assert definition.step("charge").key_for("s9") == "s9.charge"
    assert definition.step("charge").retry.delay(3) == pytest.approx(0.2)


# -- records ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(list(RecordKind)),
    number=st.integers(0, 10**6),
    step=st.none() | st.text(min_size=1, max_size=10),
    attempt=st.integers(0, 50),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_record_encoding_round_trips_and_is_canonical(
    kind: RecordKind, number: int, step: str | None, attempt: int, data: dict[str, Any]
) -> None:
    record = SagaRecord("s1", number, kind, 123, COORD.did, step, A, attempt, data)
    encoded = encode_record(record)
    assert decode_record(encoded) == record
    reordered = SagaRecord(
        "s1", number, kind, 123, COORD.did, step, A, attempt, dict(reversed(list(data.items())))
    )
    assert encode_record(reordered) == encoded
    assert open_record(seal_record(record, COORD)) == record


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_opens_as_a_record(data: bytes) -> None:
    with pytest.raises(SagaLogCorrupt):
        open_record(data)


def test_forged_and_tampered_records_are_refused() -> None:
    record = SagaRecord("s1", 1, RecordKind.SAGA_COMPLETED, 5, COORD.did)
    sealed = seal_record(record, COORD)
    body, signature = msgpack.unpackb(sealed)
    tampered_body = body.replace(b"saga.completed", b"saga.compensa")  # same length? no matter
    with pytest.raises(SagaLogCorrupt):
        open_record(msgpack.packb([tampered_body, signature]))
    impostor = AgentIdentity.generate()
    forged = msgpack.packb([body, impostor.sign(b"agentmesh/1/saga-record\x00" + body)])
    with pytest.raises(SagaLogCorrupt, match="bad signature"):
        open_record(forged)
    with pytest.raises(SagaLogCorrupt, match="untrusted"):
        open_record(sealed, trusted=frozenset({impostor.did}))
    with pytest.raises(ValueError, match="sealed by the coordinator"):
        seal_record(record, impostor)


# -- state machine ---------------------------------------------------------------------------


def test_plan_follows_groups_and_compensates_in_reverse() -> None:
    script = started()
    assert script.state.plan() == RunSteps(("reserve",))
    script.do(RecordKind.STEP_STARTED, "reserve", A, 1)
    script.do(RecordKind.STEP_SUCCEEDED, "reserve", A, result={"r": 1})
    assert script.state.plan() == RunSteps(("charge", "notify"))
    script.do(RecordKind.STEP_STARTED, "charge", B, 1)
    script.do(RecordKind.STEP_STARTED, "notify", C, 1)
    script.do(RecordKind.STEP_SUCCEEDED, "charge", B, result={"c": 1})
    script.do(RecordKind.STEP_FAILED, "notify", C, code="declined")
    assert script.state.plan() == BeginCompensation("notify", "declined")
    script.do(RecordKind.SAGA_COMPENSATING, "notify")
    assert script.state.plan() == Compensate("charge", B)
    # Out of order: the reserve cannot be compensated before the charge.
    with pytest.raises(IllegalTransition, match="reverse order"):
        script.do(RecordKind.COMPENSATION_STARTED, "reserve", A, 1)
    script.do(RecordKind.COMPENSATION_STARTED, "charge", B, 1)
    script.do(RecordKind.COMPENSATION_SUCCEEDED, "charge", B)
    assert script.state.plan() == Compensate("reserve", A)
    script.do(RecordKind.COMPENSATION_STARTED, "reserve", A, 1)
    script.do(RecordKind.COMPENSATION_FAILED, "reserve", A, code="down")
    # One failed compensation: never "compensated".
    assert script.state.plan() == Finish(RecordKind.SAGA_NEEDS_ATTENTION)
    with pytest.raises(IllegalTransition):
        script.do(RecordKind.SAGA_COMPENSATED)
    script.do(RecordKind.SAGA_NEEDS_ATTENTION)
    assert script.state.status is SagaStatus.NEEDS_ATTENTION
    assert script.state.plan() is None
    with pytest.raises(IllegalTransition, match="ended"):
        script.do(RecordKind.STEP_STARTED, "ship", A, 1)


@pytest.mark.parametrize(
    ("setup", "kind", "step", "agent", "attempt", "needle"),
    [
        ([], RecordKind.STEP_STARTED, "ship", A, 1, "current group"),
        ([], RecordKind.STEP_SUCCEEDED, "reserve", A, 0, "not running"),
        ([], RecordKind.STEP_STARTED, "reserve", A, 2, "count up"),
        ([], RecordKind.SAGA_COMPLETED, None, None, 0, "next action"),
        ([], RecordKind.COMPENSATION_STARTED, "reserve", A, 1, "not compensating"),
        (
            [(RecordKind.STEP_STARTED, "reserve", A, 1)],
            RecordKind.STEP_STARTED,
            "reserve",
            B,
            1,
            "handed off",
        ),
        (
            [(RecordKind.STEP_STARTED, "reserve", A, 1)],
            RecordKind.STEP_SUCCEEDED,
            "reserve",
            B,
            0,
            "another agent",
        ),
        (
            [
                (RecordKind.STEP_STARTED, "reserve", A, 1),
                (RecordKind.STEP_HANDOFF, "reserve", A, 0),
            ],
            RecordKind.STEP_STARTED,
            "reserve",
            A,
            2,
            "handed off already",
        ),
        ([], RecordKind.SAGA_STARTED, None, None, 0, "started already"),
    ],
)
def test_illegal_transitions_are_refused_and_change_nothing(
    setup: list[tuple[RecordKind, str, str, int]],
    kind: RecordKind,
    step: str | None,
    agent: str | None,
    attempt: int,
    needle: str,
) -> None:
    script = started()
    for item in setup:
        data = {"in_doubt": False, "reason": "x"} if item[0] is RecordKind.STEP_HANDOFF else {}
        script.do(*item, **data)
    before = (script.state.next_number, len(script.state.records), script.state.status)
    extra = {"definition": DEFINITION} if kind is RecordKind.SAGA_STARTED else {}
    with pytest.raises(IllegalTransition, match=needle) as caught:
        script.do(kind, step, agent, attempt, **extra)
    assert caught.value.code == "saga_illegal_transition"
    assert (script.state.next_number, len(script.state.records), script.state.status) == before


def test_record_numbers_are_contiguous_and_duplicates_are_fenced() -> None:
    script = started()
    first = script.record(RecordKind.STEP_STARTED, "reserve", A, 1)
    script.state.apply(first)
    gap = SagaRecord("s", 9, RecordKind.STEP_SUCCEEDED, 1, COORD.did, "reserve", A)
    with pytest.raises(IllegalTransition, match="next record number"):
        script.state.apply(gap)
    # A second record numbered 2 (a racing replica's) is ignored when folding.
    rival = SagaRecord("s", 2, RecordKind.STEP_STARTED, 1, COORD.did, "reserve", B, 1)
    assert script.state.accept(rival) is False
    assert script.state.fenced == 1
    assert script.state.steps["reserve"].agent == A


def test_in_doubt_handoff_becomes_a_compensation_target() -> None:
    script = started()
    script.do(RecordKind.STEP_STARTED, "reserve", A, 1)
    script.do(RecordKind.STEP_ATTEMPT_FAILED, "reserve", A, 1, code="timeout")
    assert script.state.steps["reserve"].in_doubt(A)
    script.do(RecordKind.STEP_HANDOFF, "reserve", A, reason="timeout", in_doubt=True)
    script.do(RecordKind.STEP_STARTED, "reserve", B, 1)
    script.do(RecordKind.STEP_ATTEMPT_FAILED, "reserve", B, 1, code="no_responders")
    assert not script.state.steps["reserve"].in_doubt(B)
    script.do(RecordKind.STEP_FAILED, "reserve", B, code="no_responders", in_doubt=False)
    script.do(RecordKind.SAGA_COMPENSATING, "reserve")
    assert script.state.plan() == Compensate("reserve", A)  # the abandoned attempt
