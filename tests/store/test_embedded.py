"""The embedded cluster stops with its last living user, even after a `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


from services.postgres import postmaster
from tcgraph.store.embedded import EmbeddedPostgres

# A tcgraph process using the cluster: it starts it, says so, and waits for stdin to close.
USER = """
import sys
from tcgraph.store.embedded import EmbeddedPostgres
pg = EmbeddedPostgres(sys.argv[1])
print(pg.start(), flush=True)
sys.stdin.read()
pg.stop()
"""


def start_user(data_dir: Path) -> subprocess.Popen[str]:
    user = subprocess.Popen([sys.executable, "-c", USER, str(data_dir)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert user.stdout is not None
    assert user.stdout.readline().startswith("postgresql://")  # it has started the cluster
    return user


def test_a_killed_user_does_not_keep_the_cluster_running(data_dir: Path) -> None:
    killed = start_user(data_dir)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    server = postmaster(data_dir)
    assert server is not None  # PostgreSQL outlives a killed process

    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    # The dead process does not count: the last living user stopped the cluster.
    server.wait(30)
    assert postmaster(data_dir) is None


def test_the_cluster_runs_while_a_living_user_remains(data_dir: Path) -> None:
    other = start_user(data_dir)
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    server = postmaster(data_dir)
    assert server is not None and server.is_running()

    other.communicate("")  # the other user exits normally: it was the last one
    assert other.returncode == 0
    server.wait(30)
    assert postmaster(data_dir) is None


def test_a_stopped_cluster_starts_again_in_the_same_process(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    pg.stop()
    assert postmaster(data_dir) is None
    url = pg.start()
    try:
        assert postmaster(data_dir) is not None and url.startswith("postgresql://")
    finally:
        pg.stop()
    assert postmaster(data_dir) is None
