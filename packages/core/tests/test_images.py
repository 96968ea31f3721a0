"""tollgate_core.images: the image fetcher's refusals over real sockets, and data URLs.

Images are served over TLS by an aiohttp server on loopback, with a certificate from a test CA
made here (`cryptography`, already in the workspace). The server listens on 127.0.0.1, which the
fetcher must refuse, and on 127.0.0.2, which `ImageTestNetwork` lets count as the public host
"images.test". The certificate names "images.test", "localhost" and 127.0.0.1 but not
127.0.0.2: a fetch of https://images.test succeeds only when the fetcher connects to the address
it checked and verifies the certificate against the name the client gave, and a loopback fetch
the fetcher failed to refuse would succeed, so each refusal test can fail.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tollgate_core import (
    FetchedImage,
    ImageRefused,
    fetch_image,
    parse_data_url,
)
from tollgate_core.images import ImageTestNetwork, is_public_address

PUBLIC_TEST_ADDRESS = "127.0.0.2"
LOOPBACK = "127.0.0.1"


def png(width: int, height: int) -> bytes:
    """A valid one-colour PNG of the given size."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


CAT = png(3, 2)


# --- TLS for the test servers -------------------------------------------------------------


@dataclass(frozen=True)
class TlsPair:
    server: ssl.SSLContext
    client: ssl.SSLContext


def _make_tls(directory: Path) -> TlsPair:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "images.test")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("images.test"),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = directory / "leaf.pem"
    key_file = directory / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return TlsPair(server=server, client=client)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsPair:
    return _make_tls(tmp_path_factory.mktemp("tls"))


# --- The image server -----------------------------------------------------------------------


@dataclass
class ImageServer:
    port: int
    hits: dict[str, list[str]] = field(
        default_factory=lambda: {PUBLIC_TEST_ADDRESS: [], LOOPBACK: []}
    )
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "images.test") -> str:
        return f"https://{host}:{self.port}{path}"


