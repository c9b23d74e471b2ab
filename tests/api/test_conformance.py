"""The served OpenAPI document against what the app answers: ``schemathesis run --checks all``,
as an integrator would run it, against the real app on the real engine (a host pool on the
session's local Ray, the session's Redis) served by uvicorn on 127.0.0.1.

Every check of schemathesis runs: no server error, every status and content type the
document declares, response headers and bodies by their schemas, schema-valid data accepted and
invalid data refused, a 405 with ``Allow`` for a method a path does not take, missing or
ignored authentication, and the stateful checks. Where a check's default does not fit an
operation, ``schemathesis.toml`` beside this file sets it, each with its reason.

Bounded and repeatable: ``MAX_EXAMPLES`` cases per operation and phase, in schemathesis's
deterministic mode; the run takes about half a minute here.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

from engine.store.embedded import free_port
from tests.api.helpers import ADMIN

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10
RUN_SECONDS = 600


async def serve(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    """The app (its lifespan already started by the fixture) over a real socket, on this
    loop, so that a client in another process reaches it."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            return server, task
        await asyncio.sleep(0.05)
    raise RuntimeError("uvicorn did not start")


async def run_schemathesis(url: str, *args: str) -> tuple[int, str]:
    command = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(command),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def test_every_answer_is_the_one_the_document_declares(app):
    """``--checks all`` as the platform admin finds no failure."""
    port = free_port()
    server, task = await serve(app, port)
    try:
        code, report = await run_schemathesis(
            f"http://127.0.0.1:{port}",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {ADMIN}",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--workers",
            "1",
        )
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
    assert code == 0, report[-30000:]
