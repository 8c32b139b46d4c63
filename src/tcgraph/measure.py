"""Measures of a GraphQL document, each linear in its size: depth, aliases, repetition, cost.

A fragment may be spread many times and may spread others, so expanding
spreads in place can be exponential in the document: 20 fragments that each
spread the next one twice stand for 2^20 copies of the last one. Every measure
here visits each fragment once, after the fragments it spreads, and reuses
that figure wherever the fragment is spread. The walks also tolerate documents
that validation will refuse (unknown fields, fragment cycles): they run as
validation rules, next to the rules that report those faults.

Cost reads the values the executor will use: the variables coerced by
graphql-core (with the document's defaults), each argument coerced from its
literal or variable, and `@skip`/`@include` decided the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator, Mapping

from graphql import (
    GraphQLError, GraphQLField, GraphQLIncludeDirective, GraphQLInterfaceType, GraphQLList,
    GraphQLNamedType, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, GraphQLSkipDirective,
    SchemaMetaFieldDef, TypeMetaFieldDef, get_named_type,
)
from graphql.execution import get_argument_values, get_directive_values, get_variable_values
from graphql.execution.values import VariableValues
from graphql.language import (
    DocumentNode, FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, Lexer,
    Source, TokenKind,
    OperationDefinitionNode, SelectionSetNode,
)

# Root fields whose list argument decides how many objects they return.
KEYED = {"tasks": "taskIds", "statuses": "taskIds", "indexedTasks": "indexPaths",
         "labels": "labels"}
# Costs are capped here so that an absurd document still reports a number
# JSON (and every client) can hold.
MAX_REPORTED_COST = 2**53


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    """The document's fragments by name (the first of a duplicated name)."""
    found: dict[str, FragmentDefinitionNode] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            found.setdefault(definition.name.value, definition)
    return found


def _spreads(selection_set: SelectionSetNode | None) -> Iterator[str]:
    """Names of the fragments spread anywhere inside `selection_set` (not through spreads)."""
    stack = [selection_set] if selection_set else []
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif isinstance(selection, (FieldNode, InlineFragmentNode)) and selection.selection_set:
                stack.append(selection.selection_set)


def spread_order(fragments: Mapping[str, FragmentDefinitionNode],
                 roots: Iterator[str]) -> list[str]:
    """The fragments reachable from `roots`, each after every fragment it spreads.

    A spread that closes a cycle is ignored here (validation refuses the cycle);
    unknown names are left out (validation refuses those too).
    """
    order: list[str] = []
    state: dict[str, bool] = {}  # False: being visited, True: done
    for root in roots:
        if root not in fragments or root in state:
            continue
        state[root] = False
        stack = [(root, _spreads(fragments[root].selection_set))]
        while stack:
            name, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                state[name] = True
                order.append(name)
            elif child in fragments and child not in state:
                state[child] = False
                stack.append((child, _spreads(fragments[child].selection_set)))
    return order


def lexed_tokens(text: str, cap: int) -> int:
    """The tokens of `text` as the parser counts them (comments aside), at most `cap`.

    Lexing stops at the first character that is no token.
    """
    lexer = Lexer(Source(text))
    count = 0
    try:
        while count < cap and lexer.advance().kind != TokenKind.EOF:
            count += 1
    except GraphQLError:
        pass
    return count


def operation_count(document: DocumentNode) -> int:
    """The operations `document` defines."""
    return sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)


# --- depth --------------------------------------------------------------------


def _depth(selection_set: SelectionSetNode, known: Mapping[str, int]) -> int:
    """Fields nested inside fields, as Strawberry's depth limiter counts them.

    A leaf adds nothing, introspection fields (`__schema`, ...) are not counted,
    and a spread counts what its fragment counted.
    """
    deepest = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.selection_set is not None and not selection.name.value.startswith("__"):
                deepest = max(deepest, 1 + _depth(selection.selection_set, known))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, known))
        elif isinstance(selection, FragmentSpreadNode):
            deepest = max(deepest, known.get(selection.name.value, 0))
    return deepest


def definition_depths(document: DocumentNode) -> dict[
        OperationDefinitionNode | FragmentDefinitionNode, int]:
    """The depth of every operation and fragment in `document`, in time linear in its size."""
    fragments = fragments_of(document)
    known: dict[str, int] = {}
    for name in spread_order(fragments, iter(fragments)):
        known[name] = _depth(fragments[name].selection_set, known)
    return {definition: _depth(definition.selection_set, known)
            for definition in document.definitions
            if isinstance(definition, (OperationDefinitionNode, FragmentDefinitionNode))}


# --- aliases ------------------------------------------------------------------


