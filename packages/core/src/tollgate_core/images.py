"""Images a request carries: fetched safely from https: URLs, or read from data URLs.

The gateway fetches an image only where a vendor takes no URL (Gemini, for `https:` images).
A fetch made on a client's behalf must not become a way into our own network, so the fetcher
resolves the name itself, refuses unless every address is public, connects to the address it
checked (a DNS answer that changes between the check and the connect reaches nothing new),
follows at most three redirects by hand with the same checks, caps the body while reading it,
bounds the whole fetch in time, and accepts only bytes that are an image.

Sizes and token estimates live in `image_tokens` and are re-exported here, so callers import
one module for images.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from tollgate_core.errors import TollgateError
from tollgate_core.image_tokens import estimate_image_tokens, image_size, sniff_image_type

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_REDIRECTS",
    "FetchedImage",
    "ImageRefused",
    "ImageTestNetwork",
    "estimate_image_tokens",
    "fetch_image",
    "image_size",
    "is_public_address",
    "parse_data_url",
    "sniff_image_type",
]

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """An image's bytes and the type its bytes show (not the type a server or client named)."""

    mime_type: str
    """One of "image/png", "image/jpeg", "image/gif", "image/webp"."""
    data: bytes


class ImageRefused(TollgateError):
    """An image the gateway will not use; the server answers it as 400 with `code`.

    Codes: "image_url_refused" (scheme, address or redirect not allowed), "image_too_large",
    "image_fetch_failed" (unreachable, error status, timeout), "image_not_an_image".
    """

    code = "image_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ImageTestNetwork:
    """Testing hook for `fetch_image`: production callers never pass one.

    Every server a test can run is on loopback, which the fetcher must refuse. This maps test
    host names to addresses in place of DNS, and lets exactly one address count as public, so
    a test can serve images from, say, 127.0.0.2 while 127.0.0.1 and `localhost` stay refused.
    """

    hosts: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    """Host name -> the address (or addresses, in order) it resolves to; other names go to DNS."""
    public: str | None = None
    """The single address treated as public."""


# Not reachable from the internet, or reachable only by us: loopback, private, carrier-grade NAT,
# link-local (the cloud metadata service at 169.254.169.254 and fd00:ec2::254 are in these),
# documentation, benchmarking, multicast, reserved. Listed here rather than left to
# `ipaddress`'s flags alone, whose tables change between Python versions.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(address: IPAddress) -> bool:
    """Whether `address` is a public unicast address the gateway may connect to.

    IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4
    2002::/16) are judged by the IPv4 address inside, since that is where they lead.
    """
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(int(address))  # without a %scope
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    same_family = (n for n in _BLOCKED_NETWORKS if n.version == address.version)
    if any(address in network for network in same_family):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _checked_image(data: bytes, *, where: str) -> FetchedImage:
    mime_type = sniff_image_type(data)
    if mime_type is None:
        raise ImageRefused(
            "image_not_an_image",
            f"The {where} is not a PNG, JPEG, GIF or WEBP image; send one of those.",
        )
    return FetchedImage(mime_type=mime_type, data=data)


def _too_large(max_bytes: int) -> ImageRefused:
    return ImageRefused(
        "image_too_large", f"The image is larger than {max_bytes} bytes; send a smaller one."
    )


