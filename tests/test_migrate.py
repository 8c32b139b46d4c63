from services.postgres import connected
from tcgraph.store.migrate import migrate, migrations


async def test_migrations_are_recorded_and_run_once(database_url: str) -> None:
    async with connected(database_url) as conn:
        # The fixture's template already ran them: a second run applies nothing.
        assert await migrate(conn) == []
        versions = [r["version"] for r in await conn.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in migrations()]
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"tasks", "task_dependencies", "index_entries", "index_namespaces"} <= tables


async def test_migrate_on_an_empty_database_applies_everything(database_url: str) -> None:
    async with connected(database_url) as conn:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        applied = await migrate(conn)
        assert applied == [m.version for m in migrations()]
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0


async def test_dry_run_says_what_each_pending_migration_does_and_applies_nothing(
        database_url: str, capsys) -> None:
    import asyncio

    from tcgraph.cli import main

    async with connected(database_url) as conn:
        await conn.execute("DELETE FROM schema_migrations WHERE version >= '0014'")
        await conn.execute("DROP INDEX tasks_expires_task_id")
    assert await asyncio.to_thread(main, ["migrate", "--dry-run", "--database-url",
                                          database_url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("0014_tasks_expires_task_id: outside a transaction")
    assert "SHARE UPDATE EXCLUSIVE on tasks: reads and writes go on" in out
    assert "0015_expiry_upkeep" in out and "0001_init" not in out
    async with connected(database_url) as conn:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations "
                                   "WHERE version >= '0014'") == 0
        assert await conn.fetchval("SELECT to_regclass('tasks_expires_task_id')") is None
