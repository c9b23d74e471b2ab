"""The FastAPI app: every route of API.md the engine can serve, errors as stable codes.

``create_app()`` is the uvicorn factory; the returned ASGI app is the booking ``Gateway``
(api/booking.py) wrapped around FastAPI, so the hot route skips FastAPI while it still appears
in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from datetime import date as Date
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.core.policy import MAX_BAN_DAYS, MAX_RETURN_JITTER, PLATFORM, Policy
from engine.errors import StoreUnavailable
from engine.outcomes import (
    Booked,
    BookingInfo,
    Bookings,
    CheckedIn,
    Created,
    Done,
    LeftWaitlist,
    Paid,
    Released,
    SessionState,
    SuspendDone,
    Waitlisted,
)
from engine.settings import Settings
from engine.store.notices import patient_notices, recent_notices

from . import metrics, patients
from .admins import AdminScope, public
from .answers import Clock, booked_body, refusal
from .auth import check_password, hash_password
from .back_office import register_back_office_routes
from .booking import Gateway, book
from .csv_export import csv_text
from .deps import (
    AdminDep,
    ApiError,
    PatientDep,
    ServicesDep,
    admin,
    allow,
    entity_of,
    error,
    limit,
    limit_address,
    outcome_parts,
    platform_only,
    session_of,
)
from .identity import ID_TYPES, check_document, mask_document, normalize_document, normalize_phone
from .limits import client_address
from .rotas import release, release_due
from .services import Services

log = logging.getLogger(__name__)


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown fields are ignored, not refused


EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def _within_range(moment: datetime) -> datetime:
    """Moments this platform can mean (and show in any time zone): 2000 to 2100."""
    if not EARLIEST <= moment <= LATEST:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return moment


Moment = Annotated[AwareDatetime, AfterValidator(_within_range)]


# ----- bodies ----------------------------------------------------------------------------------

Phone = Annotated[
    str,
    Field(
        pattern=r"^\+?[0-9][0-9 ()-]{4,24}$",
        description="a phone number, stored and compared in E.164 (+86... by default)",
    ),
]


class PatientIn(Loose):
    name: str = Field(min_length=1, max_length=64)
    phone: Phone
    id_type: Literal[ID_TYPES] = Field(  # type: ignore[valid-type]
        default="resident",
        description="resident (居民身份证, checked by GB 11643 and against birth_date), "
        "passport, hk_macau_permit or taiwan_permit (format only)",
    )
    id_number: str = Field(pattern=r"^[0-9A-Za-z ]{6,32}$")
    birth_date: Date
    password: str = Field(min_length=8, max_length=128)


class PasswordChangeIn(Loose):
    current_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=8, max_length=128)


class Credentials(Loose):
    phone: Phone
    password: str = Field(min_length=1, max_length=128)


class BookingIn(Loose):
    request_id: str = Field(min_length=1, max_length=64, description="client-chosen, idempotent")


class HospitalIn(Loose):
    name: str = Field(min_length=1, max_length=100)
    level: str | None = Field(default=None, max_length=20, description="e.g. 三甲")
    address: str | None = Field(default=None, max_length=200)


class DepartmentIn(Loose):
    hospital_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)


class DoctorIn(Loose):
    department_id: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=40)
    specialty: str | None = Field(default=None, max_length=200)
    introduction: str | None = Field(default=None, max_length=2000)


class SessionIn(Loose):
    doctor_id: str = Field(min_length=1, max_length=40)
    date: Date
    period: Literal["AM", "PM", "EVENING"]
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(ge=0, le=10_000_000, description="fen; 0 = no payment step")
    opens_at: Moment | None = Field(
        default=None, description="default: the policy's window_days before, at release_at"
    )
    closes_at: Moment | None = Field(
        default=None, description="default: the policy's booking_closes_minutes before start"
    )


class HospitalPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    level: str | None = Field(default=None, max_length=20)
    address: str | None = Field(default=None, max_length=200)


class DepartmentPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=100)


class DoctorPatch(Loose):
    name: str | None = Field(default=None, min_length=1, max_length=64)
    title: str | None = Field(default=None, min_length=1, max_length=40)
    specialty: str | None = Field(default=None, max_length=200)
    introduction: str | None = Field(default=None, max_length=2000)


class RotaSlotIn(BaseModel):
    weekday: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    period: Literal["AM", "PM", "EVENING"]
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(ge=0, le=10_000_000)


class RotaIn(Loose):
    slots: list[RotaSlotIn] = Field(max_length=21)


class ListEntryIn(Loose):
    reason: str = Field(min_length=1, max_length=500)
    until: Moment | None = Field(default=None, description="none: until lifted")


class TagsIn(Loose):
    tags: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(max_length=50)


class AdminIn(Loose):
    login: str = Field(pattern=r"^[A-Za-z0-9_.@-]{3,64}$")
    password: str = Field(min_length=12, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    hospital_id: str | None = Field(default=None, max_length=40, description="none: platform")


class AdminCredentials(Loose):
    login: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=128)


class CheckInIn(Loose):
    verification_code: str = Field(pattern=r"^[0-9]{8}$")


class WaitlistIn(Loose):
    request_id: str = Field(min_length=1, max_length=64, description="client-chosen, idempotent")


class FeeTierIn(BaseModel):
    minutes_before: int = Field(ge=0, le=60 * 24 * 90)
    fee_percent: int = Field(ge=0, le=100)


class BanRuleIn(BaseModel):
    kind: Literal["no_show", "cancel", "same_day_cancel", "hold_abuse"]
    count: int = Field(ge=1, le=100)
    window_days: int = Field(ge=1, le=MAX_BAN_DAYS)


HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class PolicyIn(Loose):
    """A hospital's rules; fields left out keep their current value."""

    hospital_day_limit: int | None = Field(default=None, ge=1, le=100)
    department_day_limit: int | None = Field(default=None, ge=1, le=100)
    hold_seconds: int | None = Field(default=None, ge=60, le=7 * 86400)
    window_days: int | None = Field(default=None, ge=1, le=90)
    release_at: HHMM | None = None
    booking_closes_minutes: int | None = Field(default=None, ge=0, le=7 * 1440)
    cancel_days_before: int | None = Field(default=None, ge=0, le=30)
    cancel_until: HHMM | None = None
    fee_tiers: list[FeeTierIn] | None = Field(default=None, min_length=1, max_length=20)
    no_show_grace_minutes: int | None = Field(default=None, ge=0, le=1440)
    no_show_refund: bool | None = None
    ban_rules: list[BanRuleIn] | None = Field(default=None, max_length=10)
    ban_days: list[Annotated[int, Field(ge=1, le=MAX_BAN_DAYS)]] | None = Field(
        default=None, min_length=1, max_length=10
    )
    ban_scope: Literal["hospital", "platform"] | None = Field(
        default=None, description="platform: a ban here bars everywhere (platform admin only)"
    )
    check_in_max_tries: int | None = Field(default=None, ge=1, le=15)
    waitlist_limit: int | None = Field(default=None, ge=1, le=10_000)
    free_hold_releases: int | None = Field(
        default=None, ge=0, le=100, description="holds let go a day before each is hold_abuse"
    )
    return_jitter_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETURN_JITTER,
        description="a freed slot nobody waits for returns to the pool within this, at random",
    )


