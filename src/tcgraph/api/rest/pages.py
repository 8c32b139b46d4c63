"""Pages as Taskcluster gives them: `limit` results, then a `continuationToken` if more follow.

A client that follows the tokens gets what Taskcluster gives: full pages until the last,
no token on the last page (also when the count is a multiple of `limit`), `limit=0` an
empty page without a token. The tokens are tcgraph's own, stateless and opaque: a list's
token is the position after the page's last row (a keyset position, so a page is one
index scan however deep it is), a batch's token the offset of its next key. They are
made of letters and digits, as Taskcluster's are, and read as Taskcluster reads its
own: a token with any other character is refused, one that decodes to nothing starts
from the beginning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from collections.abc import Awaitable, Callable, Hashable, Sequence

from aiodataloader import DataLoader

from tcgraph.api.rest.endpoint import Call
from tcgraph.api.rest.errors import ApiError
from tcgraph.model import Page

T = TypeVar("T")

_TOKEN = re.compile(r"[A-Za-z0-9]+")
# Digits of a batch offset: few enough that int() is cheap.
_OFFSET = re.compile(r"[0-9]{1,9}")
# Keys looked at past a full page to learn whether another page follows: few at first
# (the next key usually exists), doubling while they are all unknown.
_FIRST_LOOKAHEAD = 8


def encode_token(position: str) -> str:
    """The continuation token for the page that starts after `position`."""
    return position.encode().hex()


def decode_token(token: str | None) -> str | None:
    """The position a token stands for; None for the first page."""
    if token is None:
        return None
    if not _TOKEN.fullmatch(token):
        raise ApiError("InputError", "Invalid continuation token")
    try:
        position = bytes.fromhex(token).decode()
    except ValueError:
        return None
    # A token no page handed out is the first page, as Taskcluster answers it
    # (the recording shows it); a NUL, which no stored key holds, included.
    return None if "\x00" in position else position


@dataclass(frozen=True)
class Listing(Generic[T]):
    """One page of a list, and the token of the next one."""

    rows: Sequence[T]
    continuation_token: str | None

    def reply(self, body: dict[str, object]) -> dict[str, object]:
        """`body`, with `continuationToken` when another page follows."""
        if self.continuation_token is not None:
            body["continuationToken"] = self.continuation_token
        return body


async def listing(call: Call, loader: DataLoader[Any, Any], parent: str,
                  position_of: Callable[[Any], str]) -> Listing[Any]:
    """The page of `parent`'s list that the call asks for, from a (parent, after, limit) loader."""
    if call.limit == 0:
        return Listing((), None)
    after = decode_token(call.continuation_token)
    page: Page = await loader.load((parent, after, call.limit))
    token = encode_token(position_of(page.rows[-1])) if page.has_next and page.rows else None
    return Listing(page.rows, token)


@dataclass(frozen=True)
class Found(Generic[T]):
    """A key that matched, and what it matched."""

    key: str
    value: T


async def found_page(call: Call, keys: Sequence[str],
                     load: Callable[[Sequence[str]], Awaitable[Sequence[T | None]]]
                     ) -> Listing[Found[T]]:
    """The page of a batch lookup: the first `limit` keys from the token's offset that match.

    Keys that match nothing are left out without shortening the page. `load` answers a
    slice of keys (None for no match); it is called for the page's keys at once, and again
    only for keys past them while fewer than `limit + 1` have matched.
    """
    if call.limit == 0:
        return Listing((), None)
    position = decode_token(call.continuation_token)
    start = int(position) if position is not None and _OFFSET.fullmatch(position) else 0
    found: list[tuple[int, Found[T]]] = []
    offset = start
    lookahead = 0  # none on the first pass: it loads the page's own keys
    while offset < len(keys) and len(found) <= call.limit:
        chunk = keys[offset:offset + max(call.limit + 1 - len(found), lookahead)]
        for i, (key, value) in enumerate(zip(chunk, await load(chunk), strict=False)):
            if value is not None:
                found.append((offset + i, Found(key, value)))
        offset += len(chunk)
        lookahead = min(max(2 * lookahead, _FIRST_LOOKAHEAD), call.limit + 1)
    if len(found) > call.limit:
        next_offset = found[call.limit][0]
        return Listing([f for _, f in found[:call.limit]], encode_token(str(next_offset)))
    return Listing([f for _, f in found], None)


def loading(call: Call, loader: DataLoader[Any, Any],
            key_of: Callable[[str], Hashable] = lambda key: key
            ) -> Callable[[Sequence[str]], Awaitable[Sequence[Any]]]:
    """`found_page`'s `load` through one of the request's loaders."""

    async def load(keys: Sequence[str]) -> Sequence[Any]:
        return list(await loader.load_many([key_of(key) for key in keys]))

    return load
