"""Row routing_cost: a message trace replayed through the live router; what share skips the
container, how accurately, and what a query costs on both sides.

warmwire: a second warmwire whose model gateway talks to the scripted provider
(``bench/fake_provider.py``), which reports as input tokens the characters of the prompt it
really receives (system prompt with the knowledge passages, the chat's history, the message,
the tools offered) / CHARS_PER_TOKEN, and as output tokens those of its scripted answer. The
gateway records that usage per job in the ``usage`` table, priced by ``[prices]``: its sum is
warmwire's cost. The trace (``bench/trace.py``) is sent chat by chat, each message after the
previous one's answer, a few chats at once; the tier of each reply is compared to its label.

Baseline, from the same run: the old design sent every message to the large model in a
container with the chat's history and passages. Each message's prompt is built by the agent's
own code (``images/agent/agent.py``: system prompt with passages, history, message, the full
tier's tools) from the history warmwire stored for it (``proto.db.recent_turns``, as the
router reads it) and the passages the search-cache returns for it (the router's request),
counted the same way and priced with the full model. Routing cannot be forced to
container-full without changing the router, so this is the "same prompts priced with the
full model" side; the check ``baseline_vs_measured`` compares the rebuilt prompt with the
measured one for messages warmwire did send to container-full.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
import uuid
from collections import Counter

import zmq

from proto.db import recent_turns
from proto.frames import Chat, ClientOut, Codec, KnowledgeIn, KnowledgeOut, Notice, Reply, SearchRequest
from proto.sockets import connect_dealer

from . import trace
from .fake_provider import CHARS_PER_TOKEN, Answer, prompt_chars
from .gateway import provider_system
from .search import generate_notes, load_notes, wait_until_indexed
from .stats import Row

sys.path.insert(0, str(trace.REPO / "images" / "agent"))  # a tool folder, not a package
import agent as agent_code  # noqa: E402  (the agent's prompt builder)
import tools as agent_tools  # noqa: E402

MESSAGES = {True: 300, False: 2000}
CHATS_AT_ONCE = 4
NOTES = 300               # the knowledge base the passages come from (generated notes)
SEED = 7
SKIP_TARGET = 0.70
ACCURACY_TARGET = 0.95
PER_MILLION = 1_000_000
ANSWER_TIMEOUT_S = 120.0
USAGE_DEADLINE_S = 30.0
POLL_S = 0.2
# The scripted answer (the same on both sides): about 90 words.
ANSWER_TEXT = ("Here is what I found. " * 4 + "The short version: it depends on your setup, "
               "but the usual fix is to check the configuration, restart the service and try "
               "again; if it still fails, the log says why. ") * 2
ANSWER = Answer(pieces=tuple(ANSWER_TEXT.split(" ")), input_tokens=None, output_tokens=None)
PENDING = ("queued", "progress", "delta")


def _replay(system, chats: list[list[trace.Message]], show) -> dict[str, tuple[trace.Message, str]]:
    """Send every chat's messages in order, CHATS_AT_ONCE chats at a time; message id ->
    (message, tier that answered it or 'failed')."""
    codec = Codec(ClientOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.router.frontend)
    total = sum(map(len, chats))
    waiting = list(reversed(chats))
    active: dict[str, tuple[list[trace.Message], int]] = {}  # message id in flight -> (chat, index)
    outcome: dict[str, tuple[trace.Message, str]] = {}

    def send(messages: list[trace.Message], index: int) -> None:
        message_id = uuid.uuid4().hex
        message = messages[index]
        active[message_id] = (messages, index)
        sock.send(codec.encode(Chat(id=message_id, chat=message.chat, sender="bench", text=message.text)))

    try:
        while waiting and len(active) < CHATS_AT_ONCE:
            send(waiting.pop(), 0)
        while active:
            if not sock.poll(ANSWER_TIMEOUT_S * 1000):
                raise RuntimeError(f"routing replay: no answer within {ANSWER_TIMEOUT_S:g} s")
            frame = codec.decode(sock.recv())
            if frame.id not in active or (isinstance(frame, Notice) and frame.kind in PENDING):
                continue
            messages, index = active.pop(frame.id)
            outcome[frame.id] = (messages[index], frame.tier if isinstance(frame, Reply) else "failed")
            show(len(outcome) - 1, total)
            if index + 1 < len(messages):
                send(messages, index + 1)
            elif waiting:
                send(waiting.pop(), 0)
    finally:
        sock.close()
    return outcome


def _usage(system, expected: int) -> dict[str, tuple[str, int, int, float]]:
    """job id -> (model, input tokens, output tokens, USD), once every job's row is in."""
    deadline = time.monotonic() + USAGE_DEADLINE_S
    while True:
        with sqlite3.connect(f"file:{system.config.database}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT job_id, model, input_tokens, output_tokens, cost_usd FROM usage").fetchall()
        if len(rows) >= expected or time.monotonic() > deadline:
            return {row[0]: row[1:] for row in rows}
        time.sleep(POLL_S)


def _passages(system, texts: list[str]) -> dict[str, list[dict]]:
    """The passages the router would ask for, per text (its request: hybrid, context_passages)."""
    requests, answers = Codec(KnowledgeIn), Codec(KnowledgeOut)
    sock = connect_dealer(zmq.Context.instance(), system.config.endpoint("search"))
    found = {}
    try:
        for text in set(texts):
            sock.send(requests.encode(SearchRequest(req=uuid.uuid4().hex, query=text,
                                                    limit=system.config.jobs.context_passages)))
            if not sock.poll(ANSWER_TIMEOUT_S * 1000):
                raise RuntimeError("routing baseline: no answer from the search-cache")
            answer = answers.decode(sock.recv())
            found[text] = [{"text": hit.text, "source": hit.source} for hit in answer.hits]
    finally:
        sock.close()
    return found


