"""No secret in any log, frame, database row or status: a real system with every kind of
secret configured (the provider's API key, an API key in the environment, the CurveZMQ
server and client keys, and the per-agent IPC keys it makes itself) is driven through every
tier, commands and errors; then everything it wrote or said is searched for each secret,
in plain, hex, base64 and z85 forms.

The model provider is a small HTTP server in this test (bench/fake_provider.py, streaming
like Anthropic's API) that checks the key it is sent, so the key provably travels to where it
belongs (from the model gateway) and nowhere else. Agents have no network and no key: they ask
the gateway for model turns over their IPC folder.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import psutil
import pytest
import zmq
from zmq.utils import z85

from conftest import REPO, Warmwire, free_port, wait_for
from bench.fake_provider import FakeProvider
from proto.config import load
from proto.curve import load_pair, load_public
from services.pool_manager.backends.common import home_label
from test_pool import docker_engine, labelled_containers

pytestmark = pytest.mark.slow
ANSWER_DEADLINE = 60.0
PROVOKE_401 = "provoke-401"
PROVIDER_REFUSES = f"Please analyse this and {PROVOKE_401}: why does my build fail on line 7?"
# Files that are meant to hold a secret (and are themselves owner-only).
SECRET_FILES = ("ipc.key", "server.key_secret", "client.key_secret")


def forms(label: str, secret: bytes) -> list[tuple[str, bytes]]:
    """The ways a secret could be written down."""
    found = [(label, secret), (f"{label} (hex)", secret.hex().encode()),
             (f"{label} (base64)", base64.b64encode(secret).rstrip(b"=")),
             (f"{label} (base64url)", base64.urlsafe_b64encode(secret).rstrip(b"="))]
    if len(secret) % 4 == 0:
        found.append((f"{label} (z85)", z85.encode(secret)))
    return found


def curve_secret(path: Path) -> bytes:
    return z85.decode(load_pair(path)[1])


@pytest.fixture(scope="module", params=["docker", "local"])
def system(request, tmp_path_factory):
    engine = docker_engine() if request.param == "docker" else None
    home = tmp_path_factory.mktemp(f"sec-{request.param}")
    outside = tmp_path_factory.mktemp("provider-key")
    provider_key = f"sk-ant-api03-WWSECRET{uuid.uuid4().hex}"
    key_file = outside / "anthropic.key"
    key_file.write_text(provider_key + "\n")
    key_file.chmod(0o600)
    provider = FakeProvider(provider_key, refuse_text=PROVOKE_401).start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(
        WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://0.0.0.0:{port}",
        WARMWIRE_ROUTER_CURVE_SECRET_KEY_FILE="keys/server.key_secret",
        WARMWIRE_ROUTER_CURVE_AUTHORIZED_KEYS="keys/authorized",
        WARMWIRE_CLIENT_CURVE_SERVER_KEY_FILE="keys/server.key",
        WARMWIRE_CLIENT_CURVE_SECRET_KEY_FILE="keys/client.key_secret",
        WARMWIRE_POOL_BACKEND=request.param,
        WARMWIRE_AGENTS_PROVIDER="anthropic", WARMWIRE_AGENTS_API_KEY_FILE=str(key_file),
        WARMWIRE_AGENTS_PROVIDER_URL=provider.url,
        # A key in the environment too: the agents must not get it, nor anything print it.
        ANTHROPIC_API_KEY=f"sk-ant-env-WWSECRET{uuid.uuid4().hex}",
        OPENAI_API_KEY=f"sk-openai-env-WWSECRET{uuid.uuid4().hex}",
    )
    keys = subprocess.run([sys.executable, "-m", "supervisor", "keys"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=30)
    assert keys.returncode == 0, keys.stderr
    warmwire = Warmwire(home, env)
    warmwire.backend, warmwire.engine, warmwire.provider = request.param, engine, provider
    warmwire.loopback = f"tcp://127.0.0.1:{port}"
    warmwire.label = home_label(load(env))
    warmwire.ipc_keys = set()
    warmwire.secrets = (
        forms("provider API key", provider_key.encode())
        + forms("ANTHROPIC_API_KEY", env["ANTHROPIC_API_KEY"].encode())
        + forms("OPENAI_API_KEY", env["OPENAI_API_KEY"].encode())
        + forms("curve server secret", curve_secret(home / "keys" / "server.key_secret"))
        + forms("curve client secret", curve_secret(home / "keys" / "client.key_secret")))
    warmwire.start()
    yield warmwire
    warmwire.stop()
    provider.stop()


def collect_ipc_keys(system: Warmwire) -> None:
    """The per-agent HMAC keys alive now (an agent's key goes when it is retired)."""
    for path in (system.home / "agents").glob("*/ipc.key"):
        try:
            system.ipc_keys.add(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError):
            pass  # retired meanwhile


def all_secrets(system: Warmwire) -> list[tuple[str, bytes]]:
    found = list(system.secrets)
    for number, key in enumerate(sorted(system.ipc_keys)):
        found += forms(f"ipc key #{number}", key)
    return found


def leaks(system: Warmwire, where: str, data: bytes) -> list[str]:
    return [f"{label} in {where}" for label, needle in all_secrets(system) if needle in data]


def files_written(system: Warmwire) -> dict[str, bytes]:
    """Every file in the home (database, WAL, chroma, logs, IPC files, supervisor output)
    except the ones whose job is to hold a secret."""
    found = {}
    for path in system.home.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.name not in SECRET_FILES:
            try:
                found[str(path.relative_to(system.home))] = path.read_bytes()
            except OSError:
                pass  # removed meanwhile (an agent's IPC file, a WAL checkpointed away)
    return found


def database_rows(system: Warmwire) -> bytes:
    """Every value of every column of every table, as text."""
    values = []
    with system.db() as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                values.extend(str(value) if not isinstance(value, bytes) else value.hex() for value in row)
    assert "messages" in tables and "replies" in tables
    return "\n".join(values).encode()


def agents_seen_from_outside(system: Warmwire) -> bytes:
    """What `docker inspect` and `docker logs` show of the agents, or a local agent's
    command line and environment."""
    seen = []
    if system.engine is not None:
        for container in labelled_containers(system):
            seen.append(json.dumps(container.attrs))
            seen.append(container.logs().decode(errors="replace"))
    else:
        for process in psutil.process_iter(["cmdline", "environ"]):
            environ = process.info["environ"] or {}
            if str(system.home) in environ.get("WARMWIRE_IPC_DIR", ""):
                seen.append(json.dumps([process.info["cmdline"], environ]))
    return "\n".join(seen).encode()


def curve_client(system: Warmwire):
    home = system.home / "keys"
    public, secret = load_pair(home / "client.key_secret")
    return system.client(system.loopback, {zmq.CURVE_SERVERKEY: load_public(home / "server.key"),
                                           zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret})


def final_frame(client, message_id: str, frames: list[bytes]) -> dict:
    while True:
        raw = client.sock.recv() if client.sock.poll(int(ANSWER_DEADLINE * 1000)) else None
        assert raw is not None, f"no answer to {message_id}"
        frames.append(raw)
        frame = msgspec.msgpack.decode(raw)
        if frame.get("id") == message_id and frame.get("kind") not in ("queued", "progress", "delta"):
            return frame


def test_agent_folders_are_private_to_warmwire_and_the_agent(system):
    wait_for(lambda: list((system.home / "agents").glob("*/ipc.key")), ANSWER_DEADLINE, "an agent")
    agents = system.home / "agents"
    assert agents.stat().st_mode & 0o777 == 0o700 and agents.stat().st_uid == os.geteuid()
    agent_uid = 10001 if os.geteuid() == 0 and system.backend == "docker" else os.geteuid()
    for root in agents.iterdir():
        assert root.stat().st_mode & 0o777 == 0o700 and root.stat().st_uid == os.geteuid()
        key = root / "ipc.key"
        assert key.stat().st_mode & 0o777 == 0o400 and key.stat().st_uid == agent_uid, key
        assert not (root / "provider.key").exists()  # no provider key reaches an agent
        for folder in (root / "ipc", root / "ipc" / "in", root / "ipc" / "out"):
            info = folder.stat()
            assert info.st_mode & 0o777 == 0o700 and info.st_uid == agent_uid, folder


def test_no_secret_leaves_in_a_log_frame_row_or_status(system):
    client = curve_client(system)
    frames: list[bytes] = []
    collect_ipc_keys(system)
    answers = {}
    for text in ("hello!", "remember that the boat is called Wavelet",
                 "search boat", "how many legs does a spider have?",
                 "Please debug this Python traceback: KeyError 'port' in parse_config() line 42",
                 PROVIDER_REFUSES,
                 "/status", "/cost"):
        message_id = client.send(text, chat="secrets")
        answers[text] = final_frame(client, message_id, frames)
        collect_ipc_keys(system)
    tiers = {frame.get("tier") for frame in answers.values()}
    assert {"inline", "oracle-only", "container-light", "container-full"} <= tiers, answers
    # The key reached the provider (so it was live in this run), and only the right one did.
    assert system.provider.answered >= 2 and system.provider.keys_seen() == {system.provider.key}, \
        [frame.get("text") for frame in answers.values()]
    assert "the model says: fine" in answers["how many legs does a spider have?"]["text"]
    assert "HTTP 401" in answers[PROVIDER_REFUSES]["text"]
    # Rejected frames: not MessagePack, a wrong field, over the size limit.
    for bad in (b"\xc1garbage", msgspec.msgpack.encode({"type": "chat", "id": 1}),
                msgspec.msgpack.encode({"type": "chat", "id": "big", "chat": "c", "sender": "s",
                                        "text": "x" * 300_000})):
        client.send_raw(bad)
        frames.append(client.sock.recv() if client.sock.poll(int(ANSWER_DEADLINE * 1000)) else b"")
        assert msgspec.msgpack.decode(frames[-1])["kind"] == "error"
    chat = system.cli("chat", "--chat", "secrets-cli", "thank you", timeout=60)
    status_json, status_text = system.cli("status", "--json"), system.cli("status")
    assert chat.returncode == 0 and status_json.returncode == 0, (chat.stderr, status_json.stdout)
    assert system.ipc_keys, "no agent key was seen"

    found: list[str] = []
    for number, frame in enumerate(frames):
        found += leaks(system, f"frame #{number} to the client", frame)
    for name, result in (("chat", chat), ("status --json", status_json), ("status", status_text)):
        found += leaks(system, f"`{name}` output", (result.stdout + result.stderr).encode())
    found += leaks(system, "the agents seen from outside", agents_seen_from_outside(system))
    for process in psutil.Process(system.proc.pid).children(recursive=True):
        found += leaks(system, f"the command line of {process.name()}", " ".join(process.cmdline()).encode())
    for name, data in files_written(system).items():  # while running: the WAL is there too
        found += leaks(system, name, data)
    found += leaks(system, "the database's rows", database_rows(system))
    system.stop()
    for name, data in files_written(system).items():
        found += leaks(system, f"{name} (after stop)", data)
    assert not found, found
