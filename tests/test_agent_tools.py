"""Agents that do work (issue 15): a tool loop in the chat's own workspace, on a real Docker
engine, with a scripted provider that asks for tools (bench/fake_provider.py, the real
streaming formats). What the tools did reaches the model as tool results, which the
provider records: the tests read them there.

Each container serves one job here (pool.max_uses = 1), so a chat's second job runs in a new
container: the workspace must have outlived the first.
"""

from __future__ import annotations

import json
import os

import pytest

from bench.fake_provider import Answer, FakeProvider
from conftest import Warmwire, free_port, wait_for
from services.pool_manager.workspaces import workspace_name
from test_pool import FULL_MESSAGE, docker_engine, job_container

pytestmark = pytest.mark.slow
ANSWER_DEADLINE = 90.0
WORKSPACE_MB = 1
LIGHT_MESSAGE = "how many legs does a spider have?"


def call(name: str, number: int, **arguments) -> dict:
    return {"id": f"call_{number}", "name": name, "arguments": arguments}


def tool_steps(*calls: dict, final: str = "done") -> list[Answer]:
    """One model turn per tool call, then a final answer."""
    return [Answer(pieces=("",), tool_call=c) for c in calls] + [Answer(pieces=(final,))]


def start(tmp_path_factory, backend: str, kind: str, **settings: str) -> Warmwire:
    home = tmp_path_factory.mktemp(f"tools-{backend}")
    provider = FakeProvider().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND=backend, WARMWIRE_AGENTS_PROVIDER=kind,
               WARMWIRE_AGENTS_PROVIDER_URL=provider.url, WARMWIRE_POOL_MAX_USES="1",
               WARMWIRE_AGENTS_WORKSPACE_MB=str(WORKSPACE_MB), WARMWIRE_AGENTS_RUN_TIMEOUT="10",
               **settings)
    system = Warmwire(home, env)
    system.provider = provider
    system.start()
    return system


@pytest.fixture(scope="module", params=["anthropic", "openai"])
def system(request, tmp_path_factory):
    docker_engine()
    system = start(tmp_path_factory, "docker", request.param)
    yield system
    system.stop()
    system.provider.stop()


def job(system: Warmwire, text: str, chat: str, steps: list[Answer]) -> tuple[list[dict], dict, list[str]]:
    """Run one scripted job: (its notices, its final frame, what each tool returned)."""
    first_call = len(system.provider.calls)
    system.provider.script(*steps)
    notices, frame = system.client().exchange(text, ANSWER_DEADLINE, chat=chat)
    results = [tool_result(c.body) for c in system.provider.calls[first_call + 1:]]
    return notices, frame, results


