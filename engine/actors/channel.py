"""The booking channel: a direct socket from each API worker to each host, beside Ray.

A Ray actor call costs about 0.6 ms of CPU here (both sides together), which a batch of
bookings pays on every round; the socket costs a tenth of that. Ray still starts, finds,
restarts and controls the hosts, and carries every call that is not a batch of requests
(timers, rules, creating sessions); the channel only carries batches.

- **Who may talk.** A host makes a random secret per incarnation and gives it, with its
  address, only through Ray (``Host.channel``), whose own channels are authenticated. Both
  ends prove they know it without sending it (HMAC of the other's random challenge, compared in
  constant time), so nothing else on the network can book through a host, and a process that
  took a dead host's port cannot answer in its name.
- **What crosses.** Frames of a 4-byte length and a body. Requests go as msgpack of flat
  tuples (never pickle: the host unpickles nothing from a socket); a request that is not
  flat (``CREATE`` carries a spec) goes by Ray. Answers come back as the host's pickle of
  outcomes, the same bytes ``Host.submit`` returns over Ray.
- **Deadlines.** Every exchange has one (``Settings.host_call_seconds``). A call that fails
  or times out once sent closes the connection (no late answer can be taken for the next
  call's) and its writes are ``OutcomeUnknown``, as a failed Ray call's are; one that failed
  before its frame went out (the host not found, not reachable, not verified) is
  ``Unavailable``: nothing was booked. The next call asks Ray for the host's channel again,
  which finds a restarted incarnation.

The host serves each connection on a thread of its own and decides under the host's lock, so a
batch from the channel and a Ray call never run beside each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack
from ray.exceptions import RayError

from engine.core.protocol import CREATE, Request

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20  # a batch of 4096 requests is under 1 MB
NONCE = 16


def proof(secret: bytes, role: bytes, challenge: bytes) -> bytes:
    return hmac.new(secret, role + challenge, hashlib.sha256).digest()


def flat(request: Request) -> bool:
    """Can this request cross the channel (every field a plain value)?"""
    return request[1] != CREATE


# ----- the host's side (threads, blocking sockets) --------------------------------------------


class ChannelServer:
    """Listens on ``address``; answers each batch with ``serve(requests) -> bytes``."""

    def __init__(self, address: str, serve: Callable[[list[Request]], bytes]) -> None:
        self.secret = secrets.token_bytes(32)
        self.serve = serve
        self._listener = socket.create_server((address, 0), backlog=64)
        self.address = address
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, name="channel-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), name="channel", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(5.0)  # the handshake; then wait as long as the worker lives
                if not self._handshake(conn):
                    return
                conn.settimeout(None)
                self.connections += 1
                while True:
                    body = read_frame(conn)
                    if body is None:
                        return
                    call_id, requests = msgpack.unpackb(body, use_list=True)
                    answer = self.serve([tuple(r) for r in requests])  # type: ignore[misc]
                    conn.sendall(frame(msgpack.packb(call_id) + answer))
            except (OSError, ValueError, msgpack.UnpackException) as exc:
                log.info("channel connection closed: %s", exc)
            except Exception:  # a bug: this connection ends, the worker connects again
                log.exception("channel connection failed")

    def _handshake(self, conn: socket.socket) -> bool:
        challenge = recv_exactly(conn, NONCE)
        if challenge is None:
            return False
        mine = secrets.token_bytes(NONCE)
        conn.sendall(proof(self.secret, b"host", challenge) + mine)
        theirs = recv_exactly(conn, 32)
        if theirs is None or not hmac.compare_digest(theirs, proof(self.secret, b"api", mine)):
            log.warning("channel: a peer without the host's secret was turned away")
            return False
        return True

    def close(self) -> None:
        """Stop listening (``shutdown`` wakes the thread blocked in ``accept``)."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = conn.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(conn: socket.socket) -> bytes | None:
    header = recv_exactly(conn, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return recv_exactly(conn, size)


# ----- the API worker's side (asyncio) --------------------------------------------------------


class ChannelError(Exception):
    """The channel failed. ``sent``: the batch may have reached the host (its outcome is
    unknown); else it surely did not (the host could not be found, reached or verified)."""

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class ChannelClient:
    """One connection to one host, opened on first use and again after any failure.

    ``locate`` answers the host's (address, port, secret) — a Ray call to ``Host.channel``."""

    def __init__(self, locate: Callable[[], Any], deadline: float) -> None:
        self.locate = locate
        self.deadline = deadline
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._calls = 0
        self._sent = False  # did the current call's frame go out

    async def call(self, requests: list[Request]) -> bytes:
        """Send a batch, answer the host's pickled outcomes; ``ChannelError`` on any failure
        (connecting, sending, a timeout, a closed connection)."""
        async with self._lock:  # one exchange at a time (the mailbox sends one anyway)
            self._sent = False
            try:
                return await asyncio.wait_for(self._exchange(requests), self.deadline)
            except (OSError, EOFError, TimeoutError, ValueError, ChannelError, RayError) as exc:
                self.close()
                raise ChannelError(f"{type(exc).__name__}: {exc}", sent=self._sent) from exc

    async def _exchange(self, requests: list[Request]) -> bytes:
        if self._reader is not None and self._reader.at_eof():  # closed while idle (a host
            self.close()  # restarted): nothing was sent on it, so connect again and send
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._calls += 1
        call_id = self._calls
        self._sent = True  # from here on the host may have it
        self._writer.write(frame(msgpack.packb([call_id, requests])))
        header = await self._reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ChannelError(f"frame of {size} bytes")
        body = await self._reader.readexactly(size)
        unpacker = msgpack.Unpacker()
        unpacker.feed(body)
        answered = unpacker.unpack()
        if answered != call_id:
            raise ChannelError(f"answer to call {answered}, expected {call_id}")
        return body[unpacker.tell() :]

    async def _connect(self) -> None:
        address, port, secret = await self.locate()
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            challenge = secrets.token_bytes(NONCE)
            writer.write(challenge)
            answer = await reader.readexactly(32 + NONCE)
            if not hmac.compare_digest(answer[:32], proof(secret, b"host", challenge)):
                raise ChannelError("the peer does not hold the host's secret")
            writer.write(proof(secret, b"api", answer[32:]))
            await writer.drain()
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer = reader, writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
