"""Who may reach warmwire's sockets: the bind policy (ipc in owner-only folders, loopback,
or protected), and CurveZMQ for the client frontend: key files and a ZAP handler.

Keys are ZeroMQ certificate files (``zmq.auth.create_certificates``): ``NAME.key`` holds a
public key, ``NAME.key_secret`` the pair. Configuration names files, never keys, and a
relative path is taken from <home>.

The ZAP handler is a REP socket on the service's own event loop (not pyzmq's
ThreadAuthenticator), so the router stays single-threaded. It reads the authorized-keys folder
on every handshake: adding or deleting a client's ``.key`` file takes effect at that client's
next connection, without a restart.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path
from typing import NamedTuple

import zmq
import zmq.auth
from zmq.utils import z85

from .config import Config
from .sockets import check_private_folder, ensure_run_dir, is_local

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"   # where libzmq sends ZAP requests (RFC 27)
ZAP_VERSION = b"1.0"
ZAP_DOMAIN = b"warmwire"
KEY_FILE_MODE = 0o600
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
CURVE_KEY_BYTES = 32
INTERNAL_ENDPOINTS = ("store", "search", "pool", "gateway", "deltas", "supervisor")


class CurveError(ValueError):
    """A key file or folder cannot be used; the message names it (never a key)."""


class ServerKeys(NamedTuple):
    secret_key: bytes        # z85, the server's own
    authorized: Path         # folder of clients' public certificates


def resolve(home: Path, path: str) -> Path:
    return Path(home, os.path.expanduser(path))


def _valid(key: bytes | None) -> bool:
    """A z85 curve key: 40 characters that decode to 32 bytes."""
    try:
        return key is not None and len(z85.decode(key)) == CURVE_KEY_BYTES
    except (ValueError, KeyError, struct.error):
        return False


def _certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"cannot read the key file {path}: {type(exc).__name__}") from None
    if not _valid(public) or not (secret is None or _valid(secret)):
        raise CurveError(f"{path} holds no valid curve key")
    return public, secret


def load_pair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` certificate, both z85."""
    public, secret = _certificate(path)
    if secret is None:
        raise CurveError(f"{path} holds no secret key (use the {SECRET_SUFFIX} file)")
    if os.stat(path).st_mode & 0o077:
        raise CurveError(f"{path} can be read by other users: chmod 600 it")
    return public, secret


def load_public(path: Path) -> bytes:
    return _certificate(path)[0]


def authorized_keys(folder: Path) -> tuple[set[bytes], list[Path]]:
    """The clients' public keys (binary) from the folder's ``*.key`` files, and the files
    that hold none (a missing folder holds no keys)."""
    keys, unusable = set(), []
    for path in sorted(folder.glob(f"*{PUBLIC_SUFFIX}")):
        try:
            keys.add(z85.decode(load_public(path)))
        except CurveError:
            unusable.append(path)
    return keys, unusable


def frontend_policy(home: Path, endpoint: str, secret_key_file: str, authorized_folder: str,
                    allow_insecure: bool) -> ServerKeys | None:
    """What the router's frontend needs: curve keys, or None for plaintext. Raises
    CurveError for a frontend other hosts can reach with neither keys nor the opt-in."""
    if bool(secret_key_file) != bool(authorized_folder):
        raise CurveError("router.curve_secret_key_file and router.curve_authorized_keys "
                         "go together: set both or neither")
    if not secret_key_file:
        if not is_local(endpoint) and not allow_insecure:
            raise CurveError(
                f"refusing to serve {endpoint}: other hosts could reach it with no "
                "authentication or encryption. Keep router.frontend on 127.0.0.1, or create "
                "keys (./run.sh keys) and set router.curve_secret_key_file and "
                "router.curve_authorized_keys, or (only behind a network you trust) set "
                "router.allow_insecure = true")
        return None
    _, secret = load_pair(resolve(home, secret_key_file))
    folder = resolve(home, authorized_folder)
    keys, unusable = authorized_keys(folder)
    if unusable:
        raise CurveError(f"{unusable[0]} holds no valid public key: fix or delete it")
    if not keys:
        raise CurveError(f"no client public keys (*{PUBLIC_SUFFIX}) in {folder}: "
                         "no client could connect (./run.sh keys --client NAME)")
    return ServerKeys(secret, folder)


def router_frontend(config: Config) -> ServerKeys | None:
    router = config.router
    return frontend_policy(config.home, router.frontend, router.curve_secret_key_file,
                           router.curve_authorized_keys, router.allow_insecure)


