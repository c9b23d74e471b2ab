"""The one clock every timer runs off: wall time plus an offset that tests and demos can move.

The offset lives in Redis (``Keys.clock``), so every host, the courier and every API worker
agree on it, and a restarted host reads it back. In production it stays 0.
"""

from __future__ import annotations

import time


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
