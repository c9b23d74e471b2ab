"""The pool of actors on Ray: the ``ray.remote`` wrappers of the host, courier and dispatcher
classes, and their start and stop. Imported only by ``runtime.py`` (and the tests that start
actors by hand): everything else finds the actors by name (``names.py``).

Hosts are named ``<namespace>-host-<i>`` so every driver finds them; an actor is a whole
process (~48 MB and 1–2 s to start here). A fixed pool (``SLOTENGINE_HOSTS``) is started up
front and spread over the nodes offering host places. A pool that follows the nodes
(``SLOTENGINE_HOSTS_PER_NODE``) is kept by a ``PoolFollower``: N hosts bound to each node
offering places, started when the node joins, retired when Ray declares it dead (its shards
moved long before, when the hosts' leases lapsed). Indices are never reused: a host index
names one node's host for good, so no driver can hold a handle that silently means another
actor. Where each shard lives is ``core/placement.py``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from engine.actors.courier import Courier
from engine.actors.dispatcher import Dispatcher
from engine.actors.host import Host
from engine.actors.names import (
    courier_name,
    dispatcher_name,
    find_courier,
    find_dispatcher,
    find_host,
    host_name,
)
from engine.settings import Settings
from engine.store.connect import sync_client
from engine.store.keys import Keys

log = logging.getLogger(__name__)

START_SECONDS = 120  # an actor Ray cannot place (no CPU left) fails the start, never hangs it
JOIN_SECONDS = 60  # the follower's wait for hosts started on a node that joined
STOP_SECONDS = 2.0  # the longest the follower's stop waits for its thread
HEAD = "node:__internal_head__"  # the resource only Ray's head node offers
REFUSED_SECONDS = 30.0  # a node that could not take a host is not asked again for this long
# (a node killed outright stays "alive" in Ray's table until its death is declared, ~15 s)
RemoteHost = ray.remote(Host)
RemoteCourier = ray.remote(Courier)
RemoteDispatcher = ray.remote(Dispatcher)


def start_pool(settings: Settings) -> list[ActorHandle | None]:
    """Start (or find, if already running) every host actor of the pool and wait until ready.

    ``max_restarts=-1``: Ray restarts a dead host forever; the new incarnation reloads each
    shard from Redis before it decides anything for it. ``max_task_retries``: a batch in
    flight when its host died is retried once on the new incarnation; requests are idempotent,
    so a retried booking gets the same slot, never a second one.
    """
    if settings.follows_nodes:
        raise PoolError("a pool that follows the nodes is started with PoolFollower")
    check_places(settings)
    handles: list[ActorHandle | None] = [
        _host_options(settings, i, scheduling_strategy="SPREAD").remote(i, settings)
        for i in range(settings.hosts)
    ]
    ray.get([h.info.remote() for h in handles], timeout=START_SECONDS)  # no hang: a clear error
    return handles


def _host_options(settings: Settings, index: int, **placement: Any) -> Any:
    return RemoteHost.options(  # type: ignore[attr-defined]
        name=host_name(settings, index),
        namespace=settings.namespace,
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=1,
        num_cpus=settings.host_cpus,
        resources={settings.host_resource: 1} if settings.host_resource else None,
        **placement,
    )


class PoolFollower:
    """The pool that follows the nodes (``SLOTENGINE_HOSTS_PER_NODE``), kept by the process
    that started the platform (``Runtime``): every ``pool_follow_seconds`` it reads Ray's node
    table, retires the hosts of nodes Ray declared dead and starts hosts on nodes that lack
    them (at most as many as the node offers places), bound to the node (a host process that
    dies is restarted there by Ray). New hosts are numbered after every host before them; the
    pool's size is written to Redis (``Keys.pool_size``) once they answer, and the API
    workers and the hosts read it with the leases: a joined node takes its share of the
    shards (rendezvous: about 1/(N+1) of them move) within a lease period of its hosts
    starting.
    """

    def __init__(self, settings: Settings, *, fresh: bool) -> None:
        """``fresh``: this process started Ray, so no host of an earlier run exists (the
        numbering starts again); else the pool already running is taken over."""
        if not settings.host_resource:
            raise PoolError("a pool that follows the nodes needs SLOTENGINE_HOST_RESOURCE")
        assert settings.redis_url is not None
        self.settings = settings
        self.handles: list[ActorHandle | None] = []  # by host index; None: retired
        self.node_of: dict[int, str] = {}  # host index → its node, for the hosts in service
        self.retired = 0
        self._refused: dict[str, float] = {}  # node → when a host could not be placed on it
        self._key = Keys(settings.namespace).pool_size
        self._redis = sync_client(
            settings.redis_url, cluster=settings.redis_cluster, timeout=settings.redis_timeout
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if fresh:
            self._redis.delete(self._key)
        else:
            self._adopt()

    def _adopt(self) -> None:
        for index in range(int(self._redis.get(self._key) or 0)):
            handle = find_host(self.settings, index)
            node = None
            if handle is not None:
                with contextlib.suppress(Exception):
                    node = ray.get(handle.info.remote(), timeout=5)["node_id"]
            self.handles.append(handle if node else None)
            if node:
                self.node_of[index] = node
            elif handle is not None:  # retired: it must not keep serving under a lease
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)

    def step(self, wait: float = JOIN_SECONDS) -> list[int]:
        """Retire the hosts of nodes gone, start hosts on nodes short of them; the indices of
        the hosts started (each answered ``info`` within ``wait`` seconds, else retired)."""
        resource, per_node = self.settings.host_resource, self.settings.hosts_per_node
        now = time.monotonic()
        places = {
            n["NodeID"]: int(n["Resources"].get(resource, 0)) for n in ray.nodes() if n["Alive"]
        }
        self._refused = {n: t for n, t in self._refused.items() if now - t < REFUSED_SECONDS}
        for index, node in list(self.node_of.items()):
            if node not in places:
                self._retire(index, f"its node {node[:12]} is gone")
        starting: dict[int, ActorHandle] = {}
        for node, offered in places.items():
            if node in self._refused:  # gone but not yet declared dead, most likely
                continue
            if self._stop.is_set():
                break
            have = sum(1 for n in self.node_of.values() if n == node)
            for _ in range(min(per_node, offered) - have):
                index = len(self.handles)
                handle = _host_options(
                    self.settings,
                    index,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                ).remote(index, self.settings)
                self.handles.append(handle)
                self.node_of[index] = node
                starting[index] = handle
        if not starting:
            self._write_size()  # again each step: a write lost to a blip is made good
            return []
        asked = {h.info.remote(): i for i, h in starting.items()}
        ready, late = ray.wait(list(asked), num_returns=len(asked), timeout=wait)
        for ref in late:
            self._retire(asked[ref], f"it did not start within {wait:g} s", refused=True)
        for ref in ready:
            try:
                ray.get(ref, timeout=0)
            except Exception as exc:  # it died starting, or its node is gone unannounced
                self._retire(asked[ref], f"it failed to start: {type(exc).__name__}", refused=True)
        self._write_size()
        started = [i for i in starting if self.handles[i] is not None]
        log.info("pool: started hosts %s; %d in service", started, len(self.node_of))
        return started

    def _write_size(self) -> None:
        if self.handles and not self._stop.is_set():  # after stop, a later run numbers it
            self._redis.set(self._key, len(self.handles))

    def _retire(self, index: int, why: str, *, refused: bool = False) -> None:
        """Retire host ``index``; ``refused``: its node could not take it (not asked again for
        ``REFUSED_SECONDS``)."""
        log.warning("pool: host %d retired: %s", index, why)
        handle, self.handles[index] = self.handles[index], None
        node = self.node_of.pop(index, None)
        if refused and node is not None:
            self._refused[node] = time.monotonic()
        self.retired += 1
        if handle is not None:
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)

    def start(self) -> PoolFollower:
        """Start the pool on the nodes there are (refused at once if none offers a place),
        then follow them from a thread of its own."""
        if not any(
            n["Alive"] and n["Resources"].get(self.settings.host_resource, 0) >= 1
            for n in ray.nodes()
        ):
            raise PoolError(
                f"no node of the Ray cluster offers a {self.settings.host_resource!r} place: "
                f'start the worker nodes with --resources=\'{{"{self.settings.host_resource}"'
                f": N}}' (see ray_cluster.yaml)"
            )
        self.step(START_SECONDS)
        if not self.node_of:
            raise PoolError("no host of the pool started (see the Ray logs)")
        self._thread = threading.Thread(target=self._follow, name="pool-follower", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        while not self._stop.wait(self.settings.pool_follow_seconds):
            try:
                self.step()
            except Exception:  # Ray or Redis out of reach for a moment: look again later
                log.exception("pool: following the nodes failed")

    def stop(self) -> None:
        """Stop following (the hosts keep running: ``stop_pool`` ends them)."""
        self._stop.set()
        if self._thread is not None:  # bounded: it may be waiting for hosts to start
            self._thread.join(STOP_SECONDS)
        self._redis.close()


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


def start_couriers(settings: Settings) -> list[ActorHandle]:
    """Start (or find) the couriers, one per partition of the outbox. Keep the handles: a
    named actor lives while it is held."""
    return [
        _start_single(RemoteCourier, courier_name(settings, p), settings, p)
        for p in range(settings.couriers)
    ]


def start_dispatcher(settings: Settings) -> ActorHandle:
    """Start (or find) the dispatcher of HIS deliveries (``backoffice/deliveries.py``)."""
    return _start_single(RemoteDispatcher, dispatcher_name(settings), settings)


def _start_single(remote: Any, name: str, settings: Settings, *args: Any) -> ActorHandle:
    """Start (or find) a named actor of which the namespace has one, restarted for ever and
    using no CPU of its own; answer once it answers ``info``.

    It is placed on the head node (Ray's ``node:__internal_head__`` resource, which a head
    restarted with GCS fault tolerance offers again; Ray Serve places its controller so):
    losing a worker node never takes it, so the outbox and the HIS deliveries go on through
    any worker's loss. (A soft node affinity is not enough: Ray places an actor that asks for
    no CPU elsewhere under it.) If no node offers the resource it goes wherever Ray puts it.
    """
    head = any(n["Alive"] and HEAD in n["Resources"] for n in ray.nodes())
    actor = remote.options(
        name=name,
        namespace=settings.namespace,
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        resources={HEAD: 0.001} if head else None,
    ).remote(settings, *args)
    ray.get(actor.info.remote(), timeout=START_SECONDS)
    return actor


def stop_pool(handles: list[ActorHandle | None], settings: Settings | None = None) -> None:
    for handle in handles:
        if handle is not None:
            with contextlib.suppress(Exception):  # already dead with its node
                ray.kill(handle, no_restart=True)
    if settings is not None:
        for partition in range(settings.couriers):
            with contextlib.suppress(ValueError):  # never started
                ray.kill(find_courier(settings, partition), no_restart=True)
        with contextlib.suppress(ValueError):
            ray.kill(find_dispatcher(settings), no_restart=True)
