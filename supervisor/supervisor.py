"""The supervisor: runs every service, probes them, restarts them, answers status, stops all.

It is a single-threaded event loop: child exits arrive as SIGCHLD through the loop's signal
pipe, probes are a timer (at the pace of pace.py: fast while work flows, rare while idle),
status requests arrive on the control socket.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import sys
import time

import msgspec
import zmq

from proto.config import Config
from proto.frames import Codec, Control, Status, StatusRequest
from proto.loop import EventLoop, Timer
from proto.service import ControlServer
from proto.sockets import ensure_run_dir, request

from .pace import ProbePace, traffic
from .process import HttpHeartbeat, ManagedProcess, ServiceSpec

log = logging.getLogger("supervisor")


# `chroma run` without the `chroma` script: the script imports the whole chromadb Python
# package (~2 s of CPU) only to hand its arguments to the Rust server, which this does
# directly (~0.05 s). Measured: a killed chroma was healthy again 4.3-6.4 s later on a busy
# 2-core machine, over the 5 s a restart may take; most of it was that import.
CHROMA_MAIN = "import sys, chromadb_rust_bindings; chromadb_rust_bindings.cli(['chroma', *sys.argv[1:]])"


def chroma_command(config: Config) -> list[str]:
    """`chroma run` from the same environment as warmwire."""
    return [sys.executable, "-c", CHROMA_MAIN, "run", "--host", config.chroma.host,
            "--port", str(config.chroma.port), "--path", str(config.chroma_dir)]


def chroma_heartbeat(config: Config) -> HttpHeartbeat:
    return HttpHeartbeat(config.chroma.host, config.chroma.port, config.chroma.heartbeat_path)


def with_chroma_port(config: Config) -> Config:
    """chroma.port 0 means: a free loopback port, picked now and kept for the whole run (a
    restarted chroma comes back where the search-cache looks for it)."""
    if config.chroma.port:
        return config
    with socket.socket() as probe:
        probe.bind((config.chroma.host, 0))
        port = probe.getsockname()[1]
    return msgspec.structs.replace(config, chroma=msgspec.structs.replace(config.chroma, port=port))


# Start order; stopping goes the other way round, so the web page and then the router stop
# taking messages first, and the store-writer, which everyone writes through, stops last.
SERVICES = (
    ServiceSpec("store-writer", "services.store_writer"),
    ServiceSpec("chroma", command=chroma_command, heartbeat=chroma_heartbeat),
    ServiceSpec("search-cache", "services.search_cache"),
    # Before the pool-manager (its agents ask it for model turns), stopped after it.
    ServiceSpec("model-gateway", "services.model_gateway"),
    ServiceSpec("pool-manager", "services.pool_manager"),
    ServiceSpec("router", "services.router"),
    # The web page is a client of the router's frontend and of this supervisor's status.
    ServiceSpec("web", "services.web"),
)


# Probe rounds whose age status shows (the bench counts an idle window's rounds with them).
ROUND_HISTORY = 16


class AlreadyRunning(Exception):
    pass


class Supervisor:
    def __init__(self, config: Config, specs: tuple[ServiceSpec, ...] = SERVICES) -> None:
        config = with_chroma_port(config)
        self.config = config
        self.ctx = zmq.Context()
        self.loop = EventLoop()
        self.codec = Codec(Control)
        self.processes = [ManagedProcess(spec, config, self.ctx, self.loop) for spec in specs]
        for process in self.processes:
            process.on_answered = self._on_probe_answered
        self.pace = ProbePace(config.supervisor.probe_interval, config.supervisor.idle_probe_interval)
        self.probe_timer: Timer | None = None
        self.round_at = 0.0      # when the last probe round was sent
        self.rounds = 0          # probe rounds sent (status: what an idle warmwire costs)
        self.round_times: collections.deque[float] = collections.deque(maxlen=ROUND_HISTORY)
        self.round_quiet = False  # the last round saw no traffic: once answered, wait long
        self.stop_queue: list[ManagedProcess] = []
        self.stopping = False
        self.started = time.monotonic()

    def _check_not_running(self) -> None:
        endpoint = self.config.endpoint("supervisor")
        answer = request(self.ctx, endpoint, self.codec.encode(StatusRequest()), timeout=0.5)
        if answer is not None:
            pid = self.codec.decode(answer).supervisor.get("pid")
            raise AlreadyRunning(f"warmwire is already running in {self.config.home} (supervisor pid {pid})")

    def run(self) -> None:
        # Messages, notes and logs are the user's own: owner-only, like the socket folder.
        for folder in (self.config.data_dir, self.config.log_dir, self.config.run_dir):
            ensure_run_dir(folder)
        self._check_not_running()
        control = ControlServer(self.ctx, self.config.endpoint("supervisor"), self._answer)
        self.loop.add_reader(control.socket, control.on_readable)
        self.loop.handle_signals([signal.SIGCHLD, signal.SIGTERM, signal.SIGINT], self._on_signal)
        log.info("started (pid %d, home %s, frontend %s)", os.getpid(), self.config.home,
                 self.config.router.frontend)
        for process in self.processes:
            process.spawn()
        self._probe_in(self.config.supervisor.probe_interval)
        try:
            self.loop.run()
        finally:
            for process in self.processes:  # only reached early on an unexpected error
                process.kill()
            self.loop.close()
            self.ctx.destroy(linger=0)
        log.info("stopped")

    def _probe_in(self, delay: float) -> None:
        if self.probe_timer is not None:
            self.probe_timer.cancel()
        self.probe_timer = self.loop.call_at(self.round_at + delay if self.rounds else time.monotonic() + delay,
                                             self._probe_all)

    def _probe_all(self) -> None:
        """A probe round. The next one is armed at the fast pace, and pushed back to the idle
        pace once every probe of a quiet round is answered: a probe left unanswered brings
        the next round (and the verdict on that service) at the fast pace."""
        self.probe_timer = None
        if self.stopping:
            return
        answered = all(process.answered for process in self.processes)
        fingerprint = traffic((process.name, process.stats) for process in self.processes)
        interval = self.pace.next_interval(fingerprint, answered)
        self.round_quiet = interval > self.pace.fast
        for process in self.processes:
            process.probe()
        self.round_at = time.monotonic()
        self.rounds += 1
        self.round_times.append(self.round_at)
        self._probe_in(self.pace.fast)
        self._on_probe_answered()

    def _on_probe_answered(self) -> None:
        if self.round_quiet and all(process.answered for process in self.processes):
            self.round_quiet = False
            self._probe_in(self.pace.interval)

    def _wake_probes(self) -> None:
        """Someone asks about warmwire: probe at the fast pace again from now on."""
        if self.pace.interval > self.pace.fast and not self.stopping:
            self.pace.wake()
            self.round_quiet = False
            self.round_at = time.monotonic()
            self._probe_in(self.pace.fast)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            for process in self.processes:
                if process.reap() and self.stopping:
                    self._stop_next()
            return
        if self.stopping:
            log.warning("second %s: killing every service now", signal.Signals(signum).name)
            for process in self.processes:
                process.kill()
            return
        log.info("stopping (%s): web and router first, store-writer last", signal.Signals(signum).name)
        self.stopping = True
        for process in self.processes:
            process.restart_allowed = False
        self.stop_queue = list(reversed(self.processes))
        self._stop_next()

    def _stop_next(self) -> None:
        """Stop services one at a time, in order; end the loop after the last."""
        while self.stop_queue:
            current = self.stop_queue[0]
            if current.state == "stopping":
                return  # wait for its exit
            if current.state != "stopped":
                current.stop()
                if current.state == "stopping":
                    return
            self.stop_queue.pop(0)
        self.loop.stop()

    def status(self) -> Status:
        now = time.monotonic()
        return Status(
            services=[process.status() for process in self.processes],
            supervisor={"pid": os.getpid(), "uptime": time.monotonic() - self.started,
                        "home": str(self.config.home), "frontend": self.config.router.frontend,
                        "stopping": self.stopping, "probe_rounds": self.rounds,
                        "probe_round_ages": [round(now - at, 3) for at in self.round_times],
                        "probe_interval": self.pace.interval},
        )

    def _answer(self, frame: object) -> Status | None:
        if not isinstance(frame, StatusRequest):
            return None
        status = self.status()
        self._wake_probes()
        return status
