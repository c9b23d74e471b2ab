"""The actors' process helpers: garbage-collection counters and CPU niceness."""

from __future__ import annotations

import gc
import os

from engine.actors.process import set_niceness, watch_gc


def test_garbage_collections_are_counted_with_their_time():
    counters: dict[str, float] = {}
    callback = watch_gc(counters)
    try:
        garbage = [[] for _ in range(10_000)]
        for item in garbage:
            item.append(item)  # cycles: only the collector frees them
        del garbage
        gc.collect()
    finally:
        gc.callbacks.remove(callback)
    assert counters["gc_full"] >= 1
    assert 0 < counters["gc_longest"] <= counters["gc_seconds"]


def test_a_niceness_asked_for_is_the_one_the_process_has():
    import subprocess
    import sys

    code = (
        "import os; from engine.actors.process import set_niceness; "
        "print(set_niceness(19), os.nice(0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["19", "19"]
    assert set_niceness(os.nice(0)) == os.nice(0), "asking for the current one changes nothing"
