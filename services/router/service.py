"""router: the clients' frontend. Validates, classifies, answers or hands on, and persists.

Every message is answered only after the store-writer has committed it together with its
answer ("nothing acknowledged is lost"). Until then the answer waits in ``waiting`` while the
StoreClient sends the write again if no acknowledgement comes; a client that resends the same
id meanwhile is added to the same entry, and one that resends later is answered from the
database.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import msgspec
import zmq

from proto.config import Router as RouterConfig
from proto.db import open_readonly, stored_answer
from proto.frames import (
    Chat, ClientIn, ClientOut, Codec, Notice, Reply, SaveExchange, StoredMessage,
    describe_decode_error,
)
from proto.loop import EventLoop
from proto.store_client import StoreClient

from .classifier import TIERS, Classifier
from .inline import InlineResponder

log = logging.getLogger("router")

# Frames read from the frontend per wake-up before the store socket gets its turn.
FRONTEND_BATCH = 256


class Router:
    def __init__(self, config: RouterConfig, frontend: zmq.Socket, store: zmq.Socket,
                 database: Path, busy_timeout_ms: int, classifier: Classifier,
                 loop: EventLoop) -> None:
        self.config = config
        self.frontend = frontend
        self.database = database
        self.busy_timeout_ms = busy_timeout_ms
        self.classifier = classifier
        self.loop = loop
        self.client_codec = Codec(ClientIn)
        self.inline = InlineResponder(self.stats)
        self.storage = StoreClient(store, loop, config.store_ack_timeout,
                                   self._on_committed, self._on_store_failed)
        # Answers waiting for their write to be committed: message id -> (answer, clients).
        self.waiting: dict[str, tuple[ClientOut, list[bytes]]] = {}
        self.reader: sqlite3.Connection | None = None
        self.on_drained: Callable[[], None] | None = None
        self.state = "serving"
        self.started = time.monotonic()
        self.tiers: Counter[str] = Counter({tier: 0 for tier in TIERS})
        self.counts: Counter[str] = Counter()

    def start(self) -> None:
        self.loop.add_reader(self.frontend, self.on_frontend_readable)
        self.storage.start()

    def stats(self) -> dict[str, Any]:
        return {
            "uptime": time.monotonic() - self.started,
            "messages": sum(self.tiers.values()),
            "tiers": dict(self.tiers),
            "pending_writes": len(self.waiting),
            "store_resends": self.storage.resends,
            **self.counts,
        }

    # -- frontend ----------------------------------------------------------------------
    def on_frontend_readable(self) -> None:
        for _ in range(FRONTEND_BATCH):
            try:
                parts = self.frontend.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = parts[0].bytes
            if len(parts) != 2:
                self._error(identity, "", "send each message as a single frame")
                continue
            data = parts[1].buffer
            if len(data) > self.config.max_frame_bytes:
                self._error(identity, "", f"frame of {len(data)} bytes is over the "
                                           f"{self.config.max_frame_bytes}-byte limit")
                continue
            try:
                chat = self.client_codec.decode(data)
            except msgspec.DecodeError as exc:
                frame_id, reason = describe_decode_error(data, exc)
                self._error(identity, frame_id, reason)
                continue
            if not chat.id or not chat.chat:
                self._error(identity, chat.id, "'id' and 'chat' must not be empty")
                continue
            self.on_chat(identity, chat)

    def on_chat(self, identity: bytes, chat: Chat) -> None:
        waiting = self.waiting.get(chat.id)
        if waiting is not None:
            waiting[1].append(identity)
            return
        stored = self._stored_answer(chat.id)
        if stored is not None:
            self.counts["resends_answered"] += 1
            self._send(identity, stored)
            return
        if len(self.waiting) >= self.config.max_pending_writes:
            self.counts["busy"] += 1
            self._send(identity, Notice(
                id=chat.id, chat=chat.chat, kind="busy", retry_after=self.config.busy_retry_after,
                text=f"busy, try again in {self.config.busy_retry_after:g} s"))
            return
        verdict = self.classifier.classify(chat.text)
        self.tiers[verdict.tier] += 1
        answer: ClientOut
        if verdict.tier == "inline":
            answer = Reply(id=chat.id, chat=chat.chat, tier="inline",
                           text=self.inline.respond(verdict.intent, chat.text))
        else:
            answer = Notice(id=chat.id, chat=chat.chat, kind="unavailable",
                            text=f"the {verdict.tier} tier is not available yet; "
                                 "your message is stored")
        message = StoredMessage(id=chat.id, chat=chat.chat, sender=chat.sender, text=chat.text,
                                tier=verdict.tier, received_at=time.time())
        self.waiting[chat.id] = (answer, [identity])
        self.storage.write(chat.id, SaveExchange(message=message, answer=answer))

    def _stored_answer(self, message_id: str) -> ClientOut | None:
        if self.reader is None:
            if not self.database.exists():
                return None
            self.reader = open_readonly(self.database, self.busy_timeout_ms)
        return stored_answer(self.reader, message_id)

    def _error(self, identity: bytes, frame_id: str, reason: str) -> None:
        self.counts["bad_frames"] += 1
        log.warning("bad frame from client: %s", reason)
        self._send(identity, Notice(id=frame_id, kind="error", text=reason))

    def _send(self, identity: bytes, frame: ClientOut) -> None:
        try:
            self.frontend.send_multipart([identity, self.client_codec.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # Gone (EHOSTUNREACH) or not reading (EAGAIN): the answer is stored, and the client
            # gets it again by resending its message.
            self.counts["undeliverable"] += 1
            log.warning("could not deliver %s to a client: %s", frame.id, exc.strerror)

    # -- store-writer ------------------------------------------------------------------
    def _on_committed(self, key: str) -> None:
        answer, clients = self.waiting.pop(key)
        for identity in clients:
            self._send(identity, answer)
        if self.on_drained is not None and not self.waiting:
            self._finish_drain()

    def _on_store_failed(self, key: str, error: str) -> None:
        log.error("the store-writer could not store message %s: %s", key, error)
        answer, clients = self.waiting.pop(key)
        for identity in clients:
            self._send(identity, Notice(id=key, chat=answer.chat, kind="error",
                                        text="your message could not be stored; please send it again later"))
        if self.on_drained is not None and not self.waiting:
            self._finish_drain()

    # -- shutdown ----------------------------------------------------------------------
    def drain(self, done: Callable[[], None]) -> None:
        """Stop taking messages; answer what is in flight once it is stored; then finish."""
        self.state = "draining"
        self.on_drained = done
        # Messages already queued in the socket are not read: their clients get no answer
        # and resend to the next router, which is what the wire protocol asks of them.
        self.loop.remove_reader(self.frontend)
        if not self.waiting:
            self._finish_drain()
            return
        log.info("waiting for %d writes to be stored", len(self.waiting))
        self.loop.call_later(self.config.drain_timeout, self._finish_drain)

    def _finish_drain(self) -> None:
        done, self.on_drained = self.on_drained, None
        if done is None:
            return
        if self.waiting:
            log.error("stopping with %d writes unacknowledged; their clients were not answered "
                      "and will resend", len(self.waiting))
        if self.reader is not None:
            self.reader.close()
        done()
