"""Reading the database, shared by the one writer (store-writer) and every reader.

Only the store-writer writes; everyone else opens the file with ``open_readonly``. The
tables are made, and changed, by the migrations in proto/migrations.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, NamedTuple

from proto.frames import Hit, HistoryMessage, Notice, Reply, SearchFilters

# The trigram tokenizer cannot match fewer characters than this through the index.
TRIGRAM = 3


def open_readonly(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A reader: cannot write even by mistake."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    return conn


class KnownMessage(NamedTuple):
    """A stored message as its client sent it, and the last answer it got (rebuilt as the
    frame the client got), or None while it has none."""

    chat: str
    sender: str
    text: str
    answer: Reply | Notice | None


def known_message(conn: sqlite3.Connection, message_id: str) -> KnownMessage | None:
    """The message stored under this id, or None."""
    row = conn.execute(
        "SELECT m.chat, m.sender, m.text, r.kind, r.tier, r.notice_kind, r.text FROM messages m "
        "LEFT JOIN replies r ON r.message_id = m.id WHERE m.id = ? ORDER BY r.seq DESC LIMIT 1",
        (message_id,),
    ).fetchone()
    if row is None:
        return None
    chat, sender, text, kind, tier, notice_kind, answer_text = row
    if kind is None:
        answer = None
    elif kind == "reply":
        answer = Reply(id=message_id, chat=chat, tier=tier, text=answer_text)
    else:
        answer = Notice(id=message_id, chat=chat, kind=notice_kind, text=answer_text)
    return KnownMessage(chat, sender, text, answer)


# --- knowledge base reads ----------------------------------------------------------------

def _filter_sql(filters: SearchFilters, live_index: bool = True) -> tuple[str, list]:
    """Conditions on a notes row ``n`` for the filters, as SQL and parameters. Without
    ``live_index`` the "live" condition may not pick the notes_live index (unary +): looking
    up a few ids, the planner would otherwise scan every live note through it."""
    sql, params = "n.superseded_at IS NULL" if live_index else "+n.superseded_at IS NULL", []
    if filters.source:
        sql += " AND substr(n.source, 1, ?) = ?"
        params += [len(filters.source), filters.source]
    for tag in filters.tags:
        sql += " AND EXISTS (SELECT 1 FROM json_each(n.tags) WHERE value = ?)"
        params.append(tag)
    if filters.chat:
        sql += " AND n.chat = ?"
        params.append(filters.chat)
    return sql, params


def search_notes_fts(conn: sqlite3.Connection, match: str, filters: SearchFilters, limit: int) -> list[Hit]:
    """Live notes matching an FTS5 expression, best bm25 first; score = -bm25 (higher is better)."""
    if filters.source or filters.tags or filters.chat:
        where, params = _filter_sql(filters)
        rows = conn.execute(
            "SELECT n.id, n.text, n.source, -bm25(notes_fts) FROM notes_fts "
            f"JOIN notes n ON n.rowid = notes_fts.rowid WHERE notes_fts MATCH ? AND {where} "
            "ORDER BY bm25(notes_fts) LIMIT ?",
            (match, *params, limit),
        ).fetchall()
    else:
        # Ranked in the index first, and only the best looked up in notes: joined before
        # ranking, every match was (15,000 rows for a query at 100,000 notes: 20 ms of 30).
        # The index still holds superseded notes, so as many more are ranked as there are.
        superseded = conn.execute("SELECT count(*) FROM notes WHERE superseded_at IS NOT NULL").fetchone()[0]
        rows = conn.execute(
            "SELECT n.id, n.text, n.source, best.score FROM (SELECT rowid, -bm25(notes_fts) AS score "
            "FROM notes_fts WHERE notes_fts MATCH ? ORDER BY bm25(notes_fts) LIMIT ?) best "
            "JOIN notes n ON n.rowid = best.rowid WHERE n.superseded_at IS NULL ORDER BY best.score DESC LIMIT ?",
            (match, limit + superseded, limit),
        ).fetchall()
    return [Hit(id=id, text=text, source=source, score=score) for id, text, source, score in rows]


def note_rows(conn: sqlite3.Connection) -> int:
    """Notes in the full-text index (live and superseded): the base of document frequencies."""
    return conn.execute("SELECT count(*) FROM notes").fetchone()[0]


def term_document_counts(conn: sqlite3.Connection, terms: Iterable[str]) -> list[int]:
    """For each full-text term (already quoted), how many notes contain it."""
    return [conn.execute("SELECT count(*) FROM notes_fts WHERE notes_fts MATCH ?", (term,)).fetchone()[0]
            for term in terms]


def search_notes_substring(conn: sqlite3.Connection, needle: str, filters: SearchFilters, limit: int) -> list[Hit]:
    """Live notes containing a string too short for the trigram index (a scan), newest first."""
    where, params = _filter_sql(filters)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        f"SELECT n.id, n.text, n.source FROM notes n WHERE n.text LIKE ? ESCAPE '\\' AND {where} "
        "ORDER BY n.created_at DESC LIMIT ?",
        (f"%{escaped}%", *params, limit),
    ).fetchall()
    return [Hit(id=id, text=text, source=source, score=1.0) for id, text, source in rows]


def live_notes_by_id(conn: sqlite3.Connection, ids: Iterable[str], filters: SearchFilters) -> dict[str, Hit]:
    """The live notes among ids that pass the filters (score 0; the caller sets it)."""
    ids = list(ids)
    if not ids:
        return {}
    where, params = _filter_sql(filters, live_index=False)
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"SELECT n.id, n.text, n.source FROM notes n WHERE n.id IN ({marks}) AND {where}",
        (*ids, *params),
    ).fetchall()
    return {id: Hit(id=id, text=text, source=source, score=0.0) for id, text, source in rows}


def latest_notes(conn: sqlite3.Connection, filters: SearchFilters, limit: int) -> list[Hit]:
    """The most recently learned live notes."""
    where, params = _filter_sql(filters)
    rows = conn.execute(
        f"SELECT n.id, n.text, n.source, n.created_at FROM notes n WHERE {where} "
        "ORDER BY n.created_at DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [Hit(id=id, text=text, source=source, score=created) for id, text, source, created in rows]


def live_note_texts(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(id, text, source) of every live note."""
    return conn.execute("SELECT id, text, source FROM notes WHERE superseded_at IS NULL").fetchall()


