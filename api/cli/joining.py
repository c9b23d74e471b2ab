"""How a command finds the running platform it acts on."""

from __future__ import annotations

import click

from engine.settings import Settings

URL_FILE = "redis.url"  # in the embedded Redis's data folder: written by ``slotengine up``


def platform_redis_url(settings: Settings) -> str:
    """The platform's Redis: SLOTENGINE_REDIS_URL, else the one ``slotengine up`` started."""
    url = settings.redis_url
    url_file = settings.data_dir / "redis" / URL_FILE
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
