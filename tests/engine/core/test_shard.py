"""The shard's decisions against a naive reference model, over random interleavings.

Covers DESIGN.md invariants 1 (no oversell), 2 (first N in order), 4 (idempotency),
5 (patient rules) and 6 (stock conservation): every outcome must equal the model's.
"""

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.policy import Policy
from engine.core.shard import Shard
from engine.outcomes import (
    Blacklisted,
    Booked,
    Created,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    NotFound,
    Released,
    SoldOut,
    TooLate,
)
from tests import helpers

NOW = 1_000.0  # long before the cancellation cutoff of 2026-12-01 (2026-11-30 16:00 UTC)
CUTOFF = 1_796_054_400.0  # 2026-11-30T16:00:00Z
DEPARTMENTS = ["d0", "d0", "d1", "d2"]  # sessions 0 and 1 share a department


def make_shard(capacities, fee=0, policy=None, blacklist=None, jitter=0):
    # jitter 0: a freed slot returns to the pool at once (held-back slots: their own tests)
    policy = replace(policy or Policy(), return_jitter_seconds=jitter)
    shard = Shard("h:2026-12-01", "h", "2026-12-01", policy, blacklist or {})
    for i, cap in enumerate(capacities):
        spec = helpers.spec(
            id=f"s{i}",
            hospital_id="h",
            department_id=DEPARTMENTS[i],
            doctor_id=f"doc{i}",
            capacity=cap,
            slot_minutes=5,
            fee=fee,
            opens_at=0.0,
        )
        assert shard.create(spec) == Created(spec.id)
    shard.take_changes()
    return shard


@dataclass
class Model:
    """The rules written the obvious way, for comparison."""

    capacities: list[int]
    policy: Policy
    blacklist: set[int]
    slots: dict[str, dict[int, int]] = field(default_factory=dict)  # session → slot → booking
    bookings: dict[str, list[list]] = field(default_factory=dict)  # [patient, req, slot, live]

    def __post_init__(self):
        for i in range(len(self.capacities)):
            self.slots[f"s{i}"] = {}
            self.bookings[f"s{i}"] = []

    def live_of(self, patient):
        return [
            (sid, b) for sid, bs in self.bookings.items() for b in bs if b[0] == patient and b[3]
        ]

    def book(self, sid, patient, req):
        for no, b in enumerate(self.bookings[sid]):
            if b[0] == patient and b[1] == req:
                return ("repeat", no, b[2])
        cap = self.capacities[int(sid[1:])]
        if len(self.slots[sid]) == cap:
            return ("sold_out",)
        if patient in self.blacklist:
            return ("blacklisted",)
        live = self.live_of(patient)
        if len(live) >= self.policy.hospital_day_limit:
            return ("hospital_day_limit",)
        dept = DEPARTMENTS[int(sid[1:])]
        if (
            sum(DEPARTMENTS[int(s[1:])] == dept for s, _ in live)
            >= self.policy.department_day_limit
        ):
            return ("department_day_limit",)
        slot = min(n for n in range(1, cap + 1) if n not in self.slots[sid])
        no = len(self.bookings[sid])
        self.bookings[sid].append([patient, req, slot, True])
        self.slots[sid][slot] = no
        return ("booked", no, slot)

    def release(self, sid, no, patient):
        b = self.bookings[sid][no]
        if patient is not None and patient != b[0]:
            return ("forbidden",)
        if not b[3]:
            return ("repeat", b[2])
        b[3] = False
        del self.slots[sid][b[2]]
        return ("released", b[2])


def as_tuple(outcome):
    match outcome:
        case Booked(booking_id=bid, slot_no=slot, repeat=True):
            return ("repeat", int(bid.rsplit(".", 1)[1]), slot)
        case Booked(booking_id=bid, slot_no=slot):
            return ("booked", int(bid.rsplit(".", 1)[1]), slot)
        case SoldOut():
            return ("sold_out",)
        case Blacklisted():
            return ("blacklisted",)
        case HospitalDayLimit():
            return ("hospital_day_limit",)
        case DepartmentDayLimit():
            return ("department_day_limit",)
        case Released(slot_no=slot, repeat=True):
            return ("repeat", slot)
        case Released(slot_no=slot, refund=0, status="cancelled"):
            return ("released", slot)
        case Forbidden():
            return ("forbidden",)
    raise AssertionError(f"unexpected outcome {outcome!r}")


