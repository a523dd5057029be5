"""The database's schema as numbered migrations. ``PRAGMA user_version`` holds the number of
the last one a database has had; the store-writer applies the pending ones when it starts
(services/store_writer/database.py ``migrate``): all in one transaction, after copying a file
that holds data to ``<file>.v<old version>.bak``. A database newer than ``LATEST`` is refused.

To change the schema, append a migration, never edit one that was released (databases out
there already had it):

    Migration("per-chat state", "CREATE TABLE chat_state (chat TEXT PRIMARY KEY, ...);"),

Its number is its place in ``MIGRATIONS``, counting from 1. Its SQL may hold several
statements (a trigger's body too); foreign keys are not enforced while it runs, so a table
can be rebuilt the way SQLite's ALTER TABLE documentation describes (create the new table,
copy, drop the old one, rename).
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    what: str  # for the log line saying it was applied
    sql: str


# The schema of the first release (commit b5219cb), unchanged. That release never set
# user_version, so its databases are at version 0 with these tables already there: every
# statement is IF NOT EXISTS, so they go through migration 1 untouched and an empty file
# gets the tables.
FIRST_RELEASE = """
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
    status       TEXT NOT NULL,             -- answered, accepted (for an agent), queued, refused, failed
    received_at  REAL NOT NULL,
    stored_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages(chat, received_at);
CREATE INDEX IF NOT EXISTS messages_unfinished ON messages(received_at)
    WHERE status IN ('accepted', 'queued');
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
    job_id         TEXT UNIQUE,            -- one row per job: a resent write changes nothing
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       REAL NOT NULL,
    created_at     REAL NOT NULL
);
-- The knowledge base: the user's notes. A note is never changed or deleted: a new version of
-- a file's piece supersedes the old one (superseded_at), and searches read live notes only.
CREATE TABLE IF NOT EXISTS notes (
    id             TEXT PRIMARY KEY,        -- derived from source and text: saves are idempotent
    text           TEXT NOT NULL,
    source         TEXT NOT NULL,           -- "chat", or the file a note was imported from
    tags           TEXT NOT NULL,           -- JSON array of strings
    chat           TEXT NOT NULL,
    part           INTEGER,                 -- the piece of its source file, NULL for chat notes
    created_at     REAL NOT NULL,
    stored_at      REAL NOT NULL,
    superseded_at  REAL
);
CREATE INDEX IF NOT EXISTS notes_by_source ON notes(source, part);
CREATE INDEX IF NOT EXISTS notes_live ON notes(superseded_at, created_at);
-- Full text over notes.text. The trigram tokenizer indexes every 3 characters, so substrings
-- match in Thai (no spaces between words) as in English; unicode61 would take a whole Thai
-- sentence as one token. Filled by trigger: notes are only ever inserted.
CREATE VIRTUAL TABLE IF NOT EXISTS notes_fts USING fts5(
    text, content='notes', content_rowid='rowid', tokenize='trigram'
);
CREATE TRIGGER IF NOT EXISTS notes_to_fts AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts(rowid, text) VALUES (new.rowid, new.text);
END;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration("chats, messages, replies, jobs, usage, notes and their full-text index", FIRST_RELEASE),
    # What an agent's tools did in the turn that made a reply (bounded, one line a call): the
    # history sent with later jobs of the chat includes it.
    Migration("the tools an agent used for a reply", "ALTER TABLE replies ADD COLUMN tools TEXT;"),
    # A model with no price has an unknown cost, not $0: NULL (SQLite cannot drop NOT NULL in
    # place, so the table is rebuilt, rows and ids kept).
    Migration("usage: an unknown cost is NULL, not $0", """
CREATE TABLE usage_new (
    id             INTEGER PRIMARY KEY,
    job_id         TEXT UNIQUE,
    model          TEXT NOT NULL,
    input_tokens   INTEGER NOT NULL,
    output_tokens  INTEGER NOT NULL,
    cost_usd       REAL,                   -- NULL: the model has no price in [prices]
    created_at     REAL NOT NULL
);
INSERT INTO usage_new SELECT id, job_id, model, input_tokens, output_tokens, cost_usd, created_at FROM usage;
DROP TABLE usage;
ALTER TABLE usage_new RENAME TO usage;
"""),
)
# The version of a database that has had every migration: the code's schema version.
LATEST = len(MIGRATIONS)
