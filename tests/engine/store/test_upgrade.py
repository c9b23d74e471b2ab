"""Snapshots of every older version still load, with nothing lost: version 1 (before the
lifecycle) and version 2 (before booking numbers were kept apart from rows); and policies
stored before the ban caps load with their lengths cut to the cap."""

from array import array

import msgpack

from engine.core.session import pack_meta
from engine.core.snapshot import SESSION_VERSION, decode_rules, decode_session, encode_session


def test_a_version_1_session_loads_as_the_current_version():
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


def test_upgraded_sessions_are_never_swept_and_get_codes_when_loaded():
    from engine.core.session import BOOKED_STATE
    from engine.core.shard import Shard

    words = array("q", [7, 11, pack_meta(1, 2, 0)])
    fields = [1, "s1", "h1", "d1", "doc", "2026-12-01", "AM", 3, 480, 10, 0, 0.0, 5000.0, False]
    session = decode_session(msgpack.packb([*fields, words.tobytes()], use_bin_type=True))
    assert session.swept
    assert session.spec.starts_at == 5000.0  # v1 closed at the first slot
    assert session.extra(0).code == 0
    shard = Shard("h1:2026-12-01", "h1", "2026-12-01")
    shard.add_restored(session)
    assert session.booking(0)[2] == BOOKED_STATE
    assert 1 <= session.extra(0).code <= 99_999_999
    assert list(shard.take_changes().sessions) == ["s1"]  # the code is written back
    shard.tick(10**10)  # long after the visit: no no-show, no violation
    assert session.booking(0)[2] == BOOKED_STATE
    assert shard.take_changes().events == []


async def test_version_1_bans_move_out_of_the_rules_once(redis_client):
    from engine.store.shards import Store

    store = Store(redis_client, __import__("engine.store.keys", fromlist=["Keys"]).Keys("up"))
    v1 = msgpack.packb([1, [3, 1, 60], {5: 9e9, 6: 8e9}], use_bin_type=True)
    await redis_client.set(store.keys.rules("h1"), v1)
    await redis_client.hset(store.keys.bans("h1"), "6", repr(9.5e9))  # a longer ban wins
    _, shard = await store.activate("h1:2026-12-01", "h1", "2026-12-01")
    assert shard.blacklist == {5: 9e9, 6: 9.5e9}
    assert shard.policy.hospital_day_limit == 3
    policy, bans = await store.read_rules("h1")
    assert bans == {5: 9e9, 6: 9.5e9}
    assert policy.hold_seconds == 60
    assert msgpack.unpackb(await redis_client.get(store.keys.rules("h1")))[0] == 2


def v2_snapshot(words: array, waitlist: array | None = None) -> bytes:
    """A session as version 2 wrote it (18 fields, before numbers, forgotten, returning)."""
    waiting = b"" if waitlist is None else waitlist.tobytes()
    fields = [2, "s2", "h1", "d1", "doc", "2026-12-01", "AM", 3, 480, 10, 0, 0.0, None]
    fields += [1_796_100_000.0, False, False, words.tobytes(), waiting]
    return msgpack.packb(fields, use_bin_type=True)


def test_a_version_2_session_loads_with_row_i_as_booking_i():
    words = array("q", [7, 11, pack_meta(1, 2, 5), 12_345_678, 8, 12, pack_meta(2, 4, 6), 0])
    session = decode_session(v2_snapshot(words, array("q", [9, 13])))
    assert (session.numbers, session.made, session.returned) == (None, 2, 0)
    assert [session.booking_id(n) for n in range(session.count)] == ["s2.0", "s2.1"]
    assert (session.free, session.held_back, session.waiting) == (2, 0, 1)
    assert session.info(0).verification_code == "12345678"
    assert session.version == 2 + 1  # made + ended (+ none returned)


def test_a_version_2_session_written_again_is_the_current_version_and_round_trips():
    words = array("q", [7, 11, pack_meta(1, 2, 5), 12_345_678])
    session = decode_session(v2_snapshot(words))
    again = encode_session(session)
    assert msgpack.unpackb(again)[0] == SESSION_VERSION == 3
    back = decode_session(again)
    assert (back.bookings, back.made, back.numbers) == (session.bookings, 1, None)


def test_a_policy_stored_before_the_caps_loads_with_its_bans_cut_to_a_year():
    stored = {
        "ban_days": [30, 3000],
        "ban_rules": [{"kind": "cancel", "count": 2, "window_days": 3000}],
    }
    policy = decode_rules(msgpack.packb([2, stored]))
    assert policy.ban_days == (30, 365)
    assert policy.ban_rules[0].window_days == 365
