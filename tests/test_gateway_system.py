"""The model gateway in the whole system, with real Docker agents (network mode none) and a
scripted provider on loopback that speaks Anthropic's streaming Messages API and checks the
key it gets: the key reaches the provider and nothing else (no container's inspect or env,
no IPC file, row or log); deltas reach the client before the reply and add up to it; a 429
with Retry-After is retried; a spent budget answers with a notice and calls nobody.

The tests run in order on one warmwire; the budget test spends the budget, so it is last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import uuid

import docker.errors
import pytest

from conftest import Warmwire, free_port, wait_for
from bench.fake_provider import Answer, FakeProvider, Stall, Status
from proto.config import load
from services.pool_manager.backends.common import home_label
from test_pool import docker_engine, labelled_containers

pytestmark = pytest.mark.slow
ANSWER_DEADLINE = 60.0
LIGHT = "how many legs does a spider have?"
BUDGET_USD = 0.05
MODEL_TEXT = "".join(Answer().pieces)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    engine = docker_engine()
    home = tmp_path_factory.mktemp("gateway")
    key = f"sk-ant-api03-WWSECRET{uuid.uuid4().hex}"
    key_file = tmp_path_factory.mktemp("gateway-key") / "anthropic.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    provider = FakeProvider(key).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND="docker", WARMWIRE_AGENTS_PROVIDER="anthropic",
               WARMWIRE_AGENTS_API_KEY_FILE=str(key_file), WARMWIRE_AGENTS_PROVIDER_URL=provider.url,
               WARMWIRE_AGENTS_DAILY_BUDGET_USD=str(BUDGET_USD),
               # Short waits between attempts; a provider's Retry-After still decides.
               WARMWIRE_GATEWAY_BACKOFF_INITIAL="0.05")
    system = Warmwire(home, env)
    system.engine, system.label, system.provider, system.key = engine, home_label(load(env)), provider, key
    system.start()
    yield system
    system.stop()
    provider.stop()


def exchange(client, text: str, chat: str) -> tuple[list[dict], dict]:
    return client.exchange(text, ANSWER_DEADLINE, chat=chat)


def test_deltas_reach_the_client_before_the_reply_and_add_up_to_it(system):
    calls = len(system.provider.calls)
    before, reply = exchange(system.client(), LIGHT, "deltas")
    assert reply["type"] == "reply" and reply["tier"] == "container-light", reply
    deltas = [frame["text"] for frame in before if frame.get("kind") == "delta"]
    assert deltas == list(Answer().pieces) and "".join(deltas) == reply["text"] == MODEL_TEXT
    assert all(frame["chat"] == "deltas" for frame in before)
    assert len(system.provider.calls) == calls + 1
    # The provider's own usage is recorded, by the gateway, for the job.
    with system.db() as db:
        row = db.execute("SELECT model, input_tokens, output_tokens, cost_usd FROM usage WHERE job_id = ?",
                         (reply["id"],)).fetchone()
    assert row[:3] == ("claude-3-5-haiku-latest", 12, 5) and row[3] > 0


def test_a_429_with_retry_after_then_200_gives_the_user_the_answer(system):
    calls = len(system.provider.calls)
    system.provider.script(Status(429, {"retry-after": "1"}))
    _, reply = exchange(system.client(), "what is the capital of France?", "retry")
    assert reply["type"] == "reply" and reply["text"] == MODEL_TEXT, reply
    assert len(system.provider.calls) == calls + 2
    assert system.service("model-gateway")["stats"]["retries"] >= 1


def test_agents_have_no_network_and_no_key_while_the_provider_gets_it(system):
    exchange(system.client(), "Please debug this Python traceback: KeyError 'port' in parse_config() line 42",
             "no-key")
    assert system.provider.keys_seen() == {system.key}  # the key was live, and only it was sent
    containers = labelled_containers(system)
    assert containers
    port = system.provider.server_address[1]
    probe = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
             "    print('CONNECTED')\nexcept OSError as e:\n    print('refused:', e)\n") % port
    seen = []
    for container in containers:
        try:
            container.reload()
        except docker.errors.NotFound:
            continue  # retired and removed since the listing (a surplus ready agent)
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        seen.append(json.dumps(container.attrs))
        seen.append(container.logs().decode(errors="replace"))
        if container.status != "running":
            continue
        try:
            result = container.exec_run(["python3", "-c", probe], user=container.attrs["Config"]["User"])
            env = container.exec_run(["cat", "/proc/1/environ"], user=container.attrs["Config"]["User"])
        except docker.errors.APIError:
            continue  # it stopped meanwhile
        assert b"CONNECTED" not in result.output and b"refused" in result.output, result.output
        seen.append(env.output.decode(errors="replace"))
    needle = system.key.encode()
    for path in system.home.rglob("*"):
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue  # an IPC file consumed meanwhile
            assert needle not in data, f"the key is in {path}"
    assert not list(system.home.glob("agents/*/provider.key"))
    assert not any(system.key in text for text in seen)
    status = system.cli("status", "--json")
    assert system.key not in status.stdout
    gateway = json.loads(status.stdout)
    stats = next(s for s in gateway["services"] if s["name"] == "model-gateway")["stats"]
    assert stats["key"] == "set" and stats["provider"] == "anthropic"


def test_a_turn_in_flight_when_the_gateway_is_killed_is_answered_by_the_restarted_one(system):
    calls = len(system.provider.calls)
    system.provider.script(Stall())
    client = system.client()
    message_id = client.send("what is the capital of Spain?", chat="gateway-kill")
    wait_for(lambda: len(system.provider.calls) > calls, ANSWER_DEADLINE, "the turn to reach the provider")
    before = system.service("model-gateway")
    os.kill(before["pid"], signal.SIGKILL)
    while True:
        frame = client.recv(ANSWER_DEADLINE)
        if frame.get("id") == message_id and frame.get("kind") not in ("queued", "progress", "delta"):
            break
    assert frame["type"] == "reply" and frame["text"] == MODEL_TEXT, frame
    assert "sending its 1 unanswered turns again" in system.logs()


def test_status_shows_each_input_of_the_concurrency_limit(system):
    exchange(system.client(), LIGHT, "inputs")  # the limit is evaluated as the job starts
    load_ = system.service("pool-manager")["stats"]["load"]
    assert load_["memory"]["agents_measured"] >= 1 and load_["memory"]["per_agent_mb"] > 0, load_
    assert load_["provider_calls"]["max_in_flight"] == load({}).gateway.max_in_flight
    assert set(load_["cpu"]) >= {"jobs_using_cpu", "idle_cores", "limit"}


def test_the_budget_warns_at_80_percent_then_refuses_without_a_provider_call(system):
    client = system.client()
    # 10,000 output tokens of haiku: $0.04, 80 % of the $0.05 budget.
    system.provider.script(Answer(output_tokens=10_000), Answer(output_tokens=5_000))
    before, reply = exchange(client, LIGHT, "budget")
    assert reply["type"] == "reply"
    warnings = [f["text"] for f in before if f.get("kind") == "progress" and "budget" in f["text"]]
    assert warnings and "80 %" in warnings[0], before
    _, reply = exchange(client, LIGHT, "budget")  # spends past 100 %
    assert reply["type"] == "reply"
    calls = len(system.provider.calls)
    _, refused = exchange(client, "Please explain why my build fails on line 7", "budget-2")
    assert refused["type"] == "notice" and refused["kind"] == "unavailable", refused
    assert "budget" in refused["text"] and refused["retry_after"] > 0
    assert len(system.provider.calls) == calls  # no provider call
    cost = system.client().ask("/cost", chat="budget")["text"]
    tokens = int(re.search(r"(\d+) tokens", cost).group(1))
    assert tokens >= 15_000 and float(re.search(r"\$([\d.]+)", cost).group(1)) >= BUDGET_USD, cost
    wait_for(lambda: system.service("model-gateway")["stats"]["refused_budget"] >= 1, 5, "the refusal counted")
