"""Where a shard lives: the shard → host function (pure).

A shard's host is its entry in the directory (``Keys.placement``: shards pinned or moved by an
operator, read by the caller), else its rendezvous (highest-random-weight) host among the
pool's: every host scores the shard with a stable hash and the highest score wins. Going from
N hosts to N+1 moves only the shards the new host outscores, about 1/(N+1) of them (a modulo
hash would move about N/(N+1)); a removed host's shards spread over all the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def score(shard_id: str, host: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    digest = hashlib.blake2b(f"{host}\x00{shard_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def default_host(shard_id: str, hosts: int) -> int:
    """The rendezvous host of a shard among hosts ``0 .. hosts-1``."""
    return max(range(hosts), key=lambda host: score(shard_id, host))


def owner(shard_id: str, pins: Mapping[str, int], hosts: int) -> int:
    """The directory's answer: the pinned host if it is one of the pool's, else the default."""
    pinned = pins.get(shard_id)
    if pinned is not None and 0 <= pinned < hosts:
        return pinned
    return default_host(shard_id, hosts)
