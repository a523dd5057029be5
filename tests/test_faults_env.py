"""Fault injection, the environment: the database's disk fills up, the data folder turns
read-only. Real mounts (a small tmpfs, an ext4 image on a loop device), real processes.

Users must get a clear notice (never silence), the store-writer one clear log line (not one
per message), nothing committed may be lost, and writes resume on their own once the disk
can be written again.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest
import zmq

from conftest import ANSWER_DEADLINE, START_DEADLINE, Warmwire, wait_for
from proto.frames import Codec, Committed, Reply, SaveAnswer, SaveExchange, StoredMessage, StoreError, StoreOut
from proto.loop import EventLoop
from proto.sockets import bind_router, connect_dealer
from proto.store_client import StoreClient

pytestmark = pytest.mark.faults
# Mounting a filesystem needs root (CI runs as root): see conftest's ``root`` fixture.
needs_root = pytest.mark.usefixtures("root")

# Big enough for the schema, chroma's empty collection and a few hundred messages.
DATA_MOUNT_SIZE = "24m"
RECOVERY_DEADLINE = 30.0
# How long a writer waits for an acknowledgement before sending a write again (in-process).
ACK_TIMEOUT = 0.05
WRITES = 20  # a backlog of 10 acknowledgement timeouts
# One message of each tier (a note learned too).
TIER_MESSAGES = ("thanks!", "search my notes about tmpfs", "remember that the disk filled up today",
                 "what is the capital of France?",
                 "Please debug this Python traceback: KeyError in parse_config() line 42")


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def mounted(target: Path, *mount_args: str):
    """Mount something on target; unmount (lazily, if something still holds it) at the end."""
    target.mkdir(mode=0o700, exist_ok=True)
    run("mount", *mount_args, str(target))
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the filesystem has no space left."""
    filler = folder / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 512, 1):
            try:
                while True:
                    out.write(chunk[:size])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


class Tally:
    """Every message sent and what came back, to report and to check that nothing is lost."""

    def __init__(self, system: Warmwire, chat: str = "faults-env") -> None:
        self.system = system
        self.chat = chat
        self.client = system.client()
        self.answers: dict[str, dict] = {}
        self.kinds: Counter[str] = Counter()

    def ask(self, text: str = "thanks!") -> dict:
        frame = self.client.ask(text, chat=self.chat, id=uuid.uuid4().hex)
        self.answers[frame["id"]] = frame
        self.kinds[frame["type"] if frame["type"] == "reply" else f"notice:{frame['kind']}"] += 1
        return frame

    def replied(self) -> set[str]:
        return {id for id, frame in self.answers.items() if frame["type"] == "reply"}

    def stored(self) -> set[str]:
        with self.system.db() as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            return {row[0] for row in db.execute("SELECT id FROM messages WHERE chat = ?", (self.chat,))}

    def lost(self) -> set[str]:
        """Replied to, yet not in the database."""
        return self.replied() - self.stored()

    def summary(self) -> str:
        return (f"sent={len(self.answers)} replies={self.kinds['reply']} "
                + " ".join(f"{k}={v}" for k, v in sorted(self.kinds.items()) if k != "reply")
                + f" lost={len(self.lost())}")


class Stream(threading.Thread):
    """Inline messages, one after another, from a client of its own until stopped."""

    def __init__(self, system: Warmwire) -> None:
        super().__init__(daemon=True)
        self.tally = Tally(system, chat="faults-env-stream")
        self.running = True
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.running:
                self.tally.ask()
        except BaseException as exc:  # reported by stop(), in the test's thread
            self.error = exc

    def stop(self) -> Tally:
        self.running = False
        self.join(ANSWER_DEADLINE)
        assert self.error is None, self.error
        return self.tally


def store_writer(system: Warmwire) -> dict:
    """The store-writer's status; {} while the supervisor does not answer."""
    return next((s for s in system.status()["services"] if s["name"] == "store-writer"), {})


def store_writer_log(system: Warmwire) -> str:
    return (system.home / "logs" / "store-writer.log").read_text(errors="replace")