def _baseline_tokens(system, outcome: dict) -> dict[str, int]:
    """message id -> input tokens of the prompt the old design's large model got for it."""
    config = system.config
    passages = _passages(system, [message.text for message, _ in outcome.values()])
    offered = agent_tools.specs(config.agents.full_tools)
    tokens = {}
    with sqlite3.connect(f"file:{config.database}?mode=ro", uri=True) as conn:
        for message_id, (message, _) in outcome.items():
            history = [{"role": role, "content": text, "tools": tools}
                       for role, text, tools in recent_turns(conn, message.chat, message_id, config.jobs.history_turns)]
            body = {"system": agent_code._system_prompt(passages[message.text], with_tools=True),
                    "messages": agent_code._messages(message.text, history), "tools": offered}
            tokens[message_id] = -(-prompt_chars(body) // CHARS_PER_TOKEN)
    return tokens


def _price(config, model: str, tokens_in: int, tokens_out: int) -> float:
    price = config.prices[model]
    return (tokens_in * price.input + tokens_out * price.output) / PER_MILLION


def run(system, quick: bool, progress) -> Row:
    count = MESSAGES[quick]
    chats = trace.build(count, SEED)
    backend = system.config.pool.backend if system else "auto"
    with provider_system(ANSWER, backend, first_bytes=False) as (_, replay_system):
        notes = generate_notes(NOTES, random.Random(SEED))
        load_notes(replay_system.config.endpoint("search"), notes, lambda d, t: progress("routing: notes", d, t))
        wait_until_indexed(replay_system)
        started = time.monotonic()
        outcome = _replay(replay_system, chats, lambda d, t: progress("routing: replay through the router", d, t))
        seconds = time.monotonic() - started
        routed = Counter(tier for _, tier in outcome.values())
        usage = _usage(replay_system, routed["container-light"] + routed["container-full"])
        progress("routing: baseline prompts", 0, 1)
        baseline_in = _baseline_tokens(replay_system, outcome)
        config = replay_system.config
    output_tokens = -(-len(ANSWER_TEXT) // CHARS_PER_TOKEN)
    cost = sum(row[3] for row in usage.values())
    baseline = sum(_price(config, config.agents.full_model, tokens, output_tokens) for tokens in baseline_in.values())
    full_jobs = [job for job, row in usage.items() if row[0] == config.agents.full_model and job in baseline_in]
    fidelity = (sum(baseline_in[j] for j in full_jobs) / sum(usage[j][1] for j in full_jobs)) if full_jobs else float("nan")
    messages = len(outcome)
    skipped = (routed["inline"] + routed["oracle-only"]) / messages
    could_skip = sum(m.tier not in trace.AGENT_TIERS for m, _ in outcome.values()) / messages
    correct = Counter(m.source for m, tier in outcome.values() if tier == m.tier)
    by_source = Counter(m.source for m, _ in outcome.values())
    accuracy = sum(correct.values()) / messages
    per_query, base_per_query = cost / messages, baseline / messages
    tokens_in = [row[1] for row in usage.values()]
    return Row(
        name="routing_cost", unit="USD/query", p50=per_query, p99=None, baseline_p50=base_per_query,
        baseline_p99=None, ratio=base_per_query / per_query if per_query else float("inf"),
        target=f">= {SKIP_TARGET:.0%} skip the container at >= {ACCURACY_TARGET:.0%} accuracy",
        met=skipped >= SKIP_TARGET and accuracy >= ACCURACY_TARGET, samples=messages, baseline_samples=messages,
        note=(f"{messages} messages replayed through the live router in {seconds:.0f} s ({trace.describe()}); "
              f"skipped the container {skipped:.1%} (by the trace's own labels {could_skip:.1%} can: a router "
              f"never wrong would skip that many); tier accuracy {accuracy:.1%} ("
              + ", ".join(f"{s} {correct[s] / by_source[s]:.1%} of {by_source[s]}" for s in by_source)
              + "); routed " + ", ".join(f"{tier} {routed[tier]}" for tier in (*trace.MIX, "failed"))
              + f"; cost = the gateway's usage table ({len(usage)} jobs, input tokens = characters of the prompt the "
              f"provider received / {CHARS_PER_TOKEN}, p50 {_median(tokens_in)}), priced by [prices] "
              f"({config.agents.light_model} / {config.agents.full_model}); output: a scripted answer of "
              f"{output_tokens} tokens on both sides; baseline: every message's prompt rebuilt by the agent's code "
              f"from the stored history and the router's passages, priced with {config.agents.full_model} (routing "
              f"cannot be forced to container-full without changing the router); rebuilt / measured input tokens "
              f"on warmwire's container-full jobs: {fidelity:.2f}"),
        details={"skipped_share": skipped, "labelled_skip_share": could_skip, "accuracy": accuracy, "baseline_vs_measured": fidelity,
                 **{f"routed_{t}": routed[t] for t in (*trace.MIX, "failed")},
                 **{f"accuracy_{s}": correct[s] / by_source[s] for s in by_source}})


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2] if values else 0


if __name__ == "__main__":  # python -m bench.routing [--quick]: this row alone
    from .progress import progress as show

    row = run(None, "--quick" in sys.argv, show)
    print(f"\n{row.name}: {row.p50:.6f} vs baseline {row.baseline_p50:.6f} USD/query ({row.ratio:.2f}x); "
          f"{'met' if row.met else 'NOT MET'}\n{row.note}")
