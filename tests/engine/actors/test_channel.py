"""The booking channel (engine/actors/channel.py): real sockets, the handshake, deadlines and
reconnection; then the engine's bookings over it against a real host on Ray."""

from __future__ import annotations

import asyncio
import pickle
import socket
import time

import pytest

from engine.actors.channel import NONCE, ChannelClient, ChannelError, ChannelServer, proof
from engine.core.protocol import BOOK
from engine.outcomes import Booked
from tests import helpers


def echo_server(delay: float = 0.0) -> ChannelServer:
    """A server that answers each batch with the pickled list of its requests' stamps."""

    def serve(requests):
        time.sleep(delay)
        return pickle.dumps([r[0] for r in requests])

    return ChannelServer("127.0.0.1", serve)


def client_of(server: ChannelServer, deadline: float = 5.0, secret: bytes | None = None):
    async def locate():
        return server.address, server.port, secret if secret is not None else server.secret

    return ChannelClient(locate, deadline)


def batch(n: int) -> list[tuple]:
    return [(i, BOOK, "h1:2026-12-01", f"s{i % 7}", i * 31, -i) for i in range(n)]


async def test_a_batch_crosses_whole_and_answers_in_order():
    server = echo_server()
    client = client_of(server)
    try:
        for n in (1, 16, 4096):  # 4096 requests: many reads on each side
            assert pickle.loads(await client.call(batch(n))) == list(range(n))
        assert server.connections == 1, "one connection kept for every call"
    finally:
        client.close()
        server.close()


async def test_a_client_with_the_wrong_secret_gets_an_error_and_nothing_is_served():
    served = []
    server = ChannelServer("127.0.0.1", lambda requests: served.append(requests) or b"")
    client = client_of(server, secret=b"x" * 32)
    try:
        with pytest.raises(ChannelError, match="secret"):
            await client.call(batch(3))
        assert served == []
    finally:
        client.close()
        server.close()


def test_a_peer_that_cannot_prove_the_secret_is_turned_away_before_any_request():
    served = []
    server = ChannelServer("127.0.0.1", lambda requests: served.append(requests) or b"")
    try:
        with socket.create_connection((server.address, server.port), timeout=5) as conn:
            conn.sendall(b"n" * NONCE)
            answer = conn.recv(32 + NONCE)
            assert answer[:32] == proof(server.secret, b"host", b"n" * NONCE)
            conn.sendall(b"\x00" * 32)  # a wrong proof
            conn.sendall(b"\x00\x00\x00\x05hello")  # then a frame it must never read
            assert conn.recv(100) == b"", "the host closed the connection"
        assert served == []
        assert server.connections == 0
    finally:
        server.close()


async def test_a_call_past_its_deadline_fails_in_time_and_the_next_reconnects():
    server = echo_server(delay=1.5)
    client = client_of(server, deadline=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(ChannelError, match="TimeoutError"):
            await client.call(batch(2))
        assert time.monotonic() - started < 1.0, "the deadline, not the host's answer"
        client.deadline = 5.0
        assert pickle.loads(await client.call(batch(2))) == [0, 1], "no late answer taken"
        assert server.connections == 2
    finally:
        client.close()
        server.close()


async def test_a_batch_lost_after_it_went_out_says_so_and_one_never_sent_says_that():
    def dies(requests):
        raise OSError("the host died while deciding")

    server = ChannelServer("127.0.0.1", dies)
    client = client_of(server)
    try:
        with pytest.raises(ChannelError) as lost:
            await client.call(batch(2))
        assert lost.value.sent, "it reached the host: the outcome is unknown"
        server.close()
        with pytest.raises(ChannelError) as refused:
            await client.call(batch(2))
        assert not refused.value.sent, "nobody listens: it surely never left"
    finally:
        client.close()
        server.close()


async def test_a_server_gone_is_a_channel_error_not_a_hang():
    server = echo_server()
    client = client_of(server, deadline=2.0)
    assert pickle.loads(await client.call(batch(1))) == [0]
    server.close()  # the listener goes; the open connection is cut below
    client._writer.transport.abort()  # as when the host's process dies
    with pytest.raises(ChannelError):
        await client.call(batch(1))
    with pytest.raises(ChannelError):  # and connecting again finds nobody
        await client.call(batch(1))


async def test_bookings_go_over_the_channel_and_match_redis(runtime):
    now = time.time()
    date = time.strftime("%Y-%m-%d", time.gmtime(now + 5 * 86400))
    session = helpers.spec(id="chan1", hospital_id="hc", date=date, capacity=3, opens_at=now - 60)
    engine = runtime.engine()
    assert (await engine.create_session(session)).session_id == "chan1"  # by Ray: a spec
    answers = await asyncio.gather(*(engine.book("chan1", p, f"r{p}") for p in range(10)))
    winners = sorted(p for p, a in enumerate(answers) if isinstance(a, Booked))
    assert len(winners) == 3
    info = await runtime.hosts[engine.host_of(session.shard_id)].info.remote()
    assert info["channel_connections"] == 1
    [stored] = [s for s in await engine.store.read_shard_sessions(session.shard_id)]
    assert sorted(p for _, p, _ in stored.live_bookings()) == winners
    await engine.close()


async def test_a_connection_closed_while_idle_is_replaced_before_the_next_batch():
    server = echo_server()
    client = client_of(server)
    try:
        assert pickle.loads(await client.call(batch(1))) == [0]
        server.close()
        server = echo_server()  # a restarted host: a new address, a new secret
        client.locate = client_of(server).locate
        old = client._writer
        old.transport.abort()  # the old incarnation's end went away while nothing was sent
        await asyncio.sleep(0.05)
        assert pickle.loads(await client.call(batch(2))) == [0, 1], "sent on a new connection"
        assert server.connections == 1
    finally:
        client.close()
        server.close()
