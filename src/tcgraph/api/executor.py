"""A compiled fast path for queries, falling back to Strawberry's executor.

graphql-core resolves one field of one object at a time (about 7.5 µs each),
and a DataLoader adds a future per key; a document over 10,000 labels spends
far more time there than in PostgreSQL. This module runs the same documents
differently:

* Parsing and validation are cached per document text (bounded LRU); the
  validation rules (the depth limit included) still run once per document.
* An operation is compiled once (per value of the variables its `@skip` /
  `@include` directives read) into a plan: for each selection set, the merged
  fields in response order (graphql-core's own CollectFields), each one a leaf
  read straight from a `tcgraph.model` row, an object built from the same row,
  or a relation loaded through the request's loaders. Each selection set gets
  a generated function that builds all of its result dicts in one list
  comprehension.
* Execution is breadth-first: every relation of one level is gathered from all
  the objects of that level and loaded with one `Loaders.load_all` call per
  loader, so statement counts are at most those of the standard executor.
* While it runs, the cyclic garbage collector is paused (see `_gc_paused`),
  and once the result is built the loaders' cached rows are released: at
  10,000 keys CPython's collector otherwise costs as much as the rest.

The result is the standard executor's, key order included. Whatever the plan
does not cover (introspection other than `__typename`, mutations, unknown
fields), any argument that the resolvers would refuse (limits, cursors,
filters: all checked before any SQL runs) and any error at run time make the
request fall back to the standard executor, which then reports exactly what it
always did. `FastPath.taken` and `FastPath.fallbacks` count the two outcomes.

The fast path hooks into Strawberry's own pipeline (see `FastPathExtension`),
so the other extensions (the depth limit, `extensions.sql`) run as before.

Mirror of `tcgraph.api.types`: every field below must answer what its resolver
there answers; tests/api/test_executor.py compares the two paths on a corpus of
documents and checks that every field of the schema is covered here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import gc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Sequence

import orjson
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    parse,
)
from graphql.execution import ExecutionResult as GraphQLExecutionResult
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_values,
)
from graphql.language import DirectiveNode, Node, VariableNode
from graphql.utilities import type_from_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.arguments import convert_arguments

from tcgraph import model, pagination
from tcgraph.api.types import TaskState, task_filter
from tcgraph.config import Settings
from tcgraph.errors import LimitExceeded
from tcgraph.model import split_index_path
from tcgraph.timefmt import format_time

log = logging.getLogger(__name__)

DOCUMENT_CACHE_SIZE = 256  # distinct document texts whose parse and plans are kept
CACHED_DOCUMENT_SIZE = 64_000  # longer texts (keys written inline) are parsed per request
PLANS_PER_OPERATION = 16  # distinct @skip/@include variable values per operation


class Fallback(Exception):
    """The fast path cannot answer this request; the standard executor will."""


# --- leaf values, serialised as the schema's scalars and enums would -------------

_UTC = timezone.utc
_STATE = {state: TaskState(state.value).name for state in model.State}


def _fmt(value: Any) -> str:
    """`timefmt.format_time`, faster for the aware datetimes asyncpg returns (same text)."""
    if type(value) is datetime and value.tzinfo is not None:
        if value.tzinfo is not _UTC:
            value = value.astimezone(_UTC)
        if value.year >= 1000:  # strftime's %Y does not pad smaller years
            return value.isoformat(timespec="milliseconds")[:-6] + "Z"
    return format_time(value)


def _ofmt(value: Any) -> str | None:
    return None if value is None else _fmt(value)


def _serialize(scalar: Any, value: Any) -> Any:
    # A non-null field that is null, or a value the scalar refuses, is an error
    # in the standard executor: let it report it.
    if value is None:
        raise Fallback("null in a non-null field")
    return scalar.serialize(value)


def _str(value: Any) -> str:
    return value if type(value) is str else _serialize(GraphQLString, value)


def _ostr(value: Any) -> str | None:
    return value if value is None or type(value) is str else _serialize(GraphQLString, value)


def _int(value: Any) -> int:
    if type(value) is int and -2147483648 <= value <= 2147483647:
        return value
    return _serialize(GraphQLInt, value)


def _float(value: Any) -> float:
    if type(value) is float and value - value == 0.0:  # finite
        return value
    return _serialize(GraphQLFloat, value)


def _id(value: Any) -> str:
    return value if type(value) is str else _serialize(GraphQLID, value)


def _json(value: Any) -> Any:
    if value is None:
        raise Fallback("null in a non-null field")
    return value


def _raw_json(text: str) -> orjson.Fragment:
    # Stored JSON text, passed through to orjson untouched (HTTP only).
    if text == "null":
        raise Fallback("null in a non-null field")
    return orjson.Fragment(text)


def _routes(definition: dict) -> list[str]:
    routes = list(definition.get("routes") or [])
    return routes if all(type(r) is str for r in routes) else [_str(r) for r in routes]


HELPERS: dict[str, Any] = {
    "FMT": _fmt, "OFMT": _ofmt, "STR": _str, "OSTR": _ostr, "INT": _int, "FLOAT": _float,
    "ID": _id, "JSON": _json, "RAW": _raw_json, "ROUTES": _routes, "STATE": _STATE,
    "LOADS": orjson.loads,
}


# --- what each field of the schema is --------------------------------------------
#
# Sources: Query -> None; Task, TaskStatus -> model.Task; TaskRun -> model.Run;
# TaskMetadata -> (name, description, owner, source); IndexedTask -> (entry, path);
# LabelHistory -> (label, model.TaskFilter), which is also the key of the
# latest/last_* loaders; TaskGroup -> its id; Namespace -> model.Namespace;
# connections and PageInfo -> _Connection; edges -> (cursor, node source).
# `d` is the parsed task definition, for the fields that look inside it.

@dataclass(frozen=True)
class Leaf:
    expr: str  # a Python expression over `s` (the source) and `d` (parsed definition)
    raw: str | None = None  # the expression when stored JSON may pass through as text

    def expression(self, raw: bool) -> str:
        return self.raw if raw and self.raw is not None else self.expr


@dataclass(frozen=True)
class Embed:
    """An object (or list of objects) computed from its parent, without loading."""

    children: Callable[[list, list | None, Any], list]  # (sources, definitions, bound) -> one each
    many: bool = False  # each child is a list of sources
    uses_definition: bool = False
    bind: Callable[[dict, Settings], Any] | None = None


@dataclass(frozen=True)
class Relation:
    """An object (or list, or page) loaded through one of the request's loaders.

    shape: "one" (one key per source; None -> null), "list" (a root list of
    nullable objects), "many" (several keys per source; missing ones are left
    out) or "page" (one Page per source, shown as a connection).
    """

    loader: str
    shape: str
    keys: Callable[[list, list | None, Any], list]  # "many": a list of keys per source
    wrap: Callable[..., Any] | None = None  # loaded value -> child source (None: null)
    uses_definition: bool = False
    bind: Callable[[dict, Settings], Any] | None = None


class _Connection:
    """A page as the Connection, Edge and PageInfo types show it."""

    __slots__ = ("rows", "nodes", "has_next", "after", "cursor_of", "_cursors")

    def __init__(self, page: model.Page, nodes: list, cursor_of: Callable[[Any], str],
                 after: str | None) -> None:
        self.rows = page.rows
        self.nodes = nodes
        self.has_next = page.has_next
        self.after = after
        self.cursor_of = cursor_of
        self._cursors: list[str] | None = None

    def cursors(self) -> list[str]:
        if self._cursors is None:
            self._cursors = [self.cursor_of(row) for row in self.rows]
        return self._cursors

    def edges(self) -> list[tuple[str, Any]]:
        return list(zip(self.cursors(), self.nodes))

    def start_cursor(self) -> str | None:
        cursors = self.cursors()
        return cursors[0] if cursors else None

    def end_cursor(self) -> str | None:
        cursors = self.cursors()
        return cursors[-1] if cursors else None


def _keys(settings: Settings, argument: str, values: list) -> list:
    # As schema._keys: a list argument over `max_keys` is refused.
    if len(values) > settings.max_keys:
        raise LimitExceeded("max_keys", len(values), settings.max_keys,
                            f"`{argument}` has too many keys")
    return values


@dataclass(frozen=True)
class _Page:
    """The bound arguments of a connection field."""

    after: str | None  # the cursor as given
    key: Any  # the decoded cursor
    limit: int
    state: model.State | None = None


def _page(kind: str, decode: Callable[[str, str | None], Any]) -> Callable[[dict, Settings], _Page]:
    def bind(kwargs: dict, settings: Settings) -> _Page:
        limit = pagination.page_size(kwargs.get("first"), settings)
        after = kwargs.get("after")
        state = kwargs.get("state")
        return _Page(after, decode(kind, after), limit,
                     model.State(state.value) if state is not None else None)

    return bind


def _connection(cursor_of: Callable[[Any], str], node: Callable[[Any], Any] | None = None):
    def wrap(page: model.Page, source: Any, bound: _Page) -> _Connection:
        nodes = list(page.rows) if node is None else [node(row) for row in page.rows]
        return _Connection(page, nodes, cursor_of, bound.after)

    return wrap


def _metadata(sources: list, definitions: list, bound: Any) -> list:
    metas = [d.get("metadata") or {} for d in definitions]
    return [(m.get("name", ""), m.get("description", ""), m.get("owner", ""), m.get("source", ""))
            for m in metas]


def _same(sources: list, definitions: Any, bound: Any) -> list:
    return sources


def _dependencies(sources: list, definitions: list, bound: Any) -> list:
    return [d.get("dependencies") or [] for d in definitions]


_TASK_ROOT = dict(loader="task", keys=lambda s, d, b: [str(b)], shape="one",
                  bind=lambda kw, st: kw["task_id"])
_TASKS_ROOT = dict(loader="task", keys=lambda s, d, b: b, shape="list",
                   bind=lambda kw, st: _keys(st, "taskIds", kw["task_ids"]))

_TASK_FIELDS: dict[str, Any] = {
    "taskId": Leaf("s.task_id"),
    "taskGroupId": Leaf("s.task_group_id"),
    "label": Leaf("s.label"),
    "schedulerId": Leaf("s.scheduler_id"),
    "taskQueueId": Leaf("s.task_queue_id"),
    "provisionerId": Leaf("s.provisioner_id"),
    "workerType": Leaf("s.worker_type"),
    "projectId": Leaf("s.project_id"),
    "priority": Leaf("s.priority"),
    "retries": Leaf("s.retries"),
    "created": Leaf("FMT(s.created)"),
    "deadline": Leaf("FMT(s.deadline)"),
    "expires": Leaf("FMT(s.expires)"),
    "metadata": Embed(_metadata, uses_definition=True),
    "tags": Leaf("(d.get('tags') or {})"),
    "routes": Leaf("ROUTES(d)"),
    "definition": Leaf("JSON(d)", raw="RAW(s.definition)"),
    "dependencies": Relation("task", "many", _dependencies, uses_definition=True),
    "dependents": Relation(
        "dependents_page", "page",
        lambda s, d, b: [(t.task_id, b.key, b.limit) for t in s],
        wrap=_connection(lambda t: pagination.encode(pagination.DEPENDENTS, t.task_id)),
        bind=_page(pagination.DEPENDENTS, pagination.decode_key)),
    "status": Embed(_same),
}

_STATUS_FIELDS: dict[str, Any] = {
    "taskId": Leaf("s.task_id"),
    "provisionerId": Leaf("s.provisioner_id"),
    "workerType": Leaf("s.worker_type"),
    "taskQueueId": Leaf("s.task_queue_id"),
    "schedulerId": Leaf("s.scheduler_id"),
    "projectId": Leaf("s.project_id"),
    "taskGroupId": Leaf("s.task_group_id"),
    "priority": Leaf("s.priority"),
    "deadline": Leaf("FMT(s.deadline)"),
    "expires": Leaf("FMT(s.expires)"),
    "retriesLeft": Leaf("s.retries_left"),
    "state": Leaf("STATE[s.state]"),
    "runs": Embed(lambda s, d, b: [t.runs for t in s], many=True),
    "task": Embed(_same),
}

_CONNECTION_FIELDS: dict[str, Any] = {
    "edges": Embed(lambda s, d, b: [c.edges() for c in s], many=True),
    "pageInfo": Embed(_same),
    "nodes": Embed(lambda s, d, b: [c.nodes for c in s], many=True),
}

_EDGE_FIELDS: dict[str, Any] = {
    "cursor": Leaf("s[0]"),
    "node": Embed(lambda s, d, b: [e[1] for e in s]),
}

SPECS: dict[str, dict[str, Any]] = {
    "Query": {
        "task": Relation(**_TASK_ROOT),
        "tasks": Relation(**_TASKS_ROOT),
        "status": Relation(**_TASK_ROOT),
        "statuses": Relation(**_TASKS_ROOT),
        "indexedTask": Relation(
            "index_entry", "one", lambda s, d, b: [split_index_path(b)],
            wrap=lambda entry, source, path: (entry, path), bind=lambda kw, st: kw["index_path"]),
        "indexedTasks": Relation(
            "index_entry", "list", lambda s, d, b: [split_index_path(p) for p in b],
            wrap=lambda entry, i, paths: (entry, paths[i]),
            bind=lambda kw, st: _keys(st, "indexPaths", kw["index_paths"])),
        "label": Embed(lambda s, d, b: [b],
                       bind=lambda kw, st: (kw["label"], task_filter(kw.get("filter")))),
        "labels": Embed(lambda s, d, b: [b], many=True, bind=lambda kw, st: [
            (label, chosen) for chosen in (task_filter(kw.get("filter")),)
            for label in _keys(st, "labels", kw["labels"])]),
        "taskGroup": Relation(
            "task_group_exists", "one", lambda s, d, b: [str(b)],
            wrap=lambda exists, source, group_id: group_id if exists else None,
            bind=lambda kw, st: kw["task_group_id"]),
        "namespace": Relation("namespace", "one", lambda s, d, b: [b],
                              bind=lambda kw, st: kw["path"]),
    },
    "Task": _TASK_FIELDS,
    "TaskStatus": _STATUS_FIELDS,
    "TaskRun": {
        "runId": Leaf("INT(s.run_id)"),
        "state": Leaf("STATE[s.state]"),
        "reasonCreated": Leaf("STR(s.reason_created)"),
        "reasonResolved": Leaf("OSTR(s.reason_resolved)"),
        "workerGroup": Leaf("OSTR(s.worker_group)"),
        "workerId": Leaf("OSTR(s.worker_id)"),
        "takenUntil": Leaf("OFMT(s.taken_until)"),
        "scheduled": Leaf("FMT(s.scheduled)"),
        "started": Leaf("OFMT(s.started)"),
        "resolved": Leaf("OFMT(s.resolved)"),
    },
    "TaskMetadata": {
        "name": Leaf("STR(s[0])"),
        "description": Leaf("STR(s[1])"),
        "owner": Leaf("STR(s[2])"),
        "source": Leaf("STR(s[3])"),
    },
    "IndexedTask": {
        "indexPath": Leaf("s[1]"),
        "namespace": Leaf("s[0].namespace"),
        "name": Leaf("s[0].name"),
        "taskId": Leaf("s[0].task_id"),
        "rank": Leaf("FLOAT(s[0].rank)"),
        "data": Leaf("JSON(LOADS(s[0].data))", raw="RAW(s[0].data)"),
        "expires": Leaf("FMT(s[0].expires)"),
        "task": Relation("task", "one", lambda s, d, b: [e[0].task_id for e in s]),
    },
    "LabelHistory": {
        "label": Leaf("s[0]"),
        "latest": Relation("latest", "one", _same),
        "lastSuccess": Relation("last_success", "one", _same),
        "lastFailure": Relation("last_failure", "one", _same),
        "history": Relation(
            "label_history", "page",
            lambda s, d, b: [(h[0], h[1], b.key, b.limit) for h in s],
            wrap=_connection(lambda t: pagination.encode(
                pagination.LABEL_HISTORY, t.created.isoformat(), t.task_id)),
            bind=_page(pagination.LABEL_HISTORY, pagination.decode_time_key)),
    },
    "TaskGroup": {
        "taskGroupId": Leaf("ID(s)"),
        "tasks": Relation(
            "task_group_page", "page",
            lambda s, d, b: [(str(g), b.state, b.key, b.limit) for g in s],
            wrap=_connection(lambda t: pagination.encode(pagination.TASK_GROUP, t.task_id)),
            bind=_page(pagination.TASK_GROUP, pagination.decode_key)),
    },
    "Namespace": {
        "path": Leaf("s.path"),
        "name": Leaf("s.path.rpartition('.')[2]"),
        "expires": Leaf("OFMT(s.expires)"),
        "namespaces": Relation(
            "child_namespaces_page", "page",
            lambda s, d, b: [(n.path, b.key, b.limit) for n in s],
            wrap=_connection(lambda n: pagination.encode(
                pagination.NAMESPACES, n.path.rpartition(".")[2])),
            bind=_page(pagination.NAMESPACES, pagination.decode_key)),
        "tasks": Relation(
            "namespace_tasks_page", "page",
            lambda s, d, b: [(n.path, b.key, b.limit) for n in s],
            wrap=_connection(lambda e: pagination.encode(pagination.NAMESPACE_TASKS, e.name),
                             node=lambda e: (e, e.path)),
            bind=_page(pagination.NAMESPACE_TASKS, pagination.decode_key)),
    },
    "TaskConnection": _CONNECTION_FIELDS,
    "NamespaceConnection": _CONNECTION_FIELDS,
    "IndexedTaskConnection": _CONNECTION_FIELDS,
    "TaskEdge": _EDGE_FIELDS,
    "NamespaceEdge": _EDGE_FIELDS,
    "IndexedTaskEdge": _EDGE_FIELDS,
    "PageInfo": {
        "hasNextPage": Leaf("s.has_next"),
        "hasPreviousPage": Leaf("(s.after is not None)"),
        "startCursor": Leaf("s.start_cursor()"),
        "endCursor": Leaf("s.end_cursor()"),
    },
}


# --- plans ----------------------------------------------------------------------

@dataclass(eq=False)
class PlanField:
    index: int  # position in the request's bound-argument list
    key: str  # response key
    name: str
    spec: Any  # Leaf | Embed | Relation | None (__typename)
    child: "Selection | None" = None
    node: FieldNode | None = None  # for arguments
    definition: Any = None  # the GraphQLField, for arguments
    arguments: Any = None  # the StrawberryField's arguments


@dataclass(frozen=True)
class _Code:
    build: Callable[..., list[dict]]
    uses_definition: bool  # build() takes the parsed definitions
    reads_definition: bool  # the sources need their definitions loaded first


@dataclass(eq=False)
class Selection:
    """The merged fields of one selection set on one object type, in response order."""

    type_name: str
    fields: list[PlanField]
    embeds: list[PlanField] = field(default_factory=list)
    relations: list[PlanField] = field(default_factory=list)
    _code: dict[bool, _Code] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeds = [f for f in self.fields if isinstance(f.spec, Embed)]
        self.relations = [f for f in self.fields if isinstance(f.spec, Relation)]

    def code(self, raw: bool) -> _Code:
        code = self._code.get(raw)
        if code is None:
            code = self._code[raw] = self._generate(raw)
        return code

    def _generate(self, raw: bool) -> _Code:
        # Only fixed expressions from SPECS go into the source; response keys
        # (aliases) and type names are passed in as constants.
        namespace: dict[str, Any] = dict(HELPERS)
        uses_definition = any(
            isinstance(f.spec, (Embed, Relation)) and f.spec.uses_definition
            or isinstance(f.spec, Leaf) and "d" in _names(f.spec.expression(raw))
            for f in self.fields)
        params, names, iterables, entries = ["srcs"], ["s"], ["srcs"], []
        if uses_definition:
            params.append("defs"), names.append("d"), iterables.append("defs")
        for i, f in enumerate(self.fields):
            namespace[f"K{i}"] = f.key
            if f.spec is None:
                namespace[f"T{i}"] = self.type_name
                value = f"T{i}"
            elif isinstance(f.spec, Leaf):
                value = f.spec.expression(raw)
            elif isinstance(f.spec, Embed):
                params.append(f"c{i}"), names.append(f"a{i}"), iterables.append(f"c{i}")
                value = f"a{i}"
            else:
                value = "None"  # filled in when the relation is loaded
            entries.append(f"K{i}: {value}")
        loop = ("for s in srcs" if len(names) == 1
                else f"for {', '.join(names)} in zip({', '.join(iterables)})")
        source = (f"def build({', '.join(params)}):\n"
                  f"    return [{{{', '.join(entries)}}} {loop}]\n")
        exec(compile(source, f"<tcgraph fast path: {self.type_name}>", "exec"), namespace)
        reads_definition = uses_definition or any(
            isinstance(f.spec, Leaf) and "definition" in f.spec.expression(raw)
            for f in self.fields)
        return _Code(namespace["build"], uses_definition, reads_definition)


def _names(expression: str) -> set[str]:
    return set(compile(expression, "<leaf>", "eval").co_names)


@dataclass(eq=False)
class Plan:
    root: Selection
    fields: list[PlanField]  # every field, by index
    bindings: list[PlanField]  # the fields that take arguments

    def bind(self, schema: Any, variables: VariableValues, settings: Settings) -> list[Any]:
        """Each field's arguments as its resolver would use them; raises what it would raise."""
        bound: list[Any] = [None] * len(self.fields)
        registry = schema.schema_converter.scalar_registry
        for f in self.bindings:
            raw = get_argument_values(f.definition, f.node, variables)
            kwargs = convert_arguments(raw, f.arguments, scalar_registry=registry,
                                       config=schema.config)
            bound[f.index] = f.spec.bind(kwargs, settings)
        return bound


