"""store/sqlfrag.py: text becomes SQL only as what its constructor says it is."""

from __future__ import annotations

import asyncpg
import pytest

from tcgraph.store.sqlfrag import SqlFragment, Template, identifier, join, literal, param, raw

HOSTILE = "x'); DROP TABLE tasks; -- \" {row} {{json}} $1 \\"


def test_literals_and_identifiers_are_quoted() -> None:
    assert literal("it's").render() == "'it''s'"
    assert literal(HOSTILE).render() == "'" + HOSTILE.replace("'", "''") + "'"
    assert literal(12).render() == "12" and literal(True).render() == "TRUE"
    assert literal(None).render() == "NULL"
    assert identifier('a"b').render() == '"a""b"'
    assert param(3).render() == "$3"
    with pytest.raises(ValueError):
        literal("nul\x00")
    with pytest.raises(ValueError):
        identifier("nul\x00")
    with pytest.raises(ValueError):
        param(0)


def test_templates_take_fragments_only_and_never_read_a_value_as_a_template() -> None:
    template = Template("SELECT {value} AS {name} -- {{braces}}")
    assert template.names == {"value", "name"}
    filled = template(value=literal("{name}"), name=identifier("{value}"))
    assert filled.render() == """SELECT '{name}' AS "{value}" -- {braces}"""
    with pytest.raises(TypeError):
        template(value="1; DROP TABLE tasks", name=identifier("n"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        template(value=literal(1))  # a slot left empty
    with pytest.raises(ValueError):
        Template("{value!r}")


def test_fragments_compose_and_compare_by_their_sql() -> None:
    parts = join([literal("a"), raw("1"), identifier("b")])
    assert parts.render() == """'a', 1, "b\""""
    assert parts == SqlFragment((raw("'a'"), ", 1, ", raw('"b"')))
    assert len({parts, join([literal("a"), raw("1"), identifier("b")])}) == 1
    deep = literal(0)
    for _ in range(5_000):  # rendered without recursion, however deep
        deep = Template("({inner})")(inner=deep)
    assert deep.render() == "(" * 5_000 + "0" + ")" * 5_000


async def test_postgresql_reads_a_hostile_literal_and_identifier_as_values(
        pool: asyncpg.Pool) -> None:
    statement = Template("SELECT {value} AS {name}")(value=literal(HOSTILE),
                                                     name=identifier(HOSTILE)).render()
    async with pool.acquire() as conn:
        record = await conn.fetchrow(statement)
        assert dict(record) == {HOSTILE: HOSTILE}
        assert await conn.fetchval("SELECT to_regclass('tasks') IS NOT NULL")
