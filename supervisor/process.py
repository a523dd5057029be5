"""One supervised process: spawn, probe, restart with backoff, give up when flapping.

Two kinds: a warmwire service (``python -m <module>``, probed on its control socket) and an
outside program such as chroma (a command line, probed over HTTP, its output in its own log).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

import zmq

from proto.config import Config
from proto.frames import ServiceStatus
from proto.loop import EventLoop, Timer
from proto.service import PR_SET_PDEATHSIG

from .probes import ControlProbe, HttpProbe

log = logging.getLogger("supervisor")
# States in which a process is alive and probed.
PROBED = ("starting", "healthy", "degraded", "unresponsive")
# Probe intervals without an answer after which a service is marked unresponsive (it is
# killed after missed_probes).
UNRESPONSIVE_AFTER = 1.5


@dataclass(frozen=True)
class HttpHeartbeat:
    host: str
    port: int
    path: str


@dataclass(frozen=True)
class ServiceSpec:
    """A warmwire service (``module``), or an outside program: ``command`` gives its command
    line and ``heartbeat`` where it answers HTTP probes, both from the configuration."""

    name: str
    module: str = ""
    command: Callable[[Config], list[str]] | None = None
    heartbeat: Callable[[Config], HttpHeartbeat] | None = None


def _die_with_supervisor() -> None:
    """Run in the child before exec: an outside program cannot ask the kernel itself to be
    sent SIGTERM when the supervisor dies, as warmwire services do at start."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """States: starting → healthy ⇄ unresponsive; exited → restarting → starting; failed;
    stopping → stopped; degraded: it answers probes but reports a problem (``stats["problem"]``,
    e.g. a store-writer that cannot write its disk), so a restart would not help."""

    def __init__(self, spec: ServiceSpec, config: Config, ctx: zmq.Context, loop: EventLoop) -> None:
        self.spec = spec
        self.full_config = config
        self.config = config.supervisor
        self.loop = loop
        # Every child learns the home and the chroma port the supervisor settled on; chroma
        # and chromadb's client read ANONYMIZED_TELEMETRY: nothing is sent anywhere.
        self.env = {**os.environ, "WARMWIRE_HOME": str(config.home),
                    "WARMWIRE_CHROMA_PORT": str(config.chroma.port), "ANONYMIZED_TELEMETRY": "False"}
        self.prober: ControlProbe | HttpProbe
        if spec.heartbeat is not None:
            target = spec.heartbeat(config)
            self.prober = HttpProbe(target.host, target.port, target.path,
                                    config.chroma.probe_connect_timeout, loop, self._on_answer)
        else:
            self.prober = ControlProbe(ctx, config.control_endpoint(spec.name), loop, self._on_answer)
        self.probing = False
        self.output: IO[bytes] | None = None
        self.popen: subprocess.Popen | None = None
        self.state = "stopped"
        self.restarts = 0
        self.restarts_in_a_row = 0
        self.recent_restarts: collections.deque[float] = collections.deque()
        self.spawned_at = 0.0
        self.last_answer: float | None = None
        # When the first probe not answered yet was sent (None: every probe answered).
        self.unanswered_since: float | None = None
        # Called after each answer (the supervisor's probe pace listens).
        self.on_answered: Callable[[], None] | None = None
        self.stats: dict[str, Any] = {}
        self.stop_timer: Timer | None = None
        self.restart_timer: Timer | None = None
        self.start_probe_timer: Timer | None = None
        # Cleared when warmwire is shutting down: an exit then is final.
        self.restart_allowed = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None and self.popen.returncode is None else None

    def status(self) -> ServiceStatus:
        now = time.monotonic()
        alive = self.pid is not None
        return ServiceStatus(
            name=self.name, pid=self.pid, state=self.state, restarts=self.restarts,
            uptime=now - self.spawned_at if alive else None,
            last_probe_age=now - self.last_answer if alive and self.last_answer else None,
            stats=self.stats,
        )

    # -- lifecycle ---------------------------------------------------------------------
    def spawn(self) -> None:
        self.restart_timer = None
        self.prober.open()
        self.probing = True
        # A session of its own keeps a terminal's Ctrl-C away from the child, so only the
        # supervisor gets it and stops the services in order.
        if self.spec.command is None:
            # stdout/stderr are inherited: the services' log lines appear on the console.
            self.popen = subprocess.Popen([sys.executable, "-m", self.spec.module], env=self.env,
                                          start_new_session=True)
        else:
            # An outside program's own output (chroma's banner, colour codes) goes to its log.
            log_dir = self.full_config.log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
            self.output = open(log_dir / f"{self.name}.log", "ab")
            try:
                self.popen = subprocess.Popen(self.spec.command(self.full_config), env=self.env,
                                              stdin=subprocess.DEVNULL, stdout=self.output,
                                              stderr=subprocess.STDOUT, start_new_session=True,
                                              preexec_fn=_die_with_supervisor)
            except OSError as exc:  # the program is not installed: like an exit, restarts, then fails
                log.error("%s could not be started: %s", self.name, exc)
                self._close_probe()
                self._schedule_restart("could not start")
                return
        self.spawned_at = time.monotonic()
        self.last_answer = None
        self.unanswered_since = None
        self.state = "starting"
        log.info("%s spawned (pid %d)", self.name, self.popen.pid)
        self.probe()
        if not self.prober.queued_until_ready:
            # Asked again often while it starts: waiting for the next regular probe added up
            # to a whole probe_interval to every restart of chroma.
            self.start_probe_timer = self.loop.call_later(self.config.start_probe_interval,
                                                          self._probe_while_starting)

    def _probe_while_starting(self) -> None:
        self.start_probe_timer = None
        if self.state != "starting" or not self.probing:
            return
        if not self.prober.waiting:
            self.prober.send()
        self.start_probe_timer = self.loop.call_later(self.config.start_probe_interval,
                                                      self._probe_while_starting)

    def _close_probe(self) -> None:
        self.prober.close()
        self.probing = False
        if self.start_probe_timer is not None:
            self.start_probe_timer.cancel()
            self.start_probe_timer = None
        if self.output is not None:
            self.output.close()
            self.output = None

    def probe(self) -> None:
        """Send a probe, and act on the ones that went unanswered."""
        if self.state not in PROBED or not self.probing:
            return
        now = time.monotonic()
        if self.state == "starting":
            if now - self.spawned_at > self.config.start_timeout:
                self._kill_unresponsive(f"not ready {self.config.start_timeout:g} s after start")
                return
        elif self.unanswered_since is not None:
            # Timed from the first probe still unanswered, not from the last answer: after a
            # long idle pause (pace.py) the last answer is old, and that is no fault.
            silent = now - self.unanswered_since + self.config.probe_interval
            if silent > self.config.missed_probes * self.config.probe_interval:
                self._kill_unresponsive(f"{self.config.missed_probes} probes unanswered")
                return
            if silent > self.config.probe_interval * UNRESPONSIVE_AFTER and self.state in ("healthy", "degraded"):
                self.state = "unresponsive"
                log.warning("%s missed a health probe", self.name)
        if self.unanswered_since is None:
            self.unanswered_since = now
        self.prober.send()

    @property
    def answered(self) -> bool:
        """Its last probe was answered (or it is not probed now)."""
        return self.unanswered_since is None or self.state not in PROBED or not self.probing

    def _on_answer(self, stats: dict[str, Any]) -> None:
        if self.state not in PROBED:
            return
        now = time.monotonic()
        problem = stats.get("problem")
        if self.state == "starting":
            log.info("%s %s (ready in %.2f s)", self.name, "degraded" if problem else "healthy",
                     now - self.spawned_at)
        elif self.state == "unresponsive":
            log.info("%s answers probes again", self.name)
        if problem and self.stats.get("problem") != problem:
            log.error("%s degraded: %s", self.name, problem)
        elif not problem and self.state == "degraded":
            log.info("%s healthy again", self.name)
        self.state = "degraded" if problem else "healthy"
        self.last_answer = now
        self.unanswered_since = None
        self.stats = stats
        if self.restarts_in_a_row and now - self.spawned_at > self.config.stable_after:
            self.restarts_in_a_row = 0
        if self.on_answered is not None:
            self.on_answered()

    def _kill_unresponsive(self, why: str) -> None:
        log.error("%s is unresponsive (%s); killing it", self.name, why)
        self.state = "unresponsive"
        if self.popen is not None:
            self.popen.kill()  # the exit is reaped by on_exit, which restarts it

    def reap(self) -> bool:
        """Notice an exit; restart unless we are stopping it. True when it has exited."""
        if self.popen is None or self.popen.poll() is None:
            return False
        code = self.popen.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        self._close_probe()
        self.popen = None
        if self.state == "stopping" or not self.restart_allowed:
            if self.stop_timer is not None:
                self.stop_timer.cancel()
            self.state = "stopped"
            log.info("%s stopped (%s)", self.name, how)
            return True
        self._schedule_restart(how)
        return True

    def _schedule_restart(self, how: str) -> None:
        now = time.monotonic()
        self.recent_restarts.append(now)
        while self.recent_restarts and now - self.recent_restarts[0] > self.config.flap_window:
            self.recent_restarts.popleft()
        if len(self.recent_restarts) > self.config.flap_max_restarts:
            self.state = "failed"
            log.error("%s exited (%s) and is flapping: %d restarts in %g s; giving up on it — "
                      "see its log, fix the cause and restart warmwire", self.name, how,
                      len(self.recent_restarts) - 1, self.config.flap_window)
            return
        delay = min(self.config.backoff_initial * 2 ** self.restarts_in_a_row, self.config.backoff_max)
        self.restarts += 1
        self.restarts_in_a_row += 1
        self.state = "restarting"
        log.warning("%s exited (%s); restarting in %.1f s (restart %d)", self.name, how, delay, self.restarts)
        self.restart_timer = self.loop.call_later(delay, self.spawn)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after stop_timeout. Completion is seen by reap()."""
        if self.restart_timer is not None:
            self.restart_timer.cancel()
            self.restart_timer = None
        if self.popen is None:
            self.state = "stopped"
            return
        self.state = "stopping"
        self.popen.send_signal(signal.SIGTERM)
        self.stop_timer = self.loop.call_later(self.config.stop_timeout, self._stop_overdue)

    def _stop_overdue(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            log.error("%s did not stop within %g s; killing it", self.name, self.config.stop_timeout)
            self.popen.kill()

    def kill(self) -> None:
        if self.popen is not None:
            self.popen.kill()
