"""The client side: its pure helpers, and the engine client's own shutdown (real Redis)."""

import asyncio

import pytest

from engine.client import Engine, parse_booking_id, request_key
from engine.errors import StoreUnavailable


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("s12.0", ("s12", 0)),
        ("h0-2026-12-01-3.17", ("h0-2026-12-01-3", 17)),
        ("a.b.5", ("a.b", 5)),
        ("s12", None),
        (".5", None),
        ("s12.", None),
        ("s12.-1", None),
        ("s12.²", None),
        ("s12." + "9" * 5000, None),
        ("s12.1234567890123", None),
        ("s12.01", None),  # one booking, one id: the payment records are keyed by it
        ("s12.00", None),
    ],
)
def test_parse_booking_id(text, parsed):
    assert parse_booking_id(text) == parsed


def test_request_key_is_stable_and_int64():
    assert request_key("r-1") == request_key("r-1") != request_key("r-2")
    assert -(2**63) <= request_key("x" * 1000) < 2**63


@pytest.mark.timeout(30)  # the bug it guards against hangs
async def test_close_ends_the_lease_watcher_even_when_a_command_turns_cancel_into_an_error(
    redis_server, settings_for
):
    """redis-py can answer the cancellation of a command in flight with a connection error;
    the watcher must still end, and ``close`` must not wait for ever (it once did)."""
    engine = Engine(settings_for(redis_server.url), [])
    started = asyncio.Event()

    async def slow_view(hosts):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise StoreUnavailable("connection closed while reading") from None

    engine.store.host_view = slow_view  # the one seam: a command that never answers
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(engine.close(), 5)
    await asyncio.wait_for(asyncio.shield(asyncio.wait([engine._watch])), 5)
    assert engine._watch.done(), "the watcher ended"
