"""Which addresses the server may call out to (the hospitals' HIS and insurance links).

An admin types the URL, but the server makes the call: left alone, a link to
``http://169.254.169.254/latest/`` (the cloud metadata service), to loopback or to the private
network would make the server fetch what nobody outside may (server-side request forgery).
``Egress`` refuses every address that is not public (loopback, private, link-local, shared,
multicast, unspecified, reserved, and the IPv6 forms embedding one of these) unless it lies in
one of the networks the operator allows (``his_allow_networks``).

It is checked twice: when the link is set (``check_url``: a clear answer to the admin) and at
every call (``pin``), because a name can answer differently each time it is asked (DNS
rebinding: public when checked, ``127.0.0.1`` when connecting). ``pin`` resolves the name
once, refuses the call if *any* address it answers is refused, and points the request at that
very address, with the original ``Host`` header and, for https, the original name as TLS SNI
and for the certificate check (httpcore's ``sni_hostname`` request extension), so the address
connected to is the address checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from engine.errors import EgressRefused

if TYPE_CHECKING:
    from engine.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

SCHEMES = {"http": 80, "https": 443}
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fec0::/10")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the last 32 bits are IPv4


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses ``host`` answers for TCP, in the resolver's order, each once (the OS's
    resolver, through the running loop). ``OSError`` (``socket.gaierror``) when it has none."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in out:
                out.append(ip)
    return out


def embedded(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it is one's mapped (``::ffff:a.b.c.d``)
    or NAT64 (``64:ff9b::a.b.c.d``) form: the address the connection ends up at."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None


def category(ip: IPAddress) -> str | None:
    """What kind of address that must not be called ``ip`` is, e.g. ``"a loopback"`` (None: a
    public one). IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4) are judged by it."""
    inner = embedded(ip)
    if inner is not None:
        return category(inner)
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour is not None:
        carried = category(ip.sixtofour)
        if carried is not None:
            return f"a 6to4 form of {carried}"
    if ip.is_unspecified:
        return "an unspecified"
    if ip.is_loopback:
        return "a loopback"
    if ip.is_link_local:
        return "a link-local"
    if ip.is_multicast:
        return "a multicast"
    if ip in SHARED:
        return "a shared (carrier-grade NAT)"
    if any(ip in net for net in PRIVATE):
        return "a private"
    if ip.is_reserved:
        return "a reserved"
    if ip.is_private or not ip.is_global:
        return "a special-purpose"
    return None


@dataclass(frozen=True, slots=True)
class Pinned:
    """A request's URL pointed at one checked address: send ``url`` with ``headers`` and
    ``extensions`` and the connection goes to ``address`` and nowhere else."""

    url: httpx.URL
    address: IPAddress
    headers: dict[str, str]
    extensions: dict[str, Any]


class Egress:
    """The outgoing-call policy: public addresses, and those in the ``allow`` networks.

    ``resolver`` answers a name's addresses (``resolve``; tests replace it)."""

    def __init__(self, allow: Iterable[str] = (), resolver: Resolver = resolve) -> None:
        self.allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in allow
        )
        self.resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> Egress:
        """The policy of ``his_allow_networks``."""
        return cls(settings.his_allow_networks)

    def refusal(self, ip: IPAddress | str) -> str | None:
        """Why ``ip`` may not be called, e.g. ``"a loopback"`` (None: it may)."""
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        address = embedded(address) or address  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.allow):
            return None
        return category(address)

    def allowed(self, ip: IPAddress | str) -> bool:
        """Whether the server may call ``ip``."""
        return self.refusal(ip) is None

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` (a literal address is not looked up), every one checked:
        ``EgressRefused`` if any is refused (none is picked around it: a name that also
        answers a refused address is not trusted). ``OSError`` when the name does not
        resolve."""
        literal = _literal(host)
        found = [literal] if literal is not None else await self.resolver(host, port)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        for ip in found:
            why = self.refusal(ip)
            if why is not None:
                shown = "is" if literal is not None else f"resolves to {ip},"
                raise EgressRefused(host, f"{shown} {why} address")
        return found

    async def check_url(self, url: str, timeout: float = 5.0) -> None:
        """Refuse (``EgressRefused``) a link the server may not call: not http or https, no
        host, a name that does not resolve (within ``timeout`` seconds), or any address it
        resolves to refused. A literal address is judged without any lookup."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise EgressRefused(url, "is not a URL") from exc
        host, port = _host_port(parsed, url)
        try:
            async with asyncio.timeout(timeout):
                await self.addresses(host, port)
        except OSError as exc:  # no such name, or no answer in time (TimeoutError)
            raise EgressRefused(host, f"does not resolve ({exc or 'no answer in time'})") from exc

    async def pin(self, url: httpx.URL) -> Pinned:
        """Resolve ``url``'s host now, check every address, and point the request at the
        first (``EgressRefused`` if any is refused, ``OSError`` if the name does not
        resolve)."""
        host, port = _host_port(url, str(url))
        address = (await self.addresses(host, port))[0]
        extensions: dict[str, Any] = {}
        if url.scheme == "https" and _literal(host) is None:
            extensions["sni_hostname"] = host  # SNI and the certificate's name: the host's
        return Pinned(
            url=url.copy_with(host=str(address)),
            address=address,
            headers={"Host": url.netloc.decode("ascii")},
            extensions=extensions,
        )


def _literal(host: str) -> IPAddress | None:
    """The address a host written as one is (None: a name, to be resolved)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _host_port(url: httpx.URL, shown: str) -> tuple[str, int]:
    """The (ASCII) host and port an http(s) URL connects to; ``EgressRefused`` otherwise."""
    if url.scheme not in SCHEMES:
        raise EgressRefused(shown, f"uses scheme {url.scheme!r} (only http and https are called)")
    host = url.raw_host.decode("ascii")
    if not host:
        raise EgressRefused(shown, "has no host")
    return host, url.port or SCHEMES[url.scheme]


__all__ = ["Egress", "Pinned", "category", "embedded", "resolve"]
