"""search-cache: the knowledge base's front door (search, learn, recall) behind a TTL+LRU cache.

Requests arrive on a ROUTER socket (knowledge frames, proto/frames.py). A search is answered
from the cache, or else from full text (SQLite) fused with the vector ranking (chroma), and
cached unless it was degraded. A note to learn goes to the store-writer first and waits for
its ``Committed`` (resent if none comes, idempotent by the note's content-derived id); then it
is embedded into chroma, the cache is emptied, and the sender is answered — so the very next
search finds it.

Chroma may be down: search then answers from full text with ``degraded``, learning still
stores the note, and once chroma answers again the notes it missed are indexed (catch-up).
Embedding and upserts run in batches of ``index_batch`` per wake-up of the loop, so a bulk
import or a catch-up never holds a search back for long.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import time
from typing import Any, Callable

import msgspec
import zmq

from proto.config import Search as SearchConfig
from proto.frames import (
    Codec, KnowledgeIn, KnowledgeOut, LearnAnswer, LearnRequest, RecallRequest, SaveNote,
    SearchAnswer, SearchFilters, SearchRequest, StoredNote,
)
from proto.loop import EventLoop, Timer
from proto.store_client import StoreClient

from . import replies
from .cache import AnswerCache, cache_key
from .search import BadQuery, Searcher
from .text import normalize, note_id, strip_command
from .vector import Embedder, IndexDown, VectorIndex, load_vector_side

log = logging.getLogger("search-cache")

# Requests read per wake-up before the store socket and the indexing queue get their turn.
REQUEST_BATCH = 256
NO_FILTERS = SearchFilters()


class Waiter(msgspec.Struct, gc=False):
    """Someone to answer once a note is stored: the peer, its request id, the text it sent
    (its language picks the reply's)."""

    peer: bytes
    req: str
    text: str


class SearchCacheService:
    def __init__(self, config: SearchConfig, retry_interval: float, socket: zmq.Socket,
                 store: zmq.Socket, searcher: Searcher, index: VectorIndex, loop: EventLoop) -> None:
        self.config = config
        self.retry_interval = retry_interval
        self.socket = socket
        self.searcher = searcher
        self.index = index
        self.loop = loop
        self.requests = Codec(KnowledgeIn)
        self.answers = Codec(KnowledgeOut)
        self.cache = AnswerCache(config.cache_size, config.cache_ttl)
        # Notes sent to the store-writer, kept (and resent) by the StoreClient until committed;
        # here: the note and who waits for it, by note id.
        self.store = StoreClient(store, loop, config.store_ack_timeout, self.on_stored, self.on_not_stored)
        self.pending: dict[str, tuple[StoredNote, list[Waiter]]] = {}
        # Stored notes waiting to be embedded: ((id, text, source), waiters to answer after).
        self.to_index: collections.deque[tuple[tuple[str, str, str], list[Waiter]]] = collections.deque()
        # Readable while to_index has work: the loop interleaves it fairly with the sockets.
        self.work = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.reconnect_timer: Timer | None = None
        self.on_drained: Callable[[], None] | None = None
        self.state = "serving"
        self.counts: collections.Counter[str] = collections.Counter()
        self.index_checks = 0  # running: chroma's copy compared with the notes, off the loop
        # Notes indexed while a check runs: it may count them missing (it lists chroma first).
        self.indexed_during_check: set[str] = set()
        # Live notes as last counted, off the loop: every probe showed the count, and at
        # 100,000 notes counting took 3.5 ms, which the searches behind each probe waited for.
        self.documents = 0
        self.counted_at = -1  # counts["learned"] when the shown count was taken
        self.counting = False

    def start(self) -> None:
        self.loop.add_reader(self.socket, self.on_readable)
        self.store.start()
        self.loop.add_reader(self.work, self.on_work)
        if self.index.embedder is None:
            self.loop.run_in_thread(load_vector_side, self._on_vector_side_loaded)
        else:
            self._reconnect()

    def _on_vector_side_loaded(self, embedder: Embedder | None, error: BaseException | None) -> None:
        if error is not None:  # the process exits and the supervisor's restarts say so
            raise RuntimeError(f"could not load the embedding model: {error}") from error
        log.info("embedding model loaded")
        # The model and chromadb's modules (~70,000 objects) live as long as the process; a
        # full garbage collection walked them all (17-21 ms, about once in 2,000 searches at
        # 100,000 notes, a search waiting behind it). Frozen, it does not.
        gc.freeze()
        self.index.embedder = embedder
        self._reconnect()

    def stats(self) -> dict[str, Any]:
        cache = self.cache.stats()
        return {"chroma": "up" if self.index.up else "down",
                "documents": self._documents(),
                "cache_hits": cache["hits"], "cache_misses": cache["misses"],
                "cache_size": cache["size"], "hit_ratio": cache["hit_ratio"],
                "unindexed": len(self.to_index), "checking_index": self.index_checks > 0,
                "pending_writes": len(self.pending),
                "store_resends": self.store.resends, **self.counts}

    def _documents(self) -> int:
        """The last count of live notes; a new count starts off the loop when notes were
        stored since (status shows it at the next probe)."""
        if not self.counting and self.counted_at != self.counts["learned"]:
            self.counting, learned = True, self.counts["learned"]

            def counted(documents: int | None, error: BaseException | None) -> None:
                self.counting = False
                if error is not None:
                    raise error
                self.documents, self.counted_at = documents, learned

            self.loop.run_in_thread(self.searcher.documents, counted)
        return self.documents

    # -- requests --------------------------------------------------------------------------
    def on_readable(self) -> None:
        for _ in range(REQUEST_BATCH):
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(parts) != 2:
                self.counts["bad_requests"] += 1
                continue
            peer, data = parts
            try:
                frame = self.requests.decode(data)
            except msgspec.DecodeError as exc:
                self._bad_frame(peer, data, exc)
                continue
            if isinstance(frame, SearchRequest):
                self.on_search(peer, frame)
            elif isinstance(frame, LearnRequest):
                self.on_learn(peer, frame)
            else:
                self.on_recall(peer, frame)

    def on_search(self, peer: bytes, frame: SearchRequest) -> None:
        self.counts["searches"] += 1
        query = strip_command("search", frame.query) if frame.message else frame.query
        try:
            limit = self.searcher.limit(frame.limit)
            query = self.searcher.check(query)
        except BadQuery as exc:
            self._refuse(peer, frame.req, frame.query, str(exc))
            return
        self._answer_search(peer, frame.req, frame.query, "search", query, frame.mode, limit, frame.filters)

    def on_recall(self, peer: bytes, frame: RecallRequest) -> None:
        self.counts["recalls"] += 1
        topic = strip_command("recall", frame.topic) if frame.message else normalize(frame.topic)
        try:
            limit = self.searcher.limit(frame.limit)
            if topic:
                topic = self.searcher.check(topic)
        except BadQuery as exc:
            self._refuse(peer, frame.req, frame.topic, str(exc))
            return
        self._answer_search(peer, frame.req, frame.topic, "recall", topic, "hybrid", limit, NO_FILTERS)

    def _answer_search(self, peer: bytes, req: str, asked: str, kind: str, query: str, mode: str,
                       limit: int, filters: SearchFilters) -> None:
        key = cache_key(kind, query, mode, limit, filters)
        cached = self.cache.get(key)
        if cached is not None:
            hits, reply = cached
            self._send(peer, SearchAnswer(req=req, hits=hits, reply=reply))
            return
        if query:
            hits, degraded = self.searcher.search(query, mode, limit, filters)
        else:  # "what do you know?" with no topic: the latest notes
            hits, degraded = self.searcher.latest(filters, limit), False
        if degraded:
            self.counts["degraded_searches"] += 1
            self._schedule_reconnect()
        reply = replies.hits_reply(asked, hits, degraded, recall=kind == "recall",
                                   text_chars=self.config.reply_chars)
        if not degraded:  # a degraded answer must not outlive chroma's return
            self.cache.put(key, (hits, reply))
        self._send(peer, SearchAnswer(req=req, hits=hits, degraded=degraded, reply=reply))

    def on_learn(self, peer: bytes, frame: LearnRequest) -> None:
        self.counts["learn_requests"] += 1
        text = strip_command("learn", frame.text) if frame.message else normalize(frame.text)
        error = ""
        if not text:
            error = "the note is empty: say what to remember"
        elif len(text) > self.config.max_note_chars:
            error = (f"the note is too long ({len(text)} characters; at most "
                     f"{self.config.max_note_chars}): split it, or import it with `warmwire learn`")
        elif frame.part is not None and (frame.part < 0 or (frame.parts is not None and frame.part >= frame.parts)):
            error = "part must be at least 0 and less than parts"
        if error:
            self.counts["bad_requests"] += 1
            self._send(peer, LearnAnswer(req=frame.req, error=error,
                                         reply=replies.error_reply(frame.text, error)))
            return
        source = frame.source or "chat"
        waiter = Waiter(peer, frame.req, frame.text)
        key = note_id(source, text)
        waiting = self.pending.get(key)
        if waiting is not None:
            waiting[1].append(waiter)
            return
        note = StoredNote(id=key, text=text, source=source, created_at=time.time(),
                          tags=list(frame.tags), chat=frame.chat, part=frame.part, parts=frame.parts)
        self.pending[key] = (note, [waiter])
        self.store.write(SaveNote(note=note))

    def _refuse(self, peer: bytes, req: str, asked: str, error: str) -> None:
        self.counts["bad_requests"] += 1
        self._send(peer, SearchAnswer(req=req, error=error, reply=replies.error_reply(asked, error)))

    def _bad_frame(self, peer: bytes, data: bytes, exc: msgspec.DecodeError) -> None:
        """Answer what can be read of it: the request id, and why the frame was refused."""
        self.counts["bad_requests"] += 1
        try:
            loose = msgspec.msgpack.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):  # see proto.frames.Codec
            loose = None
        req = loose.get("req") if isinstance(loose, dict) and isinstance(loose.get("req"), str) else ""
        if not isinstance(loose, dict):
            error = "a request must be a MessagePack map with a 'type' field"
        elif loose.get("type") not in ("search", "learn", "recall"):
            error = f"unknown request type {loose.get('type')!r}; send 'search', 'learn' or 'recall'"
        else:
            error = f"invalid {loose['type']} request: {exc}"
        answer = LearnAnswer if isinstance(loose, dict) and loose.get("type") == "learn" else SearchAnswer
        self._send(peer, answer(req=req, error=error, reply=replies.error_reply("", error)))

    def _send(self, peer: bytes, frame: SearchAnswer | LearnAnswer) -> None:
        try:
            self.socket.send_multipart([peer, self.answers.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # Gone or not reading: a search can be asked again, a learn resent (idempotent).
            self.counts["undeliverable"] += 1
            log.warning("could not answer %s: %s", frame.req, exc.strerror)

    # -- store-writer ------------------------------------------------------------------------
    def on_stored(self, key: str) -> None:
        note, waiters = self.pending.pop(key)
        self.counts["learned"] += 1
        self.cache.clear()  # full text already finds the note
        self._queue_index([((note.id, note.text, note.source), waiters)])
        if self.on_drained is not None and not self.pending:
            self._finish_drain()

    def on_not_stored(self, key: str, error: str) -> None:
        _, waiters = self.pending.pop(key)
        log.error("store-writer could not store note %s: %s", key, error)
        error = "the note could not be stored; please send it again later"
        for waiter in waiters:
            self._send(waiter.peer, LearnAnswer(req=waiter.req, error=error,
                                                reply=replies.error_reply(waiter.text, error)))
        if self.on_drained is not None and not self.pending:
            self._finish_drain()

    # -- the vector index --------------------------------------------------------------------
    def _queue_index(self, items: list[tuple[tuple[str, str, str], list[Waiter]]]) -> None:
        if items:
            self.to_index.extend(items)
            os.eventfd_write(self.work, 1)

    def on_work(self) -> None:
        """Embed and upsert one batch of stored notes, then answer whoever waits on them."""
        try:
            os.eventfd_read(self.work)
        except BlockingIOError:
            return
        batch = [self.to_index.popleft() for _ in range(min(self.config.index_batch, len(self.to_index)))]
        indexed = False
        if batch and self.index.up:
            try:
                self.index.upsert([note for note, _ in batch])
                indexed = True
                if self.index_checks:
                    self.indexed_during_check.update(note_id for (note_id, _, _), _ in batch)
            except IndexDown:
                self._schedule_reconnect()
        if not indexed:
            # Chroma is down: the catch-up indexes these when it is back.
            self.counts["left_unindexed"] += sum(1 for _, waiters in batch if not waiters)
        self.cache.clear()  # the vector side changed (or a cached answer predates the note)
        for (note, _, _), waiters in batch:
            for waiter in waiters:
                self._send(waiter.peer, LearnAnswer(req=waiter.req, id=note, indexed=indexed,
                                                    reply=replies.learned_reply(waiter.text, indexed)))
        if self.to_index and self.index.up:
            os.eventfd_write(self.work, 1)
        elif self.to_index:
            self._answer_unindexed()

    def _answer_unindexed(self) -> None:
        """Chroma went down mid-queue: answer everyone now; the catch-up indexes later."""
        while self.to_index:
            (note, _, _), waiters = self.to_index.popleft()
            for waiter in waiters:
                self._send(waiter.peer, LearnAnswer(req=waiter.req, id=note, indexed=False,
                                                    reply=replies.learned_reply(waiter.text, False)))

    def _schedule_reconnect(self) -> None:
        if self.reconnect_timer is None and self.state == "serving":
            self.reconnect_timer = self.loop.call_later(self.retry_interval, self._reconnect)

    def _reconnect(self) -> None:
        """Try chroma; when it answers, index what it missed while it was away. Finding what
        it missed lists the whole collection and reads every note (seconds at 100,000 notes):
        in a worker thread, while searches are answered."""
        self.reconnect_timer = None
        if not self.index.reconnect():
            self._schedule_reconnect()
            return
        started = time.monotonic()
        self.index_checks += 1

        def plan() -> tuple[list[tuple[str, str, str]], list[str]]:
            missing, stale = self.index.plan_catch_up(self.searcher.live_notes)
            self.index.delete(stale)
            return missing, stale

        self.loop.run_in_thread(plan, lambda planned, error: self._catch_up(planned, error, started))

    def _catch_up(self, planned: tuple[list[tuple[str, str, str]], list[str]] | None,
                  error: BaseException | None, started: float) -> None:
        self.index_checks -= 1
        indexed_meanwhile = self.indexed_during_check
        if not self.index_checks:
            self.indexed_during_check = set()
        if isinstance(error, IndexDown):
            self._schedule_reconnect()
            return
        if error is not None:
            raise error
        if self.state != "serving":
            return
        missing, stale = planned
        missing = [note for note in missing if note[0] not in indexed_meanwhile]
        if missing or stale:
            log.info("catching up: indexing %d notes, removing %d stale chunks (found in %.1f s)",
                     len(missing), len(stale), time.monotonic() - started)
        self.cache.clear()
        self._queue_index([(note, []) for note in missing])
        self.counts["caught_up"] += len(missing)  # after queueing: counted means on its way

    # -- shutdown ----------------------------------------------------------------------------
    def drain(self, done: Callable[[], None]) -> None:
        """Stop taking requests; wait (bounded) for notes already sent to be stored."""
        self.state = "draining"
        self.on_drained = done
        self.loop.remove_reader(self.socket)
        if self.reconnect_timer is not None:
            self.reconnect_timer.cancel()
        if not self.pending:
            self._finish_drain()
            return
        log.info("waiting for %d notes to be stored", len(self.pending))
        self.loop.call_later(self.config.drain_timeout, self._finish_drain)

    def _finish_drain(self) -> None:
        done, self.on_drained = self.on_drained, None
        if done is None:
            return
        if self.pending:
            log.error("stopping with %d notes unacknowledged; their senders were not answered "
                      "and will resend", len(self.pending))
        self.searcher.close()
        os.close(self.work)
        done()