def tool_result(body: dict) -> str:
    """The content of the last tool result in a provider request, in either format."""
    last = body["messages"][-1]
    if last["role"] == "tool":  # OpenAI-compatible
        return last["content"]
    blocks = [b for b in last["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
    content = blocks[-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def workspace(system: Warmwire, chat: str):
    return system.home / "workspaces" / workspace_name(chat)


def test_the_workspace_outlives_the_container_and_stays_with_its_chat(system):
    notices, reply, results = job(system, FULL_MESSAGE, "chat-a", tool_steps(
        call("write_file", 1, path="notes.txt", content="remember the milk"), call("run", 2, command="ls -l")))
    assert reply["type"] == "reply" and reply["tier"] == "container-full" and reply["text"] == "done", reply
    assert "wrote 17 bytes" in results[0] and "notes.txt" in results[1] and results[1].startswith("exit 0")
    progress = [n["text"] for n in notices if n.get("kind") == "progress"]
    assert "writing notes.txt" in progress and "running: ls -l" in progress, progress
    first_container = job_container(system, reply["id"])
    # Given back to its place when the one-job container is retired.
    wait_for(lambda: (workspace(system, "chat-a") / "notes.txt").exists(), 30, "chat A's workspace to come back")

    _, reply, results = job(system, FULL_MESSAGE + " again", "chat-a", tool_steps(
        call("read_file", 1, path="notes.txt")))
    assert results == ["remember the milk"], results
    assert job_container(system, reply["id"]) != first_container

    _, _, results = job(system, FULL_MESSAGE + " for B", "chat-b", tool_steps(
        call("read_file", 1, path="notes.txt"), call("run", 2, command="ls -a /chat /workspace")))
    assert "notes.txt" not in results[0] and "milk" not in results[0]
    assert "notes.txt" not in results[1]


def test_the_history_carries_the_tools_a_turn_used(system):
    job(system, FULL_MESSAGE + " (history)", "chat-h", tool_steps(call("run", 1, command="echo made > made.txt")))
    calls = len(system.provider.calls)
    job(system, "now run the tests again", "chat-h", [Answer(pieces=("again",))])
    sent = json.dumps(system.provider.calls[calls].body)
    assert "echo made > made.txt" in sent, "the earlier turn's tool call is not in the history"


@pytest.mark.parametrize("command, must_fail", [
    ("cat /etc/shadow", True),
    ("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 7400), timeout=3)\"", True),
    ("curl -sS http://127.0.0.1:7400/ || wget -q -O- http://127.0.0.1:7400/", True),
    # Contained rather than failed: the pids limit stops it, the agent answers all the same.
    ("bomb() { bomb | bomb & }; bomb", False),
], ids=["shadow", "socket", "curl", "fork-bomb"])
def test_a_command_that_reaches_out_fails_or_is_contained(system, command, must_fail):
    _, reply, results = job(system, FULL_MESSAGE + f" ({command})", "chat-hostile", tool_steps(
        call("run", 1, command=command)))
    assert reply["type"] == "reply", reply
    assert not (must_fail and results[0].startswith("exit 0")), results
    # The chat's next job still works, in a new container, with the same workspace.
    _, reply, results = job(system, FULL_MESSAGE + " after", "chat-hostile", tool_steps(
        call("write_file", 1, path="still.txt", content="ok"), call("read_file", 2, path="still.txt")))
    assert reply["type"] == "reply" and results[1] == "ok", (reply, results)


def test_file_tools_refuse_paths_out_of_the_workspace(system):
    _, _, results = job(system, FULL_MESSAGE + " (paths)", "chat-paths", tool_steps(
        call("write_file", 1, path="../x", content="out"),
        call("run", 2, command="ln -s /etc link && ln -s /chat escape"),
        call("write_file", 3, path="link/x", content="out"),
        call("write_file", 4, path="escape/x", content="out"),
        call("read_file", 5, path="/ipc/in")))
    assert all("outside the workspace" in results[i] for i in (0, 2, 3, 4)), results


def test_a_full_workspace_is_refused_and_the_user_told(system):
    notices, reply, results = job(system, FULL_MESSAGE + " (fill)", "chat-full", tool_steps(
        call("run", 1, command=f"head -c {2 * WORKSPACE_MB << 20} /dev/zero > big"),
        call("write_file", 2, path="more.txt", content="x")))
    assert reply["type"] == "reply"
    assert "cap" in results[1], results
    assert any(n.get("kind") == "progress" and "workspace is full" in n["text"] for n in notices), [n["text"] for n in notices]
    # Other chats are not affected.
    _, _, results = job(system, FULL_MESSAGE + " (other)", "chat-other", tool_steps(
        call("write_file", 1, path="fine.txt", content="fine")))
    assert "wrote 4 bytes" in results[0], results


def test_the_light_tier_gets_file_tools_without_run(system):
    calls = len(system.provider.calls)
    _, reply, results = job(system, LIGHT_MESSAGE, "chat-light", tool_steps(call("run", 1, command="ls")))
    assert reply["tier"] == "container-light"
    offered = {tool.get("name") or tool.get("function", {}).get("name")
               for tool in system.provider.calls[calls].body["tools"]}
    assert offered == {"read_file", "write_file", "list_files"}
    assert "not available" in results[0]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    system = start(tmp_path_factory, "local", "anthropic")
    yield system
    system.stop()
    system.provider.stop()


def test_the_local_backend_refuses_run_and_keeps_files_in_the_workspace(local, tmp_path):
    assert "off" in local.service("pool-manager")["stats"]["run_tool"]
    outside = tmp_path / "outside.txt"
    _, reply, results = job(local, FULL_MESSAGE, "local-a", tool_steps(
        call("run", 1, command=f"touch {outside}"),
        call("write_file", 2, path=str(outside), content="out"),
        call("write_file", 3, path="../../x", content="out"),
        call("write_file", 4, path="inside.txt", content="in")))
    assert reply["type"] == "reply"
    assert "not available" in results[0] and not outside.exists()
    assert "outside the workspace" in results[1] and "outside the workspace" in results[2]
    assert (workspace(local, "local-a") / "inside.txt").read_text() == "in"
