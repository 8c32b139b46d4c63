"""PostGraphile v4, the peer: installed with npm into `bench/.peer/`, run with `npx postgraphile`.

It serves schema `bench_peer` (`bench.dataset.PEER_SQL`: STABLE SQL functions
that take the key arrays, one index probe per key) of the same database, over
127.0.0.1, with `--dynamic-json`, a body limit above the 100 kB default (a
10,000-key document is ~400 kB), simple collections (plain lists, no Relay
cursors to compute), no default mutations, GraphiQL and query log off, and
NODE_ENV=production.

`bench/.peer/` holds node_modules and is not to be committed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from bench.dataset import PEER_SCHEMA

PEER_DIR = Path(__file__).resolve().parent / ".peer"
POSTGRAPHILE_VERSION = "4.14.1"
PACKAGE_JSON = {
    "name": "tcgraph-bench-peer",
    "version": "0.0.0",
    "private": True,
    "description": "PostGraphile v4 for python -m bench "
                   "(installed by bench/peer.py; not committed)",
    "license": "MPL-2.0",
    "dependencies": {"postgraphile": POSTGRAPHILE_VERSION},
}


def unavailable() -> str | None:
    """Why the peer cannot run here, or None."""
    for tool in ("node", "npm", "npx"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def install(log) -> str:
    """`npm install` PostGraphile into bench/.peer unless it is there; its version."""
    PEER_DIR.mkdir(exist_ok=True)
    manifest = PEER_DIR / "package.json"
    wanted = json.dumps(PACKAGE_JSON, indent=2) + "\n"
    installed = PEER_DIR / "node_modules" / "postgraphile" / "package.json"
    if not manifest.exists() or manifest.read_text() != wanted or not installed.exists():
        manifest.write_text(wanted)
        log(f"peer: npm install postgraphile@{POSTGRAPHILE_VERSION} into {PEER_DIR}")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=PEER_DIR, check=True, stdout=subprocess.DEVNULL)
    return json.loads(installed.read_text())["version"]


class PostGraphile:
    def __init__(self, database_url: str, port: int) -> None:
        self.database_url = database_url
        self.port = port
        self.process: subprocess.Popen | None = None
        self.log_path = PEER_DIR / "postgraphile.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        command = [
            "npx", "--no-install", "postgraphile",
            "--connection", self.database_url,
            "--schema", PEER_SCHEMA,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--body-size-limit", "20MB",
            "--dynamic-json",
            "--no-setof-functions-contain-nulls",
            "--simple-collections", "only",
            "--disable-default-mutations",
            "--disable-graphiql",
            "--disable-query-log",
        ]
        env = {**os.environ, "NODE_ENV": "production"}
        log = self.log_path.open("w")
        self.process = subprocess.Popen(command, cwd=PEER_DIR, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgraphile exited: {self.log_path.read_text()[-2000:]}")
            try:
                r = httpx.post(f"{self.base}/graphql", json={"query": "{__typename}"},
                               timeout=2, trust_env=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgraphile did not answer within {timeout:.0f} s: "
                                   f"{self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def server_pid(self) -> int | None:
        """The node process that serves (npx runs it as a descendant)."""
        if self.process is None:
            return None
        try:
            family = [psutil.Process(self.process.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        nodes = [p for p in family if p.name() == "node"
                 and any("postgraphile" in part for part in p.cmdline())]
        if not nodes:
            return None
        return max(nodes, key=lambda p: p.memory_info().rss).pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # Its own session: the group is npx and the node process it started.
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None
