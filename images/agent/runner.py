"""warmwire agent runner: the one process of an agent container (also the local fallback).

    python3 runner.py [--ipc DIR] [--key-file FILE]

Start: read the key, write a signed `ready` into <ipc>/out, then sleep in inotify on <ipc>/in
(no poll loop). Each signed `job` there gets `progress` then `result` (or `error`) in out/;
the job file is removed once handled. A job that needs a model asks for each turn with a
signed `model` file in out/ and sleeps in inotify until the host's signed `turn` for it
lands in in/ (the host's model gateway made the call; the agent never reaches a provider). The first job binds the runner to its chat: a container
serves one chat for its whole life, and jobs for any other chat are refused. A `stop` job,
SIGTERM or SIGINT ends the runner with exit code 0 after an `exit` file.

Runs unchanged on the host (the pool's local-process backend): point --ipc/--key-file (or
WARMWIRE_IPC_DIR / WARMWIRE_IPC_KEY_FILE) at the agent's folder.
"""

from __future__ import annotations

import os
import signal
import sys
import time

START = time.monotonic()

try:  # in the image, proto/ipc.py sits beside this file (a namespace package)
    from proto import ipc
except ImportError:  # a source checkout: images/agent/runner.py -> repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    from proto import ipc

import agent  # noqa: E402  (sibling module; the script's folder is on sys.path)
import inotify_simple  # noqa: E402

RUNNER_VERSION = "1"
# A job is complete when it is renamed into place (MOVED_TO); CLOSE_WRITE covers writers
# that create the file directly. Either way the signed content decides, not the event.
WATCH_MASK = inotify_simple.flags.MOVED_TO | inotify_simple.flags.CLOSE_WRITE
LIBC_NAME = "libc.so.6"  # skip ctypes.util.find_library: it forks ldconfig, costly at start
EXIT_OK = 0
EXIT_SETUP = 2


class _Stop(BaseException):
    """Raised by the signal handler to leave a blocking inotify wait (a BaseException, so a
    job waiting for a model turn is not caught as a failed job: the runner just exits)."""


