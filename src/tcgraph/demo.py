"""A synthetic dataset shaped like Firefox CI, written through the file importer.

`generate` yields what a user would dump from a real deployment: one
`queue.listTaskGroup` page stream per push and `index.listTasks` pages of the
entries the index service would have made. Ten pushes (task groups) run the
same taskgraph, so each label has about ten tasks of history:

- the decision task, whose taskId is the taskGroupId (`Gecko Decision Task`);
- toolchains (`toolchain-linux64-clang`), whose inputs rarely change: they are
  indexed under `gecko.cache.level-3.toolchain.<hash>`, one hash for every
  five pushes, so most pushes find them cached;
- builds (`build-linux64/opt`), which depend on the decision task;
- signing and repackaging (`signing-win64/debug`, `repackage-macosx64/opt`),
  which depend on the build, then on signing;
- tests (`test-linux64/opt-mochitest-browser-chrome-3`), which depend on their build,
  in three chunks of each suite per platform before the next platform.

Every task also depends on the decision task, as in Gecko. Older pushes are
resolved (mostly completed; some failed, some exceptions, some retried); the
newest push is still running. Pushes alternate between the projects
(`projectId`) `autoland` and `mozilla-central`. Completed tasks are indexed, as the index
service does on completion, under `gecko.v2.<project>.revision.<rev>...`,
`gecko.v2.<project>.latest...` (the newest push with a completed task wins by
rank) and `gecko.cache.level-3.<kind>.<hash>` for toolchains and for tests whose
inputs did not change between pushes. `examples()` names ids of the default
dataset that the README uses (`tcgraph demo` prints them).

Everything, timestamps included, depends only on `tasks` and `seed`.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from typing import Any
from collections.abc import Iterator

import asyncpg

from tcgraph.ingest.files import ImportSummary, import_documents
from tcgraph.timefmt import format_naive_utc

# The newest push; older ones go back from here, so the data never depends on
# when it is generated.
BASE_TIME = datetime(2026, 11, 1, tzinfo=UTC)
PUSHES = 10
PUSH_INTERVAL = timedelta(hours=4)
# Index entries outlive the tasks, so that reads (which hide expired entries)
# find them for years.
INDEX_EXPIRES = "2030-11-01T00:00:00.000Z"
DECISION_LABEL = "Gecko Decision Task"
# A task's deadline and expiry, after its creation.
DEADLINE = timedelta(days=1)
EXPIRES = timedelta(days=365)
# Taskcluster's pages hold at most 1000 elements.
PAGE_SIZE = 1000

_SUITES = (
    "mochitest-browser-chrome", "mochitest-plain", "mochitest-devtools-chrome", "xpcshell",
    "reftest", "crashtest", "web-platform-tests", "web-platform-tests-reftest", "jsreftest",
    "marionette", "gtest", "mochitest-a11y",
)
_TOOLCHAINS = ("linux64-clang", "linux64-rust", "linux64-cbindgen", "win64-clang",
               "macosx64-clang")
# Test chunks of each suite, per platform, before the next platform.
_CHUNKS = 3
_BUILD_TYPES = ("opt", "debug")
_OWNERS = tuple(f"developer{n}@example.com" for n in range(1, 13))


@dataclass(frozen=True)
class _Platform:
    build: str  # build-<build>/<type>
    test: str  # test-<test>/<type>-<suite>-<chunk>
    os: str
    build_queue: str
    test_queue: str
    worker_group: str
    signed: bool  # windows and mac builds are signed and repackaged


_PLATFORMS = (
    _Platform("linux64", "linux64", "linux", "gecko-3/b-linux", "gecko-t/t-linux-large",
              "us-east-1", False),
    _Platform("linux64-asan", "linux64-asan", "linux", "gecko-3/b-linux",
              "gecko-t/t-linux-large", "us-east-1", False),
    _Platform("win64", "windows10-64", "windows", "gecko-3/b-win2012", "gecko-t/t-win10-64",
              "us-west-2", True),
    _Platform("win32", "windows10-32", "windows", "gecko-3/b-win2012", "gecko-t/t-win10-64",
              "us-west-2", True),
    _Platform("macosx64", "macosx1015-64", "macosx", "gecko-3/b-osx-cross",
              "releng-hardware/gecko-t-osx-1015", "mdc1", True),
    _Platform("android-arm", "android-em-7.0-x86_64", "android", "gecko-3/b-linux",
              "gecko-t/t-linux-kvm", "us-east-1", False),
)


@dataclass(frozen=True)
class _Label:
    """One task of the taskgraph that every push runs."""

    label: str
    kind: str
    platform: _Platform | None
    build_type: str
    parent: str | None  # the label it depends on, besides the decision task
    suite: str = ""
    chunk: int = 0


def _taskgraph(count: int) -> list[_Label]:
    """The first `count` labels: the decision task, builds, signing, repackaging, then tests.

    Every label comes after the one it depends on, so any prefix is a whole graph.
    """
    graph = [_Label(DECISION_LABEL, "decision-task", None, "", None)]
    graph += [_Label(f"toolchain-{name}", "toolchain", None, "", DECISION_LABEL)
              for name in _TOOLCHAINS]
    configs = [(p, t) for p in _PLATFORMS for t in _BUILD_TYPES]
    for p, t in configs:
        graph.append(_Label(f"build-{p.build}/{t}", "build", p, t, DECISION_LABEL))
    for p, t in configs:
        if p.signed:
            graph.append(_Label(f"signing-{p.build}/{t}", "signing", p, t, f"build-{p.build}/{t}"))
    for p, t in configs:
        if p.signed:
            graph.append(_Label(f"repackage-{p.build}/{t}", "repackage", p, t,
                                f"signing-{p.build}/{t}"))
    first = 1
    while len(graph) < count:
        for p, t in configs:
            for chunk in range(first, first + _CHUNKS):
                for suite in _SUITES:
                    graph.append(_Label(f"test-{p.test}/{t}-{suite}-{chunk}", "test", p, t,
                                        f"build-{p.build}/{t}", suite, chunk))
        first += _CHUNKS
    return graph[:count]


def generate(tasks: int = 2000, seed: int = 1) -> Iterator[object]:
    """Taskcluster-shaped documents for `tasks` tasks: listTaskGroup and index pages.

    The same `tasks` and `seed` always give the same documents.
    """
    rng = random.Random(seed)
    pushes = min(PUSHES, tasks)
    graph = _taskgraph(-(-tasks // pushes) if pushes else 0)
    # Oldest push first, as a dump taken over time would be.
    for age in reversed(range(pushes)):
        size = tasks // pushes + (1 if age < tasks % pushes else 0)
        yield from _push(rng, age, graph[:size])


def project_of(age: int) -> str:
    """The project (`projectId`) of the push `age` pushes before the newest."""
    return "mozilla-central" if age % 3 == 0 else "autoland"


@dataclass(frozen=True)
class _Planned:
    """A task of one push before its documents are built."""

    spec: _Label
    task_id: str
    dependencies: list[str]
    created: datetime
    runs: list[dict[str, Any]]
    retries_left: int
    finished: datetime | None  # when it completed, for its dependents
    routes: list[str]


def _push(rng: random.Random, age: int, graph: list[_Label]) -> Iterator[object]:
    """The pages of one push `age` pushes before the newest."""
    project = project_of(age)
    revision = f"{rng.getrandbits(160):040x}"
    rank = int((BASE_TIME - age * PUSH_INTERVAL).timestamp())
    # Naive datetimes, in UTC, from here on: they format twice as fast.
    pushed = BASE_TIME.replace(tzinfo=None) - age * PUSH_INTERVAL
    owner = rng.choice(_OWNERS)
    group_id = _slugid(rng)
    planned: dict[str, _Planned] = {}
    entries: list[dict[str, Any]] = []
    for position, spec in enumerate(graph):
        task_id = group_id if spec.parent is None else _slugid(rng)
        parent = planned[spec.parent] if spec.parent else None
        # The decision task creates the others a few minutes into its run.
        created = pushed + timedelta(minutes=4, milliseconds=7 * position) if parent else pushed
        ready = pushed if parent is None else parent.finished
        runs, finished = _runs(rng, spec, newest=age == 0, ready=ready,
                               deadline=created + DEADLINE)
        routes = _index_paths(spec, project, revision, age)
        planned[spec.label] = _Planned(
            spec=spec, task_id=task_id,
            dependencies=[] if parent is None else list(dict.fromkeys([group_id, parent.task_id])),
            created=created, runs=runs,
            retries_left=5 - sum(run["reasonCreated"] == "retry" for run in runs),
            finished=finished, routes=routes,
        )
        if runs and runs[-1]["state"] == "completed":
            # The index service indexes a task when it completes.
            entries += [
                {"namespace": path, "taskId": task_id, "rank": rank, "data": {},
                 "expires": INDEX_EXPIRES}
                for path in routes
            ]
    tasks = list(planned.values())
    for start in range(0, len(tasks), PAGE_SIZE):
        page: dict[str, object] = {
            "taskGroupId": group_id,
            "tasks": [_element(p, group_id, project, revision, owner)
                      for p in tasks[start:start + PAGE_SIZE]],
        }
        if start + PAGE_SIZE < len(tasks):
            page["continuationToken"] = _slugid(rng)
        yield page
    for start in range(0, len(entries), PAGE_SIZE):
        yield {"tasks": entries[start:start + PAGE_SIZE]}


# (state, probability) for a task whose dependencies completed. Older pushes
# are resolved; "retried" is an exception run followed by a completed retry.
_RESOLVED_OUTCOMES = {
    "decision-task": (("completed", 1.0),),
    "toolchain": (("completed", 0.96), ("retried", 0.02), ("failed", 0.02)),
    "build": (("completed", 0.93), ("retried", 0.03), ("failed", 0.03), ("exception", 0.01)),
    "signing": (("completed", 0.96), ("retried", 0.02), ("failed", 0.01), ("exception", 0.01)),
    "repackage": (("completed", 0.96), ("retried", 0.02), ("failed", 0.01), ("exception", 0.01)),
    "test": (("completed", 0.85), ("retried", 0.04), ("failed", 0.08), ("exception", 0.03)),
}
_NEWEST_OUTCOMES = {
    "decision-task": (("completed", 1.0),),
    "toolchain": (("completed", 1.0),),
    "build": (("completed", 0.6), ("running", 0.4)),
    "signing": (("completed", 0.4), ("running", 0.3), ("pending", 0.3)),
    "repackage": (("completed", 0.4), ("running", 0.3), ("pending", 0.3)),
    "test": (("completed", 0.35), ("failed", 0.03), ("running", 0.3), ("pending", 0.32)),
}
_MINUTES = {"decision-task": (4, 6), "toolchain": (10, 30), "build": (25, 70),
            "signing": (2, 6), "repackage": (4, 12), "test": (5, 45)}


def _runs(
    rng: random.Random, spec: _Label, newest: bool, ready: datetime | None, deadline: datetime
) -> tuple[list[dict[str, Any]], datetime | None]:
    """A task's runs, and when it completed (None if it did not)."""
    if ready is None:
        if newest:
            return [], None  # waiting for its dependencies
        # A dependency failed: the queue resolves the task at its deadline.
        return [_run(0, "exception", "exception", deadline, None, deadline,
                     "deadline-exceeded")], None
    outcome = _draw(rng, (_NEWEST_OUTCOMES if newest else _RESOLVED_OUTCOMES)[spec.kind])
    low, high = _MINUTES[spec.kind]
    scheduled = ready + timedelta(seconds=rng.randint(1, 90))
    started = scheduled + timedelta(seconds=rng.randint(5, 300))
    resolved = started + timedelta(seconds=rng.randint(low * 60, high * 60))
    worker = (spec.platform.worker_group if spec.platform else "us-east-1", _worker_id(rng, spec))
    if outcome == "pending":
        return [_run(0, "pending", "scheduled", scheduled)], None
    if outcome == "running":
        return [_run(0, "running", "scheduled", scheduled, started, None, None, worker)], None
    if outcome == "retried":
        lost = _run(0, "exception", "scheduled", scheduled, started,
                    started + timedelta(minutes=3), "worker-shutdown", worker)
        later = timedelta(minutes=3, seconds=rng.randint(1, 60))
        retry = _run(1, "completed", "retry", started + later, started + later * 2,
                     resolved + later * 2, "completed", (worker[0], _worker_id(rng, spec)))
        return [lost, retry], resolved + later * 2
    if outcome == "exception":
        return [_run(0, "exception", "scheduled", scheduled, started, resolved, "claim-expired",
                     worker)], None
    run = _run(0, outcome, "scheduled", scheduled, started, resolved, outcome, worker)
    return [run], resolved if outcome == "completed" else None


