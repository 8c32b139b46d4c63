"""The index service's rules, checked against what the real index service answered.

The recording's queue.task and queue.status answers are the input; its
index.findTask and listNamespaces answers are what the rules must give.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tcgraph.ingest import index_rules, shapes
from tcgraph.model import IndexEntryRow
from tcgraph.precedence import entry_replaces

# Before every recorded expiry: no entry counts as expired.
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/taskcluster-106/rest.jsonl"


def _answers() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines()]


def _stamp(text: str) -> datetime:
    return shapes.time({"t": text}, "t")[0]  # type: ignore[index]


def _completions(answers: list[dict[str, Any]]) -> list[index_rules.Indexing]:
    """What indexing gives for every completed task of the recording."""
    tasks = {a["args"][0]: a["response"] for a in answers
             if a["method"] == "task" and a["status"] == 200}
    statuses = {a["args"][0]: a["response"]["status"] for a in answers
                if a["method"] == "status" and a["status"] == 200}
    found = []
    for task_id, definition in tasks.items():
        completed = [r for r in statuses[task_id]["runs"] if r["state"] == "completed"]
        if completed:
            found.append(index_rules.task_entries(task_id, definition,
                                                  _stamp(completed[-1]["resolved"])))
    return found


def _index(completions: list[index_rules.Indexing]) -> dict[str, IndexEntryRow]:
    held: dict[str, IndexEntryRow] = {}
    for indexing in completions:
        for entry in indexing.entries:
            path = f"{entry.namespace}.{entry.name}"
            if path not in held or entry_replaces(entry, held[path], LONG_AGO):
                held[path] = entry
    return held


def test_entries_match_find_task_in_any_order_of_completion() -> None:
    answers = _answers()
    completions = _completions(answers)
    recorded = {a["args"][0]: a["response"] for a in answers
                if a["method"] == "findTask" and a["status"] == 200}
    assert len(recorded) > 100
    for seed in range(3):  # redelivered and reordered completions give the same index
        shuffled = completions * 2
        random.Random(seed).shuffle(shuffled)
        held = _index(shuffled)
        assert set(held) == set(recorded)
        for path, answer in recorded.items():
            entry = held[path]
            assert (entry.task_id, entry.rank, orjson.loads(entry.data), entry.expires) == (
                answer["taskId"], answer["rank"], answer["data"], _stamp(answer["expires"])), path


def test_absent_paths_are_not_indexed() -> None:
    answers = _answers()
    held = _index(_completions(answers))
    absent = [a["args"][0] for a in answers if a["method"] == "findTask" and a["status"] == 404]
    assert absent and not set(absent) & set(held)


def test_namespaces_match_list_namespaces() -> None:
    answers = _answers()
    recorded = {n["namespace"]: _stamp(n["expires"]) for a in answers
                if a["method"] == "listNamespaces" and a["status"] == 200
                for n in a["response"]["namespaces"]}
    rows = index_rules.namespaces(_index(_completions(answers)).values())
    computed = {f"{r.parent}.{r.name}" if r.parent else r.name: r.expires for r in rows}
    # listNamespaces was asked about the tree below `gecko`, not `gecko` itself.
    assert set(computed) - {"gecko"} == set(recorded)
    # The index service handles a task's routes concurrently, so a parent's
    # expiry can be left at the value of the route that wrote last: never later
    # than the rule's, and only for a few namespaces.
    differ = [path for path, expires in recorded.items() if computed[path] != expires]
    assert all(recorded[path] < computed[path] for path in differ)
    assert len(differ) <= len(recorded) // 20


def test_extra_index_defaults_and_skips() -> None:
    resolved = datetime(2026, 12, 1, 8, tzinfo=UTC)
    definition = {"routes": ["index.a.b.c", "tc-treeherder.x", "index.a.b.c", "index.bad..path"],
                  "expires": "2027-12-01T07:00:00.000Z"}
    indexing = index_rules.task_entries("T" * 22, definition, resolved)
    assert [(e.namespace, e.name, e.rank, e.data, e.resolved) for e in indexing.entries] == [
        ("a.b", "c", 0.0, "{}", resolved)]
    assert indexing.entries[0].expires == _stamp("2027-12-01T07:00:00.000Z")
    assert [s.route for s in indexing.skipped] == ["index.bad..path"]
    for extra, reason in (({"rank": "7"}, "rank"), ({"data": [1]}, "data")):
        skipped = index_rules.task_entries("T" * 22, {**definition, "extra": {"index": extra}},
                                           resolved)
        assert not skipped.entries and reason in skipped.skipped[0].reason


def test_namespace_expiry_rounds_up_to_midnight_a_day_per_level() -> None:
    entry = IndexEntryRow(namespace="a.b", name="c", task_id="T" * 22, rank=0, data="{}",
                          expires=_stamp("2027-01-01T00:00:00.000Z"))
    rows = {(r.parent, r.name): r.expires for r in index_rules.namespaces([entry])}
    assert rows == {("a", "b"): _stamp("2027-01-02T00:00:00.000Z"),
                    ("", "a"): _stamp("2027-01-03T00:00:00.000Z")}
