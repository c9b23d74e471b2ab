"""Clients of the store, for one Redis or a Redis Cluster (``SLOTENGINE_REDIS_CLUSTER``).

Every process makes its clients here, so both modes take one code path: redis-py's
``Redis`` or its ``RedisCluster`` (which routes each command, pipeline and transaction by its
keys' slot and follows ``MOVED`` and ``ASK``). Neither resends a command after a lost
connection (redis-py would, three to ten times by default): a write resent blindly could run
twice, and a caller must learn what happened, not guess (``shards.py``).

What the cluster client cannot do for us — a pipeline per node ending in that connection's
own ``WAITAOF``, a probe write on each master — goes through ``on_node`` and ``masters``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import DataError, RedisClusterException, RedisError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

AsyncClient = aioredis.Redis | aioredis.RedisCluster
SyncClient = redis.Redis | redis.RedisCluster


def async_client(
    url: str, *, cluster: bool = False, timeout: float = 2.0, connections: int = 64
) -> AsyncClient:
    """An asyncio client whose callers wait (up to ``timeout``) for one of ``connections``
    connections (per node, on a cluster) rather than fail when a crowd arrives at once."""
    if cluster:
        return _Cluster.from_url(
            url,
            max_connections=connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=AsyncRetry(NoBackoff(), 0),
            health_check_interval=0,
            protocol=2,  # as the single-node client; RESP3 buys nothing here
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=0,
        retry_on_timeout=False,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    pool.connection_class = packed_by_hiredis(pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


def packed_by_hiredis(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (TCP, TLS or Unix socket) with its commands packed by hiredis, in
    C, as redis-py's synchronous client packs them; its asyncio client packs them in Python,
    about a microsecond an argument, and a commit has a hundred (its host's largest cost)."""
    if not HIREDIS_AVAILABLE:
        return connection_class

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        name = args[0]  # a command of two words ("SCRIPT LOAD") goes as two arguments
        if " " in name if isinstance(name, str) else b" " in name:
            args = (*name.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # as redis-py says it
            raise DataError(str(exc)) from exc

    return type(
        f"Packed{connection_class.__name__}", (connection_class,), {"pack_command": pack_command}
    )


class _Cluster(aioredis.RedisCluster):
    """redis-py's cluster client, with two fixes for a crowd:

    - it learns the slots before a first command is even routed: commands sent at once to a
      client not yet initialized are routed before it knows the nodes, and the connection
      errors that follow (hidden by its retries, which we turn off) make it start over,
      closing the connections of the others;
    - callers wait for a connection, as the single-node client's ``BlockingConnectionPool``
      has them do, instead of failing with ``MaxConnectionsError`` once ``max_connections``
      commands are in flight on one node: at most that many commands and pipelines run at
      once (each takes at most one connection of a node)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = asyncio.Semaphore(kwargs.get("max_connections", 100))

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self._gate:
            if self._initialize:
                await self.initialize()
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute, gate = pipe.execute, self._gate

        async def gated(*args: Any, **kwargs: Any) -> Any:
            async with gate:
                if self._initialize:
                    await self.initialize()
                return await execute(*args, **kwargs)

        pipe.execute = gated
        return pipe


def sync_client(url: str, *, cluster: bool = False, timeout: float = 2.0) -> SyncClient:
    """A blocking client (the leases' thread, the pool's bookkeeping, the name registry)."""
    if cluster:
        return redis.RedisCluster.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


def is_cluster(client: Any) -> bool:
    return isinstance(client, aioredis.RedisCluster | redis.RedisCluster)


async def close(client: AsyncClient) -> None:
    await client.aclose()
    if not is_cluster(client):
        await client.connection_pool.disconnect()


async def masters(client: aioredis.RedisCluster) -> list[ClusterNode]:
    """The cluster's masters as the client knows them (after a first command)."""
    if client._initialize:  # redis-py initializes on the first command
        await client.initialize()
    return client.get_primaries()


def node_of(client: aioredis.RedisCluster, key: str | bytes) -> ClusterNode:
    """The master that serves ``key``'s slot, as the client last learned."""
    return client.nodes_manager.get_node_from_slot(key_slot(_bytes(key)))


def probe_key(client: aioredis.RedisCluster, node: ClusterNode, prefix: str) -> str:
    """A key of ``prefix`` whose slot ``node`` serves (for a write to wait on)."""
    slots = client.nodes_manager.slots_cache
    for i in range(100_000):
        key = f"{prefix}:{{p{i}}}"
        owners = slots.get(key_slot(key.encode()))
        if owners and owners[0].name == node.name:
            return key
    raise LookupError(f"no slot of {node.name} found")


async def on_node(node: ClusterNode, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Send ``commands`` to ``node`` as one pipeline on one connection (so a ``WAITAOF`` at
    its end waits for the writes before it, and an ``ASKING`` applies to the command after
    it); each command's reply, an exception instance for one that failed. A lost connection
    raises (``ConnectionError`` / ``TimeoutError``): what ran is then unknown."""
    queued = [PipelineCommand(i, *command) for i, command in enumerate(commands)]
    await node.execute_pipeline(queued)
    return [c.result for c in queued]


async def on_nodes(
    plans: dict[str, tuple[ClusterNode, list[Sequence[Any]]]],
) -> dict[str, list[Any] | BaseException]:
    """``on_node`` for several nodes at once; per node its replies or what the round trip
    raised."""
    names = list(plans)
    results = await asyncio.gather(*(on_node(*plans[n]) for n in names), return_exceptions=True)
    return dict(zip(names, results, strict=True))


def _bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


# What a Redis call can raise that means the store failed: redis-py's errors, and on a cluster
# also its client-side ones (no node serves a slot during a failover, the cluster unreachable),
# which redis-py does not derive from ``RedisError``.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException)
