"""``slotengine ops`` against a real pool on the local Ray cluster and the real Redis."""

from __future__ import annotations

import asyncio
import json

import ray
from click.testing import CliRunner

from api.cli import main
from engine.outcomes import Booked
from engine.tools.cluster import shard_load
from engine.tools.crowd import catalog
from tests.engine.actors.test_host import create_all


def env_of(runtime) -> dict[str, str]:
    s = runtime.settings
    return {
        "SLOTENGINE_REDIS_URL": s.redis_url,
        "SLOTENGINE_NAMESPACE": s.namespace,
        "SLOTENGINE_HOSTS": str(s.hosts),
        "SLOTENGINE_REDIS_CLUSTER": "1" if s.redis_cluster else "",
    }


def run(runtime, work):
    """``work(engine)`` on a fresh engine, in an event loop of its own (the commands run
    theirs with ``asyncio.run``, so these tests are not coroutines)."""

    async def go():
        engine = runtime.engine()
        try:
            return await work(engine)
        finally:
            await engine.close()

    return asyncio.run(go())


def test_status_shows_every_host_its_lease_and_its_shards(runtime):
    specs = catalog(hospitals=4, sessions_per_hospital=1, capacity=5, prefix="ops")

    async def prepare(engine):
        await create_all(engine, specs)
        for k, s in enumerate(specs):
            assert isinstance(await engine.book(s.id, k, f"r{k}"), Booked)

    run(runtime, prepare)
    done = CliRunner().invoke(main, ["ops", "status", "--json"], env=env_of(runtime))
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert [h["index"] for h in data["hosts"]] == [0, 1]
    assert all(h["live"] and 0 < h["lease_left_seconds"] <= 1.5 for h in data["hosts"])
    assert data["shards"] == 4
    assert sum(h["shards_placed"] for h in data["hosts"]) == 4
    loaded = {s for h in data["hosts"] for s in h["epochs"]}
    assert loaded == {s.shard_id for s in specs}, "each shard loaded on exactly its host"
    assert sum(h["requests"] for h in data["hosts"]) >= 8  # 4 creates, 4 bookings
    assert any(n["alive"] and n["host_places"] > 0 for n in data["nodes"])
    table = CliRunner().invoke(main, ["ops", "status"], env=env_of(runtime))
    assert table.exit_code == 0 and "host  live" in table.output


def test_place_hands_a_shard_over_and_bookings_follow(runtime):
    [spec] = catalog(hospitals=1, sessions_per_hospital=1, capacity=5, prefix="opp")

    async def prepare(engine):
        await create_all(engine, [spec])
        assert isinstance(await engine.book(spec.id, 1, "a"), Booked)
        return engine.host_of(spec.shard_id)

    old = run(runtime, prepare)
    new = 1 - old
    done = CliRunner().invoke(main, ["ops", "place", spec.shard_id, str(new)], env=env_of(runtime))
    assert done.exit_code == 0, done.output
    assert f"is on host {new}" in done.output
    infos = ray.get([h.info.remote() for h in runtime.hosts], timeout=30)
    assert spec.shard_id not in infos[old]["shards"], "the old host released it"

    async def book_again(engine):
        assert isinstance(await engine.book(spec.id, 2, "b"), Booked)
        return engine.host_of(spec.shard_id)

    assert run(runtime, book_again) == new
    infos = ray.get([h.info.remote() for h in runtime.hosts], timeout=30)
    assert spec.shard_id in infos[new]["shards"]
    bad = CliRunner().invoke(main, ["ops", "place", spec.shard_id, "7"], env=env_of(runtime))
    assert bad.exit_code == 2 and "HOST is 0..1" in bad.output


def test_rebalance_by_count_evens_the_hosts_out_and_bookings_go_on(runtime):
    specs = catalog(hospitals=6, sessions_per_hospital=1, capacity=5, prefix="rb")

    async def pile_up(engine):
        await create_all(engine, specs)
        for s in specs:  # everything on host 0
            await engine.move(s.shard_id, 0)
            assert isinstance(await engine.book(s.id, 1, "a"), Booked)

    run(runtime, pile_up)
    done = CliRunner().invoke(main, ["ops", "rebalance", "--by", "count"], env=env_of(runtime))
    assert done.exit_code == 0, done.output
    assert "3 moves (count)" in done.output, done.output
    status = json.loads(
        CliRunner().invoke(main, ["ops", "status", "--json"], env=env_of(runtime)).output
    )
    placed = [h["shards_placed"] for h in status["hosts"]]
    assert placed == [3, 3], placed

    async def book_everywhere(engine):
        return [await engine.book(s.id, 2, "b") for s in specs]

    assert all(isinstance(o, Booked) for o in run(runtime, book_everywhere))


async def test_hot_ranks_the_shard_with_the_most_requests_first(runtime):
    engine = runtime.engine()
    specs = catalog(hospitals=3, sessions_per_hospital=1, capacity=5, prefix="hot")
    await create_all(engine, specs)
    hot_spec = specs[1]

    async def traffic():
        for n in range(150):  # sold out after 5: the refusals count as requests too
            await engine.book(hot_spec.id, 10 + n, f"h{n}")
        for s in (specs[0], specs[2]):
            await engine.book(s.id, 1, "once")

    _, load = await asyncio.gather(traffic(), shard_load(runtime.settings, 1.0))
    ranked = sorted(load, key=lambda shard: -load[shard][1])
    assert ranked[0] == hot_spec.shard_id
    assert load[hot_spec.shard_id][1] > 10 * max(load[s][1] for s in ranked[1:])
    await engine.close()
