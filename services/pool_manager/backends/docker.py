"""The Docker backend: each agent is a hardened container of the pre-built agent image.

Hardening (every container): no network (unless pool.agent_network names one for tools; an
agent never holds a provider key: it asks the model gateway over IPC), read-only root filesystem, all
capabilities dropped, no-new-privileges, a non-root user, memory/pids/CPU limits, a cap on
the size of any one file it writes (RLIMIT_FSIZE: its IPC folder is on the host's disk), a
small tmpfs for /tmp, the agent's IPC folder bind-mounted read-write at /ipc and its key
file read-only, and its own folder at /chat, where its chat's workspace is lent to it. A container that runs out of memory is replaced (the engine's ``oom``
event); one that reached its process limit is replaced at the next IPC sweep (cgroup v1
sends no event for it, so its ``pids.events`` counter is read then). Every container is labelled with this warmwire's home, so the ones a previous
run left behind are found and removed at start and at stop.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import docker
import docker.errors
import docker.types

from proto import ipc
from proto.config import Config
from proto.loop import EventLoop

from ..workspaces import CONTAINER_MOUNT, MOUNT_DIR
from .common import container_user, home_label

log = logging.getLogger(__name__)

ROLE_LABEL, HOME_LABEL, AGENT_LABEL = "warmwire.role", "warmwire.home", "warmwire.agent"
NANO = 1_000_000_000
TMPFS_OPTIONS = "rw,nosuid,nodev,noexec,size=16m"
LOG_MAX_SIZE = "1m"
API_TIMEOUT = 30  # seconds for one engine call
MB = 1 << 20
# Where a container's pids cgroup keeps its "max <times the limit was hit>" counter: cgroup
# v1 (cgroupfs driver), v2 with the systemd driver, v2 with cgroupfs.
PIDS_EVENTS = ("/sys/fs/cgroup/pids/docker/{id}/pids.events",
               "/sys/fs/cgroup/system.slice/docker-{id}.scope/pids.events",
               "/sys/fs/cgroup/docker/{id}/pids.events")
WHY = {"die": "exited", "oom": "ran out of memory"}
# A container's memory in use, as its cgroup counts it: v1 (cgroupfs), v2 systemd, v2 cgroupfs.
MEMORY_USED = ("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes",
               "/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current",
               "/sys/fs/cgroup/docker/{id}/memory.current")


class DockerUnavailable(Exception):
    pass


def container_options(config: Config, image: str, agent_id: str, layout: ipc.Layout,
                      home: str) -> dict:
    """Arguments for docker SDK ``containers.run``: the hardening every agent gets. No
    environment and no file of the container carries a provider key."""
    pool = config.pool
    uid, gid = container_user() or (os.getuid(), os.getgid())
    volumes = {str(layout.ipc_dir): {"bind": ipc.CONTAINER_IPC_DIR, "mode": "rw"},
               str(layout.key_file): {"bind": ipc.CONTAINER_KEY_FILE, "mode": "ro"},
               # Empty until the chat's workspace is lent to the agent (../workspaces.py).
               str(layout.root / MOUNT_DIR): {"bind": CONTAINER_MOUNT, "mode": "rw"}}
    return dict(
        image=image, name=agent_id, detach=True, user=f"{uid}:{gid}",
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        network_mode=pool.agent_network, mem_limit=pool.memory, memswap_limit=pool.memory,
        pids_limit=pool.pids, nano_cpus=int(pool.cpus * NANO),
        ulimits=[docker.types.Ulimit(name="fsize", soft=pool.max_file_mb * MB, hard=pool.max_file_mb * MB)],
        tmpfs={"/tmp": TMPFS_OPTIONS}, volumes=volumes,
        labels={ROLE_LABEL: "agent", HOME_LABEL: home, AGENT_LABEL: agent_id},
        log_config={"type": "json-file", "config": {"max-size": LOG_MAX_SIZE}},
        environment={},
    )


class DockerBackend:
    name = "docker"
    agent_owner = container_user()

    def __init__(self, config: Config, loop: EventLoop, on_exit: Callable[[str], None]) -> None:
        self.config = config
        self.loop = loop
        self.on_exit = on_exit
        self.home = home_label(config)
        try:
            self.client = docker.from_env(timeout=API_TIMEOUT)
            self.client.ping()
            self.client.images.get(config.pool.image)
        except docker.errors.ImageNotFound:
            raise DockerUnavailable(f"image {config.pool.image} is not built (./run.sh image)") from None
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"no engine answers ({type(exc).__name__})") from None
        loop.enable_threads()
        threading.Thread(target=self._follow_exits, name="docker-events", daemon=True).start()

    def _follow_exits(self) -> None:
        """The engine's event stream: each of our containers that dies or runs out of memory
        is reported to the loop."""
        events = docker.from_env(timeout=None).events(
            decode=True, filters={"type": "container", "event": list(WHY),
                                  "label": f"{HOME_LABEL}={self.home}"})
        for event in events:
            agent_id = event.get("Actor", {}).get("Attributes", {}).get(AGENT_LABEL)
            why = WHY.get(event.get("Action") or event.get("status"))
            if agent_id and why:
                self.loop.call_soon_threadsafe(lambda agent_id=agent_id, why=why: self.on_exit(agent_id, why))

    def start(self, agent) -> None:
        agent.handle = self.client.containers.run(
            **container_options(self.config, self.config.pool.image, agent.id, agent.layout, self.home))

    def watch(self, agent) -> None:
        pass  # exits arrive through the event stream

    def stop(self, agent) -> None:
        if agent.handle is None:
            return
        try:
            agent.handle.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.error("could not remove container %s: %s", agent.id, exc)

    def limit_reached(self, agent) -> str:
        if agent.handle is None:
            return ""
        for pattern in PIDS_EVENTS:
            try:
                with open(pattern.format(id=agent.handle.id)) as f:
                    counter = f.read().split()
            except OSError:
                continue
            return "reached its process limit" if counter[-1:] != ["0"] else ""
        return ""

    def memory_used(self, agent) -> int | None:
        """The container's memory in use, read from its cgroup (microseconds, no engine call:
        the engine's stats API takes a second per container). None when not found."""
        if agent.handle is None:
            return None
        for pattern in MEMORY_USED:
            try:
                with open(pattern.format(id=agent.handle.id)) as f:
                    return int(f.read())
            except (OSError, ValueError):
                continue
        return None

    def remove_leftovers(self) -> int:
        """Listed now, before this run starts an agent, and removed in a thread of their own:
        removed one by one before the first agent started (~0.4 s each on a busy machine), they
        kept a restarted pool-manager without a ready agent for 2-4 s."""
        leftovers = self.client.containers.list(all=True, filters={"label": f"{HOME_LABEL}={self.home}"})
        if leftovers:
            threading.Thread(target=self._remove, args=(leftovers,), name="docker-leftovers",
                             daemon=True).start()
        return len(leftovers)

    @staticmethod
    def _remove(containers: list) -> None:
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:  # the next start tries again
                log.error("could not remove agent container %s: %s", container.name, exc)

    def describe(self) -> dict:
        return {"backend": self.name, "image": self.config.pool.image, "network": self.config.pool.agent_network,
                "isolation": "container: read-only root, no capabilities, non-root, limits",
                "run_tool": "on, inside the container"}
