"""Security defaults: private socket folders, a loopback frontend unless it is protected,
and CurveZMQ with ZAP for a frontend other hosts can reach, on real sockets and processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from conftest import REPO, Warmwire, free_port, wait_for
from proto.config import load
from proto.curve import (
    CurveError, ZapHandler, check_endpoints, create_keys, frontend_options, frontend_policy, load_pair,
    load_public,
)
from proto.loop import EventLoop
from proto.sockets import bind_router, is_local, local_connect_endpoint

HANDSHAKE_DEADLINE = 30.0
SUCCEEDED, FAILED_PROTOCOL, FAILED_AUTH = (zmq.EVENT_HANDSHAKE_SUCCEEDED,
                                           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                           zmq.EVENT_HANDSHAKE_FAILED_AUTH)


# ------------------------------------------------------------------ what counts as local

@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:7400", True), ("tcp://127.9.8.7:7400", True), ("tcp://[::1]:7400", True),
    ("tcp://localhost:7400", True), ("tcp://lo:7400", True), ("ipc:///x/y.sock", True),
    ("inproc://x", True),
    ("tcp://0.0.0.0:7400", False), ("tcp://*:7400", False), ("tcp://[::]:7400", False),
    ("tcp://192.168.1.5:7400", False), ("tcp://eth0:7400", False),
    ("tcp://assistant.example.org:7400", False), ("ws://127.0.0.1:7400", False),
    ("udp://127.0.0.1:7400", False),
])
def test_only_ipc_and_loopback_count_as_local(endpoint, local):
    assert is_local(endpoint) is local


@pytest.mark.parametrize("bound, connect", [
    ("tcp://*:7400", "tcp://127.0.0.1:7400"), ("tcp://0.0.0.0:7400", "tcp://127.0.0.1:7400"),
    ("tcp://[::]:7400", "tcp://[::1]:7400"), ("tcp://192.168.1.5:7400", "tcp://192.168.1.5:7400"),
    ("ipc:///x/f.sock", "ipc:///x/f.sock"),
])
def test_a_local_client_reaches_a_frontend_bound_to_every_address_through_loopback(bound, connect):
    assert local_connect_endpoint(bound) == connect


# ------------------------------------------------------------------ ipc folders

def test_an_ipc_socket_is_bound_only_in_a_folder_its_owner_alone_can_enter(tmp_path):
    ctx = zmq.Context.instance()
    fresh = tmp_path / "fresh" / "sockets"
    sock = bind_router(ctx, f"ipc://{fresh}/a.sock")
    sock.close()
    assert fresh.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(ValueError, match="other users can enter"):
        bind_router(ctx, f"ipc://{shared}/a.sock")
    assert not (shared / "a.sock").exists()
    with pytest.raises(ValueError, match="abstract"):
        bind_router(ctx, "ipc://@warmwire-test")


def test_an_internal_endpoint_on_the_network_or_in_a_shared_folder_stops_the_start(tmp_path):
    base = {"WARMWIRE_HOME": str(tmp_path / "home")}
    check_endpoints(load(base))  # the defaults pass
    with pytest.raises(CurveError, match="endpoints.store.*allow_network"):
        check_endpoints(load({**base, "WARMWIRE_ENDPOINTS_STORE": "tcp://0.0.0.0:7401"}))
    check_endpoints(load({**base, "WARMWIRE_ENDPOINTS_STORE": "tcp://0.0.0.0:7401",
                          "WARMWIRE_ENDPOINTS_ALLOW_NETWORK": "true"}))
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o711)
    with pytest.raises(ValueError, match=f"other users can enter {shared}"):
        check_endpoints(load({**base, "WARMWIRE_ENDPOINTS_SEARCH": f"ipc://{shared}/s.sock"}))


@pytest.mark.slow
def test_every_ipc_socket_folder_is_owner_only_even_when_configured_elsewhere(home, make_env):
    elsewhere = home / "elsewhere" / "store"
    system = Warmwire(home, make_env(WARMWIRE_ENDPOINTS_STORE=f"ipc://{elsewhere}/st.sock"))
    system.start()
    try:
        assert system.client().ask("hello")["type"] == "reply"  # the store works from there
        folders = {Path(p).parent for p in home.rglob("*") if p.is_socket()}
        assert elsewhere in folders and home / "run" in folders
        for folder in folders:
            assert folder.stat().st_mode & 0o777 == 0o700, folder
    finally:
        system.stop()


# ------------------------------------------------------------------ the frontend's policy

@pytest.mark.slow
def test_a_frontend_on_an_ipc_socket_serves_only_its_owner(home, make_env):
    """Loopback tcp is open to every local user; an ipc frontend in the 0700 run folder is not."""
    frontend = f"ipc://{home}/run/frontend.sock"
    system = Warmwire(home, make_env(WARMWIRE_FRONTEND=frontend))
    system.start()
    try:
        assert system.client().ask("hello")["type"] == "reply"
        chat = system.cli("chat", "thanks")
        assert chat.returncode == 0, chat.stderr
        assert (home / "run").stat().st_mode & 0o777 == 0o700
    finally:
        system.stop()


def test_by_default_the_frontend_is_on_loopback():
    config = load({})
    assert config.router.frontend == "tcp://127.0.0.1:7400" and is_local(config.router.frontend)
    assert frontend_policy(config.home, config.router.frontend, "", "", False) is None


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:7400", "tcp://*:7400", "tcp://[::]:7400",
                                      "tcp://192.168.1.5:7400", "tcp://eth0:7400"])
def test_a_frontend_other_hosts_can_reach_needs_keys_or_an_explicit_opt_in(tmp_path, endpoint):
    with pytest.raises(CurveError, match="refusing to serve.*curve_secret_key_file.*allow_insecure"):
        frontend_policy(tmp_path, endpoint, "", "", False)
    assert frontend_policy(tmp_path, endpoint, "", "", True) is None


def run_cli(env: dict, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("host", ["0.0.0.0", "*"])
def test_warmwire_refuses_to_start_an_unprotected_frontend_other_hosts_can_reach(make_env, host):
    port = free_port()
    result = run_cli(make_env(WARMWIRE_FRONTEND=f"tcp://{host}:{port}"), "run")
    assert result.returncode == 1
    assert f"refusing to serve tcp://{host}:{port}" in result.stderr
    assert not port_is_open(port)


@pytest.mark.slow
def test_the_router_alone_refuses_it_too(home, make_env):
    port = free_port()
    env = make_env(WARMWIRE_FRONTEND=f"tcp://0.0.0.0:{port}")
    result = subprocess.run([sys.executable, "-m", "services.router"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "failed to start: refusing to serve" in result.stderr
    assert not port_is_open(port)


# ------------------------------------------------------------------ keys

def make_keys(env: dict, *args: str) -> subprocess.CompletedProcess:
    result = run_cli(env, "keys", *args)
    assert result.returncode == 0, result.stderr
    return result


def test_keys_are_created_owner_only_authorized_at_once_and_never_overwritten(home, make_env):
    env = make_env()
    make_keys(env)
    make_keys(env, "--client", "phone")
    keys = home / "keys"
    assert keys.stat().st_mode & 0o777 == 0o700
    assert (keys / "authorized").stat().st_mode & 0o777 == 0o700
    for path in keys.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o600, path
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["client.key", "phone.key"]
    server_public, server_secret = load_pair(keys / "server.key_secret")
    assert load_public(keys / "server.key") == server_public
    assert load_public(keys / "authorized" / "phone.key") == load_pair(keys / "phone.key_secret")[0]
    before = (keys / "phone.key_secret").read_bytes()
    again = run_cli(env, "keys", "--client", "phone")
    assert again.returncode == 1 and "exists already" in again.stderr
    assert (keys / "phone.key_secret").read_bytes() == before
    assert load_pair(keys / "server.key_secret")[1] == server_secret  # the server's is kept


def test_unusable_key_settings_are_refused_with_the_reason(home, make_env):
    env = make_env()
    make_keys(env)
    secret = home / "keys" / "server.key_secret"
    with pytest.raises(CurveError, match="go together"):
        frontend_policy(home, "tcp://0.0.0.0:1", str(secret), "", False)
    empty = home / "keys" / "nobody"
    empty.mkdir()
    with pytest.raises(CurveError, match="no client public keys"):
        frontend_policy(home, "tcp://0.0.0.0:1", "keys/server.key_secret", "keys/nobody", False)
    secret.chmod(0o644)
    with pytest.raises(CurveError, match="chmod 600"):
        frontend_policy(home, "tcp://0.0.0.0:1", "keys/server.key_secret", "keys/authorized", False)
    with pytest.raises(CurveError, match="no secret key"):
        frontend_policy(home, "tcp://0.0.0.0:1", "keys/server.key", "keys/authorized", False)
    secret.chmod(0o600)
    broken = home / "keys" / "authorized" / "broken.key"
    broken.write_text('curve\n    public-key = "not a z85 key at all, not 40 characters"\n')
    with pytest.raises(CurveError, match=f"{broken} holds no valid public key"):
        frontend_policy(home, "tcp://0.0.0.0:1", "keys/server.key_secret", "keys/authorized", False)


def curve_env(make_env, home: Path, port: int) -> dict:
    return make_env(WARMWIRE_FRONTEND=f"tcp://0.0.0.0:{port}",
                    WARMWIRE_ROUTER_CURVE_SECRET_KEY_FILE="keys/server.key_secret",
                    WARMWIRE_ROUTER_CURVE_AUTHORIZED_KEYS=str(home / "keys" / "authorized"))


def test_the_frontend_socket_is_a_curve_server_with_zap(home, make_env):
    env = curve_env(make_env, home, free_port())
    make_keys(env)
    config = load(env)
    ctx = zmq.Context()
    loop = EventLoop()
    try:
        frontend = bind_router(ctx, config.router.frontend, options=frontend_options(config, ctx, loop))
        assert frontend.getsockopt(zmq.CURVE_SERVER) == 1
        assert frontend.getsockopt(zmq.MECHANISM) == zmq.CURVE
        assert frontend.getsockopt(zmq.ZAP_DOMAIN) == b"warmwire"
    finally:
        loop.close()
        ctx.destroy(linger=0)


@pytest.mark.hostile
def test_zap_admits_authorized_keys_only_and_a_flood_of_refusals_is_one_log_line(tmp_path, caplog):
    authorized = tmp_path / "authorized"
    public_file, _ = create_keys(authorized, "laptop")
    known = z85.decode(load_public(public_file))
    (authorized / "garbled.key").write_text("public-key = \"%%%%\"\n")  # admits nobody, breaks nothing
    ctx = zmq.Context()
    zap = ZapHandler(ctx, authorized, log_interval=3600)
    try:
        def ask(mechanism: bytes, *credentials: bytes) -> list[bytes]:
            return zap.answer([b"1.0", b"7", b"warmwire", b"10.0.0.9", b"", mechanism, *credentials])
        assert ask(b"CURVE", known)[2:5] == [b"200", b"OK", z85.encode(known)]
        for _ in range(100):
            assert ask(b"CURVE", os.urandom(32))[2] == b"400"
        assert ask(b"NULL")[2] == b"400" and ask(b"PLAIN", b"user", b"password")[2] == b"400"
        assert zap.answer([b"1.0"])[2] == b"400"
    finally:
        zap.close()
        ctx.term()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == ["refused 1 client(s) since the last such line; the last from 10.0.0.9: "
                        "its key is not authorized"]


# ------------------------------------------------------------------ curve on real processes

@pytest.fixture(scope="module")
def curve_system(tmp_path_factory):
    home = tmp_path_factory.mktemp("curve")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
    env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://0.0.0.0:{port}",
               WARMWIRE_ROUTER_CURVE_SECRET_KEY_FILE="keys/server.key_secret",
               WARMWIRE_ROUTER_CURVE_AUTHORIZED_KEYS="keys/authorized")
    make_keys(env)
    make_keys(env, "--client", "phone")
    system = Warmwire(home, env)
    system.start()
    system.loopback = f"tcp://127.0.0.1:{port}"
    yield system
    system.stop()


def client_keys(home: Path, name: str) -> dict:
    public, secret = load_pair(home / "keys" / f"{name}.key_secret")
    return {zmq.CURVE_SERVERKEY: load_public(home / "keys" / "server.key"),
            zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def handshake(system: Warmwire, options: dict):
    """A client that connects with these options; returns it and its first handshake event."""
    # The monitor is attached before connecting: a handshake that completes first is never
    # reported to a monitor attached after it.
    monitors = []
    client = system.client(system.loopback, options,
                           before_connect=lambda sock: monitors.append(sock.get_monitor_socket()))
    monitor = monitors[0]
    try:
        events = (SUCCEEDED, FAILED_PROTOCOL, FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        deadline = time.monotonic() + HANDSHAKE_DEADLINE
        while monitor.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            event = recv_monitor_message(monitor)["event"]
            if event in events:
                return client, event
        raise AssertionError("no handshake within the deadline")
    finally:
        client.sock.disable_monitor()
        monitor.close()


def try_send(client, text: str) -> str:
    """Send without waiting: a DEALER with no connected peer would block forever."""
    message_id = uuid.uuid4().hex
    frame = {"type": "chat", "id": message_id, "chat": "intruder", "sender": "x", "text": text}
    try:
        client.sock.send(msgspec.msgpack.encode(frame), zmq.NOBLOCK)
    except zmq.Again:
        pass  # not even queued: no connection to queue it on
    return message_id


def stored(system: Warmwire, message_id: str) -> bool:
    with system.db() as db:
        return db.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone() is not None


@pytest.mark.slow
def test_an_authorized_client_is_answered_over_a_frontend_bound_to_every_address(curve_system):
    client, event = handshake(curve_system, client_keys(curve_system.home, "client"))
    assert event == SUCCEEDED
    frame = client.ask("hello there")
    assert frame["type"] == "reply" and frame["tier"] == "inline" and stored(curve_system, frame["id"])


@pytest.mark.slow
def test_the_chat_command_uses_the_client_keys(curve_system):
    """With the server's own settings (frontend tcp://*:PORT): chat connects through loopback."""
    env = {**curve_system.env, "WARMWIRE_FRONTEND": curve_system.frontend.replace("0.0.0.0", "*"),
           "WARMWIRE_CLIENT_CURVE_SERVER_KEY_FILE": "keys/server.key",
           "WARMWIRE_CLIENT_CURVE_SECRET_KEY_FILE": "keys/phone.key_secret"}
    result = run_cli(env, "chat", "--chat", "cli-curve", "thanks!")
    assert result.returncode == 0, result.stderr
    assert msgspec.json.decode(result.stdout.splitlines()[-1])["type"] == "reply"


