"""A doctor-session's booking numbers can never run out, and a freed slot is not handed over on
cue (pure core, no services).

Hold, cancel, repeat with a new request id used to fill the 65,535 booking numbers of a session,
which then answered ``sold_out`` for ever with a snapshot of ~2 MB. Now ended bookings are
compacted without renumbering and their request keys kept in a bounded set; and a freed slot
nobody waits for goes back to the pool after a random delay.
"""

from __future__ import annotations

import datetime as dt
import random

from engine.core.policy import Policy, local_date
from engine.core.session import COMPACT_AFTER, RETURNING, DoctorSession, SessionSpec
from engine.core.shard import Shard
from engine.core.snapshot import decode_session, encode_session
from engine.outcomes import Booked, Released, SoldOut
from tests import helpers

NOW = 1_796_000_000.0
DAY = "2027-01-15"  # far enough ahead that no cancellation cutoff passes


def spec(capacity: int = 2, fee: int = 500) -> SessionSpec:
    return helpers.spec(
        id="s0",
        hospital_id="h",
        department_id="d0",
        doctor_id="doc",
        date=DAY,
        capacity=capacity,
        fee=fee,
        opens_at=NOW - 60,
    )


def shard_of(
    capacity: int = 2, keep: tuple[int, int] = (4, 8), jitter: int = 0, fee: int = 500, **policy
) -> Shard:
    shard = Shard(
        f"h:{DAY}",
        "h",
        DAY,
        Policy(return_jitter_seconds=jitter, hold_seconds=600, **policy),
        keep=keep,
        delay=lambda most: most,  # deterministic: the longest delay
    )
    shard.create(spec(capacity, fee))
    shard.take_changes()
    return shard


def jam(shard: Shard, cycles: int, now: float, patient: int = 7) -> list[str]:
    """Hold and cancel again and again, a new request id each time; the booking ids made."""
    made = []
    for i in range(cycles):
        got = shard.book("s0", patient, 10_000 + i, now)
        assert isinstance(got, Booked), got
        made.append(got.booking_id)
        number = int(got.booking_id.rpartition(".")[2])
        assert isinstance(shard.release("s0", number, patient, now), Released)
        shard.tick(now)
    return made


def test_booking_numbers_keep_growing_past_the_old_16_bit_limit():
    shard = shard_of(capacity=1)
    made = jam(shard, 70_000, NOW)
    assert made[-1] == "s0.69999"
    assert isinstance(shard.book("s0", 8, 1, NOW), Booked)


def test_a_jam_keeps_the_session_small_by_construction():
    shard = shard_of(capacity=1, keep=(4, 8))
    jam(shard, 5_000, NOW)  # all within the hour: only the hard cap compacts them
    session = shard.sessions["s0"]
    assert session.count <= session.spec.capacity + 16 * 4
    assert len(encode_session(session)) < 8_000


def test_compaction_waits_an_hour_then_keeps_only_the_newest_ended():
    shard = shard_of(capacity=2, keep=(4, 8))
    jam(shard, 10, NOW)
    session = shard.sessions["s0"]
    assert session.count == 10, "ended within the hour: kept whole"
    shard.tick(NOW + COMPACT_AFTER)
    assert session.count == 4
    assert [session.number_of(r) for r in range(session.count)] == [6, 7, 8, 9]


def test_a_live_booking_keeps_its_number_and_id_through_compaction():
    shard = shard_of(capacity=2, keep=(1, 8))
    live = shard.book("s0", 1, 1, NOW)
    number = int(live.booking_id.rpartition(".")[2])
    shard.pay("s0", number, 1, NOW)
    jam(shard, 6, NOW)
    shard.tick(NOW + COMPACT_AFTER)
    assert shard.lookup("s0", number).status == "booked"
    assert shard.sessions["s0"].row_of(number) == 0
    assert shard.book("s0", 1, 1, NOW + COMPACT_AFTER).booking_id == live.booking_id


def test_a_compacted_request_is_answered_with_its_ended_booking_not_a_new_slot():
    shard = shard_of(capacity=2, keep=(1, 8))
    first = jam(shard, 5, NOW)[0]
    shard.tick(NOW + COMPACT_AFTER)
    assert shard.sessions["s0"].row_of(0) == -1, "compacted"
    again = shard.book("s0", 7, 10_000, NOW + COMPACT_AFTER)
    assert (again.booking_id, again.status, again.repeat) == (first, "cancelled", True)
    assert shard.sessions["s0"].free == 2


def test_a_compacted_booking_can_still_be_looked_up_while_its_key_is_kept():
    shard = shard_of(capacity=2, keep=(1, 8))
    first = jam(shard, 3, NOW)[0]
    shard.tick(NOW + COMPACT_AFTER)
    info = shard.lookup("s0", int(first.rpartition(".")[2]))
    assert (info.booking_id, info.status, info.patient_id) == (first, "cancelled", 7)


def test_the_idempotency_set_is_bounded_and_forgets_the_oldest():
    shard = shard_of(capacity=1, keep=(1, 3))
    jam(shard, 10, NOW)
    shard.tick(NOW + COMPACT_AFTER)
    session = shard.sessions["s0"]
    assert [number for *_, number in session.forgotten_rows()] == [6, 7, 8]


def test_a_compacted_session_survives_a_snapshot_round_trip():
    shard = shard_of(capacity=3, keep=(2, 4))
    live = shard.book("s0", 1, 1, NOW)
    shard.pay("s0", 0, 1, NOW)
    jam(shard, 8, NOW)
    shard.tick(NOW + COMPACT_AFTER)
    session = shard.sessions["s0"]
    back = decode_session(encode_session(session))
    assert back.made == session.made == 9
    assert list(back.numbers) == list(session.numbers)
    assert back.forgotten_rows() == session.forgotten_rows()
    assert back.info(back.row_of(0)).booking_id == live.booking_id
    assert back.free == session.free == 2


