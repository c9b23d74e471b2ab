"""Browsing the catalog: hospitals, departments, doctor-sessions (public)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.answers import engine_answer
from api.deps import (
    ServicesDep,
)
from api.errors import NOT_FOUND
from api.schemas import Day
from engine.outcomes import (
    SessionState,
)

router = APIRouter()


@router.get("/v1/hospitals", tags=["browse"])
async def hospitals(s: ServicesDep) -> list[dict[str, Any]]:
    return await s.catalog.hospitals()


@router.get("/v1/hospitals/{hospital_id}/departments", tags=["browse"])
async def departments(hospital_id: str, s: ServicesDep) -> list[dict[str, Any]]:
    if await s.catalog.get("hospital", hospital_id) is None:
        raise NOT_FOUND("No such hospital.")
    return await s.catalog.children("hospital", hospital_id, "department")


@router.get("/v1/departments/{department_id}/sessions", tags=["browse"])
async def department_sessions(
    department_id: str, s: ServicesDep, date: Annotated[Day | None, Query()] = None
) -> list[dict[str, Any]]:
    """The department's doctor-sessions (on ``date``), with stock from the live view."""
    if await s.catalog.get("department", department_id) is None:
        raise NOT_FOUND("No such department.")
    now = s.now()
    day = date.isoformat() if date else None
    return [v.public(s.clock, now) for v in s.availability.department(department_id, day)]


@router.get("/v1/sessions/{session_id}", tags=["browse"])
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
