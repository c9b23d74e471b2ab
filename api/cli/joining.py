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
