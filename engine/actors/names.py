"""The actors' names and how any driver finds them (``<namespace>-host-<i>`` and so on).

Kept apart from ``pool.py`` (which wraps the classes with ``ray.remote`` and starts them) so
that a driver, the courier or the API can find actors without loading the actor classes.
"""

from __future__ import annotations

import ray
from ray.actor import ActorHandle

from engine.settings import Settings


def host_name(settings: Settings, index: int) -> str:
    return f"{settings.namespace}-host-{index}"


def courier_name(settings: Settings, partition: int = 0) -> str:
    suffix = f"-{partition}" if partition else ""  # courier 0 keeps the name it always had
    return f"{settings.namespace}-courier{suffix}"


def dispatcher_name(settings: Settings) -> str:
    return f"{settings.namespace}-dispatcher"


def pool_size(settings: Settings) -> int:
    """How many host indices the pool has: ``hosts`` for a fixed pool; for one that follows
    the nodes, as numbered in Redis by the pool's follower (some retired with their node)."""
    if not settings.follows_nodes:
        return settings.hosts
    from engine.store.connect import sync_client
    from engine.store.keys import Keys

    assert settings.redis_url is not None, "resolve the Redis URL first (see runtime.py)"
    client = sync_client(
        settings.redis_url, cluster=settings.redis_cluster, timeout=settings.redis_timeout
    )
    try:
        return int(client.get(Keys(settings.namespace).pool_size) or 0)
    finally:
        client.close()


def find_pool(settings: Settings) -> list[ActorHandle | None]:
    """Handles of a running pool (for a driver that did not start it), by host index; in a
    pool that follows the nodes, None for a host retired with its node."""
    return [find_host(settings, i) for i in range(pool_size(settings))]


def find_host(settings: Settings, index: int) -> ActorHandle | None:
    try:
        return ray.get_actor(host_name(settings, index), namespace=settings.namespace)
    except ValueError:  # no such actor (any more)
        if not settings.follows_nodes:
            raise
        return None


def find_courier(settings: Settings, partition: int = 0) -> ActorHandle:
    """A courier that carries the outbox out (started with the pool; 0 also reconciles the
    payments and indexes the records)."""
    return ray.get_actor(courier_name(settings, partition), namespace=settings.namespace)


def find_couriers(settings: Settings) -> list[ActorHandle]:
    """Every courier (``SLOTENGINE_COURIERS``), by partition."""
    return [find_courier(settings, p) for p in range(settings.couriers)]


def find_dispatcher(settings: Settings) -> ActorHandle:
    return ray.get_actor(dispatcher_name(settings), namespace=settings.namespace)
