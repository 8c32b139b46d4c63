"""The command line's words: every verb's arguments, in one parser."""

from __future__ import annotations

import argparse
import os
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NoReturn

from tcgraph import __version__, logs
from tcgraph.config import Settings, env_name, flag_name

if TYPE_CHECKING:
    from tcgraph.ingest.follow import FollowOptions


UPSTREAM_ENV = "TCGRAPH_UPSTREAM_ROOT_URL"


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals in one line (text or JSON, as every line) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        logs.console.error("%s: %s (see %s --help)", self.prog, message, self.prog)
        raise SystemExit(2)


def _setting(parser: argparse.ArgumentParser, name: str, help: str, *,
             switch: bool = False, **extra: Any) -> None:
    """A flag for setting `name` (config.Settings): its text is read as the variable's is,
    by config.parse_setting, so a bad value is refused naming the flag."""
    default = getattr(Settings(), name)
    shown = f"; default {default}" if default not in (None, "", False) else ""
    text = f"{help} (env {env_name(name)}{shown})"
    if switch:
        parser.add_argument(flag_name(name), action="store_true", default=None, help=text)
    else:
        parser.add_argument(flag_name(name), help=text, **extra)


def setting_flags(args: argparse.Namespace) -> dict[str, object]:
    """The settings the command line gave, by name (config.Settings.from_env's `flags`)."""
    return {f.name: getattr(args, f.name) for f in fields(Settings)
            if getattr(args, f.name, None) is not None}


def _upstream_option(parser: argparse.ArgumentParser, deprecated_root_url: bool) -> None:
    """The deployment to mirror. TCGRAPH_ROOT_URL is tcgraph's own public root URL, never it."""
    parser.add_argument("--upstream-root-url", default=os.environ.get(UPSTREAM_ENV),
                        help=f"the Taskcluster deployment's root URL (env {UPSTREAM_ENV})")
    if deprecated_root_url:
        parser.add_argument("--root-url", dest="deprecated_root_url",
                            help="deprecated spelling of --upstream-root-url")


def upstream_root_url(args: argparse.Namespace) -> str:
    """The deployment's root URL the arguments name; ValueError says how to give it."""
    old = getattr(args, "deprecated_root_url", None)
    if old:
        logs.console.warning("tcgraph %s: --root-url is deprecated, use --upstream-root-url "
                             "(TCGRAPH_ROOT_URL names tcgraph's own public URL)", args.verb)
    url: str | None = args.upstream_root_url or old
    if url:
        return url
    hint = (" (TCGRAPH_ROOT_URL is set, but it names tcgraph's own public URL, not the "
            "deployment's)" if os.environ.get("TCGRAPH_ROOT_URL") else "")
    raise ValueError(f"the deployment's root URL is required (--upstream-root-url or "
                     f"{UPSTREAM_ENV}){hint}")


def _database_options(parser: argparse.ArgumentParser) -> None:
    _output_options(parser)
    _setting(parser, "database_url",
             "PostgreSQL URL; without one, an embedded PostgreSQL runs in --data-dir")
    _setting(parser, "data_dir", "where the embedded PostgreSQL keeps its data")


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
    parser.add_argument("--follower-name", default=os.environ.get("TCGRAPH_FOLLOWER_NAME"),
                        help="this follower's name in `mirror.followers` and its gaps, one "
                             "per process (env TCGRAPH_FOLLOWER_NAME; default: the host name)")
    parser.add_argument("--reconcile-rate", type=float,
                        default=float(os.environ.get("TCGRAPH_RECONCILE_RATE", "2")),
                        metavar="CALLS",
                        help="upstream calls a second reconciliation may make (env "
                             "TCGRAPH_RECONCILE_RATE; default 2; 0 never reconciles)")
    parser.add_argument("--reconcile-every", type=float, default=300.0, metavar="SECONDS",
                        help="pause between reconciliation passes when no gap calls for one "
                             "(default 300)")
    parser.add_argument("--verify-every", type=float, default=900.0, metavar="SECONDS",
                        help="verify a sample against the upstream this often (default 900; "
                             "0 never)")
    parser.add_argument("--verify-sample", type=int, default=100, metavar="N",
                        help="tasks and index entries in each verification (default 100)")