def check_invariants(shard: Shard, policy: Policy, blacklist: set[int]):
    live_per_patient: dict[int, list[str]] = {}
    for s in shard.sessions.values():
        live = s.live_bookings()
        slots = [slot for _, _, slot in live]
        assert len(slots) == len(set(slots)), "a slot given twice"  # invariant 1
        assert len(live) <= s.spec.capacity
        assert s.free + s.held + s.booked == s.spec.capacity  # invariant 6
        assert s.free == s.spec.capacity - len(live)
        assert s.ended == s.count - len(live)
        for _, patient, _ in live:
            live_per_patient.setdefault(patient, []).append(s.spec.department_id)
    for patient, depts in live_per_patient.items():  # invariant 5
        assert len(depts) <= policy.hospital_day_limit
        assert max(depts.count(d) for d in depts) <= policy.department_day_limit
        assert patient not in blacklist
    # the shard's rule index agrees with the sessions
    assert {p: sorted(x.id for x in shard.live_sessions(p)) for p in shard.live} == {
        p: sorted(s.id for s in shard.sessions.values() for _, q, _ in s.live_bookings() if q == p)
        for p in live_per_patient
    }


op = st.one_of(
    st.tuples(st.just("book"), st.integers(0, 3), st.integers(0, 11), st.integers(0, 3)),
    # who cancels: 0 the hospital, 1 the booking's patient, 2 another patient
    st.tuples(st.just("release"), st.integers(0, 3), st.integers(0, 40), st.integers(0, 2)),
)


@settings(max_examples=300, deadline=None)
@given(
    capacities=st.lists(st.integers(1, 5), min_size=4, max_size=4),
    ops=st.lists(op, max_size=120),
    limits=st.tuples(st.integers(1, 3), st.integers(1, 2)),
    blacklisted=st.sets(st.integers(0, 11), max_size=2),
)
def test_shard_matches_reference_model(capacities, ops, limits, blacklisted):
    policy = Policy(hospital_day_limit=limits[0], department_day_limit=limits[1])
    shard = make_shard(capacities, policy=policy, blacklist={p: NOW + 1 for p in blacklisted})
    model = Model(capacities, policy, set(blacklisted))
    for kind, s, a, b in ops:
        sid = f"s{s}"
        if kind == "book":
            got = shard.book(sid, a, b, NOW)
            assert as_tuple(got) == model.book(sid, a, b), (kind, sid, a, b)
        else:
            if not model.bookings[sid]:
                continue
            no = a % len(model.bookings[sid])
            owner = model.bookings[sid][no][0]
            who = (None, owner, owner + 1)[b]
            got = shard.release(sid, no, who, NOW)
            assert as_tuple(got) == model.release(sid, no, who), (kind, sid, no, who)
        check_invariants(shard, policy, set(blacklisted))


def test_first_n_in_order_then_sold_out_changes_nothing():
    shard = make_shard([30])
    outcomes = [shard.book("s0", p, 0, NOW) for p in range(100)]
    winners = [o for o in outcomes if isinstance(o, Booked)]
    assert [o.slot_no for o in winners] == list(range(1, 31))
    assert all(isinstance(o, SoldOut) for o in outcomes[30:])
    changes = shard.take_changes()
    assert list(changes.sessions) == ["s0"]
    for p in range(100, 200):
        assert isinstance(shard.book("s0", p, 0, NOW), SoldOut)
    assert not shard.take_changes(), "a sold-out answer must not change state"


def test_repeat_after_release_gives_the_same_ended_booking_not_a_new_slot():
    shard = make_shard([2])
    first = shard.book("s0", 7, 42, NOW)
    assert isinstance(first, Booked)
    assert shard.release("s0", 0, 7, NOW) == Released(first.booking_id, 1)
    again = shard.book("s0", 7, 42, NOW)
    assert isinstance(again, Booked)
    assert (again.booking_id, again.status, again.repeat) == (first.booking_id, "cancelled", True)
    assert shard.sessions["s0"].free == 2
    assert shard.release("s0", 0, 7, NOW + 1) == Released(first.booking_id, 1, repeat=True)


