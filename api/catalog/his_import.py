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
import math
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.catalog.rotas import release
from api.services import Services
from engine.backoffice.deliveries import his_session_id
from engine.backoffice.egress import Egress
from engine.backoffice.his import HttpHis
from engine.outcomes import Created, SuspendDone, Unavailable

log = logging.getLogger(__name__)
PULL_SECONDS = 30.0


# KEYS: cursor. ARGV: a new cursor. Moves the cursor forward only (two pulls may race).
ADVANCE_SCRIPT = """
local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > old then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
HORIZON_DAYS = 366  # a schedule further ahead than this is refused
DAY = 86400.0


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
    updated_at: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)


async def import_schedules(s: Services, hospital_id: str, schedules: list[Any]) -> dict[str, Any]:
    """Make the sessions of new active schedules and suspend the suspended ones. Returns what
    happened to each: ``created``, ``suspended`` (ids), ``unchanged`` (count), ``rejected``
    (for good: bad data), ``failed`` (the engine could not answer: import them again), and
    ``cursor``: the latest ``updated_at`` before the first failure (where a pull goes on).

    A suspension is recorded before the engine is asked, and a new session checks for one
    after it is made, so a suspension racing the schedule's creation (another worker, a push
    during a pull, an HIS sending them out of order) is never lost: whichever comes second
    sees the other."""
    result: dict[str, Any] = {
        "created": [],
        "suspended": [],
        "unchanged": 0,
        "rejected": [],
        "failed": [],
    }
    done: list[float] = []  # updated_at of the schedules handled for good
    first_failure = float("inf")
    client, keys = s.engine.store.client, s.engine.store.keys
    await client.zremrangebyscore(keys.his_suspended(hospital_id), "-inf", repr(s.now() - 2 * DAY))
    for raw in schedules:
        try:
            schedule = HisSchedule.model_validate(raw)
        except ValidationError as exc:
            where = raw.get("id") if isinstance(raw, dict) else None
            result["rejected"].append(
                {"id": str(where), "reason": "invalid", "detail": str(exc)[:300]}
            )
            stamp = raw.get("updated_at") if isinstance(raw, dict) else None
            if isinstance(stamp, int | float) and 0 <= stamp < math.inf:  # rejected for good
                done.append(float(stamp))
            continue
        fate, detail = await _import_one(s, hospital_id, schedule)
        if fate == "failed":
            result["failed"].append({"id": schedule.id, "reason": detail})
            first_failure = min(first_failure, schedule.updated_at)
            continue
        done.append(schedule.updated_at)
        if fate == "rejected":
            result["rejected"].append({"id": schedule.id, "reason": detail})
        elif fate == "unchanged":
            result["unchanged"] += 1
        else:
            result[fate].append(detail)
    result["cursor"] = max((u for u in done if u < first_failure), default=None)
    return result


async def _import_one(s: Services, hospital_id: str, schedule: HisSchedule) -> tuple[str, str]:
    """(fate, detail): ``created``/``suspended`` and the session id, ``unchanged``,
    ``rejected`` and why, ``failed`` and why (the engine could not answer)."""
    client, keys = s.engine.store.client, s.engine.store.keys
    tombstones = keys.his_suspended(hospital_id)
    now = s.now()
    today = datetime.fromtimestamp(now, s.clock.zone).date()
    if not today - timedelta(days=1) <= schedule.date <= today + timedelta(days=HORIZON_DAYS):
        return "rejected", "out_of_range"
    doctor = await s.catalog.get("doctor", schedule.doctor_id)
    if doctor is None or doctor["hospital_id"] != hospital_id:
        return "rejected", "unknown_doctor"
    session_id = his_session_id(hospital_id, schedule.id)
    hour, minute = (int(x) for x in schedule.first_slot_at.split(":"))
    day = schedule.date
    starts = datetime(day.year, day.month, day.day, hour, minute, tzinfo=s.clock.zone)
    if schedule.status == "suspended":
        await client.zadd(tombstones, {schedule.id: starts.timestamp()})
        return await _suspend(s, session_id)
    if await client.zscore(tombstones, schedule.id) is not None:
        # suspended at the HIS: make sure it is here too (a racing release may have made it)
        return await _suspend(s, session_id)
    if await s.catalog.get("session", session_id) is not None:
        return "unchanged", ""
    if starts.timestamp() <= now:
        return "rejected", "past"
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
        return "rejected", f"invalid: {exc}"
    if isinstance(outcome, Unavailable):
        return "failed", outcome.reason
    if not isinstance(outcome, Created):  # released before with other data: kept as it was
        return "unchanged", ""
    if await client.zscore(tombstones, schedule.id) is not None:
        return await _suspend(s, session_id)  # suspended while it was being made
    return "created", session_id


async def _suspend(s: Services, session_id: str) -> tuple[str, str]:
    outcome = await s.engine.suspend(session_id)
    if isinstance(outcome, Unavailable):
        return "failed", outcome.reason
    if isinstance(outcome, SuspendDone) and not outcome.repeat:
        return "suspended", session_id
    return "unchanged", ""  # already suspended, or never made (its tombstone stops it)


async def pull(s: Services, hospital_id: str) -> dict[str, Any] | None:
    """Ask the hospital's HIS what changed since the last pull and import it (None: no HIS).
    ``HisUnavailable``/``HisRejected`` when the HIS cannot answer, ``EgressRefused`` when its
    address may not be called (``engine/backoffice/egress.py``). The cursor moves past
    what was imported for good, never past a schedule that failed (the next pull redoes it)."""
    config = await s.deliveries.config(hospital_id)
    if not config or not config.get("his_url"):
        return None
    client, keys = s.engine.store.client, s.engine.store.keys
    try:
        since = float(await client.get(keys.his_cursor(hospital_id)) or 0.0)
    except ValueError:
        since = 0.0
    his = HttpHis(
        config["his_url"],
        timeout=s.settings.redis_timeout,
        egress=Egress.from_settings(s.settings),
        max_bytes=s.settings.his_max_bytes,
    )
    try:
        schedules = await his.schedules(since)
    finally:
        await his.close()
    result = await import_schedules(s, hospital_id, schedules)
    if result["cursor"] is not None and result["cursor"] > since:
        await client.eval(ADVANCE_SCRIPT, 1, keys.his_cursor(hospital_id), repr(result["cursor"]))
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
