"""Failures of the engine (business answers are outcomes, see ``outcomes.py``).

SlotEngineError
├── SnapshotError        a stored snapshot cannot be decoded (corrupt, unknown version)
├── StoreUnavailable     Redis cannot be reached or did not confirm a write
│   └── Fenced           a newer host owns the shard; this host must not write it
└── RedisServerError     the embedded Redis server could not be started
"""

from __future__ import annotations


class SlotEngineError(Exception):
    """Base of every failure raised by slotengine."""


class SnapshotError(SlotEngineError):
    """A snapshot is corrupt, truncated, or of an unknown version."""


class StoreUnavailable(SlotEngineError):
    """The store could not be read or did not confirm a write."""


class Fenced(StoreUnavailable):
    """A write was refused because a newer epoch owns the shard."""


class RedisServerError(SlotEngineError):
    """The embedded Redis server could not be found or started."""
