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
    model      present when a provider is configured: {"tier", "max_steps"}
"""

from __future__ import annotations

import re

OFFLINE_AGENT = "offline"
WEB_INTENT = "web"         # the router's intent for "search the web / look it up online"
MAX_PASSAGES = 3           # offline answer: how many knowledge passages to quote
MAX_SNIPPET_CHARS = 400
MAX_SYSTEM_CONTEXT_CHARS = 24_000

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


def _system_prompt(context) -> str:
    parts = ["You are warmwire, a personal assistant. Answer briefly and plainly. "
             "Use the user's knowledge passages below when they are relevant. "
             "You cannot browse the web or reach the internet: when asked to, say so plainly."]
    for title, body in _passages(context):
        parts.append(f"[{title}] {body}" if title else body)
    return "\n\n".join(parts)[:MAX_SYSTEM_CONTEXT_CHARS]


def _messages(text: str, history) -> list[dict]:
    turns = [h for h in history if isinstance(h, dict)
             and h.get("role") in ("user", "assistant") and isinstance(h.get("content"), str)]
    messages = [{"role": h["role"], "content": h["content"]} for h in turns]
    messages.append({"role": "user", "content": text})
    return messages


def model_answer(text: str, context, history, model: dict, ask, intent: str = "") -> dict:
    """Ask the model gateway (through ``ask``, the runner's IPC round trip) for turns until
    one has no tool call, within the step limit. No tools run yet, so that is one turn."""
    messages = _messages(text, history)
    max_steps = model.get("max_steps") if type(model.get("max_steps")) is int else 1
    usage = {"input_tokens": 0, "output_tokens": 0}
    turn: dict = {}
    for step in range(1, max(1, max_steps) + 1):
        turn = ask({"step": step, "system": _system_prompt(context), "messages": messages})
        for name in usage:
            value = (turn.get("usage") or {}).get(name)
            usage[name] += value if type(value) is int and value > 0 else 0
        if turn.get("error") or not turn.get("tool_calls"):
            break
        # A tool call with no tools offered: say so to the model and let it answer.
        messages.append({"role": "assistant", "content": turn.get("text", ""),
                         "tool_calls": turn["tool_calls"]})
        for call in turn["tool_calls"]:
            messages.append({"role": "tool", "tool_call_id": str(call.get("id", "")),
                             "content": "no tools are available"})
    if turn.get("error_kind") == "budget":
        return {"text": "", "refused": "budget", "notice": str(turn.get("error", "")),
                "retry_after": turn.get("retry_after"), "agent": "gateway", "offline": True}
    if turn.get("error"):
        failure = str(turn["error"])
        # Say what failed, then answer offline: never pass offline text off as a model's.
        return {"text": offline_answer(text, context, failure=failure, intent=intent), "agent": OFFLINE_AGENT,
                "offline": True, "provider_error": failure}
    return {"text": str(turn.get("text", "")), "agent": f"{turn.get('provider')}:{turn.get('model')}",
            "offline": False, "usage": usage}


def answer(payload: dict, env, ask=None) -> dict:
    """The `result` payload for one job. ``ask(request) -> turn``: one model turn through the
    gateway; used when the job's ``model`` says a provider is configured."""
    text = payload.get("text") if isinstance(payload.get("text"), str) else ""
    intent = payload.get("intent") if isinstance(payload.get("intent"), str) else ""
    context = payload.get("context") or []
    history = payload.get("history") if isinstance(payload.get("history"), list) else []
    model = payload.get("model")
    if isinstance(model, dict) and ask is not None:
        return model_answer(text, context, history, model, ask, intent)
    return {"text": offline_answer(text, context, intent=intent), "agent": OFFLINE_AGENT, "offline": True}
