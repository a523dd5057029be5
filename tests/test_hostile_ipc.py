"""Property-based tests (hypothesis) of every parser of files the other side wrote: the IPC
decoder (proto/ipc.py) used by the pool-manager and by the agent runner, the file reader
behind it, the runner's handling of its in/ folder, and the pool-manager's reading of an
agent's result payload.

Properties: valid messages round-trip; any bytes, any signed JSON (a compromised agent holds
its key and can sign anything), any file name and any kind of file give a Message or an
IpcError subclass with a specific message, never another exception and never a hang.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, strategies as st

from proto import ipc
from proto.frames import Codec, PoolOut, SaveUsage, StoreIn
from services.pool_manager.service import PoolManager
from test_hostile_fuzz import SETTINGS, check_rejection, mutate, no_hang, signed_json

pytestmark = pytest.mark.hostile

# The runner imports its sibling `agent` as a top-level module, as it does in the image.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images" / "agent"))
import runner  # noqa: E402

SECRET = ipc.Secret(b"k" * ipc.KEY_BYTES)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 30, 10 ** 30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
FIELD_VALUES = {
    "v": ANY_JSON | st.just(ipc.FORMAT_VERSION), "kind": ANY_JSON | st.sampled_from(sorted(ipc.KINDS)),
    "chat": ANY_JSON | st.text(max_size=10), "job": ANY_JSON | st.text(max_size=10),
    "seq": ANY_JSON | st.integers(-1, 10 ** 400), "ts": ANY_JSON | st.integers(-10 ** 400, 10 ** 400),
    "payload": ANY_JSON | st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4),
}
# Bodies with each field valid or hostile, some fields missing, some extra.
SIGNED_BODIES = st.fixed_dictionaries({}, optional={**FIELD_VALUES, "extra": ANY_JSON})


def decode_or_reject(data: bytes, expected_chat=ipc.ANY_CHAT) -> ipc.Message | None:
    try:
        with no_hang():
            message = ipc.decode(data, SECRET, expected_chat)
    except ipc.IpcError as error:
        check_rejection(error)
        return None
    # What callers rely on once a message is accepted:
    assert message.kind in ipc.KINDS and isinstance(message.chat, str) and isinstance(message.job, str)
    assert type(message.seq) is int and isinstance(message.ts, float) and isinstance(message.payload, dict)
    return message


@SETTINGS
@given(st.sampled_from(sorted(ipc.KINDS)), st.text(max_size=20), st.text(max_size=20),
       st.integers(0, ipc.MAX_SEQ), st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=4),
       st.floats(0, ipc.MAX_TS))
def test_every_valid_message_round_trips(kind, chat, job, seq, payload, ts):
    message = ipc.decode(ipc.encode(SECRET, kind, chat, job, seq, payload, ts=ts), SECRET, chat)
    assert message == ipc.Message(kind, chat, job, seq, ts, json.loads(json.dumps(payload)))


@SETTINGS
@given(st.binary(max_size=1024))
def test_any_bytes_are_a_message_or_an_ipc_error(data):
    assert decode_or_reject(data) is None  # unsigned bytes are never accepted


@SETTINGS
@given(SIGNED_BODIES)
def test_anything_the_key_holder_signs_is_a_well_typed_message_or_an_ipc_error(body):
    data = ipc._canonical({**body, "sig": SECRET.sign(ipc._canonical(body))})
    decode_or_reject(data)


@SETTINGS
@given(st.sampled_from(sorted(ipc.KINDS)), st.randoms(use_true_random=False))
def test_mutated_signed_files_are_a_message_or_an_ipc_error(kind, rng):
    sample = ipc.encode(SECRET, kind, "chat", "job", 1, {"text": "hi", "usage": {"input_tokens": 1}}, ts=1.0)
    _, data = mutate(rng, sample, signed_json(SECRET))
    decode_or_reject(data)
    decode_or_reject(data, expected_chat="another chat")


NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)


@SETTINGS
@given(st.lists(st.sampled_from(["..", ".", "out", "/", "//", "x", "ipc.key", "\x00"]), max_size=6), NAMES)
def test_any_path_is_read_only_inside_its_folder(tmp_path_factory, parts, name):
    folder = tmp_path_factory.mktemp("ipc-paths")
    (folder / "0000000001-result.json").write_bytes(ipc.encode(SECRET, "result", "c", "j", 1, {}))
    path = "/".join(parts + [name])
    try:
        with no_hang():
            ipc.parse(path, SECRET, ipc.ANY_CHAT, folder)
    except ipc.IpcError as error:
        check_rejection(error)
        assert "\x00" not in str(error)
    except (OSError, ValueError) as error:  # a name too long for the file system, at most
        assert isinstance(error, OSError) and error.errno == 36, error


def test_every_kind_of_hostile_file_is_refused_with_its_own_reason(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    outside = tmp_path / "host.json"
    outside.write_bytes(ipc.encode(SECRET, "result", "c", "j", 1, {}))
    os.symlink(outside, folder / "0000000001-result.json")
    os.mkfifo(folder / "0000000002-result.json")
    (folder / "0000000003-result.json").mkdir()
    os.link(outside, folder / "0000000004-result.json")
    with open(folder / "0000000005-result.json", "wb") as big:
        big.truncate(1 << 30)  # 1 GB, sparse: refused from its size, never read
    (folder / "0000000006-result.json").write_bytes(b"[" * 100_000)
    expected = {1: (ipc.SymlinkRejected, "is a symlink"), 2: (ipc.NotRegularFile, "not a regular file"),
                3: (ipc.NotRegularFile, ""), 4: (ipc.NotRegularFile, "hard-linked"),
                5: (ipc.TooLarge, "1073741824 bytes > cap"), 6: (ipc.Malformed, "not valid UTF-8 JSON")}
    for seq, (error_type, reason) in expected.items():
        with pytest.raises(error_type) as caught, no_hang():
            ipc.parse(folder / ipc.file_name("result", seq), SECRET, ipc.ANY_CHAT, folder)
        assert reason in str(caught.value) and f"{seq:010d}-result.json" in str(caught.value)
    assert ipc.remove(folder / "gone", "x.json") is False  # a missing or swapped folder


def test_the_runner_reports_hostile_job_files_and_keeps_serving(tmp_path):
    """The runner parses what the host wrote into in/: garbage there must not stop it."""
    lay, secret = ipc.prepare(tmp_path / "agent")
    bad = {"0000000001-job.json": b"\xff\xfe", "0000000002-job.json": b"[" * 50_000,
           "0000000003-job.json": ipc._canonical({"v": 1, "kind": ["job"], "sig": "0" * 64})}
    for name, data in bad.items():
        (lay.to_agent / name).write_bytes(data)
    os.symlink("/etc/hostname", lay.to_agent / "0000000004-job.json")
    (lay.to_agent / "0000000005-job.json").mkdir()
    agent = runner.Runner(str(lay.ipc_dir), secret, env={})
    with ipc.Writer(lay.to_agent, secret, chat="c") as host:
        host.write("job", "j1", {"text": "hello"})
    with no_hang():
        agent.handle_pending()
    out = [ipc.parse(lay.from_agent / name, secret, ipc.ANY_CHAT, lay.from_agent)
           for name in ipc.pending(lay.from_agent)]
    errors = [m.payload["type"] for m in out if m.kind == "error"]
    assert sorted(errors) == ["BadSignature", "Malformed", "Malformed", "NotRegularFile", "SymlinkRejected"]
    assert [m.kind for m in out if m.job == "j1"] == ["progress", "result"]


@SETTINGS
@given(st.dictionaries(st.sampled_from(["text", "agent", "usage", "elapsed_ms"]),
                       ANY_JSON | st.dictionaries(st.sampled_from(["input_tokens", "output_tokens", "prompt_tokens",
                                                                   "completion_tokens"]), ANY_JSON)))
def test_any_result_payload_becomes_frames_the_router_and_store_accept(payload):
    """An agent's result payload is JSON of its choosing: what the pool-manager makes of it
    must encode, decode on the router's side, and be storable (SQLite integers)."""
    from proto.frames import Job
    job = Job(id="m", chat="c", tier="container-full", model="m", text="t")
    frame = PoolManager._result_frame(job, None, payload, "")
    assert Codec(PoolOut).decode(Codec(PoolOut).encode(frame)) == frame
    usage = SaveUsage(job_id="m", model=frame.model, input_tokens=frame.input_tokens,
                      output_tokens=frame.output_tokens, cost_usd=0.0)
    Codec(StoreIn).decode(msgspec.msgpack.encode(usage))
    assert 0 <= frame.input_tokens < 2 ** 63 and 0 <= frame.output_tokens < 2 ** 63


def test_a_key_file_of_garbage_is_an_ipc_error(tmp_path):
    for content in (b"", b"zz" * 40, b"\xff" * 100, b"00" * 8, os.urandom(4096)):
        path = Path(tmp_path / "ipc.key")
        path.write_bytes(content)
        with pytest.raises(ipc.IpcError) as caught:
            ipc.Secret.from_file(path)
        assert "cannot read ipc key file" in str(caught.value)
