"""The host actor: a Ray actor that carries the shards placed on it (like an Orleans silo).

Thin shell around the pure core. Calls append to one pending list; a single committer task
takes everything pending, decides it in arrival-stamp order, writes every changed snapshot in
one pipelined round trip (group commit), and only then answers. If a shard's write fails, its
in-memory state is dropped (the next request reloads it from Redis, the truth) and every
request of that shard in the batch is answered ``Unavailable``: nothing is ever confirmed from
memory alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import time
from collections.abc import Sequence
from typing import Any

from .errors import Fenced, StoreUnavailable
from .outcomes import NotFound, Outcome, Unavailable
from .settings import Settings
from .shard import Shard
from .store import ShardWrite, Store

log = logging.getLogger(__name__)

# Request kinds. A request is a tuple (stamp, kind, shard_id, a, b, c):
#   BOOK    (stamp, BOOK, shard, session_id, patient, request_key)
#   RELEASE (stamp, RELEASE, shard, session_id, booking_no, patient or None)
#   CREATE  (stamp, CREATE, shard, SessionSpec, None, None)
#   STATE   (stamp, STATE, shard, session_id, None, None)
BOOK, RELEASE, CREATE, STATE = 1, 2, 3, 4
Request = tuple[int, int, str, Any, Any, Any]


def split_shard_id(shard_id: str) -> tuple[str, str]:
    hospital_id, _, date = shard_id.rpartition(":")
    return hospital_id, date


class Host:
    """One host of the pool. Decorated with ``ray.remote`` by ``pool.py``."""

    def __init__(self, index: int, settings: Settings) -> None:
        self.index = index
        self.settings = settings
        self.shards: dict[str, tuple[int, Shard]] = {}  # shard id → (epoch, shard)
        self.published: dict[str, str] = {}  # session id → last published status
        self._pending: list[tuple[Sequence[Request], asyncio.Future[list[Outcome]]]] = []
        self._wakeup: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._store: Store | None = None
        self._one_at_a_time: asyncio.Lock | None = None
        self.started_at = time.time()
        self.counters: dict[str, float] = {
            "calls": 0,
            "requests": 0,
            "commits": 0,
            "failed_commits": 0,
            "decide_seconds": 0.0,
            "commit_seconds": 0.0,
        }

    # ----- Ray methods ---------------------------------------------------------------------

    async def submit(self, requests: Sequence[Request]) -> bytes:
        """Decide a list of requests with everything else pending; answer after the commit.

        The answer is the pickled list of outcomes: one pickle for the whole batch is several
        times cheaper than Ray serializing each outcome object on its own.
        """
        self._ensure_running()
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((requests, future))
        assert self._wakeup is not None
        self._wakeup.set()
        return pickle.dumps(await future, protocol=pickle.HIGHEST_PROTOCOL)

    async def submit_unbatched(self, request: Request) -> Outcome:
        """Baseline for the benchmark: decide and write one request per call, one at a time."""
        self._ensure_running()
        assert self._one_at_a_time is not None
        async with self._one_at_a_time:
            return (await self._decide_and_commit([request]))[0]

    async def refresh_rules(self, hospital_id: str) -> int:
        """Reload a hospital's policy and blacklist into every loaded shard of it."""
        self._ensure_running()
        assert self._store is not None
        policy, blacklist = await self._store.read_rules(hospital_id)
        count = 0
        for _, shard in self.shards.values():
            if shard.hospital_id == hospital_id:
                shard.set_rules(policy, blacklist)
                count += 1
        return count

    async def info(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "started_at": self.started_at,
            "shards": sorted(self.shards),
            "epochs": {k: e for k, (e, _) in self.shards.items()},
            **self.counters,
        }

    # ----- the committer -------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._committer is None:
            s = self.settings
            assert s.redis_url is not None, "a host needs a resolved Redis URL"
            self._store = Store.from_url(s.redis_url, s.namespace, s.redis_timeout)
            self._wakeup = asyncio.Event()
            self._one_at_a_time = asyncio.Lock()
            self._committer = asyncio.get_running_loop().create_task(self._commit_loop())

    async def _commit_loop(self) -> None:
        assert self._wakeup is not None
        next_tick = time.time() + self.settings.tick_seconds
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), max(0.0, next_tick - time.time()))
            self._wakeup.clear()
            while self._pending:
                calls = self._take_pending()
                try:
                    outcomes = await self._decide_and_commit([r for reqs, _ in calls for r in reqs])
                except Exception as exc:  # a bug must not leave callers waiting forever
                    log.exception("batch failed")
                    for _, fut in calls:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                pos = 0
                for reqs, fut in calls:
                    if not fut.done():
                        fut.set_result(outcomes[pos : pos + len(reqs)])
                    pos += len(reqs)
            if time.time() >= next_tick:
                next_tick = time.time() + self.settings.tick_seconds
                try:
                    await self._tick(time.time())
                except Exception:
                    log.exception("tick failed")

    def _take_pending(self) -> list[tuple[Sequence[Request], asyncio.Future[list[Outcome]]]]:
        taken, size = 0, 0
        for reqs, _ in self._pending:
            if taken and size + len(reqs) > self.settings.max_batch:
                break
            taken += 1
            size += len(reqs)
        calls, self._pending = self._pending[:taken], self._pending[taken:]
        return calls

    async def _decide_and_commit(self, requests: Sequence[Request]) -> list[Outcome]:
        """Group commit: decide in stamp order, write once, answer. The heart of invariant 3."""
        started = time.perf_counter()
        self.counters["calls"] += 1
        self.counters["requests"] += len(requests)
        now = time.time()
        order = sorted(range(len(requests)), key=lambda i: requests[i][0])
        outcomes: list[Outcome] = [None] * len(requests)  # type: ignore[list-item]
        failed: dict[str, Unavailable] = {}
        await self._activate({requests[i][2] for i in order} - self.shards.keys(), failed)
        touched: dict[str, list[int]] = {}
        for i in order:
            _, kind, shard_id, a, b, c = requests[i]
            touched.setdefault(shard_id, []).append(i)
            if shard_id in failed:
                outcomes[i] = failed[shard_id]
                continue
            shard = self.shards[shard_id][1]
            if kind == BOOK:
                outcomes[i] = shard.book(a, b, c, now)
            elif kind == RELEASE:
                outcomes[i] = shard.release(a, b, c)
            elif kind == CREATE:
                outcomes[i] = shard.create(a)
            elif kind == STATE:
                outcomes[i] = shard.state(a, now)
            else:
                outcomes[i] = NotFound("request kind")
        writes = self._collect_writes([s for s in touched if s not in failed], now)
        decided = time.perf_counter()
        self.counters["decide_seconds"] += decided - started
        failures = await self._commit(writes)
        self.counters["commit_seconds"] += time.perf_counter() - decided
        for shard_id, reason in failures.items():
            for i in touched[shard_id]:
                outcomes[i] = reason
        return outcomes

    async def _activate(self, shard_ids: set[str], failed: dict[str, Unavailable]) -> None:
        assert self._store is not None
        for shard_id in shard_ids:
            hospital_id, date = split_shard_id(shard_id)
            try:
                self.shards[shard_id] = await self._store.activate(shard_id, hospital_id, date)
            except StoreUnavailable as exc:
                failed[shard_id] = Unavailable(str(exc))

    def _collect_writes(self, shard_ids: Sequence[str], now: float) -> list[ShardWrite]:
        writes = []
        for shard_id in shard_ids:
            epoch, shard = self.shards[shard_id]
            changes = shard.take_changes()
            if not changes:
                continue
            sessions = list(changes.sessions.values())
            stock = [(s.id, s.status(now), s.free) for s in sessions]
            writes.append(
                ShardWrite(
                    shard_id, shard.hospital_id, epoch, sessions, changes.new_session_ids, stock
                )
            )
        return writes

    async def _commit(self, writes: list[ShardWrite]) -> dict[str, Unavailable]:
        """Write; on failure drop the shard from memory so it reloads from Redis."""
        if not writes:
            return {}
        assert self._store is not None
        self.counters["commits"] += 1
        results = await self._store.commit(writes)
        failures: dict[str, Unavailable] = {}
        for w, error in zip(writes, results, strict=True):
            if error is None:
                for session_id, status, _ in w.stock:
                    self.published[session_id] = status
                continue
            self.counters["failed_commits"] += 1
            kind = "fenced" if isinstance(error, Fenced) else "store"
            log.warning("commit of %s failed (%s): %s", w.shard_id, kind, error)
            self.shards.pop(w.shard_id, None)
            failures[w.shard_id] = Unavailable(f"{kind}: {error}")
        return failures

    async def _tick(self, now: float) -> None:
        """Timers: expire holds past their payment window; publish opening and closing."""
        for _, shard in list(self.shards.values()):
            shard.expire_holds(now)
        writes = self._collect_writes(list(self.shards), now)
        written = {w.shard_id for w in writes}
        for shard_id, (epoch, shard) in self.shards.items():
            if shard_id in written:
                continue
            stock = [
                (s.id, status, s.free)
                for s in shard.sessions.values()
                if (status := s.status(now)) != self.published.get(s.id)
            ]
            if stock:
                writes.append(ShardWrite(shard_id, shard.hospital_id, epoch, [], (), stock))
        await self._commit(writes)
