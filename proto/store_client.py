"""The writers' side of the store-writer protocol: send, keep until committed, resend.

Every process that persists something (router, search-cache, pool-manager) writes through a
StoreClient. A write is kept until the store-writer's ``Committed`` frame names its key, and
sent again when that does not come within ``ack_timeout`` — so a store-writer killed
mid-batch loses nothing, and because writes are keyed, a write that arrives twice is applied
once.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import zmq

from proto.frames import Codec, Committed, StoreIn, StoreOut
from proto.loop import EventLoop, Timer
from proto.sockets import received

log = logging.getLogger(__name__)


class StoreClient:
    def __init__(self, socket: zmq.Socket, loop: EventLoop, ack_timeout: float,
                 on_committed: Callable[[str], None],
                 on_failed: Callable[[str, str], None]) -> None:
        self.socket = socket
        self.loop = loop
        self.ack_timeout = ack_timeout
        self.on_committed = on_committed
        self.on_failed = on_failed
        self.codec = Codec(StoreIn)
        self.acks = Codec(StoreOut)
        self.pending: dict[str, list[Any]] = {}  # key -> [payload, sent_at]
        self.retry_timer: Timer | None = None
        self.resends = 0

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, key: str) -> bool:
        return key in self.pending

    def start(self) -> None:
        self.loop.add_reader(self.socket, self.on_readable)

    def write(self, frame: Any) -> None:
        """Send a store frame; its ``key`` is what the acknowledgement will name."""
        payload = self.codec.encode(frame)
        self.pending[frame.key] = [payload, time.monotonic()]
        self._send(payload)
        if self.retry_timer is None:
            self.retry_timer = self.loop.call_later(self.ack_timeout, self._retry)

    def _send(self, payload: bytes) -> None:
        try:
            self.socket.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the store-writer is not keeping up; the retry timer sends it again

    def on_readable(self) -> None:
        for ack in received(self.socket, self.acks, "the store-writer", log):
            for key in ack.keys:
                if self.pending.pop(key, None) is None:
                    continue  # a second acknowledgement of a resent write
                if isinstance(ack, Committed):
                    self.on_committed(key)
                else:
                    self.on_failed(key, ack.error)

    def _retry(self) -> None:
        """Send again every write whose acknowledgement is overdue."""
        self.retry_timer = None
        now = time.monotonic()
        overdue = [entry for entry in self.pending.values() if entry[1] <= now - self.ack_timeout]
        for entry in overdue:
            entry[1] = now
            self._send(entry[0])
        if overdue:
            self.resends += len(overdue)
            log.warning("the store-writer has not acknowledged %d writes; sent them again", len(overdue))
        if self.pending:
            self.retry_timer = self.loop.call_later(self.ack_timeout, self._retry)
