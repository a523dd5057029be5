"""Upgrades keep the user's data: a database written by the first release (commit b5219cb;
tests/data/db_b5219cb.sqlite, made by tests/data/make_db_b5219cb.py with that release's
code) opened by today's store-writer, in process and as the real service; the migration
mechanism on a later schema change; and a database newer than the code, refused unwritten."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from proto.config import load
from proto.db import (
    count_live_notes, open_readonly, search_notes_fts, spend_since, known_message, unfinished_messages,
)
from proto.frames import (
    Codec, Committed, Notice, Reply, SaveExchange, SaveNote, SearchFilters, StoredMessage, StoredNote, StoreOut,
)
from proto.migrations import LATEST, MIGRATIONS, Migration
from proto.sockets import connect_dealer
from services.store_writer import database
from services.store_writer.database import DatabaseTooNew, backup_path, open_writer, save_exchange, save_note

from conftest import REPO, wait_for

FIXTURE = Path(__file__).parent / "data" / "db_b5219cb.sqlite"
BUSY_TIMEOUT_MS = 5000
# What make_db_b5219cb.py wrote: the tests below would pass on an empty file otherwise.
FIXTURE_ROWS = {"chats": 4, "messages": 7, "replies": 9, "jobs": 3, "usage": 3, "notes": 6}
FIXTURE_LIVE_NOTES = 4
SERVICE_DEADLINE = 30.0
# A later schema change, as a real one would be written: a table and a column.
PER_CHAT_STATE = Migration("per-chat state and the usage's provider", """
CREATE TABLE chat_state (chat TEXT PRIMARY KEY REFERENCES chats(id), muted INTEGER NOT NULL DEFAULT 0);
ALTER TABLE usage ADD COLUMN provider TEXT NOT NULL DEFAULT 'anthropic';
""")


def dump(path: Path) -> tuple[int, list[str]]:
    """Everything a database holds: its version, and every table's schema and rows (the
    full-text index's own tables too)."""
    conn = open_readonly(path, BUSY_TIMEOUT_MS)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0], list(conn.iterdump())
    finally:
        conn.close()


def rows(conn: sqlite3.Connection, table: str, like: sqlite3.Connection | None = None) -> list[tuple]:
    """Every row of a table; with ``like``, only the columns that table has there (later
    migrations add columns: the old ones must keep their values)."""
    columns = [row[1] for row in (like or conn).execute(f"PRAGMA table_info({table})")]
    return conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid").fetchall()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backups(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".bak"))


@pytest.fixture
def original(tmp_path) -> Path:
    """A copy to read the fixture from: reading a WAL database leaves -wal and -shm files
    beside it, which must not appear in tests/data."""
    path = tmp_path / "original.db"
    shutil.copyfile(FIXTURE, path)
    return path


@pytest.fixture
def first_release_db(tmp_path) -> Path:
    """A copy of the fixture, where the store-writer keeps its database."""
    path = tmp_path / "data" / "warmwire.db"
    path.parent.mkdir()
    shutil.copyfile(FIXTURE, path)
    return path


def test_the_fixture_is_a_first_release_database_with_data(original):
    version, _ = dump(original)
    assert version == 0  # that release never set one
    conn = open_readonly(original, BUSY_TIMEOUT_MS)
    assert {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in FIXTURE_ROWS} == FIXTURE_ROWS
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_a_first_release_database_is_upgraded_with_every_row_kept(first_release_db, original, caplog):
    before = open_readonly(original, BUSY_TIMEOUT_MS)
    caplog.set_level(logging.INFO, logger="store-writer")
    conn = open_writer(first_release_db, BUSY_TIMEOUT_MS)
    assert conn.execute("PRAGMA user_version").fetchone() == (LATEST,)
    for table in FIXTURE_ROWS:
        assert rows(conn, table, like=before) == rows(before, table), table
    # Today's reads find the old rows: answers (the last of several), unfinished work,
    # spending, live notes only, and the full-text index (a Thai substring of a note).
    assert known_message(conn, "m-light").answer == Reply(
        id="m-light", chat="alice", tier="container-light", text="Three mails need an answer today.")
    assert known_message(conn, "m-refused").answer == Notice(
        id="m-refused", chat="ops", kind="unavailable", text="container-full is not available")
    assert [id for id, *_ in unfinished_messages(conn)] == ["m-full"]
    assert spend_since(conn, 0) == (3, 6552, pytest.approx(0.01833))
    assert count_live_notes(conn) == FIXTURE_LIVE_NOTES
    thai = search_notes_fts(conn, '"กาแฟโปรด"', SearchFilters(), 10)
    assert [hit.text for hit in thai] == ["ร้านกาแฟโปรดอยู่ซอยอารีย์ 5"]
    curry = search_notes_fts(conn, '"green curry"', SearchFilters(source="recipes.md"), 10)
    assert [hit.text for hit in curry] == ["Green curry: fry the paste in coconut cream until it splits"]
    conn.execute("INSERT INTO notes_fts(notes_fts) VALUES ('integrity-check')")  # index = notes
    # One line for the copy (naming it) and one per migration applied.
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [f"copied {first_release_db} (schema version 0) to {backup_path(first_release_db, 0)} "
                     "before migrating it",
                     *(f"applied migration {n} of {LATEST}: {migration.what}"
                       for n, migration in enumerate(MIGRATIONS, start=1))]


