"""Named points in the write path where a test can freeze the process.

A test that must kill a writer at an exact moment (a batch written but not
committed, say) sets `TCGRAPH_TEST_STOP_AT` to a comma-separated list of
points, each `name` (every time it is reached) or `name#n` (the n-th time).
The process stops itself there with SIGSTOP; the test sees it stopped
(`os.waitid(..., WSTOPPED)`), looks at the database, then kills it or lets it
go on with SIGCONT. Unset, which it always is outside tests, `reached` does
nothing.

Points: `database-ready` (a verb's database is up, the embedded one started,
before the verb's work), `transaction-open` (a write transaction began, nothing written),
`batch-written` (a batch's statements finished, uncommitted), `before-commit`
(everything written, not committed), `committed`.
"""

from __future__ import annotations

import os
import signal

_ENV = "TCGRAPH_TEST_STOP_AT"


def _parse(value: str) -> dict[str, int | None]:
    stops: dict[str, int | None] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        name, _, nth = part.partition("#")
        stops[name] = int(nth) if nth else None
    return stops


_STOPS = _parse(os.environ.get(_ENV, ""))
_seen: dict[str, int] = {}


def reached(point: str) -> None:
    """Stop the process here if a test asked for `point` (see the module's docstring)."""
    if not _STOPS or point not in _STOPS:
        return
    _seen[point] = _seen.get(point, 0) + 1
    nth = _STOPS[point]
    if nth is None or nth == _seen[point]:
        os.kill(os.getpid(), signal.SIGSTOP)
