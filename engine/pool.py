"""The pool of host actors on Ray, and where each shard lives.

Hosts are started up front (about one per core; an actor is a whole process, ~48 MB and 1–2 s
to start here), named ``<namespace>-host-<i>`` so every driver finds them. A shard's host is
its pinned index in Redis' placement map, else a stable hash of the shard id.
"""

from __future__ import annotations

import zlib

import ray
from ray.actor import ActorHandle

from .host import Host
from .settings import Settings

RemoteHost = ray.remote(Host)


def host_name(settings: Settings, index: int) -> str:
    return f"{settings.namespace}-host-{index}"


def default_host(shard_id: str, hosts: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    return zlib.crc32(shard_id.encode()) % hosts


def start_pool(settings: Settings) -> list[ActorHandle]:
    """Start (or find, if already running) every host actor of the pool and wait until ready.

    ``max_restarts=-1``: Ray restarts a dead host forever; the new incarnation reloads each
    shard from Redis before it decides anything for it. ``max_task_retries``: a batch in
    flight when its host died is retried once on the new incarnation; requests are idempotent,
    so a retried booking gets the same slot, never a second one.
    """
    handles = [
        RemoteHost.options(  # type: ignore[attr-defined]
            name=host_name(settings, i),
            namespace=settings.namespace,
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=1,
            num_cpus=settings.host_cpus,
            scheduling_strategy="SPREAD",
        ).remote(i, settings)
        for i in range(settings.hosts)
    ]
    ray.get([h.info.remote() for h in handles])
    return handles


def find_pool(settings: Settings) -> list[ActorHandle]:
    """Handles of a running pool (for a driver that did not start it)."""
    return [
        ray.get_actor(host_name(settings, i), namespace=settings.namespace)
        for i in range(settings.hosts)
    ]


def stop_pool(handles: list[ActorHandle]) -> None:
    for handle in handles:
        ray.kill(handle, no_restart=True)
