"""The `tcgraph` command, run as a user runs it: as a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from servers import serve_process
from services.postgres import connected

ROOT = Path(__file__).resolve().parent.parent


def tcgraph(*args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcgraph", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, input=input,
                          timeout=timeout)


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
    async with connected(database_url) as conn:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    first = tcgraph("migrate", "--database-url", database_url)
    again = tcgraph("migrate", "--database-url", database_url)
    assert first.returncode == 0 and "applied: 0001_init" in first.stderr
    assert again.returncode == 0 and "up to date" in again.stderr

    demo = tcgraph("demo", "--database-url", database_url, "--tasks", "300", "--seed", "7")
    assert demo.returncode == 0, demo.stderr

    good = tmp_path / "entry.json"
    good.write_text(json.dumps({"namespace": "cli.test.path", "taskId": "AAAAAAAAQACAAAAAAAAAAA",
                                "rank": 1, "data": {}, "expires": "2099-01-01T00:00:00.000Z"}))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"namespace": "cli.test.other", "taskId": "' + "BBBBBBBBQBCBBBBBBBBBBA"
                   + '", "rank": 1, "data": {}, "expires": "2099-01-01T00:00:00.000Z"}\n'
                   '{"nonsense": true}\n')
    imported = tcgraph("import", "--database-url", database_url, str(good), str(bad))
    assert imported.returncode == 1
    assert "bad.jsonl" in imported.stderr and "line 2" in imported.stderr
    from_stdin = tcgraph("import", "--database-url", database_url, "-",
                         input=json.dumps({"namespace": "cli.stdin",
                                           "taskId": "CCCCCCCCQCCCCCCCCCCCCA", "rank": 0,
                                           "data": {}, "expires": "2099-01-01T00:00:00.000Z"}))
    assert from_stdin.returncode == 0, from_stdin.stderr

    async with connected(database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 300
        entries = {r["namespace"] + "." + r["name"] for r in await conn.fetch(
            "SELECT namespace, name FROM index_entries WHERE namespace LIKE 'cli%'")}
    # The good file and stdin landed; nothing of the bad file did.
    assert entries == {"cli.test.path", "cli.stdin"}


def test_missing_file_is_a_clear_error(database_url: str) -> None:
    result = tcgraph("import", "--database-url", database_url, "/nonexistent/file.json")
    assert result.returncode == 1
    assert "/nonexistent/file.json" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_database_url(database_url: str, workers: int) -> None:
    with serve_process("--database-url", database_url, "--workers", str(workers), "--explain",
                       "--demo") as served:
        body = httpx.post(f"{served.url}/graphql", json={
            "query": '{ namespace(path: "") { namespaces { nodes { path } } } }'}).json()
        assert body["data"]["namespace"]["namespaces"]["nodes"], body
        assert body["extensions"]["sql"]["statements"] >= 1
    assert served.returncode == 0, served.stderr


def test_serve_embedded_default_fills_demo_data_and_stops_postgres(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TCGRAPH_DATABASE_URL"}
    with serve_process("--data-dir", str(tmp_path), env=env, ready_timeout=180) as served:
        body = httpx.post(f"{served.url}/graphql", json={
            "query": '{ label(label: "build-linux64/opt") { latest { taskId status { state } } } }',
        }).json()
        assert body["data"]["label"]["latest"] is not None, body
        # Another verb can use the same data dir while serve runs.
        migrate = tcgraph("migrate", "--data-dir", str(tmp_path), env=env)
        assert migrate.returncode == 0 and "up to date" in migrate.stderr
        assert httpx.get(f"{served.url}/health/ready").status_code == 200
    assert served.returncode == 0, served.stderr
    assert f"open {served.url}/graphql" in served.stderr
    # PostgreSQL stopped with the last tcgraph process using it.
    assert not (tmp_path / "pgdata" / "postmaster.pid").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_flags_bound_slow_clients(database_url: str, workers: int) -> None:
    """`--header-timeout-ms` reaches every worker: a socket that sends nothing is closed."""
    import socket

    with serve_process("--database-url", database_url, "--workers", str(workers),
                       "--header-timeout-ms", "500", "--body-timeout-ms", "500",
                       "--send-timeout-ms", "500", "--max-connections", "100") as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=60) as sock:
            received = b""
            while chunk := sock.recv(65536):  # until the server closes it
                received += chunk
        assert received.startswith(b"HTTP/1.1 408 "), received
        assert b'"limit":"header_timeout_ms"' in received
    assert served.returncode == 0, served.stderr


def test_the_deployment_to_follow_is_the_upstream_root_url_not_tcgraphs_own() -> None:
    unreachable = "postgresql://nobody@127.0.0.1:1/db"
    # TCGRAPH_ROOT_URL names tcgraph's own public URL: follow does not take it for the upstream.
    result = tcgraph("follow", "--database-url", unreachable, "--pulse-url", "amqp://x",
                     env={"TCGRAPH_ROOT_URL": "https://tc.example.com"})
    assert result.returncode == 2
    assert "--upstream-root-url or TCGRAPH_UPSTREAM_ROOT_URL" in result.stderr
    assert "TCGRAPH_ROOT_URL is set, but it names tcgraph's own public URL" in result.stderr
    # The old flag still works, with a line saying what replaces it; the arguments pass
    # (the database is what stops it here).
    old = tcgraph("backfill", "--database-url", unreachable, "--root-url",
                  "https://tc.example.com", "--task-group", "a")
    assert old.returncode == 1, old.stderr
    first, second = old.stderr.splitlines()
    assert first == ("tcgraph backfill: --root-url is deprecated, use --upstream-root-url "
                     "(TCGRAPH_ROOT_URL names tcgraph's own public URL)")
    assert second.startswith("tcgraph backfill: cannot reach the database")
    new = tcgraph("backfill", "--database-url", unreachable, "--task-group", "a",
                  env={"TCGRAPH_UPSTREAM_ROOT_URL": "https://tc.example.com"})
    assert new.returncode == 1 and "deprecated" not in new.stderr


def test_serve_beside_a_follower_advertises_its_own_urls(database_url: str) -> None:
    # The README's follow example: the upstream in TCGRAPH_UPSTREAM_ROOT_URL, then `serve`.
    env = {**os.environ, "TCGRAPH_UPSTREAM_ROOT_URL": "https://tc.example.com"}
    env.pop("TCGRAPH_ROOT_URL", None)
    with serve_process("--database-url", database_url, env=env) as served:
        manifest = httpx.get(f"{served.url}/references/manifest.json").json()
    assert served.returncode == 0, served.stderr
    urls = manifest["references"]
    assert urls and all(u.startswith(served.url + "/") for u in urls), urls
