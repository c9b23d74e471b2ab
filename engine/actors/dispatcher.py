"""The dispatcher: the Ray actor that carries the HIS and insurance deliveries out
(``backoffice/deliveries.py``), on its own event loop, every tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from engine.actors.process import set_niceness, this_node
from engine.actors.ticker import tick_self
from engine.backoffice.deliveries import Deliveries
from engine.core.clock import Clock, usable_offset
from engine.settings import Settings
from engine.store.shards import Store

log = logging.getLogger(__name__)


async def _round(deliveries: Deliveries, clock: Clock, movable: bool) -> dict[str, int]:
    clock.set_offset(usable_offset(await deliveries.client.get(deliveries.keys.clock), movable))
    await deliveries.run(clock.now())
    return dict(deliveries.counters)


class Dispatcher:
    """The Ray actor (decorated by ``pool.py``): runs ``Deliveries.run`` on its own event loop
    every tick, one call at a time (no ``async def`` here: Ray would make it an async actor)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        set_niceness(settings.background_nice)
        self._loop = asyncio.new_event_loop()
        store = Store.of(settings)
        self.deliveries = Deliveries.from_settings(store.client, store.keys, settings)
        self.clock = Clock()
        self._timer: threading.Thread | None = None
        self.start_timer()

    def run(self) -> dict[str, int]:
        """Carry out what is due now (also sent to itself every tick)."""
        try:
            return self._loop.run_until_complete(
                _round(self.deliveries, self.clock, self.settings.movable_clock)
            )
        except Exception as exc:  # Redis away: everything stays due for the next round
            log.warning("dispatcher round failed: %s", exc)
            return dict(self.deliveries.counters)

    def info(self) -> dict[str, int]:
        return dict(self.deliveries.counters)

    def node(self) -> str:
        """The Ray node this actor runs on (``ops status``)."""
        return this_node()

    def start_timer(self) -> None:
        if self._timer is None:
            self._timer = tick_self("run", self.settings.tick_seconds, "dispatcher-timer")
