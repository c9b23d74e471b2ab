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


def courier_name(settings: Settings) -> str:
    return f"{settings.namespace}-courier"


def dispatcher_name(settings: Settings) -> str:
    return f"{settings.namespace}-dispatcher"


def find_pool(settings: Settings) -> list[ActorHandle]:
    """Handles of a running pool (for a driver that did not start it)."""
    return [
        ray.get_actor(host_name(settings, i), namespace=settings.namespace)
        for i in range(settings.hosts)
    ]


def find_courier(settings: Settings) -> ActorHandle:
    """The courier that carries the outbox out (started with the pool)."""
    return ray.get_actor(courier_name(settings), namespace=settings.namespace)


def find_dispatcher(settings: Settings) -> ActorHandle:
    return ray.get_actor(dispatcher_name(settings), namespace=settings.namespace)
