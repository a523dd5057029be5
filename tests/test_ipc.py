"""The agent IPC file format (proto/ipc.py): signing, atomic writes, and every rejection."""

import json
import os
import pickle
import signal
import stat

import pytest

from proto import ipc

CHAT = "chat-42"
HANG_GUARD_S = 30  # a reader that blocks (e.g. on a FIFO) fails the test instead of hanging it


@pytest.fixture
def secret():
    return ipc.Secret.generate()


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def hang_guard():
    def boom(*_):
        raise TimeoutError("ipc reader hung")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(HANG_GUARD_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def write_one(folder, secret, kind="result", chat=CHAT, payload=None):
    with ipc.Writer(folder, secret, chat) as w:
        return w.write(kind, "job-1", payload if payload is not None else {"text": "hello"})


def secret_leaks(exc: BaseException, secret: ipc.Secret) -> bool:
    key_hex = secret._key.hex()
    texts = [str(exc), repr(exc), *map(str, exc.args)]
    return any(key_hex in t or repr(secret._key) in t for t in texts)


# ------------------------------------------------------------------ round trip


def test_signed_round_trip(folder, secret):
    payload = {"text": "สวัสดี hello", "n": 3, "nested": {"a": [1, 2.5, None, True]}}
    name = write_one(folder, secret, payload=payload)
    msg = ipc.parse(folder / name, secret, CHAT, folder)
    assert (msg.kind, msg.chat, msg.job, msg.seq, msg.payload) == ("result", CHAT, "job-1", 1,
                                                                   payload)
    assert ipc.verify is ipc.parse
    assert os.listdir(folder) == [name]  # no temp file is left behind
    assert stat.S_IMODE(os.stat(folder / name).st_mode) == ipc.FILE_MODE
    raw = json.loads((folder / name).read_bytes())
    assert set(raw) == ipc.FIELDS and len(raw["sig"]) == ipc.SIG_HEX_LEN


def test_bare_name_is_taken_relative_to_folder(folder, secret):
    name = write_one(folder, secret)
    assert ipc.parse(name, secret, CHAT, folder).kind == "result"


def test_signature_covers_content_not_formatting(folder, secret):
    """Another writer (or language) may order keys and space differently."""
    name = write_one(folder, secret)
    obj = json.loads((folder / name).read_bytes())
    reordered = dict(reversed(list(obj.items())))
    (folder / "0000000009-result.json").write_text(json.dumps(reordered, indent=2,
                                                              ensure_ascii=False))
    assert ipc.parse(folder / "0000000009-result.json", secret, CHAT, folder).seq == 1


def test_writer_sequence_and_order(folder, secret):
    with ipc.Writer(folder, secret, CHAT) as w:
        names = [w.write(k, "j", {}) for k in ("ready", "progress", "result")]
    assert ipc.pending(folder) == names
    with ipc.Writer(folder, secret, CHAT) as w2:  # a restarted writer continues, never overwrites
        assert w2.write("exit", "", {}) == ipc.file_name("exit", 4)
    (folder / ".0000000005-result.json.1.ab.tmp").write_bytes(b"partial")
    assert ".0000000005-result.json.1.ab.tmp" not in ipc.pending(folder)


def test_any_chat_and_kind_filter(folder, secret):
    name = write_one(folder, secret, kind="job")
    assert ipc.parse(folder / name, secret, ipc.ANY_CHAT, folder).chat == CHAT
    with pytest.raises(ipc.Malformed, match="kind not allowed"):
        ipc.parse(folder / name, secret, CHAT, folder, kinds=ipc.AGENT_KINDS)


def test_prepare_layout(tmp_path):
    lay, secret = ipc.prepare(tmp_path / "agent-1")
    assert stat.S_IMODE(os.stat(lay.root).st_mode) == ipc.DIR_MODE
    assert stat.S_IMODE(os.stat(lay.key_file).st_mode) == ipc.KEY_MODE
    assert lay.key_file.parent == lay.root and lay.ipc_dir.parent == lay.root  # key not in /ipc
    assert lay.to_agent.is_dir() and lay.from_agent.is_dir()
    again = ipc.Secret.from_file(lay.key_file)
    assert again.sign(b"x") == secret.sign(b"x")


# ------------------------------------------------------------------ rejections


def test_unsigned(folder, secret):
    name = write_one(folder, secret)
    obj = json.loads((folder / name).read_bytes())
    del obj["sig"]
    (folder / name).write_text(json.dumps(obj))
    with pytest.raises(ipc.Unsigned, match="unsigned"):
        ipc.parse(folder / name, secret, CHAT, folder)


@pytest.mark.parametrize("field,value", [("payload", {"text": "evil"}), ("chat", "other"),
                                         ("kind", "ready"), ("seq", 99), ("sig", "0" * 64),
                                         ("sig", "short"), ("sig", 12)])
def test_tampered(folder, secret, field, value):
    name = write_one(folder, secret)
    obj = json.loads((folder / name).read_bytes())
    obj[field] = value
    (folder / name).write_text(json.dumps(obj))
    with pytest.raises(ipc.BadSignature):
        ipc.parse(folder / name, secret, CHAT, folder)


def test_other_containers_key(folder, secret):
    name = write_one(folder, ipc.Secret.generate())
    with pytest.raises(ipc.BadSignature, match="bad signature"):
        ipc.parse(folder / name, secret, CHAT, folder)


def test_symlink_to_valid_file_is_rejected(tmp_path, folder, secret):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    name = write_one(outside, secret)
    os.symlink(outside / name, folder / name)
    with pytest.raises(ipc.SymlinkRejected, match="symlink"):
        ipc.parse(folder / name, secret, CHAT, folder)


def test_symlinked_folder_is_rejected(tmp_path, folder, secret):
    """An agent may swap its out/ folder for a link to a host folder."""
    name = write_one(folder, secret)
    link = tmp_path / "link"
    os.symlink(folder, link)
    with pytest.raises(ipc.OutsideFolder, match="not a real directory"):
        ipc.parse(link / name, secret, CHAT, link)
    with pytest.raises(ipc.OutsideFolder):
        ipc.Writer(link, secret, CHAT)


@pytest.mark.parametrize("path", ["../x.json", "sub/../../x.json", "/etc/passwd", "..", "",
                                  "a\x00b.json"])
def test_paths_outside_folder(folder, secret, path):
    target = path if path.startswith("/") or not path else str(folder / path)
    with pytest.raises(ipc.OutsideFolder):
        ipc.parse(target, secret, CHAT, folder)


def test_dotdot_back_into_folder_still_rejected(folder, secret):
    name = write_one(folder, secret)
    with pytest.raises(ipc.OutsideFolder, match="outside"):
        ipc.parse(f"{folder}/../{folder.name}/{name}", secret, CHAT, folder)


def test_oversized(folder, secret):
    name = write_one(folder, secret, payload={"blob": "x" * (ipc.MAX_FILE_BYTES + 10)})
    with pytest.raises(ipc.TooLarge, match="cap"):
        ipc.parse(folder / name, secret, CHAT, folder)
    small = write_one(folder, secret, payload={"blob": "x" * 500})
    with pytest.raises(ipc.TooLarge):
        ipc.parse(folder / small, secret, CHAT, folder, max_bytes=200)


def test_wrong_chat(folder, secret):
    name = write_one(folder, secret, chat="somebody-else")
    with pytest.raises(ipc.WrongChat, match="another chat"):
        ipc.parse(folder / name, secret, CHAT, folder)


@pytest.mark.parametrize("data", [b"", b"\xff\xfe\x00garbage", os.urandom(512), b"[1,2,3]",
                                  b'"just a string"', b"{", b'{"sig": NaN}',
                                  b"[" * 100_000 + b"]" * 100_000, b'{"a": 1e999999}',
                                  b"1" * 5000])
def test_garbage_bytes(folder, secret, data):
    (folder / "0000000001-result.json").write_bytes(data)
    with pytest.raises(ipc.Malformed):
        ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)


