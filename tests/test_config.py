import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tcgraph.config import Settings, SettingError, env_name, flag_name


def test_defaults_are_the_documented_limits() -> None:
    s = Settings.from_env({})
    assert (s.max_keys, s.default_page_size, s.max_page_size) == (10_000, 100, 1_000)
    assert s.database_url is None and s.explain is False


def test_environment_then_flags() -> None:
    env = {"TCGRAPH_MAX_KEYS": "50", "TCGRAPH_EXPLAIN": "yes", "TCGRAPH_PORT": "9000",
           "TCGRAPH_DATA_DIR": "/tmp/x", "TCGRAPH_DATABASE_URL": "postgresql://h/db"}
    s = Settings.from_env(env, port=9100, database_url=None)
    assert (s.max_keys, s.explain, s.port) == (50, True, 9100)
    assert s.data_dir == Path("/tmp/x") and s.database_url == "postgresql://h/db"


@pytest.mark.parametrize("env, message", [
    ({"TCGRAPH_MAX_KEYS": "many"}, "TCGRAPH_MAX_KEYS must be an integer, got 'many'"),
    ({"TCGRAPH_EXPLAIN": "maybe"}, "TCGRAPH_EXPLAIN must be a boolean"),
    ({"TCGRAPH_MAX_PAGE_SIZE": "0"}, "TCGRAPH_MAX_PAGE_SIZE must be at least 1"),
    ({"TCGRAPH_DEFAULT_PAGE_SIZE": "500", "TCGRAPH_MAX_PAGE_SIZE": "100"},
     "TCGRAPH_DEFAULT_PAGE_SIZE must not exceed"),
])
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_to_env_round_trips() -> None:
    s = Settings(database_url="postgresql://h/db", explain=True, max_keys=7, data_dir=Path("/d"),
                 cors_origins="https://a.example")
    assert Settings.from_env(s.to_env()) == s


@pytest.mark.parametrize("env, hosts", [
    ({}, ["localhost", "127.0.0.1", "[::1]"]),
    ({"TCGRAPH_ROOT_URL": "https://tc.example.com/"},
     ["localhost", "127.0.0.1", "[::1]", "tc.example.com"]),
    ({"TCGRAPH_HOST": "0.0.0.0"}, ["localhost", "127.0.0.1", "[::1]"]),
    ({"TCGRAPH_HOST": "10.1.2.3"}, ["localhost", "127.0.0.1", "[::1]", "10.1.2.3"]),
    ({"TCGRAPH_HOST": "::1"}, ["localhost", "127.0.0.1", "[::1]"]),
    ({"TCGRAPH_ALLOWED_HOSTS": "tc.example.com, *.internal"}, ["tc.example.com", "*.internal"]),
    ({"TCGRAPH_ALLOWED_HOSTS": "*"}, ["*"]),
])
def test_allowed_hosts_default_to_this_machine_and_the_root_url(
        env: dict[str, str], hosts: list[str]) -> None:
    assert Settings.from_env(env).allowed_host_list == hosts


def test_a_bad_host_pattern_names_the_variable() -> None:
    with pytest.raises(ValueError, match="TCGRAPH_ALLOWED_HOSTS: 'tc.\\*.example' is not"):
        Settings.from_env({"TCGRAPH_ALLOWED_HOSTS": "tc.*.example"})


@pytest.mark.parametrize("flags, message", [
    ({"workers": "0"}, "--workers must be at least 1, got 0"),
    ({"port": "65536"}, "--port must be from 1 to 65535, got 65536"),
    ({"header_timeout_ms": "soon"}, "--header-timeout-ms must be an integer, got 'soon'"),
    ({"log_format": "xml"}, "--log-format must be one of text, json, got 'xml'"),
])
def test_bad_flags_name_the_flag_and_the_value(flags: dict[str, str], message: str) -> None:
    # The variable is fine; the flag, which wins, is not: the error names the flag.
    with pytest.raises(SettingError, match=f"^{re.escape(message)}$"):
        Settings.from_env({"TCGRAPH_WORKERS": "2", "TCGRAPH_PORT": "8001"}, flags=flags)


def test_every_setting_is_read_by_the_same_rules_from_a_variable_or_a_flag() -> None:
    for field in fields(Settings):
        default = getattr(Settings(), field.name)
        if isinstance(default, bool) or not isinstance(default, int):
            continue
        low = 0 if field.name in ("verbose", "statement_cache_size", "pool_min_size",
                                  "ops_port") else 1
        bad = str(low - 1)
        with pytest.raises(SettingError,
                           match=f"^{env_name(field.name)} must be .*, got {bad}$"):
            Settings.from_env({env_name(field.name): bad})
        with pytest.raises(SettingError,
                           match=f"^{flag_name(field.name)} must be .*, got {bad}$"):
            Settings.from_env({}, flags={field.name: bad})
    assert Settings.from_env({}, flags={"pool_min_size": "0", "explain": True}).explain is True


def test_a_bad_flag_on_the_command_line_is_one_line_naming_it() -> None:
    result = subprocess.run([sys.executable, "-m", "tcgraph", "serve", "--workers", "0"],
                            capture_output=True, text=True, env={**os.environ,
                                                                 "TCGRAPH_WORKERS": "2"})
    assert result.returncode == 2
    assert result.stderr == "tcgraph: --workers must be at least 1, got 0\n"
