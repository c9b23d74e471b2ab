"""A pool that follows the nodes (``SLOTENGINE_HOSTS_PER_NODE``), on a real multi-node Ray
cluster on this machine: hosts start on a node that joins and take their share of the shards
under a crowd; a node killed outright has its shards served elsewhere at once (leases) and its
host retired once Ray declares the node dead; a node that joins later gets a new host index
(never a retired one). Every answer is checked against the truth in Redis by the auditor."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
import zlib

import pytest

from engine.actors.names import find_pool
from engine.client import Engine
from engine.core.placement import default_host
from engine.outcomes import Booked, OutcomeUnknown, Unavailable
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools.audit import audit
from engine.tools.cluster import cluster_status
from engine.tools.crowd import catalog, plan, play
from tests.engine.actors.test_host import check_against_truth, create_all, seed

pytestmark = pytest.mark.multinode

PLACE = "fl_host"  # offered only by the nodes this test adds


async def until(check, seconds: float, what: str) -> float:
    """Poll ``check`` (sync or async) until true; the seconds it took."""
    started = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        await asyncio.sleep(0.2)


async def hosts_on(engine: Engine) -> dict[int, str]:
    """Host index → node id, for the hosts holding a lease."""
    leases = await engine.store.leases(len(engine.hosts))
    return {i: holder["node_id"] for i, (holder, _) in leases.items()}


async def released(host, shard_ids: set[str]) -> bool:
    """The host carries none of these shards (it drops one placed elsewhere on its tick)."""
    return not shard_ids & set((await host.info.remote())["shards"])


async def every_shard_books(engine: Engine, specs, tag: str) -> None:
    """A booking on every shard (a new patient each: one a department a day)."""
    base = 800_000 + 1000 * (zlib.crc32(tag.encode()) % 100)
    for n, s in enumerate(specs):
        outcome = await engine.book(s.id, base + n, f"{tag}-{s.id}")
        assert isinstance(outcome, Booked), (s.shard_id, outcome)


def test_hosts_per_node_and_hosts_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        Settings.from_env({"SLOTENGINE_HOSTS": "3", "SLOTENGINE_HOSTS_PER_NODE": "2"})
    assert Settings.from_env({"SLOTENGINE_HOSTS_PER_NODE": "2"}).follows_nodes


@pytest.mark.timeout(600)
@pytest.mark.unwatched  # a node joining under a crowd on two cores: MONITOR starved it
async def test_the_pool_follows_the_nodes(ray_cluster, redis_server, redis_client, settings_for):
    first = ray_cluster.add_node(num_cpus=1, resources={PLACE: 2})
    settings = settings_for(
        redis_server.url, hosts_per_node=1, host_resource=PLACE, pool_follow_seconds=0.5
    )
    rt = Runtime.start(settings)
    try:
        engine = rt.engine()
        assert len(rt.hosts) == 1, "one host per node, though the node offers two places"
        assert await hosts_on(engine) == {0: first.node_id}
        specs = catalog(hospitals=8, sessions_per_hospital=1, capacity=40, prefix="fl")
        probes = [  # one per shard, never sold out: a booking there shows the shard serves
            dataclasses.replace(p, id=f"probe-{p.hospital_id}")
            for p in catalog(hospitals=8, sessions_per_hospital=1, capacity=1000, prefix="fl")
        ]
        await create_all(engine, specs + probes)
        shards = sorted({s.shard_id for s in specs})

        # a node joins in the middle of a crowd: its host takes its share of the shards
        requests = plan(specs, 12_000, patients=3_000, seed=seed())
        crowd = asyncio.ensure_future(play(engine, requests, 16))
        await asyncio.sleep(0.3)
        second = ray_cluster.add_node(num_cpus=1, resources={PLACE: 1})
        took = await until(lambda: len(engine.hosts) == 2, 60, "the joined node's host")
        print(f"a host on the joined node served {took:.1f} s after it joined")
        answers = list(await crowd)
        assert await hosts_on(engine) == {0: first.node_id, 1: second.node_id}
        theirs = {s for s in shards if default_host(s, 2, {0, 1}) == 1}
        assert theirs, "rendezvous gives the new host some of eight shards"
        await until(lambda: released(rt.hosts[0], theirs), 10, "the old host letting go")
        await every_shard_books(engine, probes, "joined")
        loaded = set((await rt.hosts[1].info.remote())["shards"])
        assert loaded == theirs, "exactly the shards it outscores moved to it"

        # the first node is killed outright: its shards serve at once on the other host ...
        victim_pid = (await engine.store.leases(2))[0][0]["pid"]
        killed_at = time.monotonic()
        ray_cluster.remove_node(first, allow_graceful=False)
        with contextlib.suppress(ProcessLookupError):  # its processes die with it
            os.kill(victim_pid, signal.SIGKILL)
        await until(lambda: 0 not in engine._live if engine._live else False, 20, "lapse")
        await every_shard_books(engine, probes, "killed")
        print(f"every shard booking on the survivor {time.monotonic() - killed_at:.1f} s on")
        # ... and its host is retired once Ray declares the node dead (never reused)
        retired = await until(lambda: rt.hosts[0] is None, 120, "retiring the lost host")
        print(f"host 0 retired {retired:.1f} s after its shards had moved")

        # a node joining later gets a new index, and its share of the shards again
        third = ray_cluster.add_node(num_cpus=1, resources={PLACE: 1})
        await until(lambda: len(engine.hosts) == 3, 60, "the third node's host")
        await until(lambda: engine._live == {1, 2}, 10, "the third host's lease seen")
        assert await hosts_on(engine) == {1: second.node_id, 2: third.node_id}
        moved = {s for s in shards if default_host(s, 3, {1, 2}) == 2}
        await until(lambda: released(rt.hosts[1], moved), 10, "host 1 letting go")
        await every_shard_books(engine, probes, "third")
        assert set((await rt.hosts[2].info.remote())["shards"]) == moved

        # a driver that joins now (an API worker) finds the pool, the retired host as None
        pool = find_pool(rt.settings)
        assert pool[0] is None and pool[1] is not None and pool[2] is not None
        late = Engine(rt.settings, pool)
        for n, s in enumerate(probes):
            outcome = await late.book(s.id, 810_000 + n, f"late-{s.id}")
            assert isinstance(outcome, Booked), outcome
        status = await cluster_status(rt.settings, engine.store)
        assert [h["live"] for h in status["hosts"]] == [False, True, True]
        await late.close()

        # nothing acknowledged lost, no slot twice, retries answered for good
        report = await audit(engine.store)
        check_against_truth(answers, report)
        for a in answers:
            if isinstance(a.outcome, OutcomeUnknown | Unavailable):
                again = await engine.book(
                    a.request.session_id, a.request.patient, a.request.request_id
                )
                assert not isinstance(again, OutcomeUnknown | Unavailable), again
        report = await audit(engine.store)
        assert report.ok, report.problems
        for s in specs:
            assert report.live_per_session[s.id] <= s.capacity
        await engine.close()
    finally:
        rt.stop()


@pytest.mark.timeout(600)
@pytest.mark.unwatched  # it compares request rates: MONITOR would skew them
async def test_rebalance_after_a_node_joins_under_load(
    ray_cluster, redis_server, redis_client, settings_for
):
    """``add_node``, then ``ops rebalance`` in the middle of a crowd on uneven shards: by count
    the hosts end within one shard of each other, by rate the busiest host takes at most 1.5x
    the idlest's requests; nothing is lost or doubled."""
    from click.testing import CliRunner

    from api.cli import main
    from engine.tools.cluster import shard_load

    ray_cluster.add_node(num_cpus=1, resources={PLACE: 2})
    settings = settings_for(
        redis_server.url, hosts_per_node=2, host_resource=PLACE, pool_follow_seconds=0.5
    )
    rt = Runtime.start(settings)
    env = {
        "SLOTENGINE_REDIS_URL": settings.redis_url,
        "SLOTENGINE_NAMESPACE": settings.namespace,
        "SLOTENGINE_HOSTS_PER_NODE": "2",
        "SLOTENGINE_HOST_RESOURCE": PLACE,
        "SLOTENGINE_HOSTS": None,
    }

    def ops(*args: str):
        done = CliRunner().invoke(main, ["ops", *args], env=env)
        assert done.exit_code == 0, done.output
        return done.output

    try:
        engine = rt.engine()
        specs = catalog(hospitals=12, sessions_per_hospital=2, capacity=1000, prefix="rl")
        await create_all(engine, specs)
        ray_cluster.add_node(num_cpus=1, resources={PLACE: 2})
        await until(lambda: len(engine._live or ()) == 4, 60, "the joined node's two hosts")
        assert await engine.store.pool_size() == 4, "two hosts a node, no index lost"
        hot = [s for s in specs if s.hospital_id in {"rlh0", "rlh1", "rlh2"}]
        requests = plan(specs + hot * 3, 120_000, patients=100_000, seed=seed())
        crowd = asyncio.ensure_future(play(engine, requests, 16))
        await asyncio.sleep(1.0)

        print(await asyncio.to_thread(ops, "rebalance", "--by", "count", "--max-moves", "12"))
        status = await cluster_status(rt.settings, engine.store)
        placed = [h["shards_placed"] for h in status["hosts"] if h["live"]]
        assert len(placed) == 4 and max(placed) - min(placed) <= 1, placed

        for _ in range(2):  # a round, and another as an operator would if one is not enough
            print(await asyncio.to_thread(ops, "rebalance", "--by", "rate", "--seconds", "1"))
        load = await shard_load(rt.settings, 2.0)
        assert not crowd.done(), "measured under the crowd"
        per_host: dict[int, float] = {}
        for index, rate in load.values():
            per_host[index] = per_host.get(index, 0.0) + rate
        print("requests/s per host:", {i: round(r) for i, r in sorted(per_host.items())})
        assert len(per_host) == 4 and max(per_host.values()) <= 1.5 * min(per_host.values())

        answers = await crowd
        report = await audit(engine.store)
        check_against_truth(answers, report)
        kinds = {type(a.outcome).__name__ for a in answers}
        assert not kinds & {"Unavailable", "OutcomeUnknown"}, "no handoff failed a booking"
        for s in specs:
            assert report.live_per_session[s.id] <= s.capacity
        await engine.close()
    finally:
        rt.stop()
