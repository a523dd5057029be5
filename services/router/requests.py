"""What clients ask of the frontend besides sending messages: a chat's history, and their
notes (learn one, search them). Each request is answered by one frame carrying its ``id``,
or by an error notice saying why. Nothing here is a chat message: none is classified, and
none is stored as a message (a learned note is stored by the search-cache, as a note).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Callable

from proto.config import Config
from proto.db import chat_history
from proto.frames import (
    ClientOut, Found, History, HistoryRequest, LearnNote, LearnRequest, Learned, Notice, SearchNotes,
    SearchRequest,
)

from .knowledge import KnowledgeClient

log = logging.getLogger("router")

HISTORY_UNREADABLE = "the history cannot be read right now; please try again"
NOTES_SILENT = ("your knowledge base did not answer in time; please send it again "
                "(a note is never saved twice)")


class ClientRequests:
    def __init__(self, config: Config, knowledge: KnowledgeClient,
                 read: Callable[[Callable[[Any], Any], Any], Any],
                 send: Callable[[bytes, ClientOut], None]) -> None:
        self.config = config
        self.knowledge = knowledge
        self.read = read
        self.send = send
        self.counts: Counter[str] = Counter()

    def handle(self, identity: bytes, frame: HistoryRequest | LearnNote | SearchNotes) -> None:
        if not frame.id:
            self._error(identity, frame.id, "'id' must not be empty")
        elif isinstance(frame, HistoryRequest):
            self.history(identity, frame)
        elif isinstance(frame, LearnNote):
            self.learn(identity, frame)
        else:
            self.search(identity, frame)

    def _error(self, identity: bytes, frame_id: str, text: str, kind: str = "error") -> None:
        self.counts["refused_requests"] += 1
        self.send(identity, Notice(id=frame_id, kind=kind, text=text))

    def history(self, identity: bytes, request: HistoryRequest) -> None:
        router = self.config.router
        if not request.chat:
            return self._error(identity, request.id, "'chat' must not be empty")
        if request.limit < 0 or request.limit > router.history_max_limit:
            return self._error(identity, request.id,
                               f"'limit' must be between 0 and {router.history_max_limit}")
        self.counts["history_requests"] += 1
        limit = request.limit or router.history_limit
        page = self.read(lambda db: chat_history(db, request.chat, request.before, limit), None)
        if page is None:
            if self.config.database.exists():
                return self._error(identity, request.id, HISTORY_UNREADABLE, "unavailable")
            page = ([], False)  # nothing was ever stored
        messages, more = page
        self.send(identity, History(id=request.id, chat=request.chat, messages=messages, more=more))

    def learn(self, identity: bytes, note: LearnNote) -> None:
        self.counts["learn_requests"] += 1
        request = LearnRequest(req=self.knowledge.next_req(), text=note.text, source=note.source,
                               tags=note.tags, part=note.part, parts=note.parts)

        def answer(learned) -> None:
            if learned is None:
                self._error(identity, note.id, NOTES_SILENT)
            elif learned.error:
                self._error(identity, note.id, learned.error)
            else:
                self.send(identity, Learned(id=note.id, note=learned.id, indexed=learned.indexed))

        # A note is answered once stored and embedded: a client importing a file sends many at
        # once, so it gets as long as `warmwire learn` waits.
        self.knowledge.ask(request, answer, self.config.learn.answer_timeout)

    def search(self, identity: bytes, search: SearchNotes) -> None:
        self.counts["search_requests"] += 1
        request = SearchRequest(req=self.knowledge.next_req(), query=search.query, mode=search.mode,
                                limit=search.limit)

        def answer(found) -> None:
            if found is None:
                self._error(identity, search.id, NOTES_SILENT)
            elif found.error:
                self._error(identity, search.id, found.error)
            else:
                self.send(identity, Found(id=search.id, hits=found.hits, degraded=found.degraded))

        self.knowledge.ask(request, answer)
