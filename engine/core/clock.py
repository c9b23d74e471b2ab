"""The one clock every timer runs off: wall time plus an offset that tests and demos can move.

The offset lives in Redis (``Keys.clock``), so every host, the courier and every API worker
agree on it, and a restarted host reads it back. In production it stays 0.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class Clock:
    __slots__ = ("offset",)

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def set_offset(self, offset: float) -> None:
        self.offset = float(offset)


def parse_offset(raw: bytes | str | None) -> float:
    return float(raw) if raw else 0.0


def usable_offset(raw: bytes | str | None, movable: bool) -> float:
    """The offset to run on: the stored one only while the clock is movable
    (``SLOTENGINE_MOVABLE_CLOCK``). A data folder where a test or demo moved the clock must not
    make production run days ahead: a non-zero offset with the clock fixed is logged, ignored."""
    offset = parse_offset(raw)
    if offset and not movable:
        log.warning(
            "ignoring a clock offset of %.0f s found in Redis: SLOTENGINE_MOVABLE_CLOCK is off",
            offset,
        )
        return 0.0
    return offset
