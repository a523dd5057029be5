"""router: the clients' frontend. Validates, classifies, answers or hands on, and persists.

Every message is answered only after the store-writer has committed it together with its
answer ("nothing acknowledged is lost"). Until then the answer waits in ``waiting`` while the
StoreClient sends the write again if no acknowledgement comes; a client that resends the same
id meanwhile is added to the same entry, and one that resends later is answered from the
database.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable

import msgspec
import zmq

from proto.config import Config
from proto.db import KnownMessage, known_message, last_agent_reply, recent_turns, unfinished_messages
from proto.frames import (
    Chat, ClientIn, ClientOut, Codec, Job, LearnRequest, Notice, Passage, Reply, SaveAnswer,
    SaveExchange,
    SearchRequest, StoredMessage, Turn, describe_decode_error, knowledge_request, shorten,
)
from proto.loop import EventLoop
from proto.store_client import StoreClient

from .classifier import TIERS, Classifier
from .classifier.conversation import AGENT_TIERS, in_session, is_follow_up
from .inline import InlineResponder
from .jobs import SEQ_QUEUED, JobDispatcher
from .knowledge import KnowledgeClient
from .lanes import Held, Lanes
from .latency import LatencyMeter
from .reader import StoreReader
from .requests import ClientRequests
from .spend import Spend

log = logging.getLogger("router")

# Frames read from the frontend per wake-up before the store socket gets its turn.
FRONTEND_BATCH = 256
# Messages of one chat that waited for its agent and go to it as one turn are joined so.
MERGED_SEPARATOR = "\n\n"
# When the search-cache gives no answer in time. A note to remember may be saved all the same
# (the search-cache saves it once the store-writer is back: a frozen store-writer made every
# "remember" say the knowledge base was not answering, and then the note was there), so the
# user is told it is unconfirmed; sending it again is safe, a note is never saved twice.
KNOWLEDGE_SILENT = "your knowledge base is not answering right now; please try again"
NOTE_UNCONFIRMED = ("I could not confirm that your note was saved (your knowledge base did not answer in "
                    "time); please send it again: a note is never saved twice")
STORED_UNREADABLE = ("a message was stored under this id before, and the database cannot be read right "
                     "now to answer it from there; please send it again in {:g} s")
ID_REUSED = ("id {} was already used for another message (a different chat, sender or text); "
             "nothing was stored: give every new message a new id")


class Router:
    def __init__(self, config: Config, frontend: zmq.Socket, store: zmq.Socket, pool: zmq.Socket,
                 deltas: zmq.Socket, search: zmq.Socket, classifier: Classifier, loop: EventLoop) -> None:
        self.config = config.router
        self.full_config = config
        self.frontend = frontend
        self.classifier = classifier
        self.loop = loop
        self.client_codec = Codec(ClientIn)
        self.storage = StoreClient(store, loop, self.config.store_ack_timeout,
                                   self._on_committed, self._on_store_failed, self._on_store_refused,
                                   self._on_store_kept, self._on_stored_before)
        self.database = StoreReader(config.database, config.store.busy_timeout_ms)
        self._read = self.database.read
        self.spend = Spend(config, self._read)
        self.inline = InlineResponder(self.stats, self.spend.today, self.spend.unpriced_today)
        self.jobs = JobDispatcher(config.jobs, config.pool.max_concurrency, pool, deltas, loop, self._send,
                                  self.persist, self._job_done)
        self.lanes = Lanes(self.config.sessions_kept,
                           lambda chat: self._read(lambda db: last_agent_reply(db, chat), None))
        self.knowledge = KnowledgeClient(search, loop, self.config.search_timeout)
        self.requests = ClientRequests(config, self.knowledge, self._read, self._send)
        self.latency = LatencyMeter(self.config, TIERS)
        # Messages waiting for the search-cache: message id -> clients to answer.
        self.asking: dict[str, list[bytes]] = {}
        # Messages received but not yet committed, as sent: id -> (chat, sender, text). With the
        # database it tells a resend (the same message) from an id reused for another one.
        self.received: dict[str, tuple[str, str, str]] = {}
        # Writes waiting to be committed: store key -> (answer to send, clients, then what).
        self.waiting: dict[str, tuple[ClientOut | None, list[bytes], Callable[[], None] | None]] = {}
        self.on_drained: Callable[[], None] | None = None
        self.state = "serving"
        self.started = time.monotonic()
        self.tiers: Counter[str] = Counter({tier: 0 for tier in TIERS})
        self.counts: Counter[str] = Counter()
        self.undeliverable_unlogged = 0
        self.undeliverable_log_at = 0.0

    def start(self) -> None:
        self.loop.add_reader(self.frontend, self.on_frontend_readable)
        self.storage.start()
        self.jobs.start()
        self.knowledge.start()
        self._resume()

    def stats(self) -> dict[str, Any]:
        return {
            "uptime": time.monotonic() - self.started,
            "messages": sum(self.tiers.values()),
            "tiers": dict(self.tiers),
            "classifier": self.classifier.scorer_name,
            "pending_writes": len(self.waiting),
            "store_resends": self.storage.resends,
            "jobs": {**self.jobs.stats(), "busy_chats": len(self.lanes.lanes), "held": self.lanes.held()},
            "knowledge": self.knowledge.counts,
            "spend_today": self.spend.stats(),
            **self.latency.stats(),
            **self.requests.counts,
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
            except msgspec.DecodeError:
                frame_id, reason = describe_decode_error(data)
                self._error(identity, frame_id, reason)
                continue
            if type(chat) is not Chat:
                self.requests.handle(identity, chat)  # history, learn, search
                continue
            if not chat.id or not chat.chat:
                self._error(identity, chat.id, "'id' and 'chat' must not be empty")
                continue
            self.on_chat(identity, chat)

    def on_chat(self, identity: bytes, chat: Chat) -> None:
        if self._join_in_flight(identity, chat):
            return
        if len(self.waiting) >= self.config.max_pending_writes:
            self.counts["busy"] += 1
            self._send(identity, Notice(
                id=chat.id, chat=chat.chat, kind="busy", retry_after=self.config.busy_retry_after,
                text=f"busy, try again in {self.config.busy_retry_after:g} s"))
            return
        self.latency.arrived(chat.id)
        verdict = self.classifier.classify(chat.text)
        if is_follow_up(chat.text):  # only then is the chat's session worth looking up
            verdict = in_session(chat.text, verdict, self.lanes.session(chat.chat), self.config.session_window)
        if verdict.tier == "oracle-only" and self._answer_stored([identity], chat, self._known(chat.id)):
            return  # looked up first: a note must not be learnt from an id that was used before
        self.tiers[verdict.tier] += 1
        needs_agent = verdict.tier in AGENT_TIERS
        message = StoredMessage(id=chat.id, chat=chat.chat, sender=chat.sender, text=chat.text,
                                tier=verdict.tier, received_at=time.time(),
                                status="accepted" if needs_agent else "answered")
        self.received[chat.id] = (chat.chat, chat.sender, chat.text)
        if verdict.tier == "inline":
            answer = Reply(id=chat.id, chat=chat.chat, tier="inline",
                           text=self.inline.respond(verdict.intent, chat.text))
            self.persist(SaveExchange(message=message, answer=answer), answer, [identity])
        elif verdict.tier == "oracle-only":
            clients = self.asking[chat.id] = [identity]
            request = knowledge_request(verdict.intent, self.knowledge.next_req(), chat.chat, chat.text)
            learning = isinstance(request, LearnRequest)
            self.knowledge.ask(request, lambda answer: self._answer_from_knowledge(message, clients, answer, learning))
        else:
            # Stored first, so the message is never lost, then handed to an agent.
            clients = [identity]
            self.persist(SaveExchange(message=message), None, clients,
                         then=lambda: self._to_agent(message, clients, verdict.intent))

    def _answer_from_knowledge(self, message: StoredMessage, clients: list[bytes], found, learning: bool) -> None:
        del self.asking[message.id]
        if found is None:
            answer = Notice(id=message.id, chat=message.chat, kind="error",
                            text=NOTE_UNCONFIRMED if learning else KNOWLEDGE_SILENT)
        elif found.error and not found.reply:
            answer = Notice(id=message.id, chat=message.chat, kind="error", text=found.error)
        else:
            answer = Reply(id=message.id, chat=message.chat, tier="oracle-only", text=found.reply)
        status = "answered" if isinstance(answer, Reply) else "failed"
        self.persist(SaveExchange(message=msgspec.structs.replace(message, status=status), answer=answer),
                     answer, clients)

    def _to_agent(self, message: StoredMessage, clients: list[bytes], intent: str = "") -> None:
        """To the chat's agent now, or, while the chat's job runs, behind it in its lane."""
        held = Held(message, clients, intent)
        if not self.lanes.busy(message.chat):
            self.lanes.start(message.chat)
            self._submit_with_context([held])
            return
        place = self.lanes.hold(held)
        notice = Notice(id=message.id, chat=message.chat, kind="queued", position=place,
                        text=f"queued behind this chat's current job (position {place}); "
                             "it goes to the agent as soon as that job is answered")
        self._send_all(clients, notice)
        # Persisted as the message's status: a restarted router sends it to the agent again.
        self.persist(SaveAnswer(message_id=message.id, seq=SEQ_QUEUED, status="queued", answer=notice), None, [])

    def _job_done(self, job: Job, replied: bool) -> None:
        """The chat's job is answered: its session is open; the messages that waited for it
        go to the agent as one turn."""
        if replied:
            self.lanes.replied(job.chat, job.tier)
        waiting = self.lanes.finish(job.chat)
        if waiting:
            self._submit_with_context(waiting)

    def _submit_with_context(self, messages: list[Held]) -> None:
        """Ask the knowledge base for passages, then hand the job to the pool (with or
        without them: a slow search-cache never holds a job back for long)."""
        request = SearchRequest(req=self.knowledge.next_req(), query=self._turn_text(messages),
                                limit=self.full_config.jobs.context_passages)

        def submit(found) -> None:
            passages = [Passage(text=hit.text, source=hit.source) for hit in found.hits] if found else []
            self.jobs.submit(self._job(messages, passages), messages[0].clients,
                             {held.message.id: held.clients for held in messages[1:]})

        self.knowledge.ask(request, submit)

    def _join_in_flight(self, identity: bytes, chat: Chat) -> bool:
        """A message id seen before is never processed again. Here: one this router has not
        yet stored. The same message joins it; another message under that id is refused. An
        id stored before comes back from the store-writer as ``stored_before`` (a read of the
        database for every new message cost the router a fifth of its time per message)."""
        sent = self.received.get(chat.id)
        if sent is None:
            return False
        if sent != (chat.chat, chat.sender, chat.text):
            self._refuse_reused_id([identity], chat.id, chat.chat)
        elif chat.id in self.waiting:
            self.waiting[chat.id][1].append(identity)
        else:
            self.asking[chat.id].append(identity)
        return True

    def _on_stored_before(self, key: str) -> None:
        """The store-writer kept what it had under this message id: the message is a resend
        of one stored before (by an earlier router), or another message under a used id."""
        _, clients, _ = self.waiting.pop(key)
        chat = self.received.pop(key)
        if not self._answer_stored(clients, Chat(id=key, chat=chat[0], sender=chat[1], text=chat[2]),
                                   self._known(key)):
            retry = self.config.busy_retry_after
            self._send_all(clients, Notice(id=key, chat=chat[0], kind="unavailable", retry_after=retry,
                                           text=STORED_UNREADABLE.format(retry)))
        if self.on_drained is not None and not self.waiting:
            self._finish_drain()

    def _answer_stored(self, clients: list[bytes], chat: Chat, known: KnownMessage | None) -> bool:
        """Answer a message whose id is stored (``known``) from the database: the same message
        joins its job or gets its stored answer; another message under that id is refused."""
        if known is None:
            return False
        if (known.chat, known.sender, known.text) != (chat.chat, chat.sender, chat.text):
            self._refuse_reused_id(clients, chat.id, chat.chat)
        elif chat.id in self.jobs:
            for identity in clients:
                self.jobs.follow(chat.id, identity)
        else:
            self.counts["resends_answered"] += 1
            self._send_all(clients, known.answer or Notice(id=chat.id, chat=chat.chat, kind="queued",
                                                           text="still working on it"))
        return True

    def _refuse_reused_id(self, clients: list[bytes], message_id: str, chat: str) -> None:
        self.counts["ids_reused"] += 1
        self._send_all(clients, Notice(id=message_id, chat=chat, kind="error",
                                       text=ID_REUSED.format(shorten(repr(message_id)))))

    @staticmethod
    def _turn_text(messages: list[Held]) -> str:
        return MERGED_SEPARATOR.join(held.message.text for held in messages)

    def _job(self, messages: list[Held], context: list[Passage]) -> Job:
        """One agent turn for one message, or for several of one chat that waited for its
        previous job: under the first one's id, at the largest tier any of them needs."""
        first = messages[0].message
        tier = max((held.message.tier for held in messages), key=AGENT_TIERS.index)
        agents = self.full_config.agents
        history = [Turn(role=role, content=text, tools=tools) for role, text, tools in self._read(
                   lambda db: recent_turns(db, first.chat, first.id, self.full_config.jobs.history_turns), [])]
        return Job(id=first.id, chat=first.chat, tier=tier,
                   model=agents.light_model if tier == "container-light" else agents.full_model,
                   text=self._turn_text(messages), history=history, context=context,
                   merged=[held.message.id for held in messages[1:]],
                   intent=next((held.intent for held in messages if held.intent), ""))

    def _resume(self) -> None:
        """Jobs a previous router accepted but never answered go to the pool again."""
        unfinished = self._read(unfinished_messages, None)
        if unfinished is None:
            if self.full_config.database.exists():
                self.database.on_readable = self._resume  # once it can be read
            return
        if unfinished:
            log.warning("resuming %d unanswered jobs from before the restart", len(unfinished))
        for message_id, chat, sender, text, tier in unfinished:
            message = StoredMessage(id=message_id, chat=chat, sender=sender, text=text, tier=tier,
                                    received_at=0.0, status="accepted")
            self._to_agent(message, [])

    def _known(self, message_id: str) -> KnownMessage | None:
        return self._read(lambda db: known_message(db, message_id), None)

    def _error(self, identity: bytes, frame_id: str, reason: str) -> None:
        self.counts["bad_frames"] += 1
        log.warning("bad frame from client: %s", reason)
        self._send(identity, Notice(id=frame_id, kind="error", text=reason))

    def _send_all(self, identities: list[bytes], frame: ClientOut) -> None:
        for identity in identities:
            self._send(identity, frame)

    def _send(self, identity: bytes, frame: ClientOut) -> None:
        self.latency.sent(frame)
        try:
            self.frontend.send_multipart([identity, self.client_codec.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # Gone (EHOSTUNREACH) or not reading (EAGAIN): the answer is stored, and the client
            # gets it again by resending its message.
            # Said at most once per interval, with a count: a client that never reads must not
            # make the log grow by a line per message.
            self.counts["undeliverable"] += 1
            self.undeliverable_unlogged += 1
            now = time.monotonic()
            if now >= self.undeliverable_log_at:
                log.warning("could not deliver %d answers to clients (last: %s): gone or not reading",
                            self.undeliverable_unlogged, exc.strerror)
                self.undeliverable_unlogged = 0
                self.undeliverable_log_at = now + self.config.undeliverable_log_interval

    # -- store-writer ------------------------------------------------------------------
    def persist(self, frame: Any, answer: ClientOut | None, clients: list[bytes],
                then: Callable[[], None] | None = None) -> None:
        """Store a frame; once committed, send ``answer`` to the clients and run ``then``."""
        self.waiting[frame.key] = (answer, clients, then)
        # A new message may be refused when nothing can be stored (its user is told to send it
        # again); an answer to a message already stored is kept until it is.
        self.storage.write(frame, refusable=isinstance(frame, SaveExchange))

    def _on_committed(self, key: str) -> None:
        answer, clients, then = self.waiting.pop(key)
        self.received.pop(key, None)
        if answer is not None:
            self._send_all(clients, answer)
        if then is not None:
            then()
        if self.on_drained is not None and not self.waiting:
            self._finish_drain()

    def _on_store_failed(self, key: str, error: str) -> None:
        log.error("the store-writer could not store %s: %s", key, error)
        self._tell_not_stored(key, "error", "your message could not be stored; please send it again later")

    def _on_store_refused(self, key: str, error: str) -> None:
        """Nothing can be stored now (the store-writer logged why, once): each user is told."""
        self.counts["refused_unstorable"] += 1
        retry = self.config.busy_retry_after
        self._tell_not_stored(key, "unavailable", f"your message was not stored because {error}; "
                              f"it was not accepted, please send it again in {retry:g} s", retry)

    def _on_store_kept(self, key: str, error: str) -> None:
        """An answer to a stored message waits until it can be stored: its users are told so
        once, instead of hearing nothing until then."""
        answer, clients, _ = self.waiting[key]
        if answer is None:
            return
        self._send_all(clients, Notice(id=answer.id, chat=answer.chat, kind="progress",
                                       text=f"your answer is ready but cannot be stored yet because "
                                            f"{error}; it will be sent once it is"))

    def _tell_not_stored(self, key: str, kind: str, text: str, retry_after: float | None = None) -> None:
        answer, clients, _ = self.waiting.pop(key)
        self.received.pop(key, None)
        message_id = key.split("#", 1)[0]
        self._send_all(clients, Notice(id=message_id, kind=kind, text=text, retry_after=retry_after))
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
        self.database.close()
        done()