def test_the_copy_holds_the_database_as_it_was_and_a_second_start_migrates_nothing(first_release_db, original,
                                                                                   caplog):
    open_writer(first_release_db, BUSY_TIMEOUT_MS).close()
    backup = backup_path(first_release_db, 0)
    assert backup.name == "warmwire.db.v0.bak"
    assert dump(backup) == dump(original)
    copied = backup.stat().st_mtime_ns, digest(backup)
    caplog.set_level(logging.INFO, logger="store-writer")
    caplog.clear()
    conn = open_writer(first_release_db, BUSY_TIMEOUT_MS)
    assert caplog.records == []
    assert database.migrate(conn, first_release_db, BUSY_TIMEOUT_MS) == []
    assert backups(first_release_db.parent) == [backup.name]
    assert (backup.stat().st_mtime_ns, digest(backup)) == copied


def test_the_upgraded_database_takes_new_writes_and_indexes_them_with_the_old_notes(first_release_db):
    conn = open_writer(first_release_db, BUSY_TIMEOUT_MS)
    save_exchange(conn, SaveExchange(
        message=StoredMessage(id="m-new", chat="alice", sender="user-alice", text="and now?", tier="inline",
                              received_at=time.time()),
        answer=Reply(id="m-new", chat="alice", tier="inline", text="Now too.")))
    save_note(conn, SaveNote(note=StoredNote(id="n-new", text="ร้านกาแฟใหม่ที่สยาม", source="chat",
                                             created_at=time.time(), chat="somchai")))
    assert known_message(conn, "m-new").answer == Reply(id="m-new", chat="alice", tier="inline", text="Now too.")
    hits = search_notes_fts(conn, '"ร้านกาแฟ"', SearchFilters(), 10)
    assert sorted(hit.text for hit in hits) == ["ร้านกาแฟโปรดอยู่ซอยอารีย์ 5", "ร้านกาแฟใหม่ที่สยาม"]


