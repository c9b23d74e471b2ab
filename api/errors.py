"""Every error the API answers, by name: an HTTP status, a stable machine-readable code and what
it means; the one body builder; and the exception routes raise.

Every error answer is ``{"code": "<stable_snake_case>", "message": "<for people>", ...}``. Codes
are part of the v1 contract (``shared/API.md``): once landed, a code changes only with a new
version. The README's error table lists exactly these (a test compares them).

    raise NOT_FOUND("No such hospital.")
    raise RATE_LIMITED.with_retry(seconds)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict


class ApiError(Exception):
    """An error answer: raised by a route, turned into JSON by the app's handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra
        self.headers = headers


@dataclass(frozen=True, slots=True)
class Code:
    """One error code: its HTTP status and what it means (for the OpenAPI document)."""

    status: int
    code: str
    meaning: str

    def __call__(
        self, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> ApiError:
        return ApiError(self.status, self.code, message, headers, **extra)

    def with_retry(
        self, seconds: float, message: str = "Too many requests; slow down."
    ) -> ApiError:
        """This error with ``Retry-After`` (whole seconds) and ``retry_after`` in the body."""
        whole = retry_after_header(seconds)
        return self(message, headers={"Retry-After": whole}, retry_after=int(whole))


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, int(-(-seconds // 1))))


INVALID_REQUEST = Code(422, "invalid_request", "malformed JSON, wrong types, missing fields")
UNAUTHENTICATED = Code(401, "unauthenticated", "no, bad, expired, revoked or forged token")
FORBIDDEN = Code(403, "forbidden", "another hospital's, or a platform route")
NOT_FOUND = Code(404, "not_found", "unknown id, or another patient's (never confirmed)")
METHOD_NOT_ALLOWED = Code(405, "method_not_allowed", "the path takes other methods (Allow)")
PAYLOAD_TOO_LARGE = Code(413, "payload_too_large", "a body over SLOTENGINE_MAX_BODY_BYTES")
RATE_LIMITED = Code(429, "rate_limited", "over a limit; Retry-After says when to come back")
SOLD_OUT = Code(409, "sold_out", "no free slot; carries alternatives")
NOT_OPEN = Code(409, "not_open", "before release time; carries opens_at")
CLOSED = Code(409, "closed", "after the booking window")
SUSPENDED = Code(409, "suspended", "the hospital suspended the doctor-session")
BLACKLISTED = Code(403, "blacklisted", "the patient is barred here; carries until and scope")
HOSPITAL_DAY_LIMIT = Code(422, "hospital_day_limit", "too many bookings at this hospital that day")
DEPARTMENT_DAY_LIMIT = Code(422, "department_day_limit", "a booking in this department that day")
CONFLICT = Code(409, "conflict", "already registered, or exists with other details")
HAS_LIVE_BOOKINGS = Code(409, "has_live_bookings", "deleting what still has live bookings")
HAS_OPEN_SESSIONS = Code(409, "has_open_sessions", "deleting what still has bookable sessions")
NOT_EMPTY = Code(409, "not_empty", "deleting what still has departments or doctors")
UNAVAILABLE = Code(503, "unavailable", "the store cannot confirm; nothing was booked")
OUTCOME_UNKNOWN = Code(503, "outcome_unknown", "the store may have booked it: retry to learn")
NOT_PAYABLE = Code(409, "not_payable", "the booking cannot take a payment; refunded in full")
HOLD_EXPIRED = Code(409, "hold_expired", "the hold expired before payment; refunded in full")
CANCEL_CLOSED = Code(409, "cancel_closed", "past the last cancellation time; carries deadline")
INVALID_STATE = Code(409, "invalid_state", "the booking's state does not allow it")
NOT_VISIT_DAY = Code(409, "not_visit_day", "check-in outside the visit day")
WRONG_CODE = Code(422, "wrong_code", "wrong verification code; carries tries_left")
LOCKED = Code(423, "locked", "too many wrong codes: the desk checks the patient in")
SLOTS_AVAILABLE = Code(409, "slots_available", "joining a waitlist while slots are free")
WAITLIST_FULL = Code(409, "waitlist_full", "the waitlist is at the policy's limit")
WRONG_PASSWORD = Code(403, "wrong_password", "a new password with a wrong current one")
ADDRESS_NOT_ALLOWED = Code(422, "address_not_allowed", "an HIS URL into a non-public network")
INVALID_CURSOR = Code(422, "invalid_cursor", "a records cursor not made for this query")
HIS_UNAVAILABLE = Code(502, "his_unavailable", "the hospital's HIS did not answer")
HIS_REJECTED = Code(502, "his_rejected", "the hospital's HIS refused")

CODES: dict[str, Code] = {c.code: c for c in list(globals().values()) if isinstance(c, Code)}


class ErrorBody(BaseModel):
    """The shape of every error answer (extra fields depend on the code)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str


def describe(codes: Iterable[Code], description: str = "") -> str:
    """An OpenAPI response description naming each code of one status with its meaning (the
    codes already named in ``description`` are kept as they are)."""
    lines = [line for line in description.split("\n") if line]
    for c in sorted(codes, key=lambda c: c.code):
        if f"`{c.code}`" not in description:
            lines.append(f"- `{c.code}`: {c.meaning}")
    return "\n".join(lines)


def responses(*codes: Code) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route that may answer these codes."""
    by_status: dict[int, list[Code]] = {}
    for c in codes:
        by_status.setdefault(c.status, []).append(c)
    return {
        status: {"model": ErrorBody, "description": describe(same)}
        for status, same in sorted(by_status.items())
    }


def error_body(code: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"code": code, "message": message, **extra})


def error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, **extra}, status_code=status, headers=headers
    )


def invalid_field(field: str, message: str) -> ApiError:
    """422 ``invalid_request`` naming one body field, as a validation error would."""
    return INVALID_REQUEST(
        "The request is malformed.", errors=[{"loc": ["body", field], "msg": message}]
    )


def codes_in(names: Iterable[str]) -> list[Code]:
    return [CODES[n] for n in names]
