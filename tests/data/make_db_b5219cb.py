"""Make tests/data/db_b5219cb.sqlite: a database written by the release at commit b5219cb,
which never set a schema version (PRAGMA user_version stays 0). tests/test_migrations.py
upgrades a copy of it with today's code and checks that nothing was lost.

It must run with THAT release's code, not this tree's (which would write today's schema):

    git worktree add /tmp/ww-b5219cb b5219cb
    PYTHONPATH=/tmp/ww-b5219cb .venv/bin/python tests/data/make_db_b5219cb.py tests/data/db_b5219cb.sqlite

Every write goes through that release's store-writer (``open_writer`` and ``WRITES``), as
its service committed them: one transaction per batch. The result is checkpointed into one
file (still in WAL mode, as the release leaves it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("proto.migrations") is not None:
    sys.exit("make_db_b5219cb.py: this is newer code than b5219cb; put b5219cb's tree first on PYTHONPATH")

from proto.frames import (  # noqa: E402  (after the check: the wrong tree must not be used)
    Notice, Reply, SaveAnswer, SaveExchange, SaveJob, SaveNote, SaveUsage, StoredMessage, StoredNote,
)
from services.search_cache.text import note_id  # noqa: E402
from services.store_writer import database  # noqa: E402
from services.store_writer.database import WRITES, open_writer  # noqa: E402

BUSY_TIMEOUT_MS = 5000
# Fixed times (seconds since the epoch) so the file's messages read the same every time it
# is made; the writer itself stamps stored_at and created_at with the time of the run.
T0 = 1_700_000_000.0


def message(id: str, chat: str, text: str, tier: str, status: str, at: float) -> StoredMessage:
    return StoredMessage(id=id, chat=chat, sender=f"user-{chat}", text=text, tier=tier,
                         received_at=T0 + at, status=status)


def note(text: str, source: str = "chat", chat: str = "", tags: tuple[str, ...] = (),
         part: int | None = None, parts: int | None = None, at: float = 0.0) -> SaveNote:
    return SaveNote(note=StoredNote(id=note_id(source, text), text=text, source=source,
                                    created_at=T0 + at, tags=list(tags), chat=chat,
                                    part=part, parts=parts))


BATCHES = [
    # Answered at once: inline and oracle-only replies, in three chats (one Thai).
    [
        SaveExchange(message=message("m-inline", "alice", "hi there", "inline", "answered", 1),
                     answer=Reply(id="m-inline", chat="alice", tier="inline", text="Hello!")),
        SaveExchange(message=message("m-thai", "somchai", "สวัสดีครับ วันนี้อากาศเป็นอย่างไร", "inline",
                                     "answered", 2),
                     answer=Reply(id="m-thai", chat="somchai", tier="inline", text="สวัสดีครับ")),
        SaveExchange(message=message("m-oracle", "bob", "what is the capital of Peru?", "oracle-only",
                                     "answered", 3),
                     answer=Reply(id="m-oracle", chat="bob", tier="oracle-only", text="Lima.")),
    ],
    # Container tiers: accepted for an agent (no answer yet), then progress and a final reply.
    [
        SaveExchange(message=message("m-light", "alice", "summarise my inbox", "container-light",
                                     "accepted", 4)),
        SaveJob(id="job-light", message_id="m-light", chat="alice", tier="container-light",
                state="accepted"),
        SaveExchange(message=message("m-full", "bob", "debug the build", "container-full", "queued", 5),
                     answer=Notice(id="m-full", chat="bob", kind="queued", text="queued (position 1)")),
        SaveJob(id="job-full", message_id="m-full", chat="bob", tier="container-full", state="accepted"),
    ],
    [
        SaveJob(id="job-light", message_id="m-light", chat="alice", tier="container-light",
                state="running", container="ww-agent-1"),
        SaveAnswer(message_id="m-light", seq=1, status="accepted",
                   answer=Notice(id="m-light", chat="alice", kind="progress", text="reading 12 mails")),
        SaveAnswer(message_id="m-light", seq=2, status="accepted",
                   answer=Notice(id="m-light", chat="alice", kind="progress", text="writing the summary")),
    ],
    [
        SaveAnswer(message_id="m-light", seq=3, status="answered",
                   answer=Reply(id="m-light", chat="alice", tier="container-light",
                                text="Three mails need an answer today.")),
        SaveJob(id="job-light", message_id="m-light", chat="alice", tier="container-light", state="done"),
        SaveUsage(job_id="job-light", model="claude-haiku", input_tokens=1200, output_tokens=300,
                  cost_usd=0.0027),
    ],
    # Refused and failed messages; a job that failed after using tokens; one still queued.
    [
        SaveExchange(message=message("m-refused", "ops", "run rm -rf /", "container-full", "refused", 6),
                     answer=Notice(id="m-refused", chat="ops", kind="unavailable",
                                   text="container-full is not available")),
        SaveExchange(message=message("m-failed", "ops", "deploy", "container-light", "accepted", 7)),
        SaveJob(id="job-failed", message_id="m-failed", chat="ops", tier="container-light",
                state="failed", container="ww-agent-2"),
        SaveAnswer(message_id="m-failed", seq=1, status="failed",
                   answer=Notice(id="m-failed", chat="ops", kind="error", text="the agent crashed")),
        SaveUsage(job_id="job-failed", model="claude-sonnet", input_tokens=5000, output_tokens=42,
                  cost_usd=0.0156),
        SaveUsage(job_id="job-full", model="claude-sonnet", input_tokens=10, output_tokens=0,
                  cost_usd=0.00003),
    ],
    # Notes: chat notes (Thai and English, with tags) and a file imported in three pieces.
    [
        note("ร้านกาแฟโปรดอยู่ซอยอารีย์ 5", chat="somchai", tags=("ร้าน", "กาแฟ"), at=10),
        note("The wifi password is on the fridge", chat="alice", tags=("home",), at=11),
        note("Pad thai: soak the noodles 30 minutes", source="recipes.md", part=0, parts=3, at=12),
        note("Green curry: fry the paste in coconut cream", source="recipes.md", part=1, parts=3, at=12),
        note("Mango sticky rice: steam the rice twice", source="recipes.md", part=2, parts=3, at=12),
    ],
    # The file imported again, edited and shorter: piece 1 is superseded by its new text,
    # piece 2 by the shorter piece count.
    [
        note("Pad thai: soak the noodles 30 minutes", source="recipes.md", part=0, parts=2, at=20),
        note("Green curry: fry the paste in coconut cream until it splits", source="recipes.md",
             part=1, parts=2, at=20),
    ],
]


def main(out: Path) -> None:
    if out.exists():
        sys.exit(f"make_db_b5219cb.py: {out} exists; remove it first")
    conn = open_writer(out, BUSY_TIMEOUT_MS)
    for batch in BATCHES:
        conn.execute("BEGIN IMMEDIATE")
        for frame in batch:
            WRITES[type(frame)](conn, frame)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()  # the last connection closing removes the empty WAL: one file
    print(f"wrote {out} ({out.stat().st_size} bytes) with the code in {Path(database.__file__).parents[2]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
