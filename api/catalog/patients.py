"""A hospital's view of its patients: their bookings there, their conduct, the hospital's manual
blacklist and whitelist entries (with reasons and expiry), and tags (groups).

A manual blacklist entry is a ban set by hand (it replaces the rules' ban until it ends or is
lifted). A whitelist entry lifts any current ban and spares the patient the rules' bans at this
hospital until it ends (the courier checks it before it bans).

Who may be seen: a hospital sees (and tags, lists) only patients with a booking there, past or
present (``booked_at``); anyone else does not exist for it. What is seen of identity: the name,
the masked document (the region and the check character: the birth digits stay hidden,
``identity.mask_document``), the birth *year*, a masked phone; nothing that, put together,
narrows an ID number to fewer than ~16,000 candidates.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from api.accounts.identity import mask_phone
from api.services import Services
from engine.backoffice.record_book import RecordQuery
from engine.outcomes import BookingInfo, Done, SessionState

KINDS = ("blacklist", "whitelist")


async def entries(s: Services, hospital_id: str, kind: str) -> dict[int, dict[str, Any]]:
    raw = await s.engine.store.client.hgetall(s.engine.store.keys.patient_list(hospital_id, kind))
    return {int(k): orjson.loads(v) for k, v in raw.items()}


async def put_entry(
    s: Services,
    hospital_id: str,
    kind: str,
    patient_id: int,
    reason: str,
    until: float | None,
    by: str,
) -> Done | object:
    """Record a manual entry and make it true in the engine (a ban, or no ban)."""
    if kind == "blacklist":
        outcome = await s.engine.set_blacklist(hospital_id, patient_id, until or 4e9)
    else:
        outcome = await s.engine.set_blacklist(hospital_id, patient_id, None)
    if not isinstance(outcome, Done):
        return outcome
    keys = s.engine.store.keys
    other = "whitelist" if kind == "blacklist" else "blacklist"
    entry = {"reason": reason, "until": until, "by": by, "at": s.now()}
    async with s.engine.store.client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.patient_list(hospital_id, kind), str(patient_id), orjson.dumps(entry))
        pipe.hdel(keys.patient_list(hospital_id, other), str(patient_id))  # one list at a time
        await pipe.execute()
    return outcome


async def drop_entry(s: Services, hospital_id: str, kind: str, patient_id: int) -> object:
    keys = s.engine.store.keys
    if not await s.engine.store.client.hexists(keys.patient_list(hospital_id, kind), patient_id):
        return None
    if kind == "blacklist":
        outcome = await s.engine.set_blacklist(hospital_id, patient_id, None)
        if not isinstance(outcome, Done):
            return outcome
    await s.engine.store.client.hdel(keys.patient_list(hospital_id, kind), str(patient_id))
    return Done()


async def set_tags(s: Services, hospital_id: str, patient_id: int, tags: list[str]) -> None:
    key = s.engine.store.keys.patient_tags(hospital_id)
    if tags:
        await s.engine.store.client.hset(key, str(patient_id), orjson.dumps(sorted(set(tags))))
    else:
        await s.engine.store.client.hdel(key, str(patient_id))


async def tagged(s: Services, hospital_id: str, tag: str) -> list[int]:
    raw = await s.engine.store.client.hgetall(s.engine.store.keys.patient_tags(hospital_id))
    return sorted(int(k) for k, v in raw.items() if tag in orjson.loads(v))


DAY_LIST_COLUMNS = (
    "slot_no",
    "slot_time",
    "booking_id",
    "status",
    "patient_id",
    "name",
    "id_number",
    "phone",
    "paid",
)
OCCUPYING = ("held", "booked", "checked_in", "no_show")


async def booked_at(s: Services, hospital_id: str, patient_id: int) -> bool:
    """The patient has, or had, a booking at this hospital: in their own bookings (as the
    engine committed them: the engine says whose each is) or in the hospital's booking records
    (history included)."""
    for booking_id in await s.catalog.booked_at(patient_id, hospital_id):
        info = await s.engine.booking(booking_id)
        if isinstance(info, BookingInfo) and info.patient_id == patient_id:
            return True
    page = await s.records.page(RecordQuery(hospital_id=hospital_id, patient_id=patient_id), 1)
    return bool(page.records)


def birth_year(patient: dict[str, Any]) -> int | None:
    born = patient.get("birth_date")
    return int(born[:4]) if isinstance(born, str) and born[:4].isdigit() else None


async def day_list(s: Services, bookings: list[BookingInfo]) -> list[dict[str, Any]]:
    """The desk's list for one doctor-session (打印): every slot that is taken, in slot order,
    with the patient's name and masked identity (never the code)."""
    taken = sorted((b for b in bookings if b.status in OCCUPYING), key=lambda x: x.slot_no)
    people = await asyncio.gather(*(s.catalog.get("patient", str(b.patient_id)) for b in taken))
    rows = []
    for b, patient in zip(taken, people, strict=True):
        patient = patient or {}
        phone = patient.get("phone", "")
        rows.append(
            {
                "slot_no": b.slot_no,
                "slot_time": b.slot_time,
                "booking_id": b.booking_id,
                "status": b.status,
                "patient_id": b.patient_id,
                "name": patient.get("name", ""),
                "id_number": patient.get("id_masked", ""),
                "phone": mask_phone(phone) if phone else "",
                "paid": b.paid,
            }
        )
    return rows


async def view(s: Services, hospital_id: str, patient: dict[str, Any]) -> dict[str, Any]:
    """What the hospital may see of one patient: masked identity, bookings and conduct there,
    its own lists and tags."""
    patient_id = int(patient["id"])
    keys, client = s.engine.store.keys, s.engine.store.client
    bookings = []
    for booking_id in await s.catalog.patient_booking_ids(patient_id):
        info = await s.engine.booking(booking_id)
        if not isinstance(info, BookingInfo) or info.patient_id != patient_id:
            continue  # listed for a commit that did not happen (``Store.follow_ups``)
        state = await s.engine.session_state(info.session_id)
        if isinstance(state, SessionState) and state.hospital_id == hospital_id:
            bookings.append(
                {
                    "booking_id": info.booking_id,
                    "session_id": info.session_id,
                    "date": state.date,
                    "period": state.period,
                    "status": info.status,
                    "cancelled_by": info.cancelled_by,
                }
            )
    conduct = (await s.engine.conduct(patient_id)).get(hospital_id)
    ban = await s.engine.bans(hospital_id, patient_id)
    lists = {}
    for kind in KINDS:
        raw = await client.hget(keys.patient_list(hospital_id, kind), str(patient_id))
        lists[kind] = None if raw is None else orjson.loads(raw)
    raw_tags = await client.hget(keys.patient_tags(hospital_id), str(patient_id))
    return {
        "patient_id": patient_id,
        "name": patient["name"],
        "id_type": patient.get("id_type", "resident"),
        "id_number": patient["id_masked"],
        "birth_year": birth_year(patient),
        "bookings": bookings,
        "violations": [
            {"kind": v.kind, "booking_id": v.booking_id, "at": v.at}
            for v in (conduct.violations if conduct else [])
        ],
        "banned_until": ban if ban is not None and ban > s.now() else None,
        **lists,
        "tags": [] if raw_tags is None else orjson.loads(raw_tags),
        "as_of": time.time(),
    }
