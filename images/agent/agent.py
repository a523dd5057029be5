"""What the runner does with one job: ask a configured model provider, else the offline agent.

stdlib only (it ships in the agent image). urllib is imported lazily: it pulls in ssl, http
and email, which would add to every container's cold start for nothing when no provider is
configured.

Job payload fields used here:
    text       the user's message
    context    knowledge passages: list of str or {"title", "text", "source"}
    history    optional earlier turns: [{"role": "user"|"assistant", "content": str}]
    provider   optional {"kind": "anthropic"|"openai", "model", "base_url", "max_tokens",
               "timeout_s"}: overrides the env settings below, but never carries a key

Provider settings from the environment (keys are read from a file or env, never from a job,
so they are not written into IPC files or the database):
    WARMWIRE_PROVIDER            anthropic | openai (OpenAI-compatible: llama.cpp, vLLM, ...)
    WARMWIRE_MODEL, WARMWIRE_PROVIDER_URL, WARMWIRE_MAX_TOKENS
    WARMWIRE_PROVIDER_KEY_FILE   file holding the API key (preferred: mount it read-only)
    ANTHROPIC_API_KEY / OPENAI_API_KEY   fallback
"""

from __future__ import annotations

import json
import re

OFFLINE_AGENT = "offline"
WEB_INTENT = "web"         # the router's intent for "search the web / look it up online"
PROVIDER_KINDS = ("anthropic", "openai")
DEFAULT_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
DEFAULT_MODELS = {"anthropic": "claude-3-5-haiku-latest", "openai": "gpt-4o-mini"}
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_S = 60.0
MAX_PASSAGES = 3           # offline answer: how many knowledge passages to quote
MAX_SNIPPET_CHARS = 400
MAX_SYSTEM_CONTEXT_CHARS = 24_000

THAI_RE = re.compile(r"[\u0E00-\u0E7F]")
THAI_RUN_RE = re.compile(r"[\u0E00-\u0E7F]+")
WORD_RE = re.compile(r"[^\W_]{3,}")
SENTENCE_RE = re.compile(r"(?<=[.!?。])\s+|\n+|\s{2,}")


class ProviderError(Exception):
    """A configured provider could not answer (message never includes the key)."""


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


# ------------------------------------------------------------------ providers


def provider_config(job_provider, env) -> dict | None:
    """Merge env settings with the job's override; None when no provider is configured."""
    job_provider = job_provider if isinstance(job_provider, dict) else {}
    kind = job_provider.get("kind") or env.get("WARMWIRE_PROVIDER", "")
    if kind not in PROVIDER_KINDS:
        return None
    key = ""
    key_file = env.get("WARMWIRE_PROVIDER_KEY_FILE")
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError:
            raise ProviderError(f"{kind}: cannot read the provider key file") from None
    key = key or env.get(KEY_ENV[kind], "")
    if kind == "anthropic" and not key:
        return None  # the Messages API always needs a key; a local OpenAI server may not
    return {
        "kind": kind,
        "key": key,
        "model": job_provider.get("model") or env.get("WARMWIRE_MODEL") or DEFAULT_MODELS[kind],
        "url": (job_provider.get("base_url") or env.get("WARMWIRE_PROVIDER_URL")
                or DEFAULT_URLS[kind]).rstrip("/"),
        "max_tokens": int(job_provider.get("max_tokens")
                          or env.get("WARMWIRE_MAX_TOKENS") or DEFAULT_MAX_TOKENS),
        "timeout": float(job_provider.get("timeout_s") or DEFAULT_TIMEOUT_S),
    }


def _system_prompt(context) -> str:
    parts = ["You are warmwire, a personal assistant. Answer briefly and plainly. "
             "Use the user's knowledge passages below when they are relevant. "
             "You cannot browse the web or reach the internet: when asked to, say so plainly."]
    for title, body in _passages(context):
        parts.append(f"[{title}] {body}" if title else body)
    return "\n\n".join(parts)[:MAX_SYSTEM_CONTEXT_CHARS]


def _post(url: str, headers: dict, body: dict, timeout: float, kind: str) -> dict:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST",
                                 headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        raise ProviderError(f"{kind}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        raise ProviderError(f"{kind}: unreachable ({reason})") from None


def call_provider(cfg: dict, text: str, context, history) -> tuple[str, dict]:
    turns = [h for h in history if isinstance(h, dict)
             and h.get("role") in ("user", "assistant") and isinstance(h.get("content"), str)]
    messages = [{"role": h["role"], "content": h["content"]} for h in turns]
    messages.append({"role": "user", "content": text})
    system = _system_prompt(context)
    if cfg["kind"] == "anthropic":
        data = _post(f"{cfg['url']}/v1/messages",
                     {"x-api-key": cfg["key"], "anthropic-version": ANTHROPIC_VERSION},
                     {"model": cfg["model"], "max_tokens": cfg["max_tokens"], "system": system,
                      "messages": messages}, cfg["timeout"], "anthropic")
        try:
            answer = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        except (KeyError, TypeError, AttributeError):
            raise ProviderError("anthropic: unexpected response shape") from None
        return answer, data.get("usage") or {}
    headers = {"authorization": f"Bearer {cfg['key']}"} if cfg["key"] else {}
    data = _post(f"{cfg['url']}/chat/completions", headers,
                 {"model": cfg["model"], "max_tokens": cfg["max_tokens"],
                  "messages": [{"role": "system", "content": system}] + messages},
                 cfg["timeout"], "openai")
    try:
        answer = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ProviderError("openai: unexpected response shape") from None
    return answer, data.get("usage") or {}


def answer(payload: dict, env) -> dict:
    """The `result` payload for one job."""
    text = payload.get("text") if isinstance(payload.get("text"), str) else ""
    intent = payload.get("intent") if isinstance(payload.get("intent"), str) else ""
    context = payload.get("context") or []
    history = payload.get("history") if isinstance(payload.get("history"), list) else []
    try:
        cfg = provider_config(payload.get("provider"), env)
        if cfg is not None:
            reply, usage = call_provider(cfg, text, context, history)
            return {"text": reply, "agent": f"{cfg['kind']}:{cfg['model']}", "offline": False,
                    "usage": usage}
    except ProviderError as e:
        # Say what failed, then answer offline: never pass offline text off as a model's.
        return {"text": offline_answer(text, context, failure=str(e), intent=intent),
                "agent": OFFLINE_AGENT, "offline": True, "provider_error": str(e)}
    return {"text": offline_answer(text, context, intent=intent), "agent": OFFLINE_AGENT, "offline": True}
