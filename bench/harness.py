"""Start a warmwire in a temporary home for the benchmark, and stop it afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from proto.config import Config, load
from proto.frames import Codec, Control, Probe
from proto.sockets import request
from supervisor.commands.status import fetch

START_DEADLINE = 60.0
STOP_DEADLINE = 20.0
POLL_INTERVAL = 0.1
SETTLE_DEADLINE = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fully_started(status) -> bool:
    """Every service healthy, and the search-cache's vector side up: it loads its embedding
    model in the background after it answers probes, and that load (seconds of CPU) is start-up,
    not what any row measures."""
    if not status or not all(s.state == "healthy" for s in status.services):
        return False
    search = next((s for s in status.services if s.name == "search-cache"), None)
    return search is None or search.stats.get("chroma") == "up"


def live_stats(config: Config, service: str) -> dict:
    """A service's stats as of now, asked on its own control socket (the supervisor's view,
    `status`, is up to one probe interval old)."""
    codec = Codec(Control)
    answer = request(zmq.Context.instance(), config.control_endpoint(service), codec.encode(Probe(seq=0)),
                     config.client.timeout)
    if answer is None:
        raise RuntimeError(f"{service} did not answer a probe")
    return codec.decode(answer).stats


def settle_pool(config: Config, deadline: float = SETTLE_DEADLINE) -> float:
    """Wait until the pool has no agent starting and holds its ready target; the seconds it
    took. A row that times one step of a job calls it after its warm-up: the agents the pool
    starts for new chats (a `docker run` is ~0.3 s of CPU on these 2 cores) are start-up, not
    the step."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        pool = live_stats(config, "pool-manager")["pool"]
        if not pool["warming"] and pool["ready"] >= pool["target_ready"]:
            return time.monotonic() - started
        time.sleep(POLL_INTERVAL)
    raise RuntimeError(f"the pool did not settle within {deadline:g} s")


def terminate(proc: subprocess.Popen | None, deadline: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited within ``deadline`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(deadline)
        except subprocess.TimeoutExpired:
            proc.kill()


class System:
    """A whole warmwire (supervisor and services) in real processes."""

    def __init__(self, home: Path | None = None, **settings: str) -> None:
        """home: a folder to use and keep (the caller removes it); else a temporary one."""
        self.keep_home = home is not None
        self.home = home or Path(tempfile.mkdtemp(prefix="ww-bench-"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WARMWIRE_")}
        self.env.update(WARMWIRE_HOME=str(self.home),
                        WARMWIRE_FRONTEND=f"tcp://127.0.0.1:{_free_port()}",
                        WARMWIRE_WEB_LISTEN=f"127.0.0.1:{_free_port()}", **settings)
        self.config: Config = load(self.env)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "System":
        log = open(self.home / "supervisor.out", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "supervisor", "run"], env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if _fully_started(fetch(self.config)):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(POLL_INTERVAL)
        self.__exit__()
        raise RuntimeError(f"warmwire did not become healthy; see {self.home}/supervisor.out")

    def stop(self) -> None:
        terminate(self.proc, STOP_DEADLINE)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)
