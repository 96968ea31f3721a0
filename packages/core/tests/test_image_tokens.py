"""tollgate_core.image_tokens: image types and sizes from headers, and vendors' token rules."""

from __future__ import annotations

import struct
import zlib

import pytest
from tollgate_core import estimate_image_tokens, image_size
from tollgate_core.image_tokens import sniff_image_type


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


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG's start: SOI, an APP0 segment, then a baseline SOF0 frame header."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp_vp8x(width: int, height: int) -> bytes:
    body = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    chunk = b"VP8X" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8l(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + bits.to_bytes(4, "little") + b"\x00"
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8(width: int, height: int) -> bytes:
    body = b"\x00\x00\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    chunk = b"VP8 " + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(3, 2), (3, 2)),
        (jpeg_header(640, 480), (640, 480)),
        (gif_header(300, 200), (300, 200)),
        (webp_vp8x(1920, 1080), (1920, 1080)),
        (webp_vp8l(500, 16383), (500, 16383)),
        (webp_vp8(1024, 768), (1024, 768)),
    ],
)
def test_image_size_reads_each_format(data: bytes, size: tuple[int, int]) -> None:
    assert sniff_image_type(data) is not None
    assert image_size(data) == size


@pytest.mark.parametrize(
    "data",
    [b"", b"plain text", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8X"],
)
def test_image_size_is_none_when_unreadable(data: bytes) -> None:
    assert image_size(data) is None


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        # OpenAI's published examples: 1024 x 1024 high is 765; 2048 x 4096 high is 1105.
        (1024, 1024, "high", 765),
        (2048, 4096, "high", 1105),
        (4096, 8192, "low", 85),
        (100, 100, None, 85 + 170),
        (512, 512, "auto", 85 + 170),
        (513, 512, "high", 85 + 2 * 170),
        (None, None, "high", 85 + 8 * 170),
        (None, None, "low", 85),
    ],
)
def test_openai_image_tokens(
    width: int | None, height: int | None, detail: str | None, tokens: int
) -> None:
    assert estimate_image_tokens("openai", width, height, detail) == tokens


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [(1000, 1000, 1334), (200, 200, 54), (750, 1, 1), (1568, 1568, 1600), (None, 100, 1600)],
)
def test_anthropic_image_tokens(width: int | None, height: int | None, tokens: int) -> None:
    assert estimate_image_tokens("anthropic", width, height, None) == tokens


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        (384, 384, 258),
        (100, 50, 258),
        (385, 384, 258),
        (768, 769, 2 * 258),
        (1536, 1536, 4 * 258),
        (10000, 10000, 16 * 258),
        (None, None, 16 * 258),
    ],
)
def test_gemini_image_tokens(width: int | None, height: int | None, tokens: int) -> None:
    assert estimate_image_tokens("gemini", width, height, None) == tokens


def test_an_unknown_vendor_gets_the_largest_rule() -> None:
    assert estimate_image_tokens("echo", 1000, 1000, None) == max(
        estimate_image_tokens(vendor, 1000, 1000, None)
        for vendor in ("openai", "anthropic", "gemini")
    )
    assert estimate_image_tokens("echo", None, None, None) == 16 * 258
