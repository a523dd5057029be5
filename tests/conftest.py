"""Shared fixtures: a whole warmwire in real processes, in a temporary home, on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, NoReturn

import msgspec
import pytest
import zmq

from proto.sockets import request

REPO = Path(__file__).resolve().parent.parent
START_DEADLINE = 60.0
ANSWER_DEADLINE = 30.0
# Notices after which more frames come for the same message.
INTERIM_KINDS = ("queued", "progress", "delta")

# What a test may need that a machine may lack, and the command that provides it. Such a test
# is skipped with the reason, and the run ends with one line counting them; under CI=true, where
# .ci/run provides everything, it fails instead: CI must never pass by skipping.
ENABLERS = {
    "a Docker engine": "bash images/ensure-docker.sh",
    "root": "run the tests as root (sudo ./run.sh test)",
    "Node.js": "apt-get install nodejs npm (node >= 20), for the second-language client",
    "Chromium": "apt-get install chromium chromium-driver, for the web page's browser tests",
}
NEEDS_PREFIX = "needs "


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(need: str, why: str) -> NoReturn:
    """This test needs ``need`` (a key of ENABLERS), which is missing here because ``why``."""
    if in_ci():
        pytest.fail(f"CI must run every test, but this one {NEEDS_PREFIX}{need}: {why}", pytrace=False)
    pytest.skip(f"{NEEDS_PREFIX}{need}: {why}")


@pytest.fixture
def root() -> None:
    """The test mounts filesystems or does something else only root may."""
    if os.geteuid() != 0:
        unavailable("root", "mounting a filesystem needs root")


def wait_for(condition: Callable[[], Any], deadline: float, what: str, interval: float = 0.05) -> Any:
    """Poll a condition until it is truthy or the deadline passes (then fail, saying what)."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    """A wire-protocol client written against the README, with plain msgpack maps."""

    def __init__(self, endpoint: str, options: dict | None = None, before_connect=None) -> None:
        """options: socket options set before connecting (e.g. CurveZMQ keys); before_connect:
        called with the socket just before it connects (e.g. to attach a monitor)."""
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        for option, value in (options or {}).items():
            self.sock.setsockopt(option, value)
        if before_connect is not None:
            before_connect(self.sock)
        self.sock.connect(endpoint)

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def send(self, text: str, chat: str = "test", id: str | None = None, sender: str = "tester") -> str:
        id = id or uuid.uuid4().hex
        self.send_raw(msgspec.msgpack.encode({"type": "chat", "id": id, "chat": chat, "sender": sender, "text": text}))
        return id

    def recv(self, timeout: float = ANSWER_DEADLINE) -> dict:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise AssertionError(f"no frame within {timeout:g} s")
        return msgspec.msgpack.decode(self.sock.recv())

    def exchange(self, text: str, timeout: float = ANSWER_DEADLINE, **kwargs) -> tuple[list[dict], dict]:
        """Send one message: (the notices that came before its final frame, the final frame:
        a reply, or a notice that ends it)."""
        id = self.send(text, **kwargs)
        interim = []
        while True:
            frame = self.recv(timeout)
            if frame.get("id") != id:
                continue
            if frame["type"] == "reply" or frame.get("kind") not in INTERIM_KINDS:
                return interim, frame
            interim.append(frame)

    def ask(self, text: str, **kwargs) -> dict:
        """Send one message and return its final frame."""
        return self.exchange(text, **kwargs)[1]

    def close(self) -> None:
        self.sock.close()


class Warmwire:
    """A running supervisor and its services."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        # Every system in a test run gets its own web port: two of them alive at once (two
        # module fixtures) would otherwise both want the default 7480.
        env.setdefault("WARMWIRE_WEB_LISTEN", f"127.0.0.1:{free_port()}")
        self.env = env
        self.frontend = env["WARMWIRE_FRONTEND"]
        self.web_url = f"http://{env['WARMWIRE_WEB_LISTEN']}"
        self.proc: subprocess.Popen | None = None
        self.clients: list[Client] = []

    def spawn(self) -> None:
        self.log = open(self.home / "supervisor.out", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor", "run"], cwd=REPO,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.spawn()
        try:
            wait_for(self.healthy, START_DEADLINE, "every service to be healthy")
        except BaseException:
            self.stop()  # a system that never came up must not outlive its test
            raise

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict:
        """The supervisor's status, asked over its control socket (as `status --json` does)."""
        endpoint = f"ipc://{self.home}/run/supervisor.ctl"
        answer = request(zmq.Context.instance(), endpoint, msgspec.msgpack.encode({"type": "status?"}), 2.0)
        return msgspec.msgpack.decode(answer) if answer else {"services": []}

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def healthy(self) -> bool:
        status = self.status()
        return bool(status["services"]) and all(s["state"] == "healthy" for s in status["services"])

    def client(self, endpoint: str | None = None, options: dict | None = None,
               before_connect=None) -> Client:
        client = Client(endpoint or self.frontend, options, before_connect)
        self.clients.append(client)
        return client

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.home / 'data' / 'warmwire.db'}?mode=ro", uri=True)

    def logs(self) -> str:
        return (self.home / "supervisor.out").read_text(errors="replace")

    def stop(self, deadline: float = 20) -> None:
        for client in self.clients:
            client.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(deadline)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def home():
    # A short path: ipc socket paths must stay under 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="ww-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_env(home):
    def make(**overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
        env.update(WARMWIRE_HOME=str(home), WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{free_port()}",
                   WARMWIRE_WEB_LISTEN=f"127.0.0.1:{free_port()}")
        env.update(overrides)
        return env
    return make


@pytest.fixture
def warmwire(home, make_env):
    system = Warmwire(home, make_env())
    system.start()
    yield system
    system.stop()
    if os.environ.get("WARMWIRE_TEST_SHOW_LOGS"):
        print(system.logs())


# -- figures: what a suite measured (counts, restart times), shown after the run -------------
FIGURES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def figures(request) -> list[str]:
    """Append a line; pytest prints every line in a "figures" section at the end of the run."""
    return request.config.stash.setdefault(FIGURES, [])


def pytest_terminal_summary(terminalreporter, config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.hookimpl(specname="pytest_terminal_summary", wrapper=True, tryfirst=True)
def pytest_terminal_summary_skip_line(terminalreporter, config):
    """The outermost wrapper: its line comes after pytest's own short summary, just above the
    closing count."""
    result = yield
    line = skip_summary(terminalreporter.stats.get("skipped", []))
    if line:
        terminalreporter.write_line(line)
    return result


def skip_summary(reports: list) -> str:
    """One plain line: how many tests were skipped, why, and what enables them."""
    if not reports:
        return ""
    needs: dict[str, int] = {}
    for report in reports:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        need = next((need for need in ENABLERS if f"{NEEDS_PREFIX}{need}:" in reason), "")
        needs[need] = needs.get(need, 0) + 1
    parts = [f"{count} need {need} (to run them: {ENABLERS[need]})" if need else f"{count} for other reasons"
             for need, count in needs.items()]
    return f"{len(reports)} tests skipped: " + "; ".join(parts) + "."
