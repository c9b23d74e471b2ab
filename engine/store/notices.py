"""Notifications: what the outbox tells patients, and the pluggable sender that delivers it.

Kinds: confirmed, hold_expiring, expired, cancelled, suspended, waitlist_promoted,
waitlist_skipped, waitlist_ended, no_show, banned. The default sender (``NoticeBoard``) writes
every notice to a Redis stream an operator can read (``slotengine notices``) and to the
patient's own list (``GET /v1/me/notifications``). Another sender (SMS, WeChat, e-mail) is any
class with the same ``send`` method, named by ``SLOTENGINE_NOTICE_SENDER``.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from engine.store.keys import Keys

KEEP_PER_PATIENT = 100
KEEP_SENT_SECONDS = 30 * 86400


@dataclass(frozen=True, slots=True)
class Notice:
    id: str  # stable across outbox replays: "<outbox entry id>:<index>"
    kind: str
    patient_id: int
    booking_id: str
    session_id: str
    at: float
    details: dict[str, Any]

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, the fields in their order (what the board stores)."""
        return orjson.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "patient_id": self.patient_id,
                "booking_id": self.booking_id,
                "session_id": self.session_id,
                "at": self.at,
                "details": self.details,
            },
            option=orjson.OPT_NON_STR_KEYS,
        )


class Sender(Protocol):
    async def send(self, notices: list[Notice]) -> None:
        """Deliver; raise to have the courier retry later. Must tolerate a replayed notice
        (same ``id``): the outbox delivers at least once."""


# KEYS: one patient's notice list, then each notice's sent marker (all in the patient's slot).
# ARGV: keep, ttl, then each notice's json. A notice whose marker is set already (a replay) is
# skipped. Returns the positions (1-based) of the notices delivered now.
BOARD_SCRIPT = """
local delivered = {}
for i = 3, #ARGV do
  local n = i - 2
  if redis.call('SET', KEYS[n + 1], 1, 'NX', 'EX', ARGV[2]) then
    redis.call('LPUSH', KEYS[1], ARGV[i])
    delivered[#delivered + 1] = n
  end
end
if #delivered > 0 then
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
end
return delivered
"""
BOARD_CHUNK = 500  # notices a script call


class NoticeBoard:
    """The default sender: each patient's latest notices, and an operator-readable stream of
    the notices delivered. One script per patient (their list and sent markers share the
    patient's slot); the stream is written after, in its own slot: a sender cut off between the
    two leaves a notice in the patient's list but not in the operator's view."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.sha: str | None = None  # EVALSHA: the script's body is sent once, not per notice

    async def send(self, notices: list[Notice]) -> None:
        if self.sha is None:
            self.sha = await self.client.script_load(BOARD_SCRIPT)
        try:
            delivered = await self._send(notices, self.sha)
        except NoScriptError:  # Redis restarted without it: load it again (a replay is safe)
            self.sha = await self.client.script_load(BOARD_SCRIPT)
            delivered = await self._send(notices, self.sha)
        if delivered:
            async with self.client.pipeline(transaction=False) as pipe:
                for n in delivered:
                    pipe.xadd(self.keys.notices, {"n": n.to_json()}, maxlen=1_000_000)
                await pipe.execute()

    async def _send(self, notices: list[Notice], sha: str) -> list[Notice]:
        """One script call per patient and ``BOARD_CHUNK`` notices, in one round trip; the
        notices delivered now (not replays), in their order."""
        keys = self.keys
        by_patient: dict[int, list[Notice]] = {}
        for n in notices:
            by_patient.setdefault(n.patient_id, []).append(n)
        chunks = [
            (patient, mine[start : start + BOARD_CHUNK])
            for patient, mine in by_patient.items()
            for start in range(0, len(mine), BOARD_CHUNK)
        ]
        async with self.client.pipeline(transaction=False) as pipe:
            for patient, chunk in chunks:
                pipe.execute_command(  # (a cluster pipeline refuses the evalsha method)
                    "EVALSHA",
                    sha,
                    1 + len(chunk),
                    keys.patient_notices(patient),
                    *[keys.sent(patient, n.id) for n in chunk],
                    KEEP_PER_PATIENT,
                    KEEP_SENT_SECONDS,
                    *[n.to_json() for n in chunk],
                )
            results = await pipe.execute()
        fresh = {
            id(chunk[i - 1]) for (_, chunk), got in zip(chunks, results, strict=True) for i in got
        }
        return [n for n in notices if id(n) in fresh]


async def patient_notices(client: aioredis.Redis, keys: Keys, patient_id: int) -> list[dict]:
    raw = await client.lrange(keys.patient_notices(patient_id), 0, KEEP_PER_PATIENT - 1)
    return [json.loads(r) for r in raw]


async def recent_notices(client: aioredis.Redis, keys: Keys, count: int = 100) -> list[dict]:
    entries = await client.xrevrange(keys.notices, count=count)
    return [json.loads(fields[b"n"]) for _, fields in entries]


def load_sender(path: str, client: aioredis.Redis, keys: Keys) -> Sender:
    """``module:Class``; the class is built with (redis client, keys)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)(client, keys)
