"""The dashboard's live status: the supervisor's status socket, asked once per
``web.status_interval`` while a dashboard is open (and when /metrics is read), pushed to
every open dashboard. Nobody watching: no timer, no request.

Each push is ``{"op": "status", "ok", "at", "status", "events"}``: the supervisor's status as
``./run.sh status --json`` gives it, each service with a ``shown`` state, and the last state
changes seen. A service that restarted between two looks is shown ``restarting`` in the
first push after it (the restart count says it happened, even when the whole restart took
less than one interval), then in the state it is in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from proto.config import Config
from proto.frames import Codec, Control, StatusRequest

log = logging.getLogger("web")
CAME_BACK = ("starting", "healthy", "degraded")


class StatusFeed:
    def __init__(self, config: Config, ctx: zmq.asyncio.Context) -> None:
        self.config = config
        self.ctx = ctx
        self.codec = Codec(Control)
        self.endpoint = config.endpoint("supervisor")
        self.subscribers: set[Any] = set()
        self.latest: dict[str, Any] | None = None
        self.latest_at = float("-inf")
        self.seen: dict[str, tuple[int, str]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=config.web.events_kept)
        self.task: asyncio.Task | None = None
        self.asking = asyncio.Lock()
        self.sock: zmq.asyncio.Socket | None = None
        self.polls = 0
        self.silent = False

    def subscribe(self, session: Any) -> None:
        self.subscribers.add(session)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())

    def unsubscribe(self, session: Any) -> None:
        self.subscribers.discard(session)

    async def _run(self) -> None:
        while self.subscribers:
            snapshot = await self.snapshot()
            for session in list(self.subscribers):
                try:
                    await session.push(snapshot)
                except (ConnectionError, RuntimeError):
                    self.subscribers.discard(session)
            await asyncio.sleep(self.config.web.status_interval)

    async def snapshot(self) -> dict[str, Any]:
        """The latest status, asked again when it is older than one interval."""
        async with self.asking:
            if time.monotonic() - self.latest_at >= self.config.web.status_interval:
                self.latest = self._shape(await self._ask())
                self.latest_at = time.monotonic()
            assert self.latest is not None
            return self.latest

    async def _ask(self) -> dict[str, Any] | None:
        self.polls += 1
        if self.sock is None:
            self.sock = self.ctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(self.endpoint)
        await self.sock.send(self.codec.encode(StatusRequest()))
        if await self.sock.poll(int(self.config.client.timeout * 1000), zmq.POLLIN):
            status = msgspec.to_builtins(self.codec.decode(await self.sock.recv()))
            if self.silent:
                log.info("the supervisor answers status requests again")
                self.silent = False
            return status
        # A late answer must not be taken for the next one: a fresh socket next time.
        self.sock.close()
        self.sock = None
        if not self.silent:
            log.error("the supervisor did not answer a status request within %g s", self.config.client.timeout)
            self.silent = True
        return None

    def _shape(self, status: dict[str, Any] | None) -> dict[str, Any]:
        now = time.time()
        if status is None:
            return {"op": "status", "ok": False, "at": now, "status": None, "events": list(self.events),
                    "error": "warmwire's supervisor is not answering"}
        status.pop("type", None)
        for service in status["services"]:
            name, state, restarts = service["name"], service["state"], service["restarts"]
            before = self.seen.get(name)
            service["shown"] = state
            if before is not None and restarts > before[0]:
                self.events.append({"at": now, "service": name, "text": f"restarted (restart {restarts})"})
                if state in CAME_BACK:
                    service["shown"] = "restarting"
            if before is not None and state != before[1]:
                self.events.append({"at": now, "service": name, "text": f"{before[1]} -> {state}"})
            self.seen[name] = (restarts, state)
        status["healthy"] = all(service["state"] == "healthy" for service in status["services"])
        return {"op": "status", "ok": True, "at": now, "status": status, "events": list(self.events)}

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()
