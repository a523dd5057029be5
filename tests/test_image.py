"""The agent runner and its image.

The runner tests run everywhere (as a local process, the pool's no-Docker backend). The image
tests need a Docker engine: without one they are skipped with the reason; with one they
really build (images.build), start a hardened container, and talk to it through its folder.
"""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # images/ is a tool folder, not an installed package
    sys.path.insert(0, REPO)

from conftest import unavailable  # noqa: E402
from images import build, launch  # noqa: E402
from proto import ipc  # noqa: E402

RUNNER = os.path.join(REPO, "images", "agent", "runner.py")
READY_TIMEOUT_S = 60       # generous: a loaded CI machine, first start after a build
RESULT_TIMEOUT_S = 30
EXIT_TIMEOUT_S = 30
CHAT = "chat-test"
JOB = {"text": "When is the dentist appointment?",
       "context": [{"title": "calendar", "text": "The dentist appointment is on Friday at 10am."},
                   {"title": "shopping", "text": "Buy oat milk and rice."}]}


def send(lay, secret, kind, job, payload, chat=CHAT, key=None):
    with ipc.Writer(lay.to_agent, key or secret, chat) as w:
        return w.write(kind, job, payload)


def check_offline_result(msg):
    assert msg.kind == "result" and msg.chat == CHAT and msg.job == "job-1"
    assert msg.payload["agent"] == "offline" and msg.payload["offline"] is True
    assert "offline agent" in msg.payload["text"]
    assert "Friday at 10am" in msg.payload["text"]      # answered from the knowledge context
    assert "oat milk" not in msg.payload["text"]        # ... and only the relevant passage


# ------------------------------------------------------------------ runner as a local process


@pytest.fixture
def local_runner(tmp_path):
    lay, secret = ipc.prepare(tmp_path / "agent")
    watch = launch.Watch(lay.from_agent, secret)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WARMWIRE_PROVIDER", "ANTHROPIC_", "OPENAI_"))}
    proc = subprocess.Popen([sys.executable, RUNNER, "--ipc", str(lay.ipc_dir),
                             "--key-file", str(lay.key_file)], env=env,
                            stderr=subprocess.PIPE, text=True)
    alive = lambda: proc.poll() is None  # noqa: E731
    yield lay, secret, watch, proc, alive
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    watch.close()


def test_local_runner_job_round_trip(local_runner):
    lay, secret, watch, proc, alive = local_runner
    ready = watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    assert ready.payload["pid"] == proc.pid
    send(lay, secret, "job", "job-1", JOB)
    assert watch.wait("progress", CHAT, RESULT_TIMEOUT_S, alive).job == "job-1"
    check_offline_result(watch.wait("result", CHAT, RESULT_TIMEOUT_S, alive))
    assert ipc.pending(lay.to_agent) == []             # the consumed job is removed
    send(lay, secret, "stop", "", {})
    assert watch.wait("exit", CHAT, EXIT_TIMEOUT_S).payload["reason"] == "stop job"
    assert proc.wait(EXIT_TIMEOUT_S) == 0


def test_local_runner_refuses_forged_and_foreign_jobs(local_runner):
    lay, secret, watch, proc, alive = local_runner
    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    send(lay, secret, "job", "forged", JOB, key=ipc.Secret.generate())
    err = watch.wait("error", ipc.ANY_CHAT, RESULT_TIMEOUT_S, alive)
    assert err.payload["type"] == "BadSignature"
    (lay.to_agent / "0000000077-job.json").write_bytes(b"\x00garbage")
    assert watch.wait("error", ipc.ANY_CHAT, RESULT_TIMEOUT_S, alive).payload["type"] == "Malformed"
    send(lay, secret, "job", "job-1", JOB)            # binds the runner to CHAT
    check_offline_result(watch.wait("result", CHAT, RESULT_TIMEOUT_S, alive))
    send(lay, secret, "job", "job-2", JOB, chat="another-chat")
    assert watch.wait("error", CHAT, RESULT_TIMEOUT_S, alive).payload["type"] == "WrongChat"
    assert alive()


def test_local_runner_exits_cleanly_on_sigterm(local_runner):
    lay, secret, watch, proc, alive = local_runner
    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    proc.terminate()
    assert proc.wait(EXIT_TIMEOUT_S) == 0
    assert watch.wait("exit", ipc.ANY_CHAT, EXIT_TIMEOUT_S).payload["reason"] == "SIGTERM"
    assert "Traceback" not in proc.stderr.read()


