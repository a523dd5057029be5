"""What the runner does with one job: ask the model gateway for model turns, else answer as
the offline agent.

stdlib only (it ships in the agent image). The agent never talks to a provider and never
holds a key or needs a network: each model turn is a signed `model` file to the host, which
the pool-manager hands to the model gateway, and a signed `turn` file back (the runner's
``ask``).

Job payload fields used here:
    text       the user's message
    context    knowledge passages: list of str or {"title", "text", "source"}
    history    optional earlier turns: [{"role": "user"|"assistant", "content": str}]
    model      present when a provider is configured: {"tier", "max_steps", and for tools:
               "tools" (names), "workspace" (the folder they work in), "workspace_mb",
               "run_timeout_s"}
"""

from __future__ import annotations

import os
import re
import time

import tools

OFFLINE_AGENT = "offline"
WEB_INTENT = "web"         # the router's intent for "search the web / look it up online"
MAX_PASSAGES = 3           # offline answer: how many knowledge passages to quote
MAX_SNIPPET_CHARS = 400
MAX_SYSTEM_CONTEXT_CHARS = 24_000
# The bounded record of a turn's tool calls kept with its reply (and shown in later history).
MAX_TOOL_LOG_LINES = 20
MAX_TOOL_LOG_LINE = 200

THAI_RE = re.compile(r"[\u0E00-\u0E7F]")
THAI_RUN_RE = re.compile(r"[\u0E00-\u0E7F]+")
WORD_RE = re.compile(r"[^\W_]{3,}")
SENTENCE_RE = re.compile(r"(?<=[.!?。])\s+|\n+|\s{2,}")


# ------------------------------------------------------------------ offline agent


def _features(text: str) -> set[str]:
    """Words for spaced scripts; character bigrams for Thai, which has no spaces."""
    text = text.lower()
    feats = {w for w in WORD_RE.findall(THAI_RUN_RE.sub(" ", text))}
    for run in THAI_RUN_RE.findall(text):
        feats.update(run[i:i + 2] for i in range(len(run) - 1))
    return feats


def _passages(context) -> list[tuple[str, str]]:
    """Normalise the job's context into (title, text) pairs."""
    if isinstance(context, str):
        context = [context]
    out = []
    for item in context if isinstance(context, list) else []:
        if isinstance(item, str):
            out.append(("", item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append((str(item.get("title") or item.get("source") or ""), item["text"]))
    return out


def _best_snippet(text: str, query: set[str]) -> str:
    sentences = [s.strip() for s in SENTENCE_RE.split(text) if s.strip()] or [text]
    ranked = sorted(sentences, key=lambda s: len(_features(s) & query), reverse=True)
    snippet = " ".join(ranked[:2])
    return snippet if len(snippet) <= MAX_SNIPPET_CHARS else snippet[:MAX_SNIPPET_CHARS] + "…"


def offline_answer(text: str, context, failure: str = "", intent: str = "") -> str:
    """Answer from the knowledge passages only, and say so: nothing here is model-written.
    failure: why a configured provider did not answer (empty: none is configured).
    intent "web": the user asked for the internet, which the agent cannot reach."""
    thai = bool(THAI_RE.search(text))
    query = _features(text)
    passages = _passages(context)
    scored = [(len(_features(t) & query), i, title, t) for i, (title, t) in enumerate(passages)]
    hits = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))[:MAX_PASSAGES]
    # No passage shares a word with the question, yet the search returned them: it found them
    # by meaning (another language, other words). Its best one is the answer to offer.
    by_meaning = not hits and bool(passages)
    if by_meaning:
        hits = [(0, 0, *passages[0])]
    if failure:
        head = (f"เอเจนต์ออฟไลน์: ผู้ให้บริการโมเดลขัดข้อง ({failure}) จึงไม่มีโมเดลเขียนคำตอบนี้"
                if thai else f"This is the offline agent: the model provider failed ({failure}), "
                "so no model wrote this.")
    elif thai:
        head = "เอเจนต์ออฟไลน์ (ยังไม่ได้ตั้งค่าผู้ให้บริการโมเดล จึงไม่มีโมเดลเขียนคำตอบนี้)"
    else:
        head = ("This is the offline agent: no model provider is configured, "
                "so no model wrote this.")
    lines = [head]
    if intent == WEB_INTENT:
        lines.append("ค้นเว็บให้ไม่ได้: เอเจนต์นี้ไม่มีเครื่องมือเข้าอินเทอร์เน็ต" if thai else
                     "I cannot browse the web: this agent has no tool that reaches the internet.")
    if hits:
        if by_meaning:
            lines.append("ข้อมูลที่ใกล้เคียงที่สุดในคลังความรู้ของคุณ:" if thai
                         else "The closest note in your knowledge base:")
        else:
            lines.append("จากคลังความรู้ของคุณ:" if thai else "From your knowledge base:")
        for _, _, title, body in hits:
            snippet = _best_snippet(body, query)
            lines.append(f"- {title}: {snippet}" if title else f"- {snippet}")
    else:
        lines.append("ไม่พบข้อมูลที่เกี่ยวข้องในคลังความรู้ของคุณ" if thai
                     else "I found nothing about this in your knowledge base.")
    return "\n".join(lines)


