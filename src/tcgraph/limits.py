"""The per-request limits that apply to a whole document, and the codes of document errors.

Cost is an upper bound computed from the document before anything runs: each
object a field may return counts 1, multiplied by how many its parents may
return. A list argument of n keys may return n objects, a connection `first`
items (the default page size when `first` is not given), and so does a task's
`dependencies` (a definition may list 10,000, so it is bounded like a page);
a status's runs count 1 per parent. A document over
`max_cost` is refused before any SQL. Every response reports its cost as
`extensions.cost`, in the shape Shopify uses. The arithmetic is in measure.py.

Depth, aliases and field repetition (`shape_errors`) are measured before
graphql-core's own validation runs (api/documents.py: some of its rules take
time quadratic in a field repeated in one selection set; Strawberry's own depth
and alias limiters expand every fragment spread, exponential in a document
whose fragments spread others twice); the token limit is applied while parsing. Every limit's
error carries the same machine-readable `extensions` (`code: LIMIT_EXCEEDED`,
the limit's name and value), and every other error about the document itself
a code too: `GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, or
`BAD_USER_INPUT` for variables the operation cannot take (an argument or an
`@include`/`@skip` condition of the selections that will run, null where the
schema needs a value, is refused before execution, with the cost).
"""

from __future__ import annotations

import weakref
from typing import Any
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError, GraphQLSchema, GraphQLSyntaxError, build_schema
from graphql.language import DocumentNode, FragmentDefinitionNode
from graphql.execution import ExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from tcgraph.config import Settings
from tcgraph.errors import BadInput, LimitExceeded
from tcgraph.measure import (
    Demands, alias_count, definition_depths, document_demands, lexed_tokens, operation_count,
    repeated_fields,
)

# graphql-core stops validating after this many errors (its default) and adds
# one error saying so.
MAX_VALIDATION_ERRORS = 100
# What graphql-core says when its rules overflow the stack on a deeply nested
# document (it has no other way to tell): tests/test_dependencies.py checks it.
VALIDATION_ABORTED = "Validation aborted."

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
# Each served schema's types as graphql-core sees them, for the cost walk.
_GRAPHQL_SCHEMAS: weakref.WeakKeyDictionary[strawberry.Schema, GraphQLSchema] = (
    weakref.WeakKeyDictionary())


def _graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """`schema` as graphql-core types (built once from its SDL: fields, arguments, defaults)."""
    found = _GRAPHQL_SCHEMAS.get(schema)
    if found is None:
        found = _GRAPHQL_SCHEMAS[schema] = build_schema(schema.as_str())
    return found
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


def _limit_extensions(limit: str, maximum: int, value: int | None = None,
                      **more: object) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": LimitExceeded.code, "limit": limit, "maximum": maximum}
    if value is not None:
        extensions["value"] = value
    return {**extensions, **more}


def _limit_error(message: str, limit: str, maximum: int, value: int | None = None,
                 **more: object) -> GraphQLError:
    return GraphQLError(message, extensions=_limit_extensions(limit, maximum, value, **more))


def too_many_validation_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    """`errors` of graphql-core's validation, its last replaced by a limit error if it stopped."""
    if len(errors) <= MAX_VALIDATION_ERRORS:
        return errors
    return [*errors[:MAX_VALIDATION_ERRORS], _limit_error(
        f"the document has more than {MAX_VALIDATION_ERRORS} errors; validation stopped there "
        f"(max_validation_errors)", "max_validation_errors", MAX_VALIDATION_ERRORS)]


def shape_errors(document: DocumentNode, settings: Settings) -> list[GraphQLError]:
    """Depth and repetition errors of `document`, measured in time linear in its size."""
    errors = []
    for definition, depth in definition_depths(document).items():
        if depth > settings.max_depth:
            name = definition.name.value if definition.name else "anonymous"
            kind = "fragment" if isinstance(definition, FragmentDefinitionNode) else "operation"
            errors.append(_limit_error(
                f"{kind} '{name}' exceeds maximum operation depth of {settings.max_depth}: "
                f"it nests {depth} fields deep (max_depth)", "max_depth", settings.max_depth,
                depth))
    aliases = alias_count(document, cap=settings.max_aliases + 1)
    if aliases > settings.max_aliases:
        errors.append(_limit_error(
            f"the document has more than {settings.max_aliases} aliases, counting each fragment "
            f"once per spread (max_aliases)", "max_aliases", settings.max_aliases))
    operations = operation_count(document)
    if operations > settings.max_operations:
        errors.append(_limit_error(
            f"the document has {operations} operations, over the limit of "
            f"{settings.max_operations} (max_operations): send the one to run",
            "max_operations", settings.max_operations, operations))
    repeated = repeated_fields(document, settings.max_field_repeats)
    if repeated is not None:
        errors.append(_limit_error(
            f"the field `{repeated.response_key}` appears more than {settings.max_field_repeats} "
            f"times in one selection set, counting the fragments spread into it "
            f"(max_field_repeats)", "max_field_repeats", settings.max_field_repeats,
            field=repeated.response_key))
    return errors


