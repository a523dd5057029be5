"""Abusive agents, on the real Docker engine (and the local backend where it makes sense).

An agent is made hostile in the two ways a compromised one could act: by writing into its IPC
folder (the only host folder a container can write; the test writes there from outside as
the container could), and by running code inside a real warm container with the Docker SDK,
as the container's own user, so the real limits apply. Each test then checks that the
agent was refused and replaced, and that other chats kept being answered by their own agents.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker.errors
import psutil
import pytest

from conftest import Warmwire, free_port, wait_for
from proto import ipc
from proto.config import load
from services.pool_manager.backends.common import home_label
from test_pool import FULL_MESSAGE, agent_processes, docker_engine, job_container, pool

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
READY_DEADLINE = 30.0
REPLACED_DEADLINE = 30.0
MB = 1 << 20
# The pool-manager's growth allowed while an agent floods or writes 1 GB: it must not read
# what it refuses (the cap it reads is 1 MB) nor keep a list of a flood.
RSS_GROWTH_LIMIT = 40 * MB


def start_system(backend: str, home: Path, **extra: str) -> Warmwire:
    engine = docker_engine() if backend == "docker" else None
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND=backend, WARMWIRE_POOL_MAX_CONCURRENCY="2", **extra)
    system = Warmwire(home, env)
    system.backend, system.engine, system.label = backend, engine, home_label(load(env))
    system.start()
    return system


@pytest.fixture(scope="module", params=["docker", "local"])
def system(request, tmp_path_factory):
    system = start_system(request.param, tmp_path_factory.mktemp(f"hostile-{request.param}"))
    yield system
    system.stop()


def agent_number(root: Path) -> int:
    return int(root.name.rsplit("-", 1)[1])


def fresh_pool(system: Warmwire, since: float) -> dict:
    """The pool-manager's stats from a probe answered after `since` (status is ~1 s old)."""
    def probed():
        service = system.service("pool-manager")
        age = service["last_probe_age"]
        return age is not None and time.monotonic() - age > since and service["stats"]["pool"]
    return wait_for(probed, 30, "a fresh probe of the pool-manager")


def ready_agent(system: Warmwire) -> Path:
    """The IPC area of an agent that is ready (bound to no chat)."""
    since = time.monotonic()
    def ready():
        states = fresh_pool(system, since)["agents"]
        return [agent for agent, state in states.items() if state == "ready"]
    agent = max(wait_for(ready, READY_DEADLINE, "a ready agent"), key=lambda a: int(a.rsplit("-", 1)[1]))
    return system.home / "agents" / agent


def container_of(system: Warmwire, root: Path):
    return system.engine.containers.get(root.name)


def as_agent(system: Warmwire, root: Path, script: str):
    """Run a shell script inside the agent's container, as the container's user."""
    container = container_of(system, root)
    return container.exec_run(["sh", "-c", script], user=container.attrs["Config"]["User"])


def wait_replaced(system: Warmwire, root: Path, retired_before: int) -> None:
    """The agent is gone (folder deleted, container removed) and a fresh one is ready."""
    wait_for(lambda: not root.exists(), REPLACED_DEADLINE, f"agent {root.name} to be removed")
    if system.backend == "docker":
        wait_for(lambda: not system.engine.containers.list(all=True, filters={"name": root.name}),
                 REPLACED_DEADLINE, "its container to be removed")
    since = time.monotonic()
    def replaced():
        stats = fresh_pool(system, since)
        return stats["retired"] > retired_before and stats["ready"] >= 1 and root.name not in stats["agents"]
    wait_for(replaced, READY_DEADLINE, "a fresh ready agent in its place")


def bound_chat(system: Warmwire, chat: str) -> tuple[str, Path]:
    """A chat with an agent of its own (the bystander other tests must leave alone)."""
    reply = system.client().ask(FULL_MESSAGE, chat=chat)
    assert reply["type"] == "reply", reply
    container = job_container(system, reply["id"])
    return container, system.home / "agents" / container


