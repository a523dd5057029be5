"""What both backends share: who the agent runs as, and the provider settings it gets."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from proto.config import Config

# The image's unprivileged user.
AGENT_UID = 10001
REPO = Path(__file__).resolve().parents[3]
RUNNER = REPO / "images" / "agent" / "runner.py"
PROVIDER_KEY_IN_CONTAINER = "/run/warmwire/provider.key"
# The agent's own copy of the provider key, beside its IPC key in its private area.
PROVIDER_KEY_COPY = "provider.key"
PROVIDER_KEY_MODE = 0o400
HOME_LABEL_CHARS = 12


def home_label(config: Config) -> str:
    """Tells this warmwire's agents from those of another home on the same engine."""
    return hashlib.sha256(str(config.home).encode()).hexdigest()[:HOME_LABEL_CHARS]


def container_user() -> tuple[int, int] | None:
    """The uid a container runs as: the image's unprivileged user when warmwire runs as root
    (it then owns the agent's IPC folder), else the host user's own uid (None: keep it)."""
    return (AGENT_UID, AGENT_UID) if os.geteuid() == 0 else None


def provider_environment(config: Config, key_file: str) -> dict[str, str]:
    """The runner's provider settings (agent.py reads them). Never the key itself: only the
    path of a file holding it."""
    agents = config.agents
    if agents.provider == "offline":
        return {}
    env = {"WARMWIRE_PROVIDER": agents.provider, "WARMWIRE_MODEL": agents.full_model}
    if agents.provider_url:
        env["WARMWIRE_PROVIDER_URL"] = agents.provider_url
    if agents.api_key_file:
        env["WARMWIRE_PROVIDER_KEY_FILE"] = key_file
    return env


def provider_key_copy(config: Config, root: Path, owner: tuple[int, int] | None) -> Path | None:
    """The provider's API key, copied into one agent's private area as a 0400 file of the
    agent's uid: the container user can read it, while the user's own key file stays
    private (0600) to the user. None when no key file is configured."""
    if config.agents.provider == "offline" or not config.agents.api_key_file:
        return None
    copy = root / PROVIDER_KEY_COPY
    key = Path(config.agents.api_key_file).read_bytes()
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PROVIDER_KEY_MODE)
    try:
        os.write(fd, key)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
    return copy
