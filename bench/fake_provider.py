"""A scripted model provider, for the tests and the gateway_overhead bench row: a small real
HTTP server on loopback speaking the real streaming formats of Anthropic's Messages API
(``POST /v1/messages``) and of OpenAI-compatible chat
completions (``POST /chat/completions``, also under ``/v1``), as server-sent events.

Each call takes the next step of its script (``script(...)``), or answers normally:
- ``Status(code, headers)``: that HTTP status (e.g. 429 with ``retry-after``), JSON error body;
- ``Answer(pieces, input_tokens, output_tokens)``: a streamed answer in those pieces;
- ``StreamError(kind)``: the stream starts, then an ``error`` event (Anthropic) / error chunk;
- ``Stall(seconds)``: the stream starts, then nothing comes (a provider that hangs).
It checks the key it is sent (``key``; a wrong one gets 401 with the key echoed in the body,
as some real APIs do) and records every call: headers, body, key, and the monotonic time at
which it wrote the first byte of streamed text (for the gateway-overhead bench).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

DEFAULT_PIECES = ("the model ", "says: ", "fine")
# An Answer with no token counts reports its prompt's and its answer's characters divided by
# this (a rough English average; Thai and code run nearer 1-3 characters a token, so Thai
# prompts are undercounted on both sides of a comparison alike).
CHARS_PER_TOKEN = 4
HOLD_LIMIT_S = 120.0  # a held answer goes on by itself after this, so a failed test cannot hang


@dataclass
class Status:
    code: int
    headers: dict = field(default_factory=dict)


@dataclass
class Answer:
    pieces: tuple = DEFAULT_PIECES
    # None: counted from the request (see CHARS_PER_TOKEN and prompt_chars) and the pieces.
    input_tokens: int | None = 12
    output_tokens: int | None = 5
    tool_call: dict | None = None  # {"id", "name", "arguments": dict}
    usage: bool = True  # False: an OpenAI-compatible stream without usage (llama-cpp-python's)
    # A real model thinks before its first token and between tokens (seconds).
    first_delay: float = 0.0
    piece_delay: float = 0.0
    # Set: the answer waits for it before its first piece (a test holds a job busy so).
    hold: threading.Event | None = None


def _text_of(content) -> str:
    """The text of a message's content: a string, or a list of blocks (text, tool calls and
    results) in either format."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(block.get("text") or block.get("content") or block.get("input") or "")
                       if isinstance(block, dict) else str(block) for block in content)
    return json.dumps(content) if content else ""


def prompt_chars(body: dict) -> int:
    """Characters of what a request asks the model to read: system prompt, every message and
    the tool definitions (providers bill tool definitions as input too)."""
    chars = len(_text_of(body.get("system") or ""))
    for message in body.get("messages", []):
        chars += len(_text_of(message.get("content"))) + len(json.dumps(message.get("tool_calls") or ""))
    return chars + (len(json.dumps(body["tools"])) if body.get("tools") else 0)