def _aliases(selection_set: SelectionSetNode, known: Mapping[str, int]) -> int:
    total = 0
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                total += known.get(selection.name.value, 0)
                continue
            if isinstance(selection, FieldNode) and selection.alias is not None:
                total += 1
            if isinstance(selection, (FieldNode, InlineFragmentNode)) and selection.selection_set:
                stack.append(selection.selection_set)
    return total


def alias_count(document: DocumentNode, cap: int) -> int:
    """Aliased fields in the operations, each spread counting its fragment's again (at most `cap`).

    The count Strawberry's alias limiter makes by expanding every spread, made
    by counting each fragment once.
    """
    fragments = fragments_of(document)
    known: dict[str, int] = {}
    for name in spread_order(fragments, iter(fragments)):
        known[name] = min(_aliases(fragments[name].selection_set, known), cap)
    return min(cap, sum(_aliases(d.selection_set, known) for d in document.definitions
                        if isinstance(d, OperationDefinitionNode)))


# --- repetition ---------------------------------------------------------------


@dataclass(frozen=True)
class RepeatedField:
    """A response key that one selection set holds too many times."""

    response_key: str


def _flatten(selection_set: SelectionSetNode, known: Mapping[str, Counter[str]],
             cap: int) -> Counter[str]:
    """How often each response key occurs in `selection_set`, fragments included, capped
    at `cap`."""
    counts: Counter[str] = Counter()
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            counts[(selection.alias or selection.name).value] += 1
        elif isinstance(selection, InlineFragmentNode):
            counts.update(_flatten(selection.selection_set, known, cap))
        elif isinstance(selection, FragmentSpreadNode):
            counts.update(known.get(selection.name.value, {}))
    return Counter({key: min(count, cap) for key, count in counts.items()})


def repeated_fields(document: DocumentNode, maximum: int) -> RepeatedField | None:
    """A field that some selection set repeats more than `maximum` times, if any.

    Repetitions through fragments count: 20 fragments that each spread the next
    one twice repeat the last one's fields 2^20 times. Linear in the document:
    each fragment's counts are computed once.
    """
    fragments = fragments_of(document)
    known: dict[str, Counter[str]] = {}
    for name in spread_order(fragments, iter(fragments)):
        known[name] = _flatten(fragments[name].selection_set, known, maximum + 1)
    stack = [d.selection_set for d in document.definitions
             if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))]
    while stack:
        selection_set = stack.pop()
        for key, count in _flatten(selection_set, known, maximum + 1).items():
            if count > maximum:
                return RepeatedField(key)
        stack.extend(field.selection_set for field in _fields_within(selection_set)
                     if field.selection_set is not None)
    return None


def _fields_within(selection_set: SelectionSetNode) -> Iterator[FieldNode]:
    """The fields of `selection_set`, through its inline fragments but not its spreads."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields_within(selection.selection_set)


# --- cost ---------------------------------------------------------------------


@dataclass(frozen=True)
class Demands:
    """What an operation may ask for: its cost, and the largest `first` of any connection.

    `coercion_errors`: arguments and directive arguments of the selections that
    will run whose values cannot be coerced (a null variable in a non-null
    place, as `@include(if: $v)` with `$v` null): the request cannot run as sent.
    """

    cost: int
    largest_first: int
    coercion_errors: tuple[GraphQLError, ...] = ()


def choose_operation(document: DocumentNode,
                     operation_name: str | None) -> OperationDefinitionNode | None:
    """The operation the executor will run: the named one, or the only one."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def coerce_variables(schema: GraphQLSchema, operation: OperationDefinitionNode, given: object,
                     hide_suggestions: bool = False) -> VariableValues | list[GraphQLError]:
    """The operation's variables as the executor will see them, or why it will refuse them."""
    return get_variable_values(schema, operation.variable_definitions or (),
                               given if isinstance(given, dict) else {},
                               hide_suggestions=hide_suggestions)


def _field_definition(parent: GraphQLNamedType | None, name: str,
                      schema: GraphQLSchema) -> GraphQLField | None:
    if name == "__schema":
        return SchemaMetaFieldDef
    if name == "__type":
        return TypeMetaFieldDef
    if isinstance(parent, (GraphQLObjectType, GraphQLInterfaceType)):
        field: GraphQLField | None = parent.fields.get(name)
        return field
    return None


def _is_list(field: GraphQLField) -> bool:
    kind = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
    return isinstance(kind, GraphQLList)


