"""Which network targets the service may call (callback URLs): a guard against server-side request forgery.

A callback URL is supplied by a client, and the service POSTs to it from inside the deployment, so an
unchecked URL reaches what only the service can reach: loopback (its own Redis, its own API), private
networks, the cloud metadata endpoint (169.254.169.254). `check_target` resolves the host and refuses
the URL unless EVERY address it resolves to is globally routable unicast, or lies in a network the
operator allow-listed (`callback_allow_networks`, e.g. `127.0.0.1/32` for the embedded demo). Refused:
loopback, private (RFC 1918, ULA fc00::/7), link-local (169.254/16, fe80::/10), unspecified,
multicast, reserved, shared address space (CGNAT 100.64/10), other special-purpose ranges, and IPv6
forms that embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) checked as that IPv4 address.

The API checks at POST (a refusal is a 422 naming `callback_url`); the deliverer checks again before
each delivery and connects to the address it checked (`core.callbacks`), so DNS cannot swap in another
address between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 3.0
SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="netguard-resolve")
"""getaddrinfo has no timeout of its own: it runs here and the caller waits a bounded time."""


def _new_resolver_after_fork() -> None:
    # A forked child (a Celery pool process) inherits the executor but not its threads: a fresh one.
    global _resolver
    _resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="netguard-resolve")


os.register_at_fork(after_in_child=_new_resolver_after_fork)


class TargetRefused(ValueError):
    """The URL must never be called (bad scheme, or an address outside what is allowed); final."""


class TargetUnresolved(ValueError):
    """The host did not resolve. `temporary`: the resolver failed or timed out (try again later);
    otherwise the name does not exist."""

    def __init__(self, message: str, *, temporary: bool) -> None:
        super().__init__(message)
        self.temporary = temporary


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`, the first vetted one) and what to ask for there."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]


def parse_networks(text: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """`"127.0.0.1/32, 10.0.0.0/8"` (or a list of such strings) as networks; ValueError names a bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    networks: list[IPNetwork] = []
    for item in (item.strip() for item in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise ValueError(f"{item!r} is not an IP network in CIDR notation ({error})") from None
    return tuple(networks)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _allowed(address: IPAddress, allow: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in allow)


def address_refusal(address: IPAddress, allow: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why the service must not connect to `address` (None: it may)."""
    if _allowed(address, allow):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded, allow)
            if address.ipv4_mapped is not None or reason is not None:
                return f"embeds {embedded}, which is {reason}" if reason else None
    for kind, refused in (
        ("a loopback address", address.is_loopback),
        ("the unspecified address", address.is_unspecified),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("in shared address space (CGNAT 100.64.0.0/10)", address in SHARED_ADDRESS_SPACE),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("not globally routable", not address.is_global),
    ):
        if refused:
            return kind
    return None


def _split(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise TargetRefused(f"not a valid URL: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TargetRefused(f"the scheme {scheme or '(none)'!r} is not allowed: use http or https")
    if not parts.hostname:
        raise TargetRefused("the URL names no host")
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def resolve(host: str, port: int, timeout_s: float = RESOLVE_TIMEOUT_S) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to (an IP literal: itself), in the resolver's order."""
    try:
        return (ipaddress.ip_address(host),)
    except ValueError:
        pass
    future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise TargetUnresolved(f"resolving {host!r} took over {timeout_s:g} s", temporary=True) from None
    except (socket.gaierror, UnicodeError) as error:
        temporary = isinstance(error, socket.gaierror) and error.errno in (socket.EAI_AGAIN, socket.EAI_FAIL)
        raise TargetUnresolved(f"{host!r} does not resolve ({error})", temporary=temporary) from None
    addresses: dict[IPAddress, None] = {}
    for _family, _type, _proto, _canonical, sockaddr in infos:
        addresses[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    if not addresses:
        raise TargetUnresolved(f"{host!r} resolves to no address", temporary=False)
    return tuple(addresses)


def check_target(
    url: str, allow: tuple[IPNetwork, ...] = (), *, timeout_s: float = RESOLVE_TIMEOUT_S
) -> Target:
    """The checked target of `url`: TargetRefused when any resolved address is refused (or the scheme
    is not http/https), TargetUnresolved when the host does not resolve."""
    scheme, host, port = _split(url)
    addresses = resolve(host, port, timeout_s)
    for address in addresses:
        reason = address_refusal(address, allow)
        if reason is not None:
            shown = host if host == str(address) else f"{host} ({address})"
            raise TargetRefused(
                f"{shown} is {reason}: callbacks may only go to public addresses, or to networks "
                "allow-listed in UNLEARN_CALLBACK_ALLOW_NETWORKS"
            )
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=addresses)
