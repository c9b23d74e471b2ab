"""The Redis store: a thin async shell around snapshots, fencing epochs and the catalog.

Only the host that holds a shard writes its snapshots, and only through ``commit``: a Lua
script per shard that first checks the shard's epoch (fencing, invariant 7), then writes the
changed doctor-sessions' snapshots and publishes the stock change, atomically. All shards of a
group commit go in one pipelined round trip. Redis failures become ``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError

from .errors import Fenced, SnapshotError, StoreUnavailable
from .keys import Keys
from .session import DoctorSession
from .shard import Policy, Shard
from .snapshot import decode_rules, decode_session, encode_rules, encode_session

# KEYS: epoch, sessions-set, snapshot keys...
# ARGV: epoch, channel, message, n, payloads..., new session ids...
COMMIT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return redis.error_reply(
    'FENCED shard epoch is ' .. tostring(current) .. ', writer has ' .. ARGV[1])
end
local n = tonumber(ARGV[4])
for i = 1, n do
  redis.call('SET', KEYS[2 + i], ARGV[4 + i])
end
for i = 5 + n, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
"""


@dataclass(slots=True)
class ShardWrite:
    """One shard's part of a group commit."""

    shard_id: str
    hospital_id: str
    epoch: int
    sessions: Sequence[DoctorSession]
    new_session_ids: Sequence[str] = ()
    new_bookings: Sequence[tuple[int, str]] = ()  # (patient, booking id) for "my bookings"
    # (session, status, remaining, version) of every session whose stock or status changed
    stock: list[tuple[str, str, int, int]] = field(default_factory=list)


def stock_message(stock: Iterable[tuple[str, str, int, int]]) -> bytes:
    """Pub/sub payload: msgpack list of [session_id, status, remaining, version]; a reader
    ignores anything older than what it has (see ``DoctorSession.version``)."""
    return msgpack.packb([list(item) for item in stock], use_bin_type=True)


def parse_stock_message(raw: bytes) -> list[tuple[str, str, int, int]]:
    return [tuple(item) for item in msgpack.unpackb(raw, raw=False)]  # type: ignore[misc]


