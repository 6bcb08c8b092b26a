"""What the HTML report shows, as JSON-ready data: each analyzer's own result (to_json) plus what only a
page draws (latency histograms, the flame tree, bandwidth over time, the lock-order graph).

Every list is bounded so that the page stays small enough to attach to a bug report: the flame tree
keeps nodes of at least MIN_FLAME_SHARE of the samples, tables keep their top rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from uetrace.analyze import correlate, deadlock, flows, leaks, summary
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.bandwidth import bandwidth
from uetrace.analyze.correlate.selection import serving_windows
from uetrace.analyze.correlate.story import build_story
from uetrace.analyze.correlate.story_text import render_story
from uetrace.analyze.http import analyzer as http_analyzer
from uetrace.analyze.http.result import HttpParams, endpoint_of
from uetrace.analyze.stacks import samples
from uetrace.analyze.stacks.folded import frame_name

MIN_FLAME_SHARE = 0.0005
SLOWEST = 20
TOP_FLOWS = 200
BANDWIDTH_BUCKETS = 120
# Latency histogram bucket edges in ms: 1-2-5 steps from 0.1 ms to 100 s.
EDGES_MS = [m * 10.0 ** e for e in range(-1, 5) for m in (1, 2, 5)]


@dataclass(frozen=True)
class ReportParams:
    title: str = ""
    slowest: int = SLOWEST


def build(db: ArchiveDb, params: ReportParams = ReportParams()) -> dict[str, Any]:
    """The report's data: a dict of sections, each absent when the archive lacks its records."""
    out: dict[str, Any] = {"title": params.title, "summary": summary.run(db).to_json(),
                           "warnings": list(db.warnings)}
    start = db.info.start_ns or 0
    if http_analyzer.applies(db):
        out["http"] = _http(db, start, params)
    if samples.available(db, "cpu"):
        stacks = samples.load(db, samples.SampleFilter(idle=False))
        out["flame"] = {"unit": stacks.unit, "tree": flame_tree(stacks)}
    if flows.applies(db):
        out["flows"] = flows.run(db, flows.FlowsParams(top=TOP_FLOWS)).to_json()
        out["bandwidth"] = _bandwidth(db, start)
    if deadlock.applies(db):
        report = deadlock.run(db).to_json()
        out["deadlock"] = {**report, "graph": _lock_graph(report)}
    if leaks.applies(db):
        out["leaks"] = leaks.run(db).to_json()
    return out


def flame_tree(stacks: samples.StackSet) -> dict[str, Any]:
    """{"names": [...], "root": [name index, weight, kind, [children...]]}: a compact tree for the page's
    flame graph; kind is "k" for kernel frames, "m" for markers, "" otherwise."""
    names: list[str] = []
    index: dict[str, int] = {}
    root: list = [-1, 0, "", {}]
    for path, w in zip(stacks.stacks, stacks.weights):
        root[1] += w
        node = root
        for fid in path:
            f = stacks.frames[fid]
            key = (frame_name(f), "k" if f.kernel else "m" if f.kind == "marker" else "")
            child = node[3].get(key)
            if child is None:
                if key[0] not in index:
                    index[key[0]] = len(names)
                    names.append(key[0])
                child = node[3][key] = [index[key[0]], 0, key[1], {}]
            child[1] += w
            node = child
    floor = max(1, math.ceil(root[1] * MIN_FLAME_SHARE))

    def compact(node: list) -> list:
        kids = sorted((c for c in node[3].values() if c[1] >= floor), key=lambda c: names[c[0]])
        return [node[0], node[1], node[2], [compact(c) for c in kids]]
    return {"names": names, "root": compact(root)}


def _http(db: ArchiveDb, start: int, params: ReportParams) -> dict[str, Any]:
    result = http_analyzer.run(db, HttpParams(slowest=params.slowest))
    data = result.to_json()
    data.pop("exchanges")  # the page shows endpoints and the slowest; the archive keeps them all
    hist: dict[str, list[int]] = {}
    for e in result.exchanges:
        if e.latency_ns is None:
            continue
        counts = hist.setdefault(endpoint_of(e, result.params.normalize_paths), [0] * (len(EDGES_MS) + 1))
        ms = e.latency_ns / 1e6
        counts[next((i for i, edge in enumerate(EDGES_MS) if ms < edge), len(EDGES_MS))] += 1
    data["histogram_edges_ms"] = EDGES_MS
    data["histograms"] = hist
    data["slowest"] = _slowest(db, start, params) if correlate.applies(db) else []
    return data


def _slowest(db: ArchiveDb, start: int, params: ReportParams) -> list[dict]:
    """The slowest requests, each with its story (`trace request`) and the samples of its serving
    threads inside its windows (none for a request that waited: the page says so)."""
    result = correlate.run(db, correlate.CorrelateParams(slowest=params.slowest))
    out = []
    for r in result.slowest():
        ex = r.exchange.to_dict()
        ex["request_id"] = r.request_id
        ex["at_s"] = (ex["start_ts"] - start) / 1e9 if ex.get("start_ts") else None
        ex["story"] = render_story(build_story(db, result, r))
        ex["flame"] = None
        if samples.available(db, "cpu"):
            stacks = samples.load(db, samples.SampleFilter(windows=serving_windows([r])))
            if stacks.total:
                ex["flame"] = {"unit": stacks.unit, "tree": flame_tree(stacks)}
        out.append(ex)
    return out


def _bandwidth(db: ArchiveDb, start: int) -> dict[str, Any]:
    bw = bandwidth(db, BANDWIDTH_BUCKETS)
    if not bw.series:
        return {}
    return {"t0_s": (bw.t0_ns - start) / 1e9, "bucket_s": bw.bucket_ns / 1e9, "series": bw.series}


def _lock_graph(report: dict) -> dict[str, Any]:
    """Nodes (mutexes) and edges (held -> wanted) of every potential deadlock cycle and real hang."""
    nodes: dict[str, int] = {}
    edges: dict[tuple[int, int], dict] = {}
    for cycle in report.get("potential", []):
        for e in cycle["edges"]:
            a = nodes.setdefault(e["held"], len(nodes))
            b = nodes.setdefault(e["wanted"], len(nodes))
            edges.setdefault((a, b), {"from": a, "to": b, "count": 0, "cycle": True, "pid": cycle["pid"]})
            edges[(a, b)]["count"] += e.get("count", 1)
    return {"nodes": list(nodes), "edges": list(edges.values()), "hangs": len(report.get("deadlocks", []))}
