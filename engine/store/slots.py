"""Reads over keys of many Redis Cluster slots, in one round trip.

``MGET`` of keys in two slots is a ``CROSSSLOT`` error on a cluster; these group the keys by
slot (``redis.crc.key_slot``), send one command per slot in one pipeline (redis-py's cluster
pipeline sends each node its part) and put the answers back in the keys' order. On one Redis it
is the same round trip as one ``MGET``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.crc import key_slot


def by_slot(keys: Sequence[str | bytes]) -> dict[int, list[int]]:
    """Positions of ``keys``, grouped by their cluster slot."""
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode() if isinstance(key, str) else key), []).append(i)
    return groups


def queue_mget(pipe: Any, keys: Sequence[str | bytes]) -> Callable[[list], list]:
    """Queue one ``MGET`` per slot of ``keys`` on ``pipe`` (first in it); the function that
    turns the pipeline's first replies (one per ``MGET``) into each key's value, in order."""
    groups = list(by_slot(keys).values())
    for positions in groups:
        pipe.execute_command("MGET", *[keys[i] for i in positions])  # (a cluster pipeline
        # refuses its mget method, not the command)

    def values(replies: list) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(keys)
        for positions, answer in zip(groups, replies[: len(groups)], strict=True):
            for i, value in zip(positions, answer, strict=True):
                out[i] = value
        return out

    return values


async def mget(client: Any, keys: Sequence[str | bytes]) -> list[bytes | None]:
    """``MGET`` of keys in any slots: each key's value (None where it is absent)."""
    if not keys:
        return []
    if len(by_slot(keys)) == 1:
        return await client.mget(list(keys))
    async with client.pipeline(transaction=False) as pipe:
        values = queue_mget(pipe, keys)
        return values(await pipe.execute())
