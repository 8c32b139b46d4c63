"""One settings object, from command-line flags and `TCGRAPH_*` variables.

Flags win over variables, variables over defaults. Every limit the gateway
enforces is here, with its default, so the README can list them from one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from urllib.parse import urlsplit

from tcgraph.keys import DEFAULT_MAX_KEYS, DEFAULT_MAX_PAGE_SIZE


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
    max_body_bytes: int = 4_000_000  # request body; 10,000 long index paths fit
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
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> "Settings":
        """Read `TCGRAPH_*` variables, then apply the overrides that are not None."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(f"TCGRAPH_{field.name.upper()}")
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, raw, type(getattr(cls(), field.name)))
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

    def with_(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> None:
        for name in ("workers", "max_keys", "max_body_bytes", "max_aliases", "max_tokens",
                     "max_field_repeats", "header_timeout_ms", "body_timeout_ms",
                     "send_timeout_ms", "max_connections",
                     "max_cost", "default_page_size", "max_page_size", "max_depth",
                     "batch_size", "statement_timeout_ms", "pool_max_size", "pool_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"TCGRAPH_{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"TCGRAPH_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.statement_cache_size < 0:
            raise ValueError("TCGRAPH_STATEMENT_CACHE_SIZE must not be negative")
        if self.pool_min_size < 0:
            raise ValueError("TCGRAPH_POOL_MIN_SIZE must not be negative")
        if self.default_page_size > self.max_page_size:
            raise ValueError("TCGRAPH_DEFAULT_PAGE_SIZE must not exceed TCGRAPH_MAX_PAGE_SIZE")
        for pattern in self.allowed_host_list:
            if "*" in pattern[1:] or (pattern.startswith("*") and not pattern.startswith("*.")
                                      and pattern != "*"):
                raise ValueError(f"TCGRAPH_ALLOWED_HOSTS: {pattern!r} is not a host name, "
                                 f"'*.domain' or '*'")
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("TCGRAPH_POOL_MIN_SIZE must not exceed TCGRAPH_POOL_MAX_SIZE")


def _host_pattern(host: str) -> str:
    """`host` as a `Host` header names it: IPv6 literals in brackets."""
    host = host.lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _parse(name: str, raw: str, kind: type) -> object:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"TCGRAPH_{name.upper()} must be a boolean (1/0, true/false), got {raw!r}")
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"TCGRAPH_{name.upper()} must be an integer, got {raw!r}") from None
    if kind is type(Path()) or issubclass(kind, Path):
        return Path(raw).expanduser()
    return raw
