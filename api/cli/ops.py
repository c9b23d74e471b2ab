"""``slotengine ops``: look at and steer the actor cluster of a running platform.

Joins it like ``slotengine serve`` does: ``SLOTENGINE_RAY_ADDRESS`` (default ``auto``: the
cluster this machine belongs to), ``SLOTENGINE_REDIS_URL`` (or the URL file ``up`` wrote),
``SLOTENGINE_NAMESPACE`` and ``SLOTENGINE_HOSTS`` (or ``SLOTENGINE_HOSTS_PER_NODE``) as the
platform has them.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from typing import Any

import click
import ray

from api.cli.joining import platform_redis_url
from engine.actors.names import find_pool, pool_size
from engine.client import Engine
from engine.settings import Settings
from engine.store.shards import Store
from engine.tools.cluster import cluster_status, drain, node_named, plan_moves, shard_load
from engine.tools.slots import watch


def joined() -> Settings:
    settings = Settings.from_env()
    settings = settings.model_copy(update={"redis_url": platform_redis_url(settings)})
    if not ray.is_initialized():
        ray.init(
            address=settings.ray_address or "auto",
            namespace=settings.namespace,
            log_to_driver=False,
            configure_logging=False,
        )
    return settings


@click.group()
def ops() -> None:
    """Operate the actor cluster: its status, where a shard lives, draining a node."""


@ops.command()
@click.option("--json", "as_json", is_flag=True, help="one JSON document")
def status(as_json: bool) -> None:
    """Nodes, hosts (lease, node, shards, requests/s, batch sizes, epochs)."""
    settings = joined()

    async def go() -> dict[str, Any]:
        assert settings.redis_url is not None
        store = Store.of(settings)
        try:
            return await cluster_status(settings, store)
        finally:
            await store.close()

    data = asyncio.run(go())
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    live_nodes = sum(n["alive"] for n in data["nodes"])
    click.echo(f"{live_nodes} of {len(data['nodes'])} nodes alive; {data['shards']} shards")
    for n in data["nodes"]:
        click.echo(
            f"  node {n['node_id'][:12]} {n['address']:<15} "
            f"{'alive' if n['alive'] else 'DEAD ':<5}  {n['cpus']:g} CPUs, "
            f"{n['host_places']:g} host places"
        )
    click.echo("host  live  node             lease age  shards  req/s    batch  epochs")
    for h in data["hosts"]:
        if "error" in h:
            tail = h["error"]
        else:
            tail = (
                f"{h['shards_loaded']:>6}  {h['requests_per_second']:>7}  "
                f"{h['mean_batch']:>5}  {len(h['epochs'])}"
            )
        age = "-" if h["lease_age_seconds"] is None else f"{h['lease_age_seconds']:.2f} s"
        click.echo(
            f"{h['index']:>4}  {'yes' if h['live'] else 'NO':<4}  {h['node'] or '-':<15}  "
            f"{age:>9}  {tail}"
        )
    for partition, node in enumerate(data["couriers"]):
        click.echo(f"courier {partition} on node {(node or 'unreachable')[:12]}")
    click.echo(f"dispatcher on node {(data['dispatcher'] or 'unreachable')[:12]}")


@ops.command(name="drain")
@click.argument("node")
@click.option("--undo", is_flag=True, help="let the node's hosts take shards again")
def drain_command(node: str, undo: bool) -> None:
    """Move every shard off NODE (a Ray node id, its first characters, or its address);
    afterwards removing the node fails no booking."""
    settings = joined()
    try:
        node_id = node_named(node)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    async def go() -> dict[str, Any]:
        assert settings.redis_url is not None
        store = Store.of(settings)
        try:
            return await drain(settings, store, node_id, on=not undo)
        finally:
            await store.close()

    done = asyncio.run(go())
    verb = "no longer drained" if undo else "drained"
    click.echo(
        f"node {node_id[:12]} {verb}; its hosts {done['hosts']} released "
        f"{done['released']} shards (directory version {done['version']})"
    )


@ops.command()
@click.argument("shard")
@click.argument("host")
def place(shard: str, host: str) -> None:
    """Hand SHARD (hospital:date) over to HOST (an index, or ``default``)."""
    settings = joined()
    index = None if host == "default" else int(host)
    size = pool_size(settings)
    if index is not None and not 0 <= index < size:
        raise click.UsageError(f"HOST is 0..{size - 1} or default")

    async def go() -> tuple[int, int]:
        engine = Engine(settings, find_pool(settings))
        try:
            version = await engine.move(shard, index)
            return version, engine.host_of(shard)
        finally:
            await engine.close()

    version, now = asyncio.run(go())
    click.echo(f"{shard} is on host {now} (directory version {version})")


@ops.command()
@click.option("--top", default=10, show_default=True)
@click.option("--seconds", default=2.0, show_default=True, help="how long to measure")
def hot(top: int, seconds: float) -> None:
    """The shards with the most requests per second now, and their hosts."""
    settings = joined()
    load = asyncio.run(shard_load(settings, seconds))
    ranked = sorted(load.items(), key=lambda kv: -kv[1][1])[:top]
    click.echo(f"{'shard':<32} {'host':>4} {'req/s':>9}")
    for shard_id, (index, rate) in ranked:
        click.echo(f"{shard_id:<32} {index:>4} {rate:>9.1f}")


@ops.command()
@click.option("--by", type=click.Choice(["count", "rate"]), default="count", show_default=True)
@click.option("--max-moves", default=8, show_default=True, help="moves in this round")
@click.option("--seconds", default=2.0, show_default=True, help="rate measured over")
def rebalance(by: str, max_moves: int, seconds: float) -> None:
    """Even the hosts out, by shard count or by request rate, a bounded number of moves
    (each a handoff: nothing fails); run it again for another round."""
    settings = joined()

    async def go() -> list[tuple[str, int, int]]:
        assert settings.redis_url is not None
        load = await shard_load(settings, seconds if by == "rate" else 0.0)
        engine = Engine(settings, find_pool(settings))
        try:
            size = len(engine.hosts)
            present = [i for i, h in enumerate(engine.hosts) if h is not None]  # not retired
            live = [i for i in await engine.store.live_hosts(size) if i in present] or present
            moves = plan_moves(load, sorted(live), by, max_moves)
            for shard_id, _, to in moves:
                await engine.move(shard_id, to)
            return moves
        finally:
            await engine.close()

    moves = asyncio.run(go())
    for shard_id, was, to in moves:
        click.echo(f"moved {shard_id}: host {was} -> {to}")
    click.echo(f"{len(moves)} moves ({by})")


@ops.command(name="cross-slot")
@click.option("--seconds", default=60.0, show_default=True, help="how long to watch")
def cross_slot(seconds: float) -> None:
    """Watch the platform's Redis (MONITOR: it slows Redis while it runs) and list every
    script, transaction or command that would be CROSSSLOT on a Redis Cluster; exit status 1
    when there is one. A check before moving a platform to a cluster."""
    settings = Settings.from_env()
    url = platform_redis_url(settings)
    out = io.StringIO()
    watch(url, out, seconds)
    found = Counter(
        (f["kind"], f["command"], " ".join(f["families"]))
        for f in map(json.loads, out.getvalue().splitlines())
        if "mark" not in f
    )
    for (kind, command, families), count in found.most_common():
        click.echo(f"{count:>7}  {kind:<7} {command:<10} {families}")
    click.echo(f"{sum(found.values())} cross-slot in {seconds:g} s")
    if found:
        raise SystemExit(1)
