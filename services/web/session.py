"""One open page: its WebSocket on one side, its own DEALER on the router's frontend on the
other. The page is an ordinary warmwire client: it sends the documented frames (chat,
history, learn, search) as JSON, and gets every frame the router sends back, as JSON.

Page -> server (JSON):
  {"op": "auth", "token"}                 first, when a token exists
  {"op": "send", "frame": {...}}          a client frame of the wire protocol
  {"op": "learn-file", "id", "name", "text"}   a dropped file: split into notes here
  {"op": "dashboard", "on": bool}         live status pushes, or none
Server -> page: {"op": "hello", "need_token", "history_page", "max_upload_bytes"}, {"op": "ready"}, {"op": "denied"},
  {"op": "frame", "frame"}, {"op": "learn-progress", "id", "name", "done", "failed", "total",
  "error"}, {"op": "status", ...} (see feed.py), {"op": "error", "text"}.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Union

import msgspec
import zmq
import zmq.asyncio
from aiohttp import WSMsgType, web

from proto.config import Config
from proto.curve import client_options
from proto.frames import ClientIn, LearnNote
from proto.notes import split_notes
from proto.sockets import local_connect_endpoint

from proto.webaccess import Access

log = logging.getLogger("web")


class Auth(msgspec.Struct, tag="auth", tag_field="op"):
    token: str


class Send(msgspec.Struct, tag="send", tag_field="op"):
    frame: ClientIn


class LearnFile(msgspec.Struct, tag="learn-file", tag_field="op"):
    id: str
    name: str
    text: str


class Dashboard(msgspec.Struct, tag="dashboard", tag_field="op"):
    on: bool


PageOp = Union[Auth, Send, LearnFile, Dashboard]
PAGE_OPS = msgspec.json.Decoder(PageOp)
JSON = msgspec.json.Encoder()
MSGPACK = msgspec.msgpack.Encoder()


class Session:
    def __init__(self, config: Config, ctx: zmq.asyncio.Context, ws: web.WebSocketResponse,
                 access: Access, feed, counts: dict[str, int]) -> None:
        self.config = config
        self.ws = ws
        self.access = access
        self.feed = feed
        self.counts = counts
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        for option, value in client_options(config).items():
            self.sock.setsockopt(option, value)
        self.sock.connect(local_connect_endpoint(config.router.frontend))
        # Notes of dropped files in flight: note frame id -> (file id, answered future).
        self.file_notes: dict[str, asyncio.Future] = {}
        self.watching = False
        self.sending = asyncio.Lock()

    async def push(self, message: dict[str, Any]) -> None:
        """One JSON message to the page (several tasks push: one at a time)."""
        async with self.sending:
            if not self.ws.closed:
                await self.ws.send_str(JSON.encode(message).decode())

    async def run(self) -> None:
        need_token = self.access.token_required()
        await self.push({"op": "hello", "need_token": need_token, "history_page": self.config.web.history_page,
                         "max_upload_bytes": self.config.web.max_upload_bytes})
        authed = not need_token
        if authed:
            await self.push({"op": "ready"})
        relay = asyncio.create_task(self._relay())
        tasks: set[asyncio.Task] = set()
        try:
            async for message in self.ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    op = PAGE_OPS.decode(message.data)
                except msgspec.DecodeError as exc:
                    await self.push({"op": "error", "text": f"not understood: {exc}"})
                    continue
                if isinstance(op, Auth):
                    if self.access.token_ok(op.token):
                        authed = True
                        await self.push({"op": "ready"})
                    else:
                        log.warning("a page offered a wrong token; closing it")
                        await self.push({"op": "denied"})
                        break
                elif not authed:
                    await self.push({"op": "denied"})
                    break
                elif isinstance(op, Send):
                    self.counts["frames_sent"] += 1
                    await self.sock.send(MSGPACK.encode(op.frame))
                elif isinstance(op, LearnFile):
                    task = asyncio.create_task(self._learn_file(op))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    self._watch(op.on)
        finally:
            self._watch(False)
            relay.cancel()
            for task in tasks:
                task.cancel()
            self.sock.close()

    def _watch(self, on: bool) -> None:
        if on and not self.watching:
            self.feed.subscribe(self)
        elif not on and self.watching:
            self.feed.unsubscribe(self)
        self.watching = on

    async def _relay(self) -> None:
        """Every frame from the router goes to the page, as it came (a map), except the
        answers to a dropped file's notes, which become progress."""
        while True:
            data = await self.sock.recv()
            try:
                frame = msgspec.msgpack.decode(data)
            except msgspec.DecodeError:
                log.error("an unreadable frame from the router's frontend")
                continue
            waiter = self.file_notes.pop(frame.get("id"), None) if isinstance(frame, dict) else None
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(frame)
                continue
            self.counts["frames_received"] += 1
            await self.push({"op": "frame", "frame": frame})

    async def _learn_file(self, upload: LearnFile) -> None:
        """A file's notes, learn.in_flight at a time, with progress after each answer."""
        notes = split_notes(upload.text, self.config.learn.note_chars)
        source = f"web:{upload.name}"
        progress = {"op": "learn-progress", "id": upload.id, "name": upload.name,
                    "done": 0, "failed": 0, "total": len(notes), "error": ""}
        await self.push(progress)
        window = asyncio.Semaphore(self.config.learn.in_flight)
        loop = asyncio.get_running_loop()

        async def learn(part: int, text: str) -> None:
            async with window:
                note_id = f"{upload.id}/{part}"
                answered = self.file_notes[note_id] = loop.create_future()
                await self.sock.send(MSGPACK.encode(LearnNote(
                    id=note_id, text=text, source=source, part=part, parts=len(notes))))
                try:
                    frame = await asyncio.wait_for(answered, self.config.learn.answer_timeout)
                except asyncio.TimeoutError:
                    self.file_notes.pop(note_id, None)
                    frame = {"type": "notice", "text": "no answer in time"}
                if frame.get("type") == "learned":
                    progress["done"] += 1
                else:
                    progress["failed"] += 1
                    progress["error"] = str(frame.get("text", ""))
                await self.push(dict(progress))

        await asyncio.gather(*(learn(part, text) for part, text in enumerate(notes)))
        self.counts["files_learned"] += 1
        log.info("learned %d notes of %d from a dropped file (%d failed)", progress["done"],
                 progress["total"], progress["failed"])
