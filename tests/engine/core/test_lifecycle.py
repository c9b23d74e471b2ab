"""The booking lifecycle of one shard, driven at random and checked against the rules.

A hypothesis state machine books, pays, cancels (patient and hospital), checks in with right
and wrong codes, suspends, joins and leaves waitlists, bans patients mid-day and moves the
clock (running the timers: hold warnings and expiry, the no-show sweep, closed waitlists) over
three small sessions, one of them free. Every outcome is compared with what the rules say (a
refusal or a repeated answer must change nothing), and after every step:

- only the lifecycle's transitions happened (held → booked | cancelled | expired | revoked;
  booked → checked_in | cancelled | no_show | revoked; nothing leaves the other states);
- stock is conserved (free + held back + occupying == capacity, occupying counted from the
  bookings) and no slot is held by two occupying bookings (DESIGN.md invariants 1 and 6); a
  freed slot nobody waits for is held back (policy ``return_jitter_seconds``) and comes back;
- the per-patient day limits hold (invariant 5);
- money is conserved per booking and in total: what was paid is refunded (the outbox's
  ``refund`` events, which agree with the booking's ``refunded``) or kept, never more;
- a freed slot goes to the earliest-joined waitlisted patient who still passes the rules;
- no booking has a verification code before it is booked, and a code never changes.

A failure prints the steps that led to it and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine.core.policy import CANCEL, NO_SHOW, FeeTier, Policy, local_date
from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    CHECKED_IN_STATE,
    CLOSED,
    EXPIRED_STATE,
    HELD_STATE,
    NO_SHOW_STATE,
    OCCUPYING,
    OPEN,
    RETURNING,
    REVOKED_STATE,
    SOLD_OUT,
    STATE_NAMES,
    SUSPENDED,
    format_code,
)
from engine.core.shard import Shard
from engine.outcomes import (
    Blacklisted,
    Booked,
    CheckedIn,
    Closed,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    LeftWaitlist,
    Locked,
    NotFound,
    NotOpen,
    NotPayable,
    NotSoldOut,
    NotVisitDay,
    Paid,
    Released,
    SoldOut,
    SuspendDone,
    Suspended,
    TooLate,
    Waitlisted,
    WaitlistFull,
    WrongCode,
    WrongState,
)
from tests import helpers

ZONE = ZoneInfo("Asia/Shanghai")
DATE = "2026-12-01"
HOUR = 3600
AM = dt.datetime(2026, 12, 1, 8, tzinfo=ZONE).timestamp()  # the morning sessions start
PM = AM + 6 * HOUR  # 14:00
T0 = AM - 22 * HOUR  # booking opens (10:00 the day before)
CUTOFF = AM - 16 * HOUR  # the default: 16:00 the day before
VISIT_DAY = AM - 8 * HOUR  # local midnight
POLICY = dict(
    hold_seconds=900,  # warned 300 s before expiry
    check_in_max_tries=2,
    waitlist_limit=3,
    hospital_day_limit=2,
    department_day_limit=1,
    # ≥ 20 h before the visit free, ≥ 17 h 30 %, later 60 % (the cutoff is 16 h before)
    fee_tiers=(FeeTier(20 * 60, 0), FeeTier(17 * 60, 30), FeeTier(0, 60)),
)
# (id, department, fee, opens, starts): s0 and s1 share a department
SESSIONS = [
    ("s0", "d0", 500, T0, AM),
    ("s1", "d0", 0, T0 + 1800, AM),
    ("s2", "d1", 1200, T0, PM),
]
SIDS = [s[0] for s in SESSIONS]
BANS = {5: AM + 90 * 86400, 4: T0 + 2 * HOUR}  # patient 4's ban runs out while booking
ALLOWED = {
    None: {HELD_STATE, BOOKED_STATE},  # a new booking
    HELD_STATE: {HELD_STATE, BOOKED_STATE, CANCELLED_STATE, EXPIRED_STATE, REVOKED_STATE},
    BOOKED_STATE: {BOOKED_STATE, CHECKED_IN_STATE, CANCELLED_STATE, NO_SHOW_STATE, REVOKED_STATE},
    CHECKED_IN_STATE: {CHECKED_IN_STATE},
    CANCELLED_STATE: {CANCELLED_STATE},
    EXPIRED_STATE: {EXPIRED_STATE},
    NO_SHOW_STATE: {NO_SHOW_STATE},
    REVOKED_STATE: {REVOKED_STATE},
}
WRONG_CODES = ["", "1234567", "abcdefgh", "next"]
# answers that must leave the shard as it was (as must every repeated answer)
UNCHANGING = (
    Blacklisted,
    Closed,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    NotFound,
    NotOpen,
    NotSoldOut,
    NotVisitDay,
    SoldOut,
    Suspended,
    TooLate,
    WaitlistFull,
    WrongState,
)


def kept_percent(minutes_before: float) -> int:
    """The fee tiers above, written out."""
    if minutes_before >= 20 * 60:
        return 0
    return 30 if minutes_before >= 17 * 60 else 60


class Lifecycle(RuleBasedStateMachine):
    @initialize(
        capacities=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
        no_show_refund=st.booleans(),
        # from the release, from inside the fee tiers, or on the visit day (after the cutoff)
        start=st.sampled_from([T0, AM - 18 * HOUR, VISIT_DAY + 7 * HOUR, VISIT_DAY + 7 * HOUR]),
    )
    def start(self, capacities, no_show_refund, start):
        self.policy = Policy(no_show_refund=no_show_refund, **POLICY)
        self.shard = Shard(f"h:{DATE}", "h", DATE, self.policy, dict(BANS), zone=ZONE)
        for (sid, dept, fee, opens, starts), cap in zip(SESSIONS, capacities, strict=True):
            spec = helpers.spec(
                id=sid,
                hospital_id="h",
                department_id=dept,
                doctor_id=f"doc-{sid}",
                date=DATE,
                period="AM" if starts == AM else "PM",
                capacity=cap,
                first_slot_minute=dt.datetime.fromtimestamp(starts, ZONE).hour * 60,
                fee=fee,
                opens_at=opens,
                closes_at=starts,
                starts_at=starts,
            )
            self.shard.create(spec)
        self.shard.take_changes()
        self.now = start
        self.states: dict[tuple[str, int], int] = {}  # the last state seen of every booking
        self.codes: dict[tuple[str, int], int] = {}
        self.tries: Counter[tuple[str, int]] = Counter()
        self.waitlists: dict[str, list[tuple[int, int]]] = {sid: [] for sid in SIDS}
        self.refunds: Counter[str] = Counter()  # booking id → refund events
        self.voids: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.payments: Counter[str] = Counter()  # booking id → fee taken (fresh ``Paid``)
        self.violations: list[tuple[int, str, str]] = []

    # ----- reading the shard independently ---------------------------------------------------

    def session(self, sid):
        return self.shard.sessions[sid]

    def rows(self, sid):
        """(booking no, patient, request, slot, state, time, extra) of every booking."""
        s = self.session(sid)
        return [(n, *s.booking(n)[:1], s.request_of(n), *s.booking(n)[1:], s.extra(n))
                for n in range(s.count)]  # fmt: skip

    def occupying(self):
        """patient → [session id] of their occupying bookings, counted from the bookings."""
        live: dict[int, list[str]] = defaultdict(list)
        for sid in SIDS:
            for _, patient, _, _, state, _, _ in self.rows(sid):
                if state in OCCUPYING:
                    live[patient].append(sid)
        return live

    def refusal(self, sid, patient, live):
        """The patient rule that refuses this patient a new booking of ``sid``, if any."""
        until = self.shard.blacklist.get(patient)
        if until is not None and until > self.now:
            return Blacklisted("h", until)
        mine = live.get(patient, [])
        if len(mine) >= self.policy.hospital_day_limit:
            return HospitalDayLimit(self.policy.hospital_day_limit)
        department = self.session(sid).spec.department_id
        if sum(self.session(s).spec.department_id == department for s in mine) >= (
            self.policy.department_day_limit
        ):
            return DepartmentDayLimit(self.policy.department_day_limit)
        return None

    def status(self, sid):
        s = self.session(sid)
        if s.suspended:
            return SUSPENDED
        if self.now < s.spec.opens_at:
            return "scheduled"
        if self.now >= s.spec.closes_at:
            return CLOSED
        return SOLD_OUT if s.free == 0 else OPEN

    def pick(self, sid, index):
        count = self.session(sid).count
        return None if count == 0 else index % count

    # ----- after every step: the outbox ----------------------------------------------------

    def absorb(self, before_live, before_pairs):
        """Take the step's outbox events, replay them against the waitlists as they were
        (and the live bookings, as the rules saw them), and tally the money."""
        changes = self.shard.take_changes()
        self.changed = bool(changes)
        events = changes.events
        live = {p: list(sids) for p, sids in before_live.items()}
        promoted = set()
        queues = {sid: list(q) for sid, q in self.waitlists.items()}
        for outbox_event in events:
            match outbox_event:
                case ["refund", booking_id, _, amount, _]:
                    assert amount > 0
                    self.refunds[booking_id] += amount
                case ["void", booking_id, _]:
                    self.voids[booking_id] += 1
                case ["violation", "h", "h", patient, kind, booking_id, _]:
                    self.violations.append((patient, kind, booking_id))
                case ["notice", "hold_expiring", _, booking_id, _, _, _]:
                    self.warnings[booking_id] += 1
                case ["notice", "cancelled" | "expired", patient, _, sid, _, _]:
                    live[patient].remove(sid)
                case ["notice", "suspended", patient, booking_id, sid, _, _] if booking_id:
                    live[patient].remove(sid)
                case ["notice", "suspended" | "waitlist_ended", patient, "", sid, _, _]:
                    assert queues[sid].pop(0)[0] == patient
                case ["notice", "waitlist_skipped", patient, "", sid, _, {"reason": reason}]:
                    waiting, request = queues[sid].pop(0)
                    assert waiting == patient, "a waitlist entry was skipped out of order"
                    refusal = self.refusal(sid, patient, live)
                    if refusal is None:
                        assert (sid, patient, request) in before_pairs, "skipped but eligible"
                        assert reason == "already_booked"
                    else:
                        assert reason == type(refusal).__name__
                case ["notice", "waitlist_promoted", patient, booking_id, sid, _, _]:
                    waiting, request = queues[sid].pop(0)
                    assert waiting == patient, "a promotion passed over an earlier patient"
                    assert self.refusal(sid, patient, live) is None
                    assert (sid, patient, request) not in before_pairs
                    n = int(booking_id.rsplit(".", 1)[1])
                    assert self.session(sid).request_of(n) == request
                    live.setdefault(patient, []).append(sid)
                    promoted.add(booking_id)
                case ["notice", "confirmed" | "no_show", *_]:
                    pass
                case ["hold_release", _, "h", patient, booking_id, _, day]:
                    sid, _, n = booking_id.rpartition(".")
                    owner, _, state, _ = self.session(sid).booking(int(n))
                    assert owner == patient
                    assert not self.session(sid).extra(int(n)).paid
                    assert state in (EXPIRED_STATE, CANCELLED_STATE), "only a hold let go"
                    assert day == local_date(self.now, ZONE)
                case _:
                    raise AssertionError(f"unexpected outbox event {outbox_event!r}")
        for sid in SIDS:
            waitlist = self.session(sid).waitlist
            assert list(zip(waitlist[0::2], waitlist[1::2], strict=True)) == queues[sid]
        self.waitlists = queues
        for sid in SIDS:  # a booking made directly (only ``book`` makes one) has no event
            for n, patient, request, *_ in self.rows(sid):
                bid = self.session(sid).booking_id(n)
                if (sid, patient, request) not in before_pairs and bid not in promoted:
                    live.setdefault(patient, []).append(sid)
        assert {p: sorted(s) for p, s in live.items() if s} == {
            p: sorted(s) for p, s in self.occupying().items()
        }
        return events

    def step(self, action):
        """Run one action on the shard and absorb what it changed."""
        before_live = self.occupying()
        before_pairs = {(sid, r[1], r[2]) for sid in SIDS for r in self.rows(sid)}
        got = action()
        events = self.absorb(before_live, before_pairs)
        if isinstance(got, UNCHANGING) or getattr(got, "repeat", False):
            assert not self.changed, f"{got!r} changed the shard"
            assert not events, f"{got!r} changed the shard"
        if got is not None:  # seen with --hypothesis-show-statistics
            event(type(got).__name__)
        for e in events:
            event(f"{e[0]} {e[1] if e[0] == 'notice' else ''}")
        return got, events

    # ----- the rules -----------------------------------------------------------------------

    @rule(sid=st.sampled_from(SIDS), patient=st.integers(0, 5), request=st.integers(0, 2))
    def book(self, sid, patient, request):
        s = self.session(sid)
        mine = [r for r in self.rows(sid) if (r[1], r[2]) == (patient, request)]
        status = self.status(sid)
        refusal = self.refusal(sid, patient, self.occupying())
        taken = {r[3] for r in self.rows(sid) if r[4] in OCCUPYING} | set(s.returning[0::2])
        got, _ = self.step(lambda: self.shard.book(sid, patient, request, self.now))
        if mine:
            [(n, _, _, slot, state, at, extra)] = mine
            assert got == Booked(
                f"{sid}.{n}",
                sid,
                slot,
                s.slot_time(slot),
                STATE_NAMES[state],
                float(at) if state == HELD_STATE else None,
                True,
                format_code(extra.code) if extra.code else None,
            )
        elif status != OPEN:
            assert got == s.refusal(status)
        elif refusal is not None:
            assert got == refusal
        else:
            n = s.count - 1
            slot = min(set(range(1, s.spec.capacity + 1)) - taken)
            fee = s.spec.fee
            code = s.extra(n).code
            hold = self.policy.hold_seconds
            if self.now + hold > s.spec.visit_at:  # a hold ends by the first slot (≥ 1 minute)
                hold = max(60, int(s.spec.visit_at - self.now))
            assert got == Booked(
                f"{sid}.{n}",
                sid,
                slot,
                s.slot_time(slot),
                "held" if fee else "booked",
                float(int(self.now) + hold) if fee else None,
                False,
                None if fee else format_code(code),
            )
            at = int(self.now) + hold if fee else int(self.now)
            assert s.booking(n) == (patient, slot, HELD_STATE if fee else BOOKED_STATE, at)

    @rule(sid=st.sampled_from(SIDS), index=st.integers(0, 10), request=st.integers(0, 2))
    def a_waiting_patient_books(self, sid, index, request):
        """Someone on a waitlist books (elsewhere, or the same request): when a slot comes
        free they may no longer pass the rules, and must be skipped."""
        waiting = [p for q in self.waitlists.values() for p, _ in q]
        if waiting:
            self.book(sid, waiting[index % len(waiting)], request)

    @rule(sid=st.sampled_from(SIDS), index=st.integers(0, 20), who=st.sampled_from([0, 1, 2]))
    def pay(self, sid, index, who):
        """A payment arrives: from the owner, from the gateway (no patient) or someone else."""
        n = self.pick(sid, index)
        if n is None:
            return
        s = self.session(sid)
        owner, _, state, at = s.booking(n)
        patient = (owner, None, owner + 1)[who]
        bid = s.booking_id(n)
        got, _ = self.step(lambda: self.shard.pay(sid, n, patient, self.now))
        if who == 2:
            assert got == Forbidden(bid)
        elif state in (BOOKED_STATE, CHECKED_IN_STATE, NO_SHOW_STATE):
            assert got == Paid(bid, format_code(s.extra(n).code), repeat=True)
        elif state == HELD_STATE and (at <= self.now or s.swept):
            assert got == NotPayable(bid, "expired")
            assert s.booking(n)[2] == EXPIRED_STATE
        elif state == HELD_STATE:
            extra = s.extra(n)
            assert got == Paid(bid, format_code(extra.code))
            assert (s.booking(n)[2], extra.paid) == (BOOKED_STATE, True)
            self.payments[bid] += s.spec.fee
        else:  # a paid booking's money follows its own refund
            assert got == NotPayable(bid, STATE_NAMES[state], s.extra(n).paid)

    @rule(sid=st.sampled_from(SIDS), index=st.integers(0, 20), who=st.sampled_from([0, 1, 2]))
    def release(self, sid, index, who):
        """退号 by the booking's patient, by another patient, or by the hospital (None)."""
        n = self.pick(sid, index)
        if n is None:
            return
        s = self.session(sid)
        owner, slot, state, _ = s.booking(n)
        patient = (owner, owner + 1, None)[who]
        bid = s.booking_id(n)
        extra = s.extra(n)
        fee = s.spec.fee if extra.paid else 0
        got, events = self.step(lambda: self.shard.release(sid, n, patient, self.now))
        violations = [e[4] for e in events if e[0] == "violation"]
        if who == 1:
            assert got == Forbidden(bid)
        elif state in (CANCELLED_STATE, REVOKED_STATE):
            assert got == Released(bid, slot, True, extra.refunded, STATE_NAMES[state])
        elif state not in (HELD_STATE, BOOKED_STATE):
            assert got == WrongState(bid, STATE_NAMES[state])
        elif patient is None:
            assert got == Released(bid, slot, False, fee)
            assert s.booking(n)[2] == REVOKED_STATE
            assert s.info(n).cancelled_by == "hospital"
            assert violations == []
        elif self.now >= CUTOFF:
            assert got == TooLate("cancel", CUTOFF)
        else:
            minutes_before = ((AM if sid != "s2" else PM) - self.now) / 60
            refund = fee - fee * kept_percent(minutes_before) // 100
            assert got == Released(bid, slot, False, refund)
            assert s.booking(n)[2] == CANCELLED_STATE
            assert s.info(n).cancelled_by == "patient"
            # letting a hold go costs nothing; a booking cancelled before the visit day counts
            assert violations == ([CANCEL] if state == BOOKED_STATE else [])
        if not isinstance(got, Released) or got.repeat:
            assert [e for e in events if e[0] != "notice"] == []

    @rule(sid=st.sampled_from(SIDS), index=st.integers(0, 20))
    def check_in_right(self, sid, index):
        """取号 at the hospital's desk with the booking's code."""
        self.check_in(sid, index, None)

    @rule(sid=st.sampled_from(SIDS), index=st.integers(0, 20), wrong=st.sampled_from(WRONG_CODES))
    def check_in_wrong(self, sid, index, wrong):
        """取号 with a wrong code (``next``: the right one plus one)."""
        self.check_in(sid, index, wrong)

    def check_in(self, sid, index, wrong):
        booked = self.session(sid).in_state(BOOKED_STATE)
        n = booked[index % len(booked)] if booked and index < 10 else self.pick(sid, index)
        if n is None:
            return
        s = self.session(sid)
        owner, slot, state, _ = s.booking(n)
        code = s.extra(n).code
        right = wrong is None
        if right:
            given = format_code(code)
        else:
            given = format_code(code % 99_999_999 + 1) if wrong == "next" else wrong
        bid = s.booking_id(n)
        got, _ = self.step(lambda: self.shard.check_in(sid, n, given, self.now))
        limit = self.policy.check_in_max_tries
        if state == CHECKED_IN_STATE:
            assert got == CheckedIn(bid, slot, s.slot_time(slot), owner, repeat=True)
        elif state != BOOKED_STATE:
            assert got == WrongState(bid, STATE_NAMES[state])
        elif local_date(self.now, ZONE) != DATE:
            assert got == NotVisitDay(DATE)
        elif self.tries[sid, n] >= limit:
            assert got == Locked(bid)
        elif right:
            assert got == CheckedIn(bid, slot, s.slot_time(slot), owner)
        else:
            self.tries[sid, n] += 1
            left = limit - self.tries[sid, n]
            assert got == (WrongCode(bid, left) if left else Locked(bid))
        assert s.extra(n).tries == self.tries[sid, n]

    @rule(sid=st.sampled_from(SIDS), dice=st.integers(0, 9))
    def suspend(self, sid, dice):
        """停诊 (rarely: one roll in ten)."""
        if dice:
            return
        s = self.session(sid)
        was = s.suspended
        ending = [r for r in self.rows(sid) if r[4] in (HELD_STATE, BOOKED_STATE)]
        refunded = sum(s.spec.fee for r in ending if r[6].paid)
        got, _ = self.step(lambda: self.shard.suspend(sid, self.now))
        if was:
            assert got == SuspendDone(sid, 0, 0, repeat=True)
        else:
            assert got == SuspendDone(sid, len(ending), refunded)
            assert all(s.booking(r[0])[2] == REVOKED_STATE for r in ending)
            assert s.waiting == 0

    @rule(sid=st.sampled_from(SIDS), patient=st.integers(0, 5), request=st.integers(0, 2))
    def join_waitlist(self, sid, patient, request):
        s = self.session(sid)
        mine = [r for r in self.rows(sid) if (r[1], r[2]) == (patient, request)]
        queue = [p for p, _ in self.waitlists[sid]]
        status = self.status(sid)
        refusal = self.refusal(sid, patient, self.occupying())
        if mine:
            expected = s.answer(mine[0][0], repeat=True)
        elif patient in queue:
            expected = Waitlisted(sid, queue.index(patient) + 1, repeat=True)
        elif status == OPEN:
            expected = NotSoldOut(sid, s.free)
        elif status != SOLD_OUT:
            expected = s.refusal(status)
        elif refusal is not None:
            expected = refusal
        elif len(queue) >= self.policy.waitlist_limit:
            expected = WaitlistFull(sid, self.policy.waitlist_limit)
        else:
            expected = Waitlisted(sid, len(queue) + 1)
            self.waitlists[sid].append((patient, request))
        got, _ = self.step(lambda: self.shard.join_waitlist(sid, patient, request, self.now))
        assert got == expected

    @rule(patient=st.integers(0, 5), hours=st.sampled_from([None, 1, 24 * 30]))
    def ban(self, patient, hours):
        """The courier's judge bans a patient (or an operator lifts a ban) mid-day: the host
        hands the shard the new blacklist. Waitlisted patients it bars are skipped."""
        bans = dict(self.shard.blacklist)
        if hours is None:
            bans.pop(patient, None)
        else:
            bans[patient] = self.now + hours * HOUR
        got, _ = self.step(lambda: self.shard.set_rules(self.policy, bans))
        assert got is None
        assert self.shard.blacklist == bans

    @rule(sid=st.sampled_from(SIDS), patient=st.integers(0, 5))
    def leave_waitlist(self, sid, patient):
        queued = [entry for entry in self.waitlists[sid] if entry[0] == patient]
        for entry in queued:
            self.waitlists[sid].remove(entry)
        got, _ = self.step(lambda: self.shard.leave_waitlist(sid, patient))
        assert got == (LeftWaitlist(sid) if queued else NotFound("waitlist entry"))

    @rule(
        seconds=st.sampled_from([1, 60, 299, 650, 900, 3600, None, None]),
        offset=st.sampled_from([-1, 0, 1, 301, 901]),
        timers=st.sampled_from([True, True, False]),
    )
    def advance(self, seconds, offset, timers):
        """Move the clock by ``seconds``, or (None) to around the next moment where the rules
        change; usually the timers run at once, sometimes only at a later step."""
        if seconds is None:
            sweeps = [s.spec.ends_at + 60 * self.policy.no_show_grace_minutes
                      for s in self.shard.sessions.values()]  # fmt: skip
            moments = [T0 + 1800, BANS[4], AM - 20 * HOUR, AM - 17 * HOUR, CUTOFF, VISIT_DAY]
            moments += [AM, PM, *sweeps]
            later = [m + offset for m in sorted(moments) if m + offset > self.now]
            self.now = later[0] if later else self.now + HOUR
        else:
            self.now += seconds
        if timers:
            self.tick()

    def tick(self):
        before = {sid: self.rows(sid) for sid in SIDS}
        self.step(lambda: self.shard.tick(self.now))
        warn = min(300, self.policy.hold_seconds // 3)
        for sid in SIDS:
            s = self.session(sid)
            for n, _, _, _, state, at, _ in self.rows(sid):
                if state == HELD_STATE:
                    assert at > self.now, "a hold outlived its payment window"
                    assert s.extra(n).warned == (at - warn <= self.now)
            if self.now >= s.spec.ends_at + 60 * self.policy.no_show_grace_minutes:
                assert s.swept, "the no-show sweep did not run"
                assert s.in_state(BOOKED_STATE) == s.in_state(HELD_STATE) == []
                for n, patient, _, _, state, _, extra in before[sid]:
                    if state == BOOKED_STATE:  # swept in this tick
                        assert s.booking(n)[2] == NO_SHOW_STATE
                        refund = s.spec.fee if extra.paid and self.policy.no_show_refund else 0
                        assert s.extra(n).refunded == refund
                        assert (patient, NO_SHOW, s.booking_id(n)) in self.violations
            if self.status(sid) == CLOSED:
                assert s.waiting == 0

    # ----- invariants --------------------------------------------------------------------

    @invariant()
    def transitions_are_legal(self):
        for sid in SIDS:
            for n, _, _, _, state, _, _ in self.rows(sid):
                old = self.states.get((sid, n))
                assert state in ALLOWED[old], f"{sid}.{n}: {old} → {state}"
                if old is None:
                    assert state == (HELD_STATE if self.session(sid).spec.fee else BOOKED_STATE)
                self.states[sid, n] = state
                if state == REVOKED_STATE:
                    info = self.session(sid).info(n)
                    assert (info.status, info.cancelled_by) == ("cancelled", "hospital")

    @invariant()
    def stock_is_conserved_and_no_slot_is_held_twice(self):
        for sid in SIDS:
            s = self.session(sid)
            occupying = [r for r in self.rows(sid) if r[4] in OCCUPYING]
            slots = [r[3] for r in occupying]
            assert len(slots) == len(set(slots)), "a slot held by two bookings"
            assert s.free + s.held_back + len(occupying) == s.spec.capacity
            assert s.held == sum(r[4] == HELD_STATE for r in occupying)
            for r in occupying:
                assert s.holders[r[3] - 1] == r[0]
            assert sum(h < RETURNING for h in s.holders) == len(occupying)
            assert sum(h == RETURNING for h in s.holders) == s.held_back
            # a free slot is never left while someone waits for it
            if self.status(sid) == OPEN:
                assert s.waiting == 0

    @invariant()
    def day_limits_hold(self):
        live = self.occupying()
        for sids in live.values():
            assert len(sids) <= self.policy.hospital_day_limit
            departments = Counter(self.session(sid).spec.department_id for sid in sids)
            assert max(departments.values()) <= self.policy.department_day_limit
        assert {p: sorted(x.id for x in self.shard.live_sessions(p)) for p in self.shard.live} == {
            p: sorted(sids) for p, sids in live.items()
        }

    @invariant()
    def money_is_conserved(self):
        paid_total = refunded_total = kept_total = 0
        for sid in SIDS:
            s = self.session(sid)
            for n, _, _, _, state, _, extra in self.rows(sid):
                bid = s.booking_id(n)
                paid = s.spec.fee if extra.paid else 0
                assert paid == self.payments[bid], "paid without a payment, or lost one"
                assert self.refunds[bid] == extra.refunded
                assert 0 <= extra.refunded <= paid
                if state == REVOKED_STATE:
                    assert extra.refunded == paid
                # a booking that ends unpaid voids any payment still on its way, once
                ended_unpaid = state not in OCCUPYING and not extra.paid
                assert self.voids[bid] == ended_unpaid
                paid_total += paid
                refunded_total += extra.refunded
                kept_total += paid - extra.refunded
        assert sum(self.payments.values()) == paid_total == refunded_total + kept_total
        assert sum(self.refunds.values()) == refunded_total

    @invariant()
    def codes_only_once_booked(self):
        for sid in SIDS:
            for n, _, _, _, state, _, extra in self.rows(sid):
                bid = self.session(sid).booking_id(n)
                if state == HELD_STATE:
                    assert extra.code == 0, f"{bid} has a code while held"
                    assert self.session(sid).info(n).verification_code is None
                if state in (BOOKED_STATE, CHECKED_IN_STATE, NO_SHOW_STATE):
                    assert 1 <= extra.code <= 99_999_999
                old = self.codes.setdefault((sid, n), extra.code) if extra.code else None
                assert old in (None, extra.code), f"{bid}'s code changed"
                if extra.code == 0:
                    assert (sid, n) not in self.codes, f"{bid} lost its code"

    @invariant()
    def a_hold_is_warned_once_with_a_notice(self):
        assert all(count == 1 for count in self.warnings.values())
        for sid in SIDS:
            for n, _, _, _, state, _, extra in self.rows(sid):
                if state == HELD_STATE:
                    assert self.warnings[self.session(sid).booking_id(n)] == extra.warned


Lifecycle.TestCase.settings = settings(
    max_examples=500, stateful_step_count=80, deadline=None, print_blob=True
)
TestLifecycle = Lifecycle.TestCase


# ----- a few walks through by hand -----------------------------------------------------------


def one_session(fee: int = 500, **policy) -> Shard:
    shard = Shard(f"h:{DATE}", "h", DATE, Policy(**{**POLICY, **policy}), zone=ZONE)
    shard.create(
        helpers.spec(
            id="s0",
            hospital_id="h",
            department_id="d0",
            doctor_id="doc",
            date=DATE,
            capacity=1,
            fee=fee,
            opens_at=T0,
            closes_at=AM,
            starts_at=AM,
        )
    )
    shard.take_changes()
    return shard


@pytest.mark.parametrize(
    ("hours_before", "refund"),
    [(21, 500), (20, 500), (20 - 1 / 3600, 350), (17, 350), (17 - 1 / 3600, 200), (16.5, 200)],
)
def test_a_paid_booking_cancelled_by_its_patient_is_refunded_by_the_tiers(hours_before, refund):
    shard = one_session()
    shard.book("s0", 1, 1, T0)
    shard.pay("s0", 0, 1, T0 + 10)
    shard.take_changes()
    now = AM - hours_before * HOUR
    assert shard.release("s0", 0, 1, now) == Released("s0.0", 1, refund=refund)
    events = shard.take_changes().events
    assert ["refund", "s0.0", 1, refund, "cancelled"] in events
    assert ["violation", "h", "h", 1, CANCEL, "s0.0", now] in events
    assert shard.lookup("s0", 0).refunded == refund


def test_a_waitlisted_patient_gets_the_freed_slot_as_a_hold():
    shard = one_session()
    shard.book("s0", 1, 1, T0)
    assert shard.join_waitlist("s0", 2, 7, T0 + 1) == Waitlisted("s0", 1)
    assert shard.join_waitlist("s0", 3, 7, T0 + 2) == Waitlisted("s0", 2)
    shard.take_changes()
    shard.tick(T0 + 900)  # patient 1's hold expires
    assert [shard.lookup("s0", n).status for n in (0, 1)] == ["expired", "held"]
    assert shard.lookup("s0", 1).patient_id == 2
    assert shard.sessions["s0"].request_of(1) == 7
    kinds = [e[1] for e in shard.take_changes().events if e[0] == "notice"]
    assert kinds == ["expired", "waitlist_promoted"]
    assert shard.sessions["s0"].waitlist_position(3) == 1


def test_a_freed_slot_skips_waiting_patients_who_no_longer_pass_the_rules():
    shard = one_session(waitlist_limit=10)
    other = replace(shard.sessions["s0"].spec, id="s1", fee=0, capacity=2)  # same department
    shard.create(other)
    shard.book("s0", 1, 1, T0)
    for patient in (2, 3, 4, 5):
        assert isinstance(shard.join_waitlist("s0", patient, 7, T0 + 1), Waitlisted)
    assert isinstance(shard.book("s1", 2, 1, T0 + 2), Booked)  # one per department
    shard.set_rules(shard.policy, {3: T0 + 86400})  # banned meanwhile
    shard.take_changes()
    shard.tick(T0 + 900)  # patient 1's hold expires
    notices = [(e[1], e[2], e[6].get("reason")) for e in shard.take_changes().events
               if e[0] == "notice"]  # fmt: skip
    assert notices == [
        ("expired", 1, None),
        ("waitlist_skipped", 2, "DepartmentDayLimit"),
        ("waitlist_skipped", 3, "Blacklisted"),
        ("waitlist_promoted", 4, None),
    ]
    assert (shard.lookup("s0", 1).patient_id, shard.lookup("s0", 1).status) == (4, "held")
    assert shard.sessions["s0"].waitlist_position(5) == 1


def test_wrong_codes_lock_the_booking_after_the_policy_tries():
    shard = one_session(fee=0, check_in_max_tries=3)
    booked = shard.book("s0", 1, 1, T0)
    code = format_code(shard.sessions["s0"].extra(0).code)
    assert booked.verification_code == code
    assert shard.check_in("s0", 0, code, VISIT_DAY - 1) == NotVisitDay(DATE)
    wrong = "x" * 8
    assert shard.check_in("s0", 0, wrong, VISIT_DAY) == WrongCode("s0.0", 2)
    assert shard.check_in("s0", 0, wrong, VISIT_DAY) == WrongCode("s0.0", 1)
    assert shard.check_in("s0", 0, wrong, VISIT_DAY) == Locked("s0.0")
    assert shard.check_in("s0", 0, code, VISIT_DAY) == Locked("s0.0")


def test_the_highest_try_limit_fits_the_packed_tries():
    """Wrong tries are kept in 4 bits: a limit of 15 still locks, 16 is refused."""
    shard = one_session(fee=0, check_in_max_tries=15)
    shard.book("s0", 1, 1, T0)
    answers = [shard.check_in("s0", 0, "wrong", VISIT_DAY) for _ in range(20)]
    assert answers[13] == WrongCode("s0.0", 1)
    assert answers[14:] == [Locked("s0.0")] * 6
    with pytest.raises(ValueError):
        Policy(check_in_max_tries=16)


@pytest.mark.parametrize(
    ("booked_at", "expires_at"),
    [(AM - 3600, AM - 2700), (AM - 900, AM), (AM - 300, AM), (AM - 30, AM + 30)],
)
def test_a_hold_ends_by_the_first_slot_but_lasts_a_minute(booked_at, expires_at):
    shard = one_session()
    assert shard.book("s0", 1, 1, booked_at).hold_expires_at == expires_at


@pytest.mark.parametrize("refund", [True, False])
def test_the_no_show_sweep_after_the_grace_period(refund):
    shard = one_session(no_show_refund=refund)
    shard.book("s0", 1, 1, T0)
    shard.pay("s0", 0, 1, T0 + 10)
    shard.take_changes()
    sweep = AM + 10 * 60 + 30 * 60  # one 10-minute slot, 30 minutes' grace
    shard.tick(sweep - 1)
    assert shard.lookup("s0", 0).status == "booked"
    shard.tick(sweep)
    info = shard.lookup("s0", 0)
    assert (info.status, info.refunded) == ("no_show", 500 if refund else 0)
    events = shard.take_changes().events
    assert ["violation", "h", "h", 1, NO_SHOW, "s0.0", sweep] in events
    assert (["refund", "s0.0", 1, 500, "no_show"] in events) == refund
    shard.tick(sweep + 3600)
    assert not shard.take_changes().events, "the sweep runs once"


def test_suspension_revokes_refunds_and_empties_the_waitlist():
    shard = one_session()
    shard.book("s0", 1, 1, T0)
    shard.pay("s0", 0, 1, T0 + 10)
    shard.join_waitlist("s0", 2, 2, T0 + 20)
    shard.take_changes()
    assert shard.suspend("s0", T0 + 30) == SuspendDone("s0", 1, 500)
    assert shard.lookup("s0", 0).cancelled_by == "hospital"
    events = shard.take_changes().events
    assert ["refund", "s0.0", 1, 500, "suspended"] in events
    assert [e[2] for e in events if e[:2] == ["notice", "suspended"]] == [1, 2]
    assert not [e for e in events if e[0] == "violation"]
    assert shard.book("s0", 3, 3, T0 + 40) == Suspended("s0")
    # the money of a paid booking follows its own refund (paid=True): no second refund
    assert shard.pay("s0", 0, 1, T0 + 50) == NotPayable("s0.0", "cancelled", paid=True)


def test_a_hold_paid_after_its_window_is_not_payable_and_expires():
    shard = one_session(return_jitter_seconds=0)
    shard.book("s0", 1, 1, T0)
    shard.take_changes()
    assert shard.pay("s0", 0, 1, T0 + 900) == NotPayable("s0.0", "expired")
    assert ["void", "s0.0", 1] in shard.take_changes().events
    assert shard.pay("s0", 0, 1, T0 + 901) == NotPayable("s0.0", "expired")
    assert isinstance(shard.book("s0", 2, 2, T0 + 902), Booked)
    assert shard.book("s0", 3, 3, T0 + 903) == SoldOut("s0")
    assert shard.book("s0", 3, 3, AM) == Closed("s0")
    assert shard.book("s0", 3, 3, T0 - 1) == NotOpen("s0", T0)
