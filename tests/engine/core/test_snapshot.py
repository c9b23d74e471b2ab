"""Snapshot codec: round trips of random sessions, clear errors on garbage (no services)."""

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.policy import NO_SHOW, SAME_DAY_CANCEL, BanRule, FeeTier, Policy
from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    EXPIRED_STATE,
    HELD_STATE,
    NO_SHOW_STATE,
    OCCUPYING,
    REVOKED_STATE,
    DoctorSession,
    Extra,
)
from engine.core.snapshot import (
    SESSION_FIELDS,
    decode_rules,
    decode_session,
    encode_rules,
    encode_session,
)
from engine.errors import SnapshotError
from tests import helpers

NOW = 1_700_000_000.0
# field positions in a session snapshot
CAPACITY, OPENS_AT, STARTS_AT, SUSPENDED, SWEPT, BOOKINGS, WAITLIST = 7, 11, 13, 14, 15, 16, 17


def build(capacity, fee, ops, starts_at=None):
    spec = helpers.spec(
        id="h9-2026-12-01-07",
        hospital_id="h9",
        department_id="d",
        doctor_id="doc",
        period="PM",
        capacity=capacity,
        first_slot_minute=13 * 60,
        slot_minutes=6,
        fee=fee,
        opens_at=1.5,
        closes_at=99.0,
        starts_at=starts_at,
    )
    s = DoctorSession(spec)
    for n, (patient, action) in enumerate(ops):
        target = patient % s.count if s.count else -1
        state = s.booking(target)[2] if target >= 0 else 0
        if action == "cancel" and state in OCCUPYING:
            s.move(target, (CANCELLED_STATE, EXPIRED_STATE, REVOKED_STATE)[n % 3], NOW + n)
        elif action == "pay" and state == HELD_STATE:
            s.move(target, BOOKED_STATE, NOW + n, Extra(code=patient % 99_999_999 + 1, paid=True))
        elif action == "no_show" and state == BOOKED_STATE:
            s.move(target, NO_SHOW_STATE, NOW + n, Extra(refunded=fee, paid=fee > 0))
        elif action == "wait":
            s.join_waitlist(patient, n)
        elif action == "take" and s.free:
            # a new request each time, as a shard does
            s.take(patient, -n, NOW, 900, patient % 99_999_999 + 1)
    return s


def same(a: DoctorSession, b: DoctorSession):
    assert a.spec == b.spec
    assert (a.suspended, a.swept) == (b.suspended, b.swept)
    assert (a.bookings, a.holders, a.waitlist) == (b.bookings, b.holders, b.waitlist)
    assert (a.free, a.held, a.booked, a.ended) == (b.free, b.held, b.booked, b.ended)
    assert [a.info(n) for n in range(a.count)] == [b.info(n) for n in range(b.count)]


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 60),
    fee=st.sampled_from([0, 1500]),
    ops=st.lists(
        st.tuples(
            st.integers(0, 2**62), st.sampled_from(["take", "cancel", "pay", "no_show", "wait"])
        ),
        max_size=80,
    ),
    flags=st.tuples(st.booleans(), st.booleans()),
    starts_at=st.none() | st.floats(0, 2e9),
)
def test_session_round_trip(capacity, fee, ops, flags, starts_at):
    s = build(capacity, fee, ops, starts_at)
    s.suspended, s.swept = flags
    same(s, decode_session(encode_session(s)))


def test_full_30_slot_session_is_compact():
    s = build(30, 0, [(10_000_000 + p, "take") for p in range(30)])
    assert len(encode_session(s)) < 1100  # 30 × 32 bytes of bookings, plus the catalog facts


GOOD = encode_session(build(5, 0, [(1, "take"), (2, "take")]))


