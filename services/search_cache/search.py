"""Knowledge search: full text in SQLite, vector in chroma, fused; no sockets, no cache.

Full text always works (SQLite is local). The vector ranking needs chroma; when it is down
the answer is the full-text ranking alone, flagged ``degraded``, never an error.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Callable, TypeVar

from cachetools import LRUCache

from proto import db
from proto.config import Search as SearchConfig
from proto.frames import Hit, SearchFilters

from .fusion import reciprocal_rank_fusion
from .text import cache_text, fts_match, fts_terms, quote, share_of_terms, short_needle, words
from .vector import IndexDown, VectorIndex

T = TypeVar("T")


class BadQuery(ValueError):
    """The query cannot be searched; the message says why, for the user."""


class Searcher:
    def __init__(self, config: SearchConfig, database: Path, busy_timeout_ms: int,
                 index: VectorIndex) -> None:
        self.config = config
        self.database = database
        self.busy_timeout_ms = busy_timeout_ms
        self.index = index
        self._reader: sqlite3.Connection | None = None
        # Full text runs on a thread of its own, with a connection of its own, while the
        # vector ranking is asked for (SQLite and chroma both leave the GIL while they work).
        self._text_thread: ThreadPoolExecutor | None = None
        self._text_reader: sqlite3.Connection | None = None
        # term -> notes holding it, counted when the knowledge base had counted_at notes
        self.term_counts: LRUCache = LRUCache(maxsize=max(1, config.fts_counts_kept))
        self.counted_at = 0

    @property
    def reader(self) -> sqlite3.Connection | None:
        """Read-only, opened once the store-writer has created the database."""
        if self._reader is None and self.database.exists():
            self._reader = db.open_readonly(self.database, self.busy_timeout_ms)
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._text_thread is not None:
            self._text_thread.submit(self._close_text_reader).result()
            self._text_thread.shutdown()
            self._text_thread = None

    def _close_text_reader(self) -> None:
        if self._text_reader is not None:
            self._text_reader.close()
            self._text_reader = None

    def limit(self, asked: int) -> int:
        if asked < 0:
            raise BadQuery("limit must not be negative")
        return min(asked or self.config.default_limit, self.config.max_limit)

    def check(self, query: str) -> str:
        """The query as searched, or BadQuery saying what is wrong with it."""
        if len(query) > self.config.max_query_chars:
            raise BadQuery(f"the query is too long ({len(query)} characters; at most "
                           f"{self.config.max_query_chars}): search for a few words")
        text = cache_text(query)
        if not text:
            raise BadQuery("the query is empty: say what to search for")
        if not words(text):
            raise BadQuery("the query has only punctuation or symbols: say what to search for")
        return text

    # -- the rankings -----------------------------------------------------------------------
    def informative_terms(self, reader: sqlite3.Connection, query: str) -> list[str]:
        """The query's rarest terms. A term most notes contain ranks nothing and makes bm25
        score thousands of rows (Thai trigrams of a common phrase); terms no note contains
        cannot match. If every term is common, the rarest one still searches."""
        terms = fts_terms(query, self.config.fts_max_terms)
        if not terms:
            return []
        rows = db.note_rows(reader)
        common = max(self.config.fts_common_share * rows, self.config.fts_common_min)
        counted = sorted(zip(self._document_counts(reader, terms, rows), terms))
        found = [(count, term) for count, term in counted if count > 0]
        rare = [term for count, term in found if count <= common]
        return (rare or [term for _, term in found[:1]])[:self.config.fts_rare_terms]

    def _document_counts(self, reader: sqlite3.Connection, terms: list[str], rows: int) -> list[int]:
        """How many notes hold each term: kept from earlier queries while the knowledge base
        has grown by less than fts_counts_drift since they were counted (and not shrunk). A
        term no note held is counted again every time: the next note may hold it."""
        if not self.counted_at <= rows <= self.counted_at * (1 + self.config.fts_counts_drift):
            self.term_counts.clear()
            self.counted_at = rows
        counts = {term: self.term_counts[term] for term in terms if term in self.term_counts}
        missing = [term for term in terms if term not in counts]
        for term, count in zip(missing, db.term_document_counts(reader, map(quote, missing))):
            counts[term] = count
            if count:
                self.term_counts[term] = count
        return [counts[term] for term in terms]

    def full_text(self, query: str, filters: SearchFilters, count: int,
                  reader: sqlite3.Connection | None = None) -> tuple[list[Hit], list[str]]:
        """(hits best first, the terms searched for); on ``reader``, else the searcher's own."""
        reader = reader or self.reader
        if reader is None:
            return [], []
        try:
            if fts_terms(query, self.config.fts_max_terms):
                terms = self.informative_terms(reader, query)
                if not terms:
                    return [], []
                return db.search_notes_fts(reader, fts_match(terms), filters, count), terms
            # Every word is shorter than a trigram ("ok", "น้ำ" is three): scan for it.
            needle = short_needle(query)
            hits = db.search_notes_substring(reader, needle, filters, count) if needle else []
            return hits, []
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return [], []  # a database from before the knowledge base existed
            raise

    def vector(self, query: str, filters: SearchFilters, count: int) -> list[Hit]:
        """Raises IndexDown when chroma cannot be asked."""
        nearest = self.index.nearest(query, self.config.candidates)
        reader = self.reader
        if reader is None or not nearest:
            return []
        live = db.live_notes_by_id(reader, (note for note, _ in nearest), filters)
        hits = []
        for note, similarity in nearest:
            hit = live.get(note)
            if hit is not None:
                hit.score = similarity
                hits.append(hit)
        return hits[:count]

    def _full_text_beside(self, query: str, filters: SearchFilters) -> Future:
        """``full_text`` on its thread; the future's result is full_text's."""
        if self._text_thread is None:
            self._text_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="full-text")
        return self._text_thread.submit(self._full_text_on_thread, query, filters)

    def _full_text_on_thread(self, query: str, filters: SearchFilters) -> tuple[list[Hit], list[str]]:
        if self._text_reader is None:
            if not self.database.exists():
                return [], []
            self._text_reader = db.open_readonly(self.database, self.busy_timeout_ms)
        return self.full_text(query, filters, self.config.candidates, self._text_reader)

    # -- the modes --------------------------------------------------------------------------
    def search(self, query: str, mode: str, limit: int, filters: SearchFilters) -> tuple[list[Hit], bool]:
        """(hits best first, degraded). ``query`` has passed ``check``."""
        text = None
        if mode in ("fts", "hybrid") or not self.index.up:
            text = self._full_text_beside(query, filters)
        if mode == "fts":
            return text.result()[0][:limit], False
        try:
            vector_hits = self.vector(query, filters, self.config.candidates)
        except IndexDown:
            text = text or self._full_text_beside(query, filters)
            return text.result()[0][:limit], True
        if mode == "vector":
            return vector_hits[:limit], False
        text_hits, terms = text.result()
        # An OR query matches a note that shares one word or trigram with it; in a fusion such
        # weak matches would outvote the vector ranking, so only notes holding a good share of
        # the query's terms take part (full-text-only searches keep them all).
        text_hits = [hit for hit in text_hits
                     if share_of_terms(terms, hit.text) >= self.config.fts_min_share]
        by_id = {hit.id: hit for hit in (*vector_hits, *text_hits)}
        fused = reciprocal_rank_fusion(
            ([hit.id for hit in vector_hits], [hit.id for hit in text_hits]), self.config.rrf_k)
        hits = []
        for note, score in fused[:limit]:
            hit = by_id[note]
            hits.append(Hit(id=hit.id, text=hit.text, source=hit.source, score=score))
        return hits, False

    def latest(self, filters: SearchFilters, limit: int) -> list[Hit]:
        reader = self.reader
        return db.latest_notes(reader, filters, limit) if reader is not None else []

    # -- read on a connection of their own, for a worker thread (a connection is used by one
    #    thread at a time): they take milliseconds at 100,000 notes -------------------------
    def documents(self) -> int:
        """Live notes (0 before the knowledge base exists)."""
        try:
            return self._read_elsewhere(db.count_live_notes, 0)
        except sqlite3.OperationalError:
            return 0  # a database from before the knowledge base existed

    def live_notes(self) -> list[tuple[str, str, str]]:
        """Every live note: (id, text, source)."""
        return self._read_elsewhere(db.live_note_texts, [])

    def _read_elsewhere(self, query: Callable[[sqlite3.Connection], T], default: T) -> T:
        if not self.database.exists():
            return default
        with closing(db.open_readonly(self.database, self.busy_timeout_ms)) as conn:
            return query(conn)