def assert_shut_out(system: Warmwire, intruder, text: str) -> None:
    """What the intruder sends is never read or stored, and the router keeps serving."""
    sent = try_send(intruder, text)
    friend = system.client(system.loopback, client_keys(system.home, "client"))
    assert friend.ask("good morning")["type"] == "reply"
    assert not intruder.sock.poll(0) and not stored(system, sent)


@pytest.mark.hostile
@pytest.mark.slow
def test_a_plaintext_client_is_refused_and_the_router_keeps_serving(curve_system):
    intruder, event = handshake(curve_system, {})
    assert event in (FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
    assert_shut_out(curve_system, intruder, "hello, anyone?")


@pytest.mark.hostile
@pytest.mark.slow
def test_a_client_with_an_unknown_key_is_refused_by_zap(curve_system):
    public, secret = zmq.curve_keypair()
    stranger = {**client_keys(curve_system.home, "client"),
                zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}
    intruder, event = handshake(curve_system, stranger)
    assert event == FAILED_AUTH
    wait_for(lambda: "the last from 127.0.0.1: its key is not authorized"
             in curve_system.logs(), 10, "the router to log the refusal")
    assert_shut_out(curve_system, intruder, "let me in")


@pytest.mark.hostile
@pytest.mark.slow
def test_a_client_that_does_not_know_the_server_key_gets_nothing(curve_system):
    """A man in the middle without the server's secret key cannot complete the handshake."""
    impostor_public, _ = zmq.curve_keypair()
    options = {**client_keys(curve_system.home, "client"), zmq.CURVE_SERVERKEY: impostor_public}
    assert_shut_out(curve_system, curve_system.client(curve_system.loopback, options), "hello")


@pytest.mark.hostile
@pytest.mark.slow
def test_deleting_a_clients_public_key_refuses_its_next_connection(curve_system):
    options = client_keys(curve_system.home, "phone")
    assert handshake(curve_system, options)[1] == SUCCEEDED
    (curve_system.home / "keys" / "authorized" / "phone.key").unlink()
    revoked, event = handshake(curve_system, options)
    assert event == FAILED_AUTH
    assert_shut_out(curve_system, revoked, "still here?")


def test_a_client_with_half_its_keys_configured_is_told_so(home, make_env):
    result = run_cli(make_env(WARMWIRE_CLIENT_CURVE_SERVER_KEY_FILE="keys/server.key"),
                     "chat", "hello")
    assert result.returncode == 2 and "go together" in result.stderr
