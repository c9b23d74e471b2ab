"""The API's background jobs stop when cancelled, even when a job swallows the cancellation
(redis-py turns a cancelled read into a ``ConnectionError``; ``read_figures`` returns quietly
on any error): a job that kept running hung the server's shutdown and the test session's
event loop at exit."""

from __future__ import annotations

import asyncio

import pytest

from api.jobs import every


@pytest.mark.parametrize("swallow", ["as_error", "quietly"])
async def test_every_stops_when_cancelled_even_if_its_job_swallowed_it(swallow):
    runs = 0
    inside = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        inside.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if swallow == "as_error":
                raise ConnectionError("Connection closed by server.") from None
            return  # as read_figures does with any failure

    task = asyncio.create_task(every(0.01, job))
    await asyncio.wait_for(inside.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert runs == 1, "the job was not run again after the cancellation"
