"""store-writer: the only process that writes SQLite.

Frames arrive on a ROUTER socket from every writer (router, pool-manager, search-cache).
Whatever is waiting is committed in one transaction (group commit), then each sender gets a
``Committed`` frame listing its keys. A sender keeps a write until it sees its key, so a
store-writer killed mid-batch loses nothing: the write comes again and, being keyed by
message id, is applied once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import defaultdict
from typing import Any, Callable

import msgspec
import zmq

from proto.frames import Codec, Committed, StoreError, StoreIn, StoreOut
from proto.loop import EventLoop

from .database import WRITES, checkpoint

log = logging.getLogger("store-writer")


class StoreWriter:
    def __init__(self, conn: sqlite3.Connection, socket: zmq.Socket, batch_max: int,
                 loop: EventLoop, checkpoint_after_idle: float) -> None:
        self.conn = conn
        self.socket = socket
        self.batch_max = batch_max
        self.loop = loop
        self.checkpoint_after_idle = checkpoint_after_idle
        self.checkpoint_timer = None
        self.last_commit = 0.0
        self.decoder = Codec(StoreIn)
        self.encoder = Codec(StoreOut)
        self.state = "serving"
        self.committed = 0
        self.batches = 0
        self.rejected = 0
        self.failed = 0
        self.checkpoints = 0

    def stats(self) -> dict[str, Any]:
        return {"committed": self.committed, "batches": self.batches,
                "rejected_frames": self.rejected, "failed_writes": self.failed,
                "checkpoints": self.checkpoints}

    def _receive_batch(self) -> list[tuple[bytes, Any]]:
        batch = []
        while len(batch) < self.batch_max:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(parts) != 2:
                self.rejected += 1
                continue
            peer, data = parts
            try:
                batch.append((peer, self.decoder.decode(data)))
            except msgspec.DecodeError as exc:
                self.rejected += 1
                log.error("rejected a frame from %r: %s", peer, exc)
        return batch

    def _commit(self, frames: list[Any]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for frame in frames:
                WRITES[type(frame)](self.conn, frame)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def on_readable(self) -> None:
        """Commit everything waiting (up to batch_max per transaction) and acknowledge it."""
        while batch := self._receive_batch():
            done: dict[bytes, list[str]] = defaultdict(list)
            failed: dict[bytes, list[str]] = defaultdict(list)
            errors: dict[bytes, str] = {}
            try:
                self._commit([frame for _, frame in batch])
                for peer, frame in batch:
                    done[peer].append(frame.key)
            except sqlite3.Error as exc:
                # Find the frames that fail on their own; the rest still commit.
                log.error("batch of %d failed (%s); committing one by one", len(batch), exc)
                for peer, frame in batch:
                    try:
                        self._commit([frame])
                        done[peer].append(frame.key)
                    except sqlite3.Error as one_exc:
                        failed[peer].append(frame.key)
                        errors[peer] = str(one_exc)
                        self.failed += 1
                        log.error("write of %s failed: %s", frame.key, one_exc)
            self.batches += 1
            for peer, keys in done.items():
                self.committed += len(keys)
                self._send(peer, Committed(keys=keys))
            for peer, keys in failed.items():
                self._send(peer, StoreError(keys=keys, error=errors[peer]))
            self.last_commit = time.monotonic()
            if self.checkpoint_timer is None:
                self.checkpoint_timer = self.loop.call_later(self.checkpoint_after_idle, self._checkpoint_when_idle)

    def _checkpoint_when_idle(self) -> None:
        """Checkpoint once writes have paused, so its fsync never sits in a round trip."""
        resume_at = self.last_commit + self.checkpoint_after_idle
        if time.monotonic() < resume_at:
            self.checkpoint_timer = self.loop.call_at(resume_at, self._checkpoint_when_idle)
            return
        self.checkpoint_timer = None
        try:
            checkpoint(self.conn)
            self.checkpoints += 1
        except sqlite3.Error as exc:
            log.error("checkpoint failed: %s", exc)

    def _send(self, peer: bytes, frame: Committed | StoreError) -> None:
        try:
            self.socket.send_multipart([peer, self.encoder.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The sender is gone or not reading; it resends unacknowledged writes.
            log.warning("could not acknowledge to %r: %s", peer, exc.strerror)

    def drain(self, done: Callable[[], None]) -> None:
        """Commit what has already arrived, then close the database."""
        self.state = "draining"
        self.on_readable()
        self.conn.close()
        done()
