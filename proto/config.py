"""Configuration: embedded TOML defaults, an optional user TOML file, WARMWIRE_* variables.

The defaults live only in ``defaults.toml`` (documented there); the Structs below give them
types, so a wrong type in a file or an environment variable fails at start with a message
that names the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

import msgspec

DEFAULTS_FILE = Path(__file__).with_name("defaults.toml")
ENV_PREFIX = "WARMWIRE_"
# Shorthand variables the design documents for the two settings users change most.
ENV_SHORTHANDS = {"WARMWIRE_HOME": ("paths", "home"), "WARMWIRE_FRONTEND": ("router", "frontend")}
# Variables that are not settings of a section.
ENV_NOT_SETTINGS = {"WARMWIRE_CONFIG"}
# Sections whose keys are names the user chooses (model names), not fixed settings.
OPEN_SECTIONS = {"prices"}


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
    gateway: str
    deltas: str
    supervisor: str
    allow_network: bool


class Router(_Section):
    frontend: str
    curve_secret_key_file: str
    curve_authorized_keys: str
    allow_insecure: bool
    refused_log_interval: float
    max_frame_bytes: int
    hard_frame_bytes: int
    frontend_hwm: int
    store_ack_timeout: float
    max_pending_writes: int
    busy_retry_after: float
    drain_timeout: float
    search_timeout: float
    undeliverable_log_interval: float
    session_window: float
    sessions_kept: int
    history_limit: int
    history_max_limit: int
    latency_window: float
    latency_slot: float
    latency_precision: float
    latency_buckets: list[float]
    spend_refresh: float


class Store(_Section):
    database: str
    batch_max: int
    busy_timeout_ms: int
    checkpoint_after_idle: float
    wal_autocheckpoint_pages: int
    unwritable_retry: float
    synchronous: Literal["NORMAL", "FULL"]


class Supervisor(_Section):
    probe_interval: float
    idle_probe_interval: float
    start_probe_interval: float
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
    curve_server_key_file: str
    curve_secret_key_file: str


class Search(_Section):
    cache_size: int
    cache_ttl: float
    default_limit: int
    max_limit: int
    max_query_chars: int
    max_note_chars: int
    candidates: int
    fts_max_terms: int
    fts_rare_terms: int
    fts_common_share: float
    fts_common_min: int
    fts_counts_kept: int
    fts_counts_drift: float
    fts_min_share: float
    rrf_k: int
    min_similarity: float
    chunk_chars: int
    chunk_sentences: int
    index_batch: int
    store_ack_timeout: float
    drain_timeout: float
    hard_frame_bytes: int
    reply_chars: int


class Chroma(_Section):
    host: str
    port: int
    path: str
    collection: str
    ef_search: int
    timeout: float
    retry_interval: float
    heartbeat_path: str
    probe_connect_timeout: float


class Learn(_Section):
    note_chars: int
    extensions: list[str]
    in_flight: int
    answer_timeout: float


class Pool(_Section):
    backend: Literal["auto", "docker", "local"]
    image: str
    min_ready: int
    burst_span: float
    warm_window: float
    max_concurrency: int
    max_agents: int
    cpu_per_agent: float
    memory_per_agent_mb: int
    load_interval: float
    max_uses: int
    session_idle: float
    reap_idle: float
    ready_timeout: float
    job_timeout: float
    engine_calls: int
    sweep_interval: float
    max_agent_files: int
    max_file_mb: int
    max_progress_per_job: int
    memory: str
    pids: int
    cpus: float
    agent_network: str
    queue_hwm: int
    queue_buffer_bytes: int


class Jobs(_Section):
    max_queued: int
    busy_retry_after: float
    history_turns: int
    context_passages: int


class Agents(_Section):
    provider: Literal["offline", "anthropic", "openai"]
    provider_url: str
    api_key_file: str
    light_model: str
    full_model: str
    anthropic_light_model: str
    anthropic_full_model: str
    openai_light_model: str
    openai_full_model: str
    light_max_tokens: int
    full_max_tokens: int
    light_timeout: float
    full_timeout: float
    light_max_steps: int
    full_max_steps: int
    light_tools: list[Literal["read_file", "write_file", "list_files", "run"]]
    full_tools: list[Literal["read_file", "write_file", "list_files", "run"]]
    workspace_mb: int
    run_timeout: float
    local_run: bool
    daily_budget_usd: float
    budget_warn_share: float

    def tier(self, tier: str) -> "TierSettings":
        """The model and limits of a container tier ("container-light" or "container-full")."""
        size = "light" if tier == "container-light" else "full"
        return TierSettings(model=getattr(self, f"{size}_model"),
                            max_tokens=getattr(self, f"{size}_max_tokens"),
                            timeout=getattr(self, f"{size}_timeout"),
                            max_steps=getattr(self, f"{size}_max_steps"),
                            tools=tuple(getattr(self, f"{size}_tools")))


class TierSettings(msgspec.Struct, frozen=True):
    model: str
    max_tokens: int
    timeout: float
    max_steps: int
    tools: tuple[str, ...]


class Gateway(_Section):
    max_in_flight: int
    retries: int
    backoff_initial: float
    backoff_max: float
    retry_after_max: float
    connect_timeout: float
    chars_per_token: float
    anthropic_url: str
    openai_url: str
    anthropic_version: str
    hard_frame_bytes: int
    deltas_hwm: int


class Web(_Section):
    listen: str
    token_file: str
    allowed_origins: list[str]
    status_interval: float
    events_kept: int
    max_upload_bytes: int
    history_page: int
    shutdown_timeout: float


class Price(_Section):
    input: float
    output: float


class Config(_Section):
    paths: Paths
    endpoints: Endpoints
    router: Router
    store: Store
    supervisor: Supervisor
    client: Client
    search: Search
    chroma: Chroma
    learn: Learn
    pool: Pool
    jobs: Jobs
    agents: Agents
    gateway: Gateway
    web: Web
    prices: dict[str, Price]

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

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / self.chroma.path

    @property
    def web_token_file(self) -> Path:
        return self.home / self.web.token_file

    def endpoint(self, name: str) -> str:
        """An endpoint from [endpoints] with {run} expanded."""
        return getattr(self.endpoints, name).format(run=self.run_dir)

    def control_endpoint(self, service: str) -> str:
        """Where a service answers health probes."""
        return f"ipc://{self.run_dir}/{service}.ctl"


# Keys that once existed, and what replaced them: said plainly instead of "unknown key".
RETIRED_KEYS = {
    ("pool", "network"): "pool.network is retired: agents reach models through the model gateway "
                         "and need no network; pool.agent_network gives one to tools only "
                         "(see SECURITY.md)",
}


def _merge(base: dict, override: Mapping, origin: str) -> None:
    for section, values in override.items():
        if section not in base or not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: unknown section [{section}]")
        for key, value in values.items():
            if (section, key) in RETIRED_KEYS:
                raise ConfigError(f"{origin}: {RETIRED_KEYS[section, key]}")
            if key not in base[section] and section not in OPEN_SECTIONS:
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
            if (section, key) in RETIRED_KEYS:
                raise ConfigError(f"environment: {name}: {RETIRED_KEYS[section, key]}")
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
    if config.search.max_note_chars < config.learn.note_chars:
        raise ConfigError("search.max_note_chars must be >= learn.note_chars")
    if not 0 < config.agents.budget_warn_share <= 1:
        raise ConfigError("agents.budget_warn_share must be in (0, 1]")
    return _with_default_models(config)


def _with_default_models(config: Config) -> Config:
    """Empty tier models become the provider kind's defaults ("offline" for none)."""
    agents = config.agents
    kind = agents.provider
    light = agents.light_model or (getattr(agents, f"{kind}_light_model") if kind != "offline" else "offline")
    full = agents.full_model or (getattr(agents, f"{kind}_full_model") if kind != "offline" else "offline")
    return msgspec.structs.replace(config, agents=msgspec.structs.replace(
        agents, light_model=light, full_model=full))