def _app(server: ImageServer) -> web.Application:
    async def record(request: web.Request) -> None:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        server.hits.setdefault(sockname[0] if sockname else "?", []).append(request.path_qs)

    async def cat(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=CAT, content_type="image/png")

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(request.query["to"])

    async def hops(request: web.Request) -> web.Response:
        await record(request)
        left = int(request.match_info["left"])
        if left == 0:
            return web.Response(body=CAT, content_type="image/png")
        raise web.HTTPFound(f"/hops/{left - 1}")

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=png(200, 200) + b"\x00" * 5000, content_type="image/png")

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(CAT)
        for _ in range(10):
            await response.write(b"\x00" * 1000)
        await response.write_eof()
        return response

    async def html(request: web.Request) -> web.Response:
        await record(request)
        # Image bytes, so only the content type can refuse it.
        return web.Response(body=CAT, content_type="text/html")

    async def fake_png(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"<html>not an image</html>", content_type="image/png")

    async def slow(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = len(CAT)
        await response.prepare(request)
        await response.write(CAT[:8])
        await server.release.wait()
        return response

    async def missing(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=404, text="no such image")

    app = web.Application()
    app.router.add_get("/cat.png", cat)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hops/{left}", hops)
    app.router.add_get("/big", big)
    app.router.add_get("/big-chunked", big_chunked)
    app.router.add_get("/html", html)
    app.router.add_get("/fake.png", fake_png)
    app.router.add_get("/slow", slow)
    app.router.add_get("/missing", missing)
    return app


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server(tls: TlsPair) -> AsyncIterator[ImageServer]:
    image_server = ImageServer(port=0)
    runner = web.AppRunner(_app(image_server))
    await runner.setup()
    # The same port on both addresses, so a redirect can name the loopback one by address.
    first = web.TCPSite(runner, PUBLIC_TEST_ADDRESS, 0, ssl_context=tls.server)
    await first.start()
    image_server.port = first._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    second = web.TCPSite(runner, LOOPBACK, image_server.port, ssl_context=tls.server)
    await second.start()
    try:
        yield image_server
    finally:
        image_server.release.set()
        await runner.cleanup()


@pytest.fixture
async def http(tls: TlsPair) -> AsyncIterator[aiohttp.ClientSession]:
    # As the server's pooled session: no cookies; the test CA trusted in place of the system's.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=tls.client), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        yield session


NETWORK = ImageTestNetwork(
    hosts={
        "images.test": PUBLIC_TEST_ADDRESS,
        "intranet.test": "10.0.0.7",
        "mixed.test": (PUBLIC_TEST_ADDRESS, LOOPBACK),
    },
    public=PUBLIC_TEST_ADDRESS,
)


async def refused(http: aiohttp.ClientSession, url: str, **kwargs: object) -> ImageRefused:
    with pytest.raises(ImageRefused) as caught:
        await fetch_image(http, url, _network=NETWORK, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- Fetching -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fetches_an_image_from_a_public_host(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    """images.test is unknown to DNS and the certificate does not name 127.0.0.2: the fetch
    works only by connecting to the checked address and verifying the name the client gave."""
    image = await fetch_image(http, server.url("/cat.png"), _network=NETWORK)
    assert image == FetchedImage(mime_type="image/png", data=CAT)
    assert server.hits[PUBLIC_TEST_ADDRESS] == ["/cat.png"]


@pytest.mark.anyio
@pytest.mark.parametrize("host", [LOOPBACK, "localhost", "[::1]", "[::ffff:127.0.0.1]"])
async def test_refuses_loopback(
    http: aiohttp.ClientSession, server: ImageServer, host: str
) -> None:
    error = await refused(http, server.url("/cat.png", host=host))
    assert error.code == "image_url_refused"
    assert server.hits[LOOPBACK] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.7",
        "10.255.255.254",
        "192.168.1.1",
        "172.16.0.1",
        "172.31.255.255",
        "100.64.0.1",
        "169.254.169.254",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "0.0.0.0",
        "intranet.test",
    ],
)
async def test_refuses_private_link_local_and_metadata_addresses(
    http: aiohttp.ClientSession, host: str
) -> None:
    # Refused before any connection, so nothing needs to listen there.
    error = await refused(http, f"https://{host}/cat.png", timeout=2.0)
    assert error.code == "image_url_refused"


@pytest.mark.anyio
async def test_refuses_a_name_with_any_private_address(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    """A DNS answer that mixes a public and a private address is refused outright, before the
    public one is tried."""
    error = await refused(http, server.url("/cat.png", host="mixed.test"))
    assert error.code == "image_url_refused"
    assert server.hits == {PUBLIC_TEST_ADDRESS: [], LOOPBACK: []}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://images.test/cat.png",
        "ftp://images.test/cat.png",
        "file:///etc/passwd",
        "https://user:secret@images.test/cat.png",
        "https:///cat.png",
        "not a url",
    ],
)
async def test_refuses_other_schemes_and_malformed_urls(
    http: aiohttp.ClientSession, url: str
) -> None:
    error = await refused(http, url)
    assert error.code == "image_url_refused"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:{port}/cat.png",
        "https://localhost:{port}/cat.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/cat.png",
        "http://images.test:{port}/cat.png",
    ],
)
async def test_refuses_a_redirect_to_a_private_address(
    http: aiohttp.ClientSession, server: ImageServer, target: str
) -> None:
    to = target.format(port=server.port)
    error = await refused(http, server.url(f"/redirect?to={to}"))
    assert error.code == "image_url_refused"
    assert len(server.hits[PUBLIC_TEST_ADDRESS]) == 1
    assert server.hits[LOOPBACK] == []


