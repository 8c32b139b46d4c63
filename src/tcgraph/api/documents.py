"""Checking a document before it runs, once per distinct text: parse, shape, validation.

Depth, aliases, operations and field repetition are measured first (limits.py,
linear in the document), and a document over one of those limits is not
validated at all: some of graphql-core's rules take time quadratic in a field
repeated in one selection set. Validation then runs graphql-core's rules
(Strawberry's, plus those extensions such as DisableIntrospection add); with
introspection off it leaves out the "Did you mean ...?" hints, which would name
the schema's fields, types and enum values to a client that may not ask for them.

What parsing and checking found is kept in a `DocumentCache`, keyed by the
SHA-256 of the document's text: a document sent again (a client sends the same
few documents with new variables) costs a hash instead of a parse and a
validation. The cache is bounded in entries and in bytes, and is also the store
of Automatic Persisted Queries (api/persisted.py), whose hash is the same.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Collection, Iterator

from graphql import ASTValidationRule, GraphQLError, GraphQLSchema, validate
from graphql.language import DocumentNode
from strawberry.extensions import SchemaExtension
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from tcgraph.config import Settings
from tcgraph.limits import MAX_VALIDATION_ERRORS, shape_errors, too_many_validation_errors

# The rules Strawberry adds to every validation (its `Maybe` and `@oneOf` inputs).
_STRAWBERRY_RULES: tuple[type[ASTValidationRule], ...] = (
    MaybeNullValidationRule, OneOfInputValidationRule)
# graphql-core 3.3's parsed document takes 340 to 470 bytes per token (measured
# with tracemalloc on documents of many small operations, of 10,000 string
# literals and of 100 aliased fields); an entry is charged this much per token
# on top of its text, so the byte bound holds for any mix.
AST_BYTES_PER_TOKEN = 512


def document_hash(text: str) -> str:
    """The SHA-256 of `text` (UTF-8), in lowercase hex: the cache's key, and a persisted query's."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def token_count(document: DocumentNode) -> int:
    """The tokens of a parsed document (its location keeps them linked)."""
    count = 0
    token = document.loc.start_token if document.loc else None
    while token is not None:
        count += 1
        token = token.next
    return count


@dataclass(frozen=True, slots=True)
class Checked:
    """A document's text, its parse, and what checking it found (nothing: it may run)."""

    text: str
    document: DocumentNode
    errors: tuple[GraphQLError, ...]
    size: int  # bytes charged to the cache


class DocumentCache:
    """Checked documents by `document_hash`, the least recently used evicted first.

    Bounded by `max_entries` and by `max_bytes` (an entry's text plus
    AST_BYTES_PER_TOKEN per token); a document larger than `max_bytes` alone is
    checked every time and never kept. One per schema, so per server process.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.validations = 0  # documents checked (a miss that parsed)
        self._entries: OrderedDict[str, Checked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Checked | None:
        """The entry for `key`, now the most recently used; None if not kept."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: str, checked: Checked) -> None:
        """Keep `checked` under `key`, evicting the least recently used beyond the bounds."""
        if checked.size > self.max_bytes or self.max_entries < 1 or key in self._entries:
            return
        self._entries[key] = checked
        self.bytes += checked.size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size


def check(schema: GraphQLSchema, document: DocumentNode,
          rules: Collection[type[ASTValidationRule]], settings: Settings) -> list[GraphQLError]:
    """The errors of `document`: over a shape limit, else GraphQL's validation errors."""
    errors = shape_errors(document, settings)
    if errors:
        return errors
    return too_many_validation_errors(validate(
        schema, document, (*rules, *_STRAWBERRY_RULES), max_errors=MAX_VALIDATION_ERRORS,
        hide_suggestions=not settings.introspection))


class Documents(SchemaExtension):
    """Parses and checks each distinct document once, in Strawberry's parse and validation steps.

    On a hit it hands Strawberry the kept parse and errors, so Strawberry skips
    both steps; on a miss it parses under `max_tokens`, checks, and keeps what it found.
    """

    def __init__(self, settings: Settings, cache: DocumentCache) -> None:
        self.settings = settings
        self.cache = cache
        self.key: str | None = None
        self.hit: Checked | None = None

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        if ec.query and ec.graphql_document is None:
            self.key = document_hash(ec.query)
            self.hit = self.cache.get(self.key)
            if self.hit is not None:
                ec.graphql_document = self.hit.document
            else:
                ec.parse_options["max_tokens"] = self.settings.max_tokens
        yield

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        if self.hit is not None:
            ec.pre_execution_errors = list(self.hit.errors)
        elif ec.graphql_document is not None and ec.pre_execution_errors is None:
            self.cache.validations += 1
            # The graphql-core schema Strawberry built: validation needs its
            # scalars' own literal parsing, which the SDL alone does not carry.
            ec.pre_execution_errors = check(ec.schema._schema, ec.graphql_document,
                                            ec.validation_rules, self.settings)
        yield
        document = ec.graphql_document
        if self.hit is None and self.key is not None and document is not None and ec.query:
            size = len(ec.query) + AST_BYTES_PER_TOKEN * token_count(document)
            self.cache.put(self.key, Checked(ec.query, document,
                                             tuple(ec.pre_execution_errors or ()), size))
