from services.postgres import connected
from tcgraph.store.migrate import migrate, migrations


async def test_migrations_are_recorded_and_run_once(database_url: str) -> None:
    async with connected(database_url) as conn:
        # The fixture's template already ran them: a second run applies nothing.
        assert await migrate(conn) == []
        versions = [r["version"] for r in await conn.fetch(
            "SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [v for v, _ in migrations()]
        tables = {r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"tasks", "task_dependencies", "index_entries", "index_namespaces"} <= tables


async def test_migrate_on_an_empty_database_applies_everything(database_url: str) -> None:
    async with connected(database_url) as conn:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        applied = await migrate(conn)
        assert applied == [v for v, _ in migrations()]
        assert await conn.fetchval("SELECT count(*) FROM tasks") == 0
