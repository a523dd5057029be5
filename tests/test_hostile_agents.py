"""Abusive agents, on the real Docker engine (and the local backend where it makes sense).

An agent is made hostile in the two ways a compromised one could act: by writing into its IPC
folder (the only host folder a container can write; the test writes there from outside as
the container could), and by running code inside a real warm container with the Docker SDK,
as the container's own user, so the real limits apply. Each test then checks that the
agent was refused and replaced, and that other chats kept being answered by their own agents.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import Warmwire, free_port, wait_for
from proto import ipc
from proto.config import load
from services.pool_manager.backends.common import home_label
from test_pool import FULL_MESSAGE, agent_processes, docker_engine, job_container, pool

pytestmark = [pytest.mark.slow, pytest.mark.hostile]
READY_DEADLINE = 30.0
REPLACED_DEADLINE = 20.0
MB = 1 << 20
FLOOD_FILES = 100_000
# The pool-manager's growth allowed while an agent floods or writes 1 GB: it must not read
# what it refuses (the cap it reads is 1 MB) nor keep a list of a flood.
RSS_GROWTH_LIMIT = 40 * MB
LINKS_PER_FILE = 50_000


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


def docker_only(system: Warmwire) -> None:
    if system.backend != "docker":
        pytest.skip("needs a container: the local backend is a process sandbox only")


def agent_number(root: Path) -> int:
    return int(root.name.rsplit("-", 1)[1])


def fresh_pool(system: Warmwire, since: float) -> dict:
    """The pool-manager's stats from a probe answered after `since` (status is ~1 s old)."""
    def probed():
        service = system.service("pool-manager")
        age = service["last_probe_age"]
        return age is not None and time.monotonic() - age > since and service["stats"]["pool"]
    return wait_for(probed, 10, "a fresh probe of the pool-manager")


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
    for attack in ("symlink", "dotdot", "swap-out"):
        retired = pool(system)["pool"]["retired"]
        root = ready_agent(system)
        out = ipc.layout(root).from_agent
        if attack == "symlink":
            os.symlink(host_file, out / "0000000005-result.json")
        elif attack == "dotdot":  # out/../escape.json lands beside in/ and out/
            (out / ".." / "escape.json").write_text("{}")
        else:  # out/ itself replaced by a link to a host folder
            os.rename(out, root / "ipc" / "old-out")
            os.symlink(tmp_path, out)
        wait_replaced(system, root, retired)
        assert host_file.read_text() == "host data"  # never followed, written or removed
    logs = system.logs()
    assert "is a symlink" in logs and "escape.json: written beside in/ and out/" in logs
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
    """Freeze the agent's runner (as if it were busy), so the test answers in its place."""
    if system.backend == "docker":
        container = container_of(system, root)
        return container.pause, container.unpause
    runner = next(p for p in agent_processes(system) if str(root) in p.environ()["WARMWIRE_IPC_DIR"])
    return runner.suspend, runner.resume


def test_a_signed_result_with_hostile_fields_is_answered_without_harm(system):
    """The agent holds its key, so it can sign any JSON: wrong types and huge numbers."""
    client = system.client()
    chat = "carol-hostile-usage"
    container, root = bound_chat(system, chat)
    secret = ipc.Secret.from_file(root / ipc.KEY_FILE)
    pid = pool_manager(system).pid
    freeze, thaw = frozen(system, root)
    freeze()
    try:
        for usage in ({"input_tokens": "lots", "output_tokens": [1]}, {"input_tokens": 10 ** 30},
                      {"prompt_tokens": -5, "output_tokens": 1e308}):
            message_id = client.send(FULL_MESSAGE + f" {usage}", chat=chat)
            wait_for(lambda: job_state(system, message_id) == "running", 10, "the job to reach the agent")
            with ipc.Writer(ipc.layout(root).from_agent, secret, chat=chat) as agent:
                agent.write("result", message_id, {"text": "hostile usage", "agent": {"x": 1}, "usage": usage})
            while (frame := client.recv())["id"] != message_id or frame.get("kind") in ("queued", "progress"):
                pass
            assert frame["type"] == "reply" and frame["text"] == "hostile usage", frame
    finally:
        thaw()
    assert pool_manager(system).pid == pid and system.service("pool-manager")["restarts"] == 0
    with system.db() as db:
        tokens = db.execute("SELECT input_tokens, output_tokens FROM usage WHERE job_id IN "
                            "(SELECT id FROM jobs WHERE chat = ?)", (chat,)).fetchall()
    assert all(0 <= count < 2 ** 63 for row in tokens for count in row), tokens
    still_served(system, chat, container)


