"""The settlement spool's file (no database): what is written, read back, claimed and removed."""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

from tollgate_core import Usage
from tollgate_server.services.ledger import Outcome
from tollgate_server.services.spool import (
    SettlementSpool,
    claim_abandoned,
    read_pending,
    summarize,
)

OUTCOME = Outcome(
    status="completed",
    usage=Usage(input_tokens=12, output_tokens=40, cached_input_tokens=2, estimated=False),
    charge=92_000_000,
    error_code=None,
    first_token_ms=5,
    duration_ms=80,
)


def test_a_spooled_settlement_reads_back_whole_until_done(tmp_path: Path) -> None:
    spool = SettlementSpool(tmp_path, uuid.uuid4())
    first, second = uuid.uuid4(), uuid.uuid4()
    spool.append(first, OUTCOME)
    spool.append(second, OUTCOME)
    assert read_pending(spool.path) == {first: OUTCOME, second: OUTCOME}
    spool.mark_done(first)
    assert read_pending(spool.path) == {second: OUTCOME}
    spool.mark_done(second)
    # Emptied, not removed while its process lives: the file stays locked by it.
    assert spool.path.exists() and spool.path.stat().st_size == 0
    assert spool.close() == 0
    assert not spool.path.exists()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    spool = SettlementSpool(tmp_path, uuid.uuid4())
    kept = uuid.uuid4()
    spool.append(kept, OUTCOME)
    with spool.path.open("ab") as handle:
        handle.write(b'{"generation_id": "')  # the process died in the middle of a write
    assert read_pending(spool.path) == {kept: OUTCOME}


def test_a_live_spool_is_never_claimed_and_an_abandoned_one_is(tmp_path: Path) -> None:
    live = SettlementSpool(tmp_path, uuid.uuid4())
    gone = SettlementSpool(tmp_path, uuid.uuid4())
    live_id, gone_id = uuid.uuid4(), uuid.uuid4()
    live.append(live_id, OUTCOME)
    gone.append(gone_id, OUTCOME)
    assert gone.close() == 1, "a spool with settlements left is kept at exit"
    assert summarize(tmp_path).generation_ids == {live_id, gone_id}

    claimed = claim_abandoned(tmp_path)
    assert [c.path for c in claimed] == [gone.path]
    assert claimed[0].pending == {gone_id: OUTCOME}
    # While claimed, nobody else can take it.
    assert claim_abandoned(tmp_path) == []
    claimed[0].mark_done(gone_id)
    claimed[0].release()
    assert not gone.path.exists()
    assert summarize(tmp_path).generation_ids == {live_id}
    live.close()


def test_a_file_left_with_work_is_kept_when_released(tmp_path: Path) -> None:
    path = tmp_path / f"{uuid.uuid4()}.jsonl"
    spool = SettlementSpool(tmp_path, uuid.UUID(path.stem))
    spool.append(uuid.uuid4(), OUTCOME)
    spool.close()
    (claimed,) = claim_abandoned(tmp_path)
    claimed.release()  # e.g. its generation is unknown to this database
    assert path.exists()
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and unlocked again
    os.close(fd)
