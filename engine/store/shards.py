"""The Redis store: a thin async shell around snapshots, fencing epochs and the catalog.

Only the host that holds a shard writes its snapshots, and only through ``commit``: a Lua script
per shard that first checks the shard's epoch (fencing, invariant 7), then writes the changed
doctor-sessions' snapshots, appends the outbox entry to the shard's own stream, sets the
shard's commit token and publishes the stock change, atomically, all under the shard's hash
tag. Right after it in the same pipeline go its follow-ups to keys of other slots
(``Store.follow_ups``): each new booking into its patient's "my bookings", the sessions marked
changed for the records (``backoffice/record_book.py``), the courier's doorbell
(``outbox.py``); the outbox entry carries them too, and the courier applies them again.
The script goes by its SHA (``EVALSHA``), loaded again if Redis forgot it. All shards of a
group commit go in one pipelined round trip. Redis failures become
``StoreUnavailable``; a round trip that failed after it may have been sent becomes
``CommitUncertain``, which ``settle`` resolves: it fences the shard (so the commit can no longer
happen later) and reads the token back.

The client never resends a command by itself (redis-py would, ten times by default): a commit
resent blindly could run twice, and a caller must learn what happened, not guess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from engine.core.policy import PLATFORM, Policy
from engine.core.session import DoctorSession
from engine.core.shard import KEEP_ENDED, KEEP_FORGOTTEN, Shard
from engine.core.snapshot import (
    decode_rules,
    decode_session,
    encode_rules,
    encode_session,
    legacy_bans,
)
from engine.errors import CommitUncertain, Fenced, NotDurable, SnapshotError, StoreUnavailable
from engine.store import connect
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys
from engine.store.outbox import partition_of
from engine.store.slots import mget, queue_mget

log = logging.getLogger(__name__)

# KEYS: epoch, sessions-set, the shard's outbox stream, commit token, snapshot keys (n).
# ARGV: epoch, channel, message, events, n, token, origin, follow-ups, payloads (n), new
# session ids... Every key has the shard's hash tag: on a Redis Cluster the script runs on the
# shard's node. The outbox entry carries the commit's events and its follow-ups (what the
# commit sends to other slots after the script, ``Store.follow_ups``), which the courier
# applies again: a follow-up lost with its round trip, or with a cluster node, is not lost.
COMMIT_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return redis.error_reply(
    'FENCED shard epoch is ' .. tostring(current) .. ', writer has ' .. ARGV[1])
end
local n = tonumber(ARGV[5])
for i = 1, n do
  redis.call('SET', KEYS[4 + i], ARGV[8 + i])
end
for i = 9 + n, #ARGV do
  redis.call('SADD', KEYS[2], ARGV[i])
end
if ARGV[4] ~= '' or ARGV[8] ~= '' then
  if ARGV[7] ~= '' then
    redis.call('XADD', KEYS[3], '*', 'e', ARGV[4], 'f', ARGV[8], 'origin', ARGV[7])
  else
    redis.call('XADD', KEYS[3], '*', 'e', ARGV[4], 'f', ARGV[8])
  end
end
redis.call('SET', KEYS[4], ARGV[6])
if ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return n
"""

# KEYS: epoch, commit token. Fence the shard (no commit of an older epoch can run from now on,
# even one still on its way) and read the token of the last commit that did run.
SETTLE_SCRIPT = """
local epoch = redis.call('INCR', KEYS[1])
return {epoch, redis.call('GET', KEYS[2])}
"""