@pytest.mark.parametrize(
    ("now", "patient_gets"),
    [(CUTOFF - 1, Released), (CUTOFF, TooLate), (CUTOFF + 1, TooLate)],
)
def test_a_patient_cancels_only_before_the_cutoff_the_hospital_always(now, patient_gets):
    shard = make_shard([2])
    shard.book("s0", 7, 1, NOW)
    shard.take_changes()
    got = shard.release("s0", 0, 7, now)
    assert isinstance(got, patient_gets)
    if patient_gets is TooLate:
        assert got == TooLate("cancel", CUTOFF)
        assert not shard.take_changes(), "a refused cancellation must not change state"
        got = shard.release("s0", 0, None, now)
        assert got == Released("s0.0", 1, refund=0, status="cancelled")
        assert shard.lookup("s0", 0).cancelled_by == "hospital"
    else:
        assert shard.lookup("s0", 0).cancelled_by == "patient"
    assert shard.sessions["s0"].free == 2
    assert 7 not in shard.live


def test_release_of_another_patients_booking_is_forbidden_and_changes_nothing():
    shard = make_shard([2])
    booked = shard.book("s0", 1, 1, NOW)
    shard.take_changes()
    assert shard.release("s0", 0, 2, NOW) == Forbidden(booked.booking_id)
    assert shard.release("s0", 5, 1, NOW) == NotFound("booking")
    assert shard.release("nope", 0, 1, NOW) == NotFound("booking")
    assert not shard.take_changes()
    assert shard.sessions["s0"].free == 1


def test_expired_blacklist_entry_no_longer_bars():
    shard = make_shard([2], blacklist={5: NOW})
    assert isinstance(shard.book("s0", 5, 1, NOW - 1), Blacklisted)
    assert isinstance(shard.book("s0", 5, 1, NOW), Booked)


def test_holds_expire_and_return_their_slot():
    shard = make_shard([2], fee=1000, policy=Policy(hold_seconds=60))
    held = shard.book("s0", 1, 1, NOW)
    assert held.status == "held"
    assert held.hold_expires_at == NOW + 60
    shard.take_changes()
    shard.tick(NOW + 59)
    assert shard.lookup("s0", 0).status == "held"
    assert shard.sessions["s0"].free == 1
    assert 1 in shard.live
    shard.tick(NOW + 60)
    assert shard.lookup("s0", 0).status == "expired"
    assert shard.sessions["s0"].free == 2
    assert 1 not in shard.live
    events = shard.take_changes().events
    assert ["void", held.booking_id, 1] in events
    assert ["notice", "expired", 1, held.booking_id, "s0", NOW + 60, {}] in events
    shard.tick(NOW + 61)
    assert not shard.take_changes(), "an expired hold expires once"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_hospital_day_limit_is_the_policy_value(limit):
    shard = make_shard(
        [5, 5, 5, 5], policy=Policy(hospital_day_limit=limit, department_day_limit=2)
    )
    outcomes = [shard.book(f"s{i}", 1, i, NOW) for i in range(4)]
    assert sum(isinstance(o, Booked) for o in outcomes) == limit
    assert all(isinstance(o, HospitalDayLimit) for o in outcomes[limit:])


def test_lookup_and_list_show_bookings_as_they_stand():
    shard = make_shard([2], fee=500, policy=Policy(hold_seconds=60))
    held = shard.book("s0", 7, 1, NOW)
    shard.book("s0", 8, 1, NOW)
    shard.release("s0", 1, 8, NOW)
    info = shard.lookup("s0", 0)
    assert (info.booking_id, info.patient_id, info.slot_no, info.status) == (
        held.booking_id,
        7,
        1,
        "held",
    )
    assert info.hold_expires_at == NOW + 60
    assert [b.status for b in shard.bookings_of("s0").bookings] == ["held", "cancelled"]
    assert shard.lookup("s0", 2) == NotFound("booking")
    assert shard.lookup("s0", -1) == NotFound("booking")
    assert shard.bookings_of("nope") == NotFound("session")


def test_a_freed_slot_is_held_back_a_second_at_least_and_at_most_the_jitter():
    from engine.core.shard import random_delay

    assert {random_delay(3) for _ in range(500)} == {1, 2, 3}
    assert random_delay(0) == 0
