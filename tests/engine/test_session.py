"""The doctor-session on its own: slots, statuses, holds, release (no services)."""

import pytest

from engine.outcomes import Booked, Closed, NotOpen, SoldOut, Suspended
from engine.session import (
    BOOKED_STATE,
    CLOSED,
    ENDED_STATE,
    HELD_STATE,
    OPEN,
    SCHEDULED,
    SOLD_OUT,
    SUSPENDED,
    DoctorSession,
    SessionSpec,
    pack_meta,
    unpack_meta,
)


def spec(**kw):
    base = dict(
        id="s1",
        hospital_id="h1",
        department_id="d1",
        doctor_id="doc1",
        date="2026-12-01",
        period="AM",
        capacity=3,
        first_slot_minute=8 * 60,
        slot_minutes=10,
        fee=0,
        opens_at=100.0,
        closes_at=200.0,
    )
    base.update(kw)
    return SessionSpec(**base)


@pytest.mark.parametrize(
    ("now", "suspended", "taken", "status"),
    [
        (99.9, False, 0, SCHEDULED),
        (100.0, False, 0, OPEN),
        (150.0, False, 2, OPEN),
        (150.0, False, 3, SOLD_OUT),
        (200.0, False, 0, CLOSED),
        (200.0, False, 3, CLOSED),
        (50.0, True, 0, SUSPENDED),
        (150.0, True, 3, SUSPENDED),
    ],
)
def test_status(now, suspended, taken, status):
    s = DoctorSession(spec(), suspended=suspended)
    for p in range(taken):
        s.take(p, p, 150.0, 60)
    assert s.status(now) == status


def test_refusals_name_the_reason():
    s = DoctorSession(spec())
    assert s.refusal(SOLD_OUT) == SoldOut("s1")
    assert s.refusal(SCHEDULED) == NotOpen("s1", 100.0)
    assert s.refusal(CLOSED) == Closed("s1")
    assert s.refusal(SUSPENDED) == Suspended("s1")


@pytest.mark.parametrize(
    ("first", "minutes", "slot_no", "expected"),
    [
        (480, 10, 1, "08:00"),
        (480, 10, 7, "09:00"),
        (13 * 60 + 30, 15, 3, "14:00"),
        (0, 0, 5, "00:00"),
    ],
)
def test_slot_time(first, minutes, slot_no, expected):
    assert (
        DoctorSession(spec(first_slot_minute=first, slot_minutes=minutes)).slot_time(slot_no)
        == expected
    )


def test_slots_go_lowest_first_and_release_returns_exactly_that_slot():
    s = DoctorSession(spec())
    answers = [s.take(p, p, 150.0, 60) for p in range(3)]
    assert [a.slot_no for a in answers] == [1, 2, 3]
    assert [a.booking_id for a in answers] == ["s1.0", "s1.1", "s1.2"]
    assert s.free == 0
    assert s.release(1) is True
    assert s.release(1) is False  # already ended: nothing changes
    assert (s.free, s.booked, s.ended) == (1, 2, 1)
    again = s.take(9, 9, 150.0, 60)
    assert (again.slot_no, again.booking_id, s.booking(3)[1]) == (2, "s1.3", 2)


def test_fee_means_hold_with_expiry_and_expired_holds_are_found():
    s = DoctorSession(spec(fee=500))
    answer = s.take(1, 1, 150.0, 60)
    assert isinstance(answer, Booked)
    assert (answer.status, answer.hold_expires_at) == ("held", 210.0)
    assert s.answer(0, repeat=True) == Booked("s1.0", "s1", 1, "08:00", "held", 210.0, True)
    assert (s.held, s.booked) == (1, 0)
    assert s.expired_holds(209.0) == []
    assert s.expired_holds(210.0) == [0]


@pytest.mark.parametrize("state", [HELD_STATE, BOOKED_STATE, ENDED_STATE])
@pytest.mark.parametrize("slot_no", [1, 65535])
def test_meta_round_trip(state, slot_no):
    assert unpack_meta(pack_meta(slot_no, state, 1_800_000_000)) == (slot_no, state, 1_800_000_000)


@pytest.mark.parametrize(
    "bad",
    [
        dict(capacity=0),
        dict(capacity=1001),
        dict(first_slot_minute=1440),
        dict(fee=-1),
        dict(opens_at=300.0, closes_at=200.0),
    ],
)
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError):
        spec(**bad)


@pytest.mark.parametrize(
    "bad",
    [
        dict(id=""),
        dict(id="a/b"),
        dict(hospital_id="h}1"),
        dict(doctor_id="x y"),
        dict(date="2026-1-1"),
        dict(department_id="d" * 81),
    ],
)
def test_ids_must_be_safe_in_urls_and_keys(bad):
    with pytest.raises(ValueError):
        spec(**bad)
