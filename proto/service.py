"""What every service process shares: logging, the control socket, signals, clean exit.

A service is an object with ``stats()`` and ``drain(done)``; ``run_service`` hosts it. The
service's own logic never touches signals or the control socket, so tests can drive it in
process.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Protocol

import msgspec
import zmq

from proto import config as config_mod
from proto.frames import Codec, Control, Health, Probe
from proto.loop import EventLoop
from proto.sockets import bind_router, ensure_run_dir

PR_SET_PDEATHSIG = 1
# Every line names the process it came from, whichever module logged it.
LOG_FORMAT = "%(asctime)s {service} %(levelname)s %(message)s"


class Service(Protocol):
    state: str

    def stats(self) -> dict[str, Any]: ...

    def drain(self, done: Callable[[], None]) -> None: ...


def setup_logging(name: str, log_dir: Path) -> logging.Logger:
    """One line per event to stderr (the supervisor's console) and to <home>/logs/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(LOG_FORMAT.format(service=name))
    root = logging.getLogger()
    root.handlers.clear()
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_dir / f"{name}.log")):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    return logging.getLogger(name)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the supervisor dies, so no orphan outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(0)


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard one, and return it. The router holds a
    descriptor per connected client (1,000 clients at once need over 1,000), and a common
    soft default is 1,024; the hard limit is what the administrator allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # (Linux caps the hard limit at fs.nr_open: it is never "unlimited")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class ControlServer:
    """Answers control requests (probes, status) on a ROUTER socket.

    ``answer`` maps a decoded control frame to the frame to send back, or None to ignore it.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, answer: Callable[[Any], Any]) -> None:
        self.answer = answer
        self.codec = Codec(Control)
        self.socket = bind_router(ctx, endpoint)

    def on_readable(self) -> None:
        while True:
            try:
                peer, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not a [peer, frame] pair: nobody we answer
            try:
                reply = self.answer(self.codec.decode(data))
            except msgspec.DecodeError:
                continue
            if reply is not None:
                try:
                    self.socket.send_multipart([peer, self.codec.encode(reply)], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass  # the asker went away; it will ask again


def health_answer(name: str, service: Service, loop: EventLoop) -> Callable[[Any], Health | None]:
    """How a service answers the supervisor's probes (its stats, and its timer wake-ups)."""
    def answer(frame: Any) -> Health | None:
        if not isinstance(frame, Probe):
            return None
        return Health(seq=frame.seq, name=name, pid=os.getpid(), state=service.state,
                      stats={**service.stats(), "timer_wakeups": loop.timers_fired})
    return answer


def run_service(name: str, build: Callable[[config_mod.Config, zmq.Context, EventLoop], Service]) -> None:
    """Load config, build the service, serve until SIGTERM/SIGINT, drain, exit."""
    die_with_parent()
    config = config_mod.load()
    log = setup_logging(name, config.log_dir)
    open_files = raise_open_file_limit()
    ensure_run_dir(config.run_dir)
    ctx = zmq.Context()
    loop = EventLoop()
    try:
        service = build(config, ctx, loop)
        control = ControlServer(ctx, config.control_endpoint(name), health_answer(name, service, loop))
    except Exception as exc:  # a clear line in the log instead of a bare traceback
        log.error("failed to start: %s", exc)
        raise SystemExit(1)
    loop.add_reader(control.socket, control.on_readable)
    # What was built at start lives as long as the process: keep the cyclic garbage
    # collector from walking it again and again (long pauses in the middle of a request).
    gc.freeze()

    def on_signal(signum: int) -> None:
        if service.state == "draining":
            return
        log.info("stopping (%s)", signal.Signals(signum).name)
        service.drain(loop.stop)

    loop.handle_signals([signal.SIGTERM, signal.SIGINT], on_signal)
    log.info("started (pid %d, up to %d open files)", os.getpid(), open_files)
    try:
        loop.run()
    finally:
        loop.close()
        ctx.destroy(linger=0)
    log.info("stopped")
