"""Agents in containers (and in local processes, the fallback), end to end.

Each backend gets one warmwire for the whole module; the tests run in order on it. The
Docker tests need an engine and the agent image: `.ci/run` starts and builds both, so in
CI (CI=true) a missing engine fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import signal

import docker
import psutil
import pytest

from conftest import Warmwire, free_port, unavailable, wait_for
from proto import ipc
from proto.config import load
from services.pool_manager.backends.common import home_label

pytestmark = pytest.mark.slow
READY_DEADLINE = 30.0
ANSWER_DEADLINE = 60.0
MAX_AGENTS = 6
FULL_MESSAGE = "Please debug this Python traceback: KeyError 'port' in parse_config() at line 42"


def docker_engine():
    try:
        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(load({}).pool.image)
        return client
    except docker.errors.DockerException as exc:
        unavailable("a Docker engine", f"no engine with the agent image answers ({exc})")


@pytest.fixture(scope="module", params=["docker", "local"])
def system(request, tmp_path_factory):
    engine = docker_engine() if request.param == "docker" else None
    home = tmp_path_factory.mktemp(f"pool-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
               WARMWIRE_POOL_BACKEND=request.param, WARMWIRE_POOL_MAX_CONCURRENCY="2",
               WARMWIRE_JOBS_MAX_QUEUED="10", WARMWIRE_POOL_MAX_AGENTS=str(MAX_AGENTS))
    warmwire = Warmwire(home, env)
    warmwire.backend = request.param
    warmwire.engine = engine
    warmwire.label = home_label(load(env))
    warmwire.start()
    yield warmwire
    warmwire.stop()


def pool(system: Warmwire) -> dict:
    return system.service("pool-manager")["stats"]


def agent_processes(system: Warmwire) -> list[psutil.Process]:
    """Local agents: runner processes whose IPC folder is in this home."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            environ = process.info["environ"] or {}
        except psutil.Error:
            continue
        if str(system.home) in environ.get("WARMWIRE_IPC_DIR", ""):
            found.append(process)
    return found


def labelled_containers(system: Warmwire, **filters) -> list:
    return system.engine.containers.list(all=True, filters={"label": f"warmwire.home={system.label}", **filters})


def job_container(system: Warmwire, message_id: str) -> str:
    with system.db() as db:
        return db.execute("SELECT container FROM jobs WHERE id = ?", (message_id,)).fetchone()[0]


def test_a_ready_agent_exists_within_30_seconds_of_start(system):
    wait_for(lambda: pool(system)["pool"]["ready"] >= 1, READY_DEADLINE, "a ready agent")
    assert pool(system)["backend"] == system.backend
    if system.backend == "docker":
        running = labelled_containers(system, status="running")
        assert running and all(c.labels["warmwire.role"] == "agent" for c in running)
        attrs = running[0].attrs["HostConfig"]
        assert attrs["ReadonlyRootfs"] and attrs["CapDrop"] == ["ALL"] and attrs["NetworkMode"] == "none"
        assert attrs["PidsLimit"] and attrs["Memory"] and running[0].attrs["Config"]["User"] != "root"
    else:
        assert agent_processes(system)


def test_container_full_is_answered_by_an_agent_and_follow_ups_reuse_it(system):
    client = system.client()
    first = client.ask(FULL_MESSAGE, chat="alice")
    assert first["type"] == "reply" and first["tier"] == "container-full", first
    assert "offline agent" in first["text"]
    follow_up = client.ask("And now explain why the KeyError happens and refactor the function", chat="alice")
    other = client.ask(FULL_MESSAGE, chat="bob")
    assert follow_up["type"] == other["type"] == "reply"
    alice = job_container(system, first["id"])
    assert job_container(system, follow_up["id"]) == alice
    assert job_container(system, other["id"]) != alice
    if system.backend == "docker":
        assert system.engine.containers.get(alice).labels["warmwire.agent"] == alice
    def usage():  # written by the pool-manager beside the router's reply, so maybe a moment later
        with system.db() as db:
            return db.execute("SELECT model, cost_usd FROM usage WHERE job_id IN (?, ?, ?)",
                              (first["id"], follow_up["id"], other["id"])).fetchall()
    assert wait_for(lambda: len(usage()) == 3 and usage(), 30, "usage rows") == [("offline", 0.0)] * 3
    # status shows where a reply's time went after the agent wrote its result, stage by stage.
    def measured_stages():
        stages = system.service("router")["stats"]["jobs"]["result_stages"]
        return stages if all(stage["p50_ms"] is not None for stage in stages.values()) else None
    stages = wait_for(measured_stages, 30, "the reply's stages in status")
    assert set(stages) == {"file_to_pool_manager", "in_pool_manager", "pool_manager_to_router", "commit_and_send"}
    assert all(stage["p50_ms"] is not None and stage["p50_ms"] >= 0 for stage in stages.values()), stages


