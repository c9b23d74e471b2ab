"""The booking lifecycle through the real stack (Ray hosts, the courier, Redis) with a moved clock.

Each test moves its namespace's one clock (``Engine.advance_clock``), which also fires every
host's timers and carries the outbox out, and then checks the stored truth: booking states,
the sandbox gateway's ledger, the notices and the conduct records.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import ray

from engine.client import Engine
from engine.core.policy import FeeTier, Policy
from engine.core.session import SessionSpec
from engine.outcomes import (
    Blacklisted,
    Booked,
    BookingInfo,
    CheckedIn,
    Closed,
    Created,
    NotOpen,
    NotPayable,
    NotVisitDay,
    Paid,
    Released,
    SessionState,
    SoldOut,
    SuspendDone,
    Suspended,
    Waitlisted,
    WrongCode,
)
from engine.store.notices import patient_notices
from engine.tools.audit import audit
from tests import helpers

pytestmark = pytest.mark.on_cluster  # each test also runs on a Redis Cluster

ZONE = ZoneInfo("Asia/Shanghai")
HOUR, DAY = 3600.0, 86400.0


def visit_start(now: float, days: int, hhmm: str = "08:00") -> float:
    day = dt.datetime.fromtimestamp(now, ZONE).date() + dt.timedelta(days=days)
    hour, minute = (int(x) for x in hhmm.split(":"))
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).timestamp()


def spec(
    sid: str,
    hospital: str,
    start: float,
    *,
    capacity=3,
    fee=0,
    department="d1",
    opens_at: float | None = None,
    closes_at: float | None = None,
) -> SessionSpec:
    day = dt.datetime.fromtimestamp(start, ZONE)
    return helpers.spec(
        id=sid,
        hospital_id=hospital,
        department_id=department,
        doctor_id=f"doc-{sid}",
        date=day.date().isoformat(),
        capacity=capacity,
        first_slot_minute=day.hour * 60 + day.minute,
        fee=fee,
        opens_at=start - 7 * DAY if opens_at is None else opens_at,
        closes_at=start if closes_at is None else closes_at,
        starts_at=start,
    )


async def create(engine: Engine, *specs: SessionSpec) -> None:
    outcomes = await asyncio.gather(*(engine.create_session(s) for s in specs))
    assert all(isinstance(o, Created) for o in outcomes), outcomes


async def status_of(engine: Engine, booking_id: str) -> BookingInfo:
    info = await engine.booking(booking_id)
    assert isinstance(info, BookingInfo), info
    return info


async def notice_kinds(engine: Engine, patient: int) -> list[str]:
    notices = await patient_notices(engine.store.client, engine.store.keys, patient)
    return [n["kind"] for n in reversed(notices)]


async def check_money(engine: Engine) -> tuple[int, int]:
    """Money is conserved per booking: the gateway's refunds equal the engine's, and
    paid = refunded + kept. Returns (paid, refunded) in total."""
    await engine.drain_outbox()
    paid = refunded = 0
    for booking_id, payment in (await engine.gateway.ledger()).items():
        info = await status_of(engine, booking_id)
        assert 0 <= payment.refunded <= payment.amount == info.fee
        if info.paid:  # the engine took this payment: its refund decision is what was paid back
            assert payment.refunded == info.refunded, (booking_id, payment, info)
        else:  # the engine never took it (late payment): all of it went back
            assert payment.refunded == payment.amount, (booking_id, payment, info)
        paid += payment.amount
        refunded += payment.refunded
    report = await audit(engine.store)  # the auditor agrees
    assert report.ok, report.problems
    assert (report.money_in, report.money_back, report.outbox_pending) == (paid, refunded, 0)
    return paid, refunded


async def test_expiry_and_cancellation_return_slots_to_the_waitlist_in_order(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("h1", Policy(hold_seconds=600))
    start = visit_start(now, 3)
    await create(engine, spec("w1", "h1", start, capacity=2, fee=1000))
    b1 = await engine.book("w1", 1, "r1")
    b2 = await engine.book("w1", 2, "r2")
    assert (b1.status, b2.status) == ("held", "held")
    assert b1.verification_code is None
    assert isinstance(await engine.book("w1", 3, "r3"), SoldOut)
    for position, patient in enumerate((3, 4, 5), start=1):
        joined = await engine.join_waitlist("w1", patient, f"w{patient}")
        assert joined == Waitlisted("w1", position)
    assert (await engine.join_waitlist("w1", 4, "w4")).repeat  # idempotent: same place

    paid = await engine.pay(b1.booking_id, 1)
    assert isinstance(paid, Paid)
    assert len(paid.verification_code) == 8
    assert (await engine.pay(b1.booking_id, 1)) == Paid(b1.booking_id, paid.verification_code, True)

    await engine.advance_clock(401)  # 200 s before the end of b2's hold: a warning
    assert await notice_kinds(engine, 2) == ["hold_expiring"]
    await engine.advance_clock(200)  # b2's hold expires: its slot goes to patient 3
    assert (await status_of(engine, b2.booking_id)).status == "expired"
    promoted = await engine.book("w1", 3, "w3")  # the waitlist request id names the booking
    assert isinstance(promoted, Booked)
    assert promoted.repeat
    assert promoted.status == "held"
    assert promoted.slot_no == b2.slot_no
    assert isinstance(await engine.pay(promoted.booking_id, 3), Paid)

    cancelled = await engine.release(b1.booking_id, 1)  # 3 days ahead: free cancellation
    assert cancelled == Released(b1.booking_id, b1.slot_no, False, refund=1000)
    to_four = await engine.book("w1", 4, "w4")
    assert isinstance(to_four, Booked)
    assert to_four.status == "held"
    assert (await engine.leave_waitlist("w1", 5)).session_id == "w1"
    await engine.advance_clock(601)  # patient 4 lets the hold go; nobody waits any more
    state = await engine.session_state("w1")
    assert isinstance(state, SessionState)
    assert (state.status, state.remaining, state.waiting) == ("sold_out", 0, 0), "held back"
    await engine.advance_clock(60)  # within the policy's return_jitter_seconds it comes back
    state = await engine.session_state("w1")
    assert (state.status, state.remaining, state.waiting) == ("open", 1, 0)

    await engine.drain_outbox()
    assert await notice_kinds(engine, 2) == ["hold_expiring", "expired"]
    assert await notice_kinds(engine, 3) == ["waitlist_promoted", "confirmed"]
    assert await notice_kinds(engine, 1) == ["confirmed", "cancelled"]
    assert "waitlist_promoted" in await notice_kinds(engine, 4)
    assert await check_money(engine) == (2000, 1000)
    assert (await audit(engine.store)).ok
    await engine.close()


async def test_cancellations_racing_new_bookings_never_skip_the_waitlist(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await create(engine, spec("race", "h1", visit_start(now, 3), capacity=5))
    holders = [await engine.book("race", p, f"b{p}") for p in range(1, 6)]
    waiting = list(range(100, 110))
    for p in waiting:
        assert isinstance(await engine.join_waitlist("race", p, f"w{p}"), Waitlisted)
    newcomers = range(1000, 1300)

    outcomes = await asyncio.gather(
        *(engine.release(b.booking_id, p) for p, b in zip(range(1, 6), holders, strict=True)),
        *(engine.book("race", p, f"n{p}") for p in newcomers),
    )
    assert all(isinstance(o, Released) for o in outcomes[:5])
    assert all(isinstance(o, SoldOut) for o in outcomes[5:]), "a newcomer jumped the waitlist"
    listed = await engine.session_bookings("race")
    live = [(b.patient_id, b.slot_no) for b in listed.bookings if b.status == "booked"]
    assert sorted(p for p, _ in live) == waiting[:5]  # the first five in line, nobody skipped
    assert sorted(s for _, s in live) == [1, 2, 3, 4, 5]
    state = await engine.session_state("race")
    assert (state.remaining, state.waiting) == (0, 5)
    report = await audit(engine.store)
    assert report.ok, report.problems
    await engine.close()


async def test_no_show_sweep_refunds_and_bans_escalate(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    first = visit_start(now, 2)
    await create(engine, spec("ns1", "h1", first, capacity=3, fee=500))
    a = await engine.book("ns1", 1, "a")
    b = await engine.book("ns1", 2, "b")
    for patient, booking in ((1, a), (2, b)):
        assert isinstance(await engine.pay(booking.booking_id, patient), Paid)
    code_b = (await status_of(engine, b.booking_id)).verification_code
    assert code_b is not None
    assert isinstance(await engine.check_in(b.booking_id, code_b), NotVisitDay)  # not yet

    # the visit day: patient 2 checks in (after one wrong code), patient 1 never comes
    now = await engine.advance_clock(first - HOUR - now)
    wrong = "00000000" if code_b != "00000000" else "11111111"
    assert await engine.check_in(b.booking_id, wrong) == WrongCode(b.booking_id, 4)
    assert isinstance(await engine.check_in(b.booking_id, code_b), CheckedIn)
    # past the cutoff (end of the last slot + 30 minutes of grace): the sweep runs
    now = await engine.advance_clock(3 * 10 * 60 + 31 * 60 + HOUR)
    assert (await status_of(engine, a.booking_id)).status == "no_show"
    assert (await status_of(engine, b.booking_id)).status == "checked_in"
    conduct = (await engine.conduct(1))["h1"]
    assert [v.kind for v in conduct.violations] == ["no_show"]
    until = conduct.banned_until(now)
    assert until is not None
    assert abs(until - (now + 30 * DAY)) < 5
    assert await check_money(engine) == (1000, 500)  # the seed's rule: a no-show is refunded
    assert "no_show" in await notice_kinds(engine, 1)
    assert "banned" in await notice_kinds(engine, 1)

    # banned at h1 (any date), not at h2
    later = visit_start(now, 3)
    await create(engine, spec("ns2", "h1", later), spec("other", "h2", later))
    refused = await engine.book("ns2", 1, "c")
    assert isinstance(refused, Blacklisted)
    assert refused.hospital_id == "h1"
    assert isinstance(await engine.book("other", 1, "c"), Booked)

    # after the ban: a second no-show within the year earns the second, longer ban
    now = await engine.advance_clock(31 * DAY)
    third = visit_start(now, 1)
    await create(engine, spec("ns3", "h1", third))
    assert isinstance(await engine.book("ns3", 1, "d"), Booked)
    now = await engine.advance_clock(third + 2 * HOUR - now)
    conduct = (await engine.conduct(1))["h1"]
    assert len(conduct.bans) == 2
    assert abs(conduct.bans[1].until - conduct.bans[1].start - 60 * DAY) < 1
    await engine.close()


async def test_platform_bans_reach_every_hospital(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("strict", Policy(ban_scope="platform"))
    start = visit_start(now, 1)
    await create(engine, spec("p1", "strict", start), spec("p2", "h2", start + 2 * DAY))
    assert isinstance(await engine.book("p1", 7, "x"), Booked)
    await engine.advance_clock(start + 2 * HOUR - now)
    refused = await engine.book("p2", 7, "y")
    assert isinstance(refused, Blacklisted)
    assert refused.hospital_id == "platform"
    assert "platform" in await engine.conduct(7)
    assert isinstance(await engine.book("p2", 8, "y"), Booked)  # others are unaffected
    await engine.close()


async def test_suspension_cancels_refunds_and_notifies_everyone(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await create(engine, spec("sus", "h1", visit_start(now, 4), capacity=5, fee=800))
    bookings = [await engine.book("sus", p, f"r{p}") for p in range(1, 5)]
    for p, b in zip(range(1, 4), bookings, strict=False):  # patient 4 keeps an unpaid hold
        assert isinstance(await engine.pay(b.booking_id, p), Paid)
    done = await engine.suspend("sus")
    assert done == SuspendDone("sus", cancelled=4, refunded=2400)
    assert (await engine.suspend("sus")).repeat
    assert isinstance(await engine.book("sus", 9, "late"), Suspended)
    state = await engine.session_state("sus")
    assert (state.status, state.held, state.booked) == ("suspended", 0, 0)
    for b in bookings:
        info = await status_of(engine, b.booking_id)
        assert (info.status, info.cancelled_by) == ("cancelled", "hospital")
    assert await check_money(engine) == (2400, 2400)
    for p in range(1, 5):
        assert (await notice_kinds(engine, p))[-1] == "suspended"
    await engine.close()


async def test_payment_racing_expiry_never_books_a_late_payment(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("h1", Policy(hold_seconds=60))
    await create(engine, spec("pr", "h1", visit_start(now, 3), capacity=12, fee=300))
    holds = [await engine.book("pr", p, "r") for p in range(1, 13)]
    await engine.advance_clock(58)
    # half pay in time (some racing the clock), half after the window
    racing = await asyncio.gather(
        *(engine.pay(h.booking_id, p) for p, h in zip(range(1, 7), holds, strict=False)),
        engine.advance_clock(3),
    )
    late = []
    for p, h in zip(range(7, 13), holds[6:], strict=True):
        # the money was taken before the window closed, the confirmation comes after it
        await engine.gateway.charge(h.booking_id, p, 300)
        late.append(await engine.pay(h.booking_id, p))
    assert all(isinstance(o, NotPayable) and o.status == "expired" for o in late)
    for p, (outcome, hold) in enumerate(zip(racing[:6], holds, strict=False), start=1):
        info = await status_of(engine, hold.booking_id)
        if isinstance(outcome, Paid):
            assert info.status == "booked"
            assert info.verification_code == outcome.verification_code
        else:
            assert isinstance(outcome, NotPayable), (p, outcome)
            assert info.status == "expired", (p, outcome)
    paid, refunded = await check_money(engine)
    booked = sum(isinstance(o, Paid) for o in racing[:6])
    print(f"{booked} of 6 racing payments beat the expiry")
    assert paid - refunded == 300 * booked  # only bookings keep money; the rest went back
    await engine.close()


async def test_cancellation_fee_tiers_and_cutoff(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    policy = Policy(
        fee_tiers=(FeeTier(2 * 1440, 0), FeeTier(1440, 20), FeeTier(0, 50)),
        cancel_days_before=0,
        cancel_until="07:00",
    )
    await engine.set_policy("h1", policy)
    start = visit_start(now, 3)
    await create(engine, spec("tier", "h1", start, capacity=3, fee=1000))
    books = [await engine.book("tier", p, "r") for p in (1, 2, 3)]
    for p, b in zip((1, 2, 3), books, strict=True):
        assert isinstance(await engine.pay(b.booking_id, p), Paid)
    first = await engine.release(books[0].booking_id, 1)  # > 2 days ahead: free
    assert first.refund == 1000
    now = await engine.advance_clock(start - 1.5 * DAY - now)  # between 1 and 2 days
    assert (await engine.release(books[1].booking_id, 2)).refund == 800
    now = await engine.advance_clock(start - 0.5 * HOUR - now)  # after 07:00 on the day
    late = await engine.release(books[2].booking_id, 3)
    assert type(late).__name__ == "TooLate"
    assert (await status_of(engine, books[2].booking_id)).status == "booked"
    assert await check_money(engine) == (3000, 1800)
    await engine.close()


async def test_release_and_closing_follow_the_clock(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    start = visit_start(now, 3)
    await create(engine, spec("sched", "h1", start, opens_at=now + 100, closes_at=now + 200))
    assert isinstance(await engine.book("sched", 1, "a"), NotOpen)
    await engine.advance_clock(101)
    assert (await engine.session_state("sched")).status == "open"
    assert isinstance(await engine.book("sched", 1, "a"), Booked)
    await engine.advance_clock(100)
    assert (await engine.session_state("sched")).status == "closed"
    assert isinstance(await engine.book("sched", 2, "b"), Closed)
    await engine.close()


async def test_host_restart_keeps_holds_and_timers(runtime):
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("h9", Policy(hold_seconds=300))
    start = visit_start(now, 1)
    await create(engine, spec("rs", "h9", start, capacity=2, fee=100))
    held = await engine.book("rs", 1, "a")
    paid = await engine.book("rs", 2, "b")
    assert isinstance(await engine.pay(paid.booking_id, 2), Paid)
    assert isinstance(await engine.join_waitlist("rs", 3, "w"), Waitlisted)
    victim = runtime.hosts[engine.host_of("h9:" + spec("rs", "h9", start).date)]
    before = (await victim.info.remote())["started_at"]
    ray.kill(victim, no_restart=False)
    for _ in range(100):
        await asyncio.sleep(0.2)
        try:
            if (await victim.info.remote())["started_at"] > before:
                break
        except ray.exceptions.RayActorError:
            continue
    await engine.advance_clock(301)  # the restarted host fires the hold's timer
    assert (await status_of(engine, held.booking_id)).status == "expired"
    promoted = await engine.book("rs", 3, "w")
    assert isinstance(promoted, Booked)
    assert promoted.repeat
    assert promoted.status == "held"
    assert isinstance(await engine.pay(promoted.booking_id, 3), Paid)
    await engine.advance_clock(start + 2 * HOUR - (await engine.load_clock()).now())
    assert (await status_of(engine, paid.booking_id)).status == "no_show"
    assert (await status_of(engine, promoted.booking_id)).status == "no_show"
    await check_money(engine)
    await engine.close()


async def test_a_lost_host_s_holds_expire_on_the_survivor_before_any_request(runtime):
    """A host dead for good (its lease lapsed): the survivor takes up its shards at its next
    tick, so a hold still expires and the waitlist moves on time, with no request for the
    shard to load it there first."""
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("h8", Policy(hold_seconds=300))
    session = spec("lost", "h8", visit_start(now, 1), capacity=1, fee=100)
    await create(engine, session)
    held = await engine.book("lost", 1, "a")
    assert isinstance(await engine.join_waitlist("lost", 2, "w"), Waitlisted)
    index = engine.host_of(session.shard_id)
    ray.kill(runtime.hosts[index], no_restart=True)
    for _ in range(100):  # its lease lapses (lease_seconds), and the engine routes around it
        if engine.host_of(session.shard_id) != index:
            assert index not in (await engine.store.host_view(2)).leased
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the killed host's lease did not lapse")
    await engine.advance_clock(301)  # only the survivor is told to run its timers
    [stored] = await engine.store.read_shard_sessions(session.shard_id)
    assert (stored.ended, stored.waiting, stored.held) == (1, 0, 1), "expired, w promoted"
    assert (await status_of(engine, held.booking_id)).status == "expired"
    promoted = await engine.book("lost", 2, "w")
    assert isinstance(promoted, Booked) and promoted.repeat and promoted.status == "held"
    await engine.close()


async def test_money_after_cancellation_and_unpaid_ends(runtime):
    """Paying again after a cancellation takes nothing back; money that reached the gateway for
    a hold that then ended unpaid (cancelled, suspended) is refunded in full."""
    engine = runtime.engine()
    now = (await engine.load_clock()).now()
    await engine.set_policy("h1", Policy(fee_tiers=(FeeTier(0, 50),)))
    await create(engine, spec("m1", "h1", visit_start(now, 3), capacity=3, fee=1000))
    kept = await engine.book("m1", 1, "a")
    assert isinstance(await engine.pay(kept.booking_id, 1), Paid)
    assert (await engine.release(kept.booking_id, 1)).refund == 500  # the tier keeps half
    again = await engine.pay(kept.booking_id, 1)
    assert isinstance(again, NotPayable)
    assert again.paid
    stranded = await engine.book("m1", 2, "b")  # charged, but the engine never heard of it
    await engine.gateway.charge(stranded.booking_id, 2, 1000)
    assert (await engine.release(stranded.booking_id, 2)).refund == 0
    revoked = await engine.book("m1", 3, "c")
    await engine.gateway.charge(revoked.booking_id, 3, 1000)
    assert (await engine.suspend("m1")).refunded == 0  # the engine took no payment ...
    assert await check_money(engine) == (3000, 2500)  # ... yet every stranded fen went back
    await engine.close()
