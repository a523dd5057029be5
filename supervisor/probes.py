"""How the supervisor asks a process whether it is alive: two kinds of probe, one interface.

``ControlProbe``: a warmwire service answers ``Probe`` frames on its control socket with
``Health`` (and its stats). ``HttpProbe``: a program that is not a warmwire service (chroma)
answers an HTTP GET of its heartbeat path with 200.

Neither blocks the supervisor's loop on an answer: both register a reader and hand what
comes back to ``on_answer(stats)``. A probe that gets no answer simply never calls it; the
process counts the silence.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable

import zmq

from proto.frames import Codec, Control, Health, Probe
from proto.loop import EventLoop
from proto.sockets import connect_dealer, received

log = logging.getLogger("supervisor")
OnAnswer = Callable[[dict[str, Any]], None]
# An HTTP status line fits in far less; a peer sending more without one is not the program.
STATUS_LINE_MAX = 1024
HTTP_OK = (b"HTTP/1.1 200", b"HTTP/1.0 200")


class ControlProbe:
    # A probe sent before the service binds waits in ZeroMQ's queue and is answered as soon
    # as the service is up.
    queued_until_ready = True

    def __init__(self, ctx: zmq.Context, endpoint: str, loop: EventLoop, on_answer: OnAnswer) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.loop = loop
        self.on_answer = on_answer
        self.codec = Codec(Control)
        self.socket: zmq.Socket | None = None
        self.seq = 0

    def open(self) -> None:
        self.socket = connect_dealer(self.ctx, self.endpoint)
        self.loop.add_reader(self.socket, self._on_readable)

    def send(self) -> None:
        if self.socket is None:
            return
        self.seq += 1
        try:
            self.socket.send(self.codec.encode(Probe(seq=self.seq)), zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet; the next probe tries again

    def _on_readable(self) -> None:
        assert self.socket is not None
        for health in received(self.socket, self.codec, "a service's control socket", log):
            if isinstance(health, Health):
                self.on_answer(health.stats)

    def close(self) -> None:
        if self.socket is not None:
            self.loop.remove_reader(self.socket)
            self.socket.close()
            self.socket = None


class HttpProbe:
    """GET <path> over a fresh loopback connection per probe. Connecting is synchronous but
    bounded by ``connect_timeout`` (on loopback it either succeeds or is refused at once);
    the answer is read by the loop when it comes."""

    # A probe to a program not listening yet is refused, not kept.
    queued_until_ready = False

    def __init__(self, host: str, port: int, path: str, connect_timeout: float, loop: EventLoop,
                 on_answer: OnAnswer) -> None:
        self.address = (host, port)
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        self.connect_timeout = connect_timeout
        self.loop = loop
        self.on_answer = on_answer
        self.conn: socket.socket | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0

    def open(self) -> None:
        pass  # a connection per probe

    @property
    def waiting(self) -> bool:
        """A probe was sent and its answer has not come yet."""
        return self.conn is not None

    def send(self) -> None:
        self._drop()  # an answer still missing by now stays missing
        conn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        conn.settimeout(self.connect_timeout)
        try:
            conn.connect(self.address)
            conn.sendall(self.request)
        except OSError:
            conn.close()  # not listening (yet): an unanswered probe
            return
        conn.setblocking(False)
        self.conn, self.buffer, self.sent_at = conn, bytearray(), time.monotonic()
        self.loop.add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        assert self.conn is not None
        try:
            data = self.conn.recv(STATUS_LINE_MAX)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.buffer += data
        line_end = self.buffer.find(b"\r\n")
        if line_end < 0 and data and len(self.buffer) < STATUS_LINE_MAX:
            return  # the status line is not complete yet
        healthy = line_end >= 0 and bytes(self.buffer[:line_end]).startswith(HTTP_OK)
        elapsed = time.monotonic() - self.sent_at
        self._drop()
        if healthy:
            self.on_answer({"port": self.address[1], "heartbeat_ms": round(elapsed * 1000, 2)})

    def _drop(self) -> None:
        if self.conn is not None:
            self.loop.remove_reader(self.conn.fileno())
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._drop()
