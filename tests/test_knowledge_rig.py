"""The knowledge tests' rig (this module has no tests of its own): a real `chroma run` on a
free port, and the store-writer and search-cache running in one event loop in a thread,
talking over real ZeroMQ sockets and a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import msgspec
import zmq

from conftest import free_port, wait_for
from proto.config import Config, load
from proto.frames import Codec, KnowledgeIn, KnowledgeOut, LearnRequest, SearchRequest
from proto.loop import EventLoop
from proto.sockets import bind_router, connect_dealer, ensure_run_dir
from services.search_cache.search import Searcher
from services.search_cache.service import SearchCacheService
from services.search_cache.vector import VectorIndex, load_embedder
from services.store_writer.database import open_writer
from services.store_writer.service import StoreWriter

CHROMA_DEADLINE = 30.0
ANSWER_DEADLINE = 30.0
HEARTBEAT = "/api/v2/heartbeat"
_embedder = None


def embedder():
    """The embedding model, loaded once per test session (it takes a couple of seconds)."""
    global _embedder
    if _embedder is None:
        _embedder = load_embedder()
    return _embedder


class ChromaServer:
    """`chroma run` as the supervisor runs it: loopback, its own data folder, no telemetry."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ChromaServer":
        chroma = Path(sys.executable).with_name("chroma")
        self.log = open(self.folder / "chroma.log", "ab")
        self.proc = subprocess.Popen(
            [str(chroma), "run", "--host", "127.0.0.1", "--port", str(self.port),
             "--path", str(self.folder / "chroma")],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
        wait_for(self.beating, CHROMA_DEADLINE, "chroma's heartbeat")
        return self

    def beating(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{HEARTBEAT}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def rig_config(home: Path, chroma_port: int, **settings: str) -> Config:
    env = {"WARMWIRE_HOME": str(home), "WARMWIRE_CHROMA_PORT": str(chroma_port),
           "WARMWIRE_CHROMA_COLLECTION": f"test-{uuid.uuid4().hex[:12]}", **settings}
    return load(env)


class KnowledgeRig:
    """store-writer + search-cache in one loop on a background thread; a client socket."""

    def __init__(self, config: Config) -> None:
        self.config = config
        ensure_run_dir(config.run_dir)
        self.ctx = zmq.Context()
        self.loop = EventLoop()
        conn = open_writer(config.database, config.store.busy_timeout_ms)
        store_socket = bind_router(self.ctx, config.endpoint("store"))
        self.writer = StoreWriter(conn, store_socket, config.store.batch_max, self.loop,
                                  config.store.checkpoint_after_idle)
        self.loop.add_reader(store_socket, self.writer.on_readable)
        self.index = VectorIndex(config.chroma, config.search, embedder())
        self.searcher = Searcher(config.search, config.database, config.store.busy_timeout_ms, self.index)
        self.service = SearchCacheService(
            config.search, config.chroma.retry_interval,
            bind_router(self.ctx, config.endpoint("search"), max_msg_size=config.search.hard_frame_bytes),
            connect_dealer(self.ctx, config.endpoint("store")), self.searcher, self.index, self.loop)
        self.loop.enable_threads()  # so the test thread can stop the loop
        self.service.start()
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()
        self.client = Client(self.ctx, config.endpoint("search"))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.client.close()
        self.searcher.close()
        self.writer.conn.close()
        self.ctx.destroy(linger=0)


class Client:
    """Sends knowledge frames and waits for the answer with the same ``req``."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.codec = Codec(KnowledgeOut)
        self.requests = Codec(KnowledgeIn)
        self.sock = connect_dealer(ctx, endpoint)

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def recv(self, timeout: float = ANSWER_DEADLINE):
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"no answer within {timeout:g} s")
        return self.codec.decode(self.sock.recv())

    def ask(self, frame):
        self.sock.send(self.requests.encode(frame))
        while True:
            answer = self.recv()
            if answer.req == frame.req:
                return answer

    def learn(self, text: str, **fields):
        answer = self.ask(LearnRequest(req=uuid.uuid4().hex, text=text, **fields))
        assert not answer.error, answer
        return answer

    def search(self, query: str, **fields):
        return self.ask(SearchRequest(req=uuid.uuid4().hex, query=query, **fields))

    def close(self) -> None:
        self.sock.close()


def raw(frame: dict) -> bytes:
    return msgspec.msgpack.encode(frame)


def wait_until_up(index: VectorIndex, service: SearchCacheService | None = None) -> None:
    wait_for(lambda: index.up and (service is None or not (service.to_index or service.index_checks)), CHROMA_DEADLINE,
             "the search-cache to reach chroma and finish indexing")