@pytest.mark.slow
@needs_root
def test_disk_full_gives_a_clear_notice_one_log_line_loses_nothing_and_recovers(home, make_env, figures):
    with mounted(home / "data", "-t", "tmpfs", "-o", f"size={DATA_MOUNT_SIZE},mode=0700", "tmpfs"):
        system = Warmwire(home, make_env())
        system.start()
        try:
            tally = Tally(system)
            for _ in range(20):
                assert tally.ask()["type"] == "reply"
            stream = Stream(system)
            stream.start()
            filler = fill(home / "data")
            # The WAL reuses pages it already has, so a few messages may still be stored.
            wait_for(lambda: stream.tally.kinds["notice:unavailable"], ANSWER_DEADLINE,
                     "the stream of messages to be told the disk is full")
            streamed = stream.stop()
            assert set(streamed.kinds) <= {"reply", "notice:unavailable"}, streamed.kinds
            refused = tally.ask()
            assert refused["type"] == "notice" and refused["kind"] == "unavailable", refused
            assert "disk is full" in refused["text"] and refused["retry_after"] > 0, refused
            # The router stays up and keeps answering every tier, with the same notice.
            for _ in range(3):
                for text in TIER_MESSAGES:
                    frame = tally.ask(text)
                    assert frame["type"] == "notice" and "disk is full" in frame["text"], frame
            lines = [l for l in store_writer_log(system).splitlines() if "disk is full" in l]
            assert len(lines) == 1 and "store-writer ERROR" in lines[0], lines
            assert not tally.lost()
            assert tally.stored().isdisjoint(set(tally.answers) - tally.replied())  # refused = not stored

            filler.unlink()
            wait_for(lambda: tally.ask()["type"] == "reply", RECOVERY_DEADLINE,
                     "writes to resume once space returned")
            for text in TIER_MESSAGES:
                assert tally.ask(text)["type"] == "reply", text
            assert "writes resume" in store_writer_log(system)
            wait_for(system.healthy, RECOVERY_DEADLINE, "every service to be healthy again")
            assert system.service("store-writer")["restarts"] == 0
            assert not tally.lost() and not streamed.lost()
            figures.append(f"faults-env disk full: {tally.summary()}; stream while filling: "
                           f"{streamed.summary()}")
        finally:
            system.stop()


