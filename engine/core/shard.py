"""The shard: every doctor-session of one hospital on one visit date, and its patient rules.

Every patient rule (≤ N live bookings per hospital-day, ≤ M per department-day, none while on
the hospital's or the platform's blacklist) is scoped to one hospital-day, so one shard decides
all of them with no coordination. The whole booking lifecycle is decided here too: payment,
cancellation with fee tiers, check-in, the no-show sweep, suspension and the waitlist. Pure and
synchronous; time is passed in, the zone for local cutoffs is given.

The shard remembers which doctor-sessions a batch changed and which outbox events it caused
(``take_changes``) so the host can write exactly those, atomically, in one round trip (group
commit). Refunds, notifications and violations leave only through that outbox.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from hmac import compare_digest
from typing import Any

from engine.core.policy import CANCEL, NO_SHOW, PLATFORM, SAME_DAY_CANCEL, Policy, local_date
from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    CHECKED_IN_STATE,
    CLOSED,
    ENDED_STATES,
    EXPIRED_STATE,
    FORGOTTEN_WORDS,
    HELD_STATE,
    NO_BOOKING,
    NO_SHOW_STATE,
    OPEN,
    REVOKED_STATE,
    SOLD_OUT,
    STATE_NAMES,
    DoctorSession,
    Extra,
    SessionSpec,
    format_code,
)
from engine.outcomes import (
    Blacklisted,
    BookingInfo,
    Bookings,
    BookOutcome,
    CheckedIn,
    CheckInOutcome,
    Conflict,
    Created,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    JoinOutcome,
    LeftWaitlist,
    Locked,
    NotFound,
    NotPayable,
    NotSoldOut,
    NotVisitDay,
    Paid,
    PayOutcome,
    Released,
    ReleaseOutcome,
    SessionState,
    SuspendDone,
    TooLate,
    Waitlisted,
    WaitlistFull,
    WrongCode,
    WrongState,
)

_NO_SESSION = NotFound("session")
_NO_BOOKING = NotFound("booking")
WARN_SECONDS = 300  # "hold expiring" goes out this long before expiry (a third of short holds)

# Outbox events, written in the same commit as the state that caused them (msgpack lists):
#   ["notice", kind, patient, booking_id, session_id, at, {details}]
#   ["refund", booking_id, patient, amount, reason]      amount in fen, from the payment
#   ["void", booking_id, patient]                        refund any payment the engine never took
#   ["violation", scope, hospital_id, patient, kind, booking_id, at]
#   ["hold_release", scope, hospital_id, patient, booking_id, at, local date]
#       a hold let go unpaid (expired, or cancelled by the patient): past the policy's
#       ``free_hold_releases`` a day, the courier records it as a ``hold_abuse`` violation
Event = list[Any]
KEEP_ENDED, KEEP_FORGOTTEN = 256, 4096  # defaults of Settings.ended_kept / idempotency_kept


def random_delay(most: int) -> int:
    """Seconds a freed slot is held back: uniform in 1..most (``secrets``: not guessable);
    never 0, so a slot is never back in the second it was freed (a scalper's handover)."""
    return 1 + secrets.randbelow(most) if most > 0 else 0


class CodeSource:
    """8-digit verification codes (1..99,999,999; 0 means "none yet") from ``secrets``, drawn
    4 KB at a time: one ``secrets.randbelow`` per booking was a fifth of a booking's cost.
    Uniform: 32-bit draws at or above the largest multiple of the range are thrown away."""

    SPAN = 99_999_999
    LIMIT = (1 << 32) // SPAN * SPAN

    def __init__(self) -> None:
        self._buffer = array("I")

    def __call__(self) -> int:
        buffer = self._buffer
        while True:
            if not buffer:
                buffer.frombytes(secrets.token_bytes(4096))
            value = buffer.pop()
            if value < self.LIMIT:
                return value % self.SPAN + 1


new_code = CodeSource()


@dataclass(slots=True)
class Changes:
    """What one batch changed in a shard: the snapshots to write, the stock to publish and
    the outbox events to hand on (all written in one commit)."""

    sessions: dict[str, DoctorSession] = field(default_factory=dict)
    new_session_ids: list[str] = field(default_factory=list)
    new_bookings: list[tuple[int, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sessions)


class Shard:
    """All doctor-sessions of one hospital on one date, plus the hospital's rules for it."""

    __slots__ = (
        "_changes",
        "blacklist",
        "date",
        "delay",
        "hospital_id",
        "id",
        "keep",
        "live",
        "new_code",
        "platform_blacklist",
        "policy",
        "sessions",
        "zone",
    )

    def __init__(
        self,
        shard_id: str,
        hospital_id: str,
        date: str,
        policy: Policy | None = None,
        blacklist: dict[int, float] | None = None,
        platform_blacklist: dict[int, float] | None = None,
        zone: dt.tzinfo = dt.UTC,
        new_code: Callable[[], int] = new_code,
        keep: tuple[int, int] = (KEEP_ENDED, KEEP_FORGOTTEN),
        delay: Callable[[int], int] = random_delay,
    ) -> None:
        """``keep``: (ended bookings a session keeps whole, compacted request keys it keeps);
        ``delay(most)``: the seconds a freed slot nobody waits for is held back."""
        self.id = shard_id
        self.keep = keep
        self.delay = delay
        self.hospital_id = hospital_id
        self.date = date
        self.policy = policy or Policy()
        self.blacklist: dict[int, float] = blacklist or {}
        self.platform_blacklist: dict[int, float] = platform_blacklist or {}
        self.zone = zone
        self.new_code = new_code
        self.sessions: dict[str, DoctorSession] = {}
        # patient → the doctor-session of their live booking here, or a tuple of them when
        # they hold several (one entry per booking; a bare session saves a tuple per patient)
        self.live: dict[int, DoctorSession | tuple[DoctorSession, ...]] = {}
        self._changes = Changes()

    # ----- booking -------------------------------------------------------------------------

    def book(self, session_id: str, patient: int, request: int, now: float) -> BookOutcome:
        """Decide one booking request. Invariants 1, 2, 4 and 5 of DESIGN.md hold here:

        a repeated (patient, request) gets its first answer's booking; a session that is not
        open refuses without change; the rules are checked against this shard's live bookings;
        otherwise the lowest free slot is taken.
        """
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        booking_no = session.find(patient, request)
        if booking_no >= 0:
            return session.answer(booking_no, repeat=True)
        if session.forgotten and (forgotten := session.find_forgotten(patient, request)) >= 0:
            return session.forgotten_answer(forgotten)
        status = session.status(now)
        if status != OPEN:
            return session.refusal(status)
        if patient in self.live or patient in self.blacklist or patient in self.platform_blacklist:
            refusal = self._refusal(session, patient, now)  # the common case skips this call
            if refusal is not None:
                return refusal
        return self._take(session, patient, request, now)

    def _refusal(
        self, session: DoctorSession, patient: int, now: float
    ) -> Blacklisted | HospitalDayLimit | DepartmentDayLimit | None:
        """The patient rule that forbids this patient a new booking here, if any."""
        for scope, bans in (
            (self.hospital_id, self.blacklist),
            (PLATFORM, self.platform_blacklist),
        ):
            until = bans.get(patient)
            if until is not None and until > now:
                return Blacklisted(scope, until)
        mine = self.live.get(patient)
        if mine is not None:
            policy = self.policy
            held = mine if type(mine) is tuple else (mine,)
            if len(held) >= policy.hospital_day_limit:
                return HospitalDayLimit(policy.hospital_day_limit)
            department = session.spec.department_id
            in_department = sum(1 for s in held if s.spec.department_id == department)
            if in_department >= policy.department_day_limit:
                return DepartmentDayLimit(policy.department_day_limit)
        return None

    def _take(self, session: DoctorSession, patient: int, request: int, now: float) -> Any:
        mine = self.live.get(patient)
        if mine is None:
            self.live[patient] = session
        else:
            self.live[patient] = (*(mine if type(mine) is tuple else (mine,)), session)
        changes = self._changes
        changes.sessions[session.id] = session
        if session.count >= session.spec.capacity + 16 * self.keep[0]:  # never fills up
            session.compact(now, self.keep[0], self.keep[1], force=True)
        hold, code = self.policy.hold_seconds, 0
        if session.spec.fee == 0:
            code = self.new_code()  # booked at once; a hold gets its code when paid
        elif now + hold > (start := session.spec.visit_at):  # a hold ends by the first slot
            hold = max(60, int(start - now))
        booked = session.take(patient, request, now, hold, code)
        if booked.hold_expires_at is not None:  # the earliest this hold needs the timer
            session.due = min(session.due, booked.hold_expires_at - WARN_SECONDS)
        changes.new_bookings.append((patient, booked.booking_id))
        if booked.verification_code is not None:
            self._notice(
                "confirmed",
                patient,
                booked.booking_id,
                session,
                now,
                slot_no=booked.slot_no,
                slot_time=booked.slot_time,
            )
        return booked

    # ----- the lifecycle -------------------------------------------------------------------

    def _own(
        self, session_id: str, number: int, patient: int | None
    ) -> tuple[DoctorSession, int, int, int, int, int] | NotFound | Forbidden:
        """(session, row, owner, slot_no, state, time) of booking ``number``, if the patient
        (None: the hospital) may act on it."""
        session = self.sessions.get(session_id)
        row = -1 if session is None else session.row_of(number)
        if row < 0:
            return _NO_BOOKING
        owner, slot_no, state, at = session.booking(row)  # type: ignore[union-attr]
        if patient is not None and owner != patient:
            return Forbidden(session.booking_id(row))  # type: ignore[union-attr]
        return session, row, owner, slot_no, state, at  # type: ignore[return-value]

    def pay(self, session_id: str, booking_no: int, patient: int | None, now: float) -> PayOutcome:
        """A payment arrived for a booking: a live hold becomes booked and gets its code.

        Paying again answers the same code. A hold whose window has passed is expired now
        (even if the timer has not run yet) and answered ``NotPayable``: the caller refunds."""
        own = self._own(session_id, booking_no, patient)
        if not isinstance(own, tuple):
            return own
        session, booking_no, owner, _, state, expires = own
        booking_id = session.booking_id(booking_no)
        extra = session.extra(booking_no)
        if state in (BOOKED_STATE, CHECKED_IN_STATE, NO_SHOW_STATE):
            return Paid(booking_id, format_code(extra.code), repeat=True)
        if state == HELD_STATE and (expires <= now or session.swept):
            self._expire(session, booking_no, owner, now)
            return NotPayable(booking_id, STATE_NAMES[EXPIRED_STATE])
        if state != HELD_STATE:
            return NotPayable(booking_id, STATE_NAMES[state], extra.paid)
        code = self.new_code()
        session.move(booking_no, BOOKED_STATE, now, Extra(code=code, paid=True))
        self._touch(session)
        _, slot_no, _, _ = session.booking(booking_no)
        self._notice(
            "confirmed",
            owner,
            booking_id,
            session,
            now,
            slot_no=slot_no,
            slot_time=session.slot_time(slot_no),
        )
        return Paid(booking_id, format_code(code))

    def release(
        self, session_id: str, booking_no: int, patient: int | None, now: float = 0.0
    ) -> ReleaseOutcome:
        """退号: give a held or booked slot back (invariant 6: exactly that slot returns).

        ``patient`` None means the hospital cancels (full refund, no violation). A patient
        must cancel before the policy's cutoff; the fee tiers decide the refund. Cancelling
        an ended booking again answers the same (idempotent). The slot goes to the first
        patient on the waitlist, if any.
        """
        own = self._own(session_id, booking_no, patient)
        if not isinstance(own, tuple):
            return own
        session, booking_no, owner, slot_no, state, _ = own
        booking_id = session.booking_id(booking_no)
        extra = session.extra(booking_no)
        if state in ENDED_STATES and state != EXPIRED_STATE:
            return Released(booking_id, slot_no, True, extra.refunded, STATE_NAMES[state])
        if state not in (HELD_STATE, BOOKED_STATE):
            return WrongState(booking_id, STATE_NAMES[state])
        spec = session.spec
        if patient is None:
            refund = spec.fee if extra.paid else 0
            self._end(
                session, booking_no, owner, REVOKED_STATE, now, refund, "cancelled", by="hospital"
            )
        else:
            cutoff = self.policy.cancel_cutoff(dt.date.fromisoformat(spec.date), self.zone)
            if now >= cutoff:
                return TooLate("cancel", cutoff)
            refund = self.policy.refund_for_cancel(spec.fee, extra.paid, spec.visit_at, now)
            self._end(
                session, booking_no, owner, CANCELLED_STATE, now, refund, "cancelled", by="patient"
            )
            if state == BOOKED_STATE:
                self._violation(owner, CANCEL, booking_id, now)
                if local_date(now, self.zone) == spec.date:
                    self._violation(owner, SAME_DAY_CANCEL, booking_id, now)
            else:  # a hold let go: free a few times a day, then hold_abuse (the courier counts)
                self._hold_release(owner, booking_id, now)
        self._freed(session, slot_no, now)
        return Released(booking_id, slot_no, False, refund)

    def check_in(self, session_id: str, booking_no: int, code: str, now: float) -> CheckInOutcome:
        """取号: the hospital checks a booking in with its verification code, on the visit day.

        Wrong codes are counted; after ``check_in_max_tries`` the booking is locked."""
        own = self._own(session_id, booking_no, None)
        if not isinstance(own, tuple):
            return own
        session, booking_no, owner, slot_no, state, _ = own
        booking_id = session.booking_id(booking_no)
        if state == CHECKED_IN_STATE:
            return CheckedIn(booking_id, slot_no, session.slot_time(slot_no), owner, repeat=True)
        if state != BOOKED_STATE:
            return WrongState(booking_id, STATE_NAMES[state])
        if local_date(now, self.zone) != session.spec.date:
            return NotVisitDay(session.spec.date)
        extra = session.extra(booking_no)
        limit = self.policy.check_in_max_tries
        if extra.tries >= limit or extra.code == 0:  # 0: booked before codes existed
            return Locked(booking_id)
        if compare_digest(format_code(extra.code).encode(), code.encode()):
            session.move(booking_no, CHECKED_IN_STATE, now)
            self._touch(session)
            return CheckedIn(booking_id, slot_no, session.slot_time(slot_no), owner)
        tries = extra.tries + 1
        session.set_extra(booking_no, replace(extra, tries=tries))
        self._touch(session)
        return Locked(booking_id) if tries >= limit else WrongCode(booking_id, limit - tries)

    def suspend(self, session_id: str, now: float) -> SuspendDone | NotFound:
        """停诊: revoke and fully refund every held or booked booking, empty the waitlist and
        answer ``suspended`` from now on. Suspending again changes nothing."""
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        if session.suspended:
            return SuspendDone(session_id, 0, 0, repeat=True)
        session.suspended = True
        cancelled = refunded = 0
        for booking_no, owner, _ in session.live_bookings():
            _, _, state, _ = session.booking(booking_no)
            if state not in (HELD_STATE, BOOKED_STATE):
                continue
            refund = session.spec.fee if session.extra(booking_no).paid else 0
            self._end(
                session, booking_no, owner, REVOKED_STATE, now, refund, "suspended", by="hospital"
            )
            cancelled += 1
            refunded += refund
        while (waiting := session.next_waiting()) is not None:
            self._notice("suspended", waiting[0], "", session, now, waitlist=True)
        self._touch(session)
        return SuspendDone(session_id, cancelled, refunded)

    # ----- the waitlist (候补) ---------------------------------------------------------------

    def join_waitlist(self, session_id: str, patient: int, request: int, now: float) -> JoinOutcome:
        """Queue a patient for a sold-out session; a returned slot goes to the first in line
        who still passes the rules (as a hold when there is a fee)."""
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        booking_no = session.find(patient, request)
        if booking_no >= 0:
            return session.answer(booking_no, repeat=True)
        if session.forgotten and (forgotten := session.find_forgotten(patient, request)) >= 0:
            return session.forgotten_answer(forgotten)
        position = session.waitlist_position(patient)
        if position:
            return Waitlisted(session_id, position, repeat=True)
        status = session.status(now)
        if status == OPEN:
            return NotSoldOut(session_id, session.free)
        if status != SOLD_OUT:
            return session.refusal(status)
        refusal = self._refusal(session, patient, now)
        if refusal is not None:
            return refusal
        if session.waiting >= self.policy.waitlist_limit:
            return WaitlistFull(session_id, self.policy.waitlist_limit)
        position = session.join_waitlist(patient, request)
        self._touch(session)
        return Waitlisted(session_id, position)

    def leave_waitlist(self, session_id: str, patient: int) -> LeftWaitlist | NotFound:
        session = self.sessions.get(session_id)
        if session is None or not session.leave_waitlist(patient):
            return NotFound("waitlist entry")
        self._touch(session)
        return LeftWaitlist(session_id)

    def _promote(self, session: DoctorSession, now: float) -> None:
        """Give freed slots to the waitlist, first come first served, under the same rules."""
        while session.free and session.waitlist and session.status(now) == OPEN:
            patient, request = session.next_waiting()  # type: ignore[misc]
            self._touch(session)
            refusal = self._refusal(session, patient, now)
            if (
                refusal is not None
                or session.find(patient, request) >= 0
                or session.find_forgotten(patient, request) >= 0
            ):
                reason = type(refusal).__name__ if refusal is not None else "already_booked"
                self._notice("waitlist_skipped", patient, "", session, now, reason=reason)
                continue
            booked = self._take(session, patient, request, now)
            self._notice(
                "waitlist_promoted",
                patient,
                booked.booking_id,
                session,
                now,
                status=booked.status,
                hold_expires_at=booked.hold_expires_at,
            )

    # ----- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Every timer of this shard at ``now``: holds expiring and expired, the no-show sweep,
        and the waitlist of a closed session. All state changes go into the next commit."""
        policy = self.policy
        warn = min(WARN_SECONDS, policy.hold_seconds // 3)
        for session in self.sessions.values():
            if (
                not session.swept
                and now >= session.spec.ends_at + 60 * policy.no_show_grace_minutes
            ):
                self.sweep(session, now)  # first: its holds end without a promotion
            elif session.held and session.due <= now:  # only sessions with a hold timer due
                for booking_no in session.expired_holds(now):
                    self._expire(session, booking_no, session.booking(booking_no)[0], now)
                due = math.inf
                for booking_no in session.in_state(HELD_STATE):
                    owner, _, _, expires = session.booking(booking_no)
                    extra = session.extra(booking_no)
                    if not extra.warned and expires - warn <= now:
                        session.set_extra(booking_no, replace(extra, warned=True))
                        self._touch(session)
                        self._notice(
                            "hold_expiring",
                            owner,
                            session.booking_id(booking_no),
                            session,
                            now,
                            hold_expires_at=float(expires),
                        )
                        extra = replace(extra, warned=True)
                    due = min(due, expires if extra.warned else expires - warn)
                session.due = due
            if session.returning and session.next_return <= now:
                session.return_due(now)  # held-back slots come back: the waitlist first
                self._touch(session)
                self._promote(session, now)
            if session.waitlist and session.status(now) == CLOSED:
                while (waiting := session.next_waiting()) is not None:
                    self._notice("waitlist_ended", waiting[0], "", session, now)
                self._touch(session)
            if session.compactable(self.keep[0]) and session.compact(now, *self.keep):
                self._touch(session)

    def sweep(self, session: DoctorSession, now: float) -> int:
        """爽约: every booking neither cancelled nor checked in by the cutoff is a no-show; the
        violation is recorded and the fee refunded if the policy says so."""
        policy = self.policy
        session.swept = True  # first: the holds ended below go to nobody on the waitlist
        for booking_no in session.in_state(HELD_STATE):  # a hold cannot outlive its session
            self._expire(session, booking_no, session.booking(booking_no)[0], now)
        count = 0
        for booking_no in session.in_state(BOOKED_STATE):
            owner = session.booking(booking_no)[0]
            extra = session.extra(booking_no)
            refund = session.spec.fee if policy.no_show_refund and extra.paid else 0
            session.move(booking_no, NO_SHOW_STATE, now, replace(extra, refunded=refund))
            booking_id = session.booking_id(booking_no)
            if refund:
                self._changes.events.append(["refund", booking_id, owner, refund, "no_show"])
            if extra.code:  # a booking made before codes existed could not have checked in
                self._violation(owner, NO_SHOW, booking_id, now)
            self._notice("no_show", owner, booking_id, session, now, refund=refund)
            count += 1
        session.swept = True
        self._touch(session)
        return count

    def _expire(self, session: DoctorSession, booking_no: int, owner: int, now: float) -> None:
        slot_no = session.booking(booking_no)[1]
        session.move(booking_no, EXPIRED_STATE, now)
        self._drop_live(owner, session)
        self._touch(session)
        booking_id = session.booking_id(booking_no)
        self._changes.events.append(["void", booking_id, owner])
        self._notice("expired", owner, booking_id, session, now)
        self._hold_release(owner, booking_id, now)
        self._freed(session, slot_no, now)

    def _freed(self, session: DoctorSession, slot_no: int, now: float) -> None:
        """A slot came free: the waitlist gets it at once; if nobody takes it, it goes back to
        the pool after a random delay, so a patient giving it up cannot hand it to someone
        waiting for that moment (a scalper's handover)."""
        self._promote(session, now)
        most = self.policy.return_jitter_seconds
        if (
            most > 0
            and session.holders[slot_no - 1] == NO_BOOKING
            and not session.suspended
            and not session.swept
        ):
            session.hold_back(slot_no, int(now) + self.delay(most))
            self._touch(session)

    def _hold_release(self, patient: int, booking_id: str, now: float) -> None:
        scope = PLATFORM if self.policy.ban_scope == PLATFORM else self.hospital_id
        self._changes.events.append(
            [
                "hold_release",
                scope,
                self.hospital_id,
                patient,
                booking_id,
                float(now),
                local_date(now, self.zone),
            ]
        )

    def _end(
        self,
        session: DoctorSession,
        booking_no: int,
        owner: int,
        state: int,
        now: float,
        refund: int,
        notice: str,
        by: str,
    ) -> None:
        extra = session.extra(booking_no)
        session.move(booking_no, state, now, replace(extra, refunded=refund))
        self._drop_live(owner, session)
        self._touch(session)
        booking_id = session.booking_id(booking_no)
        if refund:
            self._changes.events.append(["refund", booking_id, owner, refund, notice])
        elif not extra.paid:  # a payment may be on its way to a hold that ends unpaid
            self._changes.events.append(["void", booking_id, owner])
        self._notice(notice, owner, booking_id, session, now, refund=refund, by=by)

    def _notice(
        self,
        kind: str,
        patient: int,
        booking_id: str,
        session: DoctorSession,
        now: float,
        **details: Any,
    ) -> None:
        self._changes.events.append(
            ["notice", kind, patient, booking_id, session.id, float(now), details]
        )

    def _violation(self, patient: int, kind: str, booking_id: str, now: float) -> None:
        scope = PLATFORM if self.policy.ban_scope == PLATFORM else self.hospital_id
        self._changes.events.append(
            ["violation", scope, self.hospital_id, patient, kind, booking_id, float(now)]
        )

    # ----- reading -------------------------------------------------------------------------

    def lookup(self, session_id: str, booking_no: int) -> BookingInfo | NotFound:
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_BOOKING
        row = session.row_of(booking_no)
        if row >= 0:
            return session.info(row)
        index = session.forgotten_index(booking_no) if session.forgotten else -1
        return session.forgotten_info(index) if index >= 0 else _NO_BOOKING

    def bookings_of(self, session_id: str) -> Bookings | NotFound:
        """Every booking kept (compacted ones too, while their keys are kept), oldest first."""
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        kept = [session.forgotten_info(i) for i in range(len(session.forgotten) // FORGOTTEN_WORDS)]
        kept += [session.info(n) for n in range(session.count)]
        return Bookings(session_id, kept, session.version)

    def create(self, spec: SessionSpec) -> Created | Conflict:
        existing = self.sessions.get(spec.id)
        if existing is not None:
            return Created(spec.id, repeat=True) if existing.spec == spec else Conflict("session")
        session = DoctorSession(spec)
        self.sessions[spec.id] = session
        self._changes.new_session_ids.append(spec.id)
        self._touch(session)
        return Created(spec.id)

    def state(self, session_id: str, now: float) -> SessionState | NotFound:
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        spec = session.spec
        checked_in = len(session.in_state(CHECKED_IN_STATE))
        return SessionState(
            session_id=spec.id,
            hospital_id=spec.hospital_id,
            department_id=spec.department_id,
            doctor_id=spec.doctor_id,
            date=spec.date,
            period=spec.period,
            capacity=spec.capacity,
            remaining=session.free,
            held=session.held,
            booked=session.booked - checked_in,
            ended=session.ended,
            status=session.status(now),
            opens_at=spec.opens_at,
            closes_at=spec.closes_at,
            fee=spec.fee,
            version=session.version,
            checked_in=checked_in,
            waiting=session.waiting,
            live=session.held + len(session.in_state(BOOKED_STATE)),
        )

    def set_rules(
        self,
        policy: Policy,
        blacklist: dict[int, float],
        platform_blacklist: dict[int, float] | None = None,
    ) -> None:
        """Take a hospital's new policy and blacklists (stored per hospital, not per shard)."""
        self.policy = policy
        self.blacklist = blacklist
        if platform_blacklist is not None:
            self.platform_blacklist = platform_blacklist

    # ----- batch bookkeeping ---------------------------------------------------------------

    def take_changes(self) -> Changes:
        """Hand over what changed since the last call, and start a new change set."""
        changes, self._changes = self._changes, Changes()
        return changes

    def add_restored(self, session: DoctorSession) -> None:
        """Add a session loaded from a snapshot and index its live bookings. A booking made
        before verification codes existed gets one now (written with the next commit)."""
        self.sessions[session.id] = session
        live = self.live
        for booking_no, patient, _ in session.live_bookings():
            if session.booking(booking_no)[2] == BOOKED_STATE:
                extra = session.extra(booking_no)
                if not extra.code:
                    session.set_extra(booking_no, replace(extra, code=self.new_code()))
                    self._touch(session)
            mine = live.get(patient)
            if mine is None:
                live[patient] = session
            else:
                live[patient] = (*(mine if type(mine) is tuple else (mine,)), session)

    def live_sessions(self, patient: int) -> tuple[DoctorSession, ...]:
        """The doctor-sessions of a patient's live bookings in this shard."""
        mine = self.live.get(patient)
        if mine is None:
            return ()
        return mine if type(mine) is tuple else (mine,)

    def _touch(self, session: DoctorSession) -> None:
        self._changes.sessions[session.id] = session

    def _drop_live(self, patient: int, session: DoctorSession) -> None:
        mine = list(self.live_sessions(patient))
        mine.remove(session)
        if not mine:
            del self.live[patient]
        else:
            self.live[patient] = mine[0] if len(mine) == 1 else tuple(mine)
