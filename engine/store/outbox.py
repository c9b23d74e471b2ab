"""The outbox as the courier reads it: one stream per shard and a doorbell.

A commit's outbox entry goes to its shard's own stream (``Keys.shard_outbox``, under the shard's
hash tag), written by the commit script together with the snapshots it belongs to — on a Redis
Cluster no other stream could be. In the same pipeline, right after the script, the commit
rings the doorbell (``Keys.outbox_doorbell``, a sorted set: shard → rings not yet answered,
``ZINCRBY``), so the courier reads only the streams that have something, not every shard's.

The courier reads the streams rung (and the platform-wide ``Keys.outbox``: entries an earlier
release wrote there, and dead letters put back) through one consumer group per stream, each
stream's reads pipelined into one round trip. Once a stream has nothing left for it, it answers
the doorbell: the shard leaves the doorbell only if it did not ring again since it was read
(``ANSWER_SCRIPT``), so an entry written meanwhile is read next round; an empty stream is
deleted with its group (a new entry makes it again, the group is made again when read), so a
hospital's past days leave nothing behind. A ring that was lost (the script ran on one node of
a cluster and the ring's node was away) is found by ``sweep``, which looks at every shard's
stream now and then.

With ``SLOTENGINE_COURIERS`` > 1 the shards are shared out among the couriers by a hash of the
shard id (``partition_of``): each has a doorbell of its own and reads only its shards' streams,
each stream through its own consumer group, so no two couriers read one stream; courier 0 also
reads the platform-wide stream and sweeps every shard. When the number of couriers changes, a
courier passes a shard rung in its doorbell that is no longer its own on to the shard's
courier now, and the sweep rings a shard rung in a doorbell nobody reads any more; all read
as one consumer (``CONSUMER``), so the new owner of a shard also reads what the old one had
been delivered and not settled. A courier lost is restarted by Ray and reads on where its
streams' groups left off, what it had read and not settled first.

Entry ids are unique within a stream only: an entry of a shard's stream is known (its notices
named, its dead letter kept) by ``shard/id``, the platform-wide stream's by its id alone.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from engine.store.keys import Keys

GROUP = "couriers"
CONSUMER = "courier"  # every courier: a shard's new courier reads what the old one left pending
SWEEP_PAGE = 500

# KEYS: doorbell. ARGV: shard, its rings when its stream was read. The shard leaves the doorbell
# unless it rang again since. Returns 1 when it left.
ANSWER_SCRIPT = """
local rings = redis.call('ZSCORE', KEYS[1], ARGV[1])
if rings and tonumber(rings) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

# KEYS: a stream. ARGV: group, entry ids. Acknowledges and deletes them together.
SETTLE_SCRIPT = """
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

# KEYS: a stream. Deletes it (and its consumer group) when it holds no entry.
FORGET_SCRIPT = """
if redis.call('XLEN', KEYS[1]) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Entry = tuple[bytes, dict[bytes, bytes]]  # as read: id, fields


