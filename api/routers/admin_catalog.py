"""The catalog for admins: hospitals (the platform's), departments and doctors (their
hospital's), read, changed (only the fields given) and deleted (refused while anything under them
still matters); doctors' weekly rotas."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from api.accounts.admins import AdminScope
from api.answers import declared
from api.catalog.rotas import release_due
from api.deps import (
    AdminDep,
    ServicesDep,
    allow,
    entity_of,
    platform_only,
)
from api.errors import (
    CONFLICT,
    HAS_LIVE_BOOKINGS,
    HAS_OPEN_SESSIONS,
    INVALID_REQUEST,
    NOT_EMPTY,
    NOT_FOUND,
    UNAVAILABLE,
)
from api.schemas import (
    DepartmentIn,
    DepartmentPatch,
    DoctorIn,
    DoctorPatch,
    HospitalIn,
    HospitalPatch,
    RotaIn,
)
from api.services import Services
from engine.outcomes import (
    SessionState,
)

router = APIRouter(tags=["admin"])


async def _remove(s: Services, who: AdminScope, kind: str, entity_id: str) -> dict[str, Any]:
    """Refused while anything under it still matters: live bookings (held or booked),
    sessions that can still be booked (suspend them first), or departments / doctors."""
    if kind == "hospital":
        platform_only(who)
    doc = await entity_of(s, who, kind, entity_id)
    states = await asyncio.gather(
        *(s.engine.session_state(x["id"]) for x in await s.catalog.sessions_under(kind, doc))
    )
    if any(not isinstance(x, SessionState) for x in states):
        raise UNAVAILABLE("The engine cannot answer right now; retry.")
    live = sum(x.live for x in states)  # type: ignore[union-attr]
    if live:
        raise HAS_LIVE_BOOKINGS(f"{live} bookings still await their visit.", live=live)
    open_states = ("scheduled", "open", "sold_out")
    bookable = [x.session_id for x in states if x.status in open_states]  # type: ignore[union-attr]
    if bookable:
        raise HAS_OPEN_SESSIONS("Suspend its bookable sessions first.", sessions=bookable)
    child = {"hospital": "department", "department": "doctor"}.get(kind)
    if child and await s.catalog.children(kind, entity_id, child):
        raise NOT_EMPTY(f"Delete its {child}s first.")
    await s.catalog.delete(kind, doc)
    return {"id": entity_id, "deleted": True}


async def _change(s: Services, who: AdminScope, kind: str, entity_id: str, body: Any) -> Any:
    await entity_of(s, who, kind, entity_id)
    return await s.catalog.update(kind, entity_id, body.model_dump(exclude_none=True))


@router.get("/v1/admin/hospitals/{entity_id}", name="get_hospital")
async def get_hospital(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    return await entity_of(s, who, "hospital", entity_id)


@router.patch("/v1/admin/hospitals/{entity_id}", name="update_hospital")
async def update_hospital(
    entity_id: str, body: HospitalPatch, s: ServicesDep, who: AdminDep
) -> Any:
    return await _change(s, who, "hospital", entity_id, body)


@router.delete(
    "/v1/admin/hospitals/{entity_id}",
    responses=declared(HAS_LIVE_BOOKINGS, HAS_OPEN_SESSIONS, NOT_EMPTY),
    name="delete_hospital",
)
async def delete_hospital(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Only the platform admin; refused while anything under it still matters."""
    return await _remove(s, who, "hospital", entity_id)


@router.get("/v1/admin/departments/{entity_id}", name="get_department")
async def get_department(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    return await entity_of(s, who, "department", entity_id)


@router.patch("/v1/admin/departments/{entity_id}", name="update_department")
async def update_department(
    entity_id: str, body: DepartmentPatch, s: ServicesDep, who: AdminDep
) -> Any:
    return await _change(s, who, "department", entity_id, body)


@router.delete(
    "/v1/admin/departments/{entity_id}",
    responses=declared(HAS_LIVE_BOOKINGS, HAS_OPEN_SESSIONS, NOT_EMPTY),
    name="delete_department",
)
async def delete_department(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Refused while anything under it still matters."""
    return await _remove(s, who, "department", entity_id)


@router.get("/v1/admin/doctors/{entity_id}", name="get_doctor")
async def get_doctor(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    return await entity_of(s, who, "doctor", entity_id)


@router.patch("/v1/admin/doctors/{entity_id}", name="update_doctor")
async def update_doctor(entity_id: str, body: DoctorPatch, s: ServicesDep, who: AdminDep) -> Any:
    return await _change(s, who, "doctor", entity_id, body)


@router.delete(
    "/v1/admin/doctors/{entity_id}",
    responses=declared(HAS_LIVE_BOOKINGS, HAS_OPEN_SESSIONS, NOT_EMPTY),
    name="delete_doctor",
)
async def delete_doctor(entity_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Refused while anything under it still matters."""
    return await _remove(s, who, "doctor", entity_id)


@router.post("/v1/admin/hospitals", status_code=201)
async def new_hospital(body: HospitalIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
    platform_only(who)
    return {"id": (await s.catalog.create_hospital(body.model_dump()))["id"]}


@router.post("/v1/admin/departments", responses=declared(NOT_FOUND), status_code=201)
async def new_department(body: DepartmentIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
    if await s.catalog.get("hospital", body.hospital_id) is None:
        raise NOT_FOUND("No such hospital.")
    allow(who, body.hospital_id)
    return {"id": (await s.catalog.create_department(body.model_dump()))["id"]}


@router.post("/v1/admin/doctors", responses=declared(NOT_FOUND), status_code=201)
async def new_doctor(body: DoctorIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
    department = await s.catalog.get("department", body.department_id)
    if department is None:
        raise NOT_FOUND("No such department.")
    allow(who, department["hospital_id"])
    doc = {**body.model_dump(), "hospital_id": department["hospital_id"]}
    return {"id": (await s.catalog.create_doctor(doc))["id"]}


@router.put("/v1/admin/doctors/{doctor_id}/rota", responses=declared(CONFLICT))
async def put_rota(doctor_id: str, body: RotaIn, s: ServicesDep, who: AdminDep) -> Any:
    """A doctor's weekly rota: its sessions are released day by day, each shortly before
    its release time, so a change applies to every session not yet released."""
    doctor = await entity_of(s, who, "doctor", doctor_id)
    seen = {(x.weekday, x.period) for x in body.slots}
    if len(seen) != len(body.slots):
        raise INVALID_REQUEST("One slot per weekday and period.")
    doc = {
        "doctor_id": doctor["id"],
        "hospital_id": doctor["hospital_id"],
        "slots": [x.model_dump() for x in body.slots],
    }
    await s.catalog.set_rota(doc)
    made = await release_due(s)
    return {**doc, "released": made}


@router.get("/v1/admin/doctors/{doctor_id}/rota")
async def get_rota(doctor_id: str, s: ServicesDep, who: AdminDep) -> Any:
    await entity_of(s, who, "doctor", doctor_id)
    rota = await s.catalog.get("rota", doctor_id)
    if rota is None:
        raise NOT_FOUND("This doctor has no rota.")
    return rota


@router.delete("/v1/admin/doctors/{doctor_id}/rota")
async def drop_rota(doctor_id: str, s: ServicesDep, who: AdminDep) -> Any:
    """Stop releasing; sessions already released stay (suspend them to cancel them)."""
    await entity_of(s, who, "doctor", doctor_id)
    if not await s.catalog.drop_rota(doctor_id):
        raise NOT_FOUND("This doctor has no rota.")
    return {"doctor_id": doctor_id, "rota": None}