class Store:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout: float = 2.0, connections: int = 64) -> Store:
        """A client whose callers wait (up to ``timeout``) for one of ``connections``
        connections rather than fail when a crowd arrives at once."""
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            retry_on_timeout=False,
        )
        return cls(aioredis.Redis(connection_pool=pool), Keys(prefix))

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()

    # ----- the host's side -----------------------------------------------------------------

    async def activate(self, shard_id: str, hospital_id: str, date: str) -> tuple[int, Shard]:
        """Take ownership of a shard and load it: bump the epoch first, then read.

        Bumping first means every write of an older holder is refused from now on, so what is
        read here can no longer change under us.
        """
        keys = self.keys
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incr(keys.epoch(shard_id))
                pipe.smembers(keys.sessions(shard_id))
                pipe.get(keys.rules(hospital_id))
                epoch, members, rules_raw = await pipe.execute()
            ids = sorted(m.decode() for m in members)
            raws = await self.client.mget([keys.session(shard_id, i) for i in ids]) if ids else []
        except RedisError as exc:
            raise StoreUnavailable(f"cannot load shard {shard_id}: {exc}") from exc
        policy, blacklist = decode_rules(rules_raw) if rules_raw else (Policy(), {})
        shard = Shard(shard_id, hospital_id, date, policy, blacklist)
        for session_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue  # listed but its first commit was refused: it was never acknowledged
            where = keys.session(shard_id, session_id)
            session = decode_session(raw, where)
            if session.id != session_id or session.spec.shard_id != shard_id:
                raise SnapshotError(f"{where} holds {session.id} of {session.spec.shard_id}")
            shard.add_restored(session)
        return int(epoch), shard

    async def commit(self, writes: Sequence[ShardWrite]) -> list[BaseException | None]:
        """Write every shard's changes in one round trip; one result per write (None = ok).

        A connection failure fails every write (``StoreUnavailable``); a fenced shard fails
        alone (``Fenced``).
        """
        keys = self.keys
        try:
            extras: list[int] = []  # commands after each write's script, to skip in the results
            async with self.client.pipeline(transaction=False) as pipe:
                for w in writes:
                    snap_keys = [keys.session(w.shard_id, s.id) for s in w.sessions]
                    payloads = [encode_session(s) for s in w.sessions]
                    message = stock_message(w.stock) if w.stock else b""
                    pipe.eval(
                        COMMIT_SCRIPT,
                        2 + len(snap_keys),
                        keys.epoch(w.shard_id),
                        keys.sessions(w.shard_id),
                        *snap_keys,
                        w.epoch,
                        keys.stock_channel,
                        message,
                        len(payloads),
                        *payloads,
                        *w.new_session_ids,
                    )
                    count = 0
                    if w.new_session_ids:  # claimed already by the client; this only repairs
                        for session_id in w.new_session_ids:
                            pipe.hsetnx(keys.catalog, session_id, w.shard_id)
                        pipe.sadd(keys.shards, w.shard_id)
                        count += len(w.new_session_ids) + 1
                    for patient, booking_id in w.new_bookings:  # "my bookings", same round trip
                        pipe.sadd(keys.patient_bookings(patient), booking_id)
                        count += 1
                    extras.append(count)
                results = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            failure = StoreUnavailable(f"commit failed: {exc}")
            return [failure for _ in writes]
        out: list[BaseException | None] = []
        results_iter = iter(results)
        for w, count in zip(writes, extras, strict=True):
            result = next(results_iter)
            for _ in range(count):
                next(results_iter)
            if isinstance(result, ResponseError) and "FENCED" in str(result):
                out.append(Fenced(f"{w.shard_id}: {result}"))
            elif isinstance(result, BaseException):
                out.append(StoreUnavailable(f"{w.shard_id}: {result}"))
            else:
                out.append(None)
        return out

    # ----- the clients' side ---------------------------------------------------------------

    async def shard_of(self, session_id: str) -> str | None:
        try:
            raw = await self.client.hget(self.keys.catalog, session_id)
        except RedisError as exc:
            raise StoreUnavailable(f"catalog unreachable: {exc}") from exc
        return None if raw is None else raw.decode()

    async def placement(self) -> dict[str, int]:
        try:
            raw = await self.client.hgetall(self.keys.placement)
        except RedisError as exc:
            raise StoreUnavailable(f"placement unreachable: {exc}") from exc
        return {k.decode(): int(v) for k, v in raw.items()}

    async def place(self, shard_id: str, host_index: int) -> None:
        """Pin a shard to a host (the hosts see it on their next placement refresh)."""
        try:
            await self.client.hset(self.keys.placement, shard_id, host_index)
        except RedisError as exc:
            raise StoreUnavailable(f"placement not written: {exc}") from exc

    async def claim_session(self, session_id: str, shard_id: str) -> str:
        """Bind a new doctor-session id to its shard, once; the shard that holds the id."""
        key = self.keys.catalog
        try:
            await self.client.hsetnx(key, session_id, shard_id)
            return (await self.client.hget(key, session_id)).decode()
        except RedisError as exc:
            raise StoreUnavailable(f"catalog unreachable: {exc}") from exc

    async def read_rules(self, hospital_id: str) -> tuple[Policy, dict[int, float]]:
        try:
            raw = await self.client.get(self.keys.rules(hospital_id))
        except RedisError as exc:
            raise StoreUnavailable(f"rules unreachable: {exc}") from exc
        return decode_rules(raw) if raw else (Policy(), {})

    async def update_rules(
        self,
        hospital_id: str,
        change: Callable[[Policy, dict[int, float]], tuple[Policy, dict[int, float]]],
    ) -> None:
        """Read-modify-write a hospital's rules atomically (optimistic WATCH/MULTI)."""
        key = self.keys.rules(hospital_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        policy, blacklist = decode_rules(raw) if raw else (Policy(), {})
                        pipe.multi()
                        pipe.set(key, encode_rules(*change(policy, blacklist)))
                        await pipe.execute()
                        return
                    except WatchError:
                        continue
        except RedisError as exc:
            raise StoreUnavailable(f"rules not written: {exc}") from exc

    # ----- auditors' side: read without taking ownership -----------------------------------

    async def shard_ids(self) -> list[str]:
        try:
            return sorted(m.decode() for m in await self.client.smembers(self.keys.shards))
        except RedisError as exc:
            raise StoreUnavailable(f"shard list unreachable: {exc}") from exc

    async def read_shard_sessions(self, shard_id: str) -> list[DoctorSession]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.sessions(shard_id)))
        raws = await self.client.mget([self.keys.session(shard_id, i) for i in ids]) if ids else []
        return [
            decode_session(raw, self.keys.session(shard_id, i))
            for i, raw in zip(ids, raws, strict=True)
            if raw is not None
        ]