def test_random_jams_and_compactions_keep_every_live_booking_and_conserve_stock():
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    shard = shard_of(capacity=3, keep=(2, 5), fee=0, hospital_day_limit=1)
    live: dict[str, int] = {}  # booking id → patient
    now = NOW
    for i in range(3_000):
        patient = rng.randrange(40)
        mine = [b for b, p in live.items() if p == patient]
        if mine and rng.random() < 0.5:
            number = int(mine[0].rpartition(".")[2])
            assert isinstance(shard.release("s0", number, patient, now), Released)
            del live[mine[0]]
        else:
            got = shard.book("s0", patient, i, now)
            if isinstance(got, Booked):
                live[got.booking_id] = patient
            else:
                assert isinstance(got, SoldOut) or patient in live.values(), got
        now += rng.choice([1, 1, 60, 1800])
        shard.tick(now)
        session = shard.sessions["s0"]
        assert session.free + session.held_back + session.occupied == 3
        assert session.occupied == len(live)
    session = shard.sessions["s0"]
    for booking_id, patient in live.items():
        info = shard.lookup("s0", int(booking_id.rpartition(".")[2]))
        assert (info.booking_id, info.patient_id, info.status) == (booking_id, patient, "booked")


# ----- a freed slot is held back ---------------------------------------------------------------


def test_a_cancelled_slot_nobody_waits_for_is_held_back_then_returns():
    shard = shard_of(capacity=1, jitter=90)
    got = shard.book("s0", 1, 1, NOW)
    shard.release("s0", 0, 1, NOW)
    session = shard.sessions["s0"]
    assert (session.free, session.held_back, session.holders[0]) == (0, 1, RETURNING)
    assert shard.book("s0", 2, 1, NOW + 1) == SoldOut("s0"), "no handover on cue"
    shard.tick(NOW + 89)
    assert session.free == 0
    shard.tick(NOW + 90)
    assert (session.free, session.held_back) == (1, 0)
    assert shard.book("s0", 2, 1, NOW + 90).slot_no == got.slot_no


def test_a_freed_slot_goes_to_the_waitlist_at_once_not_after_the_delay():
    shard = shard_of(capacity=1, jitter=90)
    shard.book("s0", 1, 1, NOW)
    assert shard.join_waitlist("s0", 2, 1, NOW).position == 1
    shard.release("s0", 0, 1, NOW)
    session = shard.sessions["s0"]
    assert session.held_back == 0
    assert shard.lookup("s0", 1).patient_id == 2


def test_a_slot_held_back_goes_to_the_waitlist_when_it_returns():
    shard = shard_of(capacity=1, jitter=90)
    shard.book("s0", 1, 1, NOW)
    shard.release("s0", 0, 1, NOW)
    assert shard.join_waitlist("s0", 2, 1, NOW + 10).position == 1  # sold out meanwhile
    shard.tick(NOW + 90)
    assert shard.lookup("s0", 1).patient_id == 2
    assert shard.sessions["s0"].free == 0


def test_a_held_back_slot_survives_a_snapshot_round_trip():
    shard = shard_of(capacity=2, jitter=90)
    shard.book("s0", 1, 1, NOW)
    shard.release("s0", 0, 1, NOW)
    back = decode_session(encode_session(shard.sessions["s0"]))
    assert (back.free, back.held_back, list(back.returning)) == (1, 1, [1, int(NOW) + 90])
    assert back.version == shard.sessions["s0"].version


def test_returning_a_slot_moves_the_version_on():
    shard = shard_of(capacity=1, jitter=90)
    shard.book("s0", 1, 1, NOW)
    shard.release("s0", 0, 1, NOW)
    before = shard.sessions["s0"].version
    shard.tick(NOW + 90)
    assert shard.sessions["s0"].version == before + 1


# ----- holds let go ----------------------------------------------------------------------------


def test_a_hold_let_go_is_reported_for_the_free_release_count():
    shard = shard_of(capacity=1)
    shard.book("s0", 1, 1, NOW)
    shard.take_changes()
    shard.release("s0", 0, 1, NOW)
    events = [e for e in shard.take_changes().events if e[0] == "hold_release"]
    assert events == [["hold_release", "h", "h", 1, "s0.0", NOW, local_date(NOW, dt.UTC)]]


def test_an_expired_hold_is_reported_too():
    shard = shard_of(capacity=1)
    shard.book("s0", 1, 1, NOW)
    shard.take_changes()
    shard.tick(NOW + 600)
    assert [e[4] for e in shard.take_changes().events if e[0] == "hold_release"] == ["s0.0"]


def test_a_paid_booking_cancelled_is_not_a_hold_release():
    shard = shard_of(capacity=1)
    shard.book("s0", 1, 1, NOW)
    shard.pay("s0", 0, 1, NOW)
    shard.take_changes()
    shard.release("s0", 0, 1, NOW)
    assert not [e for e in shard.take_changes().events if e[0] == "hold_release"]


def test_a_suspension_is_no_hold_release_and_holds_nothing_back():
    shard = shard_of(capacity=1, jitter=90)
    shard.book("s0", 1, 1, NOW)
    shard.take_changes()
    shard.suspend("s0", NOW)
    assert not [e for e in shard.take_changes().events if e[0] == "hold_release"]
    assert shard.sessions["s0"].held_back == 0


def test_an_old_session_without_numbers_loads_as_one_that_never_compacted():
    session = DoctorSession(spec(capacity=2))
    session.restore(session.bookings)
    assert (session.numbers, session.made, session.version) == (None, 0, 0)
