"""The store-writer's side of the database: pragmas, schema creation, idempotent writes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from proto.db import SCHEMA
from proto.frames import Reply, SaveExchange


def open_writer(path: Path, busy_timeout_ms: int, wal_autocheckpoint_pages: int = 1000) -> sqlite3.Connection:
    """The one writing connection: WAL, NORMAL sync (durable across process crashes), schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"{path}: could not switch to WAL (journal_mode={mode})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint_pages)}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    return conn


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    """Copy the WAL into the database without waiting for readers; (wal pages, copied)."""
    _, wal_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return wal_pages, copied


def save_exchange(conn: sqlite3.Connection, frame: SaveExchange) -> None:
    """Insert a message and its answer; a message id seen before changes nothing."""
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
    answer = frame.answer
    if not inserted or answer is None:
        return
    if isinstance(answer, Reply):
        row = ("reply", answer.tier, None, answer.text)
    else:
        row = ("notice", None, answer.kind, answer.text)
    conn.execute(
        "INSERT OR IGNORE INTO replies(message_id, seq, kind, tier, notice_kind, text, created_at) "
        "VALUES (?, 0, ?, ?, ?, ?, ?)",
        (msg.id, *row, now),
    )
