"""Settlements that could not reach the database, kept on disk until they do.

When a generation's settlement finds the database away, the gateway appends it here (one JSON
line, fsynced) before the answer's last byte leaves, then retries in the background. A success
appends a ``done`` line; a file whose settlements are all done is emptied. So an answer's cost
survives any exit of the process before the database returns (a restart, a deploy, a kill).

Each server process writes its own file, ``<data dir>/settlements/<instance id>.jsonl``, and holds
an exclusive `flock` on it from its first line until it exits. A file whose lock can be taken
therefore belongs to a process that is gone: any process on the same data directory replays it
(at start, before the sweeper runs, and before each sweep), settling each entry through the
guarded settlement (repeats are no-ops) or, when the hold was already released, as a late charge
(`tollgate_server.services.late_charges`). The sweeper never releases the hold of a generation
named in any file here, live or abandoned.

The rule for a process that never comes back: its file stays in the data directory until a
process on that directory replays it. A file on a disk that is lost with its machine is lost with
it; the holds of its generations are then released by the sweepers of the other processes, and
those answers go uncharged (``tollgate db check`` cannot see them either). Give every process of
a deployment a data directory on durable storage, and start a process on it again after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from tollgate_core import Price, Usage

from tollgate_server.services.ledger import Outcome

logger = logging.getLogger("tollgate.spool")

SPOOL_FOLDER = "settlements"
"""Inside the data directory."""


def spool_directory(data_dir: Path) -> Path:
    return data_dir / SPOOL_FOLDER


def encode_outcome(generation_id: uuid.UUID, outcome: Outcome) -> bytes:
    usage = outcome.usage
    record: dict[str, Any] = {
        "generation_id": str(generation_id),
        "status": outcome.status,
        "charge": outcome.charge,
        "error_code": outcome.error_code,
        "first_token_ms": outcome.first_token_ms,
        "duration_ms": outcome.duration_ms,
        # Who served and at what price: the charge was priced at it (routing's fallbacks).
        "served_model": outcome.served_model,
        "deployment_id": outcome.deployment_id,
        "served_price": None
        if outcome.served_price is None
        else [
            outcome.served_price.id,
            outcome.served_price.input_per_million,
            outcome.served_price.output_per_million,
        ],
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
        },
    }
    return orjson.dumps(record) + b"\n"


def decode_outcome(record: dict[str, Any]) -> tuple[uuid.UUID, Outcome]:
    usage = record.get("usage")
    return uuid.UUID(record["generation_id"]), Outcome(
        status=str(record["status"]),
        usage=None if usage is None else Usage(**usage),
        charge=int(record["charge"]),
        error_code=record.get("error_code"),
        first_token_ms=record.get("first_token_ms"),
        duration_ms=record.get("duration_ms"),
        served_model=record.get("served_model"),
        deployment_id=record.get("deployment_id"),
        served_price=None
        if not record.get("served_price")
        else Price(
            id=record["served_price"][0],
            input_per_million=record["served_price"][1],
            output_per_million=record["served_price"][2],
        ),
    )


def read_pending(path: Path) -> dict[uuid.UUID, Outcome]:
    """The settlements of a spool file not yet marked done, in the order they were written.

    A torn last line (the process died mid-write, before its fsync returned) is ignored: the
    gateway sends an answer's last byte only after the fsync, so that answer was never finished.
    """
    pending: dict[uuid.UUID, Outcome] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return pending
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            if "done" in record:
                pending.pop(uuid.UUID(record["done"]), None)
            else:
                generation_id, outcome = decode_outcome(record)
                pending[generation_id] = outcome
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("skipping an unreadable line in %s", path.name)
    return pending


def _append(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.fsync(fd)


class SettlementSpool:
    """This process's spool file. Thread-safe: appends run in worker threads (they fsync)."""

    def __init__(self, directory: Path, instance_id: uuid.UUID) -> None:
        self.directory = directory
        self.path = directory / f"{instance_id}.jsonl"
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.pending: dict[uuid.UUID, Outcome] = {}
        """What this process spooled and has not settled yet."""
        self.spooled_total = 0
        """Counters for metrics: settlements ever spooled by this process."""

    def append(self, generation_id: uuid.UUID, outcome: Outcome) -> None:
        """Write the settlement durably; returns once it is on disk."""
        with self._lock:
            fd = self._open()
            _append(fd, encode_outcome(generation_id, outcome))
            self.pending[generation_id] = outcome
            self.spooled_total += 1

    def mark_done(self, generation_id: uuid.UUID) -> None:
        """The settlement reached the database; an emptied file is truncated."""
        with self._lock:
            if self.pending.pop(generation_id, None) is None or self._fd is None:
                return
            if self.pending:
                # No fsync: a lost done line only makes the next start repeat a guarded no-op.
                os.write(self._fd, orjson.dumps({"done": str(generation_id)}) + b"\n")
            else:
                os.ftruncate(self._fd, 0)

    def close(self) -> int:
        """Release the file at exit: removed when empty, kept (for the next start) otherwise.
        Returns how many settlements it keeps."""
        with self._lock:
            left = len(self.pending)
            if self._fd is None:
                return left
            if not left:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            os.close(self._fd)  # releases the lock
            self._fd = None
            return left

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd
        return self._fd


@dataclass
class AbandonedFile:
    """A spool file whose process is gone, locked by us while we replay it."""

    path: Path
    fd: int
    pending: dict[uuid.UUID, Outcome]

    def mark_done(self, generation_id: uuid.UUID) -> None:
        self.pending.pop(generation_id, None)
        os.write(self.fd, orjson.dumps({"done": str(generation_id)}) + b"\n")

    def release(self) -> None:
        """Remove the file when everything in it is settled; unlock it either way."""
        if not self.pending:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


def claim_abandoned(directory: Path) -> list[AbandonedFile]:
    """Lock and read every spool file of a process that is gone (ours stays locked by us)."""
    claimed: list[AbandonedFile] = []
    if not directory.is_dir():
        return claimed
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its process is alive and replays its own
            continue
        claimed.append(AbandonedFile(path=path, fd=fd, pending=read_pending(path)))
    return claimed


@dataclass(frozen=True, slots=True)
class SpoolSummary:
    """What waits in a data directory's spool, for `/readyz`, `tollgate db check` and metrics."""

    files: int
    settlements: int
    generation_ids: frozenset[uuid.UUID]


def summarize(directory: Path) -> SpoolSummary:
    """Every settlement pending in the directory's files, live or abandoned (read, not locked:
    the files are append-only, and a torn line is skipped)."""
    ids: set[uuid.UUID] = set()
    files = 0
    if directory.is_dir():
        for path in directory.glob("*.jsonl"):
            pending = read_pending(path)
            if pending:
                files += 1
                ids.update(pending)
    return SpoolSummary(files=files, settlements=len(ids), generation_ids=frozenset(ids))


async def count_spooled(directory: Path) -> int:
    """How many settlements wait in the directory's files, for `/readyz` and metrics (next to
    `Runtime.pending_settlements`, `SettlementSpool.spooled_total` and `Runtime.late_charges`)."""
    return (await asyncio.to_thread(summarize, directory)).settlements
