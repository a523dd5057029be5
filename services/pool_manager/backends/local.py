"""The fallback backend: agents as local processes, running the same runner over the same IPC.

A local agent is sandboxed only as far as a plain process can be: its own session, a clean
environment, an address-space limit, a cap on the size of any one file it writes, no core
dumps, killed by the kernel if the pool-manager dies. It runs as the host user and shares the host's network and filesystem view: it is not
isolated like a container, and `status` says which backend runs the agents.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import subprocess
import sys
from typing import Callable

import psutil

from proto.config import Config
from proto.loop import EventLoop

from .common import RUNNER

log = logging.getLogger(__name__)
MB = 1 << 20
PR_SET_PDEATHSIG = 1
ADDRESS_SPACE_FACTOR = 4


class LocalBackend:
    name = "local"
    # Runs as the host user: the interpreter may live where no other uid can reach it.
    agent_owner = None

    def __init__(self, config: Config, loop: EventLoop, on_exit: Callable[[str], None]) -> None:
        self.config = config
        self.loop = loop
        self.on_exit = on_exit
        # Address space, not resident memory: Python maps far more than it touches.
        self.memory_bytes = config.pool.memory_per_agent_mb * MB * ADDRESS_SPACE_FACTOR
        self.file_bytes = config.pool.max_file_mb * MB
        self.pidfds: dict[str, int] = {}

    def _limits(self) -> None:  # runs in the child after it changed uid, before exec
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        # Die with the pool-manager, even a killed one: no orphan agent outlives it.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    def start(self, agent) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "WARMWIRE_IPC_DIR": str(agent.layout.ipc_dir),
               "WARMWIRE_IPC_KEY_FILE": str(agent.layout.key_file)}
        agent.handle = subprocess.Popen(
            [sys.executable, str(RUNNER)], env=env, cwd=agent.layout.root,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._limits,
        )

    def watch(self, agent) -> None:
        """Called in the loop once started: the pidfd turns readable when the process exits."""
        pidfd = os.pidfd_open(agent.handle.pid)
        self.pidfds[agent.id] = pidfd

        def exited() -> None:
            self.loop.remove_reader(pidfd)
            os.close(self.pidfds.pop(agent.id))
            agent.handle.wait()
            self.on_exit(agent.id, "exited")

        self.loop.add_reader(pidfd, exited)

    def stop(self, agent) -> None:
        process = agent.handle
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def limit_reached(self, agent) -> str:
        return ""  # its limits end the process, which the pidfd reports

    def memory_used(self, agent) -> int | None:
        process = agent.handle
        if process is None or process.poll() is not None:
            return None
        try:
            return psutil.Process(process.pid).memory_info().rss
        except psutil.Error:
            return None

    def remove_leftovers(self) -> int:
        return 0  # a local agent gets SIGKILL from the kernel when its pool-manager dies

    def describe(self) -> dict:
        run = ("on (agents.local_run: commands run on this machine, unconfined)" if self.config.agents.local_run
               else "off (no container around it; agents.local_run = true allows it)")
        return {"backend": self.name, "isolation": "local process, no container", "run_tool": run}
