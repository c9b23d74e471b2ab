"""A per-patient token bucket against scripted clients (黄牛), kept in each worker's memory.

Each worker limits on its own, so with N workers a patient gets at most N times the rate:
cheap (no Redis on the booking path) and still a hard ceiling for a script.
"""

from __future__ import annotations


class RateLimiter:
    __slots__ = ("buckets", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[int, tuple[float, float]] = {}  # patient → (tokens, at)

    def allow(self, patient: int, now: float) -> bool:
        tokens, at = self.buckets.get(patient, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self.buckets[patient] = (tokens, now)
            return False
        self.buckets[patient] = (tokens - 1.0, now)
        if len(self.buckets) > 200_000:
            self._forget_full(now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold no information."""
        full = self.burst / self.rate
        self.buckets = {p: (t, at) for p, (t, at) in self.buckets.items() if now - at < full}
