"""The whole system in real processes: answers, storage, restarts, shutdown, bad input."""

from __future__ import annotations

import json
import os
import signal
import time

import msgspec
import psutil
import pytest

from conftest import Warmwire, wait_for
from proto.frames import MISSING_FIELDS, NO_TYPE, NOT_A_MAP, NOT_A_STRING, NOT_MSGPACK, UNKNOWN_TYPE
from services.router.classifier import Classifier
from supervisor.supervisor import SERVICES as supervised_services

pytestmark = pytest.mark.slow
SERVICES = ("store-writer", "search-cache", "model-gateway", "pool-manager", "router")
RESTART_DEADLINE = 30.0


def test_thai_and_english_greetings_get_inline_replies_that_are_stored(warmwire):
    client = warmwire.client()
    english = client.ask("good morning!", chat="en")
    thai = client.ask("สวัสดีครับ", chat="th")
    assert english["type"] == "reply" and english["tier"] == "inline"
    assert thai["type"] == "reply" and thai["tier"] == "inline"
    assert any("\u0e00" <= ch <= "\u0e7f" for ch in thai["text"]), thai  # answered in Thai
    with warmwire.db() as db:
        for frame, text in ((english, "good morning!"), (thai, "สวัสดีครับ")):
            assert db.execute("SELECT text, tier FROM messages WHERE id = ?", (frame["id"],)).fetchone() == (text, "inline")
            assert db.execute("SELECT kind, text FROM replies WHERE message_id = ?", (frame["id"],)).fetchone() == ("reply", frame["text"])


def test_a_resent_id_is_answered_again_from_storage_and_stored_once(warmwire):
    client = warmwire.client()
    first = client.ask("thanks a lot", id="resend-1")
    again = client.ask("thanks a lot", id="resend-1")
    assert again == first
    # A resend racing the first copy (both in flight at once) is answered too, once stored.
    client.send("hello", id="resend-2")
    client.send("hello", id="resend-2")
    answers = [client.recv(), client.recv()]
    assert answers[0] == answers[1] and answers[0]["id"] == "resend-2"
    with warmwire.db() as db:
        assert db.execute("SELECT count(*) FROM messages WHERE id LIKE 'resend-%'").fetchone() == (2,)
        assert db.execute("SELECT count(*) FROM replies WHERE message_id LIKE 'resend-%'").fetchone() == (2,)


def test_a_container_full_message_is_answered_by_the_offline_agent_and_stored(warmwire):
    frame = warmwire.client().ask("Please debug this Python traceback: KeyError in parse_config() line 42")
    assert frame["type"] == "reply" and frame["tier"] == "container-full", frame
    assert "offline agent" in frame["text"]
    with warmwire.db() as db:
        assert db.execute("SELECT tier, status FROM messages WHERE id = ?", (frame["id"],)).fetchone() == ("container-full", "answered")
    def job_state():  # the pool-manager writes it beside the router's reply: maybe a moment later
        with warmwire.db() as db:
            return db.execute("SELECT state FROM jobs WHERE id = ?", (frame["id"],)).fetchone()
    wait_for(lambda: job_state() == ("done",), 30, "the job to be stored as done")


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_killed_with_sigkill_is_restarted_and_the_next_message_works(warmwire, name):
    before = warmwire.service(name)
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: (s := warmwire.service(name))["state"] == "healthy" and s["pid"] != before["pid"],
             RESTART_DEADLINE, f"{name} to be restarted and healthy")
    assert warmwire.service(name)["restarts"] == before["restarts"] + 1
    assert warmwire.client().ask("hi")["tier"] == "inline"
    assert f"{name} exited (signal SIGKILL); restarting" in warmwire.logs()


def test_a_stopped_service_that_stops_answering_probes_is_replaced(warmwire):
    before = warmwire.service("search-cache")
    os.kill(before["pid"], signal.SIGSTOP)
    wait_for(lambda: (s := warmwire.service("search-cache"))["state"] == "healthy" and s["pid"] != before["pid"],
             RESTART_DEADLINE, "the frozen search-cache to be replaced")
    assert "search-cache is unresponsive" in warmwire.logs()
    assert not psutil.pid_exists(before["pid"]) or psutil.Process(before["pid"]).status() == psutil.STATUS_ZOMBIE