@dataclass(eq=False)
class Operation:
    node: OperationDefinitionNode
    fragments: dict[str, FragmentDetails]
    condition_variables: tuple[str, ...]  # read by @skip / @include
    string_lists: tuple[str, ...]  # variables of type [String] / [ID] (maybe non-null)
    plans: "OrderedDict[tuple, Plan | str]" = field(default_factory=OrderedDict)  # str: why not


@dataclass(eq=False)
class Document:
    """One document text: its parse, whether it validated, its compiled operations."""

    document: Any
    valid_for: tuple | None = None  # the validation rules it passed
    operations: dict[str | None, Operation | str] = field(default_factory=dict)


_MISSING = object()


def _condition_variables(nodes: Sequence[Node]) -> tuple[str, ...]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, DirectiveNode) and node.name.value in ("skip", "include"):
            for argument in node.arguments or ():
                if isinstance(argument.value, VariableNode):
                    names.add(argument.value.name.value)
        for key in getattr(node, "keys", ()):
            value = getattr(node, key, None)
            if isinstance(value, Node):
                visit(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Node):
                        visit(item)

    for node in nodes:
        visit(node)
    return tuple(sorted(names))


def _string_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if not isinstance(type_, GraphQLList):
        return False
    item = type_.of_type
    if isinstance(item, GraphQLNonNull):
        item = item.of_type
    return item is GraphQLString or item is GraphQLID


