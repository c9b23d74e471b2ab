"""Doctor-sessions for their hospital's admins: release, list, the day list, suspend, check in;
the hospital's policy."""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from api.answers import booking_body, content, declared, engine_answer
from api.catalog import patients
from api.catalog.rotas import release
from api.csv_export import csv_text
from api.deps import (
    AdminDep,
    ServicesDep,
    allow,
    entity_of,
    session_of,
)
from api.errors import CONFLICT, FORBIDDEN, INVALID_REQUEST, NOT_FOUND
from api.schemas import CheckInIn, PolicyIn, SessionIn
from engine.core.policy import PLATFORM, Policy
from engine.outcomes import (
    Bookings,
    CheckedIn,
    CheckInOutcome,
    Created,
    Done,
    Stored,
    SuspendDone,
    SuspendOutcome,
)

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/sessions", responses=declared(NOT_FOUND, CONFLICT), status_code=201)
async def new_session(body: SessionIn, s: ServicesDep, who: AdminDep) -> Any:
    """Release a doctor-session (出诊) with ``capacity`` numbered slots."""
    doctor = await s.catalog.get("doctor", body.doctor_id)
    if doctor is None:
        raise NOT_FOUND("No such doctor.")
    allow(who, doctor["hospital_id"])
    today = datetime.fromtimestamp(s.now(), s.clock.zone).date()
    if not today - timedelta(days=1) <= body.date <= today + timedelta(days=366):
        raise INVALID_REQUEST("date must be within the coming year.")
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
        raise INVALID_REQUEST(str(exc)) from exc
    if not isinstance(outcome, Created):
        return engine_answer(outcome, s.clock)
    return JSONResponse({"id": session_id}, status_code=201)


@router.get("/v1/admin/sessions/{session_id}/bookings")
async def session_bookings(session_id: str, s: ServicesDep, who: AdminDep) -> Any:
    await session_of(s, who, session_id)
    outcome = await s.engine.session_bookings(session_id)
    if not isinstance(outcome, Bookings):
        return engine_answer(outcome, s.clock)
    return [
        {**booking_body(b, s.clock, owner=False), "patient_id": b.patient_id}
        for b in outcome.bookings
    ]


@router.get(
    "/v1/admin/sessions/{session_id}/day-list",
    response_class=Response,
    responses=content("text/csv", "text/html"),
)
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


@router.post("/v1/admin/sessions/{session_id}/suspend", responses=declared(SuspendOutcome, Stored))
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


@router.post("/v1/admin/bookings/{booking_id}/check-in", responses=declared(CheckInOutcome, Stored))
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


@router.get("/v1/admin/hospitals/{hospital_id}/policy")
async def get_policy(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    await entity_of(s, who, "hospital", hospital_id)
    return (await s.engine.policy(hospital_id)).to_dict()


@router.put("/v1/admin/hospitals/{hospital_id}/policy")
async def put_policy(hospital_id: str, body: PolicyIn, s: ServicesDep, who: AdminDep) -> Any:
    """Change a hospital's rules (only the fields given); every host applies them at once.
    The platform admin and that hospital's admins may; ``ban_scope: platform`` (a ban here
    bars the patient everywhere) only the platform admin. Ban lengths and rule windows are
    at most 365 days."""
    await entity_of(s, who, "hospital", hospital_id)
    if body.ban_scope == PLATFORM and not who.platform:
        raise FORBIDDEN(
            "Only the platform admin may make a hospital's bans platform-wide.",
        )
    current = await s.engine.policy(hospital_id)
    try:
        policy = Policy.from_dict(body.model_dump(exclude_none=True), base=current)
    except ValueError as exc:
        raise INVALID_REQUEST(str(exc)) from exc
    outcome = await s.engine.set_policy(hospital_id, policy)
    if not isinstance(outcome, Done):
        return engine_answer(outcome, s.clock)
    return policy.to_dict()