class ClockIn(Loose):
    advance_seconds: float = Field(gt=0, le=400 * 86400)


# ----- dependencies ----------------------------------------------------------------------------


def booking_body(info: BookingInfo, clock: Clock, *, owner: bool = True) -> dict[str, Any]:
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


def engine_answer(outcome: object, clock: Clock) -> Response:
    status, body = refusal(outcome, clock)
    return Response(body, status_code=status, media_type="application/json")


DUMMY_HASH = hash_password("no such patient")
SHED_WAITING = 64  # password checks queued in one worker before it answers 503 at once


def invalid_field(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        "The request is malformed.",
        errors=[{"loc": ["body", field], "msg": message}],
    )


def shed(s: Services) -> None:
    """Answer 503 at once rather than queue a flood of password checks behind each other."""
    if s.passwords.waiting >= SHED_WAITING:
        raise ApiError(
            503,
            "unavailable",
            "Too many logins at once; retry in a moment.",
            headers={"Retry-After": "1"},
        )


# ----- the app ---------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> Gateway:
    """The uvicorn factory (``--factory api.app:create_app``)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await Services.start(settings)
        try:
            yield
        finally:
            await app.state.services.stop()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="slotengine",
        version="1",
        summary="Booking core of an internet hospital appointment platform (互联网预约挂号)",
        lifespan=lifespan,
        **docs,
    )
    app.state.services = None
    register_errors(app)
    register_patient_routes(app)
    register_admin_routes(app)
    register_back_office_routes(app)
    register_operations(app, settings)
    return Gateway(app)


def register_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return error(422, "invalid_request", "The request is malformed.", errors=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not read (not UTF-8, say)
            return error(422, "invalid_request", "The request body could not be read.")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(RedisError)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return error(503, "unavailable", "The store cannot answer right now; retry.")


def register_patient_routes(app: FastAPI) -> None:
    @app.post("/v1/patients", status_code=201, tags=["patients"])
    async def register(body: PatientIn, request: Request, s: ServicesDep) -> dict[str, int]:
        """Register a patient (实名). A resident ID number must carry a valid GB 11643 check
        character and the birth date given; other documents are format-checked. The phone is
        kept in E.164, so one number is one account however it is typed; the document is kept
        only as a keyed hash (one account per document) and a mask that hides the birth date.
        Limited per client address and per phone before any password is hashed."""
        await limit_address(s, request, "register", s.settings.limit_register_address)
        phone = normalize_phone(body.phone)
        if phone is None:
            raise invalid_field("phone", "not a valid phone number")
        problem = check_document(body.id_type, body.id_number, body.birth_date)
        if problem is not None:
            raise invalid_field("id_number", problem)
        await limit(s, "register-phone", phone, s.settings.limit_register_phone)
        number = normalize_document(body.id_type, body.id_number)
        hashed_id = number if body.id_type == "resident" else f"{body.id_type}:{number}"
        patient_id = await s.catalog.register_patient(
            {
                "name": body.name,
                "phone": phone,
                "id_type": body.id_type,
                "id_hash": s.tokens.hash_id(hashed_id),
                "id_masked": mask_document(body.id_type, number),
                "birth_date": body.birth_date.isoformat(),
                "password_hash": await s.passwords.run(hash_password, body.password),
            }
        )
        if patient_id is None:
            raise ApiError(409, "conflict", "This phone or ID number is already registered.")
        return {"id": patient_id}

    @app.post("/v1/auth/token", tags=["patients"])
    async def token(body: Credentials, request: Request, s: ServicesDep) -> dict[str, str]:
        """A bearer token for a patient (limited per client address and per phone)."""
        await limit_address(s, request, "login", s.settings.limit_login_address)
        phone = normalize_phone(body.phone) or body.phone  # as stored (E.164), else as typed
        await limit(s, "login-phone", phone, s.settings.limit_login_phone)
        shed(s)
        patient = await s.catalog.patient_by_phone(phone)
        hashed = patient["password_hash"] if patient else DUMMY_HASH  # same work either way
        ok = await s.passwords.run(check_password, hashed, body.password)
        if patient is None or not ok:
            raise ApiError(401, "unauthenticated", "Wrong phone or password.")
        version = await s.token_version(patient["id"])
        return {
            "access_token": s.tokens.issue(patient["id"], version=version),
            "token_type": "bearer",
        }

    @app.post("/v1/auth/logout", tags=["patients"])
    async def logout(s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
        """Revoke every token of the caller (on every device), at once on every worker."""
        await s.revoke_tokens(patient)
        return {"patient_id": patient, "revoked": True}

    @app.post("/v1/me/password", tags=["patients"])
    async def change_password(
        body: PasswordChangeIn, s: ServicesDep, patient: PatientDep
    ) -> dict[str, str]:
        """A new password: every older token stops working; the answer carries a new one."""
        await limit(s, "password", str(patient), s.settings.limit_login_phone)
        shed(s)
        doc = await s.catalog.get("patient", str(patient))
        if doc is None:
            raise ApiError(401, "unauthenticated", "A valid patient bearer token is required.")
        if not await s.passwords.run(check_password, doc["password_hash"], body.current_password):
            raise ApiError(403, "wrong_password", "The current password is wrong.")
        await s.catalog.set_password(
            patient, await s.passwords.run(hash_password, body.new_password)
        )
        version = await s.revoke_tokens(patient)
        return {"access_token": s.tokens.issue(patient, version=version), "token_type": "bearer"}

    @app.get("/v1/hospitals", tags=["browse"])
    async def hospitals(s: ServicesDep) -> list[dict[str, Any]]:
        return await s.catalog.hospitals()

    @app.get("/v1/hospitals/{hospital_id}/departments", tags=["browse"])
    async def departments(hospital_id: str, s: ServicesDep) -> list[dict[str, Any]]:
        if await s.catalog.get("hospital", hospital_id) is None:
            raise ApiError(404, "not_found", "No such hospital.")
        return await s.catalog.children("hospital", hospital_id, "department")

    @app.get("/v1/departments/{department_id}/sessions", tags=["browse"])
    async def department_sessions(
        department_id: str, s: ServicesDep, date: Annotated[Date | None, Query()] = None
    ) -> list[dict[str, Any]]:
        """The department's doctor-sessions (on ``date``), with stock from the live view."""
        if await s.catalog.get("department", department_id) is None:
            raise ApiError(404, "not_found", "No such department.")
        now = s.now()
        day = date.isoformat() if date else None
        return [v.public(s.clock, now) for v in s.availability.department(department_id, day)]

    @app.get("/v1/sessions/{session_id}", tags=["browse"])
    async def session(session_id: str, s: ServicesDep) -> Any:
        state = await s.engine.session_state(session_id)
        if not isinstance(state, SessionState):
            return engine_answer(state, s.clock)
        return {
            "id": state.session_id,
            "hospital_id": state.hospital_id,
            "department_id": state.department_id,
            "doctor_id": state.doctor_id,
            "date": state.date,
            "period": state.period,
            "capacity": state.capacity,
            "remaining": state.remaining,
            "status": state.status,
            "opens_at": s.clock.iso(state.opens_at),
            "closes_at": s.clock.iso(state.closes_at),
            "fee": state.fee,
            "held": state.held,
            "waiting": state.waiting,
        }

    @app.post(
        "/v1/sessions/{session_id}/bookings",
        status_code=201,
        tags=["booking"],
        responses={
            200: {"description": "the same request_id again: the same booking"},
            401: {"description": "unauthenticated"},
            403: {"description": "blacklisted"},
            404: {"description": "not_found"},
            409: {"description": "sold_out (with alternatives), not_open, closed, suspended"},
            413: {"description": "payload_too_large"},
            422: {"description": "invalid_request, hospital_day_limit, department_day_limit"},
            429: {"description": "rate_limited"},
            503: {
                "description": "unavailable: the store cannot confirm and nothing was booked; "
                "outcome_unknown: the store may have booked it (retry with the same request_id "
                "to learn the outcome)"
            },
        },
    )
    async def take_slot(
        session_id: str,
        body: BookingIn,
        request: Request,
        s: ServicesDep,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Take the next free slot for the caller. Served by the gateway's fast path; this
        route is its twin for any mount without the gateway."""
        address = client_address(request.scope, s.proxies)
        status, answer, *extra = await book(
            s, session_id, authorization, await request.body(), address
        )
        headers = {k.decode(): v.decode() for k, v in extra[0]} if extra else None
        return Response(answer, status_code=status, media_type="application/json", headers=headers)

    async def own_booking(s: Services, patient: int, booking_id: str) -> BookingInfo:
        info = await s.engine.booking(booking_id)
        if isinstance(info, BookingInfo) and info.patient_id == patient:
            return info
        if isinstance(info, BookingInfo):  # someone else's: indistinguishable from missing
            raise ApiError(404, "not_found", "No such booking.")
        raise ApiError(*outcome_parts(info, s.clock))

    @app.get("/v1/bookings/{booking_id}", tags=["booking"])
    async def get_booking(booking_id: str, s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
        return booking_body(await own_booking(s, patient, booking_id), s.clock)

    @app.get("/v1/me/bookings", tags=["booking"])
    async def my_bookings(s: ServicesDep, patient: PatientDep) -> list[dict[str, Any]]:
        ids = await s.catalog.patient_booking_ids(patient)
        infos = await asyncio.gather(*(s.engine.booking(i) for i in ids))
        return [
            booking_body(i, s.clock)
            for i in infos
            if isinstance(i, BookingInfo) and i.patient_id == patient
        ]

    @app.post("/v1/bookings/{booking_id}/payment", tags=["booking"])
    async def pay(booking_id: str, s: ServicesDep, patient: PatientDep) -> Any:
        """Pay a held booking (sandbox gateway). Paying again takes no more money and answers
        the same code; a payment that arrives after the hold expired is refunded in full."""
        await limit(s, "pay", str(patient), s.settings.limit_pay_patient)
        outcome = await s.engine.pay(booking_id, patient)
        if isinstance(outcome, Paid):
            payment = await s.engine.gateway.payment(booking_id)
            return {
                "booking_id": outcome.booking_id,
                "status": "booked",
                "verification_code": outcome.verification_code,
                "payment_id": payment.payment_id if payment else None,
                "amount": payment.amount if payment else 0,
            }
        return engine_answer(outcome, s.clock)

    @app.post("/v1/bookings/{booking_id}/cancel", tags=["booking"])
    async def cancel(booking_id: str, s: ServicesDep, patient: PatientDep) -> Any:
        """退号: give the slot back before the hospital's cutoff; refunded by its fee tiers.
        A slot nobody waits for goes back to the pool after a random delay (the policy's
        return_jitter_seconds), so it cannot be handed to someone on cue."""
        await limit(s, "cancel", str(patient), s.settings.limit_cancel_patient)
        outcome = await s.engine.release(booking_id, patient)
        if isinstance(outcome, Released):
            return {
                "booking_id": outcome.booking_id,
                "status": outcome.status,
                "slot_no": outcome.slot_no,
                "refund": outcome.refund,
            }
        return engine_answer(outcome, s.clock)

    @app.post("/v1/sessions/{session_id}/waitlist", status_code=201, tags=["waitlist"])
    async def join_waitlist(
        session_id: str, body: WaitlistIn, s: ServicesDep, patient: PatientDep
    ) -> Any:
        """候补: queue for a sold-out doctor-session. When a slot comes back, the first in
        line who still passes the rules gets it (held for payment when there is a fee) and a
        notification. The same request_id again answers the same place."""
        outcome = await s.engine.join_waitlist(session_id, patient, body.request_id)
        if isinstance(outcome, Waitlisted):
            return JSONResponse(
                {"session_id": session_id, "position": outcome.position},
                status_code=200 if outcome.repeat else 201,
            )
        if isinstance(outcome, Booked):  # this request already got a slot: that booking
            return Response(booked_body(outcome, s.clock), media_type="application/json")
        return engine_answer(outcome, s.clock)

    @app.delete("/v1/sessions/{session_id}/waitlist", tags=["waitlist"])
    async def leave_waitlist(session_id: str, s: ServicesDep, patient: PatientDep) -> Any:
        outcome = await s.engine.leave_waitlist(session_id, patient)
        if isinstance(outcome, LeftWaitlist):
            return {"session_id": session_id, "status": "left"}
        return engine_answer(outcome, s.clock)

    @app.get("/v1/me/conduct", tags=["patients"])
    async def my_conduct(s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
        """My violations (no-shows, cancellations) and bans, per hospital or platform-wide.

        ``bans`` are what the rules earned; ``banned_until`` is the ban in force (a hospital
        may have lifted one by hand, spared a whitelisted patient, or set one itself)."""
        now = s.now()
        scopes = await s.engine.conduct(patient)
        out = []
        for scope, conduct in scopes.items():
            stored = await s.engine.bans(scope, patient)
            until = stored if stored is not None and stored > now else None
            out.append(
                {
                    "scope": scope,
                    "violations": [
                        {"kind": v.kind, "booking_id": v.booking_id, "at": s.clock.iso(v.at)}
                        for v in conduct.violations
                    ],
                    "bans": [
                        {"from": s.clock.iso(b.start), "until": s.clock.iso(b.until)}
                        for b in conduct.bans
                    ],
                    "banned_until": s.clock.iso(until),
                }
            )
        return {"patient_id": patient, "banned": any(x["banned_until"] for x in out), "scopes": out}

    @app.get("/v1/me/notifications", tags=["patients"])
    async def my_notifications(s: ServicesDep, patient: PatientDep) -> list[dict[str, Any]]:
        """My latest notifications (confirmed, hold expiring, expired, cancelled, ...)."""
        return await patient_notices(s.engine.store.client, s.engine.store.keys, patient)


def register_catalog_entity(app: FastAPI, kind: str, patch: type[BaseModel], tags: list) -> None:
    """GET, PATCH and DELETE /v1/admin/<kind>s/{id}, scoped to the admin's hospital."""
    path = f"/v1/admin/{kind}s/{{entity_id}}"

    async def read(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        return await entity_of(s, who, kind, entity_id)

    async def change(entity_id: str, body: patch, s: ServicesDep, who: AdminDep) -> Any:  # type: ignore[valid-type]
        await entity_of(s, who, kind, entity_id)
        return await s.catalog.update(kind, entity_id, body.model_dump(exclude_none=True))  # type: ignore[attr-defined]

    async def remove(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        """Refused while anything under it still matters: live bookings (held or booked),
        sessions that can still be booked (suspend them first), or departments / doctors."""
        if kind == "hospital":
            platform_only(who)
        doc = await entity_of(s, who, kind, entity_id)
        states = await asyncio.gather(
            *(s.engine.session_state(x["id"]) for x in await s.catalog.sessions_under(kind, doc))
        )
        if any(not isinstance(x, SessionState) for x in states):
            raise ApiError(503, "unavailable", "The engine cannot answer right now; retry.")
        live = sum(x.live for x in states)  # type: ignore[union-attr]
        if live:
            raise ApiError(
                409, "has_live_bookings", f"{live} bookings still await their visit.", live=live
            )
        bookable = [x.session_id for x in states if x.status in ("scheduled", "open", "sold_out")]  # type: ignore[union-attr]
        if bookable:
            raise ApiError(
                409, "has_open_sessions", "Suspend its bookable sessions first.", sessions=bookable
            )
        child = {"hospital": "department", "department": "doctor"}.get(kind)
        if child and await s.catalog.children(kind, entity_id, child):
            raise ApiError(409, "not_empty", f"Delete its {child}s first.")
        await s.catalog.delete(kind, doc)
        return {"id": entity_id, "deleted": True}

    change.__annotations__["body"] = patch  # a closure's name: give FastAPI the class itself
    app.get(path, tags=tags, name=f"get_{kind}")(read)
    app.patch(path, tags=tags, name=f"update_{kind}")(change)
    app.delete(path, tags=tags, name=f"delete_{kind}")(remove)


def register_admin_routes(app: FastAPI) -> None:
    tags = ["admin"]

    patches = {"hospital": HospitalPatch, "department": DepartmentPatch, "doctor": DoctorPatch}
    for kind, patch in patches.items():
        register_catalog_entity(app, kind, patch, tags)

    @app.put("/v1/admin/doctors/{doctor_id}/rota", tags=tags)
    async def put_rota(doctor_id: str, body: RotaIn, s: ServicesDep, who: AdminDep) -> Any:
        """A doctor's weekly rota: its sessions are released day by day, each shortly before
        its release time, so a change applies to every session not yet released."""
        doctor = await entity_of(s, who, "doctor", doctor_id)
        seen = {(x.weekday, x.period) for x in body.slots}
        if len(seen) != len(body.slots):
            raise ApiError(422, "invalid_request", "One slot per weekday and period.")
        doc = {
            "doctor_id": doctor["id"],
            "hospital_id": doctor["hospital_id"],
            "slots": [x.model_dump() for x in body.slots],
        }
        await s.catalog.set_rota(doc)
        made = await release_due(s)
        return {**doc, "released": made}

    @app.get("/v1/admin/doctors/{doctor_id}/rota", tags=tags)
    async def get_rota(doctor_id: str, s: ServicesDep, who: AdminDep) -> Any:
        await entity_of(s, who, "doctor", doctor_id)
        rota = await s.catalog.get("rota", doctor_id)
        if rota is None:
            raise ApiError(404, "not_found", "This doctor has no rota.")
        return rota

    @app.delete("/v1/admin/doctors/{doctor_id}/rota", tags=tags)
    async def drop_rota(doctor_id: str, s: ServicesDep, who: AdminDep) -> Any:
        """Stop releasing; sessions already released stay (suspend them to cancel them)."""
        await entity_of(s, who, "doctor", doctor_id)
        if not await s.catalog.drop_rota(doctor_id):
            raise ApiError(404, "not_found", "This doctor has no rota.")
        return {"doctor_id": doctor_id, "rota": None}

    async def hospital_patient(
        s: Services, who: AdminScope, hospital_id: str, patient_id: int
    ) -> dict[str, Any]:
        """A patient the acting admin may see at this hospital: the platform admin sees every
        patient; a hospital admin only those with a booking there, past or present (anyone
        else is 404, indistinguishable from no such patient, and nothing changes)."""
        await entity_of(s, who, "hospital", hospital_id)
        patient = await s.catalog.get("patient", str(patient_id))
        if patient is None or not (
            who.platform or await patients.booked_at(s, hospital_id, patient_id)
        ):
            raise ApiError(404, "not_found", "No such patient at this hospital.")
        return patient

    base = "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}"

    @app.get(base, tags=tags)
    async def patient_view(hospital_id: str, patient_id: int, s: ServicesDep, who: AdminDep) -> Any:
        """A patient as this hospital may see them: name, masked document, birth year,
        bookings and conduct here, the hospital's list entries and tags. A hospital admin sees
        only patients with a booking there."""
        patient = await hospital_patient(s, who, hospital_id, patient_id)
        return await patients.view(s, hospital_id, patient)

    @app.put(base + "/tags", tags=tags)
    async def put_tags(
        hospital_id: str, patient_id: int, body: TagsIn, s: ServicesDep, who: AdminDep
    ) -> Any:
        """Tags (groups) this hospital gives a patient; an empty list removes them."""
        await hospital_patient(s, who, hospital_id, patient_id)
        await patients.set_tags(s, hospital_id, patient_id, body.tags)
        return {"patient_id": patient_id, "tags": sorted(set(body.tags))}

    @app.put(base + "/{kind}", tags=tags)
    async def put_list_entry(
        hospital_id: str,
        patient_id: int,
        kind: Literal["blacklist", "whitelist"],
        body: ListEntryIn,
        s: ServicesDep,
        who: AdminDep,
    ) -> Any:
        """Put a patient on the hospital's blacklist (a ban set by hand, until ``until``) or
        whitelist (lifts any ban; the rules do not ban them here until ``until``)."""
        await hospital_patient(s, who, hospital_id, patient_id)
        until = body.until.timestamp() if body.until else None
        outcome = await patients.put_entry(
            s, hospital_id, kind, patient_id, body.reason, until, who.admin_id
        )
        if not isinstance(outcome, Done):
            return engine_answer(outcome, s.clock)
        return {
            "patient_id": patient_id,
            kind: {"reason": body.reason, "until": s.clock.iso(until)},
        }

    @app.delete(base + "/{kind}", tags=tags)
    async def drop_list_entry(
        hospital_id: str,
        patient_id: int,
        kind: Literal["blacklist", "whitelist"],
        s: ServicesDep,
        who: AdminDep,
    ) -> Any:
        await hospital_patient(s, who, hospital_id, patient_id)
        outcome = await patients.drop_entry(s, hospital_id, kind, patient_id)
        if outcome is None:
            raise ApiError(404, "not_found", f"The patient is not on the {kind}.")
        if not isinstance(outcome, Done):
            return engine_answer(outcome, s.clock)
        return {"patient_id": patient_id, kind: None}

    @app.get("/v1/admin/hospitals/{hospital_id}/lists/{kind}", tags=tags)
    async def list_entries(
        hospital_id: str, kind: Literal["blacklist", "whitelist"], s: ServicesDep, who: AdminDep
    ) -> Any:
        await entity_of(s, who, "hospital", hospital_id)
        found = await patients.entries(s, hospital_id, kind)
        return [{"patient_id": p, **e} for p, e in sorted(found.items())]

    @app.get("/v1/admin/hospitals/{hospital_id}/tags/{tag}", tags=tags)
    async def tagged_patients(hospital_id: str, tag: str, s: ServicesDep, who: AdminDep) -> Any:
        await entity_of(s, who, "hospital", hospital_id)
        return {"tag": tag, "patients": await patients.tagged(s, hospital_id, tag)}

    @app.post("/v1/admin/admins", status_code=201, tags=tags)
    async def new_admin(body: AdminIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
        """An admin account: of one hospital (``hospital_id``), or of the platform (none)."""
        platform_only(who)
        if (
            body.hospital_id is not None
            and await s.catalog.get("hospital", body.hospital_id) is None
        ):
            raise ApiError(404, "not_found", "No such hospital.")
        admin_id = await s.admins.create(
            {
                "login": body.login,
                "name": body.name,
                "hospital_id": body.hospital_id,
                "password_hash": await s.passwords.run(hash_password, body.password),
            }
        )
        if admin_id is None:
            raise ApiError(409, "conflict", "This login is taken.")
        return {"id": admin_id}

    @app.get("/v1/admin/admins", tags=tags)
    async def list_admins(s: ServicesDep, who: AdminDep) -> list[dict[str, Any]]:
        platform_only(who)
        return await s.admins.all()

    @app.delete("/v1/admin/admins/{admin_id}", tags=tags)
    async def disable_admin(admin_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        """Disable an account; every token it was given stops working at once."""
        platform_only(who)
        if not await s.admins.disable(admin_id):
            raise ApiError(404, "not_found", "No such admin.")
        return public(await s.admins.get(admin_id) or {})

    @app.post("/v1/admin/auth/token", tags=tags)
    async def admin_token(
        body: AdminCredentials, request: Request, s: ServicesDep
    ) -> dict[str, Any]:
        """An admin account's bearer token (limited per client address and per login)."""
        await limit_address(s, request, "login", s.settings.limit_login_address)
        await limit(s, "admin-login", body.login, s.settings.limit_login_phone)
        shed(s)
        doc = await s.admins.by_login(body.login)
        hashed = doc["password_hash"] if doc else DUMMY_HASH  # same work either way
        ok = await s.passwords.run(check_password, hashed, body.password)
        if doc is None or not ok or doc["disabled"]:
            raise ApiError(401, "unauthenticated", "Wrong login or password.")
        return {
            "access_token": s.admins.issue(doc),
            "token_type": "bearer",
            "hospital_id": doc.get("hospital_id"),
        }

    @app.post("/v1/admin/hospitals", status_code=201, tags=tags)
    async def new_hospital(body: HospitalIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
        platform_only(who)
        return {"id": (await s.catalog.create_hospital(body.model_dump()))["id"]}

    @app.post("/v1/admin/departments", status_code=201, tags=tags)
    async def new_department(body: DepartmentIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
        if await s.catalog.get("hospital", body.hospital_id) is None:
            raise ApiError(404, "not_found", "No such hospital.")
        allow(who, body.hospital_id)
        return {"id": (await s.catalog.create_department(body.model_dump()))["id"]}

    @app.post("/v1/admin/doctors", status_code=201, tags=tags)
    async def new_doctor(body: DoctorIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
        department = await s.catalog.get("department", body.department_id)
        if department is None:
            raise ApiError(404, "not_found", "No such department.")
        allow(who, department["hospital_id"])
        doc = {**body.model_dump(), "hospital_id": department["hospital_id"]}
        return {"id": (await s.catalog.create_doctor(doc))["id"]}

    @app.post("/v1/admin/sessions", status_code=201, tags=tags)
    async def new_session(body: SessionIn, s: ServicesDep, who: AdminDep) -> Any:
        """Release a doctor-session (出诊) with ``capacity`` numbered slots."""
        doctor = await s.catalog.get("doctor", body.doctor_id)
        if doctor is None:
            raise ApiError(404, "not_found", "No such doctor.")
        allow(who, doctor["hospital_id"])
        today = datetime.fromtimestamp(s.now(), s.clock.zone).date()
        if not today - timedelta(days=1) <= body.date <= today + timedelta(days=366):
            raise ApiError(422, "invalid_request", "date must be within the coming year.")
        try:
            session_id, outcome = await release(
                s,
                doctor,
                body.date,
                body.period,
                body.capacity,
                body.first_slot_at,
                body.slot_minutes,
                body.fee,
                body.opens_at,
                body.closes_at,
            )
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        if not isinstance(outcome, Created):
            return engine_answer(outcome, s.clock)
        return JSONResponse({"id": session_id}, status_code=201)

    @app.get("/v1/admin/sessions/{session_id}/bookings", tags=tags)
    async def session_bookings(session_id: str, s: ServicesDep, who: AdminDep) -> Any:
        await session_of(s, who, session_id)
        outcome = await s.engine.session_bookings(session_id)
        if not isinstance(outcome, Bookings):
            return engine_answer(outcome, s.clock)
        return [
            {**booking_body(b, s.clock, owner=False), "patient_id": b.patient_id}
            for b in outcome.bookings
        ]

    @app.get("/v1/admin/sessions/{session_id}/day-list", tags=tags)
    async def day_list(
        session_id: str,
        s: ServicesDep,
        who: AdminDep,
        format: Annotated[Literal["csv", "html"], Query()] = "csv",
    ) -> Response:
        """The printable day list of a doctor-session (打印): taken slots in order, with names
        and masked identities, as CSV (UTF-8 with BOM, for spreadsheets) or an HTML page."""
        state = await session_of(s, who, session_id)
        listed = await s.engine.session_bookings(session_id)
        if not isinstance(listed, Bookings):
            return engine_answer(listed, s.clock)
        rows = await patients.day_list(s, listed.bookings)
        title = f"{state.date} {state.period} · {state.doctor_id} · {session_id}"
        if format == "html":
            cells = "".join(
                "<tr>"
                + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in patients.DAY_LIST_COLUMNS)
                + "</tr>"
                for r in rows
            )
            head = "".join(f"<th>{c}</th>" for c in patients.DAY_LIST_COLUMNS)
            page = (
                f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                f"<h1>{html.escape(title)}</h1><table border=1><tr>{head}</tr>{cells}</table>"
            )
            return Response(page, media_type="text/html; charset=utf-8")
        return Response(
            csv_text(patients.DAY_LIST_COLUMNS, rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{session_id}.csv"'},
        )

    @app.post("/v1/admin/sessions/{session_id}/suspend", tags=tags)
    async def suspend(session_id: str, s: ServicesDep, who: AdminDep) -> Any:
        """停诊: every booking is cancelled and refunded in full, each patient notified, and the
        session answers ``suspended`` from now on. Suspending again changes nothing."""
        await session_of(s, who, session_id)
        outcome = await s.engine.suspend(session_id)
        if isinstance(outcome, SuspendDone):
            return {
                "session_id": session_id,
                "status": "suspended",
                "cancelled": outcome.cancelled,
                "refunded": outcome.refunded,
                "repeat": outcome.repeat,
            }
        return engine_answer(outcome, s.clock)

    @app.post("/v1/admin/bookings/{booking_id}/check-in", tags=tags)
    async def check_in(booking_id: str, body: CheckInIn, s: ServicesDep, who: AdminDep) -> Any:
        """取号 with the patient's 8-digit code, on the visit day. Wrong codes are counted; the
        booking locks after the policy's check_in_max_tries."""
        await session_of(s, who, booking_id.rpartition(".")[0] or booking_id)
        outcome = await s.engine.check_in(booking_id, body.verification_code)
        if isinstance(outcome, CheckedIn):
            return {
                "booking_id": outcome.booking_id,
                "status": "checked_in",
                "slot_no": outcome.slot_no,
                "slot_time": outcome.slot_time,
                "patient_id": outcome.patient_id,
            }
        return engine_answer(outcome, s.clock)

    @app.get("/v1/admin/hospitals/{hospital_id}/policy", tags=tags)
    async def get_policy(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        await entity_of(s, who, "hospital", hospital_id)
        return (await s.engine.policy(hospital_id)).to_dict()

    @app.put("/v1/admin/hospitals/{hospital_id}/policy", tags=tags)
    async def put_policy(hospital_id: str, body: PolicyIn, s: ServicesDep, who: AdminDep) -> Any:
        """Change a hospital's rules (only the fields given); every host applies them at once.
        The platform admin and that hospital's admins may; ``ban_scope: platform`` (a ban here
        bars the patient everywhere) only the platform admin. Ban lengths and rule windows are
        at most 365 days."""
        await entity_of(s, who, "hospital", hospital_id)
        if body.ban_scope == PLATFORM and not who.platform:
            raise ApiError(
                403,
                "forbidden",
                "Only the platform admin may make a hospital's bans platform-wide.",
            )
        current = await s.engine.policy(hospital_id)
        try:
            policy = Policy.from_dict(body.model_dump(exclude_none=True), base=current)
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        outcome = await s.engine.set_policy(hospital_id, policy)
        if not isinstance(outcome, Done):
            return engine_answer(outcome, s.clock)
        return policy.to_dict()

    @app.get("/v1/admin/platform/bans", tags=tags)
    async def platform_bans(s: ServicesDep, who: AdminDep) -> list[dict[str, Any]]:
        """Patients barred on the whole platform (by a hospital whose ban scope is platform, or
        by hand), with until when. Platform admin only."""
        platform_only(who)
        now = s.now()
        raw = await s.engine.store.client.hgetall(s.engine.store.keys.bans(PLATFORM))
        bans = sorted((int(k), float(v)) for k, v in raw.items() if float(v) > now)
        return [{"patient_id": p, "until": s.clock.iso(u)} for p, u in bans]

    @app.delete("/v1/admin/platform/bans/{patient_id}", tags=tags)
    async def lift_platform_ban(patient_id: int, s: ServicesDep, who: AdminDep) -> Any:
        """Lift a platform-wide ban (the record's violations stay; only a new one bans again).
        Platform admin only."""
        platform_only(who)
        until = await s.engine.bans(PLATFORM, patient_id)
        if until is None or until <= s.now():
            raise ApiError(404, "not_found", "This patient is not banned on the platform.")
        outcome = await s.engine.set_blacklist(PLATFORM, patient_id, None)
        if not isinstance(outcome, Done):
            return engine_answer(outcome, s.clock)
        return {"patient_id": patient_id, "banned_until": None}

    @app.get("/v1/admin/outbox/dead-letters", tags=tags)
    async def dead_letters(
        s: ServicesDep, who: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        """Outbox entries the courier gave up on after SLOTENGINE_OUTBOX_MAX_TRIES deliveries
        (refunds, notices, violations behind them went on), newest first. Platform only."""
        platform_only(who)
        return {
            "count": await s.dead_letters.count(),
            "items": await s.dead_letters.list(limit),
        }

    @app.post("/v1/admin/outbox/dead-letters/{dead_id}/retry", tags=tags)
    async def retry_dead_letter(dead_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        """Put a dead letter back into the outbox (once what made it fail is fixed)."""
        platform_only(who)
        if not await s.dead_letters.retry(dead_id):
            raise ApiError(404, "not_found", "No such dead letter.")
        return {"id": dead_id, "retried": True}

    @app.delete("/v1/admin/outbox/dead-letters/{dead_id}", tags=tags)
    async def drop_dead_letter(dead_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        """Drop a dead letter for good (what it asked for is not done)."""
        platform_only(who)
        if not await s.dead_letters.drop(dead_id):
            raise ApiError(404, "not_found", "No such dead letter.")
        return {"id": dead_id, "dropped": True}

    @app.get("/v1/admin/notifications", tags=tags)
    async def notifications(
        s: ServicesDep, who: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        """The latest notifications sent, newest first (the default sender's outbox view)."""
        platform_only(who)
        return await recent_notices(s.engine.store.client, s.engine.store.keys, limit)

    @app.post("/v1/admin/clock", tags=tags)
    async def move_clock(body: ClockIn, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
        """Move the one clock forward and run every timer (only with SLOTENGINE_MOVABLE_CLOCK)."""
        platform_only(who)
        if not s.settings.movable_clock:
            raise ApiError(404, "not_found", "The clock is not movable here.")
        now = await s.engine.advance_clock(body.advance_seconds)
        await release_due(s)
        return {"now": s.clock.iso(now), "offset_seconds": s.engine.clock.offset}


def register_operations(app: FastAPI, settings: Settings) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(s: ServicesDep) -> Any:
        """Redis and every host reachable, as a background check found them (every second);
        a probe never sends a call of its own into the hosts."""
        checks = {k: v for k, v in s.health.items() if k in ("redis", "ray")}
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ready" if ready else "unavailable", **checks}
        body["checked_at"] = s.clock.iso(s.health.get("checked_at"))
        if not ready:
            body = {"code": "unavailable", "message": "Not ready.", **body}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_reader(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> None:
        if not settings.metrics_public:  # refund totals and ban counts are not for anyone
            platform_only(await admin(request, authorization))

    @app.get("/metrics", tags=["operations"], dependencies=[Depends(metrics_reader)])
    async def prometheus(s: ServicesDep) -> Response:
        """Prometheus text (the platform admin's bearer token unless SLOTENGINE_METRICS_PUBLIC);
        the courier's figures as a background task last read them."""
        body, content_type = metrics.render(s.figures)
        return Response(body, media_type=content_type)
