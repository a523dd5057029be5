"""Host side of an agent container: the hardening every agent gets, and an inotify waiter.

`container_kwargs` is the pool-manager's own container options, so the tests and the
measurements here exercise exactly what runs:
read-only root, all capabilities dropped, no-new-privileges, no network, a non-root user,
memory/pids/CPU limits, the IPC folder bind-mounted read-write at /ipc and its key file
read-only at /run/warmwire/ipc.key.
"""

from __future__ import annotations

import os
import time

import inotify_simple

from proto import ipc
from proto.config import load
from services.pool_manager.backends.common import container_user
from services.pool_manager.backends.docker import container_options

MEMORY_LIMIT = "256m"
PIDS_LIMIT = 64
CPU_LIMIT = 1.0
TMPFS_OPTS = "rw,nosuid,nodev,noexec,size=16m"   # scratch space for libraries that want /tmp
LOG_MAX_SIZE = "1m"                              # the runner logs nothing but fatal errors
ROLE_LABEL = "warmwire.role"
ALIVE_CHECK_S = 0.2
WATCH_MASK = inotify_simple.flags.MOVED_TO | inotify_simple.flags.CLOSE_WRITE
MEASURE_HOME = "measure"


def agent_user() -> tuple[int, int]:
    return container_user() or (os.getuid(), os.getgid())


def prepare_ipc(root) -> tuple[ipc.Layout, ipc.Secret]:
    """Make one agent's IPC area (see proto/ipc.py) owned so the agent's uid can use it."""
    owner = container_user()
    return ipc.prepare(root, *owner) if owner else ipc.prepare(root)


def container_kwargs(image: str, lay: ipc.Layout, *, name: str, labels: dict | None = None) -> dict:
    """The pool-manager's own container options (one source for the hardening)."""
    options = container_options(load({}), image, name, lay, MEASURE_HOME)
    options["labels"].update(labels or {})
    return options


def docker_run_args(image: str, lay: ipc.Layout, name: str) -> list[str]:
    """The same hardening as a `docker run` command line (for people and for timing)."""
    uid, gid = agent_user()
    return ["docker", "run", "-d", "--name", name, "--user", f"{uid}:{gid}",
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "--network", "none", "--memory", MEMORY_LIMIT, "--memory-swap", MEMORY_LIMIT,
            "--pids-limit", str(PIDS_LIMIT), "--cpus", str(CPU_LIMIT),
            "--tmpfs", f"/tmp:{TMPFS_OPTS}", "--label", f"{ROLE_LABEL}=agent",
            "--log-opt", f"max-size={LOG_MAX_SIZE}",
            "-v", f"{lay.ipc_dir}:{ipc.CONTAINER_IPC_DIR}:rw",
            "-v", f"{lay.key_file}:{ipc.CONTAINER_KEY_FILE}:ro", image]


class Watch:
    """Waits for signed files in an agent's out/ folder: inotify wakes it, nothing polls.
    Create it before the container starts so the `ready` file cannot be missed."""

    def __init__(self, folder, secret: ipc.Secret, skip_existing: bool = False):
        self.folder = os.fspath(folder)
        self.secret = secret
        self.seen: set[str] = set(ipc.pending(self.folder)) if skip_existing else set()
        self.notify = inotify_simple.INotify()
        self.notify.add_watch(self.folder, WATCH_MASK)

    def wait(self, kinds, chat, timeout: float, alive=None) -> ipc.Message:
        """The next message of one of `kinds` for `chat` (a str or ipc.ANY_CHAT);
        other kinds are skipped. Raises TimeoutError; IpcError on a bad file.
        alive: optional callable; when it turns False the wait fails at once (checked
        every ALIVE_CHECK_S, so a crashed agent does not cost the whole timeout)."""
        kinds = {kinds} if isinstance(kinds, str) else set(kinds)
        deadline = time.monotonic() + timeout
        while True:
            for name in ipc.pending(self.folder):
                if name in self.seen:
                    continue
                self.seen.add(name)
                msg = ipc.parse(os.path.join(self.folder, name), self.secret, chat,
                                self.folder)
                if msg.kind in kinds:
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {sorted(kinds)} file in {self.folder} "
                                   f"within {timeout:.1f}s")
            if alive is not None:
                if not alive():
                    raise RuntimeError(f"the agent exited before a {sorted(kinds)} file")
                left = min(left, ALIVE_CHECK_S)
            self.notify.read(timeout=max(1, int(left * 1000)))

    def close(self):
        self.notify.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