def code_error(error: GraphQLError, settings: Settings, validated: bool) -> None:
    """Give `error` the code (and limit) it lacks.

    `validated`: the document passed validation (the error came later, from
    the executor); else it is one of validation's errors.
    """
    if error.extensions and "code" in error.extensions:
        return
    if error.message == VALIDATION_ABORTED:
        # graphql-core gives up on documents too deeply nested for its rules.
        error.message = (f"the document nests too deeply to validate; its depth is over the "
                         f"limit of {settings.max_depth} (max_depth)")
        error.extensions = _limit_extensions("max_depth", settings.max_depth)
    elif isinstance(error, GraphQLSyntaxError):
        # The parser stops at `max_tokens` with a syntax error: count them to tell.
        if error.source is not None and lexed_tokens(
                error.source.body, settings.max_tokens + 1) > settings.max_tokens:
            error.message = (f"the document has more than {settings.max_tokens} tokens "
                             f"(max_tokens): send keys as variables, not literals")
            error.extensions = _limit_extensions("max_tokens", settings.max_tokens)
        else:
            error.extensions = {"code": PARSE_FAILED}
    elif not validated:
        error.extensions = {"code": VALIDATION_FAILED}
    elif not error.path:
        # Raised by the executor before any field ran: the variables (or the
        # operation chosen) do not fit the document.
        error.extensions = {"code": BadInput.code}


class Limits(SchemaExtension):
    """Refuses documents over `max_cost` or `max_page_size`, reports `extensions.cost`,
    codes errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cost: int | None = None

    def on_operation(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        # Strawberry keeps the executor's errors in `pre_execution_errors` too.
        for error in [*(ec.pre_execution_errors or ()), *((ec.result.errors if ec.result else None)
                                                         or ())]:
            code_error(error, self.settings, validated=True)

    def on_validate(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            code_error(error, self.settings, validated=False)

    async def on_execute(self) -> Any:  # an async generator hook
        ec = self.execution_context
        if ec.graphql_document is not None and not ec.result:
            demands = document_demands(_graphql_schema(ec.schema), ec.graphql_document,
                                       ec.operation_name, ec.variables,
                                       self.settings.default_page_size,
                                       hide_suggestions=not self.settings.introspection)
            if demands is not None:
                if not demands.coercion_errors:
                    self.cost = demands.cost
                refused = self.refusals(demands)
                if refused and ec.operation_type is OperationType.SUBSCRIPTION:
                    # Strawberry subscribes whatever `result` holds; an error
                    # raised here ends the subscription before it starts.
                    raise refused[0]
                if refused:
                    ec.result = ExecutionResult(data=None, errors=refused)
        yield

    def refusals(self, demands: Demands) -> list[GraphQLError]:
        """Why `demands` cannot run: arguments that cannot be coerced, then the limits
        exceeded (the page size first: it names the field to change)."""
        if demands.coercion_errors:
            # Refused before anything runs, so both executors answer alike (the
            # compiled one never sees the selections a null @include decides).
            return [GraphQLError(error.message, error.nodes, error.source, error.positions,
                                 extensions={"code": BadInput.code})
                    for error in demands.coercion_errors]
        maximum = self.settings.max_page_size
        if demands.largest_first > maximum:
            # Refused here, before any SQL, even where the connection's parent
            # would turn out not to exist.
            return [_limit_error(
                f"`first` is too large: {demands.largest_first} is over the limit of {maximum} "
                f"(max_page_size)", "max_page_size", maximum, demands.largest_first)]
        if demands.cost > self.settings.max_cost:
            return [_limit_error(
                f"the document's cost of {demands.cost} is over the limit of "
                f"{self.settings.max_cost} (max_cost): ask for fewer keys or smaller pages",
                "max_cost", self.settings.max_cost, demands.cost)]
        return []

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requestedQueryCost": self.cost,
                         "maximumAvailable": self.settings.max_cost}}
