"""Request bodies of the batch methods, checked as Taskcluster's input schemas check them.

The reports name the place and the problem the way Taskcluster's schema validator does
(`data/taskIds must be array`); a missing list is the empty list, as the schemas'
defaults make it.
"""

from __future__ import annotations

from tcgraph.api.rest.endpoint import Call
from tcgraph.api.rest.errors import ApiError
from tcgraph.errors import LimitExceeded, check_key_count


def body_object(call: Call, service: str, schema: str, allowed: set[str]) -> dict[str, object]:
    """The body, which must be an object with only `allowed` keys."""
    body = call.payload
    if not isinstance(body, dict):
        raise call.schema_error(service, schema, "data must be object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise call.schema_error(service, schema, *(
            f"data must NOT have additional properties ({name!r} is not one of "
            f"{', '.join(sorted(allowed))})" for name in unknown))
    return body


def key_list(call: Call, service: str, schema: str, body: dict[str, object],
             field: str) -> list[str]:
    """The body's list of keys (strings), as given: repeats and all."""
    values = body.get(field, [])
    if not isinstance(values, list):
        raise call.schema_error(service, schema, f"data/{field} must be array")
    wrong = [f"data/{field}/{i} must be string" for i, v in enumerate(values)
             if not isinstance(v, str)]
    if wrong:
        raise call.schema_error(service, schema, *wrong[:10])
    try:
        check_key_count(field, len(values), call.context.settings.max_keys)
    except LimitExceeded as error:
        raise ApiError("InputError", error.message) from None
    return values
