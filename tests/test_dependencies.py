"""The dependencies' internals tcgraph relies on, where they have no public hook.

pyproject.toml pins strawberry-graphql and graphql-core to the series these
hold for; each test names what changed and where tcgraph uses it, so an upgrade
that breaks one fails here first, with a message saying what to look at.
"""

from __future__ import annotations

import dataclasses
import inspect
from importlib.metadata import version

import graphql
import orjson
import strawberry
from graphql.execution import Executor as GraphQLExecutor
from strawberry.types import ExecutionContext

from tcgraph.api import sqljson
from tcgraph.api.schema import Query, build_schema
from tcgraph.limits import VALIDATION_ABORTED


def test_graphql_core_s_complete_value_keeps_the_signature_sqljson_overrides() -> None:
    parameters = list(inspect.signature(GraphQLExecutor.complete_value).parameters)
    assert parameters == ["self", "return_type", "field_details_list", "info", "path", "result",
                          "position_context"], (
        f"graphql-core {graphql.__version__} changed Executor.complete_value to {parameters}: "
        "api/sqljson.py's _SplicesFragments overrides it to splice orjson fragments; update it "
        "and the graphql-core pin in pyproject.toml")


def test_the_schema_s_executor_is_strawberry_s_own_that_splices_fragments() -> None:
    default = strawberry.Schema(query=Query).execution_context_class
    used = build_schema().execution_context_class
    assert issubclass(default, GraphQLExecutor), (
        f"Strawberry {version('strawberry-graphql')}'s default executor is no longer a "
        "graphql-core Executor: api/schema.py extends it (api/sqljson.executor)")
    assert used.__mro__[1:3] == (sqljson._SplicesFragments, default)
    fragment = orjson.Fragment(b"[1]")
    # The field nodes, info and path are not read for a spliced fragment.
    completed = used.complete_value(
        object.__new__(used), graphql.GraphQLList(graphql.GraphQLInt), [],
        None, None, fragment, None)  # type: ignore[arg-type]
    assert completed is fragment


def test_graphql_core_says_validation_aborted_in_these_words() -> None:
    source = inspect.getsource(graphql.validation.validate)
    assert f'"{VALIDATION_ABORTED}"' in source, (
        "graphql-core no longer reports a validation that overflowed the stack as "
        f"{VALIDATION_ABORTED!r}: limits.code_error matches that message to code it max_depth")


def test_strawberry_s_execution_context_has_the_fields_extensions_set() -> None:
    fields = {f.name for f in dataclasses.fields(ExecutionContext)} | {
        name for name, value in vars(ExecutionContext).items() if isinstance(value, property)}
    used = {"query", "graphql_document", "parse_options", "validation_rules",
            "pre_execution_errors", "result", "variables", "operation_name", "schema"}
    assert used <= fields, (
        f"strawberry's ExecutionContext lost {sorted(used - fields)}: api/documents.py and "
        "limits.py read and set them in their hooks")


def test_strawberry_s_schema_holds_graphql_core_s_and_its_validation_rules() -> None:
    schema = build_schema()
    assert isinstance(schema._schema, graphql.GraphQLSchema), (
        "strawberry.Schema._schema is no longer the graphql-core schema api/documents.py "
        "validates against")
    source = inspect.getsource(strawberry.schema.schema.validate_document)
    for rule in ("MaybeNullValidationRule", "OneOfInputValidationRule"):
        assert rule in source, (
            f"Strawberry's validate_document no longer adds {rule}: api/documents.py adds "
            "the rules Strawberry adds (_STRAWBERRY_RULES), to validate as it would")