def test_signed_but_wrong_shapes(folder, secret):
    """Even a holder of the key cannot make the host read a field of the wrong type."""
    def signed(body):
        body = dict(body)
        body["sig"] = secret.sign(ipc._canonical(body))
        (folder / "0000000001-result.json").write_bytes(ipc._canonical(body))
    good = {"v": 1, "kind": "result", "chat": CHAT, "job": "j", "seq": 1, "ts": 1.0,
            "payload": {}}
    for bad in ({"seq": "1"}, {"seq": True}, {"seq": -1}, {"payload": []}, {"chat": 7},
                {"v": 2}, {"kind": "launch-missiles"}, {"extra": 1}):
        signed({**good, **bad})
        with pytest.raises(ipc.Malformed):
            ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)
    signed({k: v for k, v in good.items() if k != "job"})
    with pytest.raises(ipc.Malformed, match="fields"):
        ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)


def test_fifo_does_not_hang(folder, secret):
    os.mkfifo(folder / "0000000001-result.json")
    with pytest.raises(ipc.NotRegularFile, match="not a regular file"):
        ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)


def test_directory_and_hard_link(folder, secret):
    (folder / "0000000001-result.json").mkdir()
    with pytest.raises(ipc.NotRegularFile):
        ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)
    name = write_one(folder, secret)
    os.link(folder / name, folder / "0000000099-result.json")
    with pytest.raises(ipc.NotRegularFile, match="hard-linked"):
        ipc.parse(folder / "0000000099-result.json", secret, CHAT, folder)


