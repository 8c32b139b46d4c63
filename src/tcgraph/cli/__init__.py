"""The `tcgraph` command: serve, migrate, import, expire, demo, follow, backfill, schema.

`main` checks the arguments and dispatches; each verb's work lives in the module
named for it (options.py holds the parser).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Sequence

from tcgraph import logs
from tcgraph.cli.database import database, migrated
from tcgraph.cli.options import build_parser, follow_settings
from tcgraph.cli.serving import exit_on_signal, serve
from tcgraph.cli.verbs import expire_now, import_files, write_demo_data
from tcgraph.config import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tcgraph` console script."""
    args = build_parser().parse_args(argv)
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
            follow_options = follow_settings(
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
        return serve(settings, follow_options)
    if getattr(args, "keep_per_label", None) is not None and args.keep_per_label < 0:
        print(f"tcgraph {args.verb}: --keep-per-label must be at least 0", file=sys.stderr)
        return 2
    with database(settings) as url:
        applied = migrated(url, args.verb)
        if applied is None:
            return 1
        if args.verb == "migrate":
            print(f"applied: {', '.join(applied)}" if applied else "up to date", file=sys.stderr)
            return 0
        if args.verb == "import":
            return asyncio.run(import_files(url, settings, args.paths, args.keep_going))
        if args.verb == "expire":
            return asyncio.run(expire_now(url, settings, args.keep_per_label))
        if args.verb == "demo":
            if args.tasks < 1:
                print("tcgraph demo: --tasks must be at least 1", file=sys.stderr)
                return 2
            asyncio.run(write_demo_data(url, settings, args.tasks, args.seed))
            return 0
        if args.verb == "follow":
            from tcgraph.ingest.follow import run

            assert follow_options is not None  # checked above, before the database started
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, exit_on_signal)
            asyncio.run(run(url, settings, follow_options))
            return 0
        if args.verb == "backfill":
            from tcgraph.ingest.backfill import run as run_backfill

            return asyncio.run(run_backfill(url, settings, args.root_url, args.task_group,
                                            args.index))
    raise AssertionError(f"unhandled verb {args.verb}")
