"""One settings object, from command-line flags and `TCGRAPH_*` variables.

Flags win over variables, variables over defaults. Every limit the gateway
enforces is here, with its default, so the README can list them from one place.

Every value, from a variable or a flag, is read by one function
(`parse_setting`): converted by the field's type, checked against its bounds
(`_INT_BOUNDS`; any other integer must be at least 1) or choices, and refused
with a `SettingError` naming the variable or flag and the value. No library
does it: the settings are some forty flat scalars, and a settings library
(pydantic-settings brings pydantic and its compiled core) would replace about
fifty lines while still needing the flag-or-variable naming done here.
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from collections.abc import Mapping
from urllib.parse import urlsplit

from tcgraph.keys import DEFAULT_MAX_KEYS, DEFAULT_MAX_PAGE_SIZE


# prometheus-client's own variable: the directory where server processes keep
# their figures for /metrics to sum. It must be set before prometheus-client is
# imported, so it is named here, where nothing imports it.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def default_data_dir() -> Path:
    """The per-user directory for the embedded PostgreSQL cluster."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tcgraph"


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Field `x_y` is read from `TCGRAPH_X_Y`."""

    database_url: str | None = None
    # Serve reads from here (a read replica, pgbouncer, or a read-only role);
    # migrations and imports always use database_url.
    read_database_url: str | None = None
    data_dir: Path = default_data_dir()
    host: str = "127.0.0.1"
    port: int = 8000
    # Where a thread of each server process answers /health/live and /metrics
    # however busy the event loop is (probes.py); 0: not at all.
    ops_port: int = 0
    # /health/live on the ops port fails once the event loop has not run this long.
    stall_timeout_ms: int = 10_000
    workers: int = 1  # server processes; each has its own pool
    demo: bool = False
    explain: bool = False
    log_format: str = "text"  # or "json": one object per line (see logs.py)
    verbose: int = 0  # 0: tcgraph's messages and warnings; 1: libraries' INFO; 2: DEBUG
    # 0 turns asyncpg's prepared-statement cache off, as a transaction-pooling
    # pgbouncer before 1.21 requires (see docs/scaling.md).
    statement_cache_size: int = 100
    # Limits. A request over any of them is refused before any SQL runs.
    max_keys: int = DEFAULT_MAX_KEYS  # keys in one list argument (taskIds, labels, ...)
    default_page_size: int = 100
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE
    max_depth: int = 12  # nesting depth of a document
    # A request's body (and a GET's query string); 10,000 long index paths fit.
    max_body_bytes: int = 4_000_000
    # A request's head, bounded while it arrives (http_server.py): its target
    # (path and query string: a GET document) and its header fields.
    max_url_bytes: int = 65_536
    max_header_bytes: int = 32_768  # all header fields, names and values
    max_headers: int = 100
    # Slow clients: a request's headers must arrive within this long of its
    # first byte, its body within this long of the headers; connections past
    # `max_connections` (per server process) are refused. See http_server.py.
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 60_000
    send_timeout_ms: int = 60_000  # a client that stops reading an answer is dropped after it
    max_connections: int = 1_000
    max_aliases: int = 100  # aliases in one document
    # Lexical tokens in one document (send keys as variables): a decision task's
    # 10,000 keys written inline as literals take 10,069 (tests/api/test_documents.py).
    max_tokens: int = 20_000
    # Operations in one document: a client sends the one it runs; each costs
    # validation whether it runs or not.
    max_operations: int = 20
    # Parsed and validated documents kept per server process, by the SHA-256 of
    # their text (also the persisted queries' store): entries, and bytes (text
    # and parse; see api/documents.py).
    document_cache_entries: int = 1_000
    document_cache_bytes: int = 64 * 2**20
    # Times one field (one response name) may appear in one selection set,
    # counting the fragments spread into it: GraphQL's validation compares
    # such fields pairwise.
    max_field_repeats: int = 50
    max_cost: int = 250_000  # objects a document may ask for (see limits.py)
    batch_size: int = 5_000  # keys per SQL statement; larger batches are chunked
    statement_timeout_ms: int = 15_000
    pool_min_size: int = 1
    pool_max_size: int = 10
    pool_timeout_ms: int = 5_000  # wait for a free connection, then answer 503
    graphiql: bool = True
    # Production switches: no introspection, and errors without internals
    # (unexpected ones are logged with the request id the response carries).
    introspection: bool = True
    mask_errors: bool = False
    # Answer selections whose every field PostgreSQL can compute with JSON
    # built there (api/sqljson.py); off, the resolvers answer everything.
    sql_json: bool = True
    # Subscriptions (docs/subscriptions.md). The change feed's listener needs a
    # direct connection (a transaction-pooling pgbouncer cannot carry LISTEN);
    # default: the database URL migrations use.
    listen_database_url: str | None = None
    max_websockets: int = 1_000  # WebSocket connections per server process
    max_subscriptions: int = 100  # operations at once on one WebSocket connection
    # Changes queued for one subscription whose client does not read them; past
    # this the client is closed (code 4413) instead of buffered without limit.
    max_queued_changes: int = 10_000
    # permessage-deflate on WebSocket frames, when the client offers it. Off:
    # a subscription's frames are small, and compressing each costs CPU per
    # frame and a compressor's state per connection.
    ws_compression: bool = False
    # A subscription whose change feed stays unreachable this long is closed
    # (code 4503) rather than left waiting silently.
    feed_outage_ms: int = 30_000
    change_retention_hours: int = 24  # how long a cursor can be resumed
    root_url: str = ""  # the public root URL the references name; default: the request's
    cors_origins: str = ""  # comma-separated browser origins allowed to call tcgraph
    # Comma-separated `Host` names tcgraph answers (`*.example.com` patterns,
    # `*` for any); default: localhost, 127.0.0.1, [::1], the root URL's host
    # and the listening address (unless a wildcard).
    allowed_hosts: str = ""

    @property
    def allowed_host_list(self) -> list[str]:
        """The `Host` names served: URLs in answers are built from them (see the README)."""
        given = [h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()]
        if given:
            return given
        names = ["localhost", "127.0.0.1", "[::1]"]
        root_host = urlsplit(self.root_url).hostname if self.root_url else None
        for host in (root_host, self.host):
            if host and host not in ("0.0.0.0", "::") and _host_pattern(host) not in names:
                names.append(_host_pattern(host))
        return names

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None,
                 flags: Mapping[str, object] | None = None,
                 **overrides: object) -> Settings:
        """Read `TCGRAPH_*` variables, then `flags` (setting name -> the flag's text),
        then the overrides that are not None. SettingError names the bad one."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(env_name(field.name))
            if raw is not None and raw != "":
                values[field.name] = parse_setting(field.name, raw, env_name(field.name))
        for name, given in (flags or {}).items():
            if given is not None:
                values[name] = parse_setting(name, given, flag_name(name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        """These settings as `TCGRAPH_*` variables: `from_env` reads them back."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            env[f"TCGRAPH_{field.name.upper()}"] = (
                ("1" if value else "0") if isinstance(value, bool) else str(value))
        return env

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Every value within its bounds, and the settings consistent with each other."""
        for field in fields(self):
            _check(field.name, getattr(self, field.name), env_name(field.name))
        if self.default_page_size > self.max_page_size:
            raise SettingError("TCGRAPH_DEFAULT_PAGE_SIZE must not exceed TCGRAPH_MAX_PAGE_SIZE")
        if self.ops_port == self.port:
            raise SettingError(f"TCGRAPH_OPS_PORT (--ops-port) must differ from TCGRAPH_PORT "
                               f"(--port), both {self.port}")
        if self.pool_min_size > self.pool_max_size:
            raise SettingError("TCGRAPH_POOL_MIN_SIZE must not exceed TCGRAPH_POOL_MAX_SIZE")
        for pattern in self.allowed_host_list:
            if "*" in pattern[1:] or (pattern.startswith("*") and not pattern.startswith("*.")
                                      and pattern != "*"):
                raise SettingError(f"TCGRAPH_ALLOWED_HOSTS: {pattern!r} is not a host name, "
                                   f"'*.domain' or '*'")


class SettingError(ValueError):
    """A setting that cannot be used; the message names its variable or flag and its value."""


def env_name(name: str) -> str:
    """The variable setting `name` is read from."""
    return f"TCGRAPH_{name.upper()}"


def flag_name(name: str) -> str:
    """The command-line flag of setting `name` (where the verb has one)."""
    return "--" + name.replace("_", "-")


# Integer settings' bounds (minimum, maximum or None); every other integer
# setting must be at least 1.
_INT_BOUNDS: dict[str, tuple[int, int | None]] = {
    "port": (1, 65_535),
    "ops_port": (0, 65_535),  # 0: no ops port
    "verbose": (0, None),
    "statement_cache_size": (0, None),  # 0: no prepared-statement cache
    "pool_min_size": (0, None),
}
_CHOICES: dict[str, tuple[str, ...]] = {"log_format": ("text", "json")}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _kind(name: str) -> type:
    """Setting `name`'s type, without the None of an optional one."""
    hint = typing.get_type_hints(Settings)[name]
    if isinstance(hint, types.UnionType):
        (hint,) = [t for t in typing.get_args(hint) if t is not type(None)]
    assert isinstance(hint, type)
    return hint


def parse_setting(name: str, raw: object, source: str) -> Any:
    """Setting `name`'s value from `raw` (a variable's or flag's text, or a value already
    typed); SettingError names `source` and what was wrong with the value."""
    kind = _kind(name)
    value: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise SettingError(f"{source} must be a boolean (1/0, true/false), got {raw!r}")
            value = text.lower() in _TRUE
        elif kind is int:
            try:
                value = int(text)
            except ValueError:
                raise SettingError(f"{source} must be an integer, got {raw!r}") from None
        elif kind is Path:
            value = Path(raw).expanduser()
    _check(name, value, source)
    return value


def _check(name: str, value: object, source: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        low, high = _INT_BOUNDS.get(name, (1, None))
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise SettingError(f"{source} must be {bounds}, got {value}")
    choices = _CHOICES.get(name)
    if choices and value not in choices:
        raise SettingError(f"{source} must be one of {', '.join(choices)}, got {value!r}")


def _host_pattern(host: str) -> str:
    """`host` as a `Host` header names it: IPv6 literals in brackets."""
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
