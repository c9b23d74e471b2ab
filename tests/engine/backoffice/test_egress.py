"""Where the server may call out to (``engine/backoffice/egress.py``): which addresses (a table, no
network), links checked when they are set, and the adapters' calls against real local HTTP
servers: a name rebound to loopback between the check and the call is refused before any
connection, the address checked is the one connected to (also over TLS, with the name as SNI
and for the certificate), an oversized answer is given up on, and a delivery to a refused
address fails at once (on a real Redis) for an admin to drop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine.backoffice.deliveries import HIS, Deliveries
from engine.backoffice.egress import Egress, IPAddress
from engine.backoffice.his import HttpHis
from engine.backoffice.record import Record
from engine.backoffice.record_book import RecordBook
from engine.errors import EgressRefused, HisUnavailable
from engine.store.keys import Keys

ALLOW = ("127.0.0.0/8", "10.0.0.0/8", "fc00::/7")
PUBLIC = "93.184.216.34"  # a public address (no call is ever made to it here)


@pytest.mark.parametrize(
    ("address", "plain", "with_allow_list"),
    [
        ("169.254.169.254", False, False),  # the cloud metadata service: link-local
        ("127.0.0.1", False, True),
        ("127.8.9.10", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, False),
        ("192.168.1.1", False, False),
        ("100.64.0.1", False, False),  # shared (carrier-grade NAT)
        ("0.0.0.0", False, False),
        ("224.0.0.1", False, False),
        ("240.0.0.1", False, False),  # reserved
        ("255.255.255.255", False, False),
        ("192.0.2.7", False, False),  # documentation
        ("::1", False, False),
        ("::", False, False),
        ("fe80::1", False, False),
        ("fc00::1", False, True),
        ("ff02::1", False, False),
        ("::ffff:127.0.0.1", False, True),  # IPv4-mapped: judged as 127.0.0.1
        ("::ffff:169.254.169.254", False, False),
        ("64:ff9b::a9fe:a9fe", False, False),  # NAT64 form of 169.254.169.254
        ("2002:a9fe:a9fe::1", False, False),  # 6to4 form of 169.254.169.254
        ("8.8.8.8", True, True),
        ("93.184.216.34", True, True),
        ("::ffff:8.8.8.8", True, True),
        ("2001:4860:4860::8888", True, True),
    ],
)
def test_which_addresses_may_be_called(address, plain, with_allow_list):
    assert Egress().allowed(address) is plain
    assert Egress(ALLOW).allowed(ipaddress.ip_address(address)) is with_allow_list
    assert (Egress().refusal(address) is None) is plain


class Answers:
    """A resolver answering each given list of addresses in turn (the last one from then on),
    recording what it was asked."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = [[ipaddress.ip_address(a) for a in answer] for answer in answers]
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append((host, port))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


async def no_lookup(host: str, port: int) -> list[IPAddress]:
    raise AssertionError(f"looked {host} up")


async def test_links_are_checked_when_set():
    egress = Egress()
    refused = {
        "http://169.254.169.254/latest/": "is a link-local address",
        "file:///etc/passwd": "uses scheme 'file'",
        "http://localhost:1/": "a loopback address",  # a name: resolved (for real) and judged
        "http://[::ffff:127.0.0.1]/": "is a loopback address",
        "http://2130706433/": "resolves to 127.0.0.1",  # 127.0.0.1 written as a number
        "http:///nothing": "has no host",
    }
    for url, reason in refused.items():
        with pytest.raises(EgressRefused) as raised:
            await egress.check_url(url)
        assert reason in raised.value.reason, (url, raised.value)
        assert str(raised.value).startswith("address_not_allowed: ")
    await Egress(resolver=no_lookup).check_url("http://8.8.8.8/")  # no network traffic at all
    await Egress(resolver=no_lookup).check_url("https://[2001:4860:4860::8888]:8443/his")
    await Egress(ALLOW, resolver=no_lookup).check_url("http://127.0.0.1:9/")
    with pytest.raises(EgressRefused, match="does not resolve"):
        await Egress(resolver=Answers([])).check_url("http://nowhere.example/")