def test_a_1_gb_file_is_refused_unread(system):
    bystander, _ = bound_chat(system, "bystander-big")
    process = pool_manager(system)
    baseline = process.memory_info().rss
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    out = ipc.layout(root).from_agent
    if system.backend == "docker":
        # Written for real inside the container: the kernel's file-size cap stops it.
        result = as_agent(system, root, "dd if=/dev/zero of=/ipc/out/0000000009-result.json bs=1M count=1024")
        assert result.exit_code != 0, result.output
        try:
            written = os.stat(out / "0000000009-result.json").st_size
        except FileNotFoundError:  # already refused and its agent deleted
            written = 0
        print(f"\n[1 GB] dd inside the container stopped at {written // MB} MB: {result.output[-80:]!r}")
        assert written <= load({}).pool.max_file_mb * MB
    else:
        with open(out / ".big.tmp", "wb") as big:  # sparse: a 1 GB file at no disk cost
            big.truncate(1 << 30)
        os.rename(out / ".big.tmp", out / "0000000009-result.json")
    wait_replaced(system, root, retired)
    assert process.memory_info().rss - baseline < RSS_GROWTH_LIMIT
    assert "bytes > cap" in system.logs() or "larger than cap" in system.logs()
    still_served(system, "bystander-big", bystander)


def test_a_flood_of_100000_files_neither_stalls_nor_bloats_the_pool_manager(system):
    """100,000 files appear at once (a folder renamed in), then an agent floods file by file
    from inside its container; meanwhile another chat is answered and the pool-manager's
    memory stays flat. Docker only: the reader is the same for both backends, and only a
    container is killed together with the flood it runs."""
    docker_only(system)
    bystander, _ = bound_chat(system, "bystander-flood")
    process = pool_manager(system)
    baseline = process.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    staging = system.home / "agents" / "staging"
    staging.mkdir()
    for n in range(FLOOD_FILES):
        # Hard links (each name is an entry all the same) are made 3 times faster than files
        # here; ext4 allows 65,000 links to one file.
        name = staging / f"{n:010d}-result.json"
        if n % LINKS_PER_FILE:
            os.link(staging / f"{n - n % LINKS_PER_FILE:010d}-result.json", name)
        else:
            name.touch()
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    started = time.monotonic()
    os.rename(staging, ipc.layout(root).from_agent / "flood")
    still_served(system, "bystander-flood", bystander)
    answered_after = time.monotonic() - started
    wait_replaced(system, root, retired)
    retired = pool(system)["pool"]["retired"]
    root = ready_agent(system)
    flood = as_agent(system, root, f"i=0; while [ $i -lt {FLOOD_FILES} ]; do : > /ipc/out/.f$i; i=$((i+1)); done; echo $i")
    wait_replaced(system, root, retired)
    assert flood.output.strip() != str(FLOOD_FILES).encode()  # cut short: its container was removed
    stop.set()
    sampler.join()
    print(f"\n[flood] {FLOOD_FILES} files at once: bystander answered {answered_after:.2f} s later; "
          f"a flood inside the container was cut short (exit {flood.exit_code}); "
          f"pool-manager RSS {baseline // MB} MB -> peak {peak[0] // MB} MB")
    assert peak[0] - baseline < RSS_GROWTH_LIMIT
    assert system.service("pool-manager")["restarts"] == 0
    assert system.logs().count("rejected a file from agent") <= 20  # a line per agent, not per file