def test_store_writer_killed_while_messages_stream_loses_nothing_and_duplicates_nothing(warmwire):
    client = warmwire.client()
    total, kill_at = 400, 150
    store_pid = warmwire.service("store-writer")["pid"]
    ids = []
    for number in range(total):
        ids.append(client.send(f"thanks #{number}", chat="stream"))
        if number == kill_at:
            os.kill(store_pid, signal.SIGKILL)
    answered = set()
    while len(answered) < total:
        frame = client.recv(timeout=30)
        assert frame["type"] == "reply", frame
        answered.add(frame["id"])
    assert answered == set(ids)
    with warmwire.db() as db:
        stored = [row[0] for row in db.execute("SELECT id FROM messages WHERE chat = 'stream'")]
        replies = db.execute("SELECT count(*) FROM replies r JOIN messages m ON m.id = r.message_id "
                             "WHERE m.chat = 'stream'").fetchone()[0]
    assert sorted(stored) == sorted(ids)
    assert replies == total
    assert warmwire.service("store-writer")["restarts"] == 1


def test_sigterm_to_the_supervisor_stops_every_child_within_10_seconds(warmwire):
    children = [s["pid"] for s in warmwire.status()["services"]]
    assert all(children)
    started = time.monotonic()
    warmwire.proc.send_signal(signal.SIGTERM)
    assert warmwire.proc.wait(10) == 0
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in children), 10 - (time.monotonic() - started),
             "every child to exit")
    log = warmwire.logs()
    assert log.index("router stopped") < log.index("store-writer stopped")


def test_killing_the_supervisor_leaves_no_orphans(warmwire):
    children = [s["pid"] for s in warmwire.status()["services"]]
    warmwire.proc.kill()
    warmwire.proc.wait()
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in children), 30, "orphans to exit")


def chat_map(**fields) -> dict:
    return {"type": "chat", "id": "x0", "chat": "c", "sender": "s", "text": "hi", **fields}


# Each bad frame and the router's own reason for it (warmwire's words, not msgspec's).
BAD_FRAMES = {
    "garbage": (b"\xc1\xff not msgpack", NOT_MSGPACK),
    "not a map": (msgspec.msgpack.encode([1, 2, 3]), NOT_A_MAP),
    "no type": (msgspec.msgpack.encode({"id": "x1", "chat": "c", "sender": "s", "text": "hi"}), NO_TYPE),
    "unknown type": (msgspec.msgpack.encode({"type": "launch", "id": "x2"}), UNKNOWN_TYPE.format("'launch'")),
    "type is case-sensitive": (msgspec.msgpack.encode(chat_map(type="Chat")), UNKNOWN_TYPE.format("'Chat'")),
    "wrong field type": (msgspec.msgpack.encode(chat_map(id="x3", text=42)), NOT_A_STRING.format("text", "int")),
    "bin, not str": (msgspec.msgpack.encode(chat_map(id="x6", text=b"hi")), NOT_A_STRING.format("text", "bin")),
    "nil for a string": (msgspec.msgpack.encode(chat_map(id="x7", sender=None)), NOT_A_STRING.format("sender", "nil")),
    "missing field": (msgspec.msgpack.encode({"type": "chat", "id": "x4", "chat": "c"}),
                      MISSING_FIELDS.format("'sender', 'text'")),
    "empty id": (msgspec.msgpack.encode(chat_map(id="")), "must not be empty"),
    "oversized": (msgspec.msgpack.encode(chat_map(id="x5", text="a" * 5000)), "over the 4096-byte limit"),
}


