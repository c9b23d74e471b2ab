"""Bring the engine up: Redis (embedded unless configured), Ray (local unless configured), pool.

    with Runtime.start(Settings.from_env()) as rt:
        engine = rt.engine()          # inside an event loop
        ...

``Runtime.start`` is what ``slotengine demo``, the tests and the benchmarks use; the API
workers join a running runtime with ``find_pool``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

import ray
from ray.actor import ActorHandle

from engine.actors.pool import (
    PoolFollower,
    start_couriers,
    start_dispatcher,
    start_pool,
    stop_pool,
)
from engine.client import Engine
from engine.errors import DurabilityError
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis, private_dir
from engine.store.layout import run_steps
from engine.store.local_cluster import LocalCluster
from engine.store.shards import Store

log = logging.getLogger(__name__)


def init_ray(settings: Settings) -> bool:
    """Join ``ray_address`` or start a small local Ray (no dashboard). True if we started it."""
    if ray.is_initialized():
        return False
    if settings.ray_address:
        ray.init(address=settings.ray_address, namespace=settings.namespace, log_to_driver=False)
        return False
    cpus = max(2, int(local_hosts(settings) * settings.host_cpus + 0.999))
    ray.init(
        address="local",  # our own, never a stale cluster a file in /tmp/ray points at
        num_cpus=cpus,
        resources=host_places(settings),
        include_dashboard=False,
        namespace=settings.namespace,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def local_hosts(settings: Settings) -> int:
    """How many hosts a local Ray (one node) carries."""
    return settings.hosts_per_node if settings.follows_nodes else settings.hosts


def host_places(settings: Settings) -> dict[str, float]:
    """The host resource a local Ray offers: a place for every host of the pool."""
    places = float(local_hosts(settings))
    return {settings.host_resource: places} if settings.host_resource else {}


def prepare_store(settings: Settings) -> None:
    """Before any actor starts: the stored data in the current layout (``store/layout.py``),
    and the durability asked for one this Redis can keep (else ``DurabilityError``)."""
    assert settings.redis_url is not None

    async def run() -> str | None:
        store = Store.of(settings, settings.redis_timeout * 5)
        try:
            await run_steps(store.client, store.keys)
            return await store.durability_problem(settings.durability)
        finally:
            await store.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # whether a loop runs here or not
        problem = pool.submit(asyncio.run, run()).result()
    if problem is not None:
        raise DurabilityError(problem)


class Runtime:
    """Everything this process started, and how to stop it again."""

    def __init__(
        self,
        settings: Settings,
        hosts: list[ActorHandle | None],
        redis: EmbeddedRedis | LocalCluster | None,
        owns_ray: bool,
        follower: PoolFollower | None = None,
    ) -> None:
        self.settings = settings
        self._hosts = hosts
        self.follower = follower  # a pool that follows the nodes (else a fixed one)
        self.redis = redis
        self.owns_ray = owns_ray
        self.couriers: list[ActorHandle] = []  # carry the outbox out (see courier.py)
        self.dispatcher: ActorHandle | None = None  # HIS deliveries (see delivery.py)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        redis: EmbeddedRedis | LocalCluster | None = None
        if settings.redis_url is None:
            private_dir(settings.data_dir)  # it will hold the Redis data and its password
            if settings.redis_cluster:  # 3 masters and 3 replicas of this machine's own
                redis = LocalCluster(
                    settings.data_dir / "redis-cluster", appendfsync=settings.redis_appendfsync
                ).start()
            else:
                redis = EmbeddedRedis(
                    settings.data_dir / "redis", appendfsync=settings.redis_appendfsync
                ).start()
            settings = settings.model_copy(update={"redis_url": redis.url})
            log.info("embedded Redis at %s (data in %s)", redis.url, redis.data_dir)
        follower = None
        try:
            prepare_store(settings)
            owns_ray = init_ray(settings)
            if settings.follows_nodes:
                follower = PoolFollower(settings, fresh=owns_ray)
                hosts = follower.start().handles
            else:
                hosts = start_pool(settings)
            couriers = start_couriers(settings)
            dispatcher = start_dispatcher(settings)
        except BaseException:
            if follower is not None:
                follower.stop()
                stop_pool(follower.handles)
            if redis is not None:
                redis.stop()
            raise
        runtime = cls(settings, hosts, redis, owns_ray, follower)
        runtime.couriers = couriers
        runtime.dispatcher = dispatcher
        return runtime

    @property
    def courier(self) -> ActorHandle:
        """Courier 0: it also reconciles the payments and indexes the records."""
        return self.couriers[0]

    @property
    def hosts(self) -> list[ActorHandle | None]:
        """The pool's hosts by index (None: retired with its node); a pool that follows the
        nodes grows as nodes join."""
        return self.follower.handles if self.follower is not None else self._hosts

    def engine(self, *, batched: bool = True) -> Engine:
        """A client for this runtime; build it inside the event loop that will use it."""
        return Engine(self.settings, self.hosts, batched=batched)

    def stop(self) -> None:
        try:
            if self.follower is not None:
                self.follower.stop()
            stop_pool(self.hosts, self.settings)
        finally:
            if self.owns_ray:
                ray.shutdown()
            if self.redis is not None:
                self.redis.stop()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