@pytest.mark.slow
@needs_root
def test_a_read_only_data_folder_at_start_is_reported_not_restarted_and_recovers(home, make_env, figures):
    env = make_env()
    with mounted(home / "data", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs"):
        first = Warmwire(home, env)
        first.start()  # an earlier run left its database (and chroma's) here
        stored = Tally(first)
        for _ in range(5):
            assert stored.ask()["type"] == "reply"
        first.stop()
        run("mount", "-o", "remount,ro", str(home / "data"))
        system = Warmwire(home, env)
        system.spawn()
        try:
            writer = wait_for(lambda: (s := store_writer(system)).get("state") == "degraded" and s,
                              START_DEADLINE, "the store-writer to report the read-only folder")
            assert "read-only" in writer["stats"]["problem"], writer
            status = system.cli("status")
            assert status.returncode == 1 and "degraded" in status.stdout and "read-only" in status.stdout, status
            tally = Tally(system)
            refused = tally.ask()
            assert refused["kind"] == "unavailable" and "read-only" in refused["text"], refused
            # It stays up, saying so once: no restart loop.
            wait_for(lambda: system.service("store-writer")["stats"]["refused_writes"] >= 1, ANSWER_DEADLINE,
                     "the refused write to be counted")
            assert system.service("store-writer")["restarts"] == 0
            lines = [l for l in store_writer_log(system).splitlines() if "read-only" in l]
            assert len(lines) == 1 and "store-writer ERROR" in lines[0], lines

            run("mount", "-o", "remount,rw", str(home / "data"))
            wait_for(lambda: system.service("store-writer")["state"] == "healthy", RECOVERY_DEADLINE,
                     "the store-writer to be writing again")
            for _ in range(5):
                assert tally.ask()["type"] == "reply"
            assert not tally.lost() and not stored.lost()
            # No warmwire service restarted over it (chroma, an outside program that cannot
            # open its data read-only, restarts within the supervisor's flap limit).
            restarts = {s["name"]: s["restarts"] for s in system.status()["services"] if s["name"] != "chroma"}
            assert set(restarts.values()) == {0}, restarts
            figures.append(f"faults-env read-only at start: {tally.summary()}")
        finally:
            system.stop()


@pytest.mark.slow
@needs_root
def test_a_data_folder_turning_read_only_while_running_is_reported_and_recovers(home, make_env, tmp_path, figures):
    image = tmp_path / "data.ext4"
    with open(image, "wb") as out:
        out.truncate(64 << 20)
    run("mkfs.ext4", "-q", "-F", str(image))
    data = home / "data"
    with mounted(data, "-o", "loop", str(image)):
        data.chmod(0o700)
        system = Warmwire(home, make_env())
        system.start()
        frozen: list[Path] = []
        try:
            tally = Tally(system)
            for _ in range(10):
                assert tally.ask()["type"] == "reply"
            # Root ignores modes, so the folder and the database are made immutable. (Not the
            # -shm file: it is shared memory, and SQLite's mapping of it would fault.)
            frozen = [data, data / "warmwire.db", data / "warmwire.db-wal"]
            run("chattr", "+i", *map(str, frozen))
            refused = tally.ask()
            assert refused["kind"] == "unavailable" and "read-only" in refused["text"], refused
            for _ in range(10):
                assert tally.ask("hello")["kind"] == "unavailable"
            wait_for(lambda: system.service("store-writer")["state"] == "degraded", ANSWER_DEADLINE,
                     "the store-writer to be reported degraded")
            lines = [l for l in store_writer_log(system).splitlines() if "read-only" in l]
            assert len(lines) == 1 and "store-writer ERROR" in lines[0], lines

            run("chattr", "-i", *map(str, frozen))
            frozen = []
            wait_for(lambda: tally.ask()["type"] == "reply", RECOVERY_DEADLINE, "writes to resume")
            for _ in range(5):
                assert tally.ask()["type"] == "reply"
            wait_for(system.healthy, RECOVERY_DEADLINE, "every service to be healthy again")
            assert system.service("store-writer")["restarts"] == 0
            assert not tally.lost()
            figures.append(f"faults-env read-only while running: {tally.summary()}")
        finally:
            if frozen:
                subprocess.run(["chattr", "-i", *map(str, frozen)], capture_output=True)
            system.stop()


def test_while_nothing_can_be_stored_a_new_message_is_refused_and_an_answer_is_kept():
    """The writers' side (StoreClient) on real sockets, against a store-writer that first says
    the disk is full, then commits: what the router does with each kind of write."""
    ctx = zmq.Context.instance()
    endpoint = f"inproc://store-{uuid.uuid4().hex}"
    store = bind_router(ctx, endpoint)
    loop = EventLoop()
    events: list[tuple[str, str]] = []
    client = StoreClient(connect_dealer(ctx, endpoint), loop, ACK_TIMEOUT,
                         lambda key: events.append(("committed", key)),
                         lambda key, error: events.append(("failed", key)),
                         lambda key, error: events.append(("refused", key)),
                         lambda key, error: events.append(("kept", key)))
    client.start()
    codec = Codec(StoreOut)
    seen: Counter[str] = Counter()

    def store_writer_answers() -> None:  # the disk is full for each write's first copy
        while store.poll(0):
            peer, *writes = store.recv_multipart()  # a writer's writes of one wake-up together
            for data in writes:
                key = msgspec.msgpack.decode(data)["message"]["id"] if b"save-exchange" in data else "m0#2"
                seen[key] += 1
                answer = (StoreError(keys=[key], error="the disk is full", unavailable=True)
                          if seen[key] == 1 else Committed(keys=[key]))
                store.send_multipart([peer, codec.encode(answer)])

    loop.add_reader(store, store_writer_answers)
    message = StoredMessage(id="m1", chat="c", sender="s", text="hi", tier="inline", received_at=0.0)
    client.write(SaveExchange(message=message), refusable=True)
    client.write(SaveAnswer(message_id="m0", seq=2, status="answered",
                            answer=Reply(id="m0", chat="c", tier="container-full", text="done")))

    def stop_when_settled() -> None:
        if ("committed", "m0#2") in events or time.monotonic() > give_up:
            loop.stop()
        else:
            loop.call_later(ACK_TIMEOUT, stop_when_settled)

    give_up = time.monotonic() + ANSWER_DEADLINE
    loop.call_later(ACK_TIMEOUT, stop_when_settled)
    loop.run()
    loop.close()
    client.socket.close()
    store.close()
    # The new message is refused once (its user is told to send it again) and never resent;
    # the answer is kept (its user is told once), sent again, and committed.
    assert events == [("refused", "m1"), ("kept", "m0#2"), ("committed", "m0#2")], events
    assert seen == {"m1": 1, "m0#2": 2}
    assert len(client) == 0


def test_a_backlog_the_store_writer_works_through_is_not_sent_again_but_a_lost_write_is():
    """The writers' side (StoreClient) against a store-writer that acknowledges one write per
    tick, in order, far slower than the acknowledgement timeout, and drops one write: the
    backlog is sent once (resending it made the store-writer's work grow with its backlog,
    until it never caught up), and the dropped write is sent again once a later one is
    acknowledged."""
    ctx = zmq.Context.instance()
    endpoint = f"inproc://store-{uuid.uuid4().hex}"
    store = bind_router(ctx, endpoint)
    loop = EventLoop()
    committed: list[str] = []
    client = StoreClient(connect_dealer(ctx, endpoint), loop, ACK_TIMEOUT, committed.append,
                         lambda key, error: None)
    client.start()
    codec = Codec(StoreOut)
    seen: Counter[str] = Counter()
    backlog: list[tuple[bytes, str]] = []

    def store_writer_receives() -> None:
        while store.poll(0):
            peer, *writes = store.recv_multipart()
            for data in writes:
                key = msgspec.msgpack.decode(data)["message"]["id"]
                seen[key] += 1
                if not (key == "m3" and seen[key] == 1):  # its first copy is lost
                    backlog.append((peer, key))

    def store_writer_commits_one() -> None:
        if backlog:
            peer, key = backlog.pop(0)
            store.send_multipart([peer, codec.encode(Committed(keys=[key]))])
        if len(committed) == WRITES or time.monotonic() > give_up:
            loop.stop()
        else:
            loop.call_later(ACK_TIMEOUT / 2, store_writer_commits_one)

    loop.add_reader(store, store_writer_receives)
    for number in range(WRITES):
        client.write(SaveExchange(message=StoredMessage(id=f"m{number}", chat="c", sender="s", text="hi",
                                                        tier="inline", received_at=0.0)))
    give_up = time.monotonic() + ANSWER_DEADLINE
    loop.call_later(ACK_TIMEOUT / 2, store_writer_commits_one)
    loop.run()
    loop.close()
    client.socket.close()
    store.close()
    assert sorted(committed) == sorted(f"m{number}" for number in range(WRITES))
    assert seen == {f"m{number}": 2 if number == 3 else 1 for number in range(WRITES)}
