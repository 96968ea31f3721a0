"""What an image's header tells: its type, its size, and what it costs each vendor in tokens.

Token estimates size the hold: each vendor's published rule, and the vendor's largest image
when the size is unknown (a URL the gateway passes on without fetching), so a hold never
undercounts.
"""

from __future__ import annotations

import math
import struct


def sniff_image_type(data: bytes) -> str | None:
    """The image type the bytes' magic number shows, or None when they are no image we take."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF or WEBP header; None when it cannot be read."""
    try:
        kind = sniff_image_type(data)
        if kind == "image/png":
            if data[12:16] != b"IHDR":
                return None
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if kind == "image/gif":
            width, height = struct.unpack("<HH", data[6:10])
            return width, height
        if kind == "image/jpeg":
            return _jpeg_size(data)
        if kind == "image/webp":
            return _webp_size(data)
    except struct.error:
        return None
    return None


# Start-of-frame markers carry the size; C4 (Huffman tables), C8 (reserved) and CC
# (arithmetic coding) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers with no length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if len(data) < (25 if chunk == b"VP8L" else 30):  # the header each kind is read from
        return None
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


# OpenAI: an image is scaled to fit 2048 x 2048, then so its shortest side is at most 768, and
# costs 85 tokens plus 170 per 512-px tile; "low" detail is 85 whatever the size. The largest
# count is 2048 x 768: 4 x 2 tiles.
OPENAI_BASE_TOKENS = 85
OPENAI_TILE_TOKENS = 170
OPENAI_MAX_IMAGE_TOKENS = OPENAI_BASE_TOKENS + 8 * OPENAI_TILE_TOKENS
# Anthropic: width x height / 750 tokens; larger images are scaled down to about 1600 tokens.
ANTHROPIC_MAX_IMAGE_TOKENS = 1600
# Gemini: 258 tokens for an image of at most 384 px each side; larger ones are cut into
# 768-px tiles of 258 tokens each, after scaling to fit 3072 x 3072 (4 x 4 tiles at most).
GEMINI_TILE_TOKENS = 258
GEMINI_MAX_IMAGE_TOKENS = 16 * GEMINI_TILE_TOKENS


def _scaled_to_fit(width: int, height: int, box: int) -> tuple[int, int]:
    if width <= box and height <= box:
        return width, height
    scale = box / max(width, height)
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _openai_tokens(width: int, height: int, detail: str | None) -> int:
    if detail == "low":
        return OPENAI_BASE_TOKENS
    width, height = _scaled_to_fit(width, height, 2048)
    shortest = min(width, height)
    if shortest > 768:
        width, height = (
            math.floor(width * 768 / shortest),
            math.floor(height * 768 / shortest),
        )
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return OPENAI_BASE_TOKENS + OPENAI_TILE_TOKENS * tiles


def _anthropic_tokens(width: int, height: int) -> int:
    return min(math.ceil(width * height / 750), ANTHROPIC_MAX_IMAGE_TOKENS)


def _gemini_tokens(width: int, height: int) -> int:
    if width <= 384 and height <= 384:
        return GEMINI_TILE_TOKENS
    width, height = _scaled_to_fit(width, height, 3072)
    return GEMINI_TILE_TOKENS * math.ceil(width / 768) * math.ceil(height / 768)


def estimate_image_tokens(
    vendor: str, width: int | None, height: int | None, detail: str | None
) -> int:
    """Input tokens one image costs at `vendor`, by its published rule, for the hold.

    An unknown size (an image the gateway passes on by URL) counts as the vendor's largest
    image; an unknown vendor as the largest any known rule gives, so a hold never undercounts.
    `detail` is OpenAI's "low" | "high" | "auto"; "auto" counts as "high".
    """
    name = vendor.lower()
    if width is None or height is None or width <= 0 or height <= 0:
        if name == "openai":
            return OPENAI_BASE_TOKENS if detail == "low" else OPENAI_MAX_IMAGE_TOKENS
        if name == "anthropic":
            return ANTHROPIC_MAX_IMAGE_TOKENS
        if name == "gemini":
            return GEMINI_MAX_IMAGE_TOKENS
        return max(OPENAI_MAX_IMAGE_TOKENS, ANTHROPIC_MAX_IMAGE_TOKENS, GEMINI_MAX_IMAGE_TOKENS)
    if name == "openai":
        return _openai_tokens(width, height, detail)
    if name == "anthropic":
        return _anthropic_tokens(width, height)
    if name == "gemini":
        return _gemini_tokens(width, height)
    return max(
        _openai_tokens(width, height, None),
        _anthropic_tokens(width, height),
        _gemini_tokens(width, height),
    )
