"""Typed outcomes: every business answer of the engine is one of these values.

Outcomes are replies, not exceptions (see ``errors.py`` for real failures). They are small
slotted dataclasses, to be treated as values: never mutated after they are made (they are not
frozen only because a frozen dataclass costs five times as much to build, on the hot path).
A session's ``SoldOut`` is one shared object, so a batch of them pickles as one.
"""

from __future__ import annotations

from dataclasses import dataclass

HELD = "held"
BOOKED = "booked"


@dataclass(slots=True)
class Booked:
    """A slot was taken (``status`` is ``held`` when a fee must still be paid).

    ``repeat`` is true when the same (patient, request id) was answered before: the API answers
    200 with the same booking instead of 201.
    """

    booking_id: str
    session_id: str
    slot_no: int
    slot_time: str
    status: str
    hold_expires_at: float | None
    repeat: bool = False
    verification_code: str | None = None  # once booked


@dataclass(slots=True)
class SoldOut:
    session_id: str


@dataclass(slots=True)
class NotOpen:
    session_id: str
    opens_at: float


@dataclass(slots=True)
class Closed:
    session_id: str


@dataclass(slots=True)
class Suspended:
    session_id: str


@dataclass(slots=True)
class Blacklisted:
    hospital_id: str
    until: float


@dataclass(slots=True)
class HospitalDayLimit:
    limit: int


@dataclass(slots=True)
class DepartmentDayLimit:
    limit: int


@dataclass(slots=True)
class NotFound:
    what: str


@dataclass(slots=True)
class Forbidden:
    """The booking exists but belongs to another patient."""

    booking_id: str


@dataclass(slots=True)
class Released:
    """A booking was cancelled (退号) or revoked; its slot went back to the pool.

    ``refund`` is what goes back to the patient's account (the fee tiers decide it)."""

    booking_id: str
    slot_no: int
    repeat: bool = False
    refund: int = 0
    status: str = "cancelled"


@dataclass(slots=True)
class Paid:
    """A held booking was paid and is booked; it carries the verification code."""

    booking_id: str
    verification_code: str
    repeat: bool = False


@dataclass(slots=True)
class NotPayable:
    """The booking cannot take a payment (its hold expired, or it was cancelled). When the
    engine never took a payment for it (``paid`` false) any money the gateway took is refunded
    in full; a paid booking's money follows its own refund (the fee tiers)."""

    booking_id: str
    status: str
    paid: bool = False


@dataclass(slots=True)
class TooLate:
    """The deadline for this action has passed (cancellation after the cutoff)."""

    what: str
    deadline: float


@dataclass(slots=True)
class WrongState:
    """The booking is in a state that does not allow this action."""

    booking_id: str
    status: str


@dataclass(slots=True)
class CheckedIn:
    booking_id: str
    slot_no: int
    slot_time: str
    patient_id: int
    repeat: bool = False


@dataclass(slots=True)
class WrongCode:
    booking_id: str
    tries_left: int


@dataclass(slots=True)
class Locked:
    """Too many wrong verification codes: check-in needs the hospital's desk."""

    booking_id: str


@dataclass(slots=True)
class NotVisitDay:
    date: str


@dataclass(slots=True)
class SuspendDone:
    """停诊: the session is suspended; ``cancelled`` bookings were revoked and refunded."""

    session_id: str
    cancelled: int
    refunded: int
    repeat: bool = False


@dataclass(slots=True)
class Waitlisted:
    session_id: str
    position: int
    repeat: bool = False


@dataclass(slots=True)
class NotSoldOut:
    """Joining a waitlist while slots are free: book instead."""

    session_id: str
    remaining: int


@dataclass(slots=True)
class WaitlistFull:
    session_id: str
    limit: int


@dataclass(slots=True)
class LeftWaitlist:
    session_id: str


@dataclass(slots=True)
class Created:
    session_id: str
    repeat: bool = False


@dataclass(slots=True)
class Conflict:
    """A create with an id that exists with a different definition."""

    what: str


