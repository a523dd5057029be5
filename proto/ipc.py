"""The agent IPC file format, shared by the host (pool-manager) and the agent runner.

One source file for both sides: the image build copies this file into the agent image, so
it must stay stdlib-only (the runner image carries no msgspec).

Layout of one agent's IPC area on the host (made by `prepare`):

    <root>/                 0700, host only
        ipc.key             the per-container HMAC key (hex); mounted read-only in the container
        ipc/                bind-mounted read-write at /ipc
            in/             host -> agent: `job`, `stop`, `turn` (a model turn it asked for)
            out/            agent -> host: `ready`, `progress`, `model` (ask for a model turn),
                            `reply`, `result`, `error`, `exit`

Why a key file and not an env var: a container's env is shown to anyone who can run
`docker inspect`, and ends up in crash dumps and `ps e`; a 0400 file outside the writable
folder, mounted read-only, is seen only by the agent and the host.

A file is one JSON object, written atomically (temp name starting with ".", then rename):
    {"chat", "job", "kind", "payload", "seq", "sig", "ts", "v"}
`sig` is hex HMAC-SHA256, keyed with the container's key, over SIGN_DOMAIN + the canonical
JSON of every other field (sorted keys, no spaces, ASCII only, no NaN).
"""

from __future__ import annotations

# Imports are kept to what the runner needs: every module here is paid for on each
# container start (dataclasses or pathlib alone would add ~10 ms there).
import errno
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections import namedtuple

FORMAT_VERSION = 1
SIGN_DOMAIN = b"warmwire-ipc-v1\n"  # so a signature can never be replayed for another format
MAX_FILE_BYTES = 1 << 20            # roomy for a job with knowledge context; caps a hostile agent
KEY_BYTES = 32
MAX_SEQ = 10 ** 10 - 1              # what a file name's 10 digits hold
MAX_TS = 1e11                       # seconds since the epoch; beyond is not a time (and an
                                    # int this large or larger cannot even become a float)
SIG_HEX_LEN = 64

HOST_KINDS = frozenset({"job", "stop", "turn"})
AGENT_KINDS = frozenset({"ready", "progress", "model", "reply", "result", "error", "exit"})
KINDS = HOST_KINDS | AGENT_KINDS
FIELDS = frozenset({"v", "kind", "chat", "job", "seq", "ts", "payload", "sig"})

UNASSIGNED_CHAT = ""      # chat of a warm container's `ready` file: no chat is bound yet
ANY_CHAT = object()       # expected_chat for a runner that is not bound to a chat yet

TO_AGENT = "in"
FROM_AGENT = "out"
KEY_FILE = "ipc.key"
IPC_SUBDIR = "ipc"
CONTAINER_IPC_DIR = "/ipc"
CONTAINER_KEY_FILE = "/run/warmwire/ipc.key"

FILE_SUFFIX = ".json"
TEMP_PREFIX = "."         # readers skip these: a file is visible only once it is complete
FILE_MODE = 0o644         # the folder (0700) is the fence; the other side may be another uid
DIR_MODE = 0o700
KEY_MODE = 0o400
NAME_RE = re.compile(r"^(\d{10})-([a-z]+)\.json$")
SAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME_IN_ERROR = 64


# ---------------------------------------------------------------- errors


class IpcError(Exception):
    """Base of every rejection; the message names the file and the reason, never content."""


class Missing(IpcError):
    """The file vanished before it could be read (a race with its consumer)."""


class OutsideFolder(IpcError):
    """The path is not a direct child of the expected folder, or the folder is not real."""


class SymlinkRejected(IpcError):
    """The file is a symbolic link."""


class NotRegularFile(IpcError):
    """The file is a FIFO, socket, device, directory or a hard link."""


class TooLarge(IpcError):
    """The file is larger than the size cap."""


class Malformed(IpcError):
    """The content is not a well-formed IPC message."""


class Unsigned(Malformed):
    """The message carries no signature."""


class BadSignature(IpcError):
    """The signature does not match this container's key."""


class WrongChat(IpcError):
    """A valid message for another chat than the one expected."""


class Flooding(IpcError):
    """The agent made more entries in its IPC area than the reader has consumed, by a cap."""


# ---------------------------------------------------------------- the key


