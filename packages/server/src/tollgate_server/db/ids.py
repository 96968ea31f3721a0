"""Ids for rows inserted on the hot path."""

from __future__ import annotations

import os
import time
import uuid

_MILLISECONDS = (1 << 48) - 1
_RAND_B = (1 << 62) - 1


def time_ordered_uuid() -> uuid.UUID:
    """A version 7 UUID (RFC 9562): 48 bits of Unix time in milliseconds, then 74 random bits.

    A generation's primary key: consecutive ids land at the right edge of the index, where a
    random (version 4) id lands on any of its leaf pages and, after each checkpoint, writes a
    full image of the page it touches to the WAL."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (
        (time.time_ns() // 1_000_000 & _MILLISECONDS) << 80
        | 0x7 << 76
        | (rand >> 68) << 64
        | 0b10 << 62
        | rand & _RAND_B
    )
    return uuid.UUID(int=value)
