"""The writers' side of the store-writer protocol: send, keep until committed, resend.

Every process that persists something (router, search-cache, pool-manager) writes through a
StoreClient. A write is kept until the store-writer's ``Committed`` frame names its key, and
sent again when that has not come within ``ack_timeout`` and either nothing at all has been
acknowledged for that long or a write sent after it has been (the store-writer takes a
writer's writes in order, so this one was lost) — so a store-writer killed mid-batch loses
nothing, and because writes are keyed, a write that arrives twice is applied once. A long
queue that is being worked through is not sent again: that made the writer's work grow
with its backlog.

When the store-writer cannot write at all (a full disk, a read-only folder), it says so
(``StoreError.unavailable``): a write made ``refusable`` (a new message, which its user can
send again) is dropped and handed to ``on_refused``; any other write (an answer to a message
already stored, a job's state) stays pending and is sent again until it is committed
(``on_kept`` hears of it once, so that whoever waits for it can be told).
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any, Callable

import zmq

from proto.frames import Codec, Committed, StoreIn, StoreOut
from proto.loop import EventLoop, Timer
from proto.sockets import received

log = logging.getLogger(__name__)


class PendingWrite:
    """A write not yet committed: what to send again, when and in what order (``seq``) it
    was last sent, whether the store-writer may refuse it for good, and whether ``on_kept``
    has heard of it."""

    __slots__ = ("payload", "sent_at", "seq", "refusable", "kept")

    def __init__(self, payload: bytes, sent_at: float, seq: int, refusable: bool) -> None:
        self.payload = payload
        self.sent_at = sent_at
        self.seq = seq
        self.refusable = refusable
        self.kept = False


class StoreClient:
    def __init__(self, socket: zmq.Socket, loop: EventLoop, ack_timeout: float,
                 on_committed: Callable[[str], None],
                 on_failed: Callable[[str, str], None],
                 on_refused: Callable[[str, str], None] | None = None,
                 on_kept: Callable[[str, str], None] | None = None,
                 on_stored_before: Callable[[str], None] | None = None) -> None:
        """on_stored_before: a committed key whose write changed nothing because another
        message was stored under its id before (``Committed.stored_before``); without it,
        such a key is committed like any other."""
        self.socket = socket
        self.loop = loop
        self.ack_timeout = ack_timeout
        self.on_committed = on_committed
        self.on_failed = on_failed
        self.on_refused = on_refused or on_failed
        self.on_kept = on_kept
        self.on_stored_before = on_stored_before
        self.codec = Codec(StoreIn)
        self.acks = Codec(StoreOut)
        self.pending: dict[str, PendingWrite] = {}
        self.sends = itertools.count()
        self.acked_seq = -1  # the latest-sent write acknowledged so far
        self.acked_at = float("-inf")  # when the last acknowledgement of any kind came
        self.outbox: list[bytes] = []  # payloads for the next message to the store-writer
        self.retry_timer: Timer | None = None
        self.resends = 0
        # Why the store-writer last said it cannot write; None once it commits again.
        self.unavailable: str | None = None
        # Since when writes go unacknowledged (a store-writer frozen, killed, restarting);
        # None while acknowledgements come. A stall is logged when it starts and when it
        # ends: a line per resend round (two a second) filled the logs of every writer for
        # as long as the store-writer was away.
        self.silent_since: float | None = None

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, key: str) -> bool:
        return key in self.pending

    def start(self) -> None:
        self.loop.add_reader(self.socket, self.on_readable)

    def write(self, frame: Any, refusable: bool = False) -> None:
        """Send a store frame; its ``key`` is what the acknowledgement will name."""
        payload = self.codec.encode(frame)
        self.pending[frame.key] = PendingWrite(payload, time.monotonic(), next(self.sends), refusable)
        self._send(payload)
        if self.retry_timer is None:
            self.retry_timer = self.loop.call_later(self.ack_timeout, self._retry)

    def _send(self, payload: bytes) -> None:
        """Queued until the loop waits again: the writes of one wake-up go to the store-writer
        as the parts of one message (a send apiece was an eighth of the router's time)."""
        if not self.outbox:
            self.loop.call_before_poll(self._flush)
        self.outbox.append(payload)

    def _flush(self) -> None:
        outbox, self.outbox = self.outbox, []
        try:
            self.socket.send_multipart(outbox, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the store-writer is not keeping up; the retry timer sends them again

    def on_readable(self) -> None:
        for ack in received(self.socket, self.acks, "the store-writer", log):
            self.acked_at = time.monotonic()
            for key in ack.keys:
                entry = self.pending.get(key)
                if entry is None:
                    continue  # a second acknowledgement of a resent write
                self.acked_seq = max(self.acked_seq, entry.seq)
                if isinstance(ack, Committed):
                    del self.pending[key]
                    self.unavailable = None
                    if self.silent_since is not None:
                        log.info("the store-writer acknowledges writes again, after %.1f s",
                                 time.monotonic() - self.silent_since)
                        self.silent_since = None
                    if self.on_stored_before is not None and key in ack.stored_before:
                        self.on_stored_before(key)
                    else:
                        self.on_committed(key)
                elif not ack.unavailable:
                    del self.pending[key]
                    self.on_failed(key, ack.error)
                elif entry.refusable:
                    del self.pending[key]
                    self.on_refused(key, ack.error)
                else:  # kept, and sent again by the retry timer until it can be written
                    if self.unavailable is None:
                        self.unavailable = ack.error
                        log.warning("the store-writer cannot write (%s); keeping writes and "
                                    "sending them again until it can", ack.error)
                    if not entry.kept and self.on_kept is not None:
                        entry.kept = True
                        self.on_kept(key, ack.error)

    def _retry(self) -> None:
        """Send again every write whose acknowledgement is overdue and, by the store-writer's
        silence or by a later write's acknowledgement, will not come."""
        self.retry_timer = None
        now = time.monotonic()
        due = now - self.ack_timeout
        silent = self.acked_at <= due
        overdue = [entry for entry in self.pending.values()
                   if entry.sent_at <= due and (silent or entry.seq < self.acked_seq)]
        for entry in overdue:
            entry.sent_at, entry.seq = now, next(self.sends)
            self._send(entry.payload)
        self.resends += len(overdue)
        # An outage the store-writer explained is logged once, by on_readable.
        if overdue and self.unavailable is None and self.silent_since is None:
            self.silent_since = now - self.ack_timeout
            log.warning("the store-writer has not acknowledged %d writes within %g s; sending them "
                        "again until it does", len(overdue), self.ack_timeout)
        if self.pending:
            self.retry_timer = self.loop.call_later(self.ack_timeout, self._retry)
