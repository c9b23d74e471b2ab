"""Engine outcomes → HTTP, in one table; the JSON bodies of API.md; local time formatting.

Every error body is ``{"code": "<stable_snake_case>", "message": "<for people>", ...}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args
from zoneinfo import ZoneInfo

import orjson
from fastapi.responses import Response

from api import errors
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

#: outcome type → (error code, message). The one table; the codes are ``api/errors.py``'s.
REFUSALS: dict[type, tuple[errors.Code, str]] = {
    SoldOut: (errors.SOLD_OUT, "No free slot is left in this doctor-session."),
    NotOpen: (errors.NOT_OPEN, "This doctor-session is not open for booking yet."),
    Closed: (errors.CLOSED, "Booking for this doctor-session has closed."),
    Suspended: (errors.SUSPENDED, "This doctor-session was suspended by the hospital."),
    Blacklisted: (errors.BLACKLISTED, "You cannot book at this hospital for now."),
    HospitalDayLimit: (errors.HOSPITAL_DAY_LIMIT, "Too many bookings at this hospital that day."),
    DepartmentDayLimit: (
        errors.DEPARTMENT_DAY_LIMIT,
        "You already have a booking in this department that day.",
    ),
    NotFound: (errors.NOT_FOUND, "No such {what}."),
    Forbidden: (errors.NOT_FOUND, "No such booking."),  # another's booking: do not confirm it
    Conflict: (errors.CONFLICT, "It exists already, with different details."),
    Unavailable: (
        errors.UNAVAILABLE,
        "The booking store cannot confirm right now; nothing was booked. Retry with the same "
        "request_id.",
    ),
    OutcomeUnknown: (
        errors.OUTCOME_UNKNOWN,
        "The booking store may have booked it but cannot confirm right now; retry with the "
        "same request_id to learn the outcome.",
    ),
    NotPayable: (errors.NOT_PAYABLE, "This booking cannot be paid; any payment was refunded."),
    TooLate: (errors.CANCEL_CLOSED, "The deadline for this has passed."),
    WrongState: (errors.INVALID_STATE, "The booking's state does not allow this."),
    WrongCode: (errors.WRONG_CODE, "The verification code is wrong."),
    Locked: (errors.LOCKED, "Too many wrong codes: check in at the hospital's desk."),
    NotVisitDay: (errors.NOT_VISIT_DAY, "Check-in is only possible on the visit day."),
    NotSoldOut: (errors.SLOTS_AVAILABLE, "Slots are free: book instead of joining the waitlist."),
    WaitlistFull: (errors.WAITLIST_FULL, "The waitlist of this doctor-session is full."),
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
    known, message = REFUSALS[type(outcome)]
    code = known.code
    extra: dict[str, Any] = {}
    match outcome:
        case NotOpen(opens_at=opens_at):
            extra["opens_at"] = clock.iso(opens_at)
        case Blacklisted(until=until, hospital_id=hospital_id):
            extra["until"] = clock.iso(until)
            extra["scope"] = "platform" if hospital_id == "platform" else "hospital"
        case HospitalDayLimit(limit=limit) | DepartmentDayLimit(limit=limit):
            extra["limit"] = limit
        case NotFound(what=what):
            message = message.format(what=what.replace("_", " "))
        case NotPayable(status=status):
            extra["status"] = status
            if status == "expired":
                code = errors.HOLD_EXPIRED.code
                message = "The hold expired before payment; it was refunded."
        case TooLate(what=what, deadline=deadline):
            extra["deadline"] = clock.iso(deadline)
            message = f"The last moment to {what} has passed."
        case WrongState(status=status):
            extra["status"] = status
        case WrongCode(tries_left=tries_left):
            extra["tries_left"] = tries_left
        case NotVisitDay(date=date):
            extra["date"] = date
        case NotSoldOut(remaining=remaining):
            extra["remaining"] = remaining
        case WaitlistFull(limit=limit):
            extra["limit"] = limit
    return known.status, code, message, extra


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


def codes_of(outcomes: Any) -> list[errors.Code]:
    """The error codes an outcome type, or a union of them (``PayOutcome | Stored``), turns
    into here; successes have none."""
    out: list[errors.Code] = []
    for member in get_args(outcomes) or (outcomes,):
        if member in REFUSALS:
            out.append(REFUSALS[member][0])
        if member is NotPayable:  # an expired hold answers its own code
            out.append(errors.HOLD_EXPIRED)
    return out


def declared(
    *answers: Any, successes: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI ``responses``: the codes it raises itself and those of the engine
    outcomes it answers (``declared(PayOutcome, Stored, errors.RATE_LIMITED)``), plus other
    successes than its main one. What every route of a kind answers (a bad token, a bad
    body, an unknown id in the path, the store down) ``api/openapi.py`` adds."""
    codes: list[errors.Code] = []
    for a in answers:
        codes.extend([a] if isinstance(a, errors.Code) else codes_of(a))
    out = errors.responses(*dict.fromkeys(codes))
    for status, description in (successes or {}).items():
        out[status] = {"description": description, "content": {"application/json": {}}}
    return out


def content(*media_types: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answer of a route whose success is no JSON (CSV, a page, a chart)."""
    text = {"schema": {"type": "string"}}
    return {200: {"content": {m: text for m in media_types}}}


def engine_answer(outcome: object, clock: LocalTime) -> Response:
    status, body = refusal(outcome, clock)
    return Response(body, status_code=status, media_type="application/json")