def counted(step: "Answer", body: dict) -> "Answer":
    """The step with its token counts filled in from the request and its pieces, where unset."""
    if step.input_tokens is not None and step.output_tokens is not None:
        return step
    output = sum(map(len, step.pieces)) + (len(json.dumps(step.tool_call)) if step.tool_call else 0)
    return replace(step, input_tokens=step.input_tokens if step.input_tokens is not None
                   else -(-prompt_chars(body) // CHARS_PER_TOKEN),
                   output_tokens=step.output_tokens if step.output_tokens is not None
                   else -(-output // CHARS_PER_TOKEN))


@dataclass
class ToolLoop:
    """An agent's tool loop: the tool call again while the request holds fewer than ``rounds``
    tool results, then a short answer. A request whose last message contains ``plain_for``
    gets the short answer at once (the bench's warm-up jobs, which must not count as steps)."""

    tool_call: dict
    rounds: int
    plain_for: str | None = None

    def step_for(self, body: dict) -> Answer:
        last = body.get("messages") or [{}]
        if self.plain_for and self.plain_for in _text_of(last[-1].get("content")):
            return Answer(pieces=("done",))
        results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool" or (
            isinstance(m.get("content"), list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                                       for b in m["content"])))
        if results < self.rounds:
            return Answer(pieces=("",), tool_call={**self.tool_call, "id": f"call_{results + 1}"})
        return Answer(pieces=("done",))


@dataclass
class StreamError:
    kind: str = "overloaded_error"


@dataclass
class Stall:
    """Start the stream, then say nothing (until ``stop()``, or this many seconds)."""

    seconds: float = 60.0


@dataclass
class Call:
    path: str
    headers: dict
    body: dict
    key: str
    first_byte: float | None = None


class FakeProvider(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, key: str = "", refuse_text: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.key = key
        # A request holding this text is refused like a wrong key (401, the key echoed).
        self.refuse_text = refuse_text
        self.on_call: Callable[[Call], None] | None = None  # after each call is answered
        self.release = threading.Event()  # ends every Stall
        self.steps: deque = deque()
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "FakeProvider":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()

    def script(self, *steps) -> None:
        with self.lock:
            self.steps.extend(steps)

    def next_step(self):
        with self.lock:
            return self.steps.popleft() if self.steps else Answer()

    @property
    def answered(self) -> int:
        return sum(1 for call in self.calls if call.first_byte is not None)

    def keys_seen(self) -> set[str]:
        return {call.key for call in self.calls}


class Handler(BaseHTTPRequestHandler):
    server: FakeProvider
    protocol_version = "HTTP/1.0"  # the stream ends when the connection closes

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        anthropic = self.path.rstrip("/").endswith("/messages")
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        key = self.headers.get("x-api-key", "") if anthropic else \
            self.headers.get("authorization", "").removeprefix("Bearer ")
        call = Call(self.path, dict(self.headers), body, key)
        with self.server.lock:
            self.server.calls.append(call)
        refused = self.server.refuse_text is not None and self.server.refuse_text in json.dumps(body)
        if (self.server.key and key != self.server.key) or refused:
            return self._json(401, {"error": {"type": "authentication_error",
                                              "message": f"invalid api key {key}"}})
        step = self.server.next_step()
        if isinstance(step, ToolLoop):
            step = step.step_for(body)
        if isinstance(step, Status):
            return self._json(step.code, {"error": {"type": "rate_limit_error" if step.code == 429 else "api_error",
                                                    "message": "scripted"}}, step.headers)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        if isinstance(step, Stall):
            self.wfile.write(b": opened\n\n")
            self.server.release.wait(step.seconds)
            return
        if isinstance(step, Answer):
            if step.hold is not None:
                step.hold.wait(HOLD_LIMIT_S)
            step = counted(step, body)
        if anthropic:
            self._anthropic(call, body, step)
        else:
            self._openai(call, body, step)
        if self.server.on_call is not None:
            self.server.on_call(call)

    def _json(self, code: int, obj: dict, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _event(self, name: str | None, obj) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj)
        self.wfile.write((f"event: {name}\n" if name else "").encode() + f"data: {data}\n\n".encode())
        self.wfile.flush()

    def _text(self, call: Call, name: str | None, obj) -> None:
        if call.first_byte is None:
            call.first_byte = time.monotonic()
        self._event(name, obj)

    def _anthropic(self, call: Call, body: dict, step) -> None:
        model = body.get("model", "")
        self._event("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": getattr(step, "input_tokens", 1), "output_tokens": 1}}})
        if isinstance(step, StreamError):
            self._event("ping", {"type": "ping"})
            self._event("error", {"type": "error", "error": {"type": step.kind, "message": "scripted"}})
            return
        self._event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})
        self._event("ping", {"type": "ping"})
        for number, piece in enumerate(step.pieces):
            time.sleep(step.first_delay if number == 0 else step.piece_delay)
            self._text(call, "content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": piece}})
        self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
        stop = "end_turn"
        if step.tool_call:
            stop = "tool_use"
            self._event("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": step.tool_call["id"], "name": step.tool_call["name"], "input": {}}})
            arguments = json.dumps(step.tool_call["arguments"])
            for half in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
                self._event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                    "delta": {"type": "input_json_delta", "partial_json": half}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": 1})
        self._event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": step.output_tokens}})
        self._event("message_stop", {"type": "message_stop"})

    def _openai(self, call: Call, body: dict, step) -> None:
        model = body.get("model", "")

        def chunk(delta: dict, finish=None) -> dict:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        self._event(None, chunk({"role": "assistant", "content": ""}))
        if isinstance(step, StreamError):
            self._event(None, {"error": {"type": "server_error", "message": "scripted"}})
            return
        for number, piece in enumerate(step.pieces):
            time.sleep(step.first_delay if number == 0 else step.piece_delay)
            self._text(call, None, chunk({"content": piece}))
        finish = "stop"
        if step.tool_call:
            finish = "tool_calls"
            arguments = json.dumps(step.tool_call["arguments"])
            self._event(None, chunk({"tool_calls": [{"index": 0, "id": step.tool_call["id"], "type": "function",
                                                     "function": {"name": step.tool_call["name"], "arguments": ""}}]}))
            for half in (arguments[:len(arguments) // 2], arguments[len(arguments) // 2:]):
                self._event(None, chunk({"tool_calls": [{"index": 0, "function": {"arguments": half}}]}))
        self._event(None, chunk({}, finish))
        if step.usage and (body.get("stream_options") or {}).get("include_usage"):
            self._event(None, {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                               "model": model, "choices": [],
                               "usage": {"prompt_tokens": step.input_tokens, "completion_tokens": step.output_tokens,
                                         "total_tokens": step.input_tokens + step.output_tokens}})
        self._event(None, "[DONE]")


def serve_in_process(key: str, connection, answer: Answer | ToolLoop | None = None,
                     first_bytes: bool = True) -> None:
    """Run a provider in a process of its own (the bench: its threads must not share a GIL
    with what is measured). Sends its URL, then (``first_bytes``) each call's first-byte time,
    on connection: the reader must take them all, or the pipe fills and every call stalls.
    answer: how every call is answered."""
    provider = FakeProvider(key)
    if answer is not None:
        provider.next_step = lambda: answer
    lock = threading.Lock()

    def report(call: Call) -> None:
        with lock:
            connection.send(call.first_byte)

    provider.on_call = report if first_bytes else None
    connection.send(provider.url)
    provider.serve_forever(poll_interval=0.05)
