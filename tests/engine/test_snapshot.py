"""Snapshot codec: round trips of random sessions, clear errors on garbage (no services)."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import SnapshotError
from engine.session import DoctorSession, SessionSpec
from engine.shard import Policy
from engine.snapshot import decode_rules, decode_session, encode_rules, encode_session


def build(capacity, fee, ops):
    spec = SessionSpec(
        id="h9-2026-12-01-07",
        hospital_id="h9",
        department_id="d",
        doctor_id="doc",
        date="2026-12-01",
        period="PM",
        capacity=capacity,
        first_slot_minute=13 * 60,
        slot_minutes=6,
        fee=fee,
        opens_at=1.5,
        closes_at=99.0,
    )
    s = DoctorSession(spec)
    for n, (patient, release) in enumerate(ops):
        if release and s.count:
            s.release(patient % s.count)
        elif s.free:
            s.take(patient, -n, 1_700_000_000.0, 900)  # a new request each time, as a shard does
    return s


def same(a: DoctorSession, b: DoctorSession):
    assert a.spec == b.spec and a.suspended == b.suspended
    assert (a.bookings, a.holders) == (b.bookings, b.holders)
    assert (a.free, a.held, a.booked, a.ended) == (b.free, b.held, b.booked, b.ended)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 60),
    fee=st.sampled_from([0, 1500]),
    ops=st.lists(st.tuples(st.integers(0, 2**62), st.booleans()), max_size=80),
)
def test_session_round_trip(capacity, fee, ops):
    s = build(capacity, fee, ops)
    same(s, decode_session(encode_session(s)))


def test_full_30_slot_session_is_compact():
    s = build(30, 0, [(10_000_000 + p, False) for p in range(30)])
    assert len(encode_session(s)) < 1024


GOOD = encode_session(build(5, 0, [(1, False), (2, False)]))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "corrupt"),
        (b"\xc1garbage", "corrupt"),
        (GOOD[:-5], "corrupt"),
        (msgpack.packb({"v": 1}), "not a msgpack array"),
        (msgpack.packb([99, "x"]), "unknown snapshot version 99"),
        (msgpack.packb([1, "x", "h"]), "expected 15 fields"),
        (GOOD.replace(b"2026-12-01", b"2026-12-0\xff"), "corrupt"),
    ],
)
def test_garbage_gives_a_clear_error(raw, reason):
    with pytest.raises(SnapshotError, match=reason) as info:
        decode_session(raw, "key se:{h:d}:s:x")
    assert "key se:{h:d}:s:x" in str(info.value)


def test_slot_held_twice_is_refused():
    fields = msgpack.unpackb(GOOD)
    other = b"".join(x.to_bytes(8, "little") for x in (99, 5, 1 | 2 << 16))
    fields[14] = fields[14][:24] + other  # both bookings claim slot 1
    with pytest.raises(SnapshotError, match="held twice"):
        decode_session(msgpack.packb(fields, use_bin_type=True))


def test_rules_round_trip_and_garbage():
    policy = Policy(3, 2, 600)
    assert decode_rules(encode_rules(policy, {5: 123.5})) == (policy, {5: 123.5})
    with pytest.raises(SnapshotError):
        decode_rules(msgpack.packb([1, [0, 1, 1], {}]))
    with pytest.raises(SnapshotError):
        decode_rules(b"\x00\x01")


def _fields():
    return msgpack.unpackb(GOOD)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.__setitem__(7, "5"), "capacity is not an integer"),
        (lambda f: f.__setitem__(11, float("nan")), "opens_at is not a finite number"),
        (lambda f: f.__setitem__(13, 1), "suspended is not a boolean"),
        (
            lambda f: f.__setitem__(14, f[14][:16] + (9 << 16 | 1).to_bytes(8, "little")),
            "has state 9",
        ),
        (
            lambda f: f.__setitem__(
                14, f[14][:24] + f[14][:16] + (2 << 16 | 2).to_bytes(8, "little")
            ),
            "booked twice",
        ),
    ],
)
def test_inconsistent_snapshots_are_refused(change, reason):
    fields = _fields()
    change(fields)
    with pytest.raises(SnapshotError, match=reason):
        decode_session(msgpack.packb(fields, use_bin_type=True))
