"""Leaf selections answered as JSON that PostgreSQL builds.

A field of `api/types/` may declare, next to its resolver, how PostgreSQL
computes the same value (`Sql`, in the field's `metadata`). Where a loader is
about to fetch rows for a selection whose every field (and every field below
it) has such a declaration, `plan` compiles the selection into one
`json_build_object(...)` expression over the loader's row; the loader's
statement then returns each answer as JSON text, which goes into the response
as an `orjson.Fragment`, never decoded. Any field without a declaration (a
connection, anything with arguments but a paged field's `first`) leaves the
selection to the resolvers. The expression is built from typed fragments
(store/sqlfrag.py): a response key or type name is only ever an SQL literal.

What is compiled follows GraphQL's own rules for collecting fields: response
keys in first-seen order, fields with one response key merged, fragments
spread where they stand, `@skip`/`@include` applied, `__typename` answered.
tests/api/test_differential.py runs generated documents both ways and
compares the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Iterable, Mapping

import orjson
from graphql import GraphQLOutputType
from graphql.execution import Executor as GraphQLExecutor
from strawberry.types.base import (
    StrawberryContainer, StrawberryObjectDefinition, get_object_definition,
)
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from tcgraph.errors import ClientError
from tcgraph.store.sqlfrag import SqlFragment, Template, identifier, join, literal
from tcgraph.pagination import page_size

if TYPE_CHECKING:
    from strawberry.types import Info

    from tcgraph.api.context import Context

SQL = "tcgraph.sql"  # the key of a field's `metadata` that holds its `Sql`

# PostgreSQL functions take at most 100 arguments: 50 key/value pairs.
_MAX_KEYS = 50
_PAIR = Template("{key}, {value}")
_OBJECT = Template("json_build_object({pairs})")
_TEXT = Template("{value}::text")


@dataclass(frozen=True, slots=True)
class Sql:
    """How PostgreSQL computes a field's value.

    `template` is an SQL expression over `{row}`, the alias of the row that
    holds the parent object. A field whose type is an object (or a list of
    objects) also uses `{json}`, the compiled selection of that object, over
    `{child}`, the alias its template gives the object's row; with `same_row`
    the object is made of the parent's row itself (`{child}` is `{row}`).
    A `paged` field takes one argument, `first` (checked and defaulted as a
    page size), which its template uses as `{first}`.
    """

    template: Template
    same_row: bool = False
    paged: bool = False


def sql(template: str, *, same_row: bool = False, paged: bool = False) -> dict[str, Sql]:
    """`metadata` for `strawberry.field`: the field's value as PostgreSQL computes it.

    `template` is SQL written here, in the code: its slots are filled with
    identifiers (the rows' aliases), integer literals and compiled fragments only.
    """
    return {SQL: Sql(Template(template), same_row, paged)}


@dataclass
class _Collected:
    """One response key of a selection set: its field, arguments and merged sub-selections."""

    name: str
    arguments: dict[str, Any]
    selections: list[Selection]


class _Compiler:
    def __init__(self, info: Info[Context, Any]) -> None:
        self.schema = info.schema
        self.settings = info.context.settings
        self.aliases = 0

    def alias(self) -> SqlFragment:
        self.aliases += 1
        return identifier(f"j{self.aliases}")

    def collect(self, selections: Iterable[Selection], into: dict[str, _Collected]) -> None:
        """GraphQL's CollectFields: response key -> (field name, merged sub-selections)."""
        for selection in selections:
            if not _included(selection.directives):
                continue
            if isinstance(selection, SelectedField):
                key = selection.alias or selection.name
                if key in into:
                    into[key].selections.extend(selection.selections)
                else:
                    # Validation made the arguments of fields sharing a key equal.
                    into[key] = _Collected(selection.name, dict(selection.arguments),
                                           list(selection.selections))
            elif isinstance(selection, (FragmentSpread, InlineFragment)):
                self.collect(selection.selections, into)

    def compile(self, type_name: str, selections: Iterable[Selection],
                row: SqlFragment) -> SqlFragment | None:
        fields: dict[str, _Collected] = {}
        self.collect(selections, fields)
        if len(fields) > _MAX_KEYS:
            return None
        parts: list[SqlFragment] = []
        for key, collected in fields.items():
            value = self.value(type_name, collected, row)
            if value is None:
                return None
            # The response key (a GraphQL alias or field name) is a literal, never SQL.
            parts.append(_PAIR(key=literal(key), value=value))
        return _OBJECT(pairs=join(parts))

    def value(self, type_name: str, collected: _Collected,
              row: SqlFragment) -> SqlFragment | None:
        if collected.name == "__typename":
            return _TEXT(value=literal(type_name))
        field = self.schema.get_field_for_type(collected.name, type_name)
        if field is None:
            return None
        declared = field.metadata.get(SQL)
        if not isinstance(declared, Sql):
            return None
        accepted = {"first"} if declared.paged else set()
        if {argument.python_name for argument in field.arguments} - accepted:
            return None
        try:
            first = page_size(_int_argument(collected.arguments.get("first")), self.settings)
        except ClientError:
            return None  # the resolvers refuse it, where a parent object exists
        child_type = _object_type(field.type)
        if child_type is None:
            return declared.template(row=row)
        child = row if declared.same_row else self.alias()
        json = self.compile(child_type.name, collected.selections, child)
        if json is None:
            return None
        return declared.template(row=row, child=child, json=json, first=literal(first))


def _int_argument(value: object) -> int | None:
    """An Int argument: a variable's value arrives coerced, a literal as its text
    (which validation found to be an Int)."""
    return int(value) if isinstance(value, str) else value if isinstance(value, int) else None


def _object_type(annotation: Any) -> StrawberryObjectDefinition | None:
    while isinstance(annotation, StrawberryContainer):
        annotation = annotation.of_type
    return get_object_definition(annotation)


def _included(directives: Mapping[str, Mapping[str, Any]]) -> bool:
    skip = directives.get("skip")
    include = directives.get("include")
    return not (skip is not None and skip.get("if")) and not (
        include is not None and not include.get("if"))


def _selection(info: Info[Context, Any]) -> list[Selection]:
    subselections: list[Selection] = []
    for selected in info.selected_fields:
        if isinstance(selected, SelectedField):
            subselections.extend(selected.selections)
    return subselections


def _memo(info: Info[Context, Any], kind: str, type_name: str, row: str,
          compile: Callable[[_Compiler, list[Selection]], SqlFragment | None]
          ) -> SqlFragment | None:
    context = info.context
    if not context.settings.sql_json:
        return None
    memo_key = (kind, type_name, row, *(p for p in info.path.as_list() if isinstance(p, str)))
    if memo_key not in context.plans:
        context.plans[memo_key] = compile(_Compiler(info), _selection(info))
    return context.plans[memo_key]


def plan(info: Info[Context, Any], type_name: str, row: str) -> SqlFragment | None:
    """The current field's selection on `type_name` as one JSON expression over `row`.

    None when some field in it has no SQL declaration, or when the request's
    settings turn compiled selections off; the resolvers answer it then.
    A selection is compiled once per request and response path (list indices
    aside: every item of a list has the same selection).
    """
    return _memo(info, "object", type_name, row,
                 lambda compiler, selection: compiler.compile(type_name, selection,
                                                              identifier(row)))


def plan_nodes(info: Info[Context, Any], type_name: str, row: str) -> SqlFragment | None:
    """For a connection field: its `nodes` selection on `type_name`, compiled as `plan` does.

    Only when `nodes` is selected under one response key and no `edges { node }`
    is (that would be a second selection of the same rows).
    """
    def compile(compiler: _Compiler, selection: list[Selection]) -> SqlFragment | None:
        fields: dict[str, _Collected] = {}
        compiler.collect(selection, fields)
        nodes = [f.selections for f in fields.values() if f.name == "nodes"]
        for collected in fields.values():
            if collected.name == "edges":
                edge_fields: dict[str, _Collected] = {}
                compiler.collect(collected.selections, edge_fields)
                if any(edge.name == "node" for edge in edge_fields.values()):
                    return None
        if len(nodes) != 1:
            return None
        return compiler.compile(type_name, nodes[0], identifier(row))

    return _memo(info, "nodes", type_name, row, compile)


def plan_field(info: Info[Context, Any], field_name: str, type_name: str, row: str
               ) -> SqlFragment | None:
    """For a field whose selection picks `field_name` (an object of `type_name`) under one
    response key, as a subscription's `TaskChange` picks `task`: that selection, compiled
    as `plan` does."""
    def compile(compiler: _Compiler, selection: list[Selection]) -> SqlFragment | None:
        fields: dict[str, _Collected] = {}
        compiler.collect(selection, fields)
        chosen = [f.selections for f in fields.values() if f.name == field_name]
        if len(chosen) != 1:
            return None
        return compiler.compile(type_name, chosen[0], identifier(row))

    return _memo(info, f"field {field_name}", type_name, row, compile)


def response_keys(info: Info[Context, Any]) -> list[tuple[str, str, int]]:
    """The current field's selection as GraphQL collects it: (response key, field name,
    number of sub-selections) in order, fragments spread, `@skip`/`@include` applied."""
    fields: dict[str, _Collected] = {}
    _Compiler(info).collect(_selection(info), fields)
    return [(key, f.name, len(f.selections)) for key, f in fields.items()]


class _SplicesFragments(GraphQLExecutor[Any]):
    """Takes JSON built in PostgreSQL as a completed value.

    A resolver that answers a compiled selection returns an `orjson.Fragment`:
    the value of the whole field, checked by construction, to be spliced into
    the response as it is. graphql-core has no public hook for a value that is
    already complete, so this overrides its `complete_value` (graphql-core 3.3's
    signature; pyproject.toml pins the series and tests/test_dependencies.py
    fails, naming this class, if the method changes).
    """

    def complete_value(self, return_type: GraphQLOutputType, field_details_list: Any,
                       info: Any, path: Any, result: Any, position_context: Any) -> Any:
        if type(result) is orjson.Fragment:
            return result
        return super().complete_value(return_type, field_details_list, info, path, result,
                                      position_context)


def executor(base: type[GraphQLExecutor[Any]]) -> type[GraphQLExecutor[Any]]:
    """`base` (Strawberry's executor class, as a schema holds it) that also splices fragments."""
    return type("Executor", (_SplicesFragments, base), {})
