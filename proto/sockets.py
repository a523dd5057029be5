"""Socket helpers: every socket warmwire opens is made here, with the options it needs."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import msgspec
import zmq

# Sockets are closed at shutdown without waiting for peers that are already gone.
LINGER_MS = 0
RUN_DIR_MODE = 0o700
# Linux's sun_path is 108 bytes including the terminating NUL.
IPC_PATH_MAX = 107


def ensure_run_dir(run_dir: Path) -> None:
    """A private folder (ipc sockets, data, logs): created if missing, always owner-only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_dir.stat().st_mode & 0o777 != RUN_DIR_MODE:
        # Only when needed: a data folder on a read-only disk that is already private must
        # not stop warmwire from starting (the store-writer then says it cannot write).
        os.chmod(run_dir, RUN_DIR_MODE)


def is_local(endpoint: str) -> bool:
    """Reachable from this machine only: ipc, inproc, or tcp on a loopback address.
    Anything else (``*``, 0.0.0.0, a host name, an interface) counts as the network."""
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = address.rpartition(":")[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# A frontend bound to every address is reached from this machine through loopback.
_WILDCARD_HOSTS = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def local_connect_endpoint(endpoint: str) -> str:
    """Where a client on this machine connects to reach a socket bound at ``endpoint``
    (``tcp://*:7400`` can be bound but not connected to)."""
    transport, _, address = endpoint.partition("://")
    host, _, port = address.rpartition(":")
    if transport == "tcp" and host in _WILDCARD_HOSTS:
        return f"tcp://{_WILDCARD_HOSTS[host]}:{port}"
    return endpoint


def _check_ipc(endpoint: str) -> None:
    if endpoint.startswith("ipc://") and len(endpoint) - len("ipc://") > IPC_PATH_MAX:
        raise ValueError(
            f"ipc endpoint path is longer than {IPC_PATH_MAX} bytes: {endpoint} "
            "(choose a shorter WARMWIRE_HOME)"
        )


def check_private_folder(endpoint: str) -> None:
    """A socket file can be connected to by whoever can enter its folder, so a bound ipc
    endpoint must sit in a folder only this user can enter (created so when missing)."""
    path = endpoint[len("ipc://"):]
    if path.startswith("@"):
        raise ValueError(f"refusing to bind {endpoint}: an abstract socket has no folder, "
                         "so every local user could connect to it")
    folder = Path(path).parent
    folder.mkdir(mode=RUN_DIR_MODE, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ValueError(
            f"refusing to bind {endpoint}: other users can enter {folder} (owner uid "
            f"{info.st_uid}, mode {stat.filemode(info.st_mode)}); put the socket in a folder "
            "only you can enter (mode 0700)")


def _socket(ctx: zmq.Context, kind: int, hwm: int | None,
            options: dict[int, int | bytes] | None) -> zmq.Socket:
    """hwm sets both directions; options (e.g. a one-way high-water mark) come after it."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, LINGER_MS)
    if hwm is not None:
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
    for option, value in (options or {}).items():
        sock.setsockopt(option, value)
    return sock


def _bind(sock: zmq.Socket, endpoint: str, max_msg_size: int | None) -> zmq.Socket:
    if max_msg_size is not None:
        sock.setsockopt(zmq.MAXMSGSIZE, max_msg_size)
    if endpoint.startswith("ipc://"):
        # A socket file left by a killed process would make bind fail with EADDRINUSE.
        Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)
    sock.bind(endpoint)
    return sock


def _check_bind(endpoint: str) -> None:
    _check_ipc(endpoint)
    if endpoint.startswith("ipc://"):
        check_private_folder(endpoint)


def bind_router(
    ctx: zmq.Context, endpoint: str, *, hwm: int | None = None,
    max_msg_size: int | None = None, options: dict[int, int | bytes] | None = None,
) -> zmq.Socket:
    """A ROUTER that raises instead of dropping a reply to an unknown or unreachable peer."""
    _check_bind(endpoint)
    sock = _socket(ctx, zmq.ROUTER, hwm, options)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    return _bind(sock, endpoint, max_msg_size)


def bind_pull(ctx: zmq.Context, endpoint: str, *, hwm: int, max_msg_size: int | None = None) -> zmq.Socket:
    """The receiving end of a one-way stream (frames that may be dropped, never answered)."""
    _check_bind(endpoint)
    return _bind(_socket(ctx, zmq.PULL, hwm, None), endpoint, max_msg_size)


def connect_push(ctx: zmq.Context, endpoint: str, *, hwm: int) -> zmq.Socket:
    """The sending end of a one-way stream: a send with no room (or no peer) raises Again."""
    _check_ipc(endpoint)
    sock = _socket(ctx, zmq.PUSH, hwm, None)
    sock.connect(endpoint)
    return sock


def connect_dealer(
    ctx: zmq.Context, endpoint: str, *, identity: bytes | None = None,
    options: dict[int, int | bytes] | None = None,
) -> zmq.Socket:
    _check_ipc(endpoint)
    sock = _socket(ctx, zmq.DEALER, None, options)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def request(ctx: zmq.Context, endpoint: str, payload: bytes, timeout: float) -> bytes | None:
    """One request/answer over a fresh DEALER; None when nothing answers within timeout."""
    sock = connect_dealer(ctx, endpoint)
    try:
        sock.send(payload)
        if sock.poll(int(timeout * 1000), zmq.POLLIN):
            return sock.recv()
        return None
    finally:
        sock.close()


def received(sock: zmq.Socket, codec, what: str, log) -> Iterator[Any]:
    """Every frame waiting on a DEALER, decoded; an undecodable one is logged and skipped."""
    while True:
        try:
            data = sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            frame = codec.decode(data)
        except msgspec.DecodeError as exc:
            log.error("unreadable frame from %s: %s", what, exc)
            continue
        yield frame
