"""The router's read-only view of the database: answers without it when it cannot be read.

A WAL database on a read-only disk cannot even be opened, and a missing one has nothing to
say: then every query gives its default, the failure is logged once, and the router keeps
answering. ``on_readable`` runs at the first read that succeeds after one that could not.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable

from proto.db import open_readonly

log = logging.getLogger("router")


class StoreReader:
    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.conn: sqlite3.Connection | None = None
        self.unreadable = False  # the last read failed (logged once)
        # Called once the database can be read, after a read that could not be made.
        self.on_readable: Callable[[], None] | None = None

    def read(self, query: Callable[[sqlite3.Connection], Any], default: Any) -> Any:
        """The query's result, or ``default`` while there is no database or it cannot be read."""
        try:
            if self.conn is None:
                if not self.path.exists():
                    return default
                self.conn = open_readonly(self.path, self.busy_timeout_ms)
            result = query(self.conn)
        except sqlite3.Error as exc:
            self.close()
            if not self.unreadable:
                log.error("cannot read the database (%s); answering without it until it can", exc)
            self.unreadable = True
            return default
        if self.unreadable:
            self.unreadable = False
            log.info("the database can be read again")
        if self.on_readable is not None:
            then, self.on_readable = self.on_readable, None
            then()
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
