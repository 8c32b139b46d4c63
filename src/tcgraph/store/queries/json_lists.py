"""Answering several key lists in one statement, each list as one JSON array built in PostgreSQL.

The statements that use this take `$1::int[]` (which list each key belongs
to), `$2::int[]` (which of the statement's shapes answers it), then the keys;
they unnest them `WITH ORDINALITY AS k(list, shape, ..., ord)` and
`GROUP BY k.list` around `{values}`: per shape, a JSON array of every key's
answer in order (`json_agg ... FILTER`), so lists asked with different
selections still share one statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from tcgraph.store.pool import Database
from tcgraph.store.sqlfrag import SqlFragment, Template, identifier, join, literal


@dataclass(frozen=True, slots=True)
class KeyList:
    """One list of keys: its values per key column, and the index of its shape."""

    columns: Sequence[Sequence[str]]
    shape: int


# One JSON array per shape, of the answers of the keys asked with it.
_VALUES = Template("json_agg(CASE WHEN {found} IS NULL THEN NULL ELSE {shape} END ORDER BY k.ord) "
                   "FILTER (WHERE k.shape = {number})::text AS {column}")


async def fetch_lists(
    db: Database, template: Template, found: SqlFragment, shapes: Sequence[SqlFragment],
    key_lists: Sequence[KeyList], *extra: object,
) -> list[str]:
    """For each list of keys, the JSON text of its array of answers.

    Each answer is `shapes[list.shape]` over the key's row, or null where the
    `found` column is null (no row); `extra` parameters follow the key columns.
    """
    values = join(_VALUES(found=found, shape=shape, number=literal(number),
                          column=identifier(f"json{number}"))
                  for number, shape in enumerate(shapes))
    statement = template(values=values).render()
    width = len(key_lists[0].columns) if key_lists else 0
    numbers: list[int] = []
    shape_numbers: list[int] = []
    flat: list[list[str]] = [[] for _ in range(width)]
    for number, key_list in enumerate(key_lists):
        count = len(key_list.columns[0])
        numbers.extend([number] * count)
        shape_numbers.extend([key_list.shape] * count)
        for column, given in zip(flat, key_list.columns, strict=False):
            column.extend(given)
    answers = ["[]"] * len(key_lists)
    for row in await db.fetch(statement, numbers, shape_numbers, *flat, *extra):
        number = row["list"]
        answers[number] = row[f"json{key_lists[number].shape}"]
    return answers
