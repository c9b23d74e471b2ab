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
    booking_id: str
    slot_no: int
    repeat: bool = False


@dataclass(slots=True)
class Created:
    session_id: str
    repeat: bool = False


@dataclass(slots=True)
class Conflict:
    """A create with an id that exists with a different definition."""

    what: str


@dataclass(slots=True)
class SessionState:
    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str
    period: str
    capacity: int
    remaining: int
    held: int
    booked: int
    ended: int
    status: str
    opens_at: float
    closes_at: float | None
    fee: int
    version: int = 0


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


@dataclass(slots=True)
class Bookings:
    """Every booking of a doctor-session, in booking order."""

    session_id: str
    bookings: list[BookingInfo]


@dataclass(slots=True)
class Done:
    """A rule change (policy, blacklist) was stored."""


@dataclass(slots=True)
class Unavailable:
    """The store could not confirm: nothing was changed, the caller may retry."""

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
BookOutcome = Booked | Refusal | Unavailable
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
)
