"""Timers for synchronous Ray actors: a thread that sends the actor a call to itself every
period, so timer work queues behind requests and never runs beside them."""

from __future__ import annotations

import threading
import time


def tick_self(method: str, period: float, name: str) -> threading.Thread:
    """Call ``method`` on the current actor every ``period`` seconds, never piling up: a new
    call goes out only once the last one has finished. Start it once per incarnation."""
    import ray

    me = getattr(ray.get_runtime_context().current_actor, method)

    def send() -> None:
        pending = None
        while True:
            time.sleep(period)
            try:
                if pending is not None and not ray.wait([pending], timeout=0)[0]:
                    continue  # the last one is still queued or running
                pending = me.options(max_task_retries=0).remote()
            except Exception:  # the actor is going away
                return

    thread = threading.Thread(target=send, name=name, daemon=True)
    thread.start()
    return thread