@pytest.mark.anyio
async def test_follows_redirects_up_to_three(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    image = await fetch_image(http, server.url("/hops/3"), _network=NETWORK)
    assert image.data == CAT
    relative = await fetch_image(http, server.url("/redirect?to=/cat.png"), _network=NETWORK)
    assert relative.data == CAT

    server.hits[PUBLIC_TEST_ADDRESS].clear()
    error = await refused(http, server.url("/hops/4"))
    assert error.code == "image_url_refused"
    assert server.hits[PUBLIC_TEST_ADDRESS] == ["/hops/4", "/hops/3", "/hops/2", "/hops/1"]


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_refuses_an_oversized_body(
    http: aiohttp.ClientSession, server: ImageServer, path: str
) -> None:
    error = await refused(http, server.url(path), max_bytes=4096)
    assert error.code == "image_too_large"


@pytest.mark.anyio
async def test_refuses_a_body_that_is_not_an_image(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    assert (await refused(http, server.url("/html"))).code == "image_not_an_image"
    assert (await refused(http, server.url("/fake.png"))).code == "image_not_an_image"


@pytest.mark.anyio
async def test_a_fetch_that_takes_too_long_is_refused(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    # wait_for only keeps a fetcher without a deadline from hanging the suite.
    error = await asyncio.wait_for(refused(http, server.url("/slow"), timeout=0.5), 10)
    assert error.code == "image_fetch_failed"


@pytest.mark.anyio
async def test_an_error_status_or_an_unreachable_host_fails_cleanly(
    http: aiohttp.ClientSession, server: ImageServer
) -> None:
    error = await refused(http, server.url("/missing"))
    assert error.code == "image_fetch_failed"
    assert "no such image" not in error.message
    nobody = ImageTestNetwork(hosts={"images.test": "127.0.0.3"}, public="127.0.0.3")
    with pytest.raises(ImageRefused) as caught:
        await fetch_image(http, server.url("/cat.png"), _network=nobody)
    assert caught.value.code == "image_fetch_failed"


# --- Addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.0.170",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::",
        "2002:7f00:1::",
        "fd00:ec2::254",
        "fc00::1",
        "fe80::1",
        "fe80::1%2",
        "ff02::1",
        "2001:db8::1",
    ],
)
def test_private_addresses_are_not_public(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


# --- Data URLs ------------------------------------------------------------------------------


def data_url(data: bytes, header: str = "data:image/png;base64") -> str:
    return f"{header},{base64.b64encode(data).decode()}"


def test_parses_a_base64_image_data_url() -> None:
    assert parse_data_url(data_url(CAT)) == FetchedImage(mime_type="image/png", data=CAT)
    # The bytes decide the type, not the label.
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 16
    assert parse_data_url(data_url(jpeg, "data:image/png;base64")).mime_type == "image/jpeg"


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "image_not_an_image"),
        ("data:image/png," + "%89PNG", "image_url_refused"),
        ("data:image/png;base64", "image_url_refused"),
        ("https://images.test/cat.png", "image_url_refused"),
        ("data:image/png;base64,!!!not base64!!!", "image_not_an_image"),
        (
            data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "data:image/svg+xml;base64"),
            "image_not_an_image",
        ),
        (data_url(b"GIF90a and more"), "image_not_an_image"),
    ],
)
def test_refuses_bad_data_urls(url: str, code: str) -> None:
    with pytest.raises(ImageRefused) as caught:
        parse_data_url(url)
    assert caught.value.code == code


def test_refuses_an_oversized_data_url() -> None:
    image = png(64, 64)
    assert parse_data_url(data_url(image), max_bytes=len(image)).data == image
    with pytest.raises(ImageRefused) as caught:
        parse_data_url(data_url(image), max_bytes=len(image) - 1)
    assert caught.value.code == "image_too_large"
    with pytest.raises(ImageRefused) as caught:
        parse_data_url("data:image/png;base64," + "A" * 4000, max_bytes=1000)
    assert caught.value.code == "image_too_large"
