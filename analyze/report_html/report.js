"use strict";
// Draws the uetrace report from the JSON in #report-data. Archive strings are data: they are only
// ever written with textContent or as SVG text nodes, never parsed as HTML.
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const root = document.getElementById("report");

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function sv(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const fmt = (v, d = 0) => v == null ? "" : Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  function bytes(n) {
    if (n == null) return "";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function section(id, title, ...kids) { const s = el("section", { id }, el("h2", { text: title }), ...kids); root.append(s); return s; }

  // A table whose headers sort it (numbers numerically); cols: {key, label, num, show(row)}.
  function sortable(cols, rows, cls) {
    const tbody = el("tbody");
    const head = cols.map((c) => el("th", { text: c.label }));
    let state = { i: -1, dir: 1 };
    function fill() {
      tbody.replaceChildren(...rows.map((r) => el("tr", {}, ...cols.map((c) => {
        const td = el("td", c.num ? { class: "num" } : {});
        const v = c.show ? c.show(r) : r[c.key];
        if (v instanceof Node) td.append(v); else td.textContent = v == null ? "" : String(v);
        return td;
      }))));
    }
    head.forEach((th, i) => th.addEventListener("click", () => {
      state = { i, dir: state.i === i ? -state.dir : (cols[i].num ? -1 : 1) };
      const k = cols[i].key;
      rows.sort((a, b) => { const x = a[k], y = b[k]; return (x == null) - (y == null) || (x < y ? -1 : x > y ? 1 : 0) * state.dir; });
      head.forEach((h, j) => { h.className = j === i ? (state.dir > 0 ? "sorted-asc" : "sorted-desc") : ""; });
      fill();
    }));
    fill();
    return el("table", cls ? { class: cls } : {}, el("thead", {}, el("tr", {}, ...head)), tbody);
  }

  // ---- flame graph: icicle, root on top; click zooms, search highlights -------------------
  function flame(tree, unit, height) {
    const names = tree.names, W = 1200, H = 17;
    const wrap = el("div");
    const details = el("div", { class: "details", text: " " });
    const search = el("input", { type: "search", placeholder: "search functions (regex)" });
    const reset = el("button", { type: "button", text: "reset zoom" });
    const svg = sv("svg", { class: "flame", viewBox: `0 0 ${W} 100`, preserveAspectRatio: "none" });
    let zoom = tree.root, pattern = null;
    function label(n) { return n[0] < 0 ? "all" : names[n[0]]; }
    function color(n) {
      if (n[2] === "k") return "hsl(30,80%,60%)"; if (n[2] === "m") return "hsl(0,0%,75%)";
      let h = 0; const s = label(n); for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
      return `hsl(${h % 50},${70 + h % 20}%,${55 + h % 15}%)`;
    }
    function path(target) { // nodes from the root to target, to draw the zoomed node's ancestors full width
      const out = [];
      (function walk(n) { out.push(n); if (n === target) return true; for (const c of n[3]) if (walk(c)) return true; out.pop(); return false; })(tree.root);
      return out;
    }
    function draw() {
      const rects = [];
      const ancestors = path(zoom);
      ancestors.forEach((n, d) => rects.push([n, 0, W, d]));
      const base = ancestors.length - 1;
      (function place(n, x, d) {
        let cx = x;
        for (const c of n[3]) {
          const w = (c[1] / zoom[1]) * W;
          if (w >= 0.5) { rects.push([c, cx, w, d + 1]); place(c, cx, d + 1); }
          cx += w;
        }
      })(zoom, 0, base);
      const depth = rects.reduce((m, r) => Math.max(m, r[3]), 0) + 1;
      svg.setAttribute("viewBox", `0 0 ${W} ${depth * H}`);
      svg.style.height = Math.min(depth * H, height || 100000) + "px";
      svg.replaceChildren(...rects.map(([n, x, w, d]) => {
        const g = sv("g", { class: pattern && pattern.test(label(n)) ? "match" : "" });
        const r = sv("rect", { x, y: d * H, width: Math.max(w, 0.5), height: H - 1, fill: color(n) });
        g.append(sv("title", { text: `${label(n)} (${fmt(n[1])} ${unit}, ${(100 * n[1] / tree.root[1]).toFixed(2)}%)` }), r);
        if (w > 30) g.append(sv("text", { x: x + 3, y: d * H + 12, text: label(n).slice(0, Math.floor(w / 7)) }));
        g.addEventListener("click", () => { zoom = n; draw(); });
        g.addEventListener("mouseenter", () => { details.textContent = `${label(n)}: ${fmt(n[1])} ${unit} (${(100 * n[1] / tree.root[1]).toFixed(2)}%)`; });
        return g;
      }));
      svg.dataset.zoom = label(zoom);
    }
    search.addEventListener("input", () => {
      try { pattern = search.value ? new RegExp(search.value, "i") : null; } catch (e) { pattern = null; }
      draw();
    });
    reset.addEventListener("click", () => { zoom = tree.root; draw(); });
    draw();
    wrap.append(el("div", { class: "controls" }, search, reset), svg, details);
    return wrap;
  }

  // ---- small charts -------------------------------------------------------------------------
  function histogram(counts, edges) {
    const w = 190, h = 28, n = counts.length, max = Math.max(1, ...counts);
    const svg = sv("svg", { width: w, height: h, class: "chart" });
    counts.forEach((c, i) => {
      if (!c) return;
      const bh = Math.max(2, (c / max) * (h - 2));
      const lo = i ? edges[i - 1] : 0, hi = i < edges.length ? edges[i] : Infinity;
      svg.append(sv("rect", { x: (i * w) / n, y: h - bh, width: w / n - 1, height: bh, fill: "#4a78c2" },
        sv("title", { text: `${lo}-${hi} ms: ${c}` })));
    });
    return svg;
  }
  function lines(series, x0, dx, w, h, unitFmt) {
    const keys = Object.keys(series), n = keys.length ? series[keys[0]].length : 0;
    const max = Math.max(1, ...keys.flatMap((k) => series[k]));
    const svg = sv("svg", { width: w, height: h + 20, class: "chart" });
    const palette = ["#4a78c2", "#d9822b", "#2e9e5b", "#b03a8c", "#6b6b6b", "#c23b3b"];
    keys.forEach((k, i) => {
      const pts = series[k].map((v, j) => `${(j / Math.max(1, n - 1)) * (w - 60) + 50},${h - (v / max) * (h - 10)}`).join(" ");
      svg.append(sv("polyline", { points: pts, fill: "none", stroke: palette[i % palette.length], "stroke-width": 1.5 }));
      svg.append(sv("text", { x: 55 + i * 140, y: h + 16, fill: palette[i % palette.length], text: k }));
    });
    svg.append(sv("text", { x: 0, y: 12, text: unitFmt(max) }), sv("text", { x: 0, y: h, text: "0" }));
    svg.append(sv("text", { x: w - 120, y: h + 16, text: `${fmt(x0, 1)} s + ${fmt(dx * n, 1)} s` }));
    return svg;
  }
  function graph(g) {
    const n = g.nodes.length, R = Math.max(80, n * 22), size = 2 * R + 240;
    const svg = sv("svg", { width: size, height: size, class: "chart lockgraph" });
    svg.append(sv("defs", {}, sv("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" },
      sv("path", { d: "M0,0 L10,5 L0,10 z", fill: "#c23b3b" }))));
    const pos = g.nodes.map((_, i) => [size / 2 + R * Math.cos((2 * Math.PI * i) / n), size / 2 + R * Math.sin((2 * Math.PI * i) / n)]);
    for (const e of g.edges) {
      const [a, b] = [pos[e.from], pos[e.to]], len = Math.hypot(b[0] - a[0], b[1] - a[1]) || 1, k = (len - 8) / len;
      svg.append(sv("line", { x1: a[0], y1: a[1], x2: a[0] + (b[0] - a[0]) * k, y2: a[1] + (b[1] - a[1]) * k,
        stroke: e.cycle ? "#c23b3b" : "#888", "stroke-width": 2, "marker-end": "url(#arrow)", class: e.cycle ? "cycle-edge" : "" },
        sv("title", { text: `${g.nodes[e.from]} held while taking ${g.nodes[e.to]} (${e.count}x, pid ${e.pid})` })));
    }
    g.nodes.forEach((name, i) => {
      svg.append(sv("circle", { cx: pos[i][0], cy: pos[i][1], r: 6, fill: "#1d2330" }));
      svg.append(sv("text", { x: pos[i][0] + 9, y: pos[i][1] - 8, text: name }));
    });
    return svg;
  }

  // ---- sections -----------------------------------------------------------------------------
  const S = D.summary || {};
  root.append(el("h1", { text: D.title || "uetrace report" }),
    el("div", { class: "muted", text: `recorded ${S.duration_s == null ? "?" : fmt(S.duration_s, 2)} s` + (S.complete ? "" : " - incomplete capture (killed before it finished)") }));
  for (const w of (D.warnings || []).concat(S.warnings || [])) root.append(el("div", { class: "warn", text: "warning: " + w }));
  section("summary", "Summary: tracers and losses", sortable([
    { key: "tracer", label: "tracer" }, { key: "attached", label: "attached", show: (r) => r.attached ? "yes" : "no" },
    { key: "records", label: "records", num: true, show: (r) => fmt(r.records) },
    { key: "lost", label: "lost", num: true, show: (r) => r.lost ? el("span", { class: "warn", text: fmt(r.lost) }) : "0" },
    { key: "note", label: "note" }], (S.tracers || []).slice()));

  if (D.http) {
    const H = D.http, s = H.summary;
    const sec = section("http", "HTTP endpoints", el("div", { class: "muted",
      text: `${fmt(s.exchanges)} exchanges on ${fmt(s.connections)} connections, ${fmt(s.errors)} errors (${fmt(s.status_4xx)} 4xx, ${fmt(s.status_5xx)} 5xx)` }));
    sec.append(sortable([
      { key: "endpoint", label: "endpoint" }, { key: "count", label: "requests", num: true },
      { key: "errors", label: "errors", num: true }, { key: "rate", label: "req/s", num: true, show: (r) => fmt(r.rate, 2) },
      { key: "p50_ms", label: "p50 ms", num: true, show: (r) => fmt(r.p50_ms, 2) },
      { key: "p99_ms", label: "p99 ms", num: true, show: (r) => fmt(r.p99_ms, 2) },
      { key: "max_ms", label: "max ms", num: true, show: (r) => fmt(r.max_ms, 2) },
      { key: "endpoint", label: "latency histogram", show: (r) => H.histograms[r.endpoint] ? histogram(H.histograms[r.endpoint], H.histogram_edges_ms) : "" },
    ], H.endpoints.slice(), "endpoints"));
    const slow = section("slowest", "Slowest requests");
    for (const x of H.slowest) {
      const d = el("details", { class: "request" }, el("summary", { text: `#${x.request_id}  ${fmt(x.latency_ns / 1e6, 2)} ms  ${x.method} ${x.path}  -> ${x.status == null ? "?" : x.status}` }));
      const kv = el("div", { class: "kv" });
      for (const [k, v] of [["at", x.at_s == null ? "" : fmt(x.at_s, 3) + " s"], ["client", `${x.client} pid ${x.client_pid ?? "?"} ${x.client_comm || ""}`],
        ["server", `${x.server} pid ${x.server_pid ?? "?"} tid ${x.server_tid ?? "?"} ${x.server_comm || ""}`],
        ["bytes", `${fmt(x.req_bytes)} request, ${fmt(x.resp_bytes)} response`], ["protocol", x.protocol + (x.tls ? " (tls)" : "")], ["note", x.note]])
        kv.append(el("div", { class: "muted", text: k }), el("div", { text: v || "" }));
      d.append(kv);
      if (x.story) d.append(el("pre", { class: "story", text: x.story }));
      d.append(x.flame ? flame(x.flame.tree, x.flame.unit, 300) : el("div", { class: "muted", text: "no CPU samples of the serving thread inside this request: it waited (I/O, sleep, locks) or was too short for the sampling rate" }));
      slow.append(d);
    }
  }
  if (D.flame) section("flamegraph", "CPU flame graph (whole capture, idle left out)", flame(D.flame.tree, D.flame.unit));
  if (D.flows) {
    const sec = section("flows", "Network flows");
    if (D.bandwidth && D.bandwidth.series) sec.append(lines(D.bandwidth.series, D.bandwidth.t0_s, D.bandwidth.bucket_s, 900, 140, (v) => bytes(v) + "/s"));
    sec.append(sortable([
      { key: "proto", label: "proto" }, { key: "iface", label: "iface" },
      { key: "init_addr", label: "initiator", show: (r) => `${r.init_addr}:${r.init_port}` },
      { key: "resp_addr", label: "responder", show: (r) => `${r.resp_addr}:${r.resp_port}` },
      { key: "init_bytes", label: "bytes out", num: true, show: (r) => bytes(r.init_bytes) },
      { key: "resp_bytes", label: "bytes in", num: true, show: (r) => bytes(r.resp_bytes) },
      { key: "handshake_rtt_ns", label: "RTT ms", num: true, show: (r) => r.handshake_rtt_ns == null ? "" : fmt(r.handshake_rtt_ns / 1e6, 3) },
      { key: "retransmissions", label: "retrans", num: true }, { key: "close", label: "close" }], (D.flows.flows || []).slice()));
  }
  if (D.deadlock) {
    const L = D.deadlock;
    const sec = section("deadlocks", "Locks: deadlocks and lock-order cycles", el("div", { class: "muted",
      text: `${fmt(L.mutexes)} mutexes, ${fmt(L.edges)} lock-order edges in ${fmt(L.processes)} processes; ${L.potential.length} potential deadlock cycles, ${L.deadlocks.length} real hangs` }));
    if (L.graph && L.graph.nodes.length) sec.append(graph(L.graph));
    for (const c of L.potential) sec.append(el("div", { text: `pid ${c.pid} ${c.comm}: ${c.cycle.join(" -> ")} -> ${c.cycle[0]}` }));
  }
  if (D.leaks) {
    const K = D.leaks;
    const sec = section("leaks", "Memory still allocated at the end", el("div", { class: "muted",
      text: `${bytes(K.leaked_bytes)} in ${fmt(K.leaked_blocks)} blocks older than ${K.min_age_s} s; ${fmt(K.allocations)} allocations, ${fmt(K.frees)} frees` }));
    sec.append(sortable([
      { key: "bytes", label: "bytes", num: true, show: (r) => bytes(r.bytes) }, { key: "blocks", label: "blocks", num: true },
      { key: "pid", label: "process", show: (r) => `${r.pid} ${r.comm}` },
      { key: "growth_bytes_per_s", label: "growth", show: (r) => lines({ bytes: r.growth }, 0, 1, 200, 30, bytes) },
      { key: "frames", label: "allocated at", show: (r) => (r.frames || []).slice(0, 4).join(" <- ") }], (K.groups || []).slice()));
  }
  document.body.dataset.ready = "1";
})();