def word(x: int) -> bytes:
    return x.to_bytes(8, "little", signed=True)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "corrupt"),
        (b"\xc1garbage", "corrupt"),
        (GOOD[:-5], "corrupt"),
        (msgpack.packb({"v": 1}), "not a msgpack array"),
        (msgpack.packb([99, "x"]), "unknown snapshot version 99"),
        (msgpack.packb([1, "x", "h"]), "unknown snapshot version 1"),  # the 3-word format
        (msgpack.packb([2, "x", "h"]), "unknown snapshot version 2"),  # v2 has 18 fields
        (msgpack.packb([3, "x", "h"]), f"expected {SESSION_FIELDS} fields, got 3"),
        (GOOD.replace(b"2026-12-01", b"2026-12-0\xff"), "corrupt"),
    ],
)
def test_garbage_gives_a_clear_error(raw, reason):
    with pytest.raises(SnapshotError, match=reason) as info:
        decode_session(raw, "key se:{h:d}:s:x")
    assert "key se:{h:d}:s:x" in str(info.value)


def test_slot_held_twice_is_refused():
    fields = msgpack.unpackb(GOOD)
    other = word(99) + word(5) + word(1 | BOOKED_STATE << 16) + word(0)
    fields[BOOKINGS] = fields[BOOKINGS][:32] + other  # both bookings claim slot 1
    with pytest.raises(SnapshotError, match="held twice"):
        decode_session(msgpack.packb(fields, use_bin_type=True))


def _fields():
    return msgpack.unpackb(GOOD)


def _set(index, value):
    return lambda f: f.__setitem__(index, value)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_set(CAPACITY, "5"), "capacity is not an integer"),
        (_set(OPENS_AT, float("nan")), "opens_at is not a finite number"),
        (_set(STARTS_AT, math.inf), "starts_at is not a finite number"),
        (_set(SUSPENDED, 1), "suspended or swept is not a boolean"),
        (_set(SWEPT, None), "suspended or swept is not a boolean"),
        (_set(WAITLIST, [1, 2]), "not bytes"),
        (_set(WAITLIST, word(1)), "waitlist words are not pairs"),
        (_set(BOOKINGS, word(1) * 3), "not a multiple of 4"),
        (_set(BOOKINGS, word(1) * 4 + b"\x00"), "whole number of int64"),
        (
            lambda f: f.__setitem__(
                BOOKINGS, f[BOOKINGS][:16] + word(9 << 16 | 1) + f[BOOKINGS][24:32]
            ),
            "has state 9",
        ),
        (
            lambda f: f.__setitem__(
                BOOKINGS, f[BOOKINGS][:32] + f[BOOKINGS][:16] + word(BOOKED_STATE << 16 | 2) * 2
            ),
            "booked twice",
        ),
        (
            lambda f: f.__setitem__(
                BOOKINGS, f[BOOKINGS][:16] + word(BOOKED_STATE << 16 | 6) + f[BOOKINGS][24:32]
            ),
            "out of range",
        ),
    ],
)
def test_inconsistent_snapshots_are_refused(change, reason):
    fields = _fields()
    change(fields)
    with pytest.raises(SnapshotError, match=reason):
        decode_session(msgpack.packb(fields, use_bin_type=True))


@pytest.mark.parametrize(
    "policy",
    [
        Policy(),
        Policy(3, 2, 600),
        Policy(
            fee_tiers=(FeeTier(1440, 0), FeeTier(120, 20), FeeTier(0, 50)),
            ban_rules=(BanRule(NO_SHOW, 3, 365), BanRule(SAME_DAY_CANCEL, 2, 90)),
            ban_days=(7,),
            ban_scope="platform",
            no_show_refund=False,
            release_at="07:30",
            cancel_until="23:59",
            cancel_days_before=0,
        ),
    ],
)
def test_rules_round_trip(policy):
    assert decode_rules(encode_rules(policy)) == policy


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01",
        msgpack.packb([1, [0, 1, 1], {}]),  # version 1, with a day limit of 0
        msgpack.packb([2, [1, 2]]),
        msgpack.packb([2, {"hospital_day_limit": 2}, {}]),
        msgpack.packb([2, {"bogus": 1}]),
        msgpack.packb([2, {"hold_seconds": "900"}]),
        msgpack.packb([2, {"fee_tiers": []}]),
        msgpack.packb([2, {"fee_tiers": [{"minutes_before": 10}]}]),
        msgpack.packb([2, {"ban_rules": [{"kind": "late", "count": 1, "window_days": 1}]}]),
    ],
)
def test_rules_garbage_gives_a_clear_error(raw):
    with pytest.raises(SnapshotError, match="corrupt policy"):
        decode_rules(raw)
