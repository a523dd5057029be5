"""Configuration: embedded defaults, a user file, WARMWIRE_* variables, clear errors."""

from __future__ import annotations

import pytest

from proto.config import ConfigError, load


def test_embedded_defaults_need_no_file_and_no_variables():
    config = load({})
    assert config.router.frontend == "tcp://127.0.0.1:7400"
    assert config.home.name == ".warmwire"
    assert config.endpoint("store") == f"ipc://{config.home}/run/store.sock"
    assert config.store.busy_timeout_ms == 30000


def test_environment_variables_override_with_the_right_type(tmp_path):
    config = load({"WARMWIRE_HOME": str(tmp_path), "WARMWIRE_FRONTEND": "tcp://127.0.0.1:9999",
                   "WARMWIRE_ROUTER_MAX_FRAME_BYTES": "65536",
                   "WARMWIRE_SUPERVISOR_PROBE_INTERVAL": "0.5"})
    assert config.home == tmp_path
    assert config.router.frontend == "tcp://127.0.0.1:9999"
    assert config.router.max_frame_bytes == 65536
    assert config.supervisor.probe_interval == 0.5


def test_a_user_file_in_home_overrides_defaults_and_env_overrides_the_file(tmp_path):
    (tmp_path / "warmwire.toml").write_text("[router]\nmax_frame_bytes = 1000\nbusy_retry_after = 9\n")
    config = load({"WARMWIRE_HOME": str(tmp_path), "WARMWIRE_ROUTER_BUSY_RETRY_AFTER": "3"})
    assert config.router.max_frame_bytes == 1000
    assert config.router.busy_retry_after == 3.0


@pytest.mark.parametrize("content, message", [
    ("[router]\nmax_frame_bytes = 'big'\n", "$.router.max_frame_bytes"),
    ("[router]\nmax_frame_byte = 1\n", "unknown key router.max_frame_byte"),
    ("[routr]\n", "unknown section [routr]"),
    ("[router\n", "cannot read config file"),
    ("[router]\nmax_frame_bytes = 10\nhard_frame_bytes = 5\n", "hard_frame_bytes must be >="),
])
def test_a_bad_setting_fails_with_a_message_naming_it(tmp_path, content, message):
    path = tmp_path / "custom.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("$", r"\$")):
        load({"WARMWIRE_CONFIG": str(path)})


def test_a_wrongly_typed_variable_names_its_key():
    with pytest.raises(ConfigError, match="router.max_frame_bytes"):
        load({"WARMWIRE_ROUTER_MAX_FRAME_BYTES": "lots"})


@pytest.mark.parametrize("provider, light, full", [
    ("offline", "offline", "offline"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-sonnet-4-5"),
    ("openai", "gpt-4o-mini", "gpt-4o"),
])
def test_tier_models_default_to_the_provider_kinds_own(provider, light, full):
    agents = load({"WARMWIRE_AGENTS_PROVIDER": provider}).agents
    assert (agents.light_model, agents.full_model) == (light, full)
    assert agents.tier("container-light").model == light and agents.tier("container-full").model == full
    chosen = load({"WARMWIRE_AGENTS_PROVIDER": provider, "WARMWIRE_AGENTS_LIGHT_MODEL": "mine"}).agents
    assert chosen.light_model == "mine" and chosen.full_model == full


def test_the_retired_pool_network_is_refused_with_what_replaced_it(tmp_path):
    with pytest.raises(ConfigError, match="pool.network is retired.*agent_network"):
        load({"WARMWIRE_POOL_NETWORK": "bridge"})
    path = tmp_path / "old.toml"
    path.write_text("[pool]\nnetwork = 'host'\n")
    with pytest.raises(ConfigError, match="pool.network is retired"):
        load({"WARMWIRE_CONFIG": str(path)})