# ------------------------------------------------------------------ model turns


def _system_prompt(context, with_tools: bool = False) -> str:
    parts = ["You are warmwire, a personal assistant. Answer briefly and plainly. "
             "Use the user's knowledge passages below when they are relevant. "
             "You cannot browse the web or reach the internet: when asked to, say so plainly."]
    if with_tools:
        parts.append("Your tools work in this chat's own workspace, a folder that keeps its files "
                     "between messages. Paths are relative to it. Commands have no network.")
    for title, body in _passages(context):
        parts.append(f"[{title}] {body}" if title else body)
    return "\n\n".join(parts)[:MAX_SYSTEM_CONTEXT_CHARS]


def _messages(text: str, history) -> list[dict]:
    turns = [h for h in history if isinstance(h, dict)
             and h.get("role") in ("user", "assistant") and isinstance(h.get("content"), str)]
    messages = []
    for h in turns:
        content = h["content"]
        # What an earlier turn did with its tools, in the bounded form the host kept: so that
        # "now run the tests again" knows which tests, and where.
        if h["role"] == "assistant" and isinstance(h.get("tools"), str) and h["tools"]:
            content += f"\n\n[tools used in that turn]\n{h['tools']}"
        messages.append({"role": h["role"], "content": content})
    messages.append({"role": "user", "content": text})
    return messages


def _workspace(model: dict):
    """The job's workspace and the tools it may use there (none: a model turn without tools)."""
    names = model.get("tools")
    root = model.get("workspace")
    if not isinstance(names, list) or not names or not isinstance(root, str) or not os.path.isdir(root):
        return None
    cap_mb = model.get("workspace_mb") if type(model.get("workspace_mb")) is int else 0
    timeout = model.get("run_timeout_s")
    return tools.Workspace(root, cap_mb * tools.MB, tuple(n for n in names if n in tools.SPECS),
                           float(timeout) if isinstance(timeout, (int, float)) and timeout > 0
                           else tools.DEFAULT_RUN_TIMEOUT_S)


class ToolLog:
    """What the turn's tools did, bounded: sent back with the result, kept with the reply,
    and shown to the model in later turns' history."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, name: str, args: dict, result: "tools.Result") -> None:
        if len(self.lines) >= MAX_TOOL_LOG_LINES:
            return
        what = args.get("command") if name == tools.RUN else args.get("path", ".")
        outcome = " ".join(result.text.split())
        line = f"{name}({what}) -> {'ok' if result.ok else 'failed'}: {outcome}"
        self.lines.append(line if len(line) <= MAX_TOOL_LOG_LINE else line[:MAX_TOOL_LOG_LINE] + "…")

    def result(self) -> dict:
        """The result's "tools" field, when any tool ran."""
        return {"tools": "\n".join(self.lines)} if self.lines else {}


