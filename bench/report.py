"""The printed table, the targets, the JSON and the plot."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # bench.explain imports the whole schema; the report only names its Plan
    from bench.explain import Plan

# Series, in the order they are printed and plotted.
SERIES = ("floor", "tcgraph", "floor/http", "tcgraph/http", "postgraphile/http",
          "postgraphile-v5/http", "rest-batch/http", "rest-per-item/http")
PEERS = {"postgraphile/http": "v4", "postgraphile-v5/http": "v5"}
SERIES_NOTES = {
    "floor": "one hand-written statement that builds the whole body in PostgreSQL, in process",
    "tcgraph": "schema.execute, in process",
    "floor/http": "the floor as a Starlette endpoint on tcgraph's uvicorn",
    "tcgraph/http": "POST /graphql on uvicorn",
    "postgraphile/http": "PostGraphile v4 over SQL functions taking the key arrays",
    "postgraphile-v5/http": "PostGraphile v5 (Amber preset, grafserv on Node 22) over the same "
                            "SQL functions",
    "rest-batch/http": "W4 (b): Taskcluster batch REST, following continuationTokens",
    "rest-per-item/http": "W4 (a): one REST call per item, sequential, one keep-alive connection",
    "W5": "taskgraph's optimize_task_graph: floor = answers in memory; (c) tcgraph/http = "
          "tcgraph.taskgraph, one document; (b) rest-batch/http = the optimizer's batch calls; "
          "(a) rest-per-item/http = find_task_id / status_task per item",
}


@dataclass
class Result:
    workload: str
    keys: int
    series: str
    times_ms: list[float] = field(default_factory=list)
    calls: int | None = None  # documents / REST calls in one run
    requests: int | None = None  # HTTP requests in one run (None in process)
    statements: int | None = None  # SQL statements in one run, as the series reports them
    pg_statements: int | None = None  # top-level statements pg_stat_statements saw in one run
    sql_ms: float | None = None  # of the warm-up run, time waiting on those statements
    peak_rss_mb: float | None = None
    check: str = ""  # "ok", or what differed from the floor's answer
    error: str = ""
    load: float | None = None  # 1-minute load average when its timed runs ended

    @property
    def median(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None

    @property
    def best(self) -> float | None:
        return min(self.times_ms) if self.times_ms else None

    @property
    def sql(self) -> int | None:
        """The statement count shown: the series' own count, else pg_stat_statements'."""
        return self.statements if self.statements is not None else self.pg_statements

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "keys": self.keys, "series": self.series,
            "median_ms": _round(self.median), "min_ms": _round(self.best),
            "runs_ms": [_round(t) for t in self.times_ms], "calls": self.calls,
            "http_requests": self.requests, "sql_statements": self.statements,
            "pg_stat_statements": self.pg_statements, "sql_ms": _round(self.sql_ms),
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "check": self.check, "error": self.error, "load_avg": _round(self.load),
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def index(results: list[Result]) -> dict[tuple[str, int, str], Result]:
    return {(r.workload, r.keys, r.series): r for r in results}


def ratio(results: list[Result], r: Result, other_series: str) -> float | None:
    other = index(results).get((r.workload, r.keys, other_series))
    if other is None or other.median is None or r.median is None or other.median == 0:
        return None
    return r.median / other.median


def floor_of(series: str) -> str:
    return "floor/http" if series.endswith("/http") else "floor"


def keys_label(workload: str, keys: int) -> str:
    if workload in ("W3", "W5"):
        return f"{keys:,} tasks"
    if workload == "W4":
        return f"{keys:,}+{keys:,}"
    return f"{keys:,}"


def table(results: list[Result]) -> str:
    header = ("workload", "keys", "series", "median ms", "min ms", "SQL", "SQL ms", "HTTP",
              "peak RSS MB", "load", "x floor", "x v4", "x v5", "check")
    rows = [header]
    order = {s: i for i, s in enumerate(SERIES)}
    for r in sorted(results, key=lambda r: (r.workload, r.keys, order.get(r.series, 99))):
        x_floor = (ratio(results, r, floor_of(r.series))
                   if not r.series.startswith("floor") else None)
        mine = r.series == "tcgraph/http"
        x_v4 = ratio(results, r, "postgraphile/http") if mine else None
        x_v5 = ratio(results, r, "postgraphile-v5/http") if mine else None
        rows.append((
            r.workload, keys_label(r.workload, r.keys), r.series,
            _num(r.median), _num(r.best),
            "-" if r.sql is None else str(r.sql),
            "-" if r.sql_ms is None else _num(r.sql_ms),
            "-" if r.requests is None else f"{r.requests:,}",
            "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
            "-" if r.load is None else f"{r.load:.1f}",
            "-" if x_floor is None else f"{x_floor:.2f}",
            "-" if x_v4 is None else f"{x_v4:.2f}",
            "-" if x_v5 is None else f"{x_v5:.2f}",
            r.error or r.check,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = zip(row, widths, strict=True)
        lines.append("  ".join(cell.ljust(w) if i in (0, 1, 2, 13) else cell.rjust(w)
                               for i, (cell, w) in enumerate(cells)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


# --- targets --------------------------------------------------------------------


@dataclass
class Target:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.name, "met": self.met, "detail": self.detail}

    def line(self) -> str:
        mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[self.met]
        return f"{mark} {self.name}: {self.detail}"


def targets(results: list[Result], plans: list[Plan] | None, big: int,
            concurrent: dict[str, Any] | None = None) -> list[Target]:
    at = index(results)
    out: list[Target] = []

    def get(w: str, k: int, s: str) -> Result | None:
        r = at.get((w, k, s))
        return r if r is not None and r.median is not None else None

    for w, bound in (("W1", 1.3), ("W2", 1.3)):
        t, f = get(w, big, "tcgraph/http"), get(w, big, "floor/http")
        name = f"{w} at {big:,} keys over HTTP <= {bound:g}x the floor on the same uvicorn"
        if t and f and t.median is not None and f.median is not None:
            x = t.median / f.median
            out.append(Target(name, x <= bound,
                              f"{x:.2f}x ({t.median:.0f} ms vs {f.median:.0f} ms)"))
        else:
            out.append(Target(name, None, "not measured"))

    name = "W3 at most 2 SQL statements a page"
    w3 = [(r.statements / r.calls, r) for (w, _, s), r in at.items()
          if w == "W3" and s in ("tcgraph", "tcgraph/http") and r.statements is not None
          and r.calls]
    if w3:
        per_page, worst = max(w3, key=lambda pair: pair[0])
        out.append(Target(name, per_page <= 2, f"{worst.statements} statements for {worst.calls} "
                          f"pages ({per_page:.1f} a page)"))
    else:
        out.append(Target(name, None, "not measured"))

    name = "W4 (c) one request, >= 50x faster than (a)"
    c = next((r for (w, _, s), r in at.items() if w == "W4" and s == "tcgraph/http"
              and r.median), None)
    a = next((r for (w, _, s), r in at.items() if w == "W4" and s == "rest-per-item/http"
              and r.median), None)
    if c and a and c.median and a.median:
        x = a.median / c.median
        out.append(Target(name, c.requests == 1 and x >= 50,
                          f"(c) {c.requests} request, {c.median:.0f} ms; (a) {a.requests:,} "
                          f"requests, {a.median:,.0f} ms: {x:.0f}x"))
    else:
        out.append(Target(name, None, "not measured"))

    name = "W5 (c) one request, faster than (b)"
    c, b = get("W5", 5_000, "tcgraph/http"), get("W5", 5_000, "rest-batch/http")
    if c and b and c.median is not None and b.median is not None:
        out.append(Target(name, c.requests == 1 and c.median < b.median,
                          f"(c) {c.requests} request, {c.median:,.0f} ms; (b) {b.requests} "
                          f"requests, {b.median:,.0f} ms: {c.median / b.median:.2f}x"))
    else:
        out.append(Target(name, None, "not measured"))

    for peer_series, version in PEERS.items():
        name = f"faster than PostGraphile {version} on W1-W4 at every size"
        pairs = [(r, r.median, peer.median) for r in results
                 if r.series == "tcgraph/http" and r.median and r.workload != "W5"
                 and (peer := at.get((r.workload, r.keys, peer_series))) is not None
                 and peer.median]
        if not pairs:
            out.append(Target(name, None, f"PostGraphile {version} not measured"))
            continue
        slower = [f"{t.workload}@{keys_label(t.workload, t.keys)} {mine / theirs:.2f}x"
                  for t, mine, theirs in pairs if mine >= theirs]
        faster = [f"{t.workload}@{keys_label(t.workload, t.keys)} {mine / theirs:.2f}x"
                  for t, mine, theirs in pairs if mine < theirs]
        detail = (f"slower on {', '.join(slower)}" if slower else "faster on all") + \
            (f"; faster on {', '.join(faster)}" if faster and slower else
             f" ({', '.join(faster)})" if faster else "")
        out.append(Target(name, not slower, detail))

    name = f"peak RSS < 300 MB answering a {big:,}-key document (tcgraph over HTTP)"
    big_docs = [r for r in results if r.series == "tcgraph/http" and r.keys == big
                and r.peak_rss_mb is not None and r.workload in ("W1", "W2")]
    if big_docs:
        peak = max(r.peak_rss_mb for r in big_docs if r.peak_rss_mb is not None)
        out.append(Target(name, peak < 300,
                          ", ".join(f"{r.workload} {r.peak_rss_mb:.0f} MB" for r in big_docs)))
    else:
        out.append(Target(name, None, "not measured"))

    out += _concurrency_targets(concurrent)

    name = "every loader statement an index lookup (EXPLAIN)"
    if plans:
        mine = [p for p in plans if p.used_by != "floor"]
        bad = [f"{p.name} scans {', '.join(p.seq_scans)} sequentially" for p in mine
               if not p.index_only]
        out.append(Target(name, not bad, "; ".join(bad) if bad else
                          f"{len(mine)} statements, custom and generic plans: index scans only"))
    else:
        out.append(Target(name, None, "not explained"))
    return out


def _concurrency_targets(concurrent: dict[str, Any] | None) -> list[Target]:
    """The concurrency series' targets (bench/concurrency.py)."""
    names = ("1, 8 and 30 clients on W1-W4: tcgraph's requests/s >= both PostGraphiles'",
             "8 and 30 clients: /health/live and /metrics p99 < 100 ms while tcgraph serves them",
             "30 concurrent copies (W1, 10,000 labels) <= 1.3x the same 30 sent in sequence")
    if not concurrent:
        return [Target(name, None, "not measured") for name in names]
    rows = concurrent["clients"]
    by = {(r["workload"], r["series"], r["clients"]): r for r in rows}
    mine = [r for r in rows if r["series"] == "tcgraph/http"]
    behind = []
    compared = 0
    for t in mine:
        for peer_series, version in PEERS.items():
            p = by.get((t["workload"], peer_series, t["clients"]))
            if p is None:
                continue
            compared += 1
            if t["per_second"] < p["per_second"]:
                behind.append(f"{t['workload']}@{t['clients']} {t['per_second']} vs "
                              f"{version} {p['per_second']}")
    out = [Target(names[0], not behind if compared else None,
                  ("behind on " + "; ".join(behind)) if behind else
                  f"ahead or level in all {compared} comparisons" if compared else
                  "PostGraphile not measured")]
    saturated = [r for r in mine if r["clients"] >= 8 and r.get("probes")]
    if saturated:
        worst = {path: max(r["probes"][path]["p99_ms"] or 0.0 for r in saturated)
                 for path in ("/health/live", "/metrics")}
        out.append(Target(names[1], all(v < 100 for v in worst.values()),
                          ", ".join(f"{path} worst p99 {v:.0f} ms" for path, v in worst.items())))
    else:
        out.append(Target(names[1], None, "not measured"))
    c = concurrent["copies"]
    out.append(Target(names[2], c["ratio"] <= 1.3 and not c["failed"],
                      f"{c['ratio']}x ({c['concurrent_s']} s vs {c['sequential_s']} s)"))
    return out


