"""Configuration: embedded TOML defaults, an optional user TOML file, WARMWIRE_* variables.

The defaults live only in ``defaults.toml`` (documented there); the Structs below give them
types, so a wrong type in a file or an environment variable fails at start with a message
that names the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import msgspec

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "WARMWIRE_"
# Shorthand variables the design documents for the two settings users change most.
ENV_SHORTHANDS = {"WARMWIRE_HOME": ("paths", "home"), "WARMWIRE_FRONTEND": ("router", "frontend")}
# Variables that are not settings of a section.
ENV_NOT_SETTINGS = {"WARMWIRE_CONFIG"}


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class Paths(_Section):
    home: str


class Endpoints(_Section):
    store: str
    search: str
    pool: str
    supervisor: str


class Router(_Section):
    frontend: str
    max_frame_bytes: int
    hard_frame_bytes: int
    frontend_hwm: int
    store_ack_timeout: float
    max_pending_writes: int
    busy_retry_after: float
    drain_timeout: float


class Store(_Section):
    database: str
    batch_max: int
    busy_timeout_ms: int
    checkpoint_after_idle: float
    wal_autocheckpoint_pages: int


class Supervisor(_Section):
    probe_interval: float
    missed_probes: int
    start_timeout: float
    backoff_initial: float
    backoff_max: float
    flap_window: float
    flap_max_restarts: int
    stop_timeout: float
    stable_after: float


class Client(_Section):
    timeout: float


class Config(_Section):
    paths: Paths
    endpoints: Endpoints
    router: Router
    store: Store
    supervisor: Supervisor
    client: Client

    @property
    def home(self) -> Path:
        return Path(self.paths.home).resolve()

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def database(self) -> Path:
        return self.data_dir / self.store.database

    def endpoint(self, name: str) -> str:
        """An endpoint from [endpoints] with {run} expanded."""
        return getattr(self.endpoints, name).format(run=self.run_dir)

    def control_endpoint(self, service: str) -> str:
        """Where a service answers health probes."""
        return f"ipc://{self.run_dir}/{service}.ctl"


def _merge(base: dict, override: Mapping, origin: str) -> None:
    for section, values in override.items():
        if section not in base or not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: unknown section [{section}]")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            base[section][key] = value


def _env_overrides(raw: dict, env: Mapping[str, str]) -> dict:
    overrides: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        if name in ENV_SHORTHANDS:
            section, key = ENV_SHORTHANDS[name]
        else:
            rest = name[len(ENV_PREFIX):].lower()
            section, _, key = rest.partition("_")
            if section not in raw or key not in raw[section]:
                continue  # other tools' variables share the prefix (e.g. WARMWIRE_IMAGE_BASE)
        overrides.setdefault(section, {})[key] = value
    return overrides


def load(env: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the user's file, then environment variables; validated and typed."""
    env = os.environ if env is None else env
    raw = msgspec.toml.decode(DEFAULTS_FILE.read_bytes())
    user_file = env.get("WARMWIRE_CONFIG")
    if user_file is None:
        home = env.get("WARMWIRE_HOME", raw["paths"]["home"])
        candidate = Path(home) / "warmwire.toml"
        user_file = str(candidate) if candidate.is_file() else None
    if user_file:
        try:
            _merge(raw, msgspec.toml.decode(Path(user_file).read_bytes()), user_file)
        except (OSError, msgspec.DecodeError) as exc:
            raise ConfigError(f"cannot read config file {user_file}: {exc}") from None
    _merge(raw, _env_overrides(raw, env), "environment")
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if config.router.hard_frame_bytes < config.router.max_frame_bytes:
        raise ConfigError("router.hard_frame_bytes must be >= router.max_frame_bytes")
    return config
