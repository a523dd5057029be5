"""What both backends share: who the agent runs as. (No provider settings: agents ask the
model gateway for model turns and never hold a key.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from proto.config import Config

# The image's unprivileged user.
AGENT_UID = 10001
REPO = Path(__file__).resolve().parents[3]
RUNNER = REPO / "images" / "agent" / "runner.py"
HOME_LABEL_CHARS = 12


def home_label(config: Config) -> str:
    """Tells this warmwire's agents from those of another home on the same engine."""
    return hashlib.sha256(str(config.home).encode()).hexdigest()[:HOME_LABEL_CHARS]


def container_user() -> tuple[int, int] | None:
    """The uid a container runs as: the image's unprivileged user when warmwire runs as root
    (it then owns the agent's IPC folder), else the host user's own uid (None: keep it)."""
    return (AGENT_UID, AGENT_UID) if os.geteuid() == 0 else None