def _draw(rng: random.Random, outcomes: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for outcome, chance in outcomes:
        roll -= chance
        if roll < 0:
            return outcome
    return outcomes[0][0]


def _run(
    run_id: int, state: str, reason_created: str, scheduled: datetime,
    started: datetime | None = None, resolved: datetime | None = None,
    reason_resolved: str | None = None, worker: tuple[str, str] | None = None,
) -> dict[str, Any]:
    run: dict[str, object] = {"runId": run_id, "state": state, "reasonCreated": reason_created}
    if reason_resolved:
        run["reasonResolved"] = reason_resolved
    if worker and started:
        run["workerGroup"], run["workerId"] = worker
        run["takenUntil"] = format_naive_utc(started + timedelta(minutes=20))
    run["scheduled"] = format_naive_utc(scheduled)
    if started:
        run["started"] = format_naive_utc(started)
    if resolved:
        run["resolved"] = format_naive_utc(resolved)
    return run


def _worker_id(rng: random.Random, spec: _Label) -> str:
    if spec.platform and spec.platform.os == "macosx" and spec.kind == "test":
        return f"macmini-r8-{rng.randint(1, 400)}"
    return f"i-0{rng.getrandbits(64):016x}"


def _index_paths(spec: _Label, project: str, revision: str, age: int) -> list[str]:
    """The index paths a task's routes ask for (indexed only once it completes)."""
    v2 = f"gecko.v2.{project}"
    if spec.kind == "decision-task":
        return [f"{v2}.revision.{revision}.taskgraph.decision", f"{v2}.latest.taskgraph.decision"]
    if spec.kind == "toolchain":
        # Toolchain inputs change every fifth push.
        digest = hashlib.sha256(f"{spec.label}:{age // 5}".encode()).hexdigest()
        return [f"gecko.cache.level-3.toolchain.{digest}"]
    assert spec.platform is not None
    if spec.kind == "test":
        # Inputs change every other push: the two pushes share a cache entry,
        # which the newer one (by rank) holds.
        digest = hashlib.sha256(f"{spec.label}:{age // 2}".encode()).hexdigest()
        return [f"gecko.cache.level-3.{spec.kind}.{digest}"]
    suffix = "" if spec.kind == "build" else f"-{spec.kind}"
    name = f"{spec.platform.build}-{spec.build_type}{suffix}"
    return [f"{v2}.revision.{revision}.firefox.{name}", f"{v2}.latest.firefox.{name}"]


def _element(p: _Planned, group_id: str, project: str, revision: str, owner: str) -> dict[str, Any]:
    """A listTaskGroup element: the definition as queue.task gives it, and its status."""
    spec = p.spec
    if spec.platform is None:
        queue = "gecko-3/decision" if spec.kind == "decision-task" else "gecko-3/b-linux"
    else:
        queue = spec.platform.test_queue if spec.kind == "test" else spec.platform.build_queue
    provisioner, worker_type = queue.split("/")
    deadline, expires = p.created + DEADLINE, p.created + EXPIRES
    repository = "mozilla-central" if project == "mozilla-central" else "integration/autoland"
    tags = {"kind": spec.kind, "createdForUser": owner, "worker-implementation":
            "generic-worker" if spec.platform and spec.platform.os in ("windows", "macosx")
            else "docker-worker"}
    if spec.kind != "decision-task":
        # Decision tasks carry no label tag: their label is their metadata.name.
        tags["label"] = spec.label
    if spec.platform is not None:
        tags["os"] = spec.platform.os
    symbols = {"decision-task": "D", "toolchain": "TL", "build": "B", "signing": "Bs",
               "repackage": "Rpk"}
    symbol = symbols.get(spec.kind, f"{spec.suite[:2]}{spec.chunk}")
    # What the definition and the status both carry, in Taskcluster's key order.
    placement = {
        "provisionerId": provisioner,
        "workerType": worker_type,
        "taskQueueId": queue,
        "schedulerId": "gecko-level-3",
        "projectId": project,
        "taskGroupId": group_id,
    }
    definition = {
        **placement,
        "dependencies": p.dependencies,
        "requires": "all-completed",
        "routes": [f"index.{path}" for path in p.routes]
                  + [f"tc-treeherder.v2.{project}.{revision}"],
        "priority": {"decision-task": "very-high", "test": "very-low"}.get(spec.kind, "low"),
        "retries": 5,
        "created": format_naive_utc(p.created),
        "deadline": format_naive_utc(deadline),
        "expires": format_naive_utc(expires),
        "scopes": [f"assume:repo:hg.mozilla.org/{repository}:branch:default"],
        "payload": {
            "image": f"{spec.platform.os if spec.platform else 'decision'}-{spec.kind}:v3",
            "command": ["./mach", spec.kind, spec.suite or spec.label],
            "env": {"MOZ_SCM_LEVEL": "3", "MOZ_AUTOMATION": "1"},
            "maxRunTime": 7200 if spec.kind == "build" else 3600,
            "artifacts": {"public/logs": {"type": "directory", "path": "/builds/worker/logs"}},
        },
        "metadata": {
            "name": spec.label,
            "description": f"{spec.kind} on {project}",
            "owner": owner,
            "source": f"https://hg.mozilla.org/{repository}/rev/{revision[:12]}",
        },
        "tags": tags,
        "extra": {
            "parent": group_id,
            "treeherder": {"symbol": symbol, "collection": {spec.build_type or "opt": True}},
        },
    }
    runs = p.runs
    status = {
        "taskId": p.task_id,
        **placement,
        "deadline": definition["deadline"],
        "expires": definition["expires"],
        "retriesLeft": p.retries_left,
        "state": runs[-1]["state"] if runs else "unscheduled",
        "runs": runs,
    }
    return {"status": status, "task": definition}


def _slugid(rng: random.Random) -> str:
    """A v4 "nice" slugid, as Taskcluster makes taskIds, from the seeded generator."""
    raw = bytearray(rng.getrandbits(128).to_bytes(16, "big"))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    raw[0] &= 0x7F  # "nice": never starts with "-"
    return base64.urlsafe_b64encode(bytes(raw))[:22].decode()


@dataclass(frozen=True)
class Examples:
    """Keys of a generated dataset that answer with data (the README's examples use them)."""

    task_id: str  # the newest completed build-linux64/opt
    task_group_id: str  # the newest task group with failed tasks
    label: str  # a test label with both a latest success and a latest failure
    cached_path: str  # a toolchain's gecko.cache.level-3.toolchain.<hash> entry


def examples(tasks: int = 2000, seed: int = 1) -> Examples:
    """The example keys of `generate(tasks, seed)`; the same arguments give the same keys."""
    task_id = group_id = cached = ""
    states: dict[str, set[str]] = {}
    for document in generate(tasks, seed):  # oldest push first: later ones overwrite
        if not isinstance(document, dict):
            continue
        if "taskGroupId" in document:
            for element in document["tasks"]:
                label, state = element["task"]["metadata"]["name"], element["status"]["state"]
                if label == "build-linux64/opt" and state == "completed":
                    task_id = element["status"]["taskId"]
                if state == "failed":
                    group_id = document["taskGroupId"]
                if label.startswith("test-"):
                    states.setdefault(label, set()).add(state)
        else:
            cached = next((e["namespace"] for e in document["tasks"]
                           if ".toolchain." in e["namespace"]), cached)
    label = next((name for name, seen in states.items() if {"completed", "failed"} <= seen), "")
    return Examples(task_id=task_id, task_group_id=group_id, label=label, cached_path=cached)


async def write_demo(pool: asyncpg.Pool, tasks: int = 2000, seed: int = 1) -> ImportSummary:
    """Write `generate(tasks, seed)` through the importer, in one transaction."""
    documents = ((f"document {i}", document) for i, document in enumerate(generate(tasks, seed)))
    async with pool.acquire() as conn, conn.transaction():
        return await import_documents(conn, documents, "demo")