@dataclass(slots=True)
class SessionFacts:
    """What every view of a doctor-session repeats from its definition (``SessionSpec``): the
    engine's answer (``SessionState``), the back office's sale (``backoffice/record.py``
    ``SessionSale``) and a worker's availability view (``api/fastpath/availability.py``
    ``SessionView``) each add their own fields after these."""

    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str  # ISO visit date
    period: str  # AM / PM / EVENING
    capacity: int


@dataclass(slots=True)
class SessionState(SessionFacts):
    """A doctor-session as it stands."""

    remaining: int
    held: int
    booked: int
    ended: int
    status: str
    opens_at: float
    closes_at: float | None
    fee: int
    version: int = 0
    checked_in: int = 0
    waiting: int = 0
    live: int = 0  # held + booked: bookings that still await their visit


@dataclass(slots=True)
class BookingInfo:
    """One booking as it stands (``status``: held, booked or ended)."""

    booking_id: str
    session_id: str
    patient_id: int
    slot_no: int
    slot_time: str
    status: str
    hold_expires_at: float | None
    fee: int = 0
    paid: bool = False
    refunded: int = 0
    verification_code: str | None = None  # for the patient only; never shown to admins
    changed_at: float | None = None
    cancelled_by: str | None = None  # patient or hospital, for cancelled bookings


@dataclass(slots=True)
class Bookings:
    """Every booking of a doctor-session kept (compacted ones while their request keys are
    kept), in booking order, as of the session's ``version``."""

    session_id: str
    bookings: list[BookingInfo]
    version: int = -1


@dataclass(slots=True)
class Done:
    """A rule change (policy, blacklist) was stored."""


@dataclass(slots=True)
class Unavailable:
    """The store could not confirm, and it is known that nothing was changed: the caller may
    retry (with the same request id)."""

    reason: str


@dataclass(slots=True)
class Moved:
    """The host asked does not carry this shard (the directory places it on ``host``); nothing
    was decided. The client resends to ``host`` a bounded number of times; it never reaches
    the API (past the bound the answer is ``Unavailable``)."""

    host: int


@dataclass(slots=True)
class OutcomeUnknown:
    """The store may or may not have committed it (the round trip failed after the write may
    have been sent, and it could not be read back yet): the caller must not be told "nothing
    was booked"; retrying with the same request id tells the outcome."""

    reason: str


Refusal = (
    SoldOut
    | NotOpen
    | Closed
    | Suspended
    | Blacklisted
    | HospitalDayLimit
    | DepartmentDayLimit
    | NotFound
)
Stored = Unavailable | OutcomeUnknown  # what the store may answer instead of the decision
# decisions that tell the caller something was written (what a host that cannot confirm its
# commits durable answers ``OutcomeUnknown`` instead, ``actors/host.py``)
ACKNOWLEDGED = (
    Booked,
    Released,
    Paid,
    CheckedIn,
    SuspendDone,
    Waitlisted,
    LeftWaitlist,
    Created,
    Done,
)
BookOutcome = Booked | Refusal | Stored
# What each command decides in the shard (``core/shard.py``); the engine (``client.py``) may
# answer ``Stored`` instead, and ``api/answers.py`` matches on each union.
ReleaseOutcome = Released | WrongState | TooLate | NotFound | Forbidden
PayOutcome = Paid | NotPayable | NotFound | Forbidden
CheckInOutcome = CheckedIn | WrongState | NotVisitDay | Locked | WrongCode | NotFound
SuspendOutcome = SuspendDone | NotFound
JoinOutcome = Waitlisted | Booked | NotSoldOut | WaitlistFull | Refusal
LeaveOutcome = LeftWaitlist | NotFound
Outcome = (
    BookOutcome
    | Released
    | Forbidden
    | Created
    | Conflict
    | SessionState
    | BookingInfo
    | Bookings
    | Done
    | Paid
    | NotPayable
    | TooLate
    | WrongState
    | CheckedIn
    | WrongCode
    | Locked
    | NotVisitDay
    | SuspendDone
    | Waitlisted
    | NotSoldOut
    | WaitlistFull
    | LeftWaitlist
)
