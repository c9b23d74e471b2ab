"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): host actors
only on the worker nodes, and a worker node killed outright in the middle of a crowd.

The pool uses a host resource only the added nodes offer (one place each), so the killed
node's host cannot be restarted anywhere: only the leases can bring its shards back, on the
surviving host. Every answer is checked against the truth in Redis by the auditor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections import Counter

import pytest

from engine.outcomes import Booked, OutcomeUnknown, Unavailable
from engine.runtime import Runtime
from engine.store.outbox import Outbox
from engine.tools.audit import audit
from engine.tools.cluster import drain
from engine.tools.crowd import catalog, plan, play
from tests.engine.actors.test_host import check_against_truth, create_all, seed

pytestmark = pytest.mark.multinode

PLACE = "mn_host"  # offered only by the nodes these tests add


@pytest.fixture
def two_nodes(ray_cluster, redis_server, redis_client, settings_for):
    """Two worker nodes of one host place each, and a pool of two hosts on them."""
    nodes = [ray_cluster.add_node(num_cpus=1, resources={PLACE: 1}) for _ in range(2)]
    settings = settings_for(redis_server.url, hosts=2, host_resource=PLACE)
    rt = Runtime.start(settings)
    yield rt, nodes
    rt.stop()


async def node_of_hosts(engine, hosts: int) -> dict[int, str]:
    leases = await engine.store.leases(hosts)
    return {index: holder["node_id"] for index, (holder, _) in leases.items()}


@pytest.mark.timeout(600)
async def test_a_killed_node_s_shards_serve_again_on_the_survivor(two_nodes, ray_cluster):
    rt, nodes = two_nodes
    engine = rt.engine()
    on = await node_of_hosts(engine, 2)
    assert sorted(on.values()) == sorted(n.node_id for n in nodes), "hosts only on workers"
    assert ray_cluster.head_node.node_id not in on.values()

    specs = catalog(hospitals=6, sessions_per_hospital=4, capacity=30, prefix="fo")
    probes = catalog(hospitals=6, sessions_per_hospital=1, capacity=1000, prefix="fo")
    probes = [dataclasses.replace(p, id=f"probe-{p.hospital_id}") for p in probes]
    await create_all(engine, specs + probes)
    shards = sorted({s.shard_id for s in specs})
    victim_index = next(i for i, node_id in on.items() if node_id == nodes[0].node_id)
    victims = [s for s in shards if engine.host_of(s) == victim_index]
    assert victims, "the killed node carries shards"
    head = ray_cluster.head_node.node_id
    assert await asyncio.wait_for(rt.courier.node.remote(), 10) == head, "courier on the head"
    assert await asyncio.wait_for(rt.dispatcher.node.remote(), 10) == head

    requests = plan(specs, 30_000, patients=4_000, seed=seed())
    crowd = asyncio.ensure_future(play(engine, requests, 16))
    await asyncio.sleep(0.5)
    assert not crowd.done(), "the node dies in the middle of the crowd"
    victim_pid = (await engine.store.leases(2))[victim_index][0]["pid"]
    killed_at = time.monotonic()
    ray_cluster.remove_node(nodes[0], allow_graceful=False)
    with contextlib.suppress(ProcessLookupError):  # its processes die with it, as on a machine
        os.kill(victim_pid, signal.SIGKILL)

    async def serving_again(probe) -> float:
        """Seconds from the kill to the first booking on this shard after it."""
        n = 0
        while True:
            n += 1
            outcome = await engine.book(probe.id, 900_000 + n, f"probe-{probe.id}-{n}")
            if isinstance(outcome, Booked):
                return time.monotonic() - killed_at
            assert time.monotonic() - killed_at < 60, f"{probe.shard_id} never served again"
            await asyncio.sleep(0.05)

    back = await asyncio.gather(*(serving_again(p) for p in probes))
    # the courier and the dispatcher live on the head: the worker's loss never took them
    assert await asyncio.wait_for(rt.courier.node.remote(), 10) == head
    assert await asyncio.wait_for(rt.dispatcher.node.remote(), 10) == head
    answers = await crowd
    worst = max(back)
    print(
        f"every shard booking again {worst:.1f} s after the kill (per shard: "
        f"{', '.join(f'{b:.1f}' for b in back)}); rerouted {engine.rerouted}"
    )
    assert worst < 20, "within the lease budget (1.5 s) and a generous margin on 2 cores"

    kinds = Counter(type(a.outcome).__name__ for a in answers)
    print("outcomes:", dict(kinds))
    report = await audit(engine.store)
    check_against_truth([a for a in answers], report)
    # a request answered outcome_unknown or unavailable, retried with its id, is answered
    retried = [a for a in answers if isinstance(a.outcome, OutcomeUnknown | Unavailable)]
    for a in retried:
        again = await engine.book(a.request.session_id, a.request.patient, a.request.request_id)
        assert not isinstance(again, OutcomeUnknown | Unavailable), again
    # every route answers: the killed host's sessions are listed by the survivor
    for s in specs:
        if s.shard_id in victims:
            listed = await asyncio.wait_for(engine.session_bookings(s.id), 15)
            assert listed.session_id == s.id
    report = await audit(engine.store)
    assert report.ok, report.problems
    for s in specs:
        assert report.live_per_session[s.id] <= s.capacity
    # and the courier carries the whole crowd's outbox out, through the worker's loss
    await asyncio.wait_for(engine.drain_outbox(), 60)
    assert await Outbox(engine.store.client, engine.store.keys).backlog() == 0
    await engine.close()


@pytest.mark.timeout(600)
async def test_a_drained_node_is_removed_without_failing_a_booking(two_nodes, ray_cluster):
    rt, nodes = two_nodes
    engine, stale = rt.engine(), rt.engine()
    specs = catalog(hospitals=6, sessions_per_hospital=4, capacity=30, prefix="dr")
    await create_all(engine, specs)
    on = await node_of_hosts(engine, 2)
    drained = next(i for i, node_id in on.items() if node_id == nodes[0].node_id)
    assert any(engine.host_of(s.shard_id) == drained for s in specs), "it carries shards"

    requests = plan(specs, 30_000, patients=4_000, seed=seed())
    crowd = asyncio.ensure_future(
        asyncio.gather(play(engine, requests[::2], 8), play(stale, requests[1::2], 8))
    )
    await asyncio.sleep(0.5)
    assert not crowd.done(), "drained in the middle of the crowd"
    done = await drain(rt.settings, engine.store, nodes[0].node_id)
    # released now, or already by the host's own tick once the directory said so
    assert done["hosts"] == [drained] and isinstance(done["released"][drained], int)
    info = await rt.hosts[drained].info.remote()
    assert info["shards"] == [], "the drained host carries nothing"
    await asyncio.sleep(0.5)
    ray_cluster.remove_node(nodes[0], allow_graceful=True)
    answers = [a for share in await crowd for a in share]

    kinds = Counter(type(a.outcome).__name__ for a in answers)
    print("outcomes:", dict(kinds), "resends:", engine.resends + stale.resends)
    assert kinds["Unavailable"] == kinds["OutcomeUnknown"] == 0, "no failed booking"
    for s in specs:  # and after: every shard books on the host that is left
        assert not isinstance(
            await engine.book(s.id, 990_000, f"after-{s.id}"), OutcomeUnknown | Unavailable
        )
    report = await audit(engine.store)
    check_against_truth(answers, report)
    assert report.booked == 30 * len(specs)
    await engine.store.drain(nodes[0].node_id, on=False)
    for e in (engine, stale):
        await e.close()
