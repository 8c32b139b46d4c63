"""The shapes and limits of the keys tcgraph is asked about: one home for each.

Task ids, index paths and namespaces are checked against Taskcluster's own
patterns (its queue's and index's schemas, `slugid-pattern` and the index's
`[a-zA-Z0-9_!~*'()%-]` names joined by dots); lists of keys are bounded by
`max_keys` (errors.check_key_count applies it). This module imports nothing
but the standard library, so `tcgraph.client` (copied into other projects)
and the write side import it as freely as the API.
"""

from __future__ import annotations

import re

# Keys in one list argument (GraphQL `taskIds`, `labels`, `indexPaths`; REST
# batch bodies): the server's default `max_keys`, and the most a client sends
# in one document unless told otherwise.
DEFAULT_MAX_KEYS = 10_000
# Items in one page (`first`, REST `limit`): the server's default `max_page_size`,
# Taskcluster's own page size for its batch and list methods.
DEFAULT_MAX_PAGE_SIZE = 1_000
# A task's `dependencies` may list at most this many task ids (the queue's
# `max-task-dependencies`).
MAX_TASK_DEPENDENCIES = 10_000

# Taskcluster's `slugid-pattern` (a v4 UUID, URL-safe base64 without padding),
# as its schemas and its API library's path checks write it.
SLUGID_PATTERN = (r"^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-]"
                  r"[A-Za-z0-9_-]{10}[AQgw]$")
SLUGID = re.compile(SLUGID_PATTERN)

# One name of an index path; a path is names joined by dots.
_INDEX_NAME = r"[a-zA-Z0-9_!~*'()%-]+"
INDEX_PATH_PATTERN = rf"^({_INDEX_NAME}\.)*{_INDEX_NAME}$"
INDEX_PATH = re.compile(INDEX_PATH_PATTERN)
# A namespace to list may also be the root, "".
NAMESPACE_PATTERN = rf"^(({_INDEX_NAME}\.)*{_INDEX_NAME})?$"
NAMESPACE = re.compile(NAMESPACE_PATTERN)

