"""model-gateway: the only process that holds provider keys and talks to providers.

The pool-manager sends ``TurnRequest`` frames (an agent asked for a model turn through its
IPC folder); each is run by ``Gateway.turn`` as a task of an asyncio loop on a thread of its
own, so any number of turns stream at once. That thread owns the gateway socket and the
deltas socket outright (it reads the first through its file descriptor and sends on both): a
piece of text goes from the provider's stream to a ``JobDelta`` frame without crossing
threads (a hand-over between threads cost up to Python's 5 ms GIL switch interval,
measured). Deltas go straight to the router (``endpoints.deltas``), which sends them to the
client as ``delta`` notices: the pool-manager's relay, a hop the text does not need, is left
out. The pool-manager gets one ``TurnResult`` per turn, for the agent. The process's own
ZeroMQ loop keeps the control socket (probes, status) and the store-writer connection,
where usage rows go: the provider's own token counts, never an agent's claim.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

import msgspec
import zmq

from proto.config import Config
from proto.frames import Codec, GatewayIn, GatewayOut, JobDelta, SaveUsage, TurnRequest, TurnResult
from proto.loop import EventLoop
from proto.store_client import StoreClient

from .gateway import Gateway

log = logging.getLogger("model-gateway")
# How long a stop waits for the asyncio thread to end.
THREAD_JOIN_TIMEOUT = 5.0


class GatewayService:
    def __init__(self, config: Config, socket: zmq.Socket, deltas: zmq.Socket, storage_socket: zmq.Socket,
                 loop: EventLoop, key: str, spent_today: float = 0.0) -> None:
        """socket: turns from the pool-manager; deltas: streamed text to the router."""
        self.config = config
        self.socket = socket
        self.deltas = deltas
        self.loop = loop
        self.codec = Codec(GatewayIn)
        self.out = Codec(GatewayOut)
        self.delta_codec = Codec(JobDelta)
        self.storage = StoreClient(storage_socket, loop, config.router.store_ack_timeout,
                                   lambda key: None, self._on_store_failed)
        self.gateway = Gateway(config, key, self._usage_from_thread, spent_today)
        self.aloop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.aloop.run_forever, name="gateway-asyncio", daemon=True)
        self.tasks: set[asyncio.Task] = set()
        self.state = "serving"
        self.counts = {"requests": 0, "bad_frames": 0, "undeliverable": 0, "deltas_dropped": 0}

    def start(self) -> None:
        self.loop.enable_threads()
        self.storage.start()
        self.thread.start()
        # From here on only the asyncio thread touches the gateway socket.
        self.aloop.call_soon_threadsafe(self._watch_socket)
        unpriced = self.gateway.unpriced_tier_models()
        if unpriced:
            log.warning("no price in [prices] for %s: their cost will be unknown (not counted as $0)",
                        ", ".join(unpriced))
        log.info("provider %s at %s, models light=%s full=%s, budget %s", self.gateway.kind,
                 self.gateway.url, self.config.agents.light_model, self.config.agents.full_model,
                 f"${self.gateway.budget:.2f}/day" if self.gateway.budget else "none")

    def stats(self) -> dict[str, Any]:
        stats = {**self.gateway.stats(), **self.counts}
        unpriced = self.gateway.unpriced_tier_models()
        if unpriced:
            stats["price_missing"] = unpriced
        return stats

    # -- requests (all in the asyncio thread) -----------------------------------------
    def _watch_socket(self) -> None:
        # ZeroMQ's descriptor signals a change of the socket's events, not readiness, so the
        # socket is drained on every wake-up and its events checked again after every send.
        self.aloop.add_reader(self.socket.getsockopt(zmq.FD), self.on_readable)
        self.on_readable()

    def on_readable(self) -> None:
        while self.state == "serving" and self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                peer, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                request = self.codec.decode(data)
            except msgspec.DecodeError as exc:
                self.counts["bad_frames"] += 1
                log.error("unreadable turn request: %s", exc)
                continue
            self.counts["requests"] += 1
            task = self.aloop.create_task(self._serve(peer, request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve(self, peer: bytes, request: TurnRequest) -> None:
        def on_delta(text: str) -> None:
            try:
                self.deltas.send(self.delta_codec.encode(JobDelta(id=request.job, chat=request.chat, text=text)),
                                 zmq.NOBLOCK)
            except zmq.ZMQError:  # the router is restarting or far behind: its reply has it all
                self.counts["deltas_dropped"] += 1

        try:
            result = await self.gateway.turn(request, on_delta)
        except Exception as exc:  # a bug must still answer the agent, which waits for it
            log.exception("turn %s failed inside the gateway", request.req)
            result = TurnResult(req=request.req, job=request.job, chat=request.chat,
                                error_kind="provider", error=f"the model gateway failed ({type(exc).__name__})")
        self._send(peer, result)

    def _send(self, peer: bytes, frame: TurnResult) -> None:
        try:
            self.socket.send_multipart([peer, self.out.encode(frame)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The pool-manager restarted; its agents' jobs are retried or time out there.
            self.counts["undeliverable"] += 1
            log.warning("could not send turn %s to the pool-manager: %s", frame.req, exc.strerror)
        if self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.aloop.call_soon(self.on_readable)  # a request that came in meanwhile

    def _usage_from_thread(self, frame: SaveUsage) -> None:
        self.loop.call_soon_threadsafe(lambda: self.storage.write(frame))

    def _on_store_failed(self, key: str, error: str) -> None:
        log.error("the store-writer could not store %s: %s", key, error)

    # -- shutdown ----------------------------------------------------------------------
    def drain(self, done: Callable[[], None]) -> None:
        """Stop taking turns; turns in flight end with the process (their jobs are answered
        by the pool-manager's job timeout, or sent again after a restart)."""
        self.state = "draining"

        async def close() -> None:
            self.aloop.remove_reader(self.socket.getsockopt(zmq.FD))
            await self.gateway.close()
            self.aloop.stop()

        asyncio.run_coroutine_threadsafe(close(), self.aloop)
        self.thread.join(THREAD_JOIN_TIMEOUT)
        done()