# --- files ------------------------------------------------------------------------


def write_json(path: Path, meta: dict[str, Any], results: list[Result], goals: list[Target],
               plans: list[Plan] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "meta": meta,
        "series": SERIES_NOTES,
        "results": [r.as_dict() for r in results],
        "targets": [t.as_dict() for t in goals],
        "plans": [p.as_dict() for p in plans or []],
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")


COLORS = {
    "floor": "#7f7f7f", "floor/http": "#222222", "tcgraph": "#6baed6",
    "tcgraph/http": "#08519c", "postgraphile/http": "#d95f02", "postgraphile-v5/http": "#e7298a",
    "rest-batch/http": "#74c476", "rest-per-item/http": "#a50f15",
}


def plot(path: Path, results: list[Result], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for ax, workload, what in ((axes[0], "W1", "labels -> latest -> status"),
                               (axes[1], "W2", "index paths -> task -> status + runs")):
        for series in SERIES:
            points = sorted((r.keys, r.median) for r in results
                            if r.workload == workload and r.series == series and r.median)
            if len(points) < 1:
                continue
            xs, ys = zip(*points, strict=True)
            dashed = "--" if not series.endswith("/http") else "-"
            ax.plot(xs, ys, dashed, marker="o", label=series, color=COLORS.get(series))
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("keys in one document")
        ax.set_ylabel("median latency, ms")
        ax.set_title(f"{workload}: {what}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax = axes[2]
    bars = [(f"{r.workload} {r.series}", r.median, COLORS.get(r.series, "#999999"))
            for w in ("W3", "W4", "W5") for s in SERIES for r in results
            if r.workload == w and r.series == s and r.median]
    if bars:
        labels, values, colors = zip(*bars, strict=True)
        ax.barh(range(len(bars)), values, color=colors)
        ax.set_yticks(range(len(bars)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("median latency, ms (log)")
        ax.set_title("W3: 5,000-task group, 5 pages | W4: 900 labels + 900 paths | "
                     "W5: optimize_task_graph, 5,000 tasks", fontsize=9)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}" if v >= 10 else f" {v:.1f}", va="center", fontsize=7)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- docs/performance.md ------------------------------------------------------


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with what lies between `<!-- bench:NAME:start -->` and `...:end -->` replaced."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        return text
    return text[:i + len(start)] + "\n" + body.strip("\n") + "\n" + text[j:]


def results_markdown(meta: dict[str, Any], printed: str, goals: list[Target]) -> str:
    data = meta.get("dataset", {})
    machine = meta.get("machine", {})
    load = ", ".join(f"{x:.1f}" for x in machine.get("load_avg_at_end", ()))
    lines = [
        f"Made by `{meta.get('command')}` on {meta.get('date')} (commit {meta.get('git')}), "
        f"{machine.get('cpus')} CPUs ({machine.get('cpu')}), load average at the end {load}; "
        f"{data.get('stored_tasks', 0):,} tasks, {data.get('labels', 0):,} labels, "
        f"{data.get('index_entries', 0):,} index entries, {data.get('database_size')}; "
        f"PostgreSQL {meta.get('postgres', {}).get('version')}, "
        f"PostGraphile {_versions(meta.get('postgraphile'))}; {meta.get('workers')} processes "
        f"per server in the concurrency series; {meta.get('duration_s')} s in all.",
        "",
        "```",
        printed.rstrip(),
        "```",
        "",
    ]
    if meta.get("concurrency"):
        from bench.concurrency import markdown

        c = meta["concurrency"]
        lines += [f"Concurrency: each series {c.get('seconds')} s, {meta.get('workers')} "
                  "processes per server (`tcgraph serve --workers`, the peers alike); the probes "
                  "run only while tcgraph is the one serving.", "", markdown(c), ""]
    lines += [
        "Targets, as `python -m bench` judged them:",
        "",
    ]
    lines += [f"- {'**met**' if t.met else '**not met**' if t.met is False else 'n/a'}: "
              f"{t.name}: {t.detail}" for t in goals]
    for note in meta.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def _versions(peers: dict[str, Any] | None) -> str:
    if not peers:
        return "not run"
    return ", ".join(f"{PEERS.get(series, series)} {version}" for series, version in peers.items())


def update_docs(path: Path, meta: dict[str, Any], printed: str, goals: list[Target],
                plans_md: str | None) -> bool:
    """Rewrite the generated sections of docs/performance.md; False if it has none."""
    if not path.exists():
        return False
    text = path.read_text()
    new = replace_section(text, "results", results_markdown(meta, printed, goals))
    if plans_md is not None:
        new = replace_section(new, "plans", plans_md)
    if new == text:
        return False
    path.write_text(new)
    return True
