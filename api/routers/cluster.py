"""The platform admin's view of the actor cluster (the HTTP face of ``slotengine ops``):
its status, and draining a node before it is taken away."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from fastapi import APIRouter

from api.answers import declared
from api.deps import AdminDep, ServicesDep, platform_only
from api.errors import NOT_FOUND
from api.schemas import DrainIn
from engine.tools.cluster import cluster_status, drain, node_named

router = APIRouter(tags=["admin"])


@router.get("/v1/admin/cluster")
async def cluster(s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Nodes (alive, CPUs, host places), hosts (lease, node, shards, requests/s, batch size,
    epochs) and pinned shards, read now (each host's counters with a deadline: a dead host is
    reported, never waited for). Platform admin only."""
    platform_only(who)
    return await cluster_status(s.settings, s.engine.store)


@router.post("/v1/admin/cluster/drain", responses=declared(NOT_FOUND))
async def drain_node(body: DrainIn, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Move every shard off a node (``undo``: let its hosts take shards again); afterwards
    the node can be removed without failing a booking. Platform admin only."""
    platform_only(who)
    nodes = await asyncio.to_thread(ray.nodes)
    try:
        node_id = node_named(body.node, nodes)
    except ValueError as exc:
        raise NOT_FOUND(str(exc)) from exc
    return await drain(s.settings, s.engine.store, node_id, on=not body.undo)
