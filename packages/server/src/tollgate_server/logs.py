"""Logging: one redaction for every log line of the process.

Upstream keys, API keys, bearer tokens, JWTs and the configured secrets are replaced with
``[redacted]`` in every record (message, arguments and traceback text) before any handler
formats it, whichever library logged it: a vendor error that echoes our key cannot leak it
through a log line.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from typing import Any

from tollgate_core.upstream import redact

_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_SECRETS: set[str] = set()
_installed = False


def scrub(text: str) -> str:
    """`text` with every known secret and anything shaped like a key or a JWT redacted."""
    text = redact(text, _SECRETS)
    # A JWT starts with "eyJ" (base64 of '{"'): a line without it skips the pattern.
    return _JWT_LIKE.sub("[redacted]", text) if "eyJ" in text else text


def install_redaction(secrets: Iterable[str | None]) -> None:
    """Add `secrets` to what is redacted, and install the redacting record factory once."""
    global _installed
    _SECRETS.update(s for s in secrets if s and len(s) >= 8)
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            record.msg = scrub(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
        except Exception:  # a log line must never raise
            record.msg, record.args = "[unloggable message]", None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
