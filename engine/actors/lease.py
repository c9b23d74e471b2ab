"""Host leases: how the pool knows, within a second or two, which hosts are alive.

Ray notices a dead node only after its health checks fail (about 16 s here, and a host that
cannot be restarted — no room left on the surviving nodes — never comes back at all). So each
host keeps a lease in Redis (``Keys.lease``: its incarnation, node and start, with a TTL of
``Settings.lease_seconds``), renewed every ``lease_renew_seconds`` by a thread of its own with
its own Redis connection — not by the self-sent ticks, which queue behind bookings. The
placement's default (rendezvous) is computed over the hosts holding a lease: when one lapses,
its shards go to the others at once (each moves to the host that scores it next), and if the
lost host is only cut off rather than dead, the epoch the new host bumps fences its writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

from engine.store.connect import REDIS_ERRORS, sync_client

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Takes the lease at once, then renews it until ``stop`` (or the process ends)."""

    def __init__(
        self, url: str, key: str, holder: dict, ttl: float, period: float, cluster: bool = False
    ) -> None:
        self.key = key
        self.value = json.dumps(holder, sort_keys=True)
        self.ttl_ms = max(1, int(ttl * 1000))
        self.period = period
        self.renewals = 0
        self.failures = 0
        self._client = sync_client(url, cluster=cluster, timeout=period)
        self._stop = threading.Event()
        self.renew()  # live before the first request can reach the host
        self._thread = threading.Thread(target=self._run, name="host-lease", daemon=True)
        self._thread.start()

    def renew(self) -> bool:
        try:
            self._client.set(self.key, self.value, px=self.ttl_ms)
        except REDIS_ERRORS as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("lease %s not renewed (%d times): %s", self.key, self.failures, exc)
            return False
        self.renewals += 1
        return True

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            if not self._stop.is_set():
                self.renew()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; ``release`` deletes the lease at once (a graceful exit)."""
        self._stop.set()
        self._thread.join(self.period * 2 + 1)
        if release:
            with contextlib.suppress(*REDIS_ERRORS):
                self._client.delete(self.key)
        self._client.close()
