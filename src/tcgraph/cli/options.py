"""The command line's words: every verb's arguments, in one parser."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tcgraph import __version__

if TYPE_CHECKING:
    from tcgraph.ingest.follow import FollowOptions


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


def follow_settings(args: argparse.Namespace, root_url: str | None) -> FollowOptions:
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


def build_parser() -> argparse.ArgumentParser:
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
    migrate_.add_argument("--dry-run", action="store_true",
                          help="apply nothing: print each pending migration, whether it runs "
                               "in a transaction, and the locks it takes")

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
