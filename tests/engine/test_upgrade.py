"""Snapshots written before the lifecycle (version 1) still load, with nothing lost."""

from array import array

import msgpack

from engine.session import pack_meta
from engine.snapshot import SESSION_VERSION, decode_rules, decode_session, encode_session


def test_a_version_1_session_loads_as_version_2():
    words = array(
        "q",
        [
            7,
            11,
            pack_meta(1, 2, 0),
            8,
            12,
            pack_meta(2, 3, 0),
            9,
            13,
            pack_meta(2, 1, 1_900_000_000),
        ],
    )
    fields = [1, "s1", "h1", "d1", "doc", "2026-12-01", "AM", 3, 480, 10, 100, 0.0, None, False]
    session = decode_session(msgpack.packb([*fields, words.tobytes()], use_bin_type=True))
    assert [session.info(n).status for n in range(session.count)] == ["booked", "cancelled", "held"]
    assert [session.booking(n)[0] for n in range(session.count)] == [7, 8, 9]
    assert (session.free, session.held, session.waiting) == (1, 1, 0)
    assert session.info(2).hold_expires_at == 1_900_000_000
    again = encode_session(session)
    assert msgpack.unpackb(again)[0] == SESSION_VERSION
    assert decode_session(again).bookings == session.bookings


def test_a_version_1_policy_keeps_its_limits():
    policy = decode_rules(msgpack.packb([1, [3, 1, 60], {5: 1.0}]))
    assert (policy.hospital_day_limit, policy.department_day_limit, policy.hold_seconds) == (
        3,
        1,
        60,
    )
