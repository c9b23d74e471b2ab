"""The pool of actors on Ray: the ``ray.remote`` wrappers of the host, courier and dispatcher
classes, and their start and stop. Imported only by ``runtime.py`` (and the tests that start
actors by hand): everything else finds the actors by name (``names.py``).

Hosts are started up front (about one per core; an actor is a whole process, ~48 MB and 1–2 s
to start here), named ``<namespace>-host-<i>`` so every driver finds them. Where each shard
lives is ``core/placement.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import ray
from ray.actor import ActorHandle

from engine.actors.courier import Courier
from engine.actors.dispatcher import Dispatcher
from engine.actors.host import Host
from engine.actors.names import (
    courier_name,
    dispatcher_name,
    find_courier,
    find_dispatcher,
    host_name,
)
from engine.settings import Settings

START_SECONDS = 120  # an actor Ray cannot place (no CPU left) fails the start, never hangs it
RemoteHost = ray.remote(Host)
RemoteCourier = ray.remote(Courier)
RemoteDispatcher = ray.remote(Dispatcher)


def start_pool(settings: Settings) -> list[ActorHandle]:
    """Start (or find, if already running) every host actor of the pool and wait until ready.

    ``max_restarts=-1``: Ray restarts a dead host forever; the new incarnation reloads each
    shard from Redis before it decides anything for it. ``max_task_retries``: a batch in
    flight when its host died is retried once on the new incarnation; requests are idempotent,
    so a retried booking gets the same slot, never a second one.
    """
    check_places(settings)
    handles = [
        RemoteHost.options(  # type: ignore[attr-defined]
            name=host_name(settings, i),
            namespace=settings.namespace,
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=1,
            num_cpus=settings.host_cpus,
            resources={settings.host_resource: 1} if settings.host_resource else None,
            scheduling_strategy="SPREAD",
        ).remote(i, settings)
        for i in range(settings.hosts)
    ]
    ray.get([h.info.remote() for h in handles], timeout=START_SECONDS)  # no hang: a clear error
    return handles


def check_places(settings: Settings) -> None:
    """Refuse at once, saying what to do, when the cluster cannot place the pool's hosts
    (rather than wait for Ray to place them until the start's deadline)."""
    if not settings.host_resource:
        return
    offered = ray.cluster_resources().get(settings.host_resource, 0)
    if offered < settings.hosts:
        raise PoolError(
            f"the Ray cluster offers {offered:g} {settings.host_resource!r} places and the pool "
            f"has {settings.hosts} hosts (SLOTENGINE_HOSTS): start the worker nodes with "
            f"--resources='{{\"{settings.host_resource}\": N}}' (see ray_cluster.yaml), or "
            f"set SLOTENGINE_HOSTS to at most {offered:g}"
        )


class PoolError(RuntimeError):
    """The pool cannot start as configured (the message says why and what to change)."""


def start_courier(settings: Settings) -> ActorHandle:
    """Start (or find) the courier. Keep the handle: a named actor lives while it is held."""
    return _start_single(RemoteCourier, courier_name(settings), settings)


def start_dispatcher(settings: Settings) -> ActorHandle:
    """Start (or find) the dispatcher of HIS deliveries (``backoffice/deliveries.py``)."""
    return _start_single(RemoteDispatcher, dispatcher_name(settings), settings)


def _start_single(remote: Any, name: str, settings: Settings) -> ActorHandle:
    """Start (or find) a named actor of which the namespace has one, restarted for ever and
    using no CPU of its own; answer once it answers ``info``."""
    actor = remote.options(
        name=name,
        namespace=settings.namespace,
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
    ).remote(settings)
    ray.get(actor.info.remote(), timeout=START_SECONDS)
    return actor


def stop_pool(handles: list[ActorHandle], settings: Settings | None = None) -> None:
    for handle in handles:
        ray.kill(handle, no_restart=True)
    if settings is not None:
        with contextlib.suppress(ValueError):  # never started
            ray.kill(find_courier(settings), no_restart=True)
        with contextlib.suppress(ValueError):
            ray.kill(find_dispatcher(settings), no_restart=True)
