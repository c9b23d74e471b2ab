"""Schedules and suspensions from a hospital's HIS: pushed to us, or pulled every
``PULL_SECONDS`` from the HIS by every API worker (imports are idempotent).

An HIS schedule becomes a doctor-session with a deterministic id (``his-<hospital>-<schedule>``),
released like any other (``rotas.release``: opening and closing from the hospital's policy). A
schedule the HIS marks ``suspended`` suspends its session (停诊: every booking cancelled and
refunded, each patient notified). A schedule already released is not changed by a later
edit of the HIS (its slots may be sold); suspend it and publish a new one instead.
"""

from __future__ import annotations

import logging
from datetime import date as Date
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.delivery import his_session_id
from engine.his import HttpHis
from engine.outcomes import Created, SuspendDone

from .rotas import release
from .services import Services

log = logging.getLogger(__name__)
PULL_SECONDS = 30.0


class HisSchedule(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    doctor_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")
    date: Date
    period: Literal["AM", "PM", "EVENING"]
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(default=0, ge=0, le=10_000_000)
    status: Literal["active", "suspended"] = "active"
    updated_at: float = 0.0


async def import_schedules(
    s: Services, hospital_id: str, schedules: list[dict[str, Any]]
) -> dict[str, Any]:
    """Make the sessions of new active schedules and suspend the suspended ones. Returns what
    happened to each: ``created``, ``suspended`` (ids), ``unchanged`` (count), ``rejected``."""
    created: list[str] = []
    suspended: list[str] = []
    rejected: list[dict[str, str]] = []
    unchanged = 0
    now = s.now()
    for raw in schedules:
        try:
            schedule = HisSchedule.model_validate(raw)
        except ValidationError as exc:
            where = raw.get("id") if isinstance(raw, dict) else None
            rejected.append({"id": str(where), "reason": "invalid", "detail": str(exc)[:300]})
            continue
        doctor = await s.catalog.get("doctor", schedule.doctor_id)
        if doctor is None or doctor["hospital_id"] != hospital_id:
            rejected.append({"id": schedule.id, "reason": "unknown_doctor"})
            continue
        session_id = his_session_id(hospital_id, schedule.id)
        exists = await s.catalog.get("session", session_id) is not None
        if schedule.status == "suspended":
            if exists:
                outcome = await s.engine.suspend(session_id)
                if isinstance(outcome, SuspendDone) and not outcome.repeat:
                    suspended.append(session_id)
                    continue
            unchanged += 1
            continue
        if exists:
            unchanged += 1
            continue
        hour, minute = (int(x) for x in schedule.first_slot_at.split(":"))
        starts = datetime(
            schedule.date.year,
            schedule.date.month,
            schedule.date.day,
            hour,
            minute,
            tzinfo=s.clock.zone,
        )
        if starts.timestamp() <= now:
            rejected.append({"id": schedule.id, "reason": "past"})
            continue
        try:
            _, outcome = await release(
                s,
                doctor,
                schedule.date,
                schedule.period,
                schedule.capacity,
                schedule.first_slot_at,
                schedule.slot_minutes,
                schedule.fee,
                session_id=session_id,
            )
        except ValueError as exc:
            rejected.append({"id": schedule.id, "reason": "invalid", "detail": str(exc)})
            continue
        if isinstance(outcome, Created):
            created.append(session_id)
        else:
            unchanged += 1
    return {
        "created": created,
        "suspended": suspended,
        "unchanged": unchanged,
        "rejected": rejected,
    }


def _cursor_key(s: Services, hospital_id: str) -> str:
    return f"{s.engine.store.keys.his_config(hospital_id)}:cursor"


async def pull(s: Services, hospital_id: str) -> dict[str, Any] | None:
    """Ask the hospital's HIS what changed since the last pull and import it (None: no HIS).
    ``HisUnavailable``/``HisRejected`` when the HIS cannot answer."""
    config = await s.deliveries.config(hospital_id)
    if not config or not config.get("his_url"):
        return None
    client = s.engine.store.client
    since = float(await client.get(_cursor_key(s, hospital_id)) or 0.0)
    his = HttpHis(config["his_url"], timeout=s.settings.redis_timeout)
    try:
        schedules = await his.schedules(since)
    finally:
        await his.close()
    result = await import_schedules(s, hospital_id, schedules)
    latest = max((float(x.get("updated_at", 0.0)) for x in schedules), default=since)
    if latest > since:
        await client.set(_cursor_key(s, hospital_id), repr(latest))
    result["since"] = since
    return result


async def pull_all(s: Services) -> None:
    """One pull from every hospital whose HIS is configured for pulling."""
    for hospital_id, config in (await s.deliveries.configs()).items():
        if not config.get("pull", True):
            continue
        try:
            await pull(s, hospital_id)
        except Exception as exc:  # one HIS down must not stop the others
            log.warning("HIS pull of %s failed: %s", hospital_id, exc)