def parse_data_url(url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> FetchedImage:
    """Read an image from a `data:image/...;base64,...` URL.

    Raises:
        ImageRefused: not a base64 image data URL ("image_url_refused"), bad base64 or bytes
            that are no image ("image_not_an_image"), or over `max_bytes` ("image_too_large").
    """
    header, comma, payload = url.partition(",")
    if not comma or not header[:5].lower() == "data:":
        raise ImageRefused(
            "image_url_refused", "An image data URL looks like data:image/png;base64,<data>."
        )
    params = [part.strip().lower() for part in header[5:].split(";")]
    if not params[0].startswith("image/"):
        raise ImageRefused(
            "image_not_an_image", "The data URL's type must be image/png, jpeg, gif or webp."
        )
    if "base64" not in params[1:]:
        raise ImageRefused("image_url_refused", "An image data URL must be base64 (;base64,).")
    # Checked before decoding, so an enormous URL costs no decoded copy: 4 characters per 3 bytes.
    if (len(payload) // 4) * 3 > max_bytes + 2:
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused(
            "image_not_an_image", "The data URL's data is not valid base64."
        ) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return _checked_image(data, where="data URL's data")


async def _resolve(host: str, port: int, network: ImageTestNetwork | None) -> list[IPAddress]:
    if network is not None and host in network.hosts:
        given = network.hosts[host]
        return [ipaddress.ip_address(a) for a in ((given,) if isinstance(given, str) else given)]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ImageRefused(
            "image_fetch_failed", f"The image host {host} could not be resolved."
        ) from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def _checked_addresses(url: URL, network: ImageTestNetwork | None) -> list[IPAddress]:
    """The addresses to connect to for `url`, once every one of them is checked public."""
    if url.scheme != "https":
        raise ImageRefused(
            "image_url_refused", "Image URLs must be https: (or a data:image/... URL)."
        )
    if url.raw_user is not None or url.raw_password is not None:
        raise ImageRefused("image_url_refused", "Image URLs must not carry a user name.")
    host = url.raw_host  # IDNA-encoded, as DNS and SNI take it
    if not host:
        raise ImageRefused("image_url_refused", "The image URL has no host.")
    addresses = await _resolve(host, url.port or 443, network)
    if not addresses:
        raise ImageRefused("image_fetch_failed", f"The image host {host} has no address.")
    public = network.public if network is not None else None
    for address in addresses:
        # Any private answer refuses the host: a name that mixes public and private addresses
        # is someone steering the fetch.
        if not (is_public_address(address) or str(address) == public):
            raise ImageRefused(
                "image_url_refused",
                "Image URLs must lead to public addresses; this one leads to a private, "
                "loopback or link-local one.",
            )
    return addresses


async def _open(
    http: aiohttp.ClientSession, url: URL, addresses: list[IPAddress]
) -> aiohttp.ClientResponse:
    """GET `url` from one of its checked `addresses`, never from a fresh DNS answer."""
    try:
        ipaddress.ip_address(url.raw_host or "")
        is_literal = True
    except ValueError:
        is_literal = False
    authority = url.raw_authority
    last_error: BaseException | None = None
    for address in addresses:
        pinned = URL.build(
            scheme=url.scheme,
            host=f"[{address}]" if address.version == 6 else str(address),
            port=url.explicit_port,
            path=url.raw_path,
            query_string=url.raw_query_string,
            encoded=True,
        )
        try:
            return await http.get(
                pinned,
                headers={"Host": authority, "Accept": "image/*", "Accept-Encoding": "identity"},
                allow_redirects=False,
                # The certificate is checked against the name the client gave, sent as SNI.
                server_hostname=None if is_literal else url.raw_host,
            )
        except aiohttp.ClientConnectorError as exc:
            last_error = exc
    raise ImageRefused(
        "image_fetch_failed", f"The image host {url.host} could not be reached."
    ) from last_error


async def _read(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in response.content.iter_chunked(_READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    return bytes(body)


async def _fetch(
    http: aiohttp.ClientSession, url: URL, max_bytes: int, network: ImageTestNetwork | None
) -> FetchedImage:
    for _hop in range(MAX_REDIRECTS + 1):
        addresses = await _checked_addresses(url, network)
        async with await _open(http, url, addresses) as response:
            if response.status in _REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    raise ImageRefused(
                        "image_fetch_failed", "The image URL redirected without a location."
                    )
                try:
                    url = url.join(URL(location))
                except ValueError:
                    raise ImageRefused(
                        "image_url_refused", "The image URL redirected to an invalid URL."
                    ) from None
                continue
            if not 200 <= response.status < 300:
                raise ImageRefused(
                    "image_fetch_failed", f"The image URL answered HTTP {response.status}."
                )
            if not response.content_type.lower().startswith("image/"):
                # The type is not quoted back: what the server sends is not for the client.
                raise ImageRefused(
                    "image_not_an_image", "The image URL answered something other than an image."
                )
            data = await _read(response, max_bytes)
        return _checked_image(data, where="image URL's answer")
    raise ImageRefused(
        "image_url_refused", f"The image URL redirected more than {MAX_REDIRECTS} times."
    )


async def fetch_image(
    http: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    # The interface other code calls names it; the function applies it with asyncio.timeout.
    timeout: float = 10.0,  # noqa: ASYNC109
    _network: ImageTestNetwork | None = None,
) -> FetchedImage:
    """Fetch an image a client named by an `https:` URL, for a vendor that takes no URL.

    Args:
        http: the server's pooled session. The fetch adds no credentials, so the session must
            carry none by default (the server's has no default headers and no cookie jar).
        url: the client's URL.
        max_bytes: the largest body accepted.
        timeout: seconds for the whole fetch, redirects included.
        _network: tests only (see `ImageTestNetwork`); production callers never pass it.

    Raises:
        ImageRefused: with a code the server answers as a 400.
    """
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        raise ImageRefused("image_url_refused", "The image URL is not a valid URL.") from None
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(http, parsed, max_bytes, _network)
    except TimeoutError:
        raise ImageRefused(
            "image_fetch_failed", f"The image URL took longer than {timeout:g} s to fetch."
        ) from None
    except aiohttp.ClientError:
        raise ImageRefused("image_fetch_failed", "The image URL could not be fetched.") from None
