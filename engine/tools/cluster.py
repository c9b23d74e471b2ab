"""What the actor cluster looks like now, for operators (``slotengine ops status``).

Read from the places that know: Ray's node table, the hosts' leases and the directory in Redis,
and each live host's own counters (one Ray call each, with a deadline: a dead host is reported,
never waited for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray

from engine.actors.names import find_courier, find_dispatcher, host_name
from engine.core.placement import owner
from engine.settings import Settings
from engine.store.shards import Store

INFO_SECONDS = 3.0  # deadline of one host's info


async def pool_size(settings: Settings, store: Store) -> int:
    """The pool's host indices: fixed, or as a pool that follows the nodes numbered them."""
    return await store.pool_size() if settings.follows_nodes else settings.hosts


async def single_node(find: Callable[[Settings], Any], settings: Settings) -> str | None:
    """The node the courier or the dispatcher runs on (None: not found or not answering)."""
    try:
        return await asyncio.wait_for(find(settings).node.remote(), INFO_SECONDS)
    except Exception:
        return None


async def host_info(settings: Settings, index: int) -> dict[str, Any] | str:
    """A host's counters, or why they could not be had."""
    try:
        handle = ray.get_actor(host_name(settings, index), namespace=settings.namespace)
        return await asyncio.wait_for(handle.info.remote(), INFO_SECONDS)
    except ValueError:
        return "not started"
    except Exception as exc:  # dead, restarting, or past the deadline
        return f"unreachable: {type(exc).__name__}"


async def cluster_status(settings: Settings, store: Store) -> dict[str, Any]:
    """Nodes, hosts (lease, shards, load, epochs) and the directory, as one document."""
    now = time.time()
    nodes = [
        {
            "node_id": n["NodeID"],
            "address": n["NodeManagerAddress"],
            "alive": n["Alive"],
            "cpus": n["Resources"].get("CPU", 0),
            "host_places": n["Resources"].get(settings.host_resource, 0),
        }
        for n in await asyncio.to_thread(ray.nodes)  # a GCS call: off the event loop
    ]
    size = await pool_size(settings, store)
    leases = await store.leases(size)
    pins = await store.placement()
    infos = await asyncio.gather(*(host_info(settings, i) for i in range(size)))
    live = (await store.host_view(size)).serving or None  # as the hosts place shards
    known = await store.shard_ids()
    placed: dict[int, int] = {}
    for shard_id in known:
        index = owner(shard_id, pins, size, live)
        placed[index] = placed.get(index, 0) + 1
    hosts = []
    for index, info in enumerate(infos):
        holder, left = leases.get(index, ({}, 0.0))
        row: dict[str, Any] = {
            "index": index,
            "live": index in leases,
            "node": holder.get("node"),
            "node_id": holder.get("node_id"),
            "lease_left_seconds": round(left, 2),
            "lease_age_seconds": round(settings.lease_seconds - left, 2) if holder else None,
            "shards_placed": placed.get(index, 0),
        }
        if isinstance(info, str):
            row["error"] = info
        else:
            up = max(now - info["started_at"], 1e-9)
            calls = info["calls"] or 1
            row.update(
                incarnation_started_at=info["started_at"],
                shards_loaded=len(info["shards"]),
                epochs=info["epochs"],
                requests=int(info["requests"]),
                requests_per_second=round(info["requests"] / up, 1),
                mean_batch=round(info["requests"] / calls, 1),
                commits=int(info["commits"]),
            )
        hosts.append(row)
    return {
        "at": now,
        "namespace": settings.namespace,
        "nodes": nodes,
        "hosts": hosts,
        "courier": await single_node(find_courier, settings),
        "couriers": [
            await single_node(lambda st, p=p: find_courier(st, p), settings)
            for p in range(settings.couriers)
        ],
        "dispatcher": await single_node(find_dispatcher, settings),
        "shards": len(known),
        "pins": pins,
    }


MIN_PREFIX = 6  # "0" must not drain whichever node's id happens to start with it


