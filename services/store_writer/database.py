"""The store-writer's side of the database: pragmas, schema migrations, idempotent writes."""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from proto.db import open_readonly
from proto.frames import Notice, Reply, SaveAnswer, SaveExchange, SaveJob, SaveNote, SaveUsage
from proto.migrations import LATEST, MIGRATIONS

log = logging.getLogger("store-writer")


@dataclass(frozen=True)
class WriterFile:
    """The database file and how to open it for writing (again, after it could not be)."""

    path: Path
    busy_timeout_ms: int
    wal_autocheckpoint_pages: int = 1000
    synchronous: str = "FULL"

    def open(self) -> sqlite3.Connection:
        return open_writer(self.path, self.busy_timeout_ms, self.wal_autocheckpoint_pages, self.synchronous)


SYNCHRONOUS = ("NORMAL", "FULL")


def open_writer(path: Path, busy_timeout_ms: int, wal_autocheckpoint_pages: int = 1000,
                synchronous: str = "FULL") -> sqlite3.Connection:
    """The one writing connection: WAL, ``synchronous`` FULL (a commit is on disk before it
    is acknowledged: one fsync per group commit) or NORMAL (durable across process crashes,
    not power loss), the schema brought up to date (``migrate``)."""
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"store.synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: could not switch to WAL (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint_pages)}")
        # Migrations first: one that rebuilds a table needs foreign keys not enforced.
        migrate(conn, path, busy_timeout_ms)
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()  # tried again and again while the disk cannot be written: no leak
        raise
    return conn


class DatabaseTooNew(RuntimeError):
    """The file was written by a newer warmwire: this code does not know its tables."""


def backup_path(path: Path, version: int) -> Path:
    return path.with_name(f"{path.name}.v{version}.bak")


def migrate(conn: sqlite3.Connection, path: Path, busy_timeout_ms: int) -> list[int]:
    """Apply the migrations the database has not had, all in one transaction, and return
    their numbers. A file that holds anything is first copied to ``backup_path``. Raises
    DatabaseTooNew, writing nothing, for a database newer than the code."""
    # The write lock from the start: nothing can change between reading the version, the
    # copy and the migrations.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > LATEST:
            raise DatabaseTooNew(
                f"{path} has schema version {version}, newer than this code's {LATEST}: it was "
                f"written by a newer warmwire; not writing it (run that warmwire, or put back an "
                f"older copy, {path.name}.v<N>.bak)")
        pending = range(version + 1, LATEST + 1)
        if pending and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            backup = backup_path(path, version)
            _copy(path, backup, busy_timeout_ms)
            log.info("copied %s (schema version %d) to %s before migrating it", path, version, backup)
        for number in pending:
            for statement in _statements(MIGRATIONS[number - 1].sql):
                conn.execute(statement)
        if pending:
            conn.execute(f"PRAGMA user_version={LATEST}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    for number in pending:
        log.info("applied migration %d of %d: %s", number, LATEST, MIGRATIONS[number - 1].what)
    return list(pending)


def _copy(path: Path, target: Path, busy_timeout_ms: int) -> None:
    """SQLite's backup of the last commit (the WAL's pages too), synced, and its name synced
    into the folder, so the copy outlives a power cut that the migration might not. It reads
    through a connection of its own: the writer's, holding the write lock, would wait forever."""
    try:
        with closing(open_readonly(path, busy_timeout_ms)) as source, \
                closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
    except BaseException:
        target.unlink(missing_ok=True)  # half a copy must not pass for a backup
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _statements(script: str) -> Iterator[str]:
    """A migration's statements one by one. (``executescript`` would commit the open
    transaction first.) A ";" in a string, a comment or a trigger's body ends no statement:
    ``complete_statement`` knows."""
    pieces = script.split(";")
    statement = ""
    for piece in pieces[:-1]:
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if (statement + pieces[-1]).strip():
        yield statement + pieces[-1]  # a last statement without ";" (SQLite refuses an unfinished one)


# SQLite's primary result codes that mean no write can succeed right now, whatever it is:
# the fault is the disk's or the folder's, not the frame's.
UNWRITABLE_CODES = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
                    sqlite3.SQLITE_CANTOPEN}


DISK_FULL = "the disk is full"


def disk_has_room(path: Path) -> bool:
    """Some free block on the database's filesystem. A one-page write can still succeed on
    a full disk (the WAL reuses its own pages) while a batch would not: no use trying then."""
    try:
        return os.statvfs(path.parent).f_bfree > 0
    except OSError:
        return True  # cannot tell: let the write say