def count_live_notes(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM notes WHERE superseded_at IS NULL").fetchone()[0]


def recent_turns(conn: sqlite3.Connection, chat: str, before: str, limit: int) -> list[tuple[str, str, str]]:
    """The chat's last ``limit`` exchanges received before message ``before``, oldest first,
    as (role, text, tools) triples: each message and the reply it got, with what the agent's
    tools did for it ("" for none)."""
    rows = conn.execute(
        "SELECT m.text, r.text, r.tools FROM messages m LEFT JOIN replies r ON r.rowid = "
        "  (SELECT rowid FROM replies WHERE message_id = m.id AND kind = 'reply' ORDER BY seq DESC LIMIT 1) "
        "WHERE m.chat = ? AND m.received_at < (SELECT received_at FROM messages WHERE id = ?) "
        "ORDER BY m.received_at DESC LIMIT ?",
        (chat, before, limit),
    ).fetchall()
    turns: list[tuple[str, str, str]] = []
    for text, reply, tools in reversed(rows):
        turns.append(("user", text, ""))
        if reply is not None:
            turns.append(("assistant", reply, tools or ""))
    return turns


def last_agent_reply(conn: sqlite3.Connection, chat: str) -> tuple[str, float] | None:
    """(tier, when) of the chat's latest agent job that got a reply: its agent session."""
    return conn.execute(
        "SELECT m.tier, r.created_at FROM messages m JOIN replies r ON r.message_id = m.id "
        "WHERE m.chat = ? AND m.tier IN ('container-light', 'container-full') AND r.kind = 'reply' "
        "ORDER BY m.received_at DESC, r.seq DESC LIMIT 1",
        (chat,),
    ).fetchone()


def unfinished_messages(conn: sqlite3.Connection) -> list[tuple[str, str, str, str, str]]:
    """Messages accepted for an agent but never answered (id, chat, sender, text, tier),
    oldest first: after a router restart they are sent to the pool again."""
    return conn.execute(
        "SELECT id, chat, sender, text, tier FROM messages WHERE status IN ('accepted', 'queued') "
        "ORDER BY received_at"
    ).fetchall()


def tokens_by_model_since(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Tokens per model since a time (seconds since the epoch)."""
    return dict(conn.execute(
        "SELECT model, sum(input_tokens + output_tokens) FROM usage WHERE created_at >= ? GROUP BY model",
        (since,)).fetchall())


def spend_since(conn: sqlite3.Connection, since: float) -> tuple[int, int, float]:
    """(jobs, tokens, USD) of the agents' usage since a time (seconds since the epoch)."""
    jobs, tokens, cost = conn.execute(
        "SELECT count(*), coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0) "
        "FROM usage WHERE created_at >= ?", (since,)).fetchone()
    return jobs, tokens, cost


def chat_history(conn: sqlite3.Connection, chat: str, before: str, limit: int) -> tuple[list[HistoryMessage], bool]:
    """The ``limit`` messages of a chat just before message ``before`` ("" = the newest),
    oldest first, each with its answers in order; and whether older ones exist."""
    if before:
        row = conn.execute("SELECT received_at FROM messages WHERE id = ? AND chat = ?", (before, chat)).fetchone()
        if row is None:
            return [], False
        rows = conn.execute(
            "SELECT id, sender, text, tier, status, received_at FROM messages WHERE chat = ? "
            "AND (received_at < ? OR (received_at = ? AND id < ?)) "
            "ORDER BY received_at DESC, id DESC LIMIT ?", (chat, row[0], row[0], before, limit + 1)).fetchall()
    else:
        rows = conn.execute(
            "SELECT id, sender, text, tier, status, received_at FROM messages WHERE chat = ? "
            "ORDER BY received_at DESC, id DESC LIMIT ?", (chat, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = list(reversed(rows[:limit]))
    answers: dict[str, list[Reply | Notice]] = {row[0]: [] for row in rows}
    if answers:
        marks = ",".join("?" * len(answers))
        for message_id, kind, tier, notice_kind, text in conn.execute(
                "SELECT message_id, kind, tier, notice_kind, text FROM replies "
                f"WHERE message_id IN ({marks}) ORDER BY message_id, seq", list(answers)):
            answers[message_id].append(
                Reply(id=message_id, chat=chat, tier=tier, text=text) if kind == "reply"
                else Notice(id=message_id, chat=chat, kind=notice_kind, text=text))
    messages = [HistoryMessage(id=id, sender=sender, text=text, tier=tier, status=status,
                               received_at=received_at, answers=answers[id])
                for id, sender, text, tier, status, received_at in rows]
    return messages, more
