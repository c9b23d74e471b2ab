"""Where a shard lives: the shard → host function (pure).

A shard's host is its entry in the directory (``Keys.placement``: shards pinned or moved by an
operator, read by the caller), else its rendezvous (highest-random-weight) host among the
pool's: every host scores the shard with a stable hash and the highest score wins. Going from
N hosts to N+1 moves only the shards the new host outscores, about 1/(N+1) of them (a modulo
hash would move about N/(N+1)); a removed host's shards spread over all the others.
Only live hosts count (those holding a lease, ``actors/lease.py``): a lost host's shards go
to the hosts that score them next, and nothing else moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping


def score(shard_id: str, host: int) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    digest = hashlib.blake2b(f"{host}\x00{shard_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def default_host(shard_id: str, hosts: int, live: Collection[int] | None = None) -> int:
    """The rendezvous host of a shard among the live hosts of ``0 .. hosts-1`` (every one
    of them when none is known to be live)."""
    candidates = [h for h in range(hosts) if h in live] if live else range(hosts)
    return max(candidates or range(hosts), key=lambda host: score(shard_id, host))


def owner(
    shard_id: str, pins: Mapping[str, int], hosts: int, live: Collection[int] | None = None
) -> int:
    """The directory's answer: the pinned host if it is one of the pool's and live, else the
    default among the live hosts."""
    pinned = pins.get(shard_id)
    if pinned is not None and 0 <= pinned < hosts and (not live or pinned in live):
        return pinned
    return default_host(shard_id, hosts, live)
