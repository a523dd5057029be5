"""Each chat's workspace: `$WARMWIRE_HOME/workspaces/<name>`, a folder that outlives any agent.

An agent's tools (read, write, list files, run commands) work there, which is why a
container serves one chat only. A warm container is started before anyone knows its chat,
and Docker cannot add a mount to a running container, so each container gets an empty
folder of its own at `/chat` (its agent folder's `chat/`), and the image's `/workspace` is a
link to `/chat/ws`. When the agent is bound to a chat, the chat's folder is *lent*: renamed
to `<agent folder>/chat/ws` (one rename on the same disk: nothing is copied, and the
container sees it at once); when the agent is retired it is renamed back. A local agent
(no container) is simply given the folder's path. A folder still lent when a pool-manager
was killed is given back by the next one before anything else (``recover``).

`<name>` is derived from the chat id (its safe characters and a hash), so an id such as
`../x` cannot lead anywhere else, and two ids never share a folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONTAINER_MOUNT = "/chat"          # each container's own folder, bind-mounted read-write
CONTAINER_WORKSPACE = "/workspace"  # the image links it to CONTAINER_MOUNT/ws
MOUNT_DIR, LENT_NAME, LENT_LABEL = "chat", "ws", "workspace.name"
NAME_CHARS = 40
HASH_CHARS = 12
UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")
DIR_MODE = 0o700


def workspace_name(chat: str) -> str:
    readable = UNSAFE_RE.sub("_", chat)[:NAME_CHARS].strip("_") or "chat"
    return f"{readable}-{hashlib.sha256(chat.encode()).hexdigest()[:HASH_CHARS]}"


class Workspaces:
    def __init__(self, root: Path, owner: tuple[int, int] | None, lend: bool) -> None:
        """owner: the uid/gid agents run as, when not ours; lend: agents are containers."""
        self.root = root
        self.owner = owner
        self.lends = lend

    def path(self, chat: str) -> Path:
        return self.root / workspace_name(chat)

    def _make(self, folder: Path) -> None:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if self.owner is not None:
            os.chown(folder, *self.owner)

    def prepare(self, agent_root: Path) -> None:
        """A container's own mount folder (empty until a workspace is lent to it)."""
        if self.lends:
            self._make(agent_root / MOUNT_DIR)

    def lend(self, chat: str, agent_root: Path) -> str:
        """The chat's workspace for its agent: the path the agent's tools work in."""
        folder = self.path(chat)
        self.root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._make(folder)
        if not self.lends:
            return str(folder)
        (agent_root / LENT_LABEL).write_text(folder.name)
        os.rename(folder, agent_root / MOUNT_DIR / LENT_NAME)
        return CONTAINER_WORKSPACE

    def give_back(self, agent_root: Path) -> None:
        """Rename a lent workspace back to its place (before the agent's folder is deleted)."""
        lent = agent_root / MOUNT_DIR / LENT_NAME
        if not self.lends or not lent.exists():
            return
        name = (agent_root / LENT_LABEL).read_text().strip()
        target = self.root / name
        if target.exists():  # cannot happen while one agent serves a chat; never overwrite
            target = self.root / f"{name}.recovered-{int(time.time())}"
            log.error("workspace %s was also at its place; kept the agent's copy as %s", name, target.name)
        os.rename(lent, target)

    def recover(self, agents_dir: Path) -> int:
        """At start: give back what agents of a killed pool-manager still held, then delete
        their folders. Returns how many workspaces came back."""
        if not agents_dir.exists():
            return 0
        recovered = 0
        for agent_root in agents_dir.iterdir():
            if (agent_root / MOUNT_DIR / LENT_NAME).exists():
                self.give_back(agent_root)
                recovered += 1
            shutil.rmtree(agent_root, ignore_errors=True)
        return recovered
