"""The dead letters: outbox entries the courier gave up on, kept for the platform admin.

An outbox entry whose handling failed on its ``outbox_max_tries``-th delivery (a malformed
event, a record the gateway cannot read) is moved by the courier to a stream of its own
(``Keys.outbox_dead``), so that every refund and notice behind it flows on. A dead letter keeps
the entry's payload unchanged, the id the entry was first written with (its *origin*: the
notices it carries are named after it, so a retried notice that was already delivered is not
delivered twice), its last error, how often it was delivered, and when it was moved.

The admin lists them, and either retries one (back into the outbox as a new entry, once what
made it fail is fixed) or drops it. Layout of a dead letter's fields: ``origin``, ``e`` (the
msgpack payload), ``error`` ("Type: message", truncated), ``tries``, ``at`` (epoch seconds).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from engine.errors import StoreUnavailable
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys

ERROR_CHARS = 500  # of the last error kept with a dead letter
_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_MAX_PART = (1 << 64) - 1


def stream_id(text: str) -> bool:
    """A well-formed Redis stream id: two unsigned 64-bit numbers."""
    return bool(_STREAM_ID.match(text)) and all(int(p) <= _MAX_PART for p in text.split("-"))


DeadLetter = dict[str, Any]


def describe(error: BaseException) -> str:
    """An error as a dead letter keeps it: its type and message, truncated."""
    return f"{type(error).__name__}: {error}"[:ERROR_CHARS]


def _fields(
    origin: str, payload: bytes, error: BaseException, tries: int, at: float
) -> dict[str, bytes | str]:
    return {
        "origin": origin,
        "e": payload,
        "error": describe(error),
        "tries": str(tries),
        "at": repr(at),
    }


class DeadLetters:
    """The dead letters: the courier buries entries here; the platform admin counts, lists,
    retries and drops them. Every Redis failure is raised as ``StoreUnavailable``."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def bury(
        self, letters: Sequence[tuple[str, bytes, BaseException, int]]
    ) -> list[str | None]:
        """Write the dead letters of outbox entries, each (origin, payload ``e`` unchanged,
        last error, delivery count); the id of each, None for one that could not be written.
        The courier acknowledges an entry only once its dead letter is written."""
        at = time.time()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for origin, payload, error, tries in letters:
                    pipe.xadd(self.keys.outbox_dead, _fields(origin, payload, error, tries, at))
                results = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"dead letters not written: {exc}") from exc
        return [None if isinstance(r, Exception) else r.decode() for r in results]

    async def count(self) -> int:
        """How many dead letters there are."""
        try:
            return int(await self.client.xlen(self.keys.outbox_dead))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"dead letters unreachable: {exc}") from exc

    async def retry(self, dead_id: str) -> bool:
        """Put a dead letter's payload back into the outbox as a new entry (keeping its origin)
        and remove the dead letter, in one transaction; False when there is no such dead
        letter. The courier handles it on its next round: fix what made it fail first."""
        keys = self.keys
        if not stream_id(dead_id):
            return False
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(keys.outbox_dead)  # changed meanwhile: look again
                        found = await pipe.xrange(keys.outbox_dead, dead_id, dead_id)
                        if not found:
                            return False
                        fields = found[0][1]
                        entry = {b"e": fields.get(b"e", b"")}
                        if b"origin" in fields:
                            entry[b"origin"] = fields[b"origin"]
                        pipe.multi()
                        pipe.xadd(keys.outbox, entry)
                        pipe.xdel(keys.outbox_dead, dead_id)
                        await pipe.execute()
                        return True
                    except WatchError:
                        continue
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"dead letter not retried: {exc}") from exc

    async def drop(self, dead_id: str) -> bool:
        """Remove a dead letter for good; False when there is no such dead letter."""
        if not stream_id(dead_id):
            return False
        try:
            return bool(await self.client.xdel(self.keys.outbox_dead, dead_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"dead letter not dropped: {exc}") from exc

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The latest ``limit`` dead letters, newest first: ``id`` (the dead letter's), ``origin``
        (the outbox entry's), ``events`` (decoded; None when the payload is not readable),
        ``error``, ``tries`` and ``at``."""
        try:
            entries = await self.client.xrevrange(self.keys.outbox_dead, count=limit)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"dead letters unreachable: {exc}") from exc
        return [_letter(dead_id.decode(), fields) for dead_id, fields in entries]


def _letter(dead_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
    try:
        events = msgpack.unpackb(fields.get(b"e", b""), raw=False)
    except Exception:  # the payload that made it a dead letter may be anything
        events = None
    return {
        "id": dead_id,
        "origin": fields.get(b"origin", b"").decode(errors="replace"),
        "events": events,
        "error": fields.get(b"error", b"").decode(errors="replace"),
        "tries": int(fields.get(b"tries", 0)),
        "at": float(fields.get(b"at", 0.0)),
    }
