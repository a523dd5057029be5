"""The old design's SQLite: rollback journal (the default), a 5 s busy timeout, and more than
one writing process (the channel inserts messages; the orchestrator marks and answers them)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

DATABASE = "messages.db"
BUSY_TIMEOUT_S = 5.0
JOURNAL_MODE = "DELETE"   # SQLite's default rollback journal
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, chat TEXT, text TEXT, "
    "written REAL, state TEXT DEFAULT 'new')",
    "CREATE INDEX IF NOT EXISTS messages_state ON messages(state)",
    "CREATE TABLE IF NOT EXISTS replies (id TEXT PRIMARY KEY, text TEXT, error TEXT, at REAL)",
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA journal_mode={JOURNAL_MODE}")
    return conn


def create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def insert_message(conn: sqlite3.Connection, message_id: str, chat: str, text: str) -> None:
    """The channel's write: one message, one transaction."""
    conn.execute("INSERT INTO messages (id, chat, text, written) VALUES (?, ?, ?, ?)",
                 (message_id, chat, text, time.time()))


def take_new(conn: sqlite3.Connection, lock: threading.Lock) -> list[tuple]:
    """The message loop's poll: new messages, marked taken in the same transaction."""
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute("SELECT id, chat, text, written FROM messages WHERE state = 'new' "
                                "ORDER BY rowid").fetchall()
            conn.executemany("UPDATE messages SET state = 'taken' WHERE id = ?", [(r[0],) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return rows


def save_reply(conn: sqlite3.Connection, lock: threading.Lock, message_id: str, text: str, error: str) -> None:
    with lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", (message_id, text, error, time.time()))
            conn.execute("UPDATE messages SET state = 'answered' WHERE id = ?", (message_id,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
