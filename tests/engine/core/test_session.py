"""The doctor-session on its own: slots, statuses, holds, state moves, the waitlist and the
packed words (no services)."""

from array import array

import pytest

from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    CHECKED_IN_STATE,
    CLOSED,
    ENDED_STATES,
    EXPIRED_STATE,
    MAX_FEE,
    NO_SHOW_STATE,
    OCCUPYING,
    OPEN,
    REVOKED_STATE,
    SCHEDULED,
    SOLD_OUT,
    STATE_NAMES,
    SUSPENDED,
    DoctorSession,
    Extra,
    format_code,
    pack_meta,
    unpack_meta,
)
from engine.outcomes import Booked, Closed, NotOpen, SoldOut, Suspended
from tests import helpers

CODE = 12_345_678


def spec(**kw):
    return helpers.spec(**{"opens_at": 100.0, "closes_at": 200.0, **kw})


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
        s.take(p, p, 150.0, 60, CODE)
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


def test_slots_go_lowest_first_and_a_cancel_returns_exactly_that_slot():
    s = DoctorSession(spec())
    answers = [s.take(p, p, 150.0, 60, CODE + p) for p in range(3)]
    assert [a.slot_no for a in answers] == [1, 2, 3]
    assert [a.booking_id for a in answers] == ["s1.0", "s1.1", "s1.2"]
    assert [a.verification_code for a in answers] == ["12345678", "12345679", "12345680"]
    assert s.free == 0
    s.move(1, CANCELLED_STATE, 160.0)
    assert (s.free, s.booked, s.ended, s.version) == (1, 2, 1, 4)
    assert s.booking(1) == (1, 2, CANCELLED_STATE, 160)
    again = s.take(9, 9, 170.0, 60, CODE)
    assert (again.slot_no, again.booking_id, s.booking(3)[1]) == (2, "s1.3", 2)


@pytest.mark.parametrize(
    ("state", "frees"),
    [
        (CHECKED_IN_STATE, False),
        (NO_SHOW_STATE, False),
        (CANCELLED_STATE, True),
        (EXPIRED_STATE, True),
        (REVOKED_STATE, True),
    ],
)
def test_only_ended_states_give_the_slot_back(state, frees):
    s = DoctorSession(spec())
    s.take(1, 1, 150.0, 60, CODE)
    s.move(0, state, 160.0)
    assert s.free == (3 if frees else 2)
    assert s.live_bookings() == ([] if frees else [(0, 1, 1)])
    assert s.in_state(state) == ([] if frees else [0])
    assert s.extra(0).code == CODE  # a move without ``extra`` keeps the fourth word


def test_fee_means_hold_with_expiry_and_no_code_until_paid():
    s = DoctorSession(spec(fee=500))
    answer = s.take(1, 1, 150.0, 60, CODE)
    assert isinstance(answer, Booked)
    assert (answer.status, answer.hold_expires_at, answer.verification_code) == (
        "held",
        210.0,
        None,
    )
    assert s.extra(0) == Extra()
    assert s.answer(0, repeat=True) == Booked("s1.0", "s1", 1, "08:00", "held", 210.0, True)
    assert (s.held, s.booked) == (1, 0)
    assert s.expired_holds(209.0) == []
    assert s.expired_holds(210.0) == [0]
    s.move(0, BOOKED_STATE, 180.0, Extra(code=42, paid=True))
    assert (s.held, s.booked, s.expired_holds(1e9)) == (0, 1, [])
    assert s.answer(0, repeat=True).verification_code == "00000042"
    info = s.info(0)
    assert (info.status, info.paid, info.fee, info.changed_at) == ("booked", True, 500, 180.0)