def still_served(system: Warmwire, chat: str, container: str) -> None:
    """The bystander chat is answered, by the very agent it had before."""
    reply = system.client().ask(FULL_MESSAGE + " (again)", chat=chat)
    assert reply["type"] == "reply", reply
    assert job_container(system, reply["id"]) == container


def pool_manager(system: Warmwire) -> psutil.Process:
    return psutil.Process(system.service("pool-manager")["pid"])


def test_symlinks_and_dotdot_out_of_the_folder_are_refused(system, tmp_path):
    bystander, _ = bound_chat(system, "bystander-links")
    host_file = tmp_path / "host-file.json"
    host_file.write_text("host data")
    for attack in ("symlink", "dotdot", "into-in", "swap-out"):
        retired = pool(system)["pool"]["retired"]
        root = ready_agent(system)
        out = ipc.layout(root).from_agent
        if attack == "symlink":
            os.symlink(host_file, out / "0000000005-result.json")
        elif attack == "dotdot":  # out/../escape.json lands beside in/ and out/
            (out / ".." / "escape.json").write_text("{}")
        elif attack == "into-in":  # a job file the host never wrote
            (out / ".." / "in" / "0000000001-job.json").write_text("{}")
        else:  # out/ itself replaced by a link to a host folder
            os.rename(out, root / "ipc" / "old-out")
            os.symlink(tmp_path, out)
        wait_replaced(system, root, retired)
        assert host_file.read_text() == "host data"  # never followed, written or removed
    logs = system.logs()
    assert "is a symlink" in logs and "escape.json: written beside in/ and out/" in logs
    assert "in/0000000001-job.json: the host did not write it" in logs and "old-out: made a folder" in logs
    still_served(system, "bystander-links", bystander)


def test_an_agent_that_forges_another_chat_or_key_is_replaced(system):
    alice, alice_root = bound_chat(system, "alice-forger")
    bob, _ = bound_chat(system, "bob-victim")
    retired = pool(system)["pool"]["retired"]
    secret = ipc.Secret.from_file(alice_root / ipc.KEY_FILE)
    with ipc.Writer(ipc.layout(alice_root).from_agent, secret, chat="bob-victim") as forger:
        forger.write("result", "a-job-of-bob", {"text": "FORGED answer for bob"})
    wait_replaced(system, alice_root, retired)
    # A ready agent writes with alice's key (it could only have stolen it): refused too.
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    with ipc.Writer(ipc.layout(root).from_agent, secret) as thief:
        thief.write("ready", "", {})
    wait_replaced(system, root, retired)
    logs = system.logs()
    assert "message is for another chat" in logs and "bad signature" in logs
    with system.db() as db:
        assert not db.execute("SELECT 1 FROM replies WHERE text LIKE '%FORGED%'").fetchall()
    still_served(system, "bob-victim", bob)
    assert system.client().ask(FULL_MESSAGE, chat="alice-forger")["type"] == "reply"


def job_state(system: Warmwire, message_id: str) -> str | None:
    with system.db() as db:
        row = db.execute("SELECT state FROM jobs WHERE id = ?", (message_id,)).fetchone()
    return row and row[0]


def frozen(system: Warmwire, root: Path):
    """Freeze the agent's runner (as if it were busy), so the test answers in its place.
    Thawing an agent that was removed meanwhile does nothing."""
    if system.backend == "docker":
        container = container_of(system, root)
        freeze, thaw, gone = container.pause, container.unpause, docker.errors.APIError
    else:
        runner = next(p for p in agent_processes(system) if str(root) in p.environ()["WARMWIRE_IPC_DIR"])
        freeze, thaw, gone = runner.suspend, runner.resume, psutil.NoSuchProcess

    def thaw_if_there() -> None:
        try:
            thaw()
        except gone:
            pass
    return freeze, thaw_if_there