class FastPath:
    """The compiled executor of one schema; its caches live as long as the schema."""

    def __init__(self, schema: Any, enabled: bool = True) -> None:
        self.schema = schema  # the Strawberry schema
        self.enabled = enabled
        self.taken = 0
        self.fallbacks = 0
        self.last_fallback: str | None = None
        self._documents: OrderedDict[tuple, Document] = OrderedDict()

    # Parsing --------------------------------------------------------------------

    def document(self, query: str | None, parse_options: dict,
                 parsed: Any = None) -> Document | None:
        """The cached parse of `query`; None (standard path) if it does not parse.

        `parsed` is the document when another extension has parsed it already.
        """
        if not isinstance(query, str):
            return None
        key = (query, tuple(sorted(parse_options.items())))
        entry = self._documents.get(key)
        if entry is not None and (parsed is None or entry.document is parsed):
            self._documents.move_to_end(key)
            return entry
        if parsed is None:
            try:
                parsed = parse(query, **parse_options)
            except Exception:  # the standard path parses again and reports it
                return None
        entry = Document(parsed)
        if len(query) <= CACHED_DOCUMENT_SIZE:
            self._documents[key] = entry
            while len(self._documents) > DOCUMENT_CACHE_SIZE:
                self._documents.popitem(last=False)
        return entry

    # Execution --------------------------------------------------------------------

    async def execute(self, entry: Document, execution_context: Any) -> GraphQLExecutionResult | None:
        """The result, or None when the standard executor must answer."""
        try:
            context = execution_context.context
            loaders = getattr(context, "loaders", None)
            settings = getattr(context, "settings", None)
            if not hasattr(loaders, "load_all") or not isinstance(settings, Settings):
                raise Fallback("not a tcgraph context")
            operation = self._operation(entry, execution_context.operation_name)
            variables = self._variables(operation, execution_context.variables)
            plan = self._plan(operation, variables)
            bound = plan.bind(self.schema, variables, settings)
            raw = getattr(context, "raw_json", None)
            if raw is None:  # over HTTP the body is encoded by orjson (GraphQLApp.encode_json)
                raw = getattr(context, "request", None) is not None
            with _gc_paused():
                data = await _Run(loaders, bound, bool(raw)).execute(plan.root)
                # The request's rows are not needed once its result is built.
                release = getattr(loaders, "release", None)
                if release is not None:
                    release()
        except Exception as error:  # noqa: BLE001 - every failure means: use the standard path
            self.fallbacks += 1
            self.last_fallback = f"{type(error).__name__}: {error}"
            log.debug("fast path fell back: %s", self.last_fallback)
            return None
        self.taken += 1
        return GraphQLExecutionResult(data=data, errors=None)

    def _operation(self, entry: Document, name: str | None) -> Operation:
        operation = entry.operations.get(name)
        if operation is None:
            try:
                operation = self._compile_operation(entry.document, name)
            except Fallback as reason:
                operation = str(reason)
            entry.operations[name] = operation
        if isinstance(operation, str):
            raise Fallback(operation)
        return operation

    def _compile_operation(self, document: Any, name: str | None) -> Operation:
        # As graphql-core's Executor.build picks the operation.
        found: OperationDefinitionNode | None = None
        fragments: dict[str, FragmentDetails] = {}
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                if name is None:
                    if found is not None:
                        raise Fallback("several operations and no name")
                    found = definition
                elif definition.name and definition.name.value == name:
                    found = definition
            elif isinstance(definition, FragmentDefinitionNode):
                if definition.variable_definitions:
                    raise Fallback("fragment variables")
                fragments[definition.name.value] = FragmentDetails(definition)
        if found is None:
            raise Fallback("no such operation")
        if found.operation != OperationType.QUERY:
            raise Fallback(f"{found.operation.value} operation")
        schema = self.schema._schema
        string_lists = tuple(
            var.variable.name.value for var in found.variable_definitions or ()
            if _string_list(type_from_ast(schema, var.type)))
        conditions = _condition_variables(
            [found, *(f.definition for f in fragments.values())])
        return Operation(found, fragments, conditions, string_lists)

    def _variables(self, operation: Operation, given: dict | None) -> VariableValues:
        """graphql-core's coercion, skipping the per-item work for lists of strings."""
        inputs = given or {}
        lists: dict[str, list] = {}
        for name in operation.string_lists:
            value = inputs.get(name)
            if type(value) is list and all(type(v) is str for v in value):
                lists[name] = value
        if lists:
            inputs = {**inputs, **{name: [] for name in lists}}
        values = get_variable_values(self.schema._schema, operation.node.variable_definitions or (),
                                     inputs, max_errors=50)
        if isinstance(values, list):
            raise Fallback("variables do not coerce")
        for name, value in lists.items():
            # Coercing a list of str as [String] or [ID] gives an equal list.
            values.coerced[name] = list(value)
            values.sources[name] = VariableValueSource(values.sources[name].signature, value)
        return values

    def _plan(self, operation: Operation, variables: VariableValues) -> Plan:
        key = tuple(variables.coerced.get(name, _MISSING) for name in operation.condition_variables)
        plan = operation.plans.get(key)
        if plan is None:
            try:
                plan = _Compiler(self.schema, operation, variables).compile()
            except Fallback as reason:  # unsupported, whatever the other variables say
                plan = str(reason)
            operation.plans[key] = plan
            while len(operation.plans) > PLANS_PER_OPERATION:
                operation.plans.popitem(last=False)
        if isinstance(plan, str):
            raise Fallback(plan)
        return plan


