"""SQL assembled from typed pieces, rendered once (graphile's pg-sql2 is the model).

Text becomes SQL only through one of these constructors, each saying what the
text is:

- `raw`: SQL the code itself wrote (statement and field templates); never a
  value from a request;
- `literal`: a value written as an SQL constant (a string quoted with its
  quotes doubled, an integer as its digits);
- `identifier`: a name quoted as PostgreSQL quotes identifiers;
- `param`: the placeholder `$n` of a statement's n-th parameter.

`Template` is raw SQL with `{name}` slots that only fragments may fill (never a
`str`), so a value never passes through `str.format` twice and a GraphQL alias,
field or type name can only reach a statement as a literal or an identifier.
A fragment is a tree of pieces; `render` joins it once.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

_FORMATTER = string.Formatter()


class SqlFragment:
    """A piece of SQL: text made safe by the constructor that built it, or other fragments.

    Equal (and hashing alike) when it renders to the same SQL.
    """

    __slots__ = ("_parts", "_text")

    def __init__(self, parts: tuple[str | SqlFragment, ...]) -> None:
        # Use the module's constructors: a `str` part is SQL as it stands.
        self._parts = parts
        self._text: str | None = None

    def render(self) -> str:
        """The SQL text (computed once)."""
        if self._text is None:
            out: list[str] = []
            stack: list[str | SqlFragment] = [self]
            while stack:
                part = stack.pop()
                if isinstance(part, str):
                    out.append(part)
                elif part._text is not None:
                    out.append(part._text)
                else:
                    stack.extend(reversed(part._parts))
            self._text = "".join(out)
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SqlFragment) and self.render() == other.render()

    def __hash__(self) -> int:
        return hash(self.render())

    def __repr__(self) -> str:
        return f"SqlFragment({self.render()!r})"


def raw(text: str) -> SqlFragment:
    """SQL written in this code base, as it stands. Never pass it a value from a request."""
    return SqlFragment((text,))


def _no_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise ValueError(f"an SQL {what} cannot hold U+0000")
    return text


def literal(value: str | int | bool | None) -> SqlFragment:
    """`value` as an SQL constant: 'text' (quotes doubled), digits, TRUE/FALSE or NULL."""
    if value is None:
        return raw("NULL")
    if isinstance(value, bool):
        return raw("TRUE" if value else "FALSE")
    if isinstance(value, int):
        return raw(str(value))
    # standard_conforming_strings (on since PostgreSQL 9.1): a backslash is itself.
    return raw("'" + _no_nul(value, "literal").replace("'", "''") + "'")


def identifier(name: str) -> SqlFragment:
    """`name` as a quoted identifier ("..." with quotes doubled)."""
    return raw('"' + _no_nul(name, "identifier").replace('"', '""') + '"')


def param(number: int) -> SqlFragment:
    """The placeholder of a statement's parameter `number` (from 1)."""
    if number < 1:
        raise ValueError(f"parameters are numbered from 1, not {number}")
    return raw(f"${number}")


def join(parts: Iterable[SqlFragment], separator: str = ", ") -> SqlFragment:
    """`parts` one after another, `separator` (raw SQL) between them."""
    joined: list[str | SqlFragment] = []
    for part in parts:
        if joined:
            joined.append(separator)
        joined.append(part)
    return SqlFragment(tuple(joined))


class Template:
    """Raw SQL with `{name}` slots (and `{{` / `}}` for braces), filled with fragments only."""

    __slots__ = ("_pieces", "names")

    def __init__(self, text: str) -> None:
        pieces: list[tuple[str, str | None]] = []
        for before, name, spec, conversion in _FORMATTER.parse(text):
            if spec or conversion:
                raise ValueError(f"slot {{{name}}} of an SQL template takes no format")
            if name is not None and not name.isidentifier():
                raise ValueError(f"slot {{{name}}} of an SQL template is no plain name")
            pieces.append((before, name))
        self._pieces = tuple(pieces)
        self.names = frozenset(name for _, name in pieces if name is not None)

    def __call__(self, **values: SqlFragment) -> SqlFragment:
        """The template with every slot filled (values for slots it lacks are ignored)."""
        parts: list[str | SqlFragment] = []
        for before, name in self._pieces:
            if before:
                parts.append(before)
            if name is not None:
                value = values.get(name)
                if not isinstance(value, SqlFragment):
                    raise TypeError(f"slot {{{name}}} takes an SqlFragment, "
                                    f"got {type(value).__name__}")
                parts.append(value)
        return SqlFragment(tuple(parts))
