"""The router's side of the search-cache: ask, and get the answer (or None) back in the loop.

Used for the oracle-only tier ("search …", "remember …", "what do you know about …") and for
the knowledge passages a job carries. An answer that does not come within ``timeout`` is
None: the router then tells the user the knowledge base is not answering, or sends the job
without passages. It never waits longer than that. Requests still waiting when the
search-cache reconnects (it was restarted) are sent again: the process that had them is gone.
"""

from __future__ import annotations

import itertools
import logging
from typing import Callable

import zmq

from proto.frames import Codec, KnowledgeIn, KnowledgeOut
from proto.loop import EventLoop, Timer
from proto.sockets import received

from proto.reconnects import Reconnects

log = logging.getLogger(__name__)

Callback = Callable[[object | None], None]


class KnowledgeClient:
    def __init__(self, socket: zmq.Socket, loop: EventLoop, timeout: float) -> None:
        self.socket = socket
        self.loop = loop
        self.timeout = timeout
        self.codec = Codec(KnowledgeIn)
        self.answers = Codec(KnowledgeOut)
        self.numbers = itertools.count(1)
        self.waiting: dict[str, tuple[Callback, Timer, bytes]] = {}  # req -> callback, timer, frame
        self.reconnects = Reconnects(socket, loop, self._resend_waiting)
        self.counts = {"asked": 0, "answered": 0, "timeouts": 0, "resent": 0}

    def start(self) -> None:
        self.loop.add_reader(self.socket, self.on_readable)
        self.reconnects.start()

    def next_req(self) -> str:
        return f"r{next(self.numbers)}"

    def ask(self, request, callback: Callback, timeout: float | None = None) -> None:
        """Send a request (its ``req`` from next_req); callback(answer or None) comes later,
        within ``timeout`` (default: the router's search_timeout)."""
        self.counts["asked"] += 1
        timer = self.loop.call_later(self.timeout if timeout is None else timeout,
                                     lambda: self._expire(request.req))
        payload = self.codec.encode(request)
        self.waiting[request.req] = (callback, timer, payload)
        try:
            self.socket.send(payload, zmq.NOBLOCK)
        except zmq.Again:
            self._expire(request.req)  # the search-cache is not reading: answer without it

    def _resend_waiting(self) -> None:
        """A restarted search-cache: a search or recall asked again is a read, and a note to
        learn is saved once however often it comes (its id comes from its content); an
        answer that then comes twice is taken once."""
        if self.waiting:
            log.warning("the search-cache reconnected; asking its %d unanswered requests again", len(self.waiting))
        for _, _, payload in list(self.waiting.values()):
            try:
                self.socket.send(payload, zmq.NOBLOCK)
                self.counts["resent"] += 1
            except zmq.Again:
                return  # not reading yet: the timeouts answer the rest

    def _expire(self, req: str) -> None:
        entry = self.waiting.pop(req, None)
        if entry is not None:
            entry[1].cancel()
            self.counts["timeouts"] += 1
            log.warning("the search-cache did not answer request %s in time", req)
            entry[0](None)

    def on_readable(self) -> None:
        for answer in received(self.socket, self.answers, "the search-cache", log):
            entry = self.waiting.pop(answer.req, None)
            if entry is None:
                continue  # it came after its timeout; the user was answered without it
            entry[1].cancel()
            self.counts["answered"] += 1
            entry[0](answer)