def check_endpoints(config: Config) -> None:
    """Before anything starts: every socket warmwire binds is either private to this user
    (ipc in a 0700 folder), on loopback, or protected (curve, or an explicit opt-in)."""
    ensure_run_dir(config.run_dir)  # warmwire's own: made owner-only rather than refused
    for name in INTERNAL_ENDPOINTS:
        endpoint = config.endpoint(name)
        if endpoint.startswith("ipc://"):
            check_private_folder(endpoint)
        elif not is_local(endpoint) and not config.endpoints.allow_network:
            raise CurveError(
                f"refusing to serve endpoints.{name} = {endpoint}: internal sockets have no "
                "authentication. Keep it on ipc:// or 127.0.0.1, or (only on a private "
                "network you trust) set endpoints.allow_network = true")
    if config.router.frontend.startswith("ipc://"):
        check_private_folder(config.router.frontend)
    router_frontend(config)


def server_options(keys: ServerKeys) -> dict[int, int | bytes]:
    return {zmq.CURVE_SERVER: 1, zmq.CURVE_SECRETKEY: keys.secret_key, zmq.ZAP_DOMAIN: ZAP_DOMAIN}


def frontend_options(config: Config, ctx: zmq.Context, loop) -> dict[int, int | bytes]:
    """The router frontend's socket options: curve with a ZAP handler on the service's own
    loop, or none (loopback, or the explicit opt-in). Raises CurveError otherwise."""
    keys = router_frontend(config)
    if keys is None:
        if not is_local(config.router.frontend):
            log.warning("serving %s unencrypted and unauthenticated (router.allow_insecure)",
                        config.router.frontend)
        return {}
    # Bound before the frontend, as libzmq requires.
    zap = ZapHandler(ctx, keys.authorized, config.router.refused_log_interval)
    loop.add_reader(zap.socket, zap.on_readable)
    log.info("frontend %s: CurveZMQ, clients authorized by %s", config.router.frontend, keys.authorized)
    return server_options(keys)


def client_options(config: Config) -> dict[int, int | bytes]:
    """A DEALER's options to reach a curve frontend; empty when no keys are configured."""
    home, server_key_file = config.home, config.client.curve_server_key_file
    secret_key_file = config.client.curve_secret_key_file
    if bool(server_key_file) != bool(secret_key_file):
        raise CurveError("client.curve_server_key_file and client.curve_secret_key_file "
                         "go together: set both or neither")
    if not server_key_file:
        return {}
    public, secret = load_pair(resolve(home, secret_key_file))
    return {zmq.CURVE_SERVERKEY: load_public(resolve(home, server_key_file)),
            zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


class ZapHandler:
    """Answers libzmq's ZAP requests: a CURVE client whose public key has a file in the
    authorized folder is let in; anyone else is refused (and the socket never sees them).
    Bind it before the curve socket binds, in the same context."""

    def __init__(self, ctx: zmq.Context, authorized: Path, log_interval: float) -> None:
        self.authorized = authorized
        self.log_interval = log_interval
        self.unlogged = 0
        self.log_at = 0.0
        self.socket = ctx.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)

    def on_readable(self) -> None:
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.socket.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6:
            request_id = request[1] if len(request) > 1 else b""
            return [ZAP_VERSION, request_id, b"400", b"malformed ZAP request", b"", b""]
        version, request_id, _domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        if version != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"400", b"unsupported ZAP version", b"", b""]
        known, _ = authorized_keys(self.authorized)  # a broken file admits nobody
        if mechanism == b"CURVE" and credentials and credentials[0] in known:
            return [ZAP_VERSION, request_id, b"200", b"OK", z85.encode(credentials[0]), b""]
        self._log_refusal(address.decode(errors="replace"),
                          "its key is not authorized" if mechanism == b"CURVE" else
                          f"{mechanism.decode(errors='replace')} is not allowed")
        return [ZAP_VERSION, request_id, b"400", b"not authorized", b"", b""]

    def _log_refusal(self, address: str, reason: str) -> None:
        self.unlogged += 1
        now = time.monotonic()
        if now >= self.log_at:
            log.warning("refused %d client(s) since the last such line; the last from %s: %s",
                        self.unlogged, address, reason)
            self.unlogged = 0
            self.log_at = now + self.log_interval

    def close(self) -> None:
        self.socket.close()


def create_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A new key pair NAME.key / NAME.key_secret in a 0700 folder, both files 0600.
    Refuses to overwrite: replacing a key would lock out whoever holds the old one."""
    ensure_run_dir(folder)
    public, secret = folder / f"{name}{PUBLIC_SUFFIX}", folder / f"{name}{SECRET_SUFFIX}"
    for path in (public, secret):
        if path.exists():
            raise CurveError(f"{path} exists already; delete it first to replace it")
    previous = os.umask(0o077)  # pyzmq writes with the process umask
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(previous)
    for path in (public, secret):
        os.chmod(path, KEY_FILE_MODE)
    return public, secret
