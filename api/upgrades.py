"""The API's upgrade steps over stored data, run once per installation by the first API worker
to start, after the engine's (``engine/store/layout.py``: the runner, its lock and record).

- ``remask-ids``: the masked ID numbers stored before the security review showed the birth
  digits; each is re-masked in place (``identity.remask``: it never reveals more than today's
  mask), and the staff views show a birth year instead of the birth date.
- ``e164-phones``: phones were stored as typed (``13912345678`` and ``+8613912345678`` were two
  accounts); each is rewritten to E.164 with its index entry. Two accounts whose phones turn out
  to be the same number are a collision: the first keeps the number, the other keeps its old
  form (it can still log in as typed before) and the collision is logged for an operator.
  "First" is the earliest registered (the lowest patient id).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from api.accounts.identity import normalize_phone, remask
from engine.store.keys import Keys
from engine.store.layout import ENGINE_STEPS, run_steps

log = logging.getLogger(__name__)


async def _patients(client: aioredis.Redis, keys: Keys) -> list[tuple[str, int]]:
    """(phone as stored, patient id) of every patient, the earliest registered first."""
    raw = await client.hgetall(keys.patient_by("phone"))
    return sorted(((k.decode(), int(v)) for k, v in raw.items()), key=lambda x: (x[1], x[0]))


async def _doc(client: aioredis.Redis, keys: Keys, patient_id: int) -> dict[str, Any] | None:
    raw = await client.get(keys.entity("patient", patient_id))
    return None if raw is None else orjson.loads(raw)


async def remask_ids(client: aioredis.Redis, keys: Keys) -> int:
    """Re-mask every stored masked ID number in place; how many changed."""
    changed = 0
    for _, patient_id in await _patients(client, keys):
        doc = await _doc(client, keys, patient_id)
        if doc is None or "id_masked" not in doc:
            continue
        masked = remask(doc["id_masked"])
        if masked != doc["id_masked"]:
            doc["id_masked"] = masked
            await client.set(keys.entity("patient", patient_id), orjson.dumps(doc))
            changed += 1
    return changed


async def e164_phones(client: aioredis.Redis, keys: Keys) -> int:
    """Rewrite every stored phone to E.164 (doc and index); how many changed."""
    index = keys.patient_by("phone")
    changed = 0
    for stored, patient_id in await _patients(client, keys):
        phone = normalize_phone(stored)
        if phone is None:
            log.warning("patient %s: stored phone is not a valid number; left as it is", patient_id)
            continue
        if phone == stored:  # the index is done; its doc may not be (a run cut off)
            doc = await _doc(client, keys, patient_id)
            if doc is not None and doc.get("phone") != phone:
                doc["phone"] = phone
                await client.set(keys.entity("patient", patient_id), orjson.dumps(doc))
            continue
        owner = await client.hget(index, phone)
        if owner is not None and int(owner) != patient_id:
            log.warning(
                "patients %s and %s have the same phone (%s and %s as stored): %s keeps it, "
                "the other keeps its old form; an operator should merge or contact them",
                int(owner),
                patient_id,
                "the E.164 form",
                "another form",
                int(owner),
            )
            continue
        doc = await _doc(client, keys, patient_id)
        # the index (one key) in one command, then the doc: cut off between, the step runs
        # again and finds the index done and the doc still to write
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(index, phone, patient_id)
            pipe.hdel(index, stored)
            await pipe.execute()
        if doc is not None:
            doc["phone"] = phone
            await client.set(keys.entity("patient", patient_id), orjson.dumps(doc))
        changed += 1
    return changed


STEPS: tuple[tuple[str, Callable[[aioredis.Redis, Keys], Awaitable[int]]], ...] = (
    ("remask-ids", remask_ids),
    ("e164-phones", e164_phones),
)


async def run_upgrades(client: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """The engine's steps (``engine/store/layout.py``), then the API's, each once."""
    return await run_steps(client, keys, (*ENGINE_STEPS, *STEPS))
