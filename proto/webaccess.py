"""Who may use the web page: where it listens, its token, and which origins may connect.

- It listens on loopback unless ``web.listen`` says otherwise; on any other address it
  refuses to start unless a token exists (``./run.sh web-token`` writes it).
- Once a token exists, a page must send it before anything else on its WebSocket, and
  ``/metrics`` wants it as ``Authorization: Bearer <token>``.
- A WebSocket upgrade must carry an ``Origin`` that is the page's own (``http://`` + the Host
  it asked for) or one of ``web.allowed_origins``. On loopback the Host itself must name
  loopback (127.0.0.1, localhost, [::1]) or an allowed origin's host: a page of another site
  whose name was made to resolve to 127.0.0.1 (DNS rebinding) is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from proto.config import Config

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
TOKEN_BYTES = 32
TOKEN_MODE = 0o600


class WebConfigError(Exception):
    """The web page cannot be served as configured; the message says why and what to do."""


def parse_listen(listen: str) -> tuple[str, int]:
    """"host:port" (IPv6 in brackets) -> (host without brackets, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise WebConfigError(f"web.listen must be host:port, not {listen!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The token, or "" when there is none."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def make_token(path: Path) -> str:
    """A new random token in ``path`` (0600, its folder 0700); replaces any earlier one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TOKEN_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    os.replace(temporary, path)
    return token


def check_listen(config: Config) -> tuple[str, int]:
    """Where to listen; WebConfigError for a non-loopback address without a token."""
    host, port = parse_listen(config.web.listen)
    if not is_loopback(host) and not read_token(config.web_token_file):
        raise WebConfigError(
            f"refusing to serve the web page on {config.web.listen}, an address other hosts can "
            f"reach, without a token: run `./run.sh web-token` first (it writes "
            f"{config.web_token_file}), or listen on 127.0.0.1")
    return host, port


class Access:
    def __init__(self, config: Config) -> None:
        self.token_file = config.web_token_file
        host, self.port = parse_listen(config.web.listen)
        self.loopback = is_loopback(host)
        self.allowed_origins = {origin.rstrip("/") for origin in config.web.allowed_origins}
        self.allowed_hosts = {urlsplit(origin).netloc for origin in self.allowed_origins}
        if self.loopback:
            self.allowed_hosts |= {f"{name}:{self.port}" for name in LOOPBACK_NAMES}

    def token_required(self) -> bool:
        return bool(read_token(self.token_file))

    def token_ok(self, offered: str) -> bool:
        token = read_token(self.token_file)
        return not token or hmac.compare_digest(token.encode(), offered.encode())

    def host_ok(self, host: str | None) -> bool:
        """Loopback: the Host header must name loopback (or an allowed origin's host)."""
        return not self.loopback or (host or "") in self.allowed_hosts

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        if not origin:
            return False
        origin = origin.rstrip("/")
        return origin in self.allowed_origins or (self.host_ok(host) and origin == f"http://{host}")
