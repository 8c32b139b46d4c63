"""The `tcgraph` command: serve, migrate, import, expire, demo, schema."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import asyncpg

from tcgraph import __version__, logs
from tcgraph.config import Settings
from tcgraph.store.embedded import EmbeddedPostgres
from tcgraph.store.migrate import migrate
from tcgraph.store.pool import CONNECTION_ERRORS

log = logging.getLogger("tcgraph")


def _database_options(parser: argparse.ArgumentParser) -> None:
    _output_options(parser)
    parser.add_argument("--database-url", help="PostgreSQL URL (env TCGRAPH_DATABASE_URL); "
                        "without one, an embedded PostgreSQL runs in --data-dir")
    parser.add_argument("--data-dir", type=Path,
                        help="where the embedded PostgreSQL keeps its data (env TCGRAPH_DATA_DIR; "
                             "default: a per-user data directory)")


def _follow_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pulse-url", default=os.environ.get("TCGRAPH_PULSE_URL"),
                        help="amqps://user:password@host:5671/vhost (env TCGRAPH_PULSE_URL)")
    parser.add_argument("--queue-name", default="tcgraph",
                        help="the durable queue, queue/<user>/<name> (default: tcgraph)")
    parser.add_argument("--binding", action="append", default=[], metavar="[EXCHANGE=]PATTERN",
                        help="a routing-key pattern, for one exchange (task-completed=...) or "
                             "every task exchange (repeatable; default: everything)")
    parser.add_argument("--no-backfill", action="store_true",
                        help="do not backfill task groups seen for the first time")
    parser.add_argument("--expire-every", type=float, default=3600.0, metavar="SECONDS",
                        help="delete what expired this often, as `tcgraph expire` does "
                             "(default 3600; 0 never)")
    parser.add_argument("--keep-per-label", type=int, metavar="N",
                        help="when expiring, also trim each label's history to the last "
                             "success, the last failure and the N newest")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="messages written in one transaction, at most (default 1000)")


def _follow_settings(args: argparse.Namespace, root_url: str | None) -> object:
    """The FollowOptions the arguments ask for; ValueError names what is missing."""
    from tcgraph.ingest.follow import FollowOptions
    from tcgraph.ingest.pulse import PulseOptions, bindings, queue_name

    if not root_url:
        raise ValueError("the deployment's root URL is required (--root-url)")
    if not args.pulse_url:
        raise ValueError("the pulse URL is required (--pulse-url or TCGRAPH_PULSE_URL)")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    return FollowOptions(
        root_url=root_url, backfill=not args.no_backfill, expire_every_s=args.expire_every,
        keep_per_label=args.keep_per_label,
        pulse=PulseOptions(url=args.pulse_url,
                           queue_name=queue_name(args.pulse_url, args.queue_name),
                           bindings=bindings(args.binding), batch_size=args.batch_size,
                           prefetch=max(4 * args.batch_size, 100)))


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=None,
                        help="say more: -v adds uvicorn's and embedded PostgreSQL's messages, "
                             "-vv debug output")
    parser.add_argument("--log-format", choices=("text", "json"),
                        help="text (default) or json: one object per line with the request id, "
                             "route, status, duration and SQL counts (env TCGRAPH_LOG_FORMAT)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcgraph", description="A GraphQL gateway for CI task data.")
    parser.add_argument("--version", action="version", version=f"tcgraph {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = verbs.add_parser("serve", help="serve GraphQL over HTTP",
                             description="Migrate the database, fill an empty one with demo data "
                                         "(embedded default, or --demo), and serve /graphql.")
    _database_options(serve)
    serve.add_argument("--read-database-url",
                       help="serve reads from this URL (a replica or read-only role; env "
                            "TCGRAPH_READ_DATABASE_URL); migrations use --database-url")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--header-timeout-ms", type=int,
                       help="close a connection whose request headers take longer (env "
                            "TCGRAPH_HEADER_TIMEOUT_MS; default 10000)")
    serve.add_argument("--body-timeout-ms", type=int,
                       help="refuse a request whose body takes longer after its headers (env "
                            "TCGRAPH_BODY_TIMEOUT_MS; default 60000)")
    serve.add_argument("--send-timeout-ms", type=int,
                       help="drop a connection whose client stops reading an answer for longer "
                            "(env TCGRAPH_SEND_TIMEOUT_MS; default 60000)")
    serve.add_argument("--max-connections", type=int,
                       help="open connections per server process; more are refused (env "
                            "TCGRAPH_MAX_CONNECTIONS; default 1000)")
    serve.add_argument("--workers", type=int,
                       help="server processes (env TCGRAPH_WORKERS; default 1)")
    serve.add_argument("--demo", action="store_true", default=None,
                       help="fill an empty database with demo data (always on for the embedded default)")
    serve.add_argument("--explain", action="store_true", default=None,
                       help="report extensions.sql = {statements, rows, ms} in every response "
                            "(env TCGRAPH_EXPLAIN=1)")
    serve.add_argument("--follow", action="store_true",
                       help="run `tcgraph follow` in the serving process (one worker)")
    # TCGRAPH_ROOT_URL is tcgraph's own public root URL when serving.
    serve.add_argument("--upstream-root-url", default=os.environ.get("TCGRAPH_UPSTREAM_ROOT_URL"),
                       help="with --follow: the deployment's root URL "
                            "(env TCGRAPH_UPSTREAM_ROOT_URL)")
    _follow_options(serve)

    migrate_ = verbs.add_parser("migrate", help="apply pending database migrations",
                                description="Apply pending migrations, each exactly once.")
    _database_options(migrate_)

    import_ = verbs.add_parser(
        "import", help="import Taskcluster JSON / JSON Lines dumps",
        description="Import queue.listTaskGroup pages, queue.task/status responses, queue.tasks/"
                    "statuses batch responses and index entries. Each file is one transaction: "
                    "on bad input or a database fault nothing from that file is written, the "
                    "files after it are not attempted (unless --keep-going), and the command "
                    "fails. Each file's outcome is reported on stderr.")
    _database_options(import_)
    import_.add_argument("paths", nargs="+", metavar="PATH", help="a file, or - for stdin")
    import_.add_argument("--keep-going", action="store_true",
                         help="after a file fails, import the files after it all the same")

    expire = verbs.add_parser(
        "expire", help="delete expired tasks, index entries and namespaces",
        description="Delete tasks, index entries and namespaces past their expires, in "
                    "bounded batches, as Taskcluster does; optionally trim each label's history.")
    _database_options(expire)
    expire.add_argument("--keep-per-label", type=int, metavar="N",
                        help="per label and project, keep the last success, the last failure "
                             "and the N newest resolved tasks; delete older resolved ones")

    demo = verbs.add_parser("demo", help="write a synthetic dataset",
                            description="Write a deterministic synthetic dataset.")
    _database_options(demo)
    demo.add_argument("--tasks", type=int, default=2000, help="number of tasks (default 2000)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default 1)")

    follow = verbs.add_parser(
        "follow", help="mirror a live Taskcluster deployment through its pulse exchanges",
        description="Consume the queue's pulse exchanges into the database (one transaction a "
                    "batch, acknowledged after commit), fetch new tasks' definitions from the "
                    "deployment's REST API and build its index, until stopped.")
    _database_options(follow)
    follow.add_argument("--root-url", default=os.environ.get("TCGRAPH_ROOT_URL"),
                        help="the deployment's root URL (env TCGRAPH_ROOT_URL)")
    _follow_options(follow)

    backfill = verbs.add_parser(
        "backfill", help="copy task groups and index subtrees from a deployment's REST API",
        description="Read listTaskGroup pages and walk listNamespaces/listTasks into the "
                    "database, through the same write path as follow.")
    _database_options(backfill)
    backfill.add_argument("--root-url", default=os.environ.get("TCGRAPH_ROOT_URL"),
                          help="the deployment's root URL (env TCGRAPH_ROOT_URL)")
    backfill.add_argument("--task-group", action="append", default=[], metavar="ID",
                          help="a task group to copy (repeatable)")
    backfill.add_argument("--index", action="append", default=[], metavar="NAMESPACE",
                          help="an index namespace to copy, with everything below it (repeatable)")

    schema = verbs.add_parser("schema", help="print the GraphQL schema (SDL)",
                              description="Print the schema; schema.graphql is this output.")
    _output_options(schema)
    return parser


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded PostgreSQL for as long as needed."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


class ReadOnlyDatabase(Exception):
    """The database URL given for writing is a hot standby or a read-only role."""

    def explain(self, verb: str) -> str:
        return (f"tcgraph {verb}: the database at --database-url refuses writes ({self}): it is "
                f"a hot standby or a read-only role. Migrations, imports and follow write to "
                f"the primary: give the primary's URL as --database-url (and a standby's as "
                f"serve --read-database-url)")


async def _migrate(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    except asyncpg.ReadOnlySQLTransactionError as e:
        raise ReadOnlyDatabase(str(e)) from None
    finally:
        await conn.close()


async def _fill_if_empty(url: str, settings: Settings) -> bool:
    from tcgraph.demo import write_demo
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM tasks) "
                               "OR EXISTS (SELECT 1 FROM mirror_state)"):
            return False
        await write_demo(pool)
        return True
    finally:
        await pool.close()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (as uvicorn will), or None if it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


@contextlib.contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    """With several workers, a directory where they keep the metrics /metrics sums.

    prometheus-client reads PROMETHEUS_MULTIPROC_DIR when it is imported, so
    this runs before anything imports tcgraph.metrics. A directory the
    operator gave is used as it is and kept.
    """
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="tcgraph-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _serve(settings: Settings, follow: object | None) -> int:
    busy = _port_in_use(settings.host, settings.port)
    if busy:
        print(f"tcgraph: cannot listen on {settings.host}:{settings.port}: {busy} "
              f"(is another server running? choose another --port)", file=sys.stderr)
        return 1
    with _metrics_dir(settings.workers):
        return _run_server(settings, follow)


def _run_server(settings: Settings, follow: object | None) -> int:
    import uvicorn

    from tcgraph.http_server import uvicorn_options
    from tcgraph.server import create_app

    with _database(settings) as url:
        try:
            applied = asyncio.run(_migrate(url))
        except CONNECTION_ERRORS as e:
            print(f"tcgraph serve: cannot reach the database ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return 1
        except ReadOnlyDatabase as e:
            print(e.explain("serve"), file=sys.stderr)
            return 1
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        # A database that is, or is about to be, a mirror never gets demo data.
        if (settings.demo or not settings.database_url) and follow is None:
            if asyncio.run(_fill_if_empty(url, settings)):
                log.info("the database was empty: wrote the demo dataset")
        print(f"tcgraph: open http://{settings.host}:{settings.port}/graphql", file=sys.stderr)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the
        # signal again; ours turns that into a normal exit so the embedded
        # PostgreSQL is stopped on the way out instead of being left running.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_on_signal)
        # tcgraph's logging, not uvicorn's (log_config=None), and tcgraph's
        # access line (metrics.Observe) instead of uvicorn's.
        options: dict[str, Any] = dict(
            host=settings.host, port=settings.port, log_config=None,
            log_level=logs.uvicorn_level(settings.verbose), access_log=False,
            lifespan="on", **uvicorn_options(settings))
        if settings.workers == 1:
            app = create_app(settings, settings.read_database_url or url,
                             follow=follow, write_database_url=url)  # type: ignore[arg-type]
            uvicorn.run(app, **options)
        else:
            # Worker processes build their own app (and logging) from the environment.
            os.environ.update(settings.with_(database_url=url).to_env())
            uvicorn.run("tcgraph.server:app_from_environment", factory=True,
                        workers=settings.workers, **options)
    return 0


async def _import(url: str, settings: Settings, paths: Sequence[str], keep_going: bool) -> int:
    from tcgraph.ingest.files import ImportFailed, import_source
    from tcgraph.store.pool import open_pool

    def say(text: str) -> None:
        print(f"tcgraph import: {text}", file=sys.stderr)

    try:
        pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=1))
    except CONNECTION_ERRORS as e:
        say(f"cannot reach the database ({type(e).__name__}: {e}): nothing was imported")
        return 1
    failed = 0
    try:
        for number, path in enumerate(paths):
            try:
                summary = await import_source(pool, path, progress=True)
            except ImportFailed as e:
                say(f"{e} (nothing from this file was written)")
            except OSError as e:
                say(f"{path}: {e.strerror or e} (nothing from this file was written)")
            else:
                say(f"{summary.source}: committed: {summary.tasks} tasks, {summary.statuses} "
                    f"statuses, {summary.index_entries} index entries")
                continue
            failed += 1
            if not keep_going:
                for skipped in paths[number + 1:]:
                    say(f"{skipped}: not attempted, as an earlier file failed "
                        "(--keep-going imports it all the same)")
                break
    finally:
        await pool.close()
    return 1 if failed else 0


async def _expire(url: str, settings: Settings, keep_per_label: int | None) -> int:
    from tcgraph.ingest.expire import expire
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        done = await expire(pool, keep_per_label=keep_per_label)
    finally:
        await pool.close()
    trimmed = (f", {done.trimmed} tasks trimmed from label history"
               if keep_per_label is not None else "")
    print(f"expired: {done.tasks} tasks, {done.index_entries} index entries, "
          f"{done.namespaces} namespaces{trimmed}", file=sys.stderr)
    return 0


async def _demo(url: str, settings: Settings, tasks: int, seed: int) -> None:
    from tcgraph.demo import examples, write_demo
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        summary = await write_demo(pool, tasks=tasks, seed=seed)
    finally:
        await pool.close()
    found = examples(tasks, seed)
    print(f"demo: {summary.tasks} tasks, {summary.index_entries} index entries\n"
          f"  a completed build-linux64/opt task: {found.task_id}\n"
          f"  a task group with failed tasks:     {found.task_group_id}\n"
          f"  a label with successes and failures: {found.label}\n"
          f"  a cached toolchain's index path:    {found.cached_path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tcgraph` console script."""
    args = _parser().parse_args(argv)
    logs.configure(getattr(args, "verbose", None) or 0, getattr(args, "log_format", None) or "text")
    if args.verb == "schema":
        from tcgraph.api.schema import sdl

        sys.stdout.write(sdl())
        return 0
    try:
        settings = Settings.from_env(
            database_url=args.database_url, data_dir=args.data_dir,
            read_database_url=getattr(args, "read_database_url", None),
            host=getattr(args, "host", None), port=getattr(args, "port", None),
            header_timeout_ms=getattr(args, "header_timeout_ms", None),
            body_timeout_ms=getattr(args, "body_timeout_ms", None),
            max_connections=getattr(args, "max_connections", None),
            send_timeout_ms=getattr(args, "send_timeout_ms", None),
            workers=getattr(args, "workers", None),
            demo=getattr(args, "demo", None), explain=getattr(args, "explain", None),
            log_format=getattr(args, "log_format", None), verbose=getattr(args, "verbose", None),
        )
    except ValueError as e:
        print(f"tcgraph: {e}", file=sys.stderr)
        return 2
    logs.configure(settings.verbose, settings.log_format)
    follow_options = None
    if args.verb == "follow" or (args.verb == "serve" and args.follow):
        try:
            follow_options = _follow_settings(
                args, args.root_url if args.verb == "follow" else args.upstream_root_url)
        except ValueError as e:
            print(f"tcgraph {args.verb}: {e}", file=sys.stderr)
            return 2
    if args.verb == "backfill" and (not args.root_url or not (args.task_group or args.index)):
        print("tcgraph backfill: --root-url and at least one --task-group or --index are "
              "required", file=sys.stderr)
        return 2
    if args.verb == "serve":
        if follow_options is not None and settings.workers != 1:
            print("tcgraph serve: --follow runs in one server process (--workers 1)",
                  file=sys.stderr)
            return 2
        return _serve(settings, follow_options)
    if getattr(args, "keep_per_label", None) is not None and args.keep_per_label < 0:
        print(f"tcgraph {args.verb}: --keep-per-label must be at least 0", file=sys.stderr)
        return 2
    with _database(settings) as url:
        try:
            applied = asyncio.run(_migrate(url))
        except CONNECTION_ERRORS as e:
            print(f"tcgraph {args.verb}: cannot reach the database ({type(e).__name__}: {e})",
                  file=sys.stderr)
            return 1
        except ReadOnlyDatabase as e:
            print(e.explain(args.verb), file=sys.stderr)
            return 1
        if args.verb == "migrate":
            print(f"applied: {', '.join(applied)}" if applied else "up to date", file=sys.stderr)
            return 0
        if args.verb == "import":
            return asyncio.run(_import(url, settings, args.paths, args.keep_going))
        if args.verb == "expire":
            return asyncio.run(_expire(url, settings, args.keep_per_label))
        if args.verb == "demo":
            if args.tasks < 1:
                print("tcgraph demo: --tasks must be at least 1", file=sys.stderr)
                return 2
            asyncio.run(_demo(url, settings, args.tasks, args.seed))
            return 0
        if args.verb == "follow":
            from tcgraph.ingest.follow import run

            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _exit_on_signal)
            asyncio.run(run(url, settings, follow_options))  # type: ignore[arg-type]
            return 0
        if args.verb == "backfill":
            from tcgraph.ingest.backfill import run as run_backfill

            asyncio.run(run_backfill(url, settings, args.root_url, args.task_group, args.index))
            return 0
    raise AssertionError(f"unhandled verb {args.verb}")


if __name__ == "__main__":
    sys.exit(main())
