"""The printed table, the targets, the JSON and the plot."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # bench.explain imports the whole schema; the report only names its Plan
    from bench.explain import Plan
    from bench.targets import Target

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

    fig, axes = plt.subplots(1, 3, figsize=(17, 7), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for ax, workload, what in ((axes[0], "W1", "labels -> latest -> status"),
                               (axes[1], "W2", "index paths -> task -> status + runs")):
        for series in SERIES:
            points = sorted((r.keys, r.median) for r in results
                            if r.workload == workload and r.series == series and r.median)
            if len(points) < 1:
                continue
            xs, ys = zip(*points, strict=False)
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
        labels, values, colors = zip(*bars, strict=False)
        ax.barh(range(len(bars)), values, color=colors)
        ax.set_yticks(range(len(bars)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("median latency, ms (log)")
        ax.set_title("W3: 5 pages | W4: 900 + 900 keys | W5: optimize 5,000 tasks", fontsize=10)
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