def answer_as_agent(system: Warmwire, root: Path, chat: str, write) -> list[dict]:
    """Send a message to the chat's frozen agent, answer it with write(writer, message id)
    as the agent, and return every frame the client got for it, the final one last."""
    client = system.client()
    message_id = client.send(FULL_MESSAGE + " (answered by a hostile agent)", chat=chat)
    wait_for(lambda: job_state(system, message_id) == "running", 30, "the job to reach the agent")
    with ipc.Writer(ipc.layout(root).from_agent, ipc.Secret.from_file(root / ipc.KEY_FILE), chat=chat) as agent:
        write(agent, message_id)
    frames = []
    while not frames or frames[-1]["id"] != message_id or frames[-1].get("kind") in ("queued", "progress", "delta"):
        frames.append(client.recv())
    return [frame for frame in frames if frame["id"] == message_id]


def test_a_signed_result_with_hostile_fields_is_answered_without_harm(system):
    """The agent holds its key, so it can sign any JSON: wrong types, huge numbers, a flood of
    progress, an error text that forges log lines."""
    chat = "carol-hostile-usage"
    container, root = bound_chat(system, chat)
    pid = pool_manager(system).pid
    freeze, thaw = frozen(system, root)
    freeze()
    try:
        for usage in ({"input_tokens": "lots", "output_tokens": [1]}, {"input_tokens": 10 ** 30},
                      {"prompt_tokens": -5, "output_tokens": 1e308}):
            frames = answer_as_agent(system, root, chat, lambda agent, job: agent.write(
                "result", job, {"text": "hostile usage", "agent": {"x": 1}, "usage": usage}))
            assert frames[-1]["type"] == "reply" and frames[-1]["text"] == "hostile usage", frames[-1]

        def spam(agent, job):
            for n in range(50):
                agent.write("progress", job, {"stage": f"step {n} " + "x" * 10_000})
            agent.write("error", job, {"error": "boom\n2026-01-01 00:00:00,000 router ERROR FORGED LOG LINE" * 100})
        frames = answer_as_agent(system, root, chat, spam)
    finally:
        thaw()
    progress = [frame for frame in frames if frame.get("kind") == "progress"]
    assert len(progress) <= load({}).pool.max_progress_per_job and all(len(f["text"]) < 400 for f in progress)
    assert frames[-1]["kind"] == "error" and "\n" not in frames[-1]["text"] and len(frames[-1]["text"]) < 400
    assert "\n2026-01-01 00:00:00,000 router ERROR FORGED" not in system.logs()
    # The error retired carol's agent: her next message goes to a fresh one.
    reply = system.client().ask(FULL_MESSAGE, chat=chat)
    assert reply["type"] == "reply" and job_container(system, reply["id"]) != container
    assert pool_manager(system).pid == pid and system.service("pool-manager")["restarts"] == 0
    with system.db() as db:
        tokens = db.execute("SELECT input_tokens, output_tokens FROM usage WHERE job_id IN "
                            "(SELECT id FROM jobs WHERE chat = ?)", (chat,)).fetchall()
    assert all(0 <= count < 2 ** 63 for row in tokens for count in row), tokens


def test_a_1_gb_file_is_refused_unread(system):
    bystander, _ = bound_chat(system, "bystander-big")
    process = pool_manager(system)
    baseline = process.memory_info().rss
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    out = ipc.layout(root).from_agent
    if system.backend == "docker":
        # Written for real inside the container (under a temporary name, which the reader
        # leaves alone until it is renamed): the kernel's file-size cap stops it.
        result = as_agent(system, root, "dd if=/dev/zero of=/ipc/out/.big.tmp bs=1M count=1024")
        written = os.stat(out / ".big.tmp").st_size
        print(f"\n[1 GB] dd inside the container stopped at {written // MB} MB: {result.output[-40:]!r}")
        assert result.exit_code != 0 and written == load({}).pool.max_file_mb * MB
        as_agent(system, root, "mv /ipc/out/.big.tmp /ipc/out/0000000009-result.json")
    else:
        with open(out / ".big.tmp", "wb") as big:  # sparse: a 1 GB file at no disk cost
            big.truncate(1 << 30)
        os.rename(out / ".big.tmp", out / "0000000009-result.json")
    wait_replaced(system, root, retired)
    assert process.memory_info().rss - baseline < RSS_GROWTH_LIMIT
    assert "bytes > cap" in system.logs() or "larger than cap" in system.logs()
    still_served(system, "bystander-big", bystander)
