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
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Callable

import msgspec
import zmq

from proto.frames import Codec, Committed, StoreError, StoreIn, StoreOut
from proto.loop import EventLoop, Timer
from proto.metrics import percentile

from .database import (
    DISK_FULL, WRITES, WriterFile, checkpoint, disk_has_room, probe_write, rollback, unwritable_reason,
)

log = logging.getLogger("store-writer")
# Transactions whose time status reports percentiles of.
COMMITS_KEPT = 1000


class StoreWriter:
    """``conn`` may be None when the database could not be opened at start (``file`` says how
    to open it again): the writer then serves, refusing writes, until it can."""

    def __init__(self, conn: sqlite3.Connection | None, socket: zmq.Socket, batch_max: int,
                 loop: EventLoop, checkpoint_after_idle: float, *, file: WriterFile | None = None,
                 retry_interval: float = 1.0) -> None:
        self.conn = conn
        self.file = file
        self.path = file.path if file is not None else Path(conn.execute("PRAGMA database_list").fetchone()[2])
        self.socket = socket
        self.batch_max = batch_max
        self.loop = loop
        self.checkpoint_after_idle = checkpoint_after_idle
        self.retry_interval = retry_interval
        self.checkpoint_timer = None
        self.checkpoint_error: str | None = None
        self.last_commit = 0.0
        self.decoder = Codec(StoreIn)
        self.encoder = Codec(StoreOut)
        self.state = "serving"
        # Why no write can succeed right now (disk full, read-only); None while writes work.
        self.unwritable: str | None = None
        self.retry_timer: Timer | None = None
        self.committed = 0
        self.batches = 0
        self.commit_ms: deque[float] = deque(maxlen=COMMITS_KEPT)  # recent transactions' time
        self.rejected = 0
        self.failed = 0
        self.refused = 0
        self.checkpoints = 0
        if conn is None:
            self._reopen()

    def stats(self) -> dict[str, Any]:
        stats = {"committed": self.committed, "batches": self.batches,
                 "commit_p50_ms": percentile(self.commit_ms, 0.5), "commit_p99_ms": percentile(self.commit_ms, 0.99),
                 "rejected_frames": self.rejected, "failed_writes": self.failed,
                 "refused_writes": self.refused, "checkpoints": self.checkpoints}
        if self.unwritable is not None:
            stats["problem"] = f"cannot write the database: {self.unwritable}"
        return stats

    def _receive_batch(self) -> list[tuple[bytes, Any]]:
        """Writes waiting, up to batch_max messages' worth: each message holds one write per
        part (a writer sends what it wrote in one wake-up together)."""
        batch = []
        while len(batch) < self.batch_max:
            try:
                peer, *parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not parts:
                self.rejected += 1
            for data in parts:
                try:
                    batch.append((peer, self.decoder.decode(data)))
                except msgspec.DecodeError as exc:
                    self.rejected += 1
                    log.error("rejected a frame from %r: %s", peer, exc)
        return batch

    def _commit(self, frames: list[Any]) -> set[str]:
        """One transaction; the keys of the frames that changed nothing because what they
        name was stored before by another write (only ``save_exchange`` can say so: False)."""
        started = time.perf_counter()
        stored_before = set()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for frame in frames:
                if WRITES[type(frame)](self.conn, frame) is False:
                    stored_before.add(frame.key)
            self.conn.execute("COMMIT")
            # What every answer waits for before it is sent (with synchronous=FULL, an fsync).
            self.commit_ms.append((time.perf_counter() - started) * 1000)
            return stored_before
        except OverflowError as exc:  # an int SQLite cannot hold: this write's own fault
            rollback(self.conn)
            raise sqlite3.DataError(str(exc)) from None
        except BaseException:
            rollback(self.conn)
            raise

    def on_readable(self) -> None:
        """Commit everything waiting (up to batch_max per transaction) and acknowledge it."""
        while batch := self._receive_batch():
            done: dict[bytes, list[str]] = defaultdict(list)
            failed: dict[bytes, list[str]] = defaultdict(list)
            errors: dict[bytes, str] = {}
            stored_before: set[str] = set()
            if self.conn is None:
                self._reopen()
                if self.conn is None:
                    self._refuse(batch)
                    continue
            try:
                stored_before = self._commit([frame for _, frame in batch])
                for peer, frame in batch:
                    done[peer].append(frame.key)
                self._writable_again()
            except sqlite3.Error as exc:
                if self._cannot_write(exc):
                    self._refuse(batch)
                    continue
                # Find the frames that fail on their own; the rest still commit.
                log.error("batch of %d failed (%s); committing one by one", len(batch), exc)
                for peer, frame in batch:
                    try:
                        stored_before |= self._commit([frame])
                        done[peer].append(frame.key)
                    except sqlite3.Error as one_exc:
                        failed[peer].append(frame.key)
                        errors[peer] = str(one_exc)
                        self.failed += 1
                        log.error("write of %s failed: %s", frame.key, one_exc)
            self.batches += 1
            for peer, keys in done.items():
                self.committed += len(keys)
                self._send(peer, Committed(keys=keys, stored_before=[key for key in keys if key in stored_before]))
            for peer, keys in failed.items():
                self._send(peer, StoreError(keys=keys, error=errors[peer]))
            self.last_commit = time.monotonic()
            if self.checkpoint_timer is None:
                self.checkpoint_timer = self.loop.call_later(self.checkpoint_after_idle, self._checkpoint_when_idle)

    # -- a disk that cannot be written (full, read-only) ---------------------------------
    def _cannot_write(self, exc: BaseException) -> bool:
        """True when no write can succeed now. The first time, one log line says why, and a
        timer starts trying again; writes are refused meanwhile, not logged one by one."""
        reason = unwritable_reason(self.path, exc)
        if reason is None:
            return False
        if self.unwritable is None:
            log.error("cannot write the database %s: %s (%s); refusing writes until it can be "
                      "written again (trying every %g s)", self.path, reason, exc, self.retry_interval)
        self.unwritable = reason
        if self.retry_timer is None:
            self.retry_timer = self.loop.call_later(self.retry_interval, self._try_again)
        return True

    def _refuse(self, batch: list[tuple[bytes, Any]]) -> None:
        """Tell every sender its writes were not committed, and why; senders keep or drop
        them (a new message is refused to its user, an answer to one is sent again)."""
        refused: dict[bytes, list[str]] = defaultdict(list)
        for peer, frame in batch:
            refused[peer].append(frame.key)
        self.refused += len(batch)
        for peer, keys in refused.items():
            self._send(peer, StoreError(keys=keys, error=self.unwritable, unavailable=True))

    def _reopen(self) -> None:
        assert self.file is not None, "no database connection and no file to open"
        try:
            self.conn = self.file.open()
        except (sqlite3.Error, OSError) as exc:
            if not self._cannot_write(exc):
                raise

    def _try_again(self) -> None:
        """While the database cannot be written: open it or make the smallest write."""
        self.retry_timer = None
        if self.conn is None:
            self._reopen()
            if self.conn is None:
                return
        if self.unwritable == DISK_FULL and not disk_has_room(self.path):
            self.retry_timer = self.loop.call_later(self.retry_interval, self._try_again)
            return
        try:
            probe_write(self.conn)
        except sqlite3.Error as exc:
            self._cannot_write(exc)
            return
        self._writable_again()

    def _writable_again(self) -> None:
        if self.unwritable is None:
            return
        log.info("the database can be written again; writes resume (%d refused meanwhile)", self.refused)
        self.unwritable = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None

    def _checkpoint_when_idle(self) -> None:
        """Checkpoint once writes have paused, so its fsync never sits in a round trip."""
        resume_at = self.last_commit + self.checkpoint_after_idle
        if time.monotonic() < resume_at:
            self.checkpoint_timer = self.loop.call_at(resume_at, self._checkpoint_when_idle)
            return
        self.checkpoint_timer = None
        if self.conn is None or self.unwritable is not None:
            return  # the next commit, once writes work again, brings the checkpoint back
        try:
            checkpoint(self.conn)
        except sqlite3.Error as exc:
            # Writes may still fit in the WAL (a full disk): only a failing write refuses
            # them. The same error again is not logged again.
            if str(exc) != self.checkpoint_error:
                log.error("checkpoint failed: %s", exc)
            self.checkpoint_error = str(exc)
            return
        self.checkpoints += 1
        self.checkpoint_error = None

    def _send(self, peer: bytes, frame: Committed | StoreError) -> None:
        try:
            self.socket.send_multipart([peer, self.encoder.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The sender is gone or not reading; it resends unacknowledged writes.
            log.warning("could not acknowledge to %r: %s", peer, exc.strerror)

    def drain(self, done: Callable[[], None]) -> None:
        """Commit what has already arrived, then close the database."""
        self.state = "draining"
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.on_readable()
        if self.conn is not None:
            self.conn.close()
        done()