def partition_of(shard_id: str, partitions: int) -> int:
    """Which courier carries a shard's outbox (the same in every process: CRC-32)."""
    return zlib.crc32(shard_id.encode()) % partitions if partitions > 1 else 0


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream the courier reads: a shard's (``shard_id``; ``rings`` as the doorbell said
    when read) or the platform-wide one (``shard_id`` None)."""

    key: str
    shard_id: str | None = None
    rings: float = 0.0

    def origin(self, entry_id: bytes) -> str:
        """The name an entry of this stream is known by (ids repeat across streams)."""
        text = entry_id.decode()
        return text if self.shard_id is None else f"{self.shard_id}/{text}"


class Outbox:
    """The courier's side of the outbox (Redis errors are raised as redis-py's)."""

    def __init__(
        self, client: aioredis.Redis, keys: Keys, partition: int = 0, partitions: int = 1
    ) -> None:
        self.client = client
        self.keys = keys
        self.partition = partition
        self.partitions = partitions
        self.doorbell = keys.outbox_doorbell(partition)
        self._grouped: set[str] = set()  # streams whose consumer group this process made

    async def rung(self) -> list[Stream]:
        """The platform-wide stream (courier 0's), then every shard's whose doorbell rang."""
        rung = [
            (shard.decode(), rings)
            for shard, rings in await self.client.zrange(self.doorbell, 0, -1, withscores=True)
        ]
        foreign = [(s, r) for s, r in rung if partition_of(s, self.partitions) != self.partition]
        if foreign:  # rung when there were more or fewer couriers: to the shard's courier now
            async with self.client.pipeline(transaction=False) as pipe:
                for shard, rings in foreign:
                    pipe.zincrby(self._doorbell_of(shard), rings, shard)
                    pipe.eval(ANSWER_SCRIPT, 1, self.doorbell, shard, rings)
                await pipe.execute()
        shared = [Stream(self.keys.outbox)] if self.partition == 0 else []
        return shared + [
            Stream(self.keys.shard_outbox(shard), shard, rings)
            for shard, rings in rung
            if partition_of(shard, self.partitions) == self.partition
        ]

    async def read(
        self, starts: Sequence[tuple[Stream, str]], count: int
    ) -> list[list[Entry] | ResponseError]:
        """Up to ``count`` entries of each stream from its start (``0``: those delivered and
        not settled, read on from an id; ``>``: new ones), in one round trip (two where a
        stream's group had to be made first); Redis's refusal for a stream it cannot read
        (the others are read all the same)."""
        await self._make_groups([stream.key for stream, _ in starts])
        replies = await self._read(starts, count)
        missing = [i for i, r in enumerate(replies) if _no_group(r)]
        if missing:  # deleted when empty, written again since: its group is made anew
            for i in missing:
                self._grouped.discard(starts[i][0].key)
            await self._make_groups([starts[i][0].key for i in missing])
            again = await self._read([starts[i] for i in missing], count)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        out: list[list[Entry] | ResponseError] = []
        for reply in replies:
            if isinstance(reply, ResponseError):
                out.append(reply)
            elif isinstance(reply, BaseException):  # the connection: nothing was read
                raise reply
            else:
                out.append(reply[0][1] if reply else [])
        return out

    async def _read(self, starts: Sequence[tuple[Stream, str]], count: int) -> list:
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, start in starts:
                pipe.xreadgroup(GROUP, CONSUMER, {stream.key: start}, count=count)
            return await pipe.execute(raise_on_error=False)

    async def _make_groups(self, streams: Sequence[str]) -> None:
        new = [key for key in dict.fromkeys(streams) if key not in self._grouped]
        if not new:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for key in new:
                pipe.xgroup_create(key, GROUP, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for key, reply in zip(new, replies, strict=True):
            if isinstance(reply, ResponseError) and "BUSYGROUP" not in str(reply):
                continue  # not a stream: its read says so
            if isinstance(reply, BaseException) and "BUSYGROUP" not in str(reply):
                raise reply
            self._grouped.add(key)

    async def deliveries(self, entries: Sequence[tuple[Stream, bytes]]) -> list[int]:
        """How many times each entry was delivered (0: not pending)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, entry_id in entries:
                pipe.xpending_range(stream.key, GROUP, entry_id, entry_id, 1)
            found = await pipe.execute()
        return [int(f[0]["times_delivered"]) if f else 0 for f in found]

    async def settle(self, settled: dict[Stream, list[bytes]]) -> None:
        """Acknowledge and delete entries, each stream's in one script, in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, entry_ids in settled.items():
                pipe.eval(SETTLE_SCRIPT, 1, stream.key, GROUP, *entry_ids)
            await pipe.execute()

    async def answer(self, streams: Sequence[Stream]) -> None:
        """These shards' streams had nothing left when read: delete the empty ones and let
        those that did not ring since leave the doorbell."""
        streams = [s for s in streams if s.shard_id is not None]
        if not streams:
            return
        async with self.client.pipeline(transaction=False) as pipe:  # one round trip
            for stream in streams:
                pipe.eval(FORGET_SCRIPT, 1, stream.key)
            for stream in streams:
                pipe.eval(ANSWER_SCRIPT, 1, self.doorbell, stream.shard_id, stream.rings)
            forgotten = (await pipe.execute())[: len(streams)]
        for stream, gone in zip(streams, forgotten, strict=True):
            if gone:
                self._grouped.discard(stream.key)

    async def sweep(self) -> int:
        """Ring for every shard whose stream holds entries and is not rung in its courier's
        doorbell (a ring lost on its way, or rung for a courier there is no more); how many
        were rung."""
        keys, rung = self.keys, 0
        async for shards in self._shards_with_streams():
            if shards:
                async with self.client.pipeline(transaction=False) as pipe:
                    for shard in shards:
                        pipe.xlen(keys.shard_outbox(shard))
                    for shard in shards:
                        pipe.zscore(self._doorbell_of(shard), shard)
                    replies = await pipe.execute()
                lost = [
                    shard
                    for shard, length, rings in zip(
                        shards, replies[: len(shards)], replies[len(shards) :], strict=True
                    )
                    if length and rings is None
                ]
                if lost:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for shard in lost:
                            pipe.zadd(self._doorbell_of(shard), {shard: 1}, nx=True)
                        await pipe.execute()
                    rung += len(lost)
        return rung

    async def _shards_with_streams(self) -> AsyncIterator[list[str]]:
        """The shards that have an outbox stream, a page at a time (``SCAN`` of the stream
        keys: it needs no list of shards that a lost write could leave one out of)."""
        head, tail = f"{self.keys.prefix}:{{", "}:outbox"
        page: list[str] = []
        async for key in self.client.scan_iter(
            match=f"{head}*{tail}", count=SWEEP_PAGE, _type="stream"
        ):
            page.append(key.decode()[len(head) : -len(tail)])
            if len(page) >= SWEEP_PAGE:
                yield page
                page = []
        yield page

    def _doorbell_of(self, shard_id: str) -> str:
        return self.keys.outbox_doorbell(partition_of(shard_id, self.partitions))

    async def backlog(self, everywhere: bool = True) -> int:
        """Entries not yet carried out: in the platform-wide stream and every shard's (not
        ``everywhere``: the shards rung for every courier, a cheaper read for the metrics)."""
        total = int(await self.client.xlen(self.keys.outbox))
        if not everywhere:
            rung: set[str] = set()
            for partition in range(self.partitions):
                found = await self.client.zrange(self.keys.outbox_doorbell(partition), 0, -1)
                rung |= {s.decode() for s in found}
            return total + await self._lengths(sorted(rung))
        async for shards in self._shards_with_streams():
            total += await self._lengths(shards)
        return total

    async def _lengths(self, shards: Sequence[str]) -> int:
        if not shards:
            return 0
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in shards:
                pipe.xlen(self.keys.shard_outbox(shard))
            return sum(await pipe.execute())


def _no_group(reply: object) -> bool:
    return isinstance(reply, ResponseError) and "NOGROUP" in str(reply)