def unwritable_reason(path: Path, exc: BaseException) -> str | None:
    """Why the database cannot be written at all, in words for its users (no path: the log
    line has it); None when the error is the write's own (a constraint, a bad value) or not
    the disk's (a database path that is a folder fails to start, as it should)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if isinstance(exc, sqlite3.Error) and primary not in UNWRITABLE_CODES:
        return None
    if primary == sqlite3.SQLITE_FULL or getattr(exc, "errno", None) == errno.ENOSPC:
        return DISK_FULL
    if _read_only(path):
        return "the data folder is read-only"
    if primary == sqlite3.SQLITE_IOERR:
        return "the disk reports an error"
    return None


def _read_only(path: Path) -> bool:
    """Its filesystem is mounted read-only, or the folder or the files cannot be written
    (for root: marked immutable)."""
    try:
        if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    return any(target.exists() and not os.access(target, os.W_OK)
               for target in (path.parent, path, path.with_name(path.name + "-wal")))


def probe_write(conn: sqlite3.Connection) -> None:
    """The smallest write that reaches the disk (page 1 into the WAL), to learn whether the
    database can be written again; raises like any write."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version={int(version)}")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: after a full disk or an I/O error SQLite may
    have rolled it back itself, and a second ROLLBACK would hide the real error."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy the WAL into the database without waiting for readers; (wal pages, copied)."""
    _, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return wal_pages, copied


def save_exchange(conn: sqlite3.Connection, frame: SaveExchange) -> bool:
    """Insert a message and its answer; a message id seen before changes nothing. False when
    that id belongs to a message stored before by another write (the router answers it from
    the database); the same write again (its ``received_at`` and text stored) is True."""
    msg = frame.message
    now = time.time()
    conn.execute(
        "INSERT INTO chats(id, first_seen, last_seen) VALUES (?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        (msg.chat, msg.received_at, msg.received_at),
    )
    inserted = conn.execute(
        "INSERT OR IGNORE INTO messages(id, chat, sender, text, tier, status, received_at, stored_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (msg.id, msg.chat, msg.sender, msg.text, msg.tier, msg.status, msg.received_at, now),
    ).rowcount
    if not inserted:
        stored = conn.execute("SELECT chat, sender, text, received_at FROM messages WHERE id = ?",
                              (msg.id,)).fetchone()
        return stored == (msg.chat, msg.sender, msg.text, msg.received_at)
    if frame.answer is not None:
        _insert_reply(conn, msg.id, 0, frame.answer, now)
    return True


def _insert_reply(conn: sqlite3.Connection, message_id: str, seq: int, answer: Reply | Notice,
                  now: float, tools: str = "") -> None:
    if isinstance(answer, Reply):
        row = ("reply", answer.tier, None, answer.text)
    else:
        row = ("notice", None, answer.kind, answer.text)
    conn.execute(
        "INSERT OR IGNORE INTO replies(message_id, seq, kind, tier, notice_kind, text, created_at, tools) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (message_id, seq, *row, now, tools or None),
    )


def save_answer(conn: sqlite3.Connection, frame: SaveAnswer) -> None:
    """A later answer (seq > 0) and the message's new status; a resent one changes nothing."""
    conn.execute("UPDATE messages SET status = ? WHERE id = ?", (frame.status, frame.message_id))
    _insert_reply(conn, frame.message_id, frame.seq, frame.answer, time.time(), frame.tools)


def save_job(conn: sqlite3.Connection, frame: SaveJob) -> None:
    now = time.time()
    conn.execute(
        "INSERT INTO jobs(id, message_id, chat, tier, state, container, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
        "container = coalesce(nullif(excluded.container, ''), container), updated_at = excluded.updated_at",
        (frame.id, frame.message_id, frame.chat, frame.tier, frame.state, frame.container, now, now),
    )


def save_usage(conn: sqlite3.Connection, frame: SaveUsage) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO usage(job_id, model, input_tokens, output_tokens, cost_usd, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (frame.job_id, frame.model, frame.input_tokens, frame.output_tokens, frame.cost_usd, time.time()),
    )


def save_note(conn: sqlite3.Connection, frame: SaveNote) -> None:
    """Insert a note; the same note again changes nothing (or brings a superseded one back).

    A piece of a file supersedes the live note that held its place, and a file now shorter
    supersedes the pieces past its end, so re-importing an edited file leaves one live copy.
    """
    note = frame.note
    now = time.time()
    conn.execute(
        "INSERT INTO notes(id, text, source, tags, chat, part, created_at, stored_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET superseded_at = NULL, part = excluded.part",
        (note.id, note.text, note.source, json.dumps(note.tags, ensure_ascii=False), note.chat,
         note.part, note.created_at, now),
    )
    if note.part is not None:
        conn.execute(
            "UPDATE notes SET superseded_at = ? WHERE source = ? AND part = ? AND id != ? "
            "AND superseded_at IS NULL",
            (now, note.source, note.part, note.id),
        )
    if note.parts is not None:
        conn.execute(
            "UPDATE notes SET superseded_at = ? WHERE source = ? AND part >= ? "
            "AND superseded_at IS NULL",
            (now, note.source, note.parts),
        )


# The write for each kind of store frame.
WRITES = {SaveExchange: save_exchange, SaveAnswer: save_answer, SaveJob: save_job,
          SaveUsage: save_usage, SaveNote: save_note}