@pytest.mark.parametrize(
    ("state", "status", "by"),
    [
        (CANCELLED_STATE, "cancelled", "patient"),
        (REVOKED_STATE, "cancelled", "hospital"),
        (EXPIRED_STATE, "expired", None),
        (NO_SHOW_STATE, "no_show", None),
        (CHECKED_IN_STATE, "checked_in", None),
    ],
)
def test_info_names_the_state_and_who_cancelled(state, status, by):
    s = DoctorSession(spec())
    s.take(1, 1, 150.0, 60, CODE)
    s.move(0, state, 160.0)
    info = s.info(0)
    assert (info.status, info.cancelled_by, info.changed_at) == (status, by, 160.0)


def test_state_sets_partition_the_states():
    assert set(STATE_NAMES) == OCCUPYING | ENDED_STATES
    assert not OCCUPYING & ENDED_STATES


@pytest.mark.parametrize("state", sorted(STATE_NAMES))
@pytest.mark.parametrize("slot_no", [1, 65535])
@pytest.mark.parametrize("at", [0, 1_800_000_000, 2**38])
def test_meta_round_trip(state, slot_no, at):
    assert unpack_meta(pack_meta(slot_no, state, at)) == (slot_no, state, at)


@pytest.mark.parametrize(
    "extra",
    [
        Extra(),
        Extra(code=99_999_999, tries=15, refunded=MAX_FEE, paid=True, warned=True),
        Extra(code=1),
        Extra(tries=3),
        Extra(refunded=1),
        Extra(paid=True),
        Extra(warned=True),
    ],
)
def test_extra_round_trip(extra):
    word = extra.pack()
    assert 0 <= word < 2**63
    assert Extra.unpack(word) == extra


@pytest.mark.parametrize(
    ("code", "shown"), [(1, "00000001"), (1234, "00001234"), (99_999_999, "99999999")]
)
def test_codes_keep_their_leading_zeros(code, shown):
    assert format_code(code) == shown


def test_waitlist_keeps_join_order():
    s = DoctorSession(spec())
    assert [s.join_waitlist(p, 10 + p) for p in (5, 3, 8)] == [1, 2, 3]
    assert [s.waitlist_position(p) for p in (5, 3, 8, 9)] == [1, 2, 3, 0]
    assert s.leave_waitlist(3) is True
    assert s.leave_waitlist(3) is False
    assert s.waitlist == array("q", [5, 15, 8, 18])
    assert (s.next_waiting(), s.next_waiting(), s.next_waiting()) == ((5, 15), (8, 18), None)


def test_restore_rebuilds_slots_and_counters():
    s = DoctorSession(spec(fee=100))
    for p in range(3):
        s.take(p, p, 150.0, 60, CODE)
    s.move(0, BOOKED_STATE, 151.0, Extra(code=7, paid=True))
    s.move(1, EXPIRED_STATE, 210.0)
    s.take(4, 4, 211.0, 60, CODE)
    s.join_waitlist(9, 9)
    r = DoctorSession(s.spec)
    r.restore(array("q", s.bookings), array("q", s.waitlist))
    assert (r.holders, r.free, r.held, r.booked, r.ended) == (
        s.holders,
        s.free,
        s.held,
        s.booked,
        s.ended,
    )
    assert r.waitlist == s.waitlist


@pytest.mark.parametrize(
    "bad",
    [
        dict(capacity=0),
        dict(capacity=1001),
        dict(first_slot_minute=1440),
        dict(fee=-1),
        dict(fee=MAX_FEE + 1),
        dict(slot_minutes=-1),
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


@pytest.mark.parametrize(
    ("starts_at", "closes_at", "visit_at", "ends_at"),
    [
        (1000.0, 200.0, 1000.0, 1000.0 + 3 * 600),
        # no starts_at: the date and the first slot, read as UTC (2026-12-01 08:00Z)
        (None, 200.0, 1_796_112_000.0, 1_796_112_000.0 + 3 * 600),
        (None, None, 1_796_112_000.0, 1_796_112_000.0 + 3 * 600),
    ],
)
def test_visit_and_end_times(starts_at, closes_at, visit_at, ends_at):
    s = spec(starts_at=starts_at, closes_at=closes_at)
    assert (s.visit_at, s.ends_at, s.slot_at(2)) == (visit_at, ends_at, visit_at + 600)