def test_each_kind_of_bad_frame_gets_an_error_notice_and_the_router_keeps_serving(home, make_env):
    system = Warmwire(home, make_env(WARMWIRE_ROUTER_MAX_FRAME_BYTES="4096"))
    system.start()
    try:
        client = system.client()
        for name, (data, expected) in BAD_FRAMES.items():
            client.send_raw(data)
            frame = client.recv()
            assert frame["type"] == "notice" and frame["kind"] == "error", (name, frame)
            assert expected in frame["text"], (name, frame)
            assert not system.db().execute("SELECT count(*) FROM messages WHERE id LIKE 'x%'").fetchone()[0]
        client.sock.send_multipart([b"two", b"frames"])
        assert "single frame" in client.recv()["text"]
        assert client.ask("hello")["tier"] == "inline"
        assert system.service("router")["restarts"] == 0
    finally:
        system.stop()


def test_an_id_reused_for_another_message_is_refused_and_a_resend_is_answered_again(warmwire):
    client = warmwire.client()
    first = client.ask("hello there", chat="reuse", id="same-id")
    assert first["type"] == "reply"
    assert client.ask("hello there", chat="reuse", id="same-id") == first  # a resend
    for other in ({"text": "good night"}, {"chat": "elsewhere", "text": "hello there"}):
        refused = client.ask(other.pop("text"), id="same-id", **{"chat": "reuse", **other})
        assert refused["type"] == "notice" and refused["kind"] == "error", refused
        assert "same-id" in refused["text"] and refused["id"] == "same-id"
    rows = warmwire.db().execute("SELECT chat, text FROM messages WHERE id = 'same-id'").fetchall()
    assert rows == [("reuse", "hello there")]
    replies = warmwire.db().execute("SELECT count(*) FROM replies WHERE message_id = 'same-id'").fetchone()[0]
    assert replies == 1


def test_a_flapping_service_is_given_up_with_a_clear_log_line(home, make_env):
    # A database path that is a folder: the store-writer cannot start, every time.
    (home / "data" / "warmwire.db").mkdir(parents=True)
    env = make_env(WARMWIRE_SUPERVISOR_BACKOFF_MAX="0.2", WARMWIRE_SUPERVISOR_FLAP_MAX_RESTARTS="2")
    system = Warmwire(home, env)
    system.spawn()
    try:
        wait_for(lambda: any(s["state"] == "failed" for s in system.status()["services"]), 30,
                 "the store-writer to be given up")
        assert "store-writer exited (code 1) and is flapping" in system.logs()
        assert "store-writer ERROR failed to start" in system.logs()
        result = system.cli("status")
        assert result.returncode == 1 and "failed" in result.stdout
    finally:
        system.stop()


def test_status_and_chat_commands(warmwire):
    result = warmwire.cli("status")
    assert result.returncode == 0, result.stderr
    assert "router" in result.stdout and "healthy" in result.stdout
    document = json.loads(warmwire.cli("status", "--json").stdout)
    assert {s["name"] for s in document["services"]} == {spec.name for spec in supervised_services}
    assert all({"name", "pid", "state", "restarts"} <= set(s) for s in document["services"])
    chat = warmwire.cli("chat", "--chat", "cli-test", "ขอบคุณครับ")
    assert chat.returncode == 0, chat.stderr
    frame = json.loads(chat.stdout.splitlines()[-1])
    assert frame["type"] == "reply" and frame["chat"] == "cli-test" and frame["tier"] == "inline"
    # status shows what the last probe (at most a probe interval ago) reported
    wait_for(lambda: warmwire.service("router")["stats"]["tiers"]["inline"] >= 1, 5,
             "the router's tier counts to show the message")
    # ... and which classifier scorer runs: the C one, which ./run.sh builds where it can
    assert warmwire.service("router")["stats"]["classifier"] == Classifier.load().scorer_name


def test_data_logs_and_sockets_are_owner_only(warmwire):
    for folder in ("data", "logs", "run"):
        assert (warmwire.home / folder).stat().st_mode & 0o777 == 0o700, folder


def test_status_says_when_warmwire_is_not_running(home, make_env):
    result = Warmwire(home, make_env()).cli("status")
    assert result.returncode == 1 and "not running" in result.stderr
