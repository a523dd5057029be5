"""The database's shape, shared by the one writer (store-writer) and every reader.

Only the store-writer writes; everyone else opens the file with ``open_readonly``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from proto.frames import Notice, Reply

SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id          TEXT PRIMARY KEY,
    first_seen  REAL NOT NULL,
    last_seen   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id           TEXT PRIMARY KEY,          -- the client's message id: writes are idempotent
    chat         TEXT NOT NULL REFERENCES chats(id),
    sender       TEXT NOT NULL,
    text         TEXT NOT NULL,
    tier         TEXT NOT NULL,
    status       TEXT NOT NULL,             -- answered, queued, refused, failed
    received_at  REAL NOT NULL,
    stored_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat, received_at);
CREATE TABLE IF NOT EXISTS replies (
    message_id   TEXT NOT NULL REFERENCES messages(id),
    seq          INTEGER NOT NULL,          -- several answers per message (progress, final)
    kind         TEXT NOT NULL,             -- reply or notice
    tier         TEXT,                      -- for replies
    notice_kind  TEXT,                      -- for notices
    text         TEXT NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    message_id   TEXT NOT NULL REFERENCES messages(id),
    chat         TEXT NOT NULL,
    tier         TEXT NOT NULL,
    state        TEXT NOT NULL,
    container    TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    id             INTEGER PRIMARY KEY,
    job_id         TEXT REFERENCES jobs(id),
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       REAL NOT NULL,
    created_at     REAL NOT NULL
);
"""


def open_readonly(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A reader: cannot write even by mistake."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return conn


def stored_answer(conn: sqlite3.Connection, message_id: str) -> Reply | Notice | None:
    """The last answer stored for a message, rebuilt as the frame the client got."""
    row = conn.execute(
        "SELECT m.chat, r.kind, r.tier, r.notice_kind, r.text FROM messages m "
        "JOIN replies r ON r.message_id = m.id WHERE m.id = ? ORDER BY r.seq DESC LIMIT 1",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    chat, kind, tier, notice_kind, text = row
    if kind == "reply":
        return Reply(id=message_id, chat=chat, tier=tier, text=text)
    return Notice(id=message_id, chat=chat, kind=notice_kind, text=text)
