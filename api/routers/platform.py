"""The platform admin's routes: admin accounts (and their login), platform bans, the outbox's
dead letters, notifications, the movable clock."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from api.accounts.admins import public
from api.accounts.auth import DUMMY_HASH, check_password, hash_password
from api.answers import declared, engine_answer
from api.catalog.rotas import release_due
from api.deps import (
    AdminDep,
    ServicesDep,
    limit,
    limit_address,
    platform_only,
    shed,
)
from api.errors import CONFLICT, NOT_FOUND, RATE_LIMITED, UNAUTHENTICATED
from api.schemas import AdminCredentials, AdminIn, ClockIn
from engine.core.policy import PLATFORM
from engine.outcomes import (
    Done,
)
from engine.store.notices import recent_notices

router = APIRouter(tags=["admin"])


@router.post("/v1/admin/admins", responses=declared(NOT_FOUND, CONFLICT), status_code=201)
async def new_admin(body: AdminIn, s: ServicesDep, who: AdminDep) -> dict[str, str]:
    """An admin account: of one hospital (``hospital_id``), or of the platform (none)."""
    platform_only(who)
    if body.hospital_id is not None and await s.catalog.get("hospital", body.hospital_id) is None:
        raise NOT_FOUND("No such hospital.")
    admin_id = await s.admins.create(
        {
            "login": body.login,
            "name": body.name,
            "hospital_id": body.hospital_id,
            "password_hash": await s.passwords.run(hash_password, body.password),
        }
    )
    if admin_id is None:
        raise CONFLICT("This login is taken.")
    return {"id": admin_id}


@router.get("/v1/admin/admins")
async def list_admins(s: ServicesDep, who: AdminDep) -> list[dict[str, Any]]:
    platform_only(who)
    return await s.admins.all()


@router.delete("/v1/admin/admins/{admin_id}")
async def disable_admin(admin_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Disable an account; every token it was given stops working at once."""
    platform_only(who)
    if not await s.admins.disable(admin_id):
        raise NOT_FOUND("No such admin.")
    return public(await s.admins.get(admin_id) or {})


@router.post("/v1/admin/auth/token", responses=declared(UNAUTHENTICATED, RATE_LIMITED))
async def admin_token(body: AdminCredentials, request: Request, s: ServicesDep) -> dict[str, Any]:
    """An admin account's bearer token (limited per client address and per login)."""
    await limit_address(s, request, "login", s.settings.limit_login_address)
    await limit(s, "admin-login", body.login, s.settings.limit_login_phone)
    shed(s)
    doc = await s.admins.by_login(body.login)
    hashed = doc["password_hash"] if doc else DUMMY_HASH  # same work either way
    ok = await s.passwords.run(check_password, hashed, body.password)
    if doc is None or not ok or doc["disabled"]:
        raise UNAUTHENTICATED("Wrong login or password.")
    return {
        "access_token": s.admins.issue(doc),
        "token_type": "bearer",
        "hospital_id": doc.get("hospital_id"),
    }


@router.get("/v1/admin/platform/bans")
async def platform_bans(s: ServicesDep, who: AdminDep) -> list[dict[str, Any]]:
    """Patients barred on the whole platform (by a hospital whose ban scope is platform, or
    by hand), with until when. Platform admin only."""
    platform_only(who)
    now = s.now()
    raw = await s.engine.store.client.hgetall(s.engine.store.keys.bans(PLATFORM))
    bans = sorted((int(k), float(v)) for k, v in raw.items() if float(v) > now)
    return [{"patient_id": p, "until": s.clock.iso(u)} for p, u in bans]


@router.delete("/v1/admin/platform/bans/{patient_id}")
async def lift_platform_ban(patient_id: int, s: ServicesDep, who: AdminDep) -> Any:
    """Lift a platform-wide ban (the record's violations stay; only a new one bans again).
    Platform admin only."""
    platform_only(who)
    until = await s.engine.bans(PLATFORM, patient_id)
    if until is None or until <= s.now():
        raise NOT_FOUND("This patient is not banned on the platform.")
    outcome = await s.engine.set_blacklist(PLATFORM, patient_id, None)
    if not isinstance(outcome, Done):
        return engine_answer(outcome, s.clock)
    return {"patient_id": patient_id, "banned_until": None}


@router.get("/v1/admin/outbox/dead-letters")
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


@router.post("/v1/admin/outbox/dead-letters/{dead_id}/retry")
async def retry_dead_letter(dead_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Put a dead letter back into the outbox (once what made it fail is fixed)."""
    platform_only(who)
    if not await s.dead_letters.retry(dead_id):
        raise NOT_FOUND("No such dead letter.")
    return {"id": dead_id, "retried": True}


@router.delete("/v1/admin/outbox/dead-letters/{dead_id}")
async def drop_dead_letter(dead_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Drop a dead letter for good (what it asked for is not done)."""
    platform_only(who)
    if not await s.dead_letters.drop(dead_id):
        raise NOT_FOUND("No such dead letter.")
    return {"id": dead_id, "dropped": True}


@router.get("/v1/admin/notifications")
async def notifications(
    s: ServicesDep, who: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """The latest notifications sent, newest first (the default sender's outbox view)."""
    platform_only(who)
    return await recent_notices(s.engine.store.client, s.engine.store.keys, limit)


@router.post("/v1/admin/clock", responses=declared(NOT_FOUND, CONFLICT))
async def move_clock(body: ClockIn, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Move the one clock forward and run every timer (only with SLOTENGINE_MOVABLE_CLOCK)."""
    platform_only(who)
    if not s.settings.movable_clock:
        raise NOT_FOUND("The clock is not movable here.")
    now = await s.engine.advance_clock(body.advance_seconds)
    await release_due(s)
    return {"now": s.clock.iso(now), "offset_seconds": s.engine.clock.offset}