class _Compiler:
    def __init__(self, schema: Any, operation: Operation, variables: VariableValues) -> None:
        self.schema = schema
        self.graphql = schema._schema
        self.operation = operation
        self.variables = variables
        self.fields: list[PlanField] = []

    def compile(self) -> Plan:
        query = self.graphql.query_type
        collected = collect_fields(self.graphql, self.operation.fragments, self.variables,
                                   query, self.operation.node)
        root = self._selection(query, collected)
        return Plan(root, self.fields,
                    [f for f in self.fields if getattr(f.spec, "bind", None) is not None])

    def _selection(self, type_: GraphQLObjectType, collected: Any) -> Selection:
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            raise Fallback("@defer")
        specs = SPECS.get(type_.name)
        if specs is None:
            raise Fallback(f"type {type_.name}")
        fields = []
        for key, details in collected.grouped_field_set.items():
            fields.append(self._field(type_, specs, key, details))
        return Selection(type_.name, fields)

    def _field(self, type_: GraphQLObjectType, specs: dict, key: str,
               details: list[FieldDetails]) -> PlanField:
        if any(d.defer_usage is not None or d.fragment_variable_values is not None
               for d in details):
            raise Fallback("@defer or fragment variables")
        node = details[0].node
        name = node.name.value
        plan_field = PlanField(len(self.fields), key, name, None)
        self.fields.append(plan_field)
        if name == "__typename":
            return plan_field
        spec = specs.get(name)
        definition = type_.fields.get(name)
        if spec is None or definition is None:
            raise Fallback(f"field {type_.name}.{name}")
        strawberry_field = self.schema.get_field_for_type(name, type_.name)
        if strawberry_field is None or _decorated(strawberry_field):
            raise Fallback(f"field {type_.name}.{name}")
        plan_field.spec = spec
        if isinstance(spec, (Embed, Relation)):
            child_type = get_named_type(definition.type)
            if not isinstance(child_type, GraphQLObjectType):
                raise Fallback(f"{child_type} is not an object type")
            collected = collect_subfields(self.graphql, self.operation.fragments, self.variables,
                                          self.operation.node, child_type, details)
            plan_field.child = self._selection(child_type, collected)
        if definition.args:
            if getattr(spec, "bind", None) is None:
                raise Fallback(f"arguments of {type_.name}.{name}")
            plan_field.node = node
            plan_field.definition = definition
            plan_field.arguments = strawberry_field.arguments
        return plan_field


