"""Real services for the tests: one embedded Redis and one small local Ray per session."""

from __future__ import annotations

import itertools
import os
import time

import pytest
import ray
import redis.asyncio as aioredis

from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis

_names = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def redis_client(redis_server):
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray cluster started once for the whole run (2 cores here: keep it small): a
    head node with every test's CPUs and host places; multi-node tests add worker nodes to it
    (``ray_cluster``) with host places of their own resource, so their pools land only there.
    """
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "resources": {"slot_host": 64},  # places for every pool the tests start
            "include_dashboard": False,
            "object_store_memory": 200 << 20,
        },
    )
    ray.init(address=cluster.address, namespace="tests", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ray_cluster(ray_local):
    """The session's cluster, for tests that add (and kill) worker nodes; the nodes a test
    added are removed after it, whatever happened."""
    before = set(ray_local.worker_nodes)
    yield ray_local
    for node in set(ray_local.worker_nodes) - before:  # graceful: Ray knows at once
        ray_local.remove_node(node, allow_graceful=True)
    # a node a test killed outright stays "alive" in Ray's table until its death is declared
    # (~15 s): wait for it, so that no later test's actor is placed on it
    keep = {ray_local.head_node.node_id} | {n.node_id for n in ray_local.worker_nodes}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not {n["NodeID"] for n in ray.nodes() if n["Alive"]} - keep:
            break
        time.sleep(0.5)


@pytest.fixture
def settings_for(tmp_path):
    def make(redis_url: str, **kw) -> Settings:
        base = dict(
            redis_url=redis_url,
            hosts=2,
            host_cpus=0.5,
            data_dir=tmp_path,
            namespace=f"t{next(_names)}",
            tick_seconds=0.2,
            redis_timeout=1.0,
            movable_clock=True,  # tests move the one clock (never on in production)
            his_allow_networks=("127.0.0.0/8",),  # the simulated HIS runs on loopback
        )
        if kw.get("hosts_per_node"):  # a pool that follows the nodes has no fixed size
            del base["hosts"]
        base.update(kw)
        return Settings.from_env({}, **base)

    return make


@pytest.fixture
def runtime(ray_local, redis_server, redis_client, settings_for):
    """A fresh host pool (its own namespace) on the shared Ray and Redis."""
    rt = Runtime.start(settings_for(redis_server.url))
    yield rt
    rt.stop()


@pytest.fixture
def slow_timers(ray_local, redis_server, redis_client, settings_for):
    """A pool whose timers stay quiet for the test: a host keeps a moved shard in memory
    (no tick drops it), so only a handoff or the epoch decides what happens to it."""
    rt = Runtime.start(settings_for(redis_server.url, tick_seconds=60))
    yield rt
    rt.stop()