async def test_a_name_answering_any_refused_address_is_refused():
    """No address is picked around a refused one: the name itself is not trusted."""
    egress = Egress(resolver=Answers([PUBLIC, "127.0.0.1"]))
    with pytest.raises(EgressRefused, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        await egress.check_url("http://his.example/")
    with pytest.raises(EgressRefused):
        await egress.pin(httpx.URL("http://his.example/his/bookings"))


@dataclass
class Seen:
    line: str
    headers: dict[str, str]
    body: bytes


Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 (over TLS if given a context): counts connections,
    records each request and answers it with ``reply``, one request a connection."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests: list[Seen] = []
        self.done = asyncio.Event()
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
            headers = {k.lower(): v for k, v in headers.items()}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Seen(head[0], headers, body))
            await self.reply(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            self.done.set()

    @contextlib.asynccontextmanager
    async def running(self, tls: ssl.SSLContext | None = None) -> AsyncIterator[LocalServer]:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=tls)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


def json_reply(doc: dict) -> Reply:
    async def reply(writer: asyncio.StreamWriter) -> None:
        body = json.dumps(doc).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    return reply


BOOKING = {"key": "i:s1.1", "booking_id": "s1.1", "hospital_id": "h1"}


async def test_a_name_rebound_to_loopback_after_the_check_is_refused_before_connecting():
    server = LocalServer(json_reply({"his_no": "H1"}))
    async with server.running():
        url = f"http://his.example:{server.port}"
        resolver = Answers([PUBLIC], ["127.0.0.1"])  # public when checked, then loopback
        egress = Egress(resolver=resolver)  # loopback is NOT allowed
        await egress.check_url(url)  # the link is accepted ...
        his = HttpHis(url, timeout=1.0, egress=egress)
        try:
            with pytest.raises(EgressRefused, match=r"resolves to 127\.0\.0\.1"):
                await his.book(BOOKING)  # ... but the call, resolved anew, is not
        finally:
            await his.close()
        assert resolver.asked == [("his.example", server.port)] * 2
    assert server.connections == 0
    assert server.requests == []


async def test_the_call_goes_to_the_address_checked_with_the_name_as_host():
    """``his.example`` is in no DNS: the request reaches the local server only because it is
    sent to the address the (replaced) resolver answered, which is the one checked."""
    server = LocalServer(json_reply({"his_no": "H7"}))
    async with server.running():
        egress = Egress(("127.0.0.0/8",), resolver=Answers(["127.0.0.1"]))
        his = HttpHis(f"http://his.example:{server.port}/", timeout=1.0, egress=egress)
        try:
            assert await his.book(BOOKING) == "H7"
        finally:
            await his.close()
    (request,) = server.requests
    assert request.line == "POST /his/bookings HTTP/1.1"
    assert request.headers["host"] == f"his.example:{server.port}"
    assert json.loads(request.body) == BOOKING


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for ``his.example`` (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate with")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=his.example"),
            *("-addext", "subjectAltName=DNS:his.example"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_over_tls_the_name_is_the_sni_and_the_certificate_checked(certificate):
    cert, key = certificate
    names: list[str | None] = []
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server_tls.sni_callback = lambda _sock, name, _ctx: names.append(name)
    server = LocalServer(json_reply({"his_no": "H9"}))
    async with (
        server.running(server_tls),
        httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as client,
    ):
        egress = Egress(("127.0.0.0/8",), resolver=Answers(["127.0.0.1"]))
        his = HttpHis(f"https://his.example:{server.port}", client=client, egress=egress)
        assert await his.book(BOOKING) == "H9"
        assert names == ["his.example"]
        assert server.requests[0].headers["host"] == f"his.example:{server.port}"
        # the same server by its address: the certificate is not for 127.0.0.1
        direct = HttpHis(f"https://127.0.0.1:{server.port}", client=client, egress=egress)
        with pytest.raises(HisUnavailable, match="certificate"):
            await direct.book(BOOKING)


def streaming(total: int, sent: list[int], declared: int | None = None) -> Reply:
    """A reply of ``total`` bytes in 64 KiB chunks, counting what it managed to send."""

    async def reply(writer: asyncio.StreamWriter) -> None:
        length = f"Content-Length: {declared}\r\n" if declared is not None else ""
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}\r\n".encode())
        chunk = b" " * 65536
        sent.append(0)
        while sent[0] < total:
            writer.write(chunk)
            await writer.drain()  # raises once the client hung up
            sent[0] += len(chunk)

    return reply


