"""Watch a Redis server and report every script, transaction or command that touches keys in
more than one Redis Cluster slot — each would fail with ``CROSSSLOT`` on a cluster.

It reads the server's ``MONITOR`` feed, so it sees every client (API workers, hosts, couriers in
other processes) and every key a Lua script touches, not only the keys it declares. A script
is checked over its declared ``KEYS`` and the keys of the commands it ran; a ``MULTI`` block over
its commands and the keys ``WATCH``-ed before it; any other command over its own keys.

``python -m engine.tools.slots URL OUT`` appends one JSON line per finding to ``OUT``, and a line
``{"mark": text}`` for each ``ECHO slots:mark:<text>`` it sees (how a caller knows the watcher
has caught up); ``SIGUSR1`` pauses it (MONITOR off), ``SIGUSR2`` resumes. MONITOR costs the
server time: for tests and for a trial before a migration, never left on in production.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO

import redis
from redis.crc import key_slot

MARK = b"slots:mark:"
_LINE = re.compile(rb"^[\d.]+ \[\d+ ([^\]]*)\] ")
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)")
_SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
_CONTAINERS = {b"XGROUP", b"XINFO", b"OBJECT", b"MEMORY"}
_SCRIPTS = {b"EVAL", b"EVALSHA", b"EVAL_RO", b"EVALSHA_RO", b"FCALL", b"FCALL_RO"}


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        if code[:1] == b"x" and len(code) == 3:
            return bytes([int(code[1:], 16)])
        return _SIMPLE.get(code, code)

    return _ESCAPE.sub(one, raw) if b"\\" in raw else raw


class Args:
    """A MONITOR line's arguments, unescaped only as far as they are asked for (a commit's
    snapshots are long, and only its keys matter)."""

    __slots__ = ("_got", "_it")

    def __init__(self, line: bytes, pos: int) -> None:
        self._it = _ARG.finditer(line, pos)
        self._got: list[bytes] = []

    @classmethod
    def of(cls, args: list[bytes]) -> Args:
        read = cls(b"", 0)
        read._got = list(args)
        return read

    def upto(self, n: int | None) -> list[bytes]:
        """The first ``n`` arguments (all with None; fewer if the line has fewer)."""
        while n is None or len(self._got) < n:
            m = next(self._it, None)
            if m is None:
                break
            self._got.append(_unescape(m.group(1)))
        return self._got if n is None else self._got[:n]


def parse_lazily(line: bytes) -> tuple[str, Args] | None:
    """``(client, args)`` of one MONITOR line (client ``lua`` for a script's commands)."""
    m = _LINE.match(line)
    if m is None:
        return None
    return m.group(1).decode(), Args(line, m.end())


def parse(line: bytes) -> tuple[str, list[bytes]] | None:
    """``parse_lazily`` with every argument read."""
    parsed = parse_lazily(line)
    return None if parsed is None else (parsed[0], parsed[1].upto(None))


def template(key: bytes) -> str:
    """A key's family for reports: the namespace dropped, hash tags and ids starred."""
    text = key.decode(errors="replace")
    text = re.sub(r"\{[^}]*\}", "{*}", text)
    parts = text.split(":")[1:] or [text]
    return ":".join("*" if any(c.isdigit() for c in p) else p for p in parts)


@dataclass
class KeyTable:
    """Where each command's keys are, from the server's ``COMMAND`` reply; movable-key
    commands other than scripts and stream reads are asked with ``COMMAND GETKEYS``."""

    client: redis.Redis
    specs: dict[bytes, tuple[int, int, int, bool]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, info in self.client.command().items():
            flags = {f if isinstance(f, str) else f.decode() for f in info.get("flags", [])}
            spec = (info["first_key_pos"], info["last_key_pos"], info["step_count"])
            self.specs[name.upper().encode()] = (*spec, "movablekeys" in flags)

    def keys(self, lazy: Args, alone: bool = False) -> list[bytes]:
        """The keys of a command; ``alone`` (not in a script or a transaction): only where
        it could name keys of two slots (so a one-key command is not even read)."""
        head = lazy.upto(3)
        if not head:
            return []
        name = head[0].upper()
        if name in _SCRIPTS:
            n = int(head[2]) if len(head) > 2 else 0
            return lazy.upto(3 + n)[3:]
        if name in (b"XREAD", b"XREADGROUP"):
            args = lazy.upto(None)
            upper = [a.upper() for a in args]
            if b"STREAMS" not in upper:
                return []
            rest = args[upper.index(b"STREAMS") + 1 :]
            return rest[: len(rest) // 2]
        if name in _CONTAINERS:  # XGROUP CREATE key …, OBJECT ENCODING key …
            return [] if alone else head[2:3]
        spec = self.specs.get(name)
        if spec is None:
            return []
        first, last, step, movable = spec
        if movable:
            try:
                return [
                    k if isinstance(k, bytes) else str(k).encode()
                    for k in self.client.command_getkeys(*lazy.upto(None))
                ]
            except redis.ResponseError:
                return []
        if first == 0 or (alone and first == last):
            return []
        args = lazy.upto(None if last < 0 else last + 1)
        end = len(args) + last + 1 if last < 0 else len(args)
        return args[first:end:step]


@dataclass
class Watcher:
    """Follows the feed client by client and writes a finding for each cross-slot unit."""

    table: KeyTable
    out: IO[str]
    txn: dict[str, list[bytes]] = field(default_factory=dict)
    watched: dict[str, list[bytes]] = field(default_factory=dict)
    script: tuple[str, bytes, list[bytes]] | None = None  # client, command, keys so far

    def _report(self, kind: str, command: bytes, keys: list[bytes]) -> None:
        slots = {key_slot(k) for k in keys}
        if len(slots) <= 1:
            return
        finding = {
            "kind": kind,
            "command": command.decode(errors="replace"),
            "families": sorted({template(k) for k in keys}),
            "keys": sorted({k.decode(errors="replace") for k in keys})[:500],
            "slots": len(slots),
        }
        self.out.write(json.dumps(finding) + "\n")

    def _close_script(self) -> None:
        if self.script is None:
            return
        client, command, keys = self.script
        self.script = None
        if client in self.txn:
            self.txn[client].extend(keys)
        else:
            self._report("script", command, keys)

    def feed(self, client: str, lazy: Args | list[bytes]) -> None:
        if isinstance(lazy, list):  # already read
            lazy = Args.of(lazy)
        if client == "lua":
            if self.script is not None:
                self.script[2].extend(self.table.keys(lazy))
            return
        self._close_script()
        head = lazy.upto(2)
        if not head:
            return
        name = head[0].upper()
        if name == b"ECHO" and len(head) > 1 and head[1].startswith(MARK):
            self.out.write(json.dumps({"mark": head[1][len(MARK) :].decode()}) + "\n")
            self.out.flush()
        elif name == b"WATCH":
            self.watched.setdefault(client, []).extend(lazy.upto(None)[1:])
        elif name == b"UNWATCH":
            self.watched.pop(client, None)
        elif name == b"MULTI":
            self.txn[client] = list(self.watched.pop(client, []))
        elif name in (b"EXEC", b"DISCARD"):
            keys = self.txn.pop(client, [])
            if name == b"EXEC":
                self._report("multi", b"MULTI", keys)
        elif name in _SCRIPTS:
            self.script = (client, name, list(self.table.keys(lazy)))
        elif client in self.txn:
            self.txn[client].extend(self.table.keys(lazy))
        else:
            self._report("command", name, self.table.keys(lazy, alone=True))


PAUSED = threading.Event()  # ``main``: SIGUSR1 pauses (MONITOR off), SIGUSR2 resumes


def watch(url: str, out: IO[str], seconds: float | None = None) -> None:
    """Follow the server's MONITOR feed until the server goes away (or ``seconds`` pass);
    while ``PAUSED`` is set, with MONITOR off (it costs Redis and this process time)."""
    table = KeyTable(redis.Redis.from_url(url, socket_timeout=10))
    watcher = Watcher(table, out)
    end = None if seconds is None else time.monotonic() + seconds
    while end is None or time.monotonic() < end:
        if PAUSED.is_set():
            time.sleep(0.05)
            continue
        if not _follow(url, watcher, end):
            return


def _follow(url: str, watcher: Watcher, end: float | None) -> bool:
    """One MONITOR connection until the time is up or a pause; False if the server left."""
    connection = redis.Redis.from_url(url).connection_pool.get_connection()
    try:
        connection.send_command("MONITOR")
        connection.read_response()  # OK
        while (end is None or time.monotonic() < end) and not PAUSED.is_set():
            left = 0.2 if end is None else min(max(end - time.monotonic(), 0.01), 0.2)
            if not connection.can_read(timeout=left):
                continue
            line = connection.read_response(disable_decoding=True, timeout=None)
            parsed = parse_lazily(line if isinstance(line, bytes) else str(line).encode())
            if parsed is not None:
                watcher.feed(*parsed)
    except (redis.ConnectionError, OSError):
        return False
    finally:
        connection.disconnect()
    return True


def main(argv: list[str]) -> int:
    url, path = argv
    signal.signal(signal.SIGUSR1, lambda *_: PAUSED.set())
    signal.signal(signal.SIGUSR2, lambda *_: PAUSED.clear())
    with open(path, "a", buffering=1) as out:
        watch(url, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
