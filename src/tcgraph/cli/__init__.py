"""The `tcgraph` command: serve, migrate, import, expire, demo, follow, backfill, verify,
schema.

`main` checks the arguments and dispatches; each verb's work lives in the module
named for it (options.py holds the parser).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from tcgraph import logs
from tcgraph.cli.database import database, migrated, migration_plan
from tcgraph.cli.options import build_parser, follow_settings, setting_flags, upstream_root_url
from tcgraph.cli.serving import exit_on_signal, metrics_dir, serve
from tcgraph.cli.verbs import expire_now, import_files, write_demo_data
from tcgraph.config import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tcgraph` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    log_format = logs.requested_format(argv, dict(os.environ))
    logs.configure(0, log_format)
    args = build_parser().parse_args(argv)
    logs.configure(getattr(args, "verbose", None) or 0, log_format)
    say = logs.console
    if args.verb == "schema":
        from tcgraph.api.schema import sdl

        sys.stdout.write(sdl())
        return 0
    try:
        settings = Settings.from_env(flags=setting_flags(args))
    except ValueError as e:
        say.error("tcgraph: %s", e)
        return 2
    logs.configure(settings.verbose, settings.log_format)
    if args.verb == "serve":
        # Before anything imports prometheus-client (the follower's modules do).
        with metrics_dir(settings) as directory:
            try:
                follow_options = follow_settings(args) if args.follow else None
            except ValueError as e:
                say.error("tcgraph serve: %s", e)
                return 2
            if follow_options is not None and settings.workers != 1:
                say.error("tcgraph serve: --follow runs in one server process (--workers 1)")
                return 2
            return serve(settings, follow_options, directory)
    follow_options = None
    upstream = None
    try:
        if args.verb == "follow":
            follow_options = follow_settings(args)
        if args.verb == "backfill":
            upstream = upstream_root_url(args)
            if not (args.task_group or args.index):
                raise ValueError("at least one --task-group or --index is required")
        if args.verb == "verify":
            upstream = upstream_root_url(args)
            if args.sample < 1:
                raise ValueError("--sample must be at least 1")
    except ValueError as e:
        say.error("tcgraph %s: %s", args.verb, e)
        return 2
    if getattr(args, "keep_per_label", None) is not None and args.keep_per_label < 0:
        say.error("tcgraph %s: --keep-per-label must be at least 0", args.verb)
        return 2
    with database(settings) as url:
        if args.verb == "migrate" and args.dry_run:
            return asyncio.run(migration_plan(url))
        applied = migrated(url, args.verb)
        if applied is None:
            return 1
        if args.verb == "migrate":
            say.info("applied: %s" % ", ".join(applied) if applied else "up to date")
            return 0
        if args.verb == "import":
            return asyncio.run(import_files(url, settings, args.paths, args.keep_going))
        if args.verb == "expire":
            return asyncio.run(expire_now(url, settings, args.keep_per_label))
        if args.verb == "demo":
            if args.tasks < 1:
                say.error("tcgraph demo: --tasks must be at least 1")
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

            assert upstream is not None  # checked above, before the database started
            return asyncio.run(run_backfill(url, settings, upstream, args.task_group,
                                            args.index))
        if args.verb == "verify":
            from tcgraph.ingest.verify import run as run_verify

            assert upstream is not None  # checked above, before the database started
            return asyncio.run(run_verify(url, settings, upstream, sample=args.sample,
                                          task_group=args.task_group))
    raise AssertionError(f"unhandled verb {args.verb}")
