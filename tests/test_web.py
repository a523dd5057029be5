"""The web service and the frontend requests it relies on, without a browser: a chat's
history, notes learned and searched over the wire protocol, who may reach the page (listen
address, token, Host, Origin) and /metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import aiohttp
import msgspec
import pytest

from conftest import REPO, ANSWER_DEADLINE, free_port, wait_for
from proto.frames import FRAME_MISSING_FIELDS, NO_TYPE, UNKNOWN_TYPE

pytestmark = pytest.mark.slow


def request(client, **frame) -> dict:
    frame.setdefault("id", uuid.uuid4().hex)
    client.send_raw(msgspec.msgpack.encode(frame))
    while True:
        answer = client.recv()
        if answer.get("id") == frame["id"]:
            return answer


def test_history_pages_through_a_chat_with_its_answers(warmwire):
    client = warmwire.client()
    sent = [client.ask(text, chat="h1")["id"] for text in ("hello", "thanks", "สวัสดีครับ")]
    client.ask("hello", chat="elsewhere")
    page = request(client, type="history", chat="h1", limit=2)
    assert page["type"] == "history" and page["more"] is True
    assert [m["id"] for m in page["messages"]] == sent[1:]
    assert page["messages"][1]["text"] == "สวัสดีครับ"
    assert page["messages"][1]["answers"] == [{"type": "reply", "id": sent[2], "chat": "h1", "tier": "inline",
                                               "text": "สวัสดีครับ มีอะไรให้ช่วยไหมครับ"}]
    older = request(client, type="history", chat="h1", before=page["messages"][0]["id"], limit=2)
    assert [m["id"] for m in older["messages"]] == sent[:1] and older["more"] is False
    assert request(client, type="history", chat="nobody")["messages"] == []
    too_many = request(client, type="history", chat="h1", limit=10 ** 6)
    assert too_many["type"] == "notice" and too_many["kind"] == "error" and "limit" in too_many["text"]


def test_notes_are_learned_and_searched_over_the_frontend(warmwire):
    client = warmwire.client()
    learned = request(client, type="learn", text="The boiler's service code is QX-4471.", source="manual")
    assert learned["type"] == "learned" and learned["note"]
    found = request(client, type="search", query="QX-4471")
    assert found["type"] == "found"
    assert found["hits"][0]["source"] == "manual" and "QX-4471" in found["hits"][0]["text"]
    refused = request(client, type="learn", text="x" * 30_000)
    assert refused["type"] == "notice" and refused["kind"] == "error"


@pytest.mark.parametrize("frame, reason", [
    ({"id": "t1", "chat": "c"}, NO_TYPE),
    ({"type": "histories", "id": "t2"}, UNKNOWN_TYPE.format("'histories'")),
    ({"type": "search", "id": "t3"}, FRAME_MISSING_FIELDS.format("search", "'query'")),
    ({"type": "history", "id": "t4", "chat": "c", "limit": "ten"},
     "history field 'limit' must be a MessagePack int, not str"),
])
def test_bad_requests_get_warmwire_s_own_reasons(warmwire, frame, reason):
    client = warmwire.client()
    client.send_raw(msgspec.msgpack.encode(frame))
    answer = client.recv()
    assert answer == {"type": "notice", "id": frame["id"], "kind": "error", "text": reason}


def test_a_listen_address_other_hosts_reach_needs_a_token(home, make_env):
    env = make_env(WARMWIRE_WEB_LISTEN=f"0.0.0.0:{free_port()}")
    for command in (["-m", "supervisor", "run"], ["-m", "services.web"]):
        result = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=ANSWER_DEADLINE)
        assert result.returncode == 1, (command, result.stderr)
        assert "refusing to serve the web page on 0.0.0.0" in result.stderr
        assert "./run.sh web-token" in result.stderr
    assert not (home / "run" / "router.ctl").exists()  # nothing was started


def fetch(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=ANSWER_DEADLINE) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def open_websocket(url: str, origin: str) -> int | str:
    async with asyncio.timeout(ANSWER_DEADLINE), aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"{url}/ws", origin=origin) as ws:
                hello = await ws.receive_json(timeout=ANSWER_DEADLINE)
                return hello["op"]
        except aiohttp.WSServerHandshakeError as error:
            return error.status


def test_the_page_checks_host_origin_and_token(warmwire):
    url = warmwire.web_url
    status, body = fetch(url + "/")
    assert status == 200 and "warmwire" in body
    assert fetch(url + "/", {"Host": "attacker.example:80"})[0] == 403  # DNS rebinding
    assert asyncio.run(open_websocket(url, url)) == "hello"
    assert asyncio.run(open_websocket(url, "http://attacker.example")) == 403
    assert asyncio.run(open_websocket(url, "null")) == 403
    assert "refused a WebSocket from origin 'http://attacker.example'" in warmwire.logs()
    made = warmwire.cli("web-token")
    token = made.stdout.split()[0]
    assert (warmwire.home / "keys" / "web.token").stat().st_mode & 0o777 == 0o600
    assert fetch(url + "/metrics")[0] == 401
    status, metrics = fetch(url + "/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200 and "warmwire_supervisor_up 1.0" in metrics


def test_metrics_count_messages_latency_pool_queue_restarts_and_spend(warmwire):
    client = warmwire.client()
    for _ in range(3):
        assert client.ask("hello")["tier"] == "inline"

    def scraped() -> str:
        status, text = fetch(warmwire.web_url + "/metrics")
        return status == 200 and 'warmwire_messages_total{tier="inline"} 3.0' in text and text

    text = wait_for(scraped, ANSWER_DEADLINE, "/metrics to count 3 inline messages", interval=0.5)
    assert 'warmwire_answer_latency_seconds_count{tier="inline"} 3.0' in text
    assert 'warmwire_answer_latency_seconds_bucket{le="+Inf",tier="inline"} 3.0' in text
    for line in ('warmwire_pool_agents{state="ready"}', "warmwire_concurrency_limit ", "warmwire_job_queue_length 0.0",
                 "warmwire_job_queue_limit 100.0", 'warmwire_service_restarts_total{service="router"} 0.0',
                 "warmwire_tokens_today 0.0", "warmwire_cost_usd_today 0.0", "warmwire_pool_backend_info{backend="):
        assert line in text, line
    router = warmwire.service("router")["stats"]
    assert router["latency"]["count"] == 3 and router["latency"]["p99_ms"] > 0


def test_the_latency_window_gives_p50_p99_within_its_precision_and_forgets_old_slots(monkeypatch):
    from proto.config import load
    from services.router import latency
    config = load({}).router
    clock = {"now": 1000.0}
    monkeypatch.setattr(latency.time, "monotonic", lambda: clock["now"])
    meter = latency.LatencyMeter(config, ("inline", "container-full"))
    for seconds in [0.001] * 98 + [0.050, 0.200]:
        meter._record("inline", seconds)
    stats = meter.stats()
    assert stats["latency"]["count"] == 100
    assert abs(stats["latency"]["p50_ms"] - 1.0) <= 1.0 * config.latency_precision
    assert abs(stats["latency"]["p99_ms"] - 50.0) <= 50.0 * config.latency_precision
    assert sum(stats["latency_histogram"]["buckets"]["inline"]) == 100
    clock["now"] += config.latency_window + config.latency_slot
    meter._record("container-full", 2.0)
    stats = meter.stats()
    assert stats["latency"]["count"] == 1 and len(stats["latency_series"]) == 1
    assert abs(stats["latency"]["p99_ms"] - 2000.0) <= 2000.0 * config.latency_precision
    assert sum(stats["latency_histogram"]["buckets"]["inline"]) == 100  # since start
