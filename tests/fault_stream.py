"""A steady stream of chat messages of all four tiers from several clients, each behaving as
the README asks a real client to, and the check that every message was answered and stored
once. Used by the fault-injection tests (test_faults_kill.py).

A message that gets no frame for ``RESEND_AFTER`` seconds is sent again with the same id, and
one refused as "busy" is sent again after the ``retry_after`` it was told.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import zmq

from conftest import Client, Warmwire, wait_for
from services.router.classifier import Classifier

# A client resends a message that got no frame at all for this long.
RESEND_AFTER = 4.0
# A "busy" message is resent after its retry_after when that is at most this long, this many
# times; a longer wait (the job queue is full) is taken as the final answer.
BUSY_RETRY_MAX_WAIT = 5.0
BUSY_RETRIES = 5
# After the stream stops, how long every message has to get its final frame.
DRAIN_DEADLINE = 60.0
FINAL_NOTICES = ("error", "busy", "unavailable")
CHAT_PREFIX = "fk"

# Two texts per tier, Thai and English (checked against the classifier before each run).
TIER_TEXTS = (
    ("inline", "สวัสดีครับ"),
    ("inline", "thanks a lot!"),
    ("oracle-only", "search my notes for the wifi password"),
    ("oracle-only", "จำไว้ว่านัดหมอฟันวันศุกร์"),
    ("container-light", "what is the capital of Japan?"),
    ("container-light", "เมืองหลวงของญี่ปุ่นคืออะไร"),
    ("container-full", "Please debug this Python traceback: KeyError port in parse_config() at line 42"),
    ("container-full", "วิเคราะห์ข้อดีข้อเสียของการใช้ Docker กับ VM แล้วเขียนแผนย้ายระบบ"),
)


@dataclass
class Message:
    id: str
    client: int
    chat: str
    tier: str
    text: str
    sends: int = 0
    last_activity: float = 0.0
    busy: int = 0
    resend_at: float | None = None
    final: dict | None = None


@dataclass
class Tally:
    sent: int = 0
    resends: int = 0
    frames: Counter = field(default_factory=Counter)   # every frame received, by type/kind
    finals: Counter = field(default_factory=Counter)   # the final frame of each message
    redelivered: int = 0                               # the same final again (after a resend)
    conflicts: list = field(default_factory=list)      # a second, different final: processed twice
    strays: list = field(default_factory=list)         # frames for ids nobody sent


def answer_of(frame: dict) -> tuple:
    """What a final frame says; an answer given again from storage has no retry_after."""
    return frame["type"], frame.get("kind"), frame.get("tier"), frame["text"]


def frame_kind(frame: dict) -> str:
    return frame["type"] if frame["type"] == "reply" else frame.get("kind", "?")


class Stream(threading.Thread):
    """Several clients, each with its own chats, sending the tier texts round-robin at a
    steady rate; every frame that comes back is accounted to its message."""

    def __init__(self, frontend: str, rate: float, texts=TIER_TEXTS, clients: int = 4, chats_per_client: int = 2) -> None:
        super().__init__(name="fault-stream", daemon=True)
        self.frontend = frontend
        self.interval = 1.0 / rate
        self.texts = texts
        self.chats = [(c, f"{CHAT_PREFIX}-{c}-{n}") for c in range(clients) for n in range(chats_per_client)]
        self.client_count = clients
        self.messages: dict[str, Message] = {}
        self.open: dict[str, Message] = {}
        self.tally = Tally()
        self.finished = 0
        self.sending = threading.Event()
        self.sending.set()
        self.error: BaseException | None = None
        self.deadline = 0.0

    # -- control, from the test's thread ------------------------------------------------
    def finals_after(self, count: int, deadline: float, what: str) -> None:
        """Wait until ``count`` more messages have their final frame: traffic flows."""
        target = self.finished + count
        wait_for(lambda: self.finished >= target or self.error, deadline, what)

    def settle(self, ids: list[str], deadline: float, what: str) -> None:
        """Wait until each of these messages has its final frame."""
        wait_for(lambda: all(self.messages[id].final for id in ids) or self.error, deadline, what)

    def finish(self) -> None:
        """Stop sending; wait until every message has its final frame (or the deadline)."""
        self.deadline = time.monotonic() + DRAIN_DEADLINE
        self.sending.clear()
        self.join(DRAIN_DEADLINE + 10)
        if self.error is not None:
            raise self.error

    # -- the clients' side --------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # handed to the test's thread by finish()
            self.error = exc

    def _run(self) -> None:
        clients = [Client(self.frontend) for _ in range(self.client_count)]
        poller = zmq.Poller()
        for client in clients:
            poller.register(client.sock, zmq.POLLIN)
        by_socket = {client.sock: client for client in clients}
        number = 0
        next_send = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if self.sending.is_set():
                    if now >= next_send:
                        self._send_new(clients, number)
                        number += 1
                        next_send = now + self.interval
                elif not self.open or now > self.deadline:
                    return
                self._resend_due(clients, now)
                timeout = max(0.0, min(next_send - time.monotonic(), 0.05))
                for sock, _ in poller.poll(timeout * 1000):
                    while sock.poll(0, zmq.POLLIN):
                        self._on_frame(by_socket[sock].recv(0))
        finally:
            for client in clients:
                client.close()

    def _send_new(self, clients: list[Client], number: int) -> None:
        client_index, chat = self.chats[number % len(self.chats)]
        tier, text = self.texts[number % len(self.texts)]
        message = Message(id=f"{chat}-m{number}", client=client_index, chat=chat, tier=tier, text=text)
        self.messages[message.id] = self.open[message.id] = message
        self.tally.sent += 1
        self._send(clients, message)

    def _send(self, clients: list[Client], message: Message) -> None:
        clients[message.client].send(message.text, chat=message.chat, id=message.id)
        message.sends += 1
        message.last_activity = time.monotonic()
        message.resend_at = None

    def _resend_due(self, clients: list[Client], now: float) -> None:
        for message in list(self.open.values()):
            due = message.resend_at if message.resend_at is not None else message.last_activity + RESEND_AFTER
            if now >= due:
                self.tally.resends += 1
                self._send(clients, message)

    def _on_frame(self, frame: dict) -> None:
        kind = frame_kind(frame)
        self.tally.frames[kind] += 1
        message = self.messages.get(frame.get("id", ""))
        if message is None:
            self.tally.strays.append(frame)
            return
        message.last_activity = time.monotonic()
        if kind in ("queued", "progress", "delta"):
            return
        if kind == "busy" and message.final is None and message.busy < BUSY_RETRIES \
                and (frame.get("retry_after") or 0) <= BUSY_RETRY_MAX_WAIT:
            message.busy += 1  # not accepted: a real client tries again when told
            message.resend_at = time.monotonic() + (frame.get("retry_after") or 0)
            return
        if message.final is None:
            message.final = frame
            del self.open[message.id]
            self.tally.finals[kind] += 1
            self.finished += 1
        elif answer_of(message.final) == answer_of(frame):
            self.tally.redelivered += 1
        else:
            self.tally.conflicts.append((message.final, frame))


def check_storage(system: Warmwire, stream: Stream) -> dict[str, int]:
    """Every message once in `messages`, with one final answer in `replies` that is the one
    its client got; returns the lost and duplicate counts (both asserted to be 0)."""
    with system.db() as db:
        stored = {id: (tier, status) for id, tier, status in db.execute(
            "SELECT id, tier, status FROM messages WHERE chat LIKE ?", (f"{CHAT_PREFIX}-%",))}
        finals: dict[str, list[tuple]] = {}
        for message_id, kind, notice_kind, text in db.execute(
                "SELECT r.message_id, r.kind, r.notice_kind, r.text FROM replies r "
                "JOIN messages m ON m.id = r.message_id WHERE m.chat LIKE ? AND "
                f"(r.kind = 'reply' OR r.notice_kind IN ({','.join('?' * len(FINAL_NOTICES))}))",
                (f"{CHAT_PREFIX}-%", *FINAL_NOTICES)):
            finals.setdefault(message_id, []).append((kind, notice_kind, text))
    unanswered = [m.id for m in stream.messages.values() if m.final is None]
    not_stored = [m.id for m in stream.messages.values()  # "busy", "unavailable": not accepted
                  if m.id not in stored and not (m.final and frame_kind(m.final) in ("busy", "unavailable"))]
    extra = sorted(set(stored) - set(stream.messages))
    doubled = [id for id, rows in finals.items() if len(rows) > 1]
    mismatched = []
    for message in stream.messages.values():
        if message.id not in stored or message.final is None:
            continue
        tier, status = stored[message.id]
        kind = frame_kind(message.final)
        expected_row = ("reply", None, message.final["text"]) if kind == "reply" else ("notice", kind, message.final["text"])
        expected_status = {"reply": "answered", "error": "failed", "busy": "refused", "unavailable": "failed"}[kind]
        if tier != message.tier or status != expected_status or finals.get(message.id, [None])[0] != expected_row:
            mismatched.append((message.id, message.tier, tier, status, kind, finals.get(message.id)))
    assert not unanswered, f"{len(unanswered)} messages never got a final frame: {unanswered[:10]}"
    assert not not_stored, f"{len(not_stored)} accepted messages are not in the database: {not_stored[:10]}"
    assert not extra, f"messages stored that nobody sent: {extra[:10]}"
    assert not doubled, f"messages with more than one final answer stored: {doubled[:10]}"
    assert not stream.tally.conflicts, f"a message answered twice, differently: {stream.tally.conflicts[:3]}"
    assert not stream.tally.strays, f"frames for ids nobody sent: {stream.tally.strays[:3]}"
    assert not mismatched, f"stored rows that differ from what the client got: {mismatched[:5]}"
    return {"lost": len(unanswered) + len(not_stored), "duplicates": len(doubled) + len(stream.tally.conflicts)}


def describe(tally: Tally) -> str:
    notices = {k: v for k, v in sorted(tally.frames.items()) if k != "reply"}
    return (f"sent {tally.sent} (resends {tally.resends}), replies {tally.finals['reply']}, "
            f"final notices {dict((k, tally.finals[k]) for k in FINAL_NOTICES if tally.finals[k])}, "
            f"notice frames {notices}, redelivered {tally.redelivered}")


def check_texts() -> None:
    classifier = Classifier.load()
    wrong = [(tier, text, classifier.classify(text).tier) for tier, text in TIER_TEXTS
             if classifier.classify(text).tier != tier]
    assert not wrong, f"the stream's texts no longer reach their tiers: {wrong}"
