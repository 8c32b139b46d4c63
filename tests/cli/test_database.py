"""SIGTERM (or SIGINT) to any verb on the embedded PostgreSQL: the verb ends, and the
cluster it started is stopped, not left running.

Each verb runs as a real subprocess on its own data directory and freezes itself
at a known point (ingest/checkpoints.py): its database up, or in the middle of its
first write. The test reads the postmaster's pid, sends the signal, lets the verb
go on, and checks that the verb exited as a signal ends it and that the postmaster
is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from ingest.dumps import definition, run, status, tid
from servers import serving
from services.postgres import postmaster
from services.replay import Recording, upstream_app

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def recording() -> Recording:
    return Recording.load()


def frozen_at(point: str, data_dir: Path, *args: str) -> subprocess.Popen[str]:
    """`tcgraph ARGS --data-dir DIR`, stopped by itself at checkpoint `point`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TCGRAPH_DATABASE_URL", "XDG_RUNTIME_DIR")}
    env["TCGRAPH_TEST_STOP_AT"] = point
    process = subprocess.Popen([sys.executable, "-m", "tcgraph", *args, "--data-dir",
                                str(data_dir)], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = ThreadPoolExecutor(1)
    try:
        stopped = waiting.submit(os.waitid, os.P_PID, process.pid,
                                 os.WSTOPPED | os.WEXITED | os.WNOWAIT).result(TIMEOUT_S)
    except TimeoutError:
        process.kill()  # it never reached the point: end the wait, and the test
        raise
    finally:
        waiting.shutdown()
    assert stopped is not None and stopped.si_code == os.CLD_STOPPED, \
        process.communicate(timeout=TIMEOUT_S)
    return process


def signalled(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    process.send_signal(signal.SIGCONT)
    _, stderr = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, stderr


def import_file(tmp_path: Path) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"".join(
        orjson.dumps({"taskId": tid(n), "task": definition(), "status": status(tid(n), [run(0)])})
        + b"\n" for n in range(3000)))
    return str(path)


VERBS = {
    # verb -> (its arguments, the point it is stopped at)
    "migrate": ((), "database-ready"),
    "expire": ((), "database-ready"),
    "import": (("IMPORT_FILE",), "batch-written#1"),
    "demo": (("--tasks", "3000"), "batch-written#1"),
    "backfill": (("--root-url", "UPSTREAM", "--task-group", "GROUP"), "batch-written#1"),
}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("verb", list(VERBS))
def test_a_signal_ends_the_verb_and_stops_the_embedded_cluster(
        verb: str, signum: int, data_dir: Path, tmp_path: Path, recording: Recording) -> None:
    args, point = VERBS[verb]
    group = max(recording.groups, key=lambda g: len(recording.groups[g]))
    with serving(upstream_app(recording)) as upstream:
        given = {"IMPORT_FILE": import_file(tmp_path) if verb == "import" else "",
                 "UPSTREAM": upstream, "GROUP": group}
        process = frozen_at(point, data_dir, verb, *[given.get(a, a) for a in args])
        server = postmaster(data_dir)
        assert server is not None and server.is_running()
        code, stderr = signalled(process, signum)
    assert code == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    server.wait(TIMEOUT_S)
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