class Secret:
    """A per-container HMAC key. Never printed: repr/str are redacted, pickling is refused."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes):
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("ipc key must be at least 16 bytes")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> "Secret":
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Secret":
        try:
            with open(path, "rb") as f:
                text = f.read(4 * KEY_BYTES + 2)
            return cls(bytes.fromhex(text.decode("ascii").strip()))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            # `from None`: the chained error could quote the file's bytes.
            raise IpcError(f"cannot read ipc key file {os.fspath(path)!r}: "
                           f"{type(e).__name__}") from None

    def to_file(self, path: str | os.PathLike, uid: int | None = None, gid: int | None = None):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, KEY_MODE)
        try:
            os.write(fd, self._key.hex().encode("ascii") + b"\n")
            if uid is not None:
                os.fchown(fd, uid, -1 if gid is None else gid)
        finally:
            os.close(fd)

    def sign(self, data: bytes) -> str:
        return hmac.new(self._key, SIGN_DOMAIN + data, hashlib.sha256).hexdigest()

    def redact(self, text: str) -> str:
        """Blank out the key if an agent-chosen string (a file name) carries it."""
        return text.replace(self._key.hex(), "<redacted>")

    def __repr__(self):
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an ipc Secret cannot be pickled")


# ---------------------------------------------------------------- messages


Message = namedtuple("Message", "kind chat job seq ts payload")


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def encode(secret: Secret, kind: str, chat: str, job: str, seq: int, payload: dict,
           ts: float | None = None) -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown ipc kind {kind!r}")
    body = {"v": FORMAT_VERSION, "kind": kind, "chat": chat, "job": job, "seq": int(seq),
            "ts": time.time() if ts is None else ts, "payload": payload}
    body["sig"] = secret.sign(_canonical(body))
    return _canonical(body)


def _reject_constant(name):
    raise ValueError("NaN/Infinity are not allowed")


def decode(data: bytes, secret: Secret, expected_chat, *, name: str = "<bytes>",
           kinds=KINDS) -> Message:
    """Check signature and fields of one file's bytes. expected_chat: a str or ANY_CHAT."""
    where = f"ipc file {name}"
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Malformed(f"{where}: not valid UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise Malformed(f"{where}: not a JSON object")
    sig = obj.pop("sig", None)
    if sig is None:
        raise Unsigned(f"{where}: unsigned (no 'sig' field)")
    if not isinstance(sig, str) or len(sig) != SIG_HEX_LEN:
        raise BadSignature(f"{where}: signature has the wrong form")
    try:
        expected = secret.sign(_canonical(obj))
    except (TypeError, ValueError, RecursionError):
        raise Malformed(f"{where}: content cannot be canonicalised") from None
    if not hmac.compare_digest(expected, sig):
        raise BadSignature(f"{where}: bad signature")
    # Signed by the key holder from here on; still check shapes so callers can trust types.
    if set(obj) != FIELDS - {"sig"}:
        raise Malformed(f"{where}: fields are not {sorted(FIELDS)}")
    if type(obj["v"]) is not int or obj["v"] != FORMAT_VERSION:
        raise Malformed(f"{where}: unsupported format version")
    kind, chat, job, seq, ts, payload = (obj[k] for k in
                                         ("kind", "chat", "job", "seq", "ts", "payload"))
    if not isinstance(kind, str) or kind not in kinds:  # a list or dict is not even hashable
        raise Malformed(f"{where}: kind not allowed here")
    if not (isinstance(chat, str) and isinstance(job, str) and isinstance(payload, dict)
            and type(seq) is int and 0 <= seq <= MAX_SEQ
            and type(ts) in (int, float) and -MAX_TS <= ts <= MAX_TS):
        raise Malformed(f"{where}: field types are wrong")
    if expected_chat is not ANY_CHAT and chat != expected_chat:
        raise WrongChat(f"{where}: message is for another chat")
    return Message(kind, chat, job, seq, float(ts), payload)


# ---------------------------------------------------------------- files


def file_name(kind: str, seq: int) -> str:
    """Names sort by sequence number; the name is a hint only, the signed content decides."""
    return f"{seq:010d}-{kind}{FILE_SUFFIX}"


def is_candidate(name: str) -> bool:
    return not name.startswith(TEMP_PREFIX) and name.endswith(FILE_SUFFIX)


def safe_name(name: str, secret: Secret | None = None) -> str:
    """A file name fit for a log line: agent-chosen names may hold anything."""
    if secret is not None:
        name = secret.redact(name)
    name = SAFE_NAME_CHARS.sub("?", name)
    return name if len(name) <= MAX_NAME_IN_ERROR else name[:MAX_NAME_IN_ERROR] + "..."


def _open_dir(folder) -> int:
    # O_NOFOLLOW: the agent can replace in/ or out/ with a symlink to a host folder;
    # every later open and rename goes through this fd, so it cannot redirect them.
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise OutsideFolder(f"ipc folder {os.fspath(folder)!r} is not a real directory "
                            f"({errno.errorcode.get(e.errno, e.errno)})") from None


def _child_name(path, folder) -> str:
    """The file's name if `path` is a name or a direct child of `folder`; else reject."""
    p = os.fspath(path)
    name = os.path.basename(p)
    parent = os.path.dirname(p)
    if "\x00" in p or name in ("", ".", ".."):
        raise OutsideFolder(f"ipc path {safe_name(p)!r} does not name a file")
    if ".." in p.split(os.sep) or (parent and os.path.abspath(parent)
                                 != os.path.abspath(os.fspath(folder))):
        raise OutsideFolder(f"ipc path {safe_name(p)!r} is outside the ipc folder")
    return name


def read_bytes(path, folder, *, max_bytes: int = MAX_FILE_BYTES, secret=None) -> bytes:
    """Read a regular file that is a direct child of `folder`, without following links,
    blocking on FIFOs, or reading more than max_bytes."""
    name = _child_name(path, folder)
    shown = safe_name(name, secret)
    dfd = _open_dir(folder)
    try:
        try:
            # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                         | os.O_NOCTTY, dir_fd=dfd)
        except FileNotFoundError:
            raise Missing(f"ipc file {shown}: gone") from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkRejected(f"ipc file {shown}: is a symlink") from None
            raise NotRegularFile(f"ipc file {shown}: cannot be opened "
                                 f"({errno.errorcode.get(e.errno, e.errno)})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(f"ipc file {shown}: not a regular file")
            if st.st_nlink != 1:
                raise NotRegularFile(f"ipc file {shown}: hard-linked")
            if st.st_size > max_bytes:
                raise TooLarge(f"ipc file {shown}: {st.st_size} bytes > cap {max_bytes}")
            chunks, total = [], 0
            while total <= max_bytes:  # the file may still grow after fstat
                chunk = os.read(fd, max_bytes + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"ipc file {shown}: larger than cap {max_bytes}")
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def parse(path, secret: Secret, expected_chat, folder, *, max_bytes: int = MAX_FILE_BYTES,
          kinds=KINDS) -> Message:
    """Read and verify one IPC file. Raises an IpcError subclass for every kind of bad file."""
    data = read_bytes(path, folder, max_bytes=max_bytes, secret=secret)
    return decode(data, secret, expected_chat, kinds=kinds,
                  name=safe_name(os.path.basename(os.fspath(path)), secret))


verify = parse


def pending(folder) -> list[str]:
    """Complete message files in a folder, oldest sequence number first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if is_candidate(n))


def remove(folder, name: str) -> bool:
    """Delete a consumed file (through the folder fd, so a swapped folder cannot redirect).
    False when it cannot be removed (a directory, a permission problem, a swapped folder)."""
    try:
        dfd = _open_dir(folder)
    except OutsideFolder:
        return False
    try:
        os.unlink(_child_name(name, folder), dir_fd=dfd)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    finally:
        os.close(dfd)
    return True


class Writer:
    """Writes signed files into one folder, atomically, with increasing sequence numbers."""

    def __init__(self, folder, secret: Secret, chat: str = UNASSIGNED_CHAT, *, fsync=False):
        self.folder = os.fspath(folder)
        self.chat = chat
        self._secret = secret
        self._fsync = fsync
        self._dfd = _open_dir(self.folder)
        # Continue after what is already there, so a restarted writer never overwrites.
        seqs = [int(m.group(1)) for n in os.listdir(self._dfd) if (m := NAME_RE.match(n))]
        self._seq = max(seqs, default=0)

    def write(self, kind: str, job: str, payload: dict) -> str:
        self._seq += 1
        data = encode(self._secret, kind, self.chat, job, self._seq, payload)
        name = file_name(kind, self._seq)
        tmp = f"{TEMP_PREFIX}{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     FILE_MODE, dir_fd=self._dfd)
        try:
            os.fchmod(fd, FILE_MODE)  # not reduced by a strict umask: the reader may be another uid
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(tmp, name, src_dir_fd=self._dfd, dst_dir_fd=self._dfd)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp, dir_fd=self._dfd)
            except OSError:
                pass
            raise
        return name

    def close(self):
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Writer({self.folder!r}, chat={self.chat!r}, seq={self._seq})"


# ---------------------------------------------------------------- host-side layout


Layout = namedtuple("Layout", "root key_file ipc_dir to_agent from_agent")  # pathlib.Paths


def layout(root) -> Layout:
    from pathlib import Path  # host side only: not worth its import time in the runner
    root = Path(root)
    ipc_dir = root / IPC_SUBDIR
    return Layout(root, root / KEY_FILE, ipc_dir, ipc_dir / TO_AGENT, ipc_dir / FROM_AGENT)


def prepare(root, agent_uid: int | None = None, agent_gid: int | None = None
            ) -> tuple[Layout, Secret]:
    """Create one agent's IPC area with a fresh key. agent_uid/gid: chown the agent's part
    (needed when the host runs as root and the agent as an unprivileged uid)."""
    lay = layout(root)
    lay.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    secret = Secret.generate()
    secret.to_file(lay.key_file, agent_uid, agent_gid)
    for d in (lay.ipc_dir, lay.to_agent, lay.from_agent):
        d.mkdir(mode=DIR_MODE)
        if agent_uid is not None:
            os.chown(d, agent_uid, -1 if agent_gid is None else agent_gid)
    return lay, secret
