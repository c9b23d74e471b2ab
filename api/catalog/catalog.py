"""The platform's catalog (hospitals, departments, doctors, doctor-sessions) and patients.

Plain JSON documents in Redis (one key each) plus index sets; ids come from Redis counters so
every API worker can create them. Doctor-sessions live in the engine as well: the catalog keeps
what browsing needs (who, when, which department) and announces each new one on a channel so
every worker's availability view learns it at once.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.core.session import SessionSpec
from engine.errors import StoreUnavailable
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys
from engine.store.slots import mget

PREFIX = {"hospital": "h", "department": "dep", "doctor": "doc", "session": "s"}
ID = re.compile(r"[A-Za-z0-9_-]{1,80}")


def session_document(spec: SessionSpec, first_slot_at: str | None = None) -> dict[str, Any]:
    """The catalog's document of a doctor-session the engine has created from ``spec``
    (``first_slot_at``: as the admin wrote it, else from the spec's first slot minute)."""
    minute = spec.first_slot_minute
    return {
        "id": spec.id,
        "hospital_id": spec.hospital_id,
        "department_id": spec.department_id,
        "doctor_id": spec.doctor_id,
        "date": spec.date,
        "period": spec.period,
        "capacity": spec.capacity,
        "first_slot_at": first_slot_at or f"{minute // 60:02d}:{minute % 60:02d}",
        "slot_minutes": spec.slot_minutes,
        "fee": spec.fee,
        "opens_at_epoch": spec.opens_at,
        "closes_at_epoch": spec.closes_at,
    }


class Catalog:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def _new_id(self, kind: str) -> str:
        return f"{PREFIX[kind]}{await self.client.incr(self.keys.seq(kind))}"

    async def get(self, kind: str, entity_id: str) -> dict[str, Any] | None:
        if not ID.fullmatch(str(entity_id)):
            return None  # nothing we made looks like that (and it must not reach other keys)
        try:
            raw = await self.client.get(self.keys.entity(kind, entity_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(str(exc)) from exc
        return None if raw is None else orjson.loads(raw)

    async def _many(self, kind: str, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        raws = await mget(self.client, [self.keys.entity(kind, i) for i in ids])
        return [orjson.loads(r) for r in raws if r is not None]

    async def _put(self, kind: str, doc: dict[str, Any], parent: tuple[str, str] | None) -> None:
        """The entity first, then the sets that list it (each in its own slot): a set never
        names an entity that is not there; cut off between, the entity is written but unlisted,
        and writing it again lists it."""
        await self.client.set(self.keys.entity(kind, doc["id"]), orjson.dumps(doc))
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.all(kind), doc["id"])
            if parent is not None:
                parent_kind, parent_id = parent
                pipe.sadd(self.keys.children(parent_kind, parent_id, kind), doc["id"])
            await pipe.execute()

    # ----- hospitals, departments, doctors -------------------------------------------------

    async def create_hospital(self, fields: dict[str, Any]) -> dict[str, Any]:
        doc = {**fields, "id": await self._new_id("hospital"), "created_at": time.time()}
        await self._put("hospital", doc, None)
        return doc

    async def hospitals(self) -> list[dict[str, Any]]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.all("hospital")))
        return await self._many("hospital", ids)

    async def create_department(self, fields: dict[str, Any]) -> dict[str, Any]:
        doc = {**fields, "id": await self._new_id("department"), "created_at": time.time()}
        await self._put("department", doc, ("hospital", doc["hospital_id"]))
        return doc

    async def children(self, kind: str, parent_id: str, child: str) -> list[dict[str, Any]]:
        key = self.keys.children(kind, parent_id, child)
        ids = sorted(m.decode() for m in await self.client.smembers(key))
        return await self._many(child, ids)

    async def create_doctor(self, fields: dict[str, Any]) -> dict[str, Any]:
        doc = {**fields, "id": await self._new_id("doctor"), "created_at": time.time()}
        await self._put("doctor", doc, ("department", doc["department_id"]))
        return doc

    async def update(self, kind: str, entity_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Change some fields of a hospital, department or doctor (ids and links stay)."""
        doc = await self.get(kind, entity_id)
        if doc is None:
            raise KeyError(entity_id)
        doc = {**doc, **fields, "updated_at": time.time()}
        await self.client.set(self.keys.entity(kind, entity_id), orjson.dumps(doc))
        return doc

    async def delete(self, kind: str, doc: dict[str, Any]) -> None:
        parents = {
            "department": ("hospital", "hospital_id"),
            "doctor": ("department", "department_id"),
        }
        async with self.client.pipeline(transaction=False) as pipe:  # unlisted first
            pipe.srem(self.keys.all(kind), doc["id"])
            if kind in parents:
                parent_kind, field = parents[kind]
                pipe.srem(self.keys.children(parent_kind, doc[field], kind), doc["id"])
            await pipe.execute()
        await self.client.delete(self.keys.entity(kind, doc["id"]))

    async def sessions_under(self, kind: str, doc: dict[str, Any]) -> list[dict[str, Any]]:
        """The doctor-sessions of a hospital, a department or a doctor."""
        if kind == "hospital":
            departments = await self.children("hospital", doc["id"], "department")
            out = []
            for department in departments:
                out += await self.children("department", department["id"], "session")
            return out
        if kind == "department":
            return await self.children("department", doc["id"], "session")
        sessions = await self.children("department", doc["department_id"], "session")
        return [x for x in sessions if x["doctor_id"] == doc["id"]]

    # ----- rotas ----------------------------------------------------------------------------

    async def set_rota(self, doc: dict[str, Any]) -> None:
        doc = {**doc, "id": doc["doctor_id"], "updated_at": time.time()}
        await self.client.set(self.keys.entity("rota", doc["id"]), orjson.dumps(doc))
        await self.client.sadd(self.keys.all("rota"), doc["id"])  # listed once it is there

    async def drop_rota(self, doctor_id: str) -> bool:
        await self.client.srem(self.keys.all("rota"), doctor_id)  # unlisted first
        return bool(await self.client.delete(self.keys.entity("rota", doctor_id)))

    async def rotas(self) -> list[dict[str, Any]]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.all("rota")))
        return await self._many("rota", ids)

    # ----- doctor-sessions -----------------------------------------------------------------

    async def new_session_id(self) -> str:
        return await self._new_id("session")

    async def add_session(self, doc: dict[str, Any]) -> None:
        """Index a doctor-session the engine has created, and announce it to every worker."""
        await self._put("session", doc, ("department", doc["department_id"]))
        await self.client.publish(self.keys.catalog_channel, orjson.dumps(doc))

    async def sessions(self) -> list[dict[str, Any]]:
        ids = [m.decode() for m in await self.client.smembers(self.keys.all("session"))]
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), 1000):
            out.extend(await self._many("session", ids[i : i + 1000]))
        return out

    # ----- patients ------------------------------------------------------------------------

    async def register_patient(self, doc: dict[str, Any]) -> int | None:
        """Store a new patient; None when the phone or the ID number is already registered."""
        patient_id = int(await self.client.incr(self.keys.seq("patient")))
        by_phone, by_id = self.keys.patient_by("phone"), self.keys.patient_by("id_hash")
        if not await self.client.hsetnx(by_phone, doc["phone"], patient_id):
            return None
        try:
            if not await self.client.hsetnx(by_id, doc["id_hash"], patient_id):
                await self.client.hdel(by_phone, doc["phone"])
                return None
            doc = {**doc, "id": patient_id, "created_at": time.time()}
            await self.client.set(self.keys.entity("patient", patient_id), orjson.dumps(doc))
        except BaseException:  # leave no half-registered phone behind
            with contextlib.suppress(Exception):
                await self.client.hdel(by_phone, doc["phone"])
                await self.client.hdel(by_id, doc["id_hash"])
            raise
        return patient_id

    async def patient_by_phone(self, phone: str) -> dict[str, Any] | None:
        raw_id = await self.client.hget(self.keys.patient_by("phone"), phone)
        if raw_id is None:
            return None
        return await self.get("patient", raw_id.decode())

    async def set_password(self, patient_id: int, password_hash: str) -> None:
        key = self.keys.entity("patient", patient_id)
        raw = await self.client.get(key)
        if raw is not None:
            doc = {**orjson.loads(raw), "password_hash": password_hash}
            await self.client.set(key, orjson.dumps(doc))

    async def booked_at(self, patient_id: int, hospital_id: str) -> list[str]:
        """The ids in the patient's own list of bookings of sessions at the hospital (the
        catalog's doctor-sessions say where; the engine, whether each is the patient's)."""
        ids = await self.patient_booking_ids(patient_id)
        sessions = sorted({b.rpartition(".")[0] for b in ids if ID.fullmatch(b.rpartition(".")[0])})
        docs = await self._many("session", sessions)
        there = {doc.get("id") for doc in docs if doc.get("hospital_id") == hospital_id}
        return [b for b in ids if b.rpartition(".")[0] in there]

    async def patient_booking_ids(self, patient_id: int) -> list[str]:
        members = await self.client.smembers(self.keys.patient_bookings(patient_id))
        return sorted(m.decode() for m in members)