def ready_agent_folder(system: Warmwire):
    """The out/ folder of an agent that is ready and bound to no chat."""
    wait_for(lambda: pool(system)["pool"]["ready"] >= 1, READY_DEADLINE, "a ready agent")
    with system.db() as db:
        used = {row[0] for row in db.execute("SELECT container FROM jobs")}
    folders = [p for p in (system.home / "agents").iterdir() if p.name not in used]
    assert folders
    return ipc.layout(folders[-1]).from_agent


def test_unsigned_and_out_of_folder_ipc_files_are_rejected(system, tmp_path):
    before = pool(system)["ipc"]["rejected"]
    out = ready_agent_folder(system)
    (out / ".unsigned.tmp").write_text('{"kind": "result", "chat": "", "job": "x", "payload": {}}')
    os.rename(out / ".unsigned.tmp", out / "0000009999-result.json")
    wait_for(lambda: pool(system)["ipc"]["rejected"] >= before + 1, 30, "the unsigned file to be rejected")
    # An agent that broke the protocol is replaced at once: the symlink goes to its successor.
    wait_for(lambda: not out.exists(), 30, "the offending agent's folder to be removed")
    outside = tmp_path / "host-secret.json"
    outside.write_text("{}")
    os.symlink(outside, ready_agent_folder(system) / "0000009998-result.json")
    wait_for(lambda: pool(system)["ipc"]["rejected"] >= before + 2, 30, "both files to be rejected")
    assert outside.exists()  # the symlink was removed, not followed
    wait_for(lambda: "0000009999-result.json: unsigned" in system.logs()
             and "0000009998-result.json: is a symlink" in system.logs(), 5, "both rejections logged")
    assert system.client().ask(FULL_MESSAGE, chat="carol")["type"] == "reply"


def test_an_agent_killed_from_outside_is_replaced(system):
    wait_for(lambda: pool(system)["pool"]["ready"] >= 1, READY_DEADLINE, "a ready agent")
    lost = pool(system)["pool"]["lost"]
    if system.backend == "docker":
        victim = labelled_containers(system, status="running")[0]
        victim.kill()
    else:
        os.kill(agent_processes(system)[0].pid, signal.SIGKILL)
    wait_for(lambda: pool(system)["pool"]["lost"] == lost + 1, 30, "the pool to notice the kill")
    wait_for(lambda: pool(system)["pool"]["ready"] >= 1, READY_DEADLINE, "a replacement agent")
    assert system.client().ask(FULL_MESSAGE, chat="dave")["type"] == "reply"


def test_fifty_messages_at_once_get_replies_or_notices_and_all_are_stored(system):
    client = system.client()
    ids = [client.send(f"{FULL_MESSAGE} (case {n})", chat=f"burst-{n}") for n in range(50)]
    final: dict[str, dict] = {}
    notices: dict[str, list[str]] = {}
    while len(final) < len(ids):
        frame = client.recv(timeout=ANSWER_DEADLINE)
        if frame["type"] == "notice" and frame["kind"] in ("queued", "progress", "delta"):
            notices.setdefault(frame["id"], []).append(frame["kind"])
            continue
        final[frame["id"]] = frame
    kinds = [f["type"] if f["type"] == "reply" else f["kind"] for f in final.values()]
    assert set(kinds) <= {"reply", "busy"}, kinds
    assert kinds.count("busy") > 0 and kinds.count("reply") > 0
    assert any("queued" in k for k in notices.values())
    with system.db() as db:
        status = dict(db.execute(f"SELECT id, status FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids))
    assert sorted(status) == sorted(ids)
    for message_id, frame in final.items():
        assert status[message_id] == ("answered" if frame["type"] == "reply" else "refused")
    # Fifty chats, but never more agents alive than the cap (plus the ready one that refills).
    alive = pool(system)["pool"]
    assert alive["warming"] + alive["ready"] + alive["idle"] + alive["busy"] <= MAX_AGENTS + 1, alive
    print(f"\n[{system.backend}] 50 at once: {kinds.count('reply')} replies, {kinds.count('busy')} busy, "
          f"{sum('queued' in k for k in notices.values())} were queued first")


def test_after_sigterm_no_agent_is_left(system):
    system.stop()
    if system.backend == "docker":
        assert labelled_containers(system) == []
    else:
        wait_for(lambda: not agent_processes(system), 30, "local agents to exit")
