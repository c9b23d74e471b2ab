"""Where a shard lives: the shard → host function (pure).

A shard's host is its pinned index in the placement map (``Keys.placement``, read by the
caller), else this stable hash of the shard id over the pool's size.
"""

from __future__ import annotations

import zlib


def default_host(shard_id: str, hosts: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    return zlib.crc32(shard_id.encode()) % hosts