# KEYS: bans hash. ARGV: patient, until. Bans only grow: a replayed or late judgement never
# shortens a ban. Returns 1 when the ban changed.
# KEYS: bans hash, bans version. ARGV: patient, until. (The version tells hosts to reload.)
BAN_SCRIPT = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > old then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
"""


# KEYS: rules. ARGV: the v1 rules as read, the v2 policy. Writes the v2 policy unless the rules
# changed since they were read (version 1's bans were moved out before, ``_migrate_rules``).
MIGRATE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class Durability:
    """What a commit waits for before it counts as done, sent last in the commit's pipeline
    (each waits for this connection's own writes, and Redis replicates in order, so a later
    write confirmed confirms every earlier one):

    - ``local``: ``WAITAOF 1 0``, the master's AOF fsync (``appendfsync everysec`` then keeps
      the same promise as ``always``);
    - ``replica``: ``WAITAOF 1 1``, a replica's AOF fsync too: the commit survives the master
      and the replica crashing together (Valkey 9.1's replicas report their fsync about once a
      second: a commit then takes about a second);
    - ``replica-received``: ``WAITAOF 1 0`` and ``WAIT 1``, the master's AOF and a replica's
      memory: the commit survives the master's loss and a failover (a millisecond), not the
      master and the promoted replica crashing within its fsync.
    """

    replicas: int = 0  # replicas whose AOF must have it (``replica``)
    received: int = 0  # replicas that must have received it (``replica-received``)
    wait_ms: int = 500

    @classmethod
    def of(cls, level: str, wait_ms: int) -> Durability:
        return cls(
            replicas=1 if level == "replica" else 0,
            received=1 if level == "replica-received" else 0,
            wait_ms=wait_ms,
        )

    def send(self, pipe: Any) -> None:
        """Queue the waits (last in a pipeline)."""
        for command in self.waits():
            pipe.execute_command(*command)

    def waits(self) -> list[tuple[Any, ...]]:
        """The commands that wait, to send last on the connection that wrote."""
        out: list[tuple[Any, ...]] = [("WAITAOF", 1, self.replicas, self.wait_ms)]
        if self.received:
            out.append(("WAIT", self.received, self.wait_ms))
        return out

    @property
    def commands(self) -> int:
        return 2 if self.received else 1

    def met(self, replies: Sequence[Any]) -> bool:
        """Whether the replies of ``send`` ([local fsynced, replicas fsynced], then the
        replicas that received it) keep the promise."""
        waitaof = replies[0]
        if isinstance(waitaof, BaseException) or not isinstance(waitaof, list | tuple):
            return False
        if int(waitaof[0]) < 1 or int(waitaof[1]) < self.replicas:
            return False
        if self.received:
            wait = replies[1]
            return not isinstance(wait, BaseException) and int(wait) >= self.received
        return True


class HostView(NamedTuple):
    """What the leases say (``Store.host_view``)."""

    leased: frozenset[int]  # hosts holding a lease
    serving: frozenset[int]  # those of them not on a drained node
    size: int  # the pool's size as numbered in Redis (a pool that follows the nodes; else 0)


@dataclass(slots=True)
class ShardWrite:
    """One shard's part of a group commit."""

    shard_id: str
    hospital_id: str
    epoch: int
    sessions: Sequence[DoctorSession]
    new_session_ids: Sequence[str] = ()
    new_bookings: Sequence[tuple[int, str]] = ()  # (patient, booking id) for "my bookings"
    events: Sequence[list[Any]] = ()  # outbox events, written atomically with the snapshots
    # (session, status, remaining, version) of every session whose stock or status changed
    stock: list[tuple[str, str, int, int]] = field(default_factory=list)
    token: str = ""  # unique to this commit: read back by ``settle`` after a failed round trip


def follow_up_payload(w: ShardWrite) -> bytes:
    """The follow-ups of a write as its outbox entry carries them (field ``f``): msgpack
    [shard, [[patient, booking id]...], [changed session ids], [new session ids]]; empty
    when it has none."""
    if not (w.new_bookings or w.sessions or w.new_session_ids):
        return b""
    return msgpack.packb(
        [
            w.shard_id,
            [list(b) for b in w.new_bookings],
            [s.id for s in w.sessions],
            list(w.new_session_ids),
        ],
        use_bin_type=True,
    )


def stock_message(stock: Iterable[tuple[str, str, int, int]]) -> bytes:
    """Pub/sub payload: msgpack list of [session_id, status, remaining, version]; a reader
    ignores anything older than what it has (see ``DoctorSession.version``)."""
    return msgpack.packb([list(item) for item in stock], use_bin_type=True)


def parse_stock_message(raw: bytes) -> list[tuple[str, str, int, int]]:
    return [tuple(item) for item in msgpack.unpackb(raw, raw=False)]  # type: ignore[misc]


def _bans(raw: dict[bytes, bytes]) -> dict[int, float]:
    return {int(k): float(v) for k, v in raw.items()}


def never_sent(exc: BaseException) -> bool:
    """The command never left this process: the connection could not be made (redis-py raises
    these from ``connect``, before anything is written)."""
    text = str(exc)
    return "connecting to" in text or "Timeout connecting" in text


