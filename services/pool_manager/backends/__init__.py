"""Where agents run. Every backend has the same small interface, so the pool does not care
whether an agent is a Docker container, a local process, or (later) a pod elsewhere.

    name             "docker" or "local"
    start(agent)     create and start; blocking, so the pool calls it in a worker thread
    stop(agent)      kill and remove; never raises; blocking, called in a worker thread
    remove_leftovers()   remove agents a previous run of this warmwire left behind
    limit_reached(agent) why, if the agent hit a limit no event reports (checked at each
                     IPC sweep), else ""
    describe()       a dict for `status`

A backend reports an agent that exited (or ran out of memory) by calling
``on_exit(agent_id, why)`` inside the event loop (Docker: its event stream; local: a pidfd
per process) — nothing polls.
"""

from __future__ import annotations

from typing import Callable

from proto.config import Config
from proto.loop import EventLoop

from .local import LocalBackend



class BackendError(Exception):
    pass


def choose(config: Config, loop: EventLoop, on_exit: Callable[[str, str], None]):
    """Docker when configured or when an engine answers with the image built; else local."""
    wanted = config.pool.backend
    if wanted in ("auto", "docker"):
        from .docker import DockerBackend, DockerUnavailable
        try:
            return DockerBackend(config, loop, on_exit), ""
        except DockerUnavailable as exc:
            if wanted == "docker":
                raise BackendError(f"docker backend configured but unavailable: {exc}") from None
            return LocalBackend(config, loop, on_exit), f"no docker: {exc}"
    return LocalBackend(config, loop, on_exit), "configured"
