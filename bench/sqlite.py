"""Row 7: SQLite under one writer and 8 readers — rows/s and errors.

warmwire: the store-writer's own connection settings (WAL, busy_timeout=30000,
synchronous=NORMAL), 100-row transactions, readers opened read-only as the services open
them. Baseline: the old design's rollback journal without a busy timeout, same load; it
fails with "database is locked". Every party is its own process, as in production.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

from proto.db import open_readonly
from services.store_writer.database import open_writer

from .stats import Row

READERS = 8
ROWS_PER_TRANSACTION = 100
DURATION = {True: 5.0, False: 20.0}
BUSY_TIMEOUT_MS = 30000
TARGET_ROWS_PER_S = 20000
TABLE = "CREATE TABLE IF NOT EXISTS load (id INTEGER PRIMARY KEY, chat TEXT, text TEXT, at REAL)"
READ_QUERY = "SELECT count(*), max(at) FROM (SELECT at FROM load ORDER BY id DESC LIMIT 200)"


def _open(path: str, wal: bool, write: bool) -> sqlite3.Connection:
    if wal:
        conn = open_writer(Path(path), BUSY_TIMEOUT_MS) if write else open_readonly(Path(path), BUSY_TIMEOUT_MS)
    else:  # the old design: default rollback journal, no busy timeout
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    if write:
        conn.execute(TABLE)
    return conn


def _writer(path: str, wal: bool, until: float, out) -> None:
    conn = _open(path, wal, write=True)
    rows = errors = 0
    text = "a message of ordinary length for a personal assistant " * 2
    while time.time() < until:
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO load(chat, text, at) VALUES (?, ?, ?)",
                             [("bench", text, time.time())] * ROWS_PER_TRANSACTION)
            conn.execute("COMMIT")
            rows += ROWS_PER_TRANSACTION
        except sqlite3.OperationalError:
            errors += 1
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    out.put(("writer", rows, errors))


def _reader(path: str, wal: bool, until: float, out) -> None:
    conn = _open(path, wal, write=False)
    reads = errors = 0
    while time.time() < until:
        try:
            conn.execute(READ_QUERY).fetchone()
            reads += 1
        except sqlite3.OperationalError:
            errors += 1
    out.put(("reader", reads, errors))


def measure(wal: bool, duration: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="ww-bench-sqlite-") as folder:
        path = str(Path(folder) / "load.db")
        _open(path, wal, write=True).close()  # schema (and WAL) before the readers open
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        until = time.time() + duration
        parties = [ctx.Process(target=_writer, args=(path, wal, until, out))]
        parties += [ctx.Process(target=_reader, args=(path, wal, until, out)) for _ in range(READERS)]
        for party in parties:
            party.start()
        results = [out.get() for _ in parties]
        for party in parties:
            party.join()
    writer = next(r for r in results if r[0] == "writer")
    return {"rows_per_s": writer[1] / duration, "errors": sum(r[2] for r in results),
            "reads_per_s": sum(r[1] for r in results if r[0] == "reader") / duration}


def run(system, quick: bool, progress: Callable[[str, int, int], None]) -> Row:
    duration = DURATION[quick]
    progress("sqlite: WAL, 1 writer + 8 readers", 0, 2)
    new = measure(wal=True, duration=duration)
    progress("sqlite: rollback journal baseline", 1, 2)
    old = measure(wal=False, duration=duration)
    progress("sqlite: done", 1, 2)
    return Row(
        name="sqlite_concurrency", unit="rows/s", p50=new["rows_per_s"], p99=None,
        baseline_p50=old["rows_per_s"], baseline_p99=None,
        ratio=new["rows_per_s"] / old["rows_per_s"] if old["rows_per_s"] else float("inf"),
        target=f"0 errors, >= {TARGET_ROWS_PER_S} rows/s",
        met=new["errors"] == 0 and new["rows_per_s"] >= TARGET_ROWS_PER_S,
        samples=int(duration), baseline_samples=int(duration),
        note=(f"{duration:g} s each; errors {new['errors']} (baseline {old['errors']}); "
              f"reads/s {new['reads_per_s']:.0f} (baseline {old['reads_per_s']:.0f})"),
        details={"errors": new["errors"], "baseline_errors": old["errors"],
                 "reads_per_s": new["reads_per_s"], "baseline_reads_per_s": old["reads_per_s"]})
