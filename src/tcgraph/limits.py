"""The per-request limits that apply to a whole document: cost, and codes for the rest.

Cost is an upper bound computed from the document before anything runs: each
object a field may return counts 1, multiplied by how many its parents may
return. A list argument of n keys may return n objects, a connection `first`
items (the default page size when `first` is not given); other lists (a
task's dependencies, a status's runs) count 1 per parent. A document over
`max_cost` is refused before any SQL. Every response reports its cost as
`extensions.cost`, in the shape Shopify uses.

Depth, alias and token limits are graphql-core's and Strawberry's own rules;
this module gives their errors the same machine-readable `extensions` as every
other limit (`code: LIMIT_EXCEEDED`, the limit's name and value).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from graphql import GraphQLError
from graphql.language import (
    FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, IntValueNode,
    ListValueNode, OperationDefinitionNode, SelectionSetNode, VariableNode,
)
from graphql.validation import ValidationContext, ValidationRule
from strawberry.extensions import QueryDepthLimiter, SchemaExtension
from graphql.execution import ExecutionResult

from tcgraph.config import Settings

# Root fields whose list argument decides how many objects they return.
_KEYED = {"tasks": "taskIds", "statuses": "taskIds", "indexedTasks": "indexPaths",
          "labels": "labels"}

# (pattern of the rule's message, the limit's name, the setting holding its value)
_RULE_MESSAGES = (
    (re.compile(r"exceeds maximum operation depth of (\d+)"), "max_depth"),
    (re.compile(r"(\d+) aliases found\. Allowed: (\d+)"), "max_aliases"),
    (re.compile(r"Document contains more than (\d+) tokens"), "max_tokens"),
)


# GraphQL's Int is 32-bit; anything else is refused by validation anyway.
_INT_RANGE = range(-2**31, 2**31)
# Costs are capped here so that an absurd document still reports a number
# JSON (and every client) can hold.
_MAX_REPORTED_COST = 2**53


def _count(node: Any, variables: dict[str, Any]) -> int | None:
    if isinstance(node, VariableNode):
        node = variables.get(node.name.value)
        if isinstance(node, list):
            return len(node)
        if isinstance(node, int) and not isinstance(node, bool) and node in _INT_RANGE:
            return node
        return None
    if isinstance(node, ListValueNode):
        return len(node.values)
    if isinstance(node, IntValueNode):
        value = int(node.value)
        return value if value in _INT_RANGE else None
    return None


def document_cost(document: Any, operation_name: str | None, variables: dict[str, Any] | None,
                  settings: Settings) -> int:
    """The cost of the operation `operation_name` (or the only one) in `document`."""
    return document_demands(document, operation_name, variables, settings)[0]


def document_demands(document: Any, operation_name: str | None,
                     variables: dict[str, Any] | None, settings: Settings) -> tuple[int, int]:
    """(cost, the largest `first` any connection asks for) of the chosen operation."""
    variables = variables or {}
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = next((o for o in operations
                   if operation_name is None or (o.name and o.name.value == operation_name)), None)
    if chosen is None:
        return 0, 0
    largest_first = 0

    def fields(selection_set: SelectionSetNode | None, seen: frozenset[str]) -> Iterator[FieldNode]:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                yield from fields(selection.selection_set, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:
                    yield from fields(fragments[name].selection_set, seen | {name})

    def cost(selection_set: SelectionSetNode | None, root: bool) -> int:
        nonlocal largest_first
        total = 0
        for field in fields(selection_set, frozenset()):
            if field.selection_set is None:
                continue  # a scalar
            arguments = {a.name.value: a.value for a in field.arguments or ()}
            items = 1
            if root and field.name.value in _KEYED and _KEYED[field.name.value] in arguments:
                items = _count(arguments[_KEYED[field.name.value]], variables) or 1
            elif "first" in arguments:
                first = _count(arguments["first"], variables)
                items = first if first is not None else settings.default_page_size
                largest_first = max(largest_first, items)
            elif field.name.value in ("history", "tasks", "dependents", "namespaces"):
                items = settings.default_page_size  # a connection without `first`
            total += max(items, 0) * (1 + cost(field.selection_set, False))
            if total > _MAX_REPORTED_COST:
                return _MAX_REPORTED_COST
        return total

    return cost(chosen.selection_set, True), largest_first


def _annotate(error: GraphQLError, settings: Settings) -> None:
    for pattern, limit in _RULE_MESSAGES:
        match = pattern.search(error.message)
        if match:
            maximum = getattr(settings, limit)
            value = int(match.group(1)) if limit == "max_aliases" else None
            error.extensions = {"code": "LIMIT_EXCEEDED", "limit": limit, "maximum": maximum,
                                **({"value": value} if value is not None else {})}
            return


class Limits(SchemaExtension):
    """Refuses documents over `max_cost`, reports `extensions.cost`, codes limit errors."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cost: int | None = None

    def on_operation(self) -> Iterator[None]:
        yield
        ec = self.execution_context
        errors = list(ec.pre_execution_errors or ()) + list(
            (ec.result.errors if ec.result else None) or ())
        for error in errors:
            if not error.extensions:
                _annotate(error, self.settings)

    async def on_execute(self) -> Any:  # an async generator hook
        ec = self.execution_context
        if ec.graphql_document is not None and not ec.result:
            self.cost, largest_first = document_demands(
                ec.graphql_document, ec.operation_name, ec.variables, self.settings)
            maximum = self.settings.max_page_size
            if largest_first > maximum:
                # Refused here, before any SQL, even where the connection's
                # parent would turn out not to exist.
                ec.result = ExecutionResult(data=None, errors=[GraphQLError(
                    f"`first` is too large: {largest_first} is over the limit of {maximum} "
                    f"(max_page_size)",
                    extensions={"code": "LIMIT_EXCEEDED", "limit": "max_page_size",
                                "value": largest_first, "maximum": maximum})])
            elif self.cost > self.settings.max_cost:
                ec.result = ExecutionResult(data=None, errors=[GraphQLError(
                    f"the document's cost of {self.cost} is over the limit of "
                    f"{self.settings.max_cost} (max_cost): ask for fewer keys or smaller pages",
                    extensions={"code": "LIMIT_EXCEEDED", "limit": "max_cost",
                                "value": self.cost, "maximum": self.settings.max_cost})])
        yield

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requestedQueryCost": self.cost,
                         "maximumAvailable": self.settings.max_cost}}


class DepthLimiter(QueryDepthLimiter):
    """Strawberry's depth limit, refusing documents too deep even to measure.

    Its rule follows fragment spreads by recursion, so a long enough chain of
    fragments (a few kilobytes) exhausts Python's stack before any depth is
    reached; that document is refused as over `max_depth` instead.
    """

    def __init__(self, max_depth: int) -> None:
        super().__init__(max_depth=max_depth)
        (measure,) = self.validation_rules

        class Guarded(measure):  # type: ignore[misc, valid-type]
            def __init__(self, context: ValidationContext) -> None:
                try:
                    super().__init__(context)
                except RecursionError:
                    ValidationRule.__init__(self, context)
                    context.report_error(GraphQLError(
                        f"the document nests fragments too deeply to measure; its depth is "
                        f"over the limit of {max_depth} (max_depth)",
                        extensions={"code": "LIMIT_EXCEEDED", "limit": "max_depth",
                                    "maximum": max_depth}))

        self.validation_rules = [Guarded]
