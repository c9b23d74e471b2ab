"""Engine outcomes → HTTP, in one table; the JSON bodies of API.md; time formatting.

Every error body is ``{"code": "<stable_snake_case>", "message": "<for people>", ...}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from engine.outcomes import (
    Blacklisted,
    Booked,
    Closed,
    Conflict,
    DepartmentDayLimit,
    Forbidden,
    HospitalDayLimit,
    NotFound,
    NotOpen,
    SoldOut,
    Suspended,
    Unavailable,
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
    Unavailable: (503, "unavailable", "The booking store cannot confirm right now; retry."),
}

HEADERS = [(b"content-type", b"application/json")]


def error_body(code: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"code": code, "message": message, **extra})


class Clock:
    """Formats epoch seconds as ISO 8601 in the hospitals' time zone."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)

    def iso(self, epoch: float | None) -> str | None:
        if epoch is None:
            return None
        return datetime.fromtimestamp(epoch, self.zone).isoformat(timespec="seconds")


def booked_body(outcome: Booked, clock: Clock) -> bytes:
    return orjson.dumps(
        {
            "booking_id": outcome.booking_id,
            "session_id": outcome.session_id,
            "slot_no": outcome.slot_no,
            "slot_time": outcome.slot_time,
            "status": outcome.status,
            "hold_expires_at": clock.iso(outcome.hold_expires_at),
            "verification_code": None,
        }
    )


def refusal(outcome: object, clock: Clock) -> tuple[int, bytes]:
    """HTTP status and body for any outcome that is not a success."""
    status, code, message, extra = refusal_parts(outcome, clock)
    return status, error_body(code, message, **extra)


def refusal_parts(outcome: object, clock: Clock) -> tuple[int, str, str, dict[str, Any]]:
    """(HTTP status, code, message, extra fields) for any outcome that is not a success."""
    status, code, message = REFUSALS[type(outcome)]
    extra: dict[str, Any] = {}
    if isinstance(outcome, NotOpen):
        extra["opens_at"] = clock.iso(outcome.opens_at)
    elif isinstance(outcome, Blacklisted):
        extra["until"] = clock.iso(outcome.until)
    elif isinstance(outcome, HospitalDayLimit | DepartmentDayLimit):
        extra["limit"] = outcome.limit
    elif isinstance(outcome, NotFound):
        message = message.format(what=outcome.what.replace("_", " "))
    return status, code, message, extra