@pytest.mark.parametrize("declared", [None, 64 << 20], ids=["undeclared", "declared"])
async def test_an_oversized_answer_is_given_up_on_without_reading_it_all(declared):
    total, sent = 64 << 20, []
    server = LocalServer(streaming(total, sent, declared))
    async with server.running():
        egress = Egress(("127.0.0.0/8",))
        his = HttpHis(f"http://127.0.0.1:{server.port}", egress=egress, max_bytes=64 << 10)
        started = time.perf_counter()
        try:
            with pytest.raises(HisUnavailable, match=f"more than {64 << 10} bytes"):
                await his.book(BOOKING)
        finally:
            await his.close()
        await asyncio.wait_for(server.done.wait(), 10)
    assert sent[0] < total // 4  # it stopped long before the end
    assert time.perf_counter() - started < 5


def record(n: int) -> Record:
    return Record(
        booking_id=f"s1.{n}",
        session_id="s1",
        hospital_id="h1",
        department_id="dep1",
        doctor_id="doc1",
        date="2026-12-01",
        period="AM",
        slot_no=n + 1,
        slot_at=time.time() + 86400,
        patient_id=100 + n,
        state="booked",
        was_confirmed=True,
    )


async def test_a_delivery_to_a_refused_address_fails_at_once_and_can_be_dropped(redis_client):
    server = LocalServer(json_reply({"his_no": "H1"}))
    async with server.running():
        deliveries = Deliveries(redis_client, Keys("eg"))  # default: public addresses only
        try:
            await deliveries.configure("h1", {"his_url": f"http://127.0.0.1:{server.port}"})
            records = [record(0), record(1)]
            await RecordBook(redis_client, deliveries.keys).put([(None, r) for r in records])
            assert await deliveries.ask([(None, r) for r in records], 1.0) == 2
            assert await deliveries.run(2.0) == 2
            assert await deliveries.counts("h1") == {"pending": 0, "failed": 2}  # no retries
            failed = await deliveries.listing("h1", "failed")
            assert [x["attempts"] for x in failed] == [1, 1]
            assert all(x["error"].startswith("address_not_allowed: 127.0.0.1") for x in failed)
        finally:
            await deliveries.close()
    assert server.connections == 0

    everywhere = await deliveries.failed_everywhere(10)
    assert {x["booking_id"] for x in everywhere} == {"s1.0", "s1.1"}
    assert all(x["hospital_id"] == "h1" for x in everywhere)
    assert {k: v for k, v in everywhere[0].items() if k != "hospital_id"} in failed
    assert len(await deliveries.failed_everywhere(1)) == 1

    assert await deliveries.drop("h1", HIS, "s1.0") is True
    assert await deliveries.drop("h1", HIS, "s1.0") is False  # already gone
    assert await deliveries.drop("h2", HIS, "s1.1") is False  # not that hospital's
    assert not await redis_client.exists(deliveries.key("h1", HIS, "s1.0"))
    assert await deliveries.retry_failed("h1", 3.0) == 1
    assert await deliveries.drop("h1", HIS, "s1.1") is False  # pending again: kept
    assert await deliveries.counts("h1") == {"pending": 1, "failed": 0}
    assert await deliveries.failed_everywhere(10) == []