def node_named(name: str, nodes: list[dict] | None = None) -> str:
    """The Ray node id a name means: a node id, its first ``MIN_PREFIX`` or more characters,
    or a node's address (among ``nodes``, Ray's node table, read now if not given)."""
    prefix = len(name) >= MIN_PREFIX
    matches = [
        n["NodeID"]
        for n in (ray.nodes() if nodes is None else nodes)
        if n["Alive"]
        and ((prefix and n["NodeID"].startswith(name)) or n["NodeManagerAddress"] == name)
    ]
    if len(matches) != 1:
        raise ValueError(
            f"{name!r} names {len(matches)} live nodes"
            f" (give a node's address or at least {MIN_PREFIX} characters of its id)"
        )
    return matches[0]


async def drain(settings: Settings, store: Store, node_id: str, on: bool = True) -> dict:
    """Move every shard off the hosts on a node (``on`` False: let them take shards again).

    The directory marks the node drained first; then each of its hosts releases the shards
    that are no longer its own, after its commit in flight, answering ``Moved`` from then on,
    and the other hosts load them with the next request: nothing fails, nothing is fenced.
    Afterwards the node can be removed without failing a booking."""
    version = await store.drain(node_id, on)
    leases = await store.leases(await pool_size(settings, store))
    on_node = sorted(i for i, (holder, _) in leases.items() if holder.get("node_id") == node_id)
    released: dict[int, int | str] = {}
    for index in on_node if on else []:
        try:
            handle = ray.get_actor(host_name(settings, index), namespace=settings.namespace)
            released[index] = await asyncio.wait_for(
                handle.release_all.remote(), settings.host_call_seconds
            )
        except Exception as exc:  # its shards move anyway when its lease lapses
            released[index] = f"unreachable: {type(exc).__name__}"
    return {
        "node_id": node_id,
        "draining": on,
        "version": version,
        "hosts": on_node,
        "released": released,
    }


async def shard_load(settings: Settings, seconds: float) -> dict[str, tuple[int, float]]:
    """Each loaded shard's host and its request rate over the next ``seconds`` (0: no
    measure, every rate 0)."""
    size = settings.hosts
    if settings.follows_nodes:
        assert settings.redis_url is not None
        store = Store.of(settings)
        try:
            size = await store.pool_size()
        finally:
            await store.close()
    before = await asyncio.gather(*(host_info(settings, i) for i in range(size)))
    if seconds <= 0:
        return {
            shard_id: (index, 0.0)
            for index, info in enumerate(before)
            if not isinstance(info, str)
            for shard_id in info["shard_requests"]
        }
    await asyncio.sleep(seconds)
    after = await asyncio.gather(*(host_info(settings, i) for i in range(size)))
    load: dict[str, tuple[int, float]] = {}
    for index, (b, a) in enumerate(zip(before, after, strict=True)):
        if isinstance(a, str):
            continue
        then = {} if isinstance(b, str) else b["shard_requests"]
        for shard_id, count in a["shard_requests"].items():
            load[shard_id] = (index, (count - then.get(shard_id, 0)) / seconds)
    return load


def plan_moves(
    load: dict[str, tuple[int, float]], hosts: list[int], by: str, max_moves: int
) -> list[tuple[str, int, int]]:
    """Moves (shard, from host, to host) that even out the hosts, at most ``max_moves``.

    ``by="count"``: shards per host until the busiest and the idlest differ by at most one;
    ``by="rate"``: requests/s per host, each move the shard of the busiest host whose rate is
    nearest half the gap to the idlest, while that narrows the gap (pure: the caller moves)."""
    if not hosts:
        return []
    carried: dict[int, dict[str, float]] = {h: {} for h in hosts}
    for shard_id, (index, rate) in load.items():
        if index in carried:
            carried[index][shard_id] = 1.0 if by == "count" else rate
    moves: list[tuple[str, int, int]] = []
    while len(moves) < max_moves:
        totals = {h: sum(shards.values()) for h, shards in carried.items()}
        busiest = max(totals, key=lambda h: totals[h])
        idlest = min(totals, key=lambda h: totals[h])
        gap = totals[busiest] - totals[idlest]
        if busiest == idlest or gap <= (1.0 if by == "count" else 0.0):
            break
        shard_id, weight = min(
            carried[busiest].items(), key=lambda kv: (abs(kv[1] - gap / 2), kv[0])
        )
        if weight <= 0 or weight >= gap:  # moving it would not narrow the gap
            break
        del carried[busiest][shard_id]
        carried[idlest][shard_id] = weight
        moves.append((shard_id, busiest, idlest))
    return moves
