"""How a command finds the running platform it acts on."""

from __future__ import annotations

from pathlib import Path

import click

from engine.settings import Settings

CLUSTER_URL_FILE = "cluster-url"  # as ``slotengine redis-cluster up`` writes it
URL_FILE = "redis.url"  # in the embedded Redis's data folder: written by ``slotengine up``


def url_file_of(settings: Settings) -> Path:
    """Where ``slotengine up`` keeps the URL of the Redis it started (owner only): in the
    embedded Redis's folder, or the local cluster's (``SLOTENGINE_REDIS_CLUSTER``)."""
    if settings.redis_cluster:
        return settings.data_dir / "redis-cluster" / CLUSTER_URL_FILE
    return settings.data_dir / "redis" / URL_FILE


def platform_redis_url(settings: Settings) -> str:
    """The platform's Redis: SLOTENGINE_REDIS_URL, else the one ``slotengine up`` started."""
    url = settings.redis_url
    url_file = url_file_of(settings)
    if url is None and url_file.exists():
        url = url_file.read_text().strip()
    if url is None:
        raise click.UsageError("set SLOTENGINE_REDIS_URL (slotengine up prints it)")
    return url


def pool_words(settings: Settings) -> str:
    """The pool as the banner says it."""
    if settings.follows_nodes:
        return f"{settings.hosts_per_node} host actors per node"
    return f"{settings.hosts} host actors"


def pool_env(settings: Settings) -> dict[str, str]:
    """The variables that tell the API workers the pool's shape."""
    if settings.follows_nodes:
        return {"SLOTENGINE_HOSTS_PER_NODE": str(settings.hosts_per_node)}
    return {"SLOTENGINE_HOSTS": str(settings.hosts)}