def follow_settings(args: argparse.Namespace) -> FollowOptions:
    """The FollowOptions the arguments ask for; ValueError names what is missing."""
    from tcgraph.ingest.follow import FollowOptions
    from tcgraph.ingest.pulse import PulseOptions, bindings, queue_name
    from tcgraph.ingest.reconcile import ReconcileOptions

    root_url = upstream_root_url(args)
    if not args.pulse_url:
        raise ValueError("the pulse URL is required (--pulse-url or TCGRAPH_PULSE_URL)")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.reconcile_rate < 0 or args.reconcile_every <= 0:
        raise ValueError("--reconcile-rate must be at least 0, --reconcile-every above 0")
    if args.verify_every < 0 or args.verify_sample < 1:
        raise ValueError("--verify-every must be at least 0, --verify-sample at least 1")
    extra = {"name": args.follower_name} if args.follower_name else {}
    return FollowOptions(
        root_url=root_url, backfill=not args.no_backfill, expire_every_s=args.expire_every,
        keep_per_label=args.keep_per_label,
        reconcile=ReconcileOptions(rate=args.reconcile_rate, every_s=args.reconcile_every),
        verify_every_s=args.verify_every, verify_sample=args.verify_sample, **extra,
        pulse=PulseOptions(url=args.pulse_url,
                           queue_name=queue_name(args.pulse_url, args.queue_name),
                           bindings=bindings(args.binding), batch_size=args.batch_size,
                           prefetch=max(4 * args.batch_size, 100)))


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=None,
                        help="say more: -v adds uvicorn's and embedded PostgreSQL's messages, "
                             "-vv debug output")
    _setting(parser, "log_format", "text or json: one object per line with the request id, "
             "route, status, duration and SQL counts")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcgraph", description="A GraphQL gateway for CI task data.")
    parser.add_argument("--version", action="version", version=f"tcgraph {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = verbs.add_parser("serve", help="serve GraphQL over HTTP",
                             description="Migrate the database, fill an empty one with demo data "
                                         "(embedded default, or --demo), and serve /graphql.")
    _database_options(serve)
    _setting(serve, "read_database_url", "serve reads from this URL (a replica or read-only "
             "role); migrations use --database-url")
    _setting(serve, "listen_database_url", "the change feed of subscriptions LISTENs on this "
             "direct URL (default --database-url; never a transaction-pooling pgbouncer)")
    _setting(serve, "host", "address to listen on")
    _setting(serve, "port", "port to listen on")
    _setting(serve, "ops_port", "also answer /health/live and /metrics on this port, from a "
             "thread, however busy the server is (0: not)")
    _setting(serve, "header_timeout_ms",
             "close a connection whose request headers take longer")
    _setting(serve, "body_timeout_ms", "refuse a request whose body takes longer after its headers")
    _setting(serve, "send_timeout_ms",
             "drop a connection whose client stops reading an answer for longer")
    _setting(serve, "max_connections", "open connections per server process; more are refused")
    _setting(serve, "workers", "server processes")
    _setting(serve, "demo", "fill an empty database with demo data (always on for the embedded "
             "default)", switch=True)
    _setting(serve, "explain", "report extensions.sql = {statements, rows, ms} in every response",
             switch=True)
    serve.add_argument("--follow", action="store_true",
                       help="run `tcgraph follow` in the serving process (one worker)")
    _upstream_option(serve, deprecated_root_url=False)
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
    _upstream_option(follow, deprecated_root_url=True)
    _follow_options(follow)

    check = verbs.add_parser(
        "verify", help="compare a sample of the mirror with the deployment; exit 1 on drift",
        description="Compare random tasks, statuses and index entries (or one task group's) "
                    "with the deployment's REST API, print each difference, and exit with 1 "
                    "if there is any.")
    _database_options(check)
    _upstream_option(check, deprecated_root_url=False)
    check.add_argument("--sample", type=int, default=100, metavar="N",
                       help="tasks and index entries picked at random (default 100)")
    check.add_argument("--task-group", metavar="ID",
                       help="verify this group's tasks and their index entries instead")
    backfill = verbs.add_parser(
        "backfill", help="copy task groups and index subtrees from a deployment's REST API",
        description="Read listTaskGroup pages and walk listNamespaces/listTasks into the "
                    "database, through the same write path as follow.")
    _database_options(backfill)
    _upstream_option(backfill, deprecated_root_url=True)
    backfill.add_argument("--task-group", action="append", default=[], metavar="ID",
                          help="a task group to copy (repeatable)")
    backfill.add_argument("--index", action="append", default=[], metavar="NAMESPACE",
                          help="an index namespace to copy, with everything below it (repeatable)")

    schema = verbs.add_parser("schema", help="print the GraphQL schema (SDL)",
                              description="Print the schema; schema.graphql is this output.")
    _output_options(schema)
    return parser