def test_vanished_file(folder, secret):
    with pytest.raises(ipc.Missing):
        ipc.parse(folder / "0000000001-result.json", secret, CHAT, folder)


def test_every_rejection_is_an_ipc_error():
    for cls in (ipc.Missing, ipc.OutsideFolder, ipc.SymlinkRejected, ipc.NotRegularFile,
                ipc.TooLarge, ipc.Malformed, ipc.Unsigned, ipc.BadSignature, ipc.WrongChat):
        assert issubclass(cls, ipc.IpcError)


# ------------------------------------------------------------------ the secret stays secret


def test_secret_not_in_repr_str_or_pickle(secret):
    key_hex = secret._key.hex()
    assert key_hex not in repr(secret) and key_hex not in str(secret)
    assert "redacted" in repr(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with ipc.Writer("/tmp", secret, CHAT) as w:
        assert key_hex not in repr(w)


def test_secret_not_in_any_exception_text(tmp_path, folder, secret):
    key_hex = secret._key.hex()
    errors = []

    def collect(fn):
        try:
            fn()
        except ipc.IpcError as e:
            errors.append(e)
        else:
            raise AssertionError("expected a rejection")

    # A file named after the key (an agent trying to get it into host logs) is redacted.
    evil_name = f"0000000001-{key_hex}.json"
    (folder / evil_name).write_bytes(key_hex.encode())
    collect(lambda: ipc.parse(folder / evil_name, secret, CHAT, folder))
    os.symlink("/etc/hostname", folder / f"x{key_hex}.json")
    collect(lambda: ipc.parse(folder / f"x{key_hex}.json", secret, CHAT, folder))
    name = write_one(folder, secret, chat="other")
    collect(lambda: ipc.parse(folder / name, secret, CHAT, folder))
    collect(lambda: ipc.parse(folder / name, ipc.Secret.generate(), "other", folder))
    (folder / "big.json").write_bytes(b"x" * 300)
    collect(lambda: ipc.parse(folder / "big.json", secret, CHAT, folder, max_bytes=100))
    collect(lambda: ipc.parse(f"../{key_hex}", secret, CHAT, folder))
    # A key file holding junk: the error names the file, never its content.
    bad_key = tmp_path / "bad.key"
    bad_key.write_text(key_hex + "zz-not-hex")
    collect(lambda: ipc.Secret.from_file(bad_key))
    assert len(errors) == 7
    for e in errors:
        assert not secret_leaks(e, secret), f"{type(e).__name__} leaks the key"
        assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