class _CostWalk:
    """One operation's cost, each fragment costed once (see the module's docstring)."""

    def __init__(self, schema: GraphQLSchema, variables: VariableValues,
                 default_page_size: int, hide_suggestions: bool) -> None:
        self.schema = schema
        self.variables = variables
        self.hide_suggestions = hide_suggestions
        self.default_page_size = default_page_size
        self.largest_first = 0
        self.fragments: dict[str, int] = {}
        # Coercion errors met so far, and those met inside each fragment (which
        # count only where the fragment is spread in a selection that runs).
        self.errors: dict[tuple[str, str], GraphQLError] = {}
        self.fragment_errors: dict[str, dict[tuple[str, str], GraphQLError]] = {}

    def failed(self, error: GraphQLError) -> None:
        self.errors.setdefault((error.message, str(error.locations)), error)

    def included(self, node: Any) -> bool:
        """@skip and @include as the executor decides them."""
        try:
            skip = get_directive_values(GraphQLSkipDirective, node, self.variables,
                                        hide_suggestions=self.hide_suggestions)
            include = get_directive_values(GraphQLIncludeDirective, node, self.variables,
                                           hide_suggestions=self.hide_suggestions)
        except GraphQLError as error:
            self.failed(error)
            return True  # count the selection; the request is refused anyway
        skipped = bool(skip and skip.get("if") is True)
        return not skipped and not (include and include.get("if") is False)

    def arguments(self, field: GraphQLField, node: FieldNode) -> dict[str, Any]:
        try:
            return get_argument_values(field, node, self.variables,
                                       hide_suggestions=self.hide_suggestions)
        except GraphQLError as error:
            self.failed(error)
            return {}

    def items(self, parent: GraphQLNamedType | None, field: GraphQLField | None,
              node: FieldNode) -> int:
        """How many objects one `node` may return per parent object."""
        if field is None:
            return 1
        arguments = self.arguments(field, node)
        key = KEYED.get(node.name.value)
        if parent is self.schema.query_type and key is not None and _is_list(field):
            keys = arguments.get(key)
            return len(keys) if isinstance(keys, list) and keys else 1
        if "first" in field.args:  # a connection
            first = arguments.get("first")
            items = first if isinstance(first, int) else self.default_page_size
            self.largest_first = max(self.largest_first, items)
            return max(items, 0)
        return 1

    def cost(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> int:
        total = 0
        for selection in selection_set.selections:
            if not self.included(selection):
                continue
            if isinstance(selection, FieldNode):
                field = _field_definition(parent, selection.name.value, self.schema)
                if selection.selection_set is None:
                    if field is not None and field.args:
                        self.arguments(field, selection)  # only checked: a scalar costs 0
                    continue
                child = get_named_type(field.type) if field is not None else None
                total += self.items(parent, field, selection) * (
                    1 + self.cost(selection.selection_set, child))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                total += self.cost(selection.selection_set, self.schema.get_type(
                    condition.name.value) if condition else parent)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragments.get(selection.name.value, 0)
                self.errors.update(self.fragment_errors.get(selection.name.value, {}))
            if total > MAX_REPORTED_COST:
                return MAX_REPORTED_COST
        return total


def operation_demands(schema: GraphQLSchema, document: DocumentNode,
                      operation: OperationDefinitionNode, variables: VariableValues,
                      default_page_size: int, hide_suggestions: bool = False) -> Demands:
    """The cost of `operation` and its largest `first`, from coerced `variables`.

    Each object a field may return counts 1, multiplied by how many its parents
    may return; each spread counts its fragment's cost again (an upper bound:
    the executor merges repeated spreads, this count does not).
    """
    walk = _CostWalk(schema, variables, default_page_size, hide_suggestions)
    fragments = fragments_of(document)
    for name in spread_order(fragments, _spreads(operation.selection_set)):
        fragment = fragments[name]
        walk.errors = {}
        walk.fragments[name] = walk.cost(
            fragment.selection_set, schema.get_type(fragment.type_condition.name.value))
        walk.fragment_errors[name] = walk.errors
    walk.errors = {}
    root = schema.get_root_type(operation.operation)
    cost = walk.cost(operation.selection_set, root)
    return Demands(cost, walk.largest_first, tuple(walk.errors.values()))


def document_demands(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
                     given_variables: object, default_page_size: int,
                     hide_suggestions: bool = False) -> Demands | None:
    """`operation_demands` of the operation the executor will choose, with the variables
    it will use.

    None when the executor will refuse the request before running anything for
    want of an operation (its error says why); variables it cannot coerce are
    the `coercion_errors` of a Demands of cost 0. `hide_suggestions` leaves
    "Did you mean" hints (names from the schema) out of the errors.
    """
    operation = choose_operation(document, operation_name)
    if operation is None:
        return None
    variables = coerce_variables(schema, operation, given_variables, hide_suggestions)
    if isinstance(variables, list):
        return Demands(0, 0, tuple(variables))
    return operation_demands(schema, document, operation, variables, default_page_size,
                             hide_suggestions)