def round_trip_failure(exc: RedisError) -> StoreUnavailable | CommitUncertain:
    """What a commit's failed round trip means: known not sent, or perhaps run."""
    kind = StoreUnavailable if never_sent(exc) else CommitUncertain
    return kind(f"commit failed: {type(exc).__name__}: {exc}")


class Store:
    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._commit_sha: str | None = None  # EVALSHA: the commit script is sent once
        self.couriers = 1  # set by the host: whose doorbell a commit rings (``outbox.py``)
        self.durability: Durability | None = None  # set by the host: commits wait for it
        self._refresh = False  # on a cluster: learn the slot map again before the next commit
        self.redirected = 0  # on a cluster: scripts answered MOVED or ASK, sent again

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str,
        timeout: float = 2.0,
        connections: int = 64,
        cluster: bool = False,
    ) -> Store:
        """A store on one Redis, or with ``cluster`` on a Redis Cluster (``connect.py``)."""
        client = connect.async_client(
            url, cluster=cluster, timeout=timeout, connections=connections
        )
        return cls(client, Keys(prefix))

    @classmethod
    def of(cls, settings: Any, timeout: float | None = None, connections: int = 64) -> Store:
        """The store ``settings`` name (its URL, namespace, mode and timeout)."""
        return cls.from_url(
            settings.redis_url,
            settings.namespace,
            settings.redis_timeout if timeout is None else timeout,
            connections,
            cluster=settings.redis_cluster,
        )

    @property
    def cluster(self) -> bool:
        return connect.is_cluster(self.client)

    async def close(self) -> None:
        await connect.close(self.client)

    # ----- the host's side -----------------------------------------------------------------

    async def activate(
        self,
        shard_id: str,
        hospital_id: str,
        date: str,
        zone: dt.tzinfo = dt.UTC,
        keep: tuple[int, int] = (KEEP_ENDED, KEEP_FORGOTTEN),
    ) -> tuple[int, Shard]:
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
                pipe.hgetall(keys.bans(hospital_id))
                pipe.hgetall(keys.bans(PLATFORM))
                epoch, members, rules_raw, bans, platform_bans = await pipe.execute()
            ids = sorted(m.decode() for m in members)
            raws = await self.client.mget([keys.session(shard_id, i) for i in ids]) if ids else []
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot load shard {shard_id}: {exc}") from exc
        policy = decode_rules(rules_raw) if rules_raw else Policy()
        legacy = legacy_bans(rules_raw) if rules_raw else None
        if legacy is not None:  # version 1 kept bans in the rules: move them, keep the policy
            await self._migrate_rules(hospital_id, rules_raw, policy, legacy)
        hospital_bans = _bans(bans)
        for patient, until in (legacy or {}).items():
            hospital_bans[patient] = max(hospital_bans.get(patient, 0.0), until)
        shard = Shard(
            shard_id,
            hospital_id,
            date,
            policy,
            hospital_bans,
            _bans(platform_bans),
            zone=zone,
            keep=keep,
        )
        for session_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue  # listed but its first commit was refused: it was never acknowledged
            where = keys.session(shard_id, session_id)
            session = decode_session(raw, where)
            if session.id != session_id or session.spec.shard_id != shard_id:
                raise SnapshotError(f"{where} holds {session.id} of {session.spec.shard_id}")
            shard.add_restored(session)
        return int(epoch), shard

    async def _migrate_rules(
        self, hospital_id: str, old: bytes, policy: Policy, bans: dict[int, float]
    ) -> None:
        """The bans first (they only grow: done twice, they are the same), then the policy,
        only if nobody changed the rules since they were read; cut off between the two, the
        rules are still version 1 and the next activation does it again."""
        try:
            if bans:
                await self.extend_bans([(hospital_id, p, until) for p, until in bans.items()])
            await self.client.eval(
                MIGRATE_SCRIPT, 1, self.keys.rules(hospital_id), old, encode_rules(policy)
            )
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot migrate the rules of {hospital_id}: {exc}") from exc

    async def commit(self, writes: Sequence[ShardWrite]) -> list[BaseException | None]:
        """Write every shard's changes in one round trip; one result per write (None = ok).

        A failure known to have written nothing fails every write with ``StoreUnavailable``
        (the connection could not be made); a round trip that failed once it may have been
        sent fails them with ``CommitUncertain`` (``settle`` tells); a fenced shard fails alone
        (``Fenced``).
        """
        if self._commit_sha is None:
            try:
                self._commit_sha = await self.client.script_load(COMMIT_SCRIPT)
            except REDIS_ERRORS as exc:  # nothing of the commit was sent
                return [StoreUnavailable(f"commit script not loaded: {exc}") for _ in writes]
        try:
            results = await self._send_commit(writes, self._commit_sha)
        except REDIS_ERRORS as exc:
            return [round_trip_failure(exc)] * len(writes)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if again:  # Redis lost its scripts (a restart, SCRIPT FLUSH): those never ran, so
            try:  # they go again, once, after loading it
                self._commit_sha = await self.client.script_load(COMMIT_SCRIPT)
                retried = await self._send_commit([writes[i] for i in again], self._commit_sha)
            except REDIS_ERRORS as exc:
                retried = [round_trip_failure(exc)] * len(again)
            for i, result in zip(again, retried, strict=True):
                results[i] = result
        out: list[BaseException | None] = []
        for w, result in zip(writes, results, strict=True):
            if isinstance(result, StoreUnavailable | CommitUncertain):  # the second try's,
                out.append(result)  # or the commit ran but was not confirmed durable
            elif isinstance(result, ResponseError) and "FENCED" in str(result):
                out.append(Fenced(f"{w.shard_id}: {result}"))
            elif isinstance(result, BaseException):  # the script refused before writing
                out.append(StoreUnavailable(f"{w.shard_id}: {result}"))
            else:
                out.append(None)
        return out

    def follow_ups(self, w: ShardWrite, entry: bool) -> list[tuple[Any, ...]]:
        """What a write's commit sends after its script, to keys of other slots: each new
        booking into its patient's "my bookings", the sessions marked changed for the records,
        the doorbell rung for its outbox entry, the catalog repaired. The entry carries them
        too (``follow_up_payload``) and the courier applies them again, so a follow-up lost
        on its way (the round trip failed after the script, a cluster node was away) is made
        good. They are sent even when the script refused: a booking id listed for a commit
        that did not happen is dropped by every reader, which asks the engine whose the
        booking is; a session marked changed that did not is indexed as it is."""
        keys = self.keys
        out: list[tuple[Any, ...]] = [
            ("SADD", keys.patient_bookings(patient), booking_id)
            for patient, booking_id in w.new_bookings
        ]
        if w.sessions:
            changed = [keys.session(w.shard_id, s.id) for s in w.sessions]
            indexer = partition_of(w.hospital_id, self.couriers)  # whose hospitals' records
            out.append(("SADD", keys.changed_sessions_of(indexer), *changed))
        if entry:  # the script wrote an outbox entry: the courier reads the streams rung
            doorbell = keys.outbox_doorbell(partition_of(w.shard_id, self.couriers))
            out.append(("ZINCRBY", doorbell, 1, w.shard_id))
        if w.new_session_ids:  # claimed already by the client; this only repairs
            out += [("HSETNX", keys.catalog, sid, w.shard_id) for sid in w.new_session_ids]
            out.append(("SADD", keys.shards, w.shard_id))
        return out

    def _script(self, w: ShardWrite, sha: str) -> tuple[tuple[Any, ...], bool]:
        """A write's ``EVALSHA`` and whether it writes an outbox entry."""
        keys = self.keys
        snap_keys = [keys.session(w.shard_id, s.id) for s in w.sessions]
        payloads = [encode_session(s) for s in w.sessions]
        message = stock_message(w.stock) if w.stock else b""
        events = msgpack.packb(list(w.events), use_bin_type=True) if w.events else b""
        follow_up = follow_up_payload(w)
        command = (
            "EVALSHA",
            sha,
            4 + len(snap_keys),
            keys.epoch(w.shard_id),
            keys.sessions(w.shard_id),
            keys.shard_outbox(w.shard_id),
            keys.commit_seq(w.shard_id),
            *snap_keys,
            w.epoch,
            keys.stock_channel,
            message,
            events,
            len(payloads),
            w.token,
            f"{w.shard_id}/{w.token}" if w.token else "",  # the entry's name
            follow_up,
            *payloads,
            *w.new_session_ids,
        )
        return command, bool(events or follow_up)

    async def _send_commit(self, writes: Sequence[ShardWrite], sha: str) -> list[Any]:
        """One round trip: each write's script and its follow-ups (``follow_ups``); each
        script's result. On a cluster, one round trip per master (``_send_commit_nodes``)."""
        if self.cluster:
            return await self._send_commit_nodes(writes, sha)
        extras: list[int] = []  # commands after each write's script
        async with self.client.pipeline(transaction=False) as pipe:
            for w in writes:
                script, entry = self._script(w, sha)
                pipe.execute_command(*script)
                follow = self.follow_ups(w, entry)
                for command in follow:
                    pipe.execute_command(*command)
                extras.append(len(follow))
            if self.durability is not None:  # last: it waits for this connection's writes
                self.durability.send(pipe)
            results = await self._execute(pipe)
        out, at = [], 0
        for count in extras:
            out.append(results[at])
            at += 1 + count
        d = self.durability
        if d is not None and not d.met(waits := results[len(results) - d.commands :]):
            why = f"not confirmed durable within {d.wait_ms} ms: {waits!r}"
            out = [r if isinstance(r, BaseException) else NotDurable(why) for r in out]
        return out

    async def _send_commit_nodes(self, writes: Sequence[ShardWrite], sha: str) -> list[Any]:
        """A group commit on a Redis Cluster: the scripts go as one pipeline per master, each
        ending in the waits of ``durability`` (they wait for that connection's writes), all
        masters at once; then the follow-ups, likewise. A script answered ``MOVED``, ``ASK``
        or ``TRYAGAIN`` did not run: it goes again to the node named (after ``ASKING`` for
        an ``ASK``), up to four rounds, as the slot map the client keeps is brought up to
        date. A master whose round trip failed fails its writes alone (``CommitUncertain``,
        or ``StoreUnavailable`` if it was never reached)."""
        client: aioredis.RedisCluster = self.client
        if self._refresh:  # a node was lost last time: learn the slots again
            try:
                await client.nodes_manager.initialize()
            except REDIS_ERRORS as exc:  # nothing was sent
                return [StoreUnavailable(f"cluster slots unknown: {exc}") for _ in writes]
            self._refresh = False
        d = self.durability
        waits = d.waits() if d is not None else []
        results: list[Any] = [None] * len(writes)
        scripts = [self._script(w, sha) for w in writes]
        pending, asking = list(range(len(writes))), {}
        for _ in range(4):
            plans: dict[str, tuple[Any, list[Any]]] = {}
            marks: dict[str, list[int | None]] = {}
            for i in pending:
                w = writes[i]
                try:
                    node = asking.get(i) or connect.node_of(client, self.keys.epoch(w.shard_id))
                except REDIS_ERRORS as exc:  # no master serves its slot now (a failover)
                    self._refresh = True
                    results[i] = StoreUnavailable(f"{w.shard_id}: no node serves it: {exc}")
                    continue
                commands = plans.setdefault(node.name, (node, []))[1]
                mark = marks.setdefault(node.name, [])
                if i in asking:
                    commands.append(("ASKING",))
                    mark.append(None)
                commands.append(scripts[i][0])
                mark.append(i)
            for node, commands in plans.values():
                commands.extend(waits)
                marks[node.name].extend([None] * len(waits))
            replies = await connect.on_nodes(plans)
            pending, asking, pause = [], {}, False
            for name, reply in replies.items():
                if isinstance(reply, BaseException):
                    self._refresh = True
                    failure = (
                        round_trip_failure(reply)
                        if isinstance(reply, REDIS_ERRORS)
                        else CommitUncertain(f"commit failed: {type(reply).__name__}: {reply}")
                    )
                    for i in marks[name]:
                        if i is not None:
                            results[i] = failure
                    continue
                met = d is None or d.met(reply[len(reply) - len(waits) :])
                for i, result in zip(marks[name], reply, strict=False):
                    if i is None:
                        continue
                    if isinstance(result, MovedError):
                        await client.nodes_manager.move_slot(result)
                        pending.append(i)
                        self.redirected += 1
                    elif isinstance(result, AskError):
                        target = client.get_node(host=result.host, port=result.port)
                        if target is None:
                            await client.nodes_manager.initialize()
                            target = client.get_node(host=result.host, port=result.port)
                        asking[i] = target
                        pending.append(i)
                        self.redirected += 1
                    elif isinstance(result, TryAgainError):
                        pending.append(i)
                        pause = True
                    elif isinstance(result, ClusterDownError):
                        self._refresh = True
                        results[i] = StoreUnavailable(f"commit refused: {result}")
                    elif isinstance(result, BaseException) or met:
                        results[i] = result
                    else:
                        why = f"not confirmed durable within {d.wait_ms} ms: {reply[-1]!r}"
                        results[i] = NotDurable(why)
            if not pending:
                break
            if pause:
                await asyncio.sleep(0.05)
        for i in pending:
            results[i] = StoreUnavailable(f"{writes[i].shard_id}: its slot kept moving")
        follow = zip(writes, scripts, strict=True)
        await self._send_follow_ups([c for w, (_, e) in follow for c in self.follow_ups(w, e)])
        return results

    async def _send_follow_ups(self, commands: Sequence[tuple[Any, ...]]) -> None:
        """The follow-ups of a commit on a cluster, one pipeline per master; a lost one is
        made good by the courier, which applies the outbox entry's copy."""
        client: aioredis.RedisCluster = self.client
        plans: dict[str, tuple[Any, list[Any]]] = {}
        try:
            for command in commands:
                node = connect.node_of(client, command[1])
                plans.setdefault(node.name, (node, []))[1].append(command)
        except REDIS_ERRORS as exc:
            log.warning("follow-ups not sent (the courier applies them): %s", exc)
            return
        if plans:
            for name, reply in (await connect.on_nodes(plans)).items():
                if isinstance(reply, BaseException):
                    log.warning("follow-ups to %s lost (the courier applies them): %s", name, reply)

    async def confirm(self, probe: str) -> bool:
        """Whether everything this client's earlier commits wrote is as durable as
        ``durability`` asks: a write of ``probe`` (a key of the caller's own), then
        ``WAITAOF`` — a later write confirmed confirms every earlier one. On a cluster, on
        every master (a probe key in one of its slots)."""
        if self.durability is None:
            return True
        try:
            waits = await self._write_and_wait(probe, self.durability)
        except REDIS_ERRORS:
            return False
        return all(self.durability.met(w) for w in waits.values())

    async def _write_and_wait(self, probe: str, d: Durability) -> dict[str, list[Any]]:
        """A write of ``probe`` and the waits of ``d`` after it, on every master: by master,
        the waits' replies."""
        if not self.cluster:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incr(probe)
                d.send(pipe)
                _, *waits = await pipe.execute(raise_on_error=False)
            return {"master": waits}
        plans = {
            node.name: (node, [("INCR", connect.probe_key(self.client, node, probe)), *d.waits()])
            for node in await connect.masters(self.client)
        }
        out = {}
        for name, reply in (await connect.on_nodes(plans)).items():
            if isinstance(reply, BaseException):
                raise reply if isinstance(reply, REDIS_ERRORS) else StoreUnavailable(str(reply))
            out[name] = reply[1:]
        return out

    async def _replicas(self) -> dict[str, int]:
        """By master, its connected replicas."""
        if not self.cluster:
            info = await self.client.info("replication")
            return {"master": int(info.get("connected_slaves", 0))}
        plans = {
            node.name: (node, [("INFO", "replication")])
            for node in await connect.masters(self.client)
        }
        out = {}
        for name, reply in (await connect.on_nodes(plans)).items():
            if isinstance(reply, BaseException):
                raise reply if isinstance(reply, REDIS_ERRORS) else StoreUnavailable(str(reply))
            out[name] = int(reply[0].get("connected_slaves", 0))
        return out

    async def durability_problem(self, level: str) -> str | None:
        """Why commits could never be confirmed at ``level`` (None: they can): the AOF off,
        ``WAITAOF`` unknown (Redis < 7.2), or for the replica levels no replica connected —
        on a cluster, on any master."""
        d = Durability.of(level, 3000)
        needed = max(d.replicas, d.received)
        try:
            for name, connected in (await self._replicas()).items():
                if connected < needed:
                    return (
                        f"SLOTENGINE_DURABILITY={level} needs a replica connected to the "
                        f"master ({name} has {connected}); give Redis one, or use local"
                    )
            by_master = await self._write_and_wait(f"{self.keys.prefix}:durability:check", d)
        except REDIS_ERRORS as exc:
            return f"cannot check the durability on Redis: {exc}"
        for name, waits in by_master.items():
            if isinstance(waits[0], BaseException):
                return (
                    f"SLOTENGINE_DURABILITY={level}: Redis refuses WAITAOF ({waits[0]}); it "
                    "needs Redis 7.2 or Valkey, with appendonly yes"
                )
            if not d.met(waits):
                return (
                    f"SLOTENGINE_DURABILITY={level}: Redis ({name}) did not confirm a write "
                    f"in 3 s {waits}"
                )
        return None

    async def _execute(self, pipe: Any) -> list[Any]:
        """Send a commit's pipeline (a seam for the tests that inject failures)."""
        return await pipe.execute(raise_on_error=False)

    async def settle(self, shard_id: str, token: str) -> tuple[int, bool]:
        """After a commit of ``shard_id`` with ``token`` failed uncertainly: fence the shard and
        tell whether that commit ran. (new epoch, committed). From here on the old epoch can
        write nothing, so "not committed" stays true. ``StoreUnavailable`` if Redis does not
        answer: then it is still unknown."""
        try:
            epoch, stored = await self.client.eval(
                SETTLE_SCRIPT, 2, self.keys.epoch(shard_id), self.keys.commit_seq(shard_id)
            )
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"cannot settle {shard_id}: {exc}") from exc
        return int(epoch), stored is not None and stored.decode() == token

    # ----- the clients' side ---------------------------------------------------------------

    async def shard_of(self, session_id: str) -> str | None:
        try:
            raw = await self.client.hget(self.keys.catalog, session_id)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"catalog unreachable: {exc}") from exc
        return None if raw is None else raw.decode()

    async def read_session(self, session_id: str) -> DoctorSession | None:
        """One doctor-session as stored (read-only, no ownership taken)."""
        shard_id = await self.shard_of(session_id)
        if shard_id is None:
            return None
        try:
            raw = await self.client.get(self.keys.session(shard_id, session_id))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"snapshot unreachable: {exc}") from exc
        return None if raw is None else decode_session(raw, self.keys.session(shard_id, session_id))

    async def placement(self) -> dict[str, int]:
        try:
            raw = await self.client.hgetall(self.keys.placement)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"placement unreachable: {exc}") from exc
        return {k.decode(): int(v) for k, v in raw.items()}

    async def pins(self, shard_ids: Sequence[str]) -> dict[str, int]:
        """The directory's entries for these shards (the pinned ones only)."""
        if not shard_ids:
            return {}
        try:
            raw = await self.client.hmget(self.keys.placement, list(shard_ids))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"placement unreachable: {exc}") from exc
        return {s: int(v) for s, v in zip(shard_ids, raw, strict=True) if v is not None}

    async def live_hosts(self, hosts: int) -> frozenset[int]:
        """The hosts of a pool of ``hosts`` that serve now: they hold a lease
        (``actors/lease.py``) on a node that is not being drained."""
        return (await self.host_view(hosts)).serving

    async def host_view(self, hosts: int) -> HostView:
        """The hosts of ``0 .. hosts-1`` holding a lease, those of them that serve (not on a
        drained node), and the pool's size as numbered in Redis (0 for a fixed pool)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                leases = queue_mget(pipe, [self.keys.lease(i) for i in range(hosts)])
                pipe.smembers(self.keys.draining)
                pipe.get(self.keys.pool_size)
                *parts, draining, size = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"leases unreachable: {exc}") from exc
        raw = leases(parts)
        drained = {d.decode() for d in draining}
        leased = frozenset(i for i, v in enumerate(raw) if v is not None)
        if not drained:
            return HostView(leased, leased, int(size or 0))
        serving = frozenset(i for i in leased if json.loads(raw[i]).get("node_id") not in drained)
        return HostView(leased, serving, int(size or 0))

    async def pool_size(self) -> int:
        """The hosts a pool that follows the nodes has numbered (0: a fixed pool)."""
        try:
            return int(await self.client.get(self.keys.pool_size) or 0)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"pool size unreachable: {exc}") from exc

    async def draining(self) -> set[str]:
        """The node ids being drained (``ops drain``): no host on them is placed shards."""
        try:
            return {d.decode() for d in await self.client.smembers(self.keys.draining)}
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"draining nodes unreachable: {exc}") from exc

    async def drain(self, node_id: str, on: bool = True) -> int:
        """Start (or, ``on`` False, end) draining a node; the directory's new version."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if on:
                    pipe.sadd(self.keys.draining, node_id)
                else:
                    pipe.srem(self.keys.draining, node_id)
                pipe.incr(self.keys.placement_version)
                *_, version = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"draining not written: {exc}") from exc
        return int(version)

    async def leases(self, hosts: int) -> dict[int, tuple[dict, float]]:
        """Each live host's lease: (its holder's details, seconds left)."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for i in range(hosts):
                    pipe.get(self.keys.lease(i))
                    pipe.pttl(self.keys.lease(i))
                raw = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"leases unreachable: {exc}") from exc
        out = {}
        for i in range(hosts):
            value, ttl = raw[2 * i], raw[2 * i + 1]
            if value is not None:
                out[i] = (json.loads(value), max(ttl, 0) / 1000)
        return out

    async def place(self, shard_id: str, host_index: int | None) -> int:
        """Pin a shard to a host (None: back to its default host) and bump the directory's
        version, in one transaction; the new version. Hosts check the directory before
        loading a shard and drop one placed elsewhere on their next tick."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if host_index is None:
                    pipe.hdel(self.keys.placement, shard_id)
                else:
                    pipe.hset(self.keys.placement, shard_id, host_index)
                pipe.incr(self.keys.placement_version)
                *_, version = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"placement not written: {exc}") from exc
        return int(version)

    async def claim_session(self, session_id: str, shard_id: str) -> str:
        """Bind a new doctor-session id to its shard, once; the shard that holds the id."""
        key = self.keys.catalog
        try:
            await self.client.hsetnx(key, session_id, shard_id)
            return (await self.client.hget(key, session_id)).decode()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"catalog unreachable: {exc}") from exc

    async def read_rules(self, scope: str) -> tuple[Policy | None, dict[int, float]]:
        """A hospital's policy and bans, or (None, the platform's bans) for ``platform``."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.rules(scope))
                pipe.hgetall(self.keys.bans(scope))
                raw, bans = await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"rules unreachable: {exc}") from exc
        if scope == PLATFORM:
            return None, _bans(bans)
        return (decode_rules(raw) if raw else Policy()), _bans(bans)

    async def ban_versions(self, scopes: list[str]) -> list[bytes | None]:
        try:
            return await mget(self.client, [self.keys.bans_version(s) for s in scopes])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"bans unreachable: {exc}") from exc

    async def policy(self, hospital_id: str) -> Policy:
        return (await self.read_rules(hospital_id))[0] or Policy()

    async def write_policy(self, hospital_id: str, policy: Policy) -> None:
        try:
            await self.client.set(self.keys.rules(hospital_id), encode_rules(policy))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"policy not written: {exc}") from exc

    async def set_ban(self, scope: str, patient_id: int, until: float | None) -> None:
        """Set (or with None lift) a ban by hand; the operator's word replaces the record's."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if until is None:
                    pipe.hdel(self.keys.bans(scope), str(patient_id))
                else:
                    pipe.hset(self.keys.bans(scope), str(patient_id), repr(until))
                pipe.incr(self.keys.bans_version(scope))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"ban not written: {exc}") from exc

    async def extend_ban(self, scope: str, patient_id: int, until: float) -> bool:
        """Raise a ban to ``until`` if it is shorter; True if it changed."""
        return (await self.extend_bans([(scope, patient_id, until)]))[0]

    async def extend_bans(self, bans: list[tuple[str, int, float]]) -> list[bool]:
        """Raise bans to ``until`` where they are shorter, for many (scope, patient, until) in
        one round trip; True where a ban changed."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for scope, patient_id, until in bans:
                    pipe.eval(
                        BAN_SCRIPT,
                        2,
                        self.keys.bans(scope),
                        self.keys.bans_version(scope),
                        patient_id,
                        repr(until),
                    )
                return [bool(x) for x in await pipe.execute()]
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"bans not written: {exc}") from exc

    async def shard_ids(self) -> list[str]:
        try:
            return sorted(m.decode() for m in await self.client.smembers(self.keys.shards))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"shard list unreachable: {exc}") from exc

    async def read_shard_sessions(self, shard_id: str) -> list[DoctorSession]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.sessions(shard_id)))
        raws = await self.client.mget([self.keys.session(shard_id, i) for i in ids]) if ids else []
        return [
            decode_session(raw, self.keys.session(shard_id, i))
            for i, raw in zip(ids, raws, strict=True)
            if raw is not None
        ]
