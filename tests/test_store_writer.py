"""The store-writer's logic on a real SQLite file and real ZeroMQ sockets, in one process."""

from __future__ import annotations

import sqlite3
import time

import msgspec
import pytest
import zmq

from proto.config import load
from proto.db import KnownMessage, known_message, open_readonly, spend_since
from proto.frames import Codec, Committed, Notice, Reply, SaveExchange, SaveUsage, StoredMessage, StoreOut
from proto.loop import EventLoop
from proto.sockets import bind_router, connect_dealer
from services.store_writer.database import open_writer
from services.store_writer.service import StoreWriter

BATCH_MAX = 50
CHECKPOINT_AFTER_IDLE = 0.05


def exchange(number: int, text: str = "hello") -> SaveExchange:
    message_id = f"m{number}"
    return SaveExchange(
        message=StoredMessage(id=message_id, chat="c1", sender="s", text=text, tier="inline",
                              received_at=time.time()),
        answer=Reply(id=message_id, chat="c1", tier="inline", text=f"answer to {text}"),
    )


@pytest.fixture
def rig(tmp_path):
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/store.sock"
    conn = open_writer(tmp_path / "data" / "warmwire.db", 30000)
    writer = StoreWriter(conn, bind_router(ctx, endpoint), BATCH_MAX, EventLoop(), CHECKPOINT_AFTER_IDLE)
    sender = connect_dealer(ctx, endpoint)
    codec = Codec(StoreOut)

    def send_and_commit(*frames: SaveExchange) -> list:
        for frame in frames:
            sender.send(codec.encode(frame))
        assert writer.socket.poll(5000), "nothing arrived at the store-writer"
        # Until every frame has been committed: they may arrive over several wake-ups.
        target = writer.committed + len(frames)
        deadline = time.monotonic() + 5
        while writer.committed < target and time.monotonic() < deadline:
            if writer.socket.poll(100):
                writer.on_readable()
        acks = []
        while sender.poll(200):
            acks.append(codec.decode(sender.recv()))
        return acks

    yield tmp_path / "data" / "warmwire.db", writer, send_and_commit
    sender.close()
    writer.socket.close()
    conn.close()
    ctx.term()


def test_the_database_is_in_wal_with_a_busy_timeout_and_full_sync(rig):
    path, writer, _ = rig
    assert writer.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert writer.conn.execute("PRAGMA busy_timeout").fetchone() == (30000,)
    assert writer.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: acknowledged = on disk
    assert load({}).store.synchronous == "FULL"
    normal = open_writer(path.with_name("normal.db"), 30000, synchronous="NORMAL")
    assert normal.execute("PRAGMA synchronous").fetchone() == (1,)
    normal.close()


def test_frames_waiting_together_are_committed_in_one_batch_and_acknowledged(rig):
    path, writer, send_and_commit = rig
    acks = send_and_commit(*(exchange(n) for n in range(20)))
    keys = [key for ack in acks for key in ack.keys]
    assert all(isinstance(ack, Committed) for ack in acks)
    assert sorted(keys) == sorted(f"m{n}" for n in range(20))
    assert writer.batches < 20  # grouped, not one transaction per frame
    reader = open_readonly(path, 1000)
    assert reader.execute("SELECT count(*) FROM messages").fetchone() == (20,)
    assert known_message(reader, "m7") == KnownMessage(
        "c1", "s", "hello", Reply(id="m7", chat="c1", tier="inline", text="answer to hello"))
    assert known_message(reader, "m99") is None


def test_a_resent_write_is_acknowledged_again_and_changes_nothing(rig):
    path, writer, send_and_commit = rig
    first = exchange(1, "first")
    send_and_commit(first)
    assert send_and_commit(first) == [Committed(keys=["m1"])]  # its acknowledgement was lost, say
    # Another message under that id (a client's resend, a reused id): the sender is told so.
    assert send_and_commit(exchange(1, "first")) == [Committed(keys=["m1"], stored_before=["m1"])]
    assert send_and_commit(exchange(1, "other text")) == [Committed(keys=["m1"], stored_before=["m1"])]
    reader = open_readonly(path, 1000)
    assert reader.execute("SELECT text FROM messages").fetchall() == [("first",)]
    assert reader.execute("SELECT count(*) FROM replies").fetchone() == (1,)


def test_an_unpriced_models_cost_is_stored_as_unknown_not_zero(rig):
    path, _, send_and_commit = rig
    send_and_commit(SaveUsage(job_id="j1", model="priced", input_tokens=10, output_tokens=5, cost_usd=0.25),
                    SaveUsage(job_id="j2", model="unpriced", input_tokens=7, output_tokens=3, cost_usd=None))
    reader = open_readonly(path, 1000)
    assert reader.execute("SELECT model, cost_usd FROM usage ORDER BY job_id").fetchall() == [
        ("priced", 0.25), ("unpriced", None)]
    assert spend_since(reader, 0) == (2, 25, 0.25)


def test_a_notice_is_stored_as_the_answer(rig):
    path, _, send_and_commit = rig
    frame = SaveExchange(
        message=StoredMessage(id="n1", chat="c1", sender="s", text="debug this", tier="container-full",
                              received_at=time.time()),
        answer=Notice(id="n1", chat="c1", kind="unavailable", text="not yet"))
    send_and_commit(frame)
    assert known_message(open_readonly(path, 1000), "n1").answer == Notice(
        id="n1", chat="c1", kind="unavailable", text="not yet")


def test_an_undecodable_frame_is_counted_and_the_writer_goes_on(rig):
    path, writer, send_and_commit = rig
    # A frame of the wrong shape sent straight through the socket.
    raw = connect_dealer(zmq.Context.instance(), writer.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    raw.send(msgspec.msgpack.encode({"type": "save-exchange", "message": 5}))
    assert writer.socket.poll(5000)
    writer.on_readable()
    raw.close()
    assert writer.rejected == 1
    assert send_and_commit(exchange(2)) == [Committed(keys=["m2"])]


def test_a_message_of_several_writes_commits_each_and_rejects_a_bad_one_alone(rig):
    path, writer, _ = rig
    # How a StoreClient sends what it wrote in one wake-up: one message, a write per part.
    raw = connect_dealer(zmq.Context.instance(), writer.socket.getsockopt_string(zmq.LAST_ENDPOINT))
    codec = Codec(StoreOut)
    raw.send_multipart([codec.encode(exchange(4)), b"\xc1 not msgpack", codec.encode(exchange(5))])
    assert writer.socket.poll(5000)
    writer.on_readable()
    assert raw.poll(5000)
    assert codec.decode(raw.recv()) == Committed(keys=["m4", "m5"])
    raw.close()
    assert writer.rejected == 1
    reader = open_readonly(path, 1000)
    assert reader.execute("SELECT id FROM messages ORDER BY id").fetchall() == [("m4",), ("m5",)]


def test_readers_cannot_write(rig):
    path, _, send_and_commit = rig
    send_and_commit(exchange(3))
    with pytest.raises(sqlite3.OperationalError) as refused:
        open_readonly(path, 1000).execute("DELETE FROM messages")
    assert refused.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
    assert open_readonly(path, 1000).execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_the_wal_is_checkpointed_once_writes_pause(rig):
    path, writer, send_and_commit = rig
    send_and_commit(*(exchange(n) for n in range(30)))
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 0
    writer.loop.call_later(CHECKPOINT_AFTER_IDLE * 4, writer.loop.stop)
    writer.loop.run()
    assert writer.checkpoints == 1
