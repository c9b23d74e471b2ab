"""The shard: every doctor-session of one hospital on one visit date, and its patient rules.

Every patient rule (≤ N live bookings per hospital-day, ≤ M per department-day, none while on
the hospital's blacklist) is scoped to one hospital-day, so one shard decides all of them with
no coordination. Pure and synchronous; time is passed in.

The shard remembers which doctor-sessions a batch changed (``take_changes``) so the host can
write exactly those snapshots in one round trip (group commit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .outcomes import (
    Blacklisted,
    BookingInfo,
    Bookings,
    BookOutcome,
    Conflict,
    Created,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    NotFound,
    Released,
    SessionState,
)
from .session import OPEN, DoctorSession, SessionSpec

MAX_HOLD_SECONDS = 7 * 86400
_NO_SESSION = NotFound("session")
_NO_BOOKING = NotFound("booking")


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-hospital rule values (defaults from DESIGN.md)."""

    hospital_day_limit: int = 2
    department_day_limit: int = 1
    hold_seconds: int = 15 * 60

    def __post_init__(self) -> None:
        if not 1 <= self.hospital_day_limit <= 100 or not 1 <= self.department_day_limit <= 100:
            raise ValueError("day limits must be 1..100")
        if not 1 <= self.hold_seconds <= MAX_HOLD_SECONDS:
            raise ValueError(f"hold_seconds must be 1..{MAX_HOLD_SECONDS}")


@dataclass(slots=True)
class Changes:
    """What one batch changed in a shard: the snapshots to write and the stock to publish."""

    sessions: dict[str, DoctorSession] = field(default_factory=dict)
    new_session_ids: list[str] = field(default_factory=list)
    new_bookings: list[tuple[int, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.sessions)


class Shard:
    """All doctor-sessions of one hospital on one date, plus the hospital's rules for it."""

    __slots__ = ("_changes", "blacklist", "date", "hospital_id", "id", "live", "policy", "sessions")

    def __init__(
        self,
        shard_id: str,
        hospital_id: str,
        date: str,
        policy: Policy | None = None,
        blacklist: dict[int, float] | None = None,
    ) -> None:
        self.id = shard_id
        self.hospital_id = hospital_id
        self.date = date
        self.policy = policy or Policy()
        self.blacklist: dict[int, float] = blacklist or {}
        self.sessions: dict[str, DoctorSession] = {}
        # patient → the doctor-session of their live booking here, or a tuple of them when
        # they hold several (one entry per booking; a bare session saves a tuple per patient)
        self.live: dict[int, DoctorSession | tuple[DoctorSession, ...]] = {}
        self._changes = Changes()

    # ----- commands ------------------------------------------------------------------------

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
        status = session.status(now)
        if status != OPEN:
            return session.refusal(status)
        until = self.blacklist.get(patient)
        if until is not None and until > now:
            return Blacklisted(self.hospital_id, until)
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
            self.live[patient] = (*held, session)
        else:
            self.live[patient] = session
        changes = self._changes
        changes.sessions[session.id] = session
        booked = session.take(patient, request, now, self.policy.hold_seconds)
        changes.new_bookings.append((patient, booked.booking_id))
        return booked

    def release(
        self, session_id: str, booking_no: int, patient: int | None
    ) -> Released | NotFound | Forbidden:
        """Give a held or booked slot back (invariant 6: exactly that slot returns).

        ``patient`` None means an operator acting for the hospital; otherwise the booking must
        be the patient's own. Releasing an ended booking again answers the same (idempotent).
        """
        session = self.sessions.get(session_id)
        if session is None or not 0 <= booking_no < session.count:
            return _NO_BOOKING
        owner, slot_no, _, _ = session.booking(booking_no)
        if patient is not None and owner != patient:
            return Forbidden(session.booking_id(booking_no))
        if not session.release(booking_no):
            return Released(session.booking_id(booking_no), slot_no, repeat=True)
        self._drop_live(owner, session)
        self._touch(session)
        return Released(session.booking_id(booking_no), slot_no)

    def lookup(self, session_id: str, booking_no: int) -> BookingInfo | NotFound:
        session = self.sessions.get(session_id)
        if session is None or not 0 <= booking_no < session.count:
            return _NO_BOOKING
        return session.info(booking_no)

    def bookings_of(self, session_id: str) -> Bookings | NotFound:
        session = self.sessions.get(session_id)
        if session is None:
            return _NO_SESSION
        return Bookings(session_id, [session.info(n) for n in range(session.count)])

    def expire_holds(self, now: float) -> list[Released]:
        """End every hold whose payment window has passed; their slots return to the pool."""
        out = []
        for session in self.sessions.values():
            for booking_no in session.expired_holds(now):
                out.append(self.release(session.id, booking_no, None))
        return [r for r in out if isinstance(r, Released)]

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
            booked=session.booked,
            ended=session.ended,
            status=session.status(now),
            opens_at=spec.opens_at,
            closes_at=spec.closes_at,
            fee=spec.fee,
            version=session.version,
        )

    def set_rules(self, policy: Policy, blacklist: dict[int, float]) -> None:
        """Take a hospital's new policy and blacklist (stored per hospital, not per shard)."""
        self.policy = policy
        self.blacklist = dict(blacklist)

    # ----- batch bookkeeping ---------------------------------------------------------------

    def take_changes(self) -> Changes:
        """Hand over what changed since the last call, and start a new change set."""
        changes, self._changes = self._changes, Changes()
        return changes

    def add_restored(self, session: DoctorSession) -> None:
        """Add a session loaded from a snapshot and index its live bookings."""
        self.sessions[session.id] = session
        live = self.live
        for _, patient, _ in session.live_bookings():
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
