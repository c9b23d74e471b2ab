"""A patient's bookings: take a slot (the gateway's twin), read, pay, cancel, the waitlist."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse, Response

from api.answers import booked_body, booking_body, declared, engine_answer
from api.deps import (
    PATIENT_TOKEN,
    PatientDep,
    ServicesDep,
    limit,
    outcome_parts,
)
from api.errors import NOT_FOUND, RATE_LIMITED, UNAUTHENTICATED, ApiError
from api.fastpath.booking import book
from api.fastpath.limits import client_address
from api.schemas import BookingIn, WaitlistIn
from api.services import Services
from engine.outcomes import (
    Booked,
    BookingInfo,
    BookOutcome,
    JoinOutcome,
    LeaveOutcome,
    LeftWaitlist,
    Paid,
    PayOutcome,
    Released,
    ReleaseOutcome,
    Stored,
    Waitlisted,
)

router = APIRouter()


@router.post(
    "/v1/sessions/{session_id}/bookings",
    status_code=201,
    tags=["booking"],
    dependencies=[Security(PATIENT_TOKEN)],  # read by the gateway itself; here for the document
    responses=declared(
        BookOutcome,
        UNAUTHENTICATED,
        RATE_LIMITED,
        successes={200: "the same request_id again: the same booking"},
    ),
)
async def take_slot(session_id: str, body: BookingIn, request: Request, s: ServicesDep) -> Response:
    """Take the next free slot for the caller. Served by the gateway's fast path; this
    route is its twin for any mount without the gateway.

    A 503 ``unavailable`` means nothing was booked; ``outcome_unknown`` means the store may
    have booked it: retry with the same request_id to learn the outcome."""
    address = client_address(request.scope, s.proxies)
    authorization = request.headers.get("authorization")
    status, answer, *extra = await book(s, session_id, authorization, await request.body(), address)
    headers = {k.decode(): v.decode() for k, v in extra[0]} if extra else None
    return Response(answer, status_code=status, media_type="application/json", headers=headers)


async def own_booking(s: Services, patient: int, booking_id: str) -> BookingInfo:
    info = await s.engine.booking(booking_id)
    if isinstance(info, BookingInfo) and info.patient_id == patient:
        return info
    if isinstance(info, BookingInfo):  # someone else's: indistinguishable from missing
        raise NOT_FOUND("No such booking.")
    raise ApiError(*outcome_parts(info, s.clock))


@router.get("/v1/bookings/{booking_id}", tags=["booking"])
async def get_booking(booking_id: str, s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
    return booking_body(await own_booking(s, patient, booking_id), s.clock)


@router.get("/v1/me/bookings", tags=["booking"])
async def my_bookings(s: ServicesDep, patient: PatientDep) -> list[dict[str, Any]]:
    ids = await s.catalog.patient_booking_ids(patient)
    infos = await asyncio.gather(*(s.engine.booking(i) for i in ids))
    return [
        booking_body(i, s.clock)
        for i in infos
        if isinstance(i, BookingInfo) and i.patient_id == patient
    ]


@router.post(
    "/v1/bookings/{booking_id}/payment",
    responses=declared(PayOutcome, Stored, RATE_LIMITED),
    tags=["booking"],
)
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


@router.post(
    "/v1/bookings/{booking_id}/cancel",
    responses=declared(ReleaseOutcome, Stored, RATE_LIMITED),
    tags=["booking"],
)
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


@router.post(
    "/v1/sessions/{session_id}/waitlist",
    responses=declared(
        JoinOutcome,
        Stored,
        successes={200: "the same request_id again: the same place, or the booking it already got"},
    ),
    status_code=201,
    tags=["waitlist"],
)
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


@router.delete(
    "/v1/sessions/{session_id}/waitlist",
    responses=declared(LeaveOutcome, Stored),
    tags=["waitlist"],
)
async def leave_waitlist(session_id: str, s: ServicesDep, patient: PatientDep) -> Any:
    outcome = await s.engine.leave_waitlist(session_id, patient)
    if isinstance(outcome, LeftWaitlist):
        return {"session_id": session_id, "status": "left"}
    return engine_answer(outcome, s.clock)
