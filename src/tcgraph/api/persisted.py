"""Automatic Persisted Queries, as Apollo clients send them (GET or POST).

A request may carry `extensions.persistedQuery = {"version": 1, "sha256Hash": h}`
with `h` the SHA-256 (lowercase hex) of its document. Without a `query`, the
document is the one this server process has seen under `h` (api/documents.py
keeps every document it parsed, by that same hash, in a cache bounded in
entries and bytes); if it has none, the answer is the error
`PERSISTED_QUERY_NOT_FOUND`, and the client sends the request again with its
`query`, which is then kept. A `query` whose hash is not `h` is refused.
"""

from __future__ import annotations

import re
from dataclasses import replace

from strawberry.http import GraphQLRequestData

from tcgraph.api.documents import DocumentCache, document_hash

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PersistedQueryError(Exception):
    """A persisted-query request that cannot run as sent: its message and code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def resolve(request: GraphQLRequestData, documents: DocumentCache) -> GraphQLRequestData:
    """`request` with its document, when it names one by hash; PersistedQueryError if it cannot."""
    persisted = (request.extensions or {}).get("persistedQuery")
    if persisted is None:
        return request
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise PersistedQueryError(
            "extensions.persistedQuery: only version 1 ({\"version\": 1, \"sha256Hash\": "
            "...}) is supported", NOT_SUPPORTED)
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise PersistedQueryError(
            "extensions.persistedQuery.sha256Hash must be a SHA-256 in lowercase hex "
            "(64 characters)", NOT_SUPPORTED)
    if request.query is None:
        found = documents.get(digest)
        if found is None:
            # Apollo clients look for this message (and this code) to send the query.
            raise PersistedQueryError("PersistedQueryNotFound", NOT_FOUND)
        return replace(request, query=found.text)
    if document_hash(request.query) != digest:
        raise PersistedQueryError(
            "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query sent",
            HASH_MISMATCH)
    return request
