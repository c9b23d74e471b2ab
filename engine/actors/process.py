"""What an actor process sets about itself: its CPU priority, and counters of its garbage
collections (an actor is a process of its own); and the Ray node it runs on."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def this_node() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def set_niceness(nice: int) -> int:
    """Put this actor process (a process of its own) at CPU niceness ``nice``; the niceness it
    has after. Ray starts its workers at 15: a host on the booking path asks for the default
    0, which needs CAP_SYS_NICE (else it stays, with a warning); the background actors ask for
    19, which anyone may: they then run on what the booking path leaves."""
    current = os.nice(0)
    if nice != current:
        try:
            current = os.nice(nice - current)
        except OSError as exc:
            log.warning("cannot move the CPU niceness from %d to %d: %s", current, nice, exc)
    return current


def watch_gc(counters: dict[str, float]) -> Callable[[str, dict[str, int]], None]:
    """Count this process's garbage collections into ``counters``: ``gc_seconds`` (all of
    them), ``gc_full`` (full ones: they walk every object, the longest pauses) and
    ``gc_longest`` (seconds)."""
    started = [0.0]
    for name in ("gc_seconds", "gc_full", "gc_longest"):
        counters.setdefault(name, 0)

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        counters["gc_seconds"] += took
        counters["gc_longest"] = max(counters["gc_longest"], took)
        if info.get("generation") == 2:
            counters["gc_full"] += 1

    gc.callbacks.append(callback)
    return callback
