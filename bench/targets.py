"""The targets of issue 18 and before, as `python -m bench` judges them from one run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.report import PEERS, Result, index, keys_label

if TYPE_CHECKING:  # bench.explain imports the whole schema; the targets only name its Plan
    from bench.explain import Plan


def _ms(result: Result) -> float:
    # Only results with a median are compared (the callers filter on it).
    assert result.median is not None
    return result.median


def _per_page(result: Result) -> float:
    assert result.statements is not None and result.calls
    return result.statements / result.calls


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
        if t and f:
            x = _ms(t) / _ms(f)
            out.append(Target(name, x <= bound,
                              f"{x:.2f}x ({_ms(t):.0f} ms vs {_ms(f):.0f} ms)"))
        else:
            out.append(Target(name, None, "not measured"))

    name = "W3 at most 2 SQL statements a page"
    w3 = [r for (w, _, s), r in at.items() if w == "W3" and s in ("tcgraph", "tcgraph/http")
          and r.statements is not None and r.calls]
    if w3:
        worst = max(w3, key=_per_page)
        per_page = _per_page(worst)
        out.append(Target(name, per_page <= 2, f"{worst.statements} statements for {worst.calls} "
                          f"pages ({per_page:.1f} a page)"))
    else:
        out.append(Target(name, None, "not measured"))

    name = "W4 (c) one request, >= 50x faster than (a)"
    c = next((r for (w, _, s), r in at.items() if w == "W4" and s == "tcgraph/http"
              and r.median), None)
    a = next((r for (w, _, s), r in at.items() if w == "W4" and s == "rest-per-item/http"
              and r.median), None)
    if c and a:
        x = _ms(a) / _ms(c)
        out.append(Target(name, c.requests == 1 and x >= 50,
                          f"(c) {c.requests} request, {_ms(c):.0f} ms; (a) {a.requests:,} "
                          f"requests, {_ms(a):,.0f} ms: {x:.0f}x"))
    else:
        out.append(Target(name, None, "not measured"))

    name = "W5 (c) one request, faster than (b)"
    c, b = get("W5", 5_000, "tcgraph/http"), get("W5", 5_000, "rest-batch/http")
    if c and b:
        out.append(Target(name, c.requests == 1 and _ms(c) < _ms(b),
                          f"(c) {c.requests} request, {_ms(c):,.0f} ms; (b) {b.requests} "
                          f"requests, {_ms(b):,.0f} ms: {_ms(c) / _ms(b):.2f}x"))
    else:
        out.append(Target(name, None, "not measured"))

    for peer_series, version in PEERS.items():
        name = f"faster than PostGraphile {version} on W1-W4 at every size"
        pairs = [(r, at[(r.workload, r.keys, peer_series)]) for r in results
                 if r.series == "tcgraph/http" and r.median and r.workload != "W5"
                 and (r.workload, r.keys, peer_series) in at
                 and at[(r.workload, r.keys, peer_series)].median]
        if not pairs:
            out.append(Target(name, None, f"PostGraphile {version} not measured"))
            continue
        slower = [f"{t.workload}@{keys_label(t.workload, t.keys)} {_ms(t) / _ms(p):.2f}x"
                  for t, p in pairs if _ms(t) >= _ms(p)]
        faster = [f"{t.workload}@{keys_label(t.workload, t.keys)} {_ms(t) / _ms(p):.2f}x"
                  for t, p in pairs if _ms(t) < _ms(p)]
        detail = (f"slower on {', '.join(slower)}" if slower else "faster on all") + \
            (f"; faster on {', '.join(faster)}" if faster and slower else
             f" ({', '.join(faster)})" if faster else "")
        out.append(Target(name, not slower, detail))

    name = f"peak RSS < 300 MB answering a {big:,}-key document (tcgraph over HTTP)"
    big_docs = [r for r in results if r.series == "tcgraph/http" and r.keys == big
                and r.peak_rss_mb is not None and r.workload in ("W1", "W2")]
    if big_docs:
        worst_mb = max(r.peak_rss_mb or 0.0 for r in big_docs)
        out.append(Target(name, worst_mb < 300,
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


