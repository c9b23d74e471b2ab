"""Engine outcomes → HTTP, in one table; the JSON bodies of API.md; local time formatting.

Every error body is ``{"code": "<stable_snake_case>", "message": "<for people>", ...}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from fastapi.responses import Response

from api.errors import error_body
from engine.outcomes import (
    Blacklisted,
    Booked,
    BookingInfo,
    Closed,
    Conflict,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    Locked,
    NotFound,
    NotOpen,
    NotPayable,
    NotSoldOut,
    NotVisitDay,
    OutcomeUnknown,
    SoldOut,
    Suspended,
    TooLate,
    Unavailable,
    WaitlistFull,
    WrongCode,
    WrongState,
)

#: outcome type → (HTTP status, code, message). The one table.
REFUSALS: dict[type, tuple[int, str, str]] = {
    SoldOut: (409, "sold_out", "No free slot is left in this doctor-session."),
    NotOpen: (409, "not_open", "This doctor-session is not open for booking yet."),
    Closed: (409, "closed", "Booking for this doctor-session has closed."),
    Suspended: (409, "suspended", "This doctor-session was suspended by the hospital."),
    Blacklisted: (403, "blacklisted", "You cannot book at this hospital for now."),
    HospitalDayLimit: (422, "hospital_day_limit", "Too many bookings at this hospital that day."),
    DepartmentDayLimit: (
        422,
        "department_day_limit",
        "You already have a booking in this department that day.",
    ),
    NotFound: (404, "not_found", "No such {what}."),
    Forbidden: (404, "not_found", "No such booking."),  # another's booking: do not confirm it
    Conflict: (409, "conflict", "It exists already, with different details."),
    Unavailable: (
        503,
        "unavailable",
        "The booking store cannot confirm right now; nothing was booked. Retry with the same "
        "request_id.",
    ),
    OutcomeUnknown: (
        503,
        "outcome_unknown",
        "The booking store may have booked it but cannot confirm right now; retry with the "
        "same request_id to learn the outcome.",
    ),
    NotPayable: (409, "not_payable", "This booking cannot be paid; any payment was refunded."),
    TooLate: (409, "cancel_closed", "The deadline for this has passed."),
    WrongState: (409, "invalid_state", "The booking's state does not allow this."),
    WrongCode: (422, "wrong_code", "The verification code is wrong."),
    Locked: (423, "locked", "Too many wrong codes: check in at the hospital's desk."),
    NotVisitDay: (409, "not_visit_day", "Check-in is only possible on the visit day."),
    NotSoldOut: (409, "slots_available", "Slots are free: book instead of joining the waitlist."),
    WaitlistFull: (409, "waitlist_full", "The waitlist of this doctor-session is full."),
}

HEADERS = [(b"content-type", b"application/json")]


class LocalTime:
    """The hospitals' local time: formats epoch seconds as ISO 8601 in the hospitals' time zone."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def iso(self, epoch: float | None) -> str | None:
        if epoch is None:
            return None
        return datetime.fromtimestamp(epoch, self.zone).isoformat(timespec="seconds")


def booked_body(outcome: Booked, clock: LocalTime) -> bytes:
    return orjson.dumps(
        {
            "booking_id": outcome.booking_id,
            "session_id": outcome.session_id,
            "slot_no": outcome.slot_no,
            "slot_time": outcome.slot_time,
            "status": outcome.status,
            "hold_expires_at": clock.iso(outcome.hold_expires_at),
            "verification_code": outcome.verification_code,
        }
    )


def refusal(outcome: object, clock: LocalTime) -> tuple[int, bytes]:
    """HTTP status and body for any outcome that is not a success."""
    status, code, message, extra = refusal_parts(outcome, clock)
    return status, error_body(code, message, **extra)


def refusal_parts(outcome: object, clock: LocalTime) -> tuple[int, str, str, dict[str, Any]]:
    """(HTTP status, code, message, extra fields) for any outcome that is not a success."""
    status, code, message = REFUSALS[type(outcome)]
    extra: dict[str, Any] = {}
    if isinstance(outcome, NotOpen):
        extra["opens_at"] = clock.iso(outcome.opens_at)
    elif isinstance(outcome, Blacklisted):
        extra["until"] = clock.iso(outcome.until)
        extra["scope"] = "platform" if outcome.hospital_id == "platform" else "hospital"
    elif isinstance(outcome, HospitalDayLimit | DepartmentDayLimit):
        extra["limit"] = outcome.limit
    elif isinstance(outcome, NotFound):
        message = message.format(what=outcome.what.replace("_", " "))
    elif isinstance(outcome, NotPayable):
        extra["status"] = outcome.status
        if outcome.status == "expired":
            code, message = "hold_expired", "The hold expired before payment; it was refunded."
    elif isinstance(outcome, TooLate):
        extra["deadline"] = clock.iso(outcome.deadline)
        message = f"The last moment to {outcome.what} has passed."
    elif isinstance(outcome, WrongState):
        extra["status"] = outcome.status
    elif isinstance(outcome, WrongCode):
        extra["tries_left"] = outcome.tries_left
    elif isinstance(outcome, NotVisitDay):
        extra["date"] = outcome.date
    elif isinstance(outcome, NotSoldOut):
        extra["remaining"] = outcome.remaining
    elif isinstance(outcome, WaitlistFull):
        extra["limit"] = outcome.limit
    return status, code, message, extra


def booking_body(info: BookingInfo, clock: LocalTime, *, owner: bool = True) -> dict[str, Any]:
    """A booking as API.md shows it; the verification code only to its patient."""
    return {
        "booking_id": info.booking_id,
        "session_id": info.session_id,
        "slot_no": info.slot_no,
        "slot_time": info.slot_time,
        "status": info.status,
        "hold_expires_at": clock.iso(info.hold_expires_at),
        "verification_code": info.verification_code if owner else None,
        "fee": info.fee,
        "paid": info.paid,
        "refunded": info.refunded,
        "cancelled_by": info.cancelled_by,
        "changed_at": clock.iso(info.changed_at),
    }


def engine_answer(outcome: object, clock: LocalTime) -> Response:
    status, body = refusal(outcome, clock)
    return Response(body, status_code=status, media_type="application/json")
