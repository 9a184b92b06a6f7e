"""Where hosted MCP servers may live: the gateway must not become a way into its own network.

A server URL is allowed when its origin matches an entry of ``[mcp].url_allowlist`` (same
scheme and host; same port when the entry names one): such a server may be plain http and
may resolve to private addresses (local servers, tests). Any other URL must be https and
its host must resolve only to public (globally routable) addresses.

Two checks enforce it:

* ``check_url``, before anything is recorded: a URL that is neither allowlisted nor https,
  or whose host is an IP literal (or ``localhost``) that is not public, is a 400.
* ``guarded_transport``, on every connection to a server that is not allowlisted: its
  network backend resolves the host itself, refuses the connection unless every address
  is public, and connects to an address it checked, so a DNS answer that changes between
  check and connect (rebinding) cannot lead it inside. A refusal surfaces as a connect
  error naming the refused address (never a header or token).

Cancellation: resolution and connecting are plain trio awaits; cancelling them leaves
nothing behind.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable, Optional
from urllib.parse import urlsplit

import attrs
import httpcore2
import httpx2
import trio
from httpcore2._backends.auto import AutoBackend  # httpcore2 exports no name for its default backend

from gateway.errors import ApiError, invalid

ADDRESSES_MAX = 16  # resolved addresses tried per connection


@attrs.frozen
class Origin:
    scheme: str
    host: str
    port: Optional[int]  # None in an allowlist entry: any port

    @classmethod
    def parse(cls, url: str) -> "Origin":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {url!r}")
        return cls(parts.scheme, parts.hostname.lower(), parts.port)


def parse_allowlist(entries: Iterable[str]) -> tuple[Origin, ...]:
    """The configured allowlist as origins (ValueError names a bad entry)."""
    origins = []
    for entry in entries:
        origin = Origin.parse(entry)
        if urlsplit(entry).path.strip("/"):
            raise ValueError(f"[mcp].url_allowlist entries are origins (scheme://host[:port]), not {entry!r}")
        origins.append(origin)
    return tuple(origins)


def is_allowlisted(url: str, allowlist: Iterable[Origin]) -> bool:
    """Whether ``url``'s origin matches an allowlist entry."""
    target = Origin.parse(url)
    default_port = 443 if target.scheme == "https" else 80
    for entry in allowlist:
        if entry.scheme == target.scheme and entry.host == target.host and (
                entry.port is None or entry.port == (target.port or default_port)):
            return True
    return False


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not private, loopback, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, allowlist: Iterable[Origin], param: str) -> None:
    """400 unless ``url`` is allowlisted, or https to a host that is not a non-public literal."""
    if is_allowlisted(url, allowlist):
        return
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise invalid(f"Invalid '{param}': MCP servers must be https (or on this gateway's url_allowlist).",
                      param, "invalid_value")
    host = (parts.hostname or "").lower()
    try:
        public = is_public(host)
    except ValueError:  # a name: checked against its addresses when connecting
        public = host != "localhost" and not host.endswith(".localhost")
    if not public:
        raise invalid(f"Invalid '{param}': the MCP server address {host!r} is not public; private, loopback and "
                      "link-local addresses are refused unless on this gateway's url_allowlist.", param,
                      "invalid_value")


class RefusedAddress(httpcore2.ConnectError):
    """The host resolved to an address MCP connections may not reach."""


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """A network backend that connects only to public addresses it resolved itself."""

    def __init__(self) -> None:
        self._inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, timeout: Optional[float] = None,
                          local_address: Optional[str] = None, socket_options=None) -> httpcore2.AsyncNetworkStream:
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise httpcore2.ConnectError(f"could not resolve {host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(info[4][0] for info in infos))[:ADDRESSES_MAX]
        refused = [a for a in addresses if not is_public(a)]
        if refused or not addresses:
            raise RefusedAddress(f"refused to connect to {host!r}: it resolves to the non-public address "
                                 f"{refused[0] if refused else '(none)'}")
        error: Optional[Exception] = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except httpcore2.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: Optional[float] = None, socket_options=None):
        raise httpcore2.ConnectError("unix sockets are not allowed for MCP servers")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def guarded_transport() -> httpx2.AsyncHTTPTransport:
    """An httpx2 transport whose every connection goes through GuardedBackend (no env proxies)."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    pool = transport._pool  # noqa: SLF001 - httpx2 takes no backend argument; the pool does
    if not isinstance(pool, httpcore2.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise ApiError(500, "The MCP transport guard is unavailable.", type_="server_error")
    pool._network_backend = GuardedBackend()  # noqa: SLF001
    return transport