_gc_lock = threading.Lock()  # several event loops may run in threads
_gc_pauses = 0  # fast-path executions running now
_gc_restore = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a fast-path execution builds its result.

    A large document allocates a few hundred thousand objects (rows, runs,
    cache entries, result dicts) that all stay alive until the response is
    sent; CPython's collector would traverse them, and everything else alive,
    again and again while they pile up (a third of the request's CPU time at
    10,000 keys), for no garbage. The collector is turned back on whenever an
    execution ends, even if others are still running, so under any load it
    runs between requests; nothing is collected later than one request's length.
    """
    global _gc_pauses, _gc_restore
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_restore = gc.isenabled()
        _gc_pauses += 1
        if _gc_restore:
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            restore = _gc_restore
            if restore:
                gc.enable()
            if _gc_pauses == 0:
                _gc_restore = False


def _decorated(strawberry_field: Any) -> bool:
    # Permissions, field extensions and directives run around a resolver; the
    # fast path does not call resolvers, so such a field is not for it.
    return bool(getattr(strawberry_field, "permission_classes", None)
                or getattr(strawberry_field, "extensions", None)
                or getattr(strawberry_field, "directives", None))


class _Run:
    """One execution: builds result dicts level by level, loading each level at once."""

    def __init__(self, loaders: Any, bound: list[Any], raw: bool) -> None:
        self.loaders = loaders
        self.bound = bound
        self.raw = raw
        self.pending: list[tuple[PlanField, list, list | None, list[dict]]] = []

    async def execute(self, root: Selection) -> dict[str, Any]:
        data = (await self.process(root, [None]))[0]
        while self.pending:
            await self._level()
        return data

    async def _with_definitions(self, sources: list) -> list:
        """`sources` (tasks) with their definitions, loaded in one batch if missing."""
        missing = [s.task_id for s in sources if s.definition is None]
        if not missing:
            return sources
        loaders = self.loaders
        texts = dict(zip(missing, await loaders.load_all(loaders.definition, missing)))
        return [s if s.definition is not None
                else dataclasses.replace(s, definition=texts.get(s.task_id) or "{}")
                for s in sources]

    async def process(self, selection: Selection, sources: list) -> list[dict]:
        """The result dicts of `sources`; relations are left null and queued."""
        if not sources:
            return []
        code = selection.code(self.raw)
        if code.reads_definition:
            sources = await self._with_definitions(sources)
        definitions = ([orjson.loads(s.definition) for s in sources]
                       if code.uses_definition else None)
        arguments: list[Any] = [sources] if definitions is None else [sources, definitions]
        for f in selection.embeds:
            spec: Embed = f.spec
            children = spec.children(sources, definitions, self.bound[f.index])
            if spec.many:
                flat = await self.process(f.child, [c for group in children for c in group])
                grouped, start = [], 0
                for group in children:
                    end = start + len(group)
                    grouped.append(flat[start:end])
                    start = end
                arguments.append(grouped)
            else:
                arguments.append(await self.process(f.child, children))
        dicts = code.build(*arguments)
        for f in selection.relations:
            self.pending.append((f, sources, definitions, dicts))
        return dicts

    async def _level(self) -> None:
        requests, self.pending = self.pending, []
        by_loader: dict[str, list[int]] = {}
        prepared: list[tuple[list, list | None]] = []
        for i, (f, sources, definitions, _) in enumerate(requests):
            spec: Relation = f.spec
            keys = spec.keys(sources, definitions, self.bound[f.index])
            counts = None
            if spec.shape == "many":
                counts = [len(group) for group in keys]
                keys = [key for group in keys for key in group]
            prepared.append((keys, counts))
            by_loader.setdefault(spec.loader, []).append(i)

        async def load(name: str, indexes: list[int]) -> list:
            keys = (prepared[indexes[0]][0] if len(indexes) == 1
                    else [key for i in indexes for key in prepared[i][0]])
            return await self.loaders.load_all(getattr(self.loaders, name), keys)

        names = list(by_loader)
        if len(names) == 1:
            loaded = [await load(names[0], by_loader[names[0]])]
        else:
            loaded = await asyncio.gather(*(load(n, by_loader[n]) for n in names),
                                          return_exceptions=True)
            for result in loaded:
                if isinstance(result, BaseException):
                    raise result
        for name, values in zip(names, loaded):
            start = 0
            for i in by_loader[name]:
                keys, counts = prepared[i]
                end = start + len(keys)
                await self._attach(requests[i], values[start:end], counts)
                start = end

    async def _attach(self, request: tuple, values: list, counts: list[int] | None) -> None:
        f, sources, _, dicts = request
        spec: Relation = f.spec
        key, bound, wrap = f.key, self.bound[f.index], spec.wrap
        if spec.shape == "many":
            groups, start = [], 0
            for count in counts or ():
                groups.append([v for v in values[start:start + count] if v is not None])
                start += count
            flat = await self.process(f.child, [v for group in groups for v in group])
            start = 0
            for d, group in zip(dicts, groups):
                end = start + len(group)
                d[key] = flat[start:end]
                start = end
            return
        positions, children = [], []
        for i, value in enumerate(values):
            if value is None:
                continue
            if wrap is not None:
                value = (wrap(value, i, bound) if spec.shape == "list"
                         else wrap(value, sources[i], bound))
                if value is None:
                    continue
            positions.append(i)
            children.append(value)
        built = await self.process(f.child, children)
        if spec.shape == "list":  # a root list: one source, one item per key
            items: list[Any] = [None] * len(values)
            for i, d in zip(positions, built):
                items[i] = d
            dicts[0][key] = items
        else:
            for i, d in zip(positions, built):
                dicts[i][key] = d


# --- the hook into Strawberry ----------------------------------------------------------

_ACTIVE: contextvars.ContextVar[FastPath | None] = contextvars.ContextVar(
    "tcgraph_fast_path", default=None)


def activate(fast_path: FastPath | None) -> contextvars.Token:
    """Mark the `Schema.execute` call being set up as one the fast path may answer."""
    return _ACTIVE.set(fast_path)


def deactivate(token: contextvars.Token) -> None:
    _ACTIVE.reset(token)


def extension_for(others: Sequence[SchemaExtension]) -> SchemaExtension | None:
    """The extension to add to a request's extensions, if the fast path is active."""
    fast_path = _ACTIVE.get()
    if fast_path is None or not fast_path.enabled:
        return None
    # Extensions that wrap resolvers (middleware) would be skipped by the fast path.
    if any(type(e).resolve is not SchemaExtension.resolve for e in others):
        return None
    return FastPathExtension(fast_path)


