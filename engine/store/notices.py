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


# KEYS: notices stream, then each notice's sent marker and patient list. ARGV: keep, ttl, then
# each notice's json. A notice whose marker is set already (a replay) is skipped.
BOARD_SCRIPT = """
local delivered = 0
for i = 3, #ARGV do
  local n = i - 2
  if redis.call('SET', KEYS[2 * n], 1, 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000000, '*', 'n', ARGV[i])
    redis.call('LPUSH', KEYS[2 * n + 1], ARGV[i])
    redis.call('LTRIM', KEYS[2 * n + 1], 0, tonumber(ARGV[1]) - 1)
    delivered = delivered + 1
  end
end
return delivered
"""
BOARD_CHUNK = 500  # notices a script call


class NoticeBoard:
    """The default sender: an operator-readable stream plus each patient's latest notices."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.sha: str | None = None  # EVALSHA: the script's body is sent once, not per notice

    async def send(self, notices: list[Notice]) -> None:
        if self.sha is None:
            self.sha = await self.client.script_load(BOARD_SCRIPT)
        try:
            await self._send(notices, self.sha)
        except NoScriptError:  # Redis restarted without it: load it again (a replay is safe)
            self.sha = await self.client.script_load(BOARD_SCRIPT)
            await self._send(notices, self.sha)

    async def _send(self, notices: list[Notice], sha: str) -> None:
        """One script call per ``BOARD_CHUNK`` notices (not one a notice), in one round trip."""
        keys = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            for start in range(0, len(notices), BOARD_CHUNK):
                chunk = notices[start : start + BOARD_CHUNK]
                pipe.evalsha(
                    sha,
                    1 + 2 * len(chunk),
                    keys.notices,
                    *[
                        k
                        for n in chunk
                        for k in (keys.sent(n.id), keys.patient_notices(n.patient_id))
                    ],
                    KEEP_PER_PATIENT,
                    KEEP_SENT_SECONDS,
                    *[n.to_json() for n in chunk],
                )
            await pipe.execute()


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
