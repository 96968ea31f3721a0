"""STUB of issue 14's image module, for the provider translations of this branch only.

The real module (the https fetcher that checks addresses after DNS and on every redirect, its
size cap and timeout, image sniffing, per-vendor image tokens) is written on another branch
with this same interface; the integrator takes that one and drops this file. Only
`parse_data_url` is used here, to turn a ``data:`` URL into an Anthropic ``base64`` source.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tollgate_core.errors import TollgateError

MAX_IMAGE_BYTES = 20 * 1024 * 1024

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    """An image's bytes and the type its bytes show."""

    mime_type: str
    data: bytes


class ImageRefused(TollgateError):
    """An image the gateway will not use; the server answers it as 400 with `code`."""

    code = "image_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_data_url(url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> FetchedImage:
    """Read an image from a ``data:image/...;base64,...`` URL.

    Raises:
        ImageRefused: not a base64 image data URL, too large, or not an image.
    """
    head, comma, payload = url.partition(",")
    if not comma or not head.lower().startswith("data:image/") or not head.endswith(";base64"):
        raise ImageRefused("image_url_refused", "an image data URL is data:image/...;base64,...")
    if len(payload) * 3 // 4 > max_bytes:
        raise ImageRefused("image_too_large", f"The image is larger than {max_bytes} bytes.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageRefused("image_not_an_image", "the data URL is not valid base64") from None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return FetchedImage("image/webp", data)
    for magic, mime_type in _MAGIC:
        if data.startswith(magic):
            return FetchedImage(mime_type, data)
    raise ImageRefused("image_not_an_image", "the data URL does not hold a PNG, JPEG, GIF or WebP")
