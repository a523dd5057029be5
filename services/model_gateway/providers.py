"""The two provider dialects: a provider-neutral turn in, an HTTP request out; a stream of
server-sent events in, text deltas and a finished turn out.

- Anthropic Messages API (``POST {url}/v1/messages``, ``stream: true``): events
  ``message_start`` (input tokens), ``content_block_start`` / ``content_block_delta``
  (``text_delta``, or ``input_json_delta`` for a ``tool_use`` block), ``message_delta``
  (stop reason, output tokens), ``message_stop``, ``ping``, ``error``.
- OpenAI-compatible chat completions (``POST {url}/chat/completions``, ``stream: true`` with
  ``stream_options.include_usage``): ``data:`` chunks whose ``choices[0].delta`` holds
  ``content`` or ``tool_calls`` pieces, a last chunk with ``usage``, then ``data: [DONE]``.

Nothing here does I/O: ``Stream.feed(event, data)`` takes one event and returns the text it
adds, so both dialects are tested without a server, and the gateway owns the HTTP.
"""

from __future__ import annotations

import json
from typing import Any

from proto.frames import ModelMessage, ToolCall, TurnRequest

ANTHROPIC, OPENAI = "anthropic", "openai"
KINDS = (ANTHROPIC, OPENAI)
SSE_DONE = "[DONE]"


class StreamError(Exception):
    """The provider reported an error inside the stream (an ``error`` event). ``retryable``:
    it says it is overloaded or failed on its side, so the turn may be tried again."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# Error types a provider sends inside a stream that mean "try again later".
RETRYABLE_STREAM_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "server_error"}


def request_for(kind: str, url: str, key: str, version: str, model: str, max_tokens: int,
                turn: TurnRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, JSON body) of one streamed model call."""
    if kind == ANTHROPIC:
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": True,
                                "messages": _anthropic_messages(turn.messages)}
        if turn.system:
            body["system"] = turn.system
        if turn.tools:
            body["tools"] = [{"name": t.name, "description": t.description,
                              "input_schema": t.parameters or {"type": "object"}} for t in turn.tools]
        headers = {"anthropic-version": version, "accept": "text/event-stream"}
        if key:
            headers["x-api-key"] = key
        return f"{url}/v1/messages", headers, body
    messages = ([{"role": "system", "content": turn.system}] if turn.system else []) + \
        _openai_messages(turn.messages)
    body = {"model": model, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "messages": messages}
    if turn.tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description,
            "parameters": t.parameters or {"type": "object"}}} for t in turn.tools]
    headers = {"accept": "text/event-stream"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return f"{url}/chat/completions", headers, body


def _anthropic_messages(messages: list[ModelMessage]) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        if m.role == "tool":  # results go back as a user message of tool_result blocks
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.role == "assistant" and m.tool_calls:
            blocks: list[dict] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                       for c in m.tool_calls]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _openai_messages(messages: list[ModelMessage]) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in m.tool_calls]})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _arguments(text: str) -> dict:
    """A tool call's streamed JSON arguments; a model that wrote no valid object gets {}."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class Stream:
    """What one streamed answer has said so far."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason = ""
        self.model = ""
        self.done = False
        self.usage_seen = False
        self.chunks = 0  # events that carried text or a tool call's piece
        # Tool calls being assembled: index -> [id, name, argument text]
        self.calls: dict[int, list[str]] = {}

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(id=c[0], name=c[1], arguments=_arguments(c[2]))
                for _, c in sorted(self.calls.items())]

    def feed(self, event: str, data: str) -> str:
        raise NotImplementedError


class AnthropicStream(Stream):
    def feed(self, event: str, data: str) -> str:
        try:
            obj = json.loads(data)
        except ValueError:
            return ""
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text") or ""
                if text:
                    self.parts.append(text)
                return text
            if delta.get("type") == "input_json_delta" and obj.get("index") in self.calls:
                self.calls[obj["index"]][2] += delta.get("partial_json") or ""
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.calls[obj.get("index", len(self.calls))] = [
                    str(block.get("id", "")), str(block.get("name", "")), ""]
            elif block.get("type") == "text" and block.get("text"):
                self.parts.append(block["text"])
                return block["text"]
        elif kind == "message_start":
            message = obj.get("message") or {}
            self.model = message.get("model") or ""
            self._usage(message.get("usage") or {})
        elif kind == "message_delta":
            self.stop_reason = (obj.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._usage(obj.get("usage") or {})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = obj.get("error") or {}
            kind_ = str(error.get("type", "error"))
            raise StreamError(f"anthropic: {kind_} in the stream", kind_ in RETRYABLE_STREAM_ERRORS)
        return ""

    def _usage(self, usage: dict) -> None:
        # message_start has input tokens; message_delta the cumulative output tokens.
        if isinstance(usage.get("input_tokens"), int) and usage["input_tokens"] > 0:
            self.input_tokens = usage["input_tokens"]
            self.usage_seen = True
        if isinstance(usage.get("output_tokens"), int) and usage["output_tokens"] > 0:
            self.output_tokens = usage["output_tokens"]
            self.usage_seen = True


class OpenAIStream(Stream):
    def feed(self, event: str, data: str) -> str:
        if data.strip() == SSE_DONE:
            self.done = True
            return ""
        try:
            obj = json.loads(data)
        except ValueError:
            return ""
        if "error" in obj and obj["error"]:
            error = obj["error"] if isinstance(obj["error"], dict) else {"type": str(obj["error"])}
            kind = str(error.get("type") or error.get("code") or "error")
            raise StreamError(f"openai: {kind} in the stream", kind in RETRYABLE_STREAM_ERRORS)
        self.model = obj.get("model") or self.model
        usage = obj.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                self.input_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                self.output_tokens = usage["completion_tokens"]
            self.usage_seen = self.input_tokens > 0 or self.output_tokens > 0
        text = ""
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str) and piece:
                self.parts.append(piece)
                text += piece
                self.chunks += 1
            for call in delta.get("tool_calls") or []:
                self.chunks += 1
                index = call.get("index", 0)
                entry = self.calls.setdefault(index, ["", "", ""])
                function = call.get("function") or {}
                entry[0] = call.get("id") or entry[0]
                entry[1] = function.get("name") or entry[1]
                entry[2] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.stop_reason = choice["finish_reason"]
        return text


def new_stream(kind: str) -> Stream:
    return AnthropicStream() if kind == ANTHROPIC else OpenAIStream()


class SseParser:
    """Server-sent events from lines (``event:``/``data:`` fields, a blank line ends one)."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def line(self, line: str) -> tuple[str, str] | None:
        """Feed one line (without its newline); the finished event, if this line ends one."""
        if not line:
            if not self.data:
                self.event = ""
                return None
            done = (self.event, "\n".join(self.data))
            self.event, self.data = "", []
            return done
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        return None

    def flush(self) -> tuple[str, str] | None:
        """The last event, when the stream ended without its blank line."""
        return self.line("") if self.data else None