class FastPathExtension(SchemaExtension):
    """Caches parse and validation, and answers the execution step when it can.

    Runs last, inside Strawberry's own `Schema.execute`: the operation-type
    checks, validation rules (the depth limit), error processing and the other
    extensions' results are Strawberry's. Setting `execution_context.result`
    before the execution step makes Strawberry use it instead of executing.
    """

    def __init__(self, fast_path: FastPath) -> None:
        self.fast_path = fast_path
        self.entry: Document | None = None

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        self.entry = self.fast_path.document(ec.query, ec.parse_options, ec.graphql_document)
        if self.entry is not None:
            ec.graphql_document = self.entry.document
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        entry = self.entry
        rules = tuple(getattr(rule, "__qualname__", repr(rule)) for rule in ec.validation_rules)
        cached = (entry is not None and entry.valid_for == rules
                  and ec.pre_execution_errors is None)
        if cached:
            ec.pre_execution_errors = []  # validated before against the same rules
        yield
        if entry is not None and not cached and ec.pre_execution_errors == []:
            entry.valid_for = rules

    async def on_execute(self) -> Any:  # an async generator hook
        ec = self.execution_context
        if self.entry is not None and not ec.result:
            result = await self.fast_path.execute(self.entry, ec)
            if result is not None:
                ec.result = result
        yield