def test_a_new_file_gets_every_migration_and_no_copy(tmp_path):
    path = tmp_path / "warmwire.db"
    conn = open_writer(path, BUSY_TIMEOUT_MS)
    assert conn.execute("PRAGMA user_version").fetchone() == (LATEST,)
    tables = {name for name, in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert set(FIXTURE_ROWS) <= tables
    assert backups(tmp_path) == []


# --- the mechanism, with a migration 2 the test adds ------------------------------------

@pytest.fixture
def with_migration_2(monkeypatch):
    def add(migration: Migration) -> None:
        monkeypatch.setattr(database, "MIGRATIONS", (*MIGRATIONS, migration))
        monkeypatch.setattr(database, "LATEST", LATEST + 1)
    return add


def test_a_later_migration_runs_once_on_an_upgraded_database_after_a_copy_of_it(first_release_db, with_migration_2):
    open_writer(first_release_db, BUSY_TIMEOUT_MS).close()  # today's version
    at_latest = dump(first_release_db)
    with_migration_2(PER_CHAT_STATE)
    conn = open_writer(first_release_db, BUSY_TIMEOUT_MS)
    assert conn.execute("PRAGMA user_version").fetchone() == (LATEST + 1,)
    assert conn.execute("SELECT job_id, provider FROM usage ORDER BY id").fetchall() == [
        ("job-light", "anthropic"), ("job-failed", "anthropic"), ("job-full", "anthropic")]
    conn.execute("INSERT INTO chat_state(chat, muted) VALUES ('alice', 1)")
    assert dump(backup_path(first_release_db, LATEST)) == at_latest
    assert database.migrate(conn, first_release_db, BUSY_TIMEOUT_MS) == []


def test_every_pending_migration_runs_in_order_on_a_first_release_database(first_release_db, with_migration_2,
                                                                           caplog):
    with_migration_2(PER_CHAT_STATE)
    caplog.set_level(logging.INFO, logger="store-writer")
    conn = open_writer(first_release_db, BUSY_TIMEOUT_MS)
    assert conn.execute("PRAGMA user_version").fetchone() == (LATEST + 1,)
    assert conn.execute("SELECT count(*) FROM usage WHERE provider = 'anthropic'").fetchone() == (
        FIXTURE_ROWS["usage"],)
    assert backups(first_release_db.parent) == ["warmwire.db.v0.bak"]
    applied = [record.getMessage() for record in caplog.records if "applied" in record.getMessage()]
    assert applied == [f"applied migration {n} of {LATEST + 1}: {migration.what}"
                       for n, migration in enumerate((*MIGRATIONS, PER_CHAT_STATE), start=1)]


def test_a_failing_migration_leaves_the_database_as_it_was(tmp_path, first_release_db, with_migration_2):
    # Its first statement succeeds, its second fails: neither it nor migration 1 stays.
    with_migration_2(Migration("broken", "CREATE TABLE half_done (x); ALTER TABLE no_such_table ADD COLUMN y;"))
    new = tmp_path / "new.db"
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        open_writer(new, BUSY_TIMEOUT_MS)
    assert dump(new) == (0, ["BEGIN TRANSACTION;", "COMMIT;"])
    before = dump(first_release_db)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        open_writer(first_release_db, BUSY_TIMEOUT_MS)
    assert dump(first_release_db) == before


def test_a_database_newer_than_the_code_is_refused_unwritten(tmp_path):
    path = tmp_path / "warmwire.db"
    conn = open_writer(path, BUSY_TIMEOUT_MS)
    conn.execute(f"PRAGMA user_version={LATEST + 1}")
    conn.close()
    written = digest(path)
    with pytest.raises(DatabaseTooNew) as refused:
        open_writer(path, BUSY_TIMEOUT_MS)
    assert f"{path} has schema version {LATEST + 1}, newer than this code's {LATEST}" in str(refused.value)
    assert digest(path) == written
    assert backups(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")
def test_a_copy_that_does_not_fit_on_the_disk_leaves_the_database_unmigrated(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    # Room for the database, not for its copy too.
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={2 * FIXTURE.stat().st_size * 3 // 4}", "tmpfs",
                    str(folder)], check=True)
    try:
        path = folder / "warmwire.db"
        shutil.copyfile(FIXTURE, path)
        with pytest.raises(sqlite3.OperationalError) as full:
            open_writer(path, BUSY_TIMEOUT_MS)
        # The store-writer takes it for a full disk: it says so and tries again later.
        assert database.unwritable_reason(path, full.value) == database.DISK_FULL
        assert sorted(p.name for p in folder.iterdir()) == ["warmwire.db"]  # no half copy
        assert digest(path) == digest(FIXTURE)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


# --- the real store-writer service, as a process ----------------------------------------

def run_store_writer(home: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    return subprocess.Popen([sys.executable, "-m", "services.store_writer"], cwd=REPO,
                            env={**env, "WARMWIRE_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def service_log(home: Path) -> str:
    path = home / "logs" / "store-writer.log"
    return path.read_text() if path.exists() else ""


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(SERVICE_DEADLINE)


def test_the_store_writer_service_upgrades_a_first_release_database_once(home, original, monkeypatch):
    monkeypatch.setenv("WARMWIRE_HOME", str(home))
    config = load()
    config.database.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, config.database)
    proc = run_store_writer(home)
    try:
        wait_for(lambda: "started" in service_log(home), SERVICE_DEADLINE, "the store-writer to start")
        # It writes onto the upgraded file.
        ctx = zmq.Context.instance()
        sender = connect_dealer(ctx, config.endpoint("store"))
        sender.send(Codec(StoreOut).encode(SaveExchange(message=StoredMessage(
            id="m-after", chat="bob", sender="user-bob", text="still there?", tier="inline",
            received_at=time.time()))))
        assert sender.poll(SERVICE_DEADLINE * 1000), "no acknowledgement"
        assert Codec(StoreOut).decode(sender.recv()) == Committed(keys=["m-after"])
        sender.close()
    finally:
        assert stop(proc) == 0
    log = service_log(home)
    backup = backup_path(config.database, 0)
    assert f"copied {config.database} (schema version 0) to {backup}" in log
    assert log.count("applied migration") == LATEST
    assert dump(backup) == dump(original)
    version, _ = dump(config.database)
    assert version == LATEST
    conn = open_readonly(config.database, BUSY_TIMEOUT_MS)
    assert conn.execute("SELECT count(*) FROM messages").fetchone() == (FIXTURE_ROWS["messages"] + 1,)
    conn.close()
    # Started again: nothing to migrate, no new copy.
    proc = run_store_writer(home)
    try:
        wait_for(lambda: service_log(home).count("started") == 2, SERVICE_DEADLINE, "the second start")
    finally:
        assert stop(proc) == 0
    assert service_log(home).count("applied migration") == LATEST
    assert backups(config.database.parent) == [backup.name]


def test_the_store_writer_service_refuses_a_database_newer_than_the_code(home, monkeypatch):
    monkeypatch.setenv("WARMWIRE_HOME", str(home))
    path = load().database
    path.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={LATEST + 1}")
    conn.close()
    written = digest(path)
    proc = run_store_writer(home)
    try:
        code = proc.wait(SERVICE_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code != 0
    [line] = [line for line in service_log(home).splitlines() if "ERROR" in line]
    assert f"{path} has schema version {LATEST + 1}, newer than this code's {LATEST}" in line
    assert digest(path) == written
    assert backups(path.parent) == []
