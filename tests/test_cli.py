"""The `tcgraph` command, run as a user runs it: as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def tcgraph(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcgraph", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, input=input,
                          timeout=timeout)


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not become ready")


def test_schema_prints_the_published_sdl() -> None:
    result = tcgraph("schema")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "schema.graphql").read_text()


def test_every_verb_has_help() -> None:
    for verb in ("serve", "migrate", "import", "demo", "schema"):
        result = tcgraph(verb, "--help")
        assert result.returncode == 0 and "usage: tcgraph " + verb in result.stdout


def test_bad_setting_is_a_clear_error() -> None:
    result = tcgraph("migrate", env={"TCGRAPH_MAX_KEYS": "lots"})
    assert result.returncode == 2
    assert "TCGRAPH_MAX_KEYS must be an integer, got 'lots'" in result.stderr


async def test_migrate_demo_and_import(database_url: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    first = tcgraph("migrate", "--database-url", database_url)
    again = tcgraph("migrate", "--database-url", database_url)
    assert first.returncode == 0 and "applied: 0001_init" in first.stderr
    assert again.returncode == 0 and "up to date" in again.stderr

    demo = tcgraph("demo", "--database-url", database_url, "--tasks", "300", "--seed", "7")
    assert demo.returncode == 0, demo.stderr

    good = tmp_path / "entry.json"
    good.write_text(json.dumps({"namespace": "cli.test.path", "taskId": "A" * 22, "rank": 1,
                                "data": {}, "expires": "2099-01-01T00:00:00.000Z"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"namespace": "cli.test.other", "taskId": "' + "B" * 22 + '", "rank": 1, '
                   '"data": {}, "expires": "2099-01-01T00:00:00.000Z"}\n{"nonsense": true}\n')
    imported = tcgraph("import", "--database-url", database_url, str(good), str(bad))
    assert imported.returncode == 1
    assert "bad.jsonl" in imported.stderr and "line 2" in imported.stderr
    from_stdin = tcgraph("import", "--database-url", database_url, "-",
                         input=json.dumps({"namespace": "cli.stdin", "taskId": "C" * 22,
                                           "rank": 0, "data": {},
                                           "expires": "2099-01-01T00:00:00.000Z"}))
    assert from_stdin.returncode == 0, from_stdin.stderr

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 300
        entries = {r["namespace"] + "." + r["name"] for r in await conn.fetch(
            "SELECT namespace, name FROM index_entries WHERE namespace LIKE 'cli%'")}
    finally:
        await conn.close()
    # The good file and stdin landed; nothing of the bad file did.
    assert entries == {"cli.test.path", "cli.stdin"}


def test_missing_file_is_a_clear_error(database_url: str) -> None:
    result = tcgraph("import", "--database-url", database_url, "/nonexistent/file.json")
    assert result.returncode == 1
    assert "/nonexistent/file.json" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_database_url(database_url: str, workers: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--database-url", database_url,
         "--port", str(port), "--workers", str(workers), "--explain", "--demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url, process)
        body = httpx.post(f"{url}/graphql", json={"query": "{ namespace(path: \"\") { namespaces { nodes { path } } } }"}).json()
        assert body["data"]["namespace"]["namespaces"]["nodes"], body
        assert body["extensions"]["sql"]["statements"] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_serve_embedded_default_fills_demo_data_and_stops_postgres(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "TCGRAPH_DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--data-dir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_ready(url, process, timeout=180)
        body = httpx.post(f"{url}/graphql", json={
            "query": '{ label(label: "build-linux64/opt") { latest { taskId status { state } } } }'}).json()
        assert body["data"]["label"]["latest"] is not None, body
        # Another verb can use the same data dir while serve runs.
        migrate = tcgraph("migrate", "--data-dir", str(tmp_path), env=env)
        assert migrate.returncode == 0 and "up to date" in migrate.stderr
        assert httpx.get(f"{url}/health/ready").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert f"open http://127.0.0.1:{port}/graphql" in stderr
    # PostgreSQL stopped with the last tcgraph process using it.
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_flags_bound_slow_clients(database_url: str, workers: int) -> None:
    """`--header-timeout-ms` reaches every worker: a socket that sends nothing is closed."""
    import socket

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tcgraph", "serve", "--database-url", database_url,
         "--port", str(port), "--workers", str(workers), "--header-timeout-ms", "500",
         "--body-timeout-ms", "500", "--send-timeout-ms", "500", "--max-connections", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            received = b""
            while chunk := sock.recv(65536):  # until the server closes it
                received += chunk
        assert received.startswith(b"HTTP/1.1 408 "), received
        assert b'"limit":"header_timeout_ms"' in received
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
