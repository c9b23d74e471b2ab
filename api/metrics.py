"""Prometheus metrics: requests, outcomes, fast-path hits, batch sizes, host-call latency.

With several uvicorn workers, ``slotengine up`` sets PROMETHEUS_MULTIPROC_DIR so that
``/metrics`` on any worker reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter("slotengine_http_requests", "HTTP requests answered", ["route", "status"])
OUTCOMES = Counter("slotengine_booking_outcomes", "Booking answers by outcome", ["outcome"])
FAST_PATH = Counter(
    "slotengine_fast_path_answers", "Refusals answered without the engine", ["code"]
)
FAST_PATH_BY_CODE = {  # bound once: ``labels()`` costs as much as the rest of a fast answer
    code: FAST_PATH.labels(code) for code in ("sold_out", "not_open", "closed", "suspended")
}
ENGINE_CALLS = Counter("slotengine_engine_book_calls", "Booking requests sent to the engine")
BATCH = Histogram(
    "slotengine_mailbox_batch_size",
    "Requests per host call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
HOST_CALL = Histogram(
    "slotengine_host_call_seconds",
    "Round trip of one host call (decide + group commit)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
)


GAUGES = ("outbox_pending", "unsettled_payments", "dead_letters_waiting")


HOST_COUNTERS = ("requests", "calls", "commits", "failed_commits")


def render(
    courier: dict[str, float] | None = None, hosts: dict[int, dict[str, float]] | None = None
) -> tuple[bytes, str]:
    """The worker's (or all workers') metrics, plus the courier's figures read at scrape time
    (``outbox_pending``, ``unsettled_payments`` and its counters), which no worker owns, and
    each host's (up, lease, shards, requests, commits) as the background health check last
    read them: a scrape never calls into the hosts."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    for name, value in sorted((courier or {}).items()):
        kind = "gauge" if name in GAUGES else "counter"
        metric = f"slotengine_courier_{name}"
        body += f"# TYPE {metric} {kind}\n{metric} {value}\n".encode()
    names = sorted({name for figures in (hosts or {}).values() for name in figures})
    for name in names:
        kind = "counter" if name in HOST_COUNTERS else "gauge"
        metric = f"slotengine_host_{name}" + ("_total" if kind == "counter" else "")
        lines = [f"# TYPE {metric} {kind}"]
        for index, figures in sorted((hosts or {}).items()):
            if name in figures:
                lines.append(f'{metric}{{host="{index}"}} {figures[name]}')
        body += ("\n".join(lines) + "\n").encode()
    return body, CONTENT_TYPE_LATEST