def model_answer(text: str, context, history, model: dict, ask, say=None, intent: str = "") -> dict:
    """The agent's loop: a model turn through the gateway (``ask``), the tools it calls run
    here in the chat's workspace, their results back to the model, until a turn calls no
    tool or the step limit is reached. ``say(stage)``: a progress notice for the user."""
    say = say or (lambda stage: None)
    messages = _messages(text, history)
    max_steps = model.get("max_steps") if type(model.get("max_steps")) is int else 1
    workspace = _workspace(model)
    offered = tools.specs(workspace.allowed) if workspace else []
    usage = {"input_tokens": 0, "output_tokens": 0}
    log = ToolLog()
    turn: dict = {}
    told_full = False
    tool_ms = 0.0  # spent running the last turn's tool calls: the host's timing leaves it out
    for step in range(1, max(1, max_steps) + 1):
        request = {"step": step, "system": _system_prompt(context, bool(offered)), "messages": messages,
                   "tool_ms": round(tool_ms, 3)}
        if offered:
            request["tools"] = offered
        turn = ask(request)
        for name in usage:
            value = (turn.get("usage") or {}).get(name)
            usage[name] += value if type(value) is int and value > 0 else 0
        calls = turn.get("tool_calls") if isinstance(turn.get("tool_calls"), list) else []
        if turn.get("error") or not calls:
            break
        messages.append({"role": "assistant", "content": str(turn.get("text", "")), "tool_calls": calls})
        started = time.perf_counter()
        for call in calls:
            call = call if isinstance(call, dict) else {}
            name, args = str(call.get("name", "")), call.get("arguments")
            args = args if isinstance(args, dict) else {}
            if workspace is None:
                result = tools.Result(False, "no tools are available")
            else:
                say(workspace.describe(name, args))
                result = workspace.call(name, args)
                if result.full and not told_full:
                    told_full = True
                    say(workspace.full_message())
            log.add(name, args, result)
            messages.append({"role": "tool", "tool_call_id": str(call.get("id", "")), "content": result.text})
        tool_ms = (time.perf_counter() - started) * 1000
    else:
        turn = {**turn, "text": f"{turn.get('text', '')}\n\n(I stopped here: this job reached its limit of "
                                f"{max_steps} model turns.)".strip()}
    if turn.get("error_kind") == "budget":
        return {"text": "", "refused": "budget", "notice": str(turn.get("error", "")),
                "retry_after": turn.get("retry_after"), "agent": "gateway", "offline": True}
    if turn.get("error"):
        failure = str(turn["error"])
        # Say what failed, then answer offline: never pass offline text off as a model's.
        return {"text": offline_answer(text, context, failure=failure, intent=intent), "agent": OFFLINE_AGENT,
                "offline": True, "provider_error": failure, **log.result()}
    return {"text": str(turn.get("text", "")), "agent": f"{turn.get('provider')}:{turn.get('model')}",
            "offline": False, "usage": usage, **log.result()}


def answer(payload: dict, env, ask=None, say=None) -> dict:
    """The `result` payload for one job. ``ask(request) -> turn``: one model turn through the
    gateway; used when the job's ``model`` says a provider is configured. ``say(stage)``: a
    progress notice."""
    text = payload.get("text") if isinstance(payload.get("text"), str) else ""
    intent = payload.get("intent") if isinstance(payload.get("intent"), str) else ""
    context = payload.get("context") or []
    history = payload.get("history") if isinstance(payload.get("history"), list) else []
    model = payload.get("model")
    if isinstance(model, dict) and ask is not None:
        return model_answer(text, context, history, model, ask, say, intent)
    return {"text": offline_answer(text, context, intent=intent), "agent": OFFLINE_AGENT, "offline": True}