class Runner:
    def __init__(self, ipc_dir: str, secret: ipc.Secret, env=os.environ):
        self.in_dir = os.path.join(ipc_dir, ipc.TO_AGENT)
        self.out_dir = os.path.join(ipc_dir, ipc.FROM_AGENT)
        self.secret = secret
        self.env = env
        self.bound_chat: str | None = None
        self.writer = ipc.Writer(self.out_dir, secret, ipc.UNASSIGNED_CHAT)
        self.rejected: set[str] = set()   # bad entries that could not be removed
        self.stopping = False
        self.waiting = False
        self.stop_reason = ""
        self.notify = None

    # -- signals: only interrupt the blocking wait; a job in progress finishes first
    def on_signal(self, signum, _frame):
        self.stopping = True
        self.stop_reason = signal.Signals(signum).name
        if self.waiting:
            raise _Stop

    def run(self) -> int:
        if inotify_simple._libc is None:
            try:
                import ctypes
                inotify_simple._libc = ctypes.CDLL(LIBC_NAME, use_errno=True)
            except OSError:
                pass  # not glibc: let inotify_simple look the library up itself
        with inotify_simple.INotify() as notify:
            self.notify = notify
            notify.add_watch(self.in_dir, WATCH_MASK)
            # Watch first, then announce: a job sent right after `ready` cannot be missed.
            self.writer.write("ready", "", {
                "pid": os.getpid(), "runner": RUNNER_VERSION,
                "python": sys.version.split()[0],
                "start_ms": round((time.monotonic() - START) * 1000, 1)})
            try:
                while True:
                    self.handle_pending()  # also catches files written before the watch
                    self.waiting = True
                    if self.stopping:      # checked after `waiting`: no signal slips between
                        break
                    events = notify.read()  # blocks until something lands in in/
                    self.waiting = False
                    if any(e.mask & inotify_simple.flags.IGNORED for e in events):
                        # in/ was deleted (the host discarded this agent): nothing can come.
                        self.stopping = True
                        self.stop_reason = "ipc folder removed"
            except _Stop:
                pass
            finally:
                self.waiting = False
        try:
            self.writer.write("exit", "", {"reason": self.stop_reason or "stop"})
        except OSError:
            pass  # the host may already have removed the folder; exiting cleanly matters more
        self.writer.close()
        return EXIT_OK

    def handle_pending(self):
        # Again until none is left: a job that waited for a model turn consumed the inotify
        # events of the files that arrived meanwhile.
        while True:
            names = [name for name in ipc.pending(self.in_dir) if name not in self.rejected]
            if not names:
                return
            for name in names:
                self.handle(name)
                if self.stopping:
                    return

    def handle(self, name: str):
        try:
            # A signed `stop` is obeyed whatever its chat; a `job` must be for our chat.
            msg = ipc.parse(os.path.join(self.in_dir, name), self.secret, ipc.ANY_CHAT,
                            self.in_dir, kinds=ipc.HOST_KINDS)
            if msg.kind == "job" and self.bound_chat not in (None, msg.chat):
                raise ipc.WrongChat(f"ipc file {ipc.safe_name(name)}: job is for another "
                                    f"chat than this container's")
        except ipc.Missing:
            return
        except ipc.IpcError as e:
            self.writer.write("error", "", {"error": str(e), "type": type(e).__name__})
            if not ipc.remove(self.in_dir, name):
                self.rejected.add(name)  # e.g. a directory: report it once, then ignore it
            return
        ipc.remove(self.in_dir, name)
        if msg.kind == "stop":
            self.stopping = True
            self.stop_reason = "stop job"
            return
        if msg.kind == "turn":
            return  # a model turn for a job that is over (answered late): nothing waits for it
        if self.bound_chat is None:
            self.bound_chat = msg.chat
            self.writer.chat = msg.chat
        self.run_job(msg)

    def run_job(self, msg: ipc.Message):
        started = time.monotonic()
        self.writer.write("progress", msg.job, {"stage": "started"})
        try:
            result = agent.answer(msg.payload, self.env, lambda request: self.ask_model(msg.job, request),
                                  lambda stage: self.writer.write("progress", msg.job, {"stage": stage}))
        except Exception as e:  # the runner outlives a bad job; the host gets a clear error
            self.writer.write("error", msg.job, {"error": f"agent failed: {type(e).__name__}",
                                                 "type": "AgentError"})
            return
        result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        self.writer.write("result", msg.job, result)


    def ask_model(self, job: str, request: dict) -> dict:
        """One model turn: a signed `model` file out, then wait (inotify, no poll) for the
        host's signed `turn` for this job. Other jobs arriving meanwhile stay in in/."""
        self.writer.write("model", job, request)
        while True:
            for name in ipc.pending(self.in_dir):
                if name in self.rejected:
                    continue
                try:
                    msg = ipc.parse(os.path.join(self.in_dir, name), self.secret, ipc.ANY_CHAT,
                                    self.in_dir, kinds=ipc.HOST_KINDS)
                except ipc.Missing:
                    continue
                except ipc.IpcError as e:
                    self.writer.write("error", "", {"error": str(e), "type": type(e).__name__})
                    if not ipc.remove(self.in_dir, name):
                        self.rejected.add(name)
                    continue
                if msg.kind == "stop":
                    ipc.remove(self.in_dir, name)
                    self.stopping = True
                    self.stop_reason = "stop job"
                    raise _Stop
                if msg.kind == "turn" and msg.job == job and msg.chat == self.bound_chat:
                    ipc.remove(self.in_dir, name)
                    return msg.payload
                if msg.kind == "turn":  # a turn for no job of ours: stale, drop it
                    ipc.remove(self.in_dir, name)
                # a `job`: left for the main loop once this one is done
            self.waiting = True
            if self.stopping:
                raise _Stop
            self.notify.read()
            self.waiting = False


USAGE = """usage: runner.py [--ipc DIR] [--key-file FILE]
  --ipc DIR        IPC folder holding in/ and out/ (env WARMWIRE_IPC_DIR, default /ipc)
  --key-file FILE  file with the hex HMAC key (env WARMWIRE_IPC_KEY_FILE,
                   default /run/warmwire/ipc.key)"""


def parse_args(argv) -> dict | None:
    """Two options do not need argparse, whose import costs ~20 ms on every container start."""
    opts = {"--ipc": os.environ.get("WARMWIRE_IPC_DIR", ipc.CONTAINER_IPC_DIR),
            "--key-file": os.environ.get("WARMWIRE_IPC_KEY_FILE", ipc.CONTAINER_KEY_FILE)}
    args = list(argv)
    while args:
        arg = args.pop(0)
        key, eq, value = arg.partition("=")
        if key not in opts or (not eq and not args):
            return None
        opts[key] = value if eq else args.pop(0)
    return opts


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return EXIT_OK
    opts = parse_args(argv)
    if opts is None:
        print(USAGE, file=sys.stderr)
        return EXIT_SETUP
    try:
        secret = ipc.Secret.from_file(opts["--key-file"])
        runner = Runner(opts["--ipc"], secret)
    except (ipc.IpcError, OSError) as e:
        print(f"warmwire runner: cannot start: {e}", file=sys.stderr)
        return EXIT_SETUP
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, runner.on_signal)
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
