"""The web service: the chat page, notes and live dashboard over HTTP and a WebSocket, and
/metrics. An ordinary client of warmwire: each open page has its own DEALER on the router's
frontend, and the dashboard reads the supervisor's status socket; nothing else.

aiohttp serves it (static files from this package, the WebSocket, /metrics) on an asyncio
loop; the supervisor's health probes are answered on the same loop (zmq.asyncio).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import msgspec
import zmq
import zmq.asyncio
from aiohttp import web

from proto import config as config_mod
from proto.frames import Codec, Control, Health, Probe
from proto.service import die_with_parent, setup_logging
from proto.sockets import bind_router, ensure_run_dir

from proto.webaccess import Access, WebConfigError, check_listen
from .feed import StatusFeed
from .metrics import CONTENT_TYPE, render
from .session import Session

log = logging.getLogger("web")
STATIC = Path(__file__).with_name("static")
# The page runs only its own files: no inline script, no other site, no framing.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
GOING_AWAY = 1001


class WebService:
    def __init__(self, config: config_mod.Config, host: str, port: int) -> None:
        self.config = config
        self.host, self.port = host, port
        self.ctx = zmq.asyncio.Context()
        self.access = Access(config)
        self.feed = StatusFeed(config, self.ctx)
        self.pages: set[web.WebSocketResponse] = set()
        self.counts: Counter[str] = Counter()
        self.state = "serving"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stats(self) -> dict:
        return {"url": self.url, "token": self.access.token_required(), "pages": len(self.pages),
                "dashboards": len(self.feed.subscribers), "status_polls": self.feed.polls,
                "timer_wakeups": self.feed.polls, **self.counts}

    # -- HTTP --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=self.config.web.max_upload_bytes)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not self.access.host_ok(request.host):
            self.counts["refused_hosts"] += 1
            return web.Response(status=403, text="this page answers only to the address it serves\n")
        response = await handler(request)
        response.headers.update(HEADERS)
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.access.token_required():
            offered = request.headers.get("Authorization", "")
            if not offered.startswith("Bearer ") or not self.access.token_ok(offered[len("Bearer "):].strip()):
                return web.Response(status=401, text="/metrics wants Authorization: Bearer <token>\n",
                                    headers={"WWW-Authenticate": "Bearer"})
        return web.Response(body=render(await self.feed.snapshot()), headers={"Content-Type": CONTENT_TYPE})

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if not self.access.origin_ok(origin, request.host):
            self.counts["refused_origins"] += 1
            log.warning("refused a WebSocket from origin %r (host %r)", origin, request.host)
            return web.Response(status=403, text="this origin may not open the page's WebSocket\n")
        ws = web.WebSocketResponse(max_msg_size=self.config.web.max_upload_bytes)
        await ws.prepare(request)
        self.pages.add(ws)
        self.counts["pages_opened"] += 1
        try:
            await Session(self.config, self.ctx, ws, self.access, self.feed, self.counts).run()
        finally:
            self.pages.discard(ws)
            await ws.close()
        return ws

    # -- health probes -----------------------------------------------------------------
    async def _answer_probes(self, control: zmq.asyncio.Socket) -> None:
        codec = Codec(Control)
        while True:
            parts = await control.recv_multipart()
            if len(parts) != 2:
                continue
            try:
                frame = codec.decode(parts[1])
            except msgspec.DecodeError:
                continue
            if isinstance(frame, Probe):
                health = Health(seq=frame.seq, name="web", pid=os.getpid(), state=self.state, stats=self.stats())
                try:
                    await control.send_multipart([parts[0], codec.encode(health)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass  # the supervisor went away; it asks again

    async def run(self) -> None:
        control = bind_router(self.ctx, self.config.control_endpoint("web"))
        probes = asyncio.create_task(self._answer_probes(control))
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[str] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda signum=signum: (received.append(signal.Signals(signum).name), stop.set()))
        log.info("started (pid %d, serving %s%s)", os.getpid(), self.url,
                 ", token required" if self.access.token_required() else "")
        await stop.wait()
        log.info("stopping (%s)", received[0])
        self.state = "draining"
        for ws in list(self.pages):
            await ws.close(code=GOING_AWAY, message=b"warmwire is stopping")
        try:
            await asyncio.wait_for(runner.cleanup(), self.config.web.shutdown_timeout)
        except asyncio.TimeoutError:
            log.error("open pages did not close within %g s", self.config.web.shutdown_timeout)
        probes.cancel()
        self.feed.close()
        control.close()


def main() -> None:
    die_with_parent()
    config = config_mod.load()
    setup_logging("web", config.log_dir)
    ensure_run_dir(config.run_dir)
    try:
        host, port = check_listen(config)
        service = WebService(config, host, port)
        asyncio.run(service.run())
    except (WebConfigError, OSError) as exc:
        log.error("failed to start: %s", exc)
        sys.exit(1)
    log.info("stopped")
