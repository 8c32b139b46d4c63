"""The verbs that write and then exit: import, expire, demo."""

from __future__ import annotations

from collections.abc import Sequence

from tcgraph.config import Settings
from tcgraph.logs import console
from tcgraph.store.pool import CONNECTION_ERRORS


async def import_files(url: str, settings: Settings, paths: Sequence[str], keep_going: bool) -> int:
    from tcgraph.ingest.files import ImportFailed, import_source
    from tcgraph.store.pool import open_pool

    def say(text: str) -> None:
        console.info("tcgraph import: %s", text)

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


async def expire_now(url: str, settings: Settings, keep_per_label: int | None) -> int:
    from tcgraph.ingest.expire import expire
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        done = await expire(pool, keep_per_label=keep_per_label)
    finally:
        await pool.close()
    trimmed = (f", {done.trimmed} tasks trimmed from label history"
               if keep_per_label is not None else "")
    console.info("expired: %d tasks, %d index entries, %d namespaces%s",
                 done.tasks, done.index_entries, done.namespaces, trimmed)
    return 0


async def write_demo_data(url: str, settings: Settings, tasks: int, seed: int) -> None:
    from tcgraph.demo import examples, write_demo
    from tcgraph.store.pool import open_pool

    pool = await open_pool(url, settings.with_(pool_min_size=1, pool_max_size=2))
    try:
        summary = await write_demo(pool, tasks=tasks, seed=seed)
    finally:
        await pool.close()
    found = examples(tasks, seed)
    console.info("demo: %d tasks, %d index entries\n"
                 "  a completed build-linux64/opt task: %s\n"
                 "  a task group with failed tasks:     %s\n"
                 "  a label with successes and failures: %s\n"
                 "  a cached toolchain's index path:    %s",
                 summary.tasks, summary.index_entries, found.task_id, found.task_group_id,
                 found.label, found.cached_path)
