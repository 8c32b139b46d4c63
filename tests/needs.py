"""What a test needs beyond PostgreSQL, and the one rule for when it is missing.

Mark a test `@pytest.mark.needs("chromium")` (conftest.py applies the rule before it runs),
or call `need(...)` where a marker cannot go (a fixture, or a module's imports). A missing
need skips the test with the reason locally; under CI (CI=true) it is a failure, so that a
CI image that lost a service never turns its tests into quiet skips.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from services.postgres import PGBOUNCER
from services.rabbitmq import SERVER as RABBITMQ_SERVER

CHROMIUM = "/usr/bin/chromium"
HTTP_AUDIT = Path(__file__).resolve().parent / "http_audit"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _chromium() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (pip install playwright)"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    return None


def _http_audit() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HTTP_AUDIT / "node_modules" / "graphql-http").is_dir():
        return "graphql-http is not installed (npm ci in tests/http_audit; scripts/test does it)"
    return None


def _pgbouncer() -> str | None:
    return None if os.path.exists(PGBOUNCER) else (
        f"{PGBOUNCER} is missing (apt-get install -y pgbouncer)")


def _rabbitmq() -> str | None:
    if not RABBITMQ_SERVER.exists() or shutil.which("epmd") is None:
        return f"{RABBITMQ_SERVER} or epmd is missing (apt-get install -y rabbitmq-server)"
    return None


def _hypothesis() -> str | None:
    if any(importlib.util.find_spec(m) is None for m in ("hypothesis", "hypothesis_graphql")):
        return "hypothesis and hypothesis-graphql are not installed (pip install -e '.[test]')"
    return None


def _embedded_postgres() -> str | None:
    if os.environ.get("TCGRAPH_TEST_DATABASE_URL"):
        return "this needs the embedded test PostgreSQL (unset TCGRAPH_TEST_DATABASE_URL)"
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    "chromium": _chromium,
    "http-audit": _http_audit,
    "pgbouncer": _pgbouncer,
    "rabbitmq": _rabbitmq,
    "hypothesis": _hypothesis,
    "embedded-postgres": _embedded_postgres,
}


def missing(*names: str) -> str | None:
    """Why one of `names` is not available here, or None when all are."""
    for name in names:
        if name not in CHECKS:
            raise ValueError(f"unknown need {name!r} (known: {', '.join(sorted(CHECKS))})")
        reason = CHECKS[name]()
        if reason is not None:
            return reason
    return None


def need(*names: str) -> None:
    """Skip (locally) or fail (under CI) the current test or module unless `names` are here."""
    reason = missing(*names)
    if reason is None:
        return
    if under_ci():
        pytest.fail(f"{reason} (CI=true: this test must run)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
