"""Releasing doctor-sessions: one by hand (``release``), or from a doctor's weekly rota
(``release_due``), day by day.

A rota is a list of weekly slots (weekday, period, capacity, first slot time, minutes per slot,
fee). A session is made from it only shortly before its release time (``LEAD``), so every
change to the rota applies to each session not yet released. Rota sessions have deterministic
ids (``r-<doctor>-<yyyymmdd>-<period>``): API workers that release at the same moment make the
same session once.
"""

from __future__ import annotations

import logging
from datetime import date as Date
from datetime import datetime, timedelta
from typing import Any

from api.catalog.catalog import session_document
from api.services import Services
from engine.core.session import SessionSpec
from engine.outcomes import Created, Outcome

log = logging.getLogger(__name__)
LEAD = timedelta(hours=1)  # a rota session appears this long before it opens
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


async def release(
    s: Services,
    doctor: dict[str, Any],
    day: Date,
    period: str,
    capacity: int,
    first_slot_at: str,
    slot_minutes: int,
    fee: int,
    opens_at: datetime | None = None,
    closes_at: datetime | None = None,
    session_id: str | None = None,
) -> tuple[str, Outcome]:
    """Create one doctor-session in the engine and the catalog; (session id, outcome).

    ``opens_at`` and ``closes_at`` default from the hospital's policy. ``ValueError`` when
    they do not make sense."""
    zone = s.clock.zone
    hour, minute = (int(x) for x in first_slot_at.split(":"))
    first_slot = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    policy = await s.engine.policy(doctor["hospital_id"])
    opens_at = opens_at or datetime.fromtimestamp(policy.opens_at(day, zone), zone)
    closes_at = closes_at or first_slot - timedelta(minutes=policy.booking_closes_minutes)
    if closes_at <= opens_at:
        raise ValueError("closes_at must be after opens_at.")
    if closes_at > first_slot + timedelta(days=1):
        raise ValueError("closes_at is long after the visit.")
    session_id = session_id or await s.catalog.new_session_id()
    spec = SessionSpec(
        id=session_id,
        hospital_id=doctor["hospital_id"],
        department_id=doctor["department_id"],
        doctor_id=doctor["id"],
        date=day.isoformat(),
        period=period,
        capacity=capacity,
        first_slot_minute=hour * 60 + minute,
        slot_minutes=slot_minutes,
        fee=fee,
        opens_at=opens_at.timestamp(),
        closes_at=closes_at.timestamp(),
        starts_at=first_slot.timestamp(),
    )
    outcome = await s.engine.create_session(spec)
    if isinstance(outcome, Created):
        doc = session_document(spec, first_slot_at)
        await s.catalog.add_session(doc)
        # this worker lists it at once; the others learn it from the catalog's channel (on a
        # Redis Cluster a message crosses the cluster bus first: a few milliseconds later)
        s.availability.add(doc)
    return session_id, outcome


def rota_session_id(doctor_id: str, day: Date, period: str) -> str:
    return f"r-{doctor_id}-{day:%Y%m%d}-{period}"


async def release_due(s: Services) -> list[str]:
    """Make every rota session whose release is within ``LEAD``, for the booking window of
    each doctor's hospital; the ids made now (idempotent: safe from several workers)."""
    now = datetime.fromtimestamp(s.now(), s.clock.zone)
    made: list[str] = []
    for rota in await s.catalog.rotas():
        doctor = await s.catalog.get("doctor", rota["doctor_id"])
        if doctor is None:
            continue
        policy = await s.engine.policy(doctor["hospital_id"])
        for ahead in range(policy.window_days + 2):
            day = now.date() + timedelta(days=ahead)
            for slot in rota["slots"]:
                if WEEKDAYS.index(slot["weekday"]) != day.weekday():
                    continue
                opens = datetime.fromtimestamp(policy.opens_at(day, s.clock.zone), s.clock.zone)
                hour, minute = (int(x) for x in slot["first_slot_at"].split(":"))
                starts = datetime(day.year, day.month, day.day, hour, minute, tzinfo=now.tzinfo)
                if opens - now > LEAD or starts <= now:
                    continue
                session_id = rota_session_id(doctor["id"], day, slot["period"])
                if await s.catalog.get("session", session_id) is not None:
                    continue
                try:
                    _, outcome = await release(
                        s,
                        doctor,
                        day,
                        slot["period"],
                        slot["capacity"],
                        slot["first_slot_at"],
                        slot["slot_minutes"],
                        slot["fee"],
                        session_id=session_id,
                    )
                except ValueError as exc:
                    log.warning("rota of %s cannot release %s: %s", doctor["id"], day, exc)
                    continue
                if isinstance(outcome, Created):
                    made.append(session_id)
    return made