def _agent_module():
    """images/agent/agent.py, imported the way the runner does (a sibling module)."""
    sys.path.insert(0, os.path.dirname(RUNNER))
    try:
        import agent
        return agent
    finally:
        sys.path.remove(os.path.dirname(RUNNER))


def test_offline_answer_in_thai():
    agent = _agent_module()
    out = agent.answer({"text": "นัดหมอฟันวันไหน", "context": ["นัดหมอฟันวันศุกร์ 10 โมง",
                                                             "ซื้อนมและข้าว"]}, env={})
    assert out["offline"] and "เอเจนต์ออฟไลน์" in out["text"] and "วันศุกร์" in out["text"]
    assert "ซื้อนม" not in out["text"]
    assert not hasattr(agent, "provider_config")  # the agent has no provider code left


def test_build_without_engine_fails_clearly(tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    proc = subprocess.run([sys.executable, "-m", "images.build", "--cache", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == build.EXIT_NO_ENGINE
    assert "no Docker engine answers" in proc.stderr and "ensure-docker.sh" in proc.stderr


# ------------------------------------------------------------------ the image (needs Docker)


@pytest.fixture(scope="module")
def client():
    try:
        return build.connect(timeout=5)
    except build.NoEngine as e:
        unavailable("a Docker engine", str(e))


@pytest.fixture(scope="module")
def image(client):
    """Builds whatever is missing (the first build on a machine takes about a minute)."""
    return build.ensure_images(client=client, log=build.Progress(quiet=True)).agent


@pytest.fixture
def container(client, image, tmp_path):
    lay, secret = launch.prepare_ipc(tmp_path / "agent")
    watch = launch.Watch(lay.from_agent, secret)
    name = f"ww-test-{uuid.uuid4().hex[:10]}"
    box = client.containers.create(**launch.container_kwargs(image, lay, name=name,
                                                             labels={"warmwire.test": "1"}))
    try:
        box.start()
        yield box, lay, secret, watch
    finally:
        watch.close()
        box.remove(force=True)
        import docker
        with pytest.raises(docker.errors.NotFound):
            client.containers.get(name)


def test_no_change_rebuild_is_fast(client, image):
    again = build.ensure_images(client=client, log=build.Progress(quiet=True))
    assert again.agent == image and again.built == []


def test_image_metadata(client, image):
    img = client.images.get(image)
    assert img.labels["warmwire.image"] == "agent"
    assert img.attrs["Config"]["User"] == f"{build.AGENT_UID}:{build.AGENT_UID}"
    assert img.attrs["Config"]["Entrypoint"][-2:] == ["-m", "runner"]


def test_hardened_container_round_trip(container):
    box, lay, secret, watch = container
    alive = lambda: box.reload() or box.status in ("created", "running")  # noqa: E731
    ready = watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    assert ready.payload["pid"] == 1                    # the runner is the only process
    host = box.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["NetworkMode"] == "none" and "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] > 0 and host["PidsLimit"] > 0 and host["NanoCpus"] > 0
    assert not box.attrs["Config"]["User"].startswith("0")
    assert all("IPC" not in e and "KEY" not in e for e in box.attrs["Config"]["Env"] or [])

    send(lay, secret, "job", "forged", JOB, key=ipc.Secret.generate())
    assert watch.wait("error", ipc.ANY_CHAT, RESULT_TIMEOUT_S, alive).payload["type"] == \
        "BadSignature"
    send(lay, secret, "job", "job-1", JOB)
    check_offline_result(watch.wait("result", CHAT, RESULT_TIMEOUT_S, alive))

    send(lay, secret, "stop", "", {})
    assert box.wait(timeout=EXIT_TIMEOUT_S)["StatusCode"] == 0
    assert watch.wait("exit", CHAT, EXIT_TIMEOUT_S).payload["reason"] == "stop job"


def test_container_stops_cleanly_on_sigterm(container):
    box, lay, secret, watch = container
    alive = lambda: box.reload() or box.status in ("created", "running")  # noqa: E731
    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    box.stop(timeout=EXIT_TIMEOUT_S)
    box.reload()
    # Exit code 0 and the runner's own "exit" file: SIGTERM was honoured (a SIGKILL after the
    # timeout would give 137 and no file).
    assert box.attrs["State"]["ExitCode"] == 0
    assert watch.wait("exit", ipc.ANY_CHAT, EXIT_TIMEOUT_S).payload["reason"] == "SIGTERM"


# ------------------------------------------------------------------ model turns through the host


MODEL_JOB = dict(JOB, model={"tier": "container-light", "max_steps": 3},
                 history=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])


def test_the_agent_asks_the_host_for_model_turns_and_answers_with_the_model_text():
    agent = _agent_module()
    asked = []

    def ask(request):
        asked.append(request)
        return {"text": "Friday, 10am.", "provider": "anthropic", "model": "m-small",
                "usage": {"input_tokens": 5, "output_tokens": 3}}

    out = agent.answer(MODEL_JOB, {}, ask)
    assert out == {"text": "Friday, 10am.", "agent": "anthropic:m-small", "offline": False,
                   "usage": {"input_tokens": 5, "output_tokens": 3}}
    (request,) = asked
    assert request["step"] == 1 and "Friday" in request["system"]
    assert request["messages"] == MODEL_JOB["history"] + [{"role": "user", "content": JOB["text"]}]


def test_a_failed_turn_falls_back_to_a_labelled_offline_answer_and_a_budget_refusal_is_passed_on():
    agent = _agent_module()
    out = agent.answer(MODEL_JOB, {}, lambda request: {"error": "anthropic: HTTP 500", "error_kind": "provider"})
    assert out["offline"] and out["provider_error"] == "anthropic: HTTP 500"
    assert "provider failed" in out["text"] and "Friday" in out["text"]
    out = agent.answer(MODEL_JOB, {}, lambda request: {"error": "budget spent", "error_kind": "budget",
                                                       "retry_after": 60.0})
    assert out["refused"] == "budget" and out["notice"] == "budget spent" and out["retry_after"] == 60.0


def test_tool_calls_without_tools_are_answered_within_the_step_limit():
    agent = _agent_module()
    turns = []

    def ask(request):
        turns.append(request)
        return {"text": "", "tool_calls": [{"id": "c1", "name": "ls", "arguments": {}}], "usage": {}}

    agent.answer(MODEL_JOB, {}, ask)
    assert [t["step"] for t in turns] == [1, 2, 3]  # max_steps
    assert turns[-1]["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "no tools are available"}


def test_local_runner_waits_for_the_hosts_turn_with_inotify(local_runner):
    lay, secret, watch, proc, alive = local_runner
    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    send(lay, secret, "job", "job-1", MODEL_JOB)
    asked = watch.wait("model", CHAT, RESULT_TIMEOUT_S, alive)
    assert asked.job == "job-1" and asked.payload["step"] == 1
    send(lay, secret, "job", "job-2", JOB)                # waits until job-1 is done
    send(lay, secret, "turn", "job-0", {"text": "stale"})  # a turn for no job of ours: dropped
    send(lay, secret, "turn", "job-1", {"text": "model text", "provider": "openai", "model": "m",
                                        "usage": {"input_tokens": 1, "output_tokens": 2}})
    result = watch.wait("result", CHAT, RESULT_TIMEOUT_S, alive)
    assert result.job == "job-1" and result.payload["text"] == "model text"
    second = watch.wait("result", CHAT, RESULT_TIMEOUT_S, alive)  # then job-2, offline
    assert second.job == "job-2" and second.payload["offline"] and "Friday" in second.payload["text"]
    send(lay, secret, "job", "job-3", MODEL_JOB)
    watch.wait("model", CHAT, RESULT_TIMEOUT_S, alive)
    proc.terminate()                                       # SIGTERM while waiting for a turn
    assert proc.wait(EXIT_TIMEOUT_S) == 0
    assert watch.wait("exit", CHAT, EXIT_TIMEOUT_S).payload["reason"] == "SIGTERM"


def test_local_runner_exits_when_its_folder_is_removed(local_runner):
    """A local-process agent must not linger after the pool discards its folder."""
    lay, secret, watch, proc, alive = local_runner
    watch.wait("ready", ipc.UNASSIGNED_CHAT, READY_TIMEOUT_S, alive)
    shutil.rmtree(lay.ipc_dir)
    assert proc.wait(EXIT_TIMEOUT_S) == 0
