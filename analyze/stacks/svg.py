"""Interactive flame graph as one self-contained SVG.

Layout as in Brendan Gregg's flamegraph.pl: the root at the bottom, each frame
as wide as the samples under it, siblings in name order. One <g> per frame with
exactly one <rect> (plus one for the root, `all`); the small script needs no
network: hover shows function, module, samples and percent; click zooms into a
frame (its ancestors stay, full width); "Search" highlights frames matching a
regular expression and shows the matched share; Escape or "Reset Zoom" undoes.
Kernel frames are orange and say [kernel], Python frames green with [py]; markers of truncated or lost
stacks are grey.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from uetrace.analyze.stacks.samples import Frame, StackSet

FONT_SIZE = 12
FONT_WIDTH = 0.59      # average glyph width / font size, for label truncation
FRAME_HEIGHT = 16
PAD = 10
TOP = FONT_SIZE * 3    # title and controls
BOTTOM = FONT_SIZE * 2 + 6  # details line


@dataclass
class _Node:
    frame: int             # frame id, -1 for the root
    depth: int
    weight: int = 0
    x: int = 0             # in weight units, from the left edge
    children: dict | None = None
    parent: _Node | None = None

    def path(self) -> tuple[int, ...]:
        """Frame ids from the root's child down to this node."""
        out = []
        node: _Node | None = self
        while node is not None and node.frame >= 0:
            out.append(node.frame)
            node = node.parent
        return tuple(reversed(out))


def build_tree(stacks: StackSet) -> list[_Node]:
    """Merge stacks into a tree; returns nodes in drawing order (pre-order), root first."""
    root = _Node(-1, 0, children={})
    for path, w in zip(stacks.stacks, stacks.weights):
        root.weight += w
        node = root
        for depth, fid in enumerate(path, 1):
            child = node.children.get(fid)
            if child is None:
                child = node.children[fid] = _Node(fid, depth, children={}, parent=node)
            child.weight += w
            node = child
    order: list[_Node] = []
    todo = [root]
    while todo:
        node = todo.pop()
        order.append(node)
        x = node.x
        kids = sorted(node.children.values(), key=lambda n: (stacks.frames[n.frame].name, n.frame))
        for kid in kids:
            kid.x = x
            x += kid.weight
        todo.extend(reversed(kids))
    return order


def render_svg(stacks: StackSet, title: str = "Flame Graph", width: int = 1200, min_width_px: float = 0.1,
               paint: Callable[[_Node], tuple[str, str] | None] | None = None) -> str:
    """paint: per node, (fill colour, text added to its details) instead of the usual colours (a
    differential flame graph colours by change)."""
    nodes = build_tree(stacks)
    total = max(nodes[0].weight, 1)
    scale = (width - 2 * PAD) / total
    drawn = [n for n in nodes if n.weight * scale >= min_width_px or n.frame == -1]
    depth = max((n.depth for n in drawn), default=0)
    height = TOP + (depth + 1) * FRAME_HEIGHT + BOTTOM
    unit = stacks.unit
    out = [_HEADER.format(w=width, h=height, fs=FONT_SIZE, script=_SCRIPT % {"pad": PAD, "fw": FONT_WIDTH * FONT_SIZE,
                                                                           "unit": unit}),
           f'<text id="title" x="{width / 2:.0f}" y="{FONT_SIZE * 2}" text-anchor="middle">{escape(title)}</text>',
           f'<text id="unzoom" x="{PAD}" y="{FONT_SIZE * 2}" class="ctl hide">Reset Zoom</text>',
           f'<text id="search" x="{width - PAD}" y="{FONT_SIZE * 2}" class="ctl" text-anchor="end">Search</text>',
           f'<text id="details" x="{PAD}" y="{height - 8}"> </text>',
           f'<text id="matched" x="{width - PAD}" y="{height - 8}" text-anchor="end"> </text>',
           '<g id="frames">']
    for n in drawn:
        f = stacks.frames[n.frame] if n.frame >= 0 else Frame("all", kind="root")
        x = PAD + n.x * scale
        w = n.weight * scale
        y = height - BOTTOM - (n.depth + 1) * FRAME_HEIGHT
        pct = 100.0 * n.weight / total
        info = _describe(f, n.weight, pct, unit)
        fill = _color(f)
        painted = paint(n) if paint is not None and n.frame >= 0 else None
        if painted is not None:
            fill, extra = painted
            info += extra
        out.append(
            f'<g class="f{" k" if f.kernel else ""}" data-x="{n.x}" data-w="{n.weight}" data-d="{n.depth}" '
            f'data-n={quoteattr(f.name)} data-i={quoteattr(info)}><title>{escape(info)}</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{FRAME_HEIGHT - 1}" fill="{fill}" rx="2"/>'
            f'<text x="{x + 3:.2f}" y="{y + FRAME_HEIGHT - 4.5:.1f}">{escape(_label(f.name, w))}</text></g>')
    out.append("</g>\n</svg>\n")
    return "\n".join(out)


def _describe(f: Frame, weight: int, pct: float, unit: str) -> str:
    where = {"kernel": f" [kernel{'' if f.module in ('', 'kernel') else ': ' + f.module}]",
             "user": f" ({f.module}{': ' + f.file if f.file else ''})" if f.module else "",
             "python": f" [py{': ' + f.file if f.file else ''}]",
             "process": " [thread]"}.get(f.kind, "")
    amount = f"{weight:,} samples" if unit == "samples" else f"{weight / 1e6:,.3f} ms"
    return f"{f.name}{where}: {amount}, {pct:.2f}%"


def _label(name: str, width_px: float) -> str:
    chars = int((width_px - 6) / (FONT_SIZE * FONT_WIDTH))
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def _color(f: Frame) -> str:
    h = zlib.crc32(f.name.encode())
    a, b = (h & 0xFF) / 255, ((h >> 8) & 0xFF) / 255
    if f.kind == "kernel":
        return f"rgb({220 + int(30 * a)},{120 + int(60 * b)},{30 + int(30 * a)})"
    if f.kind == "marker":
        return "rgb(170,170,170)"
    if f.kind == "python":
        return f"rgb({60 + int(50 * a)},{150 + int(60 * b)},{90 + int(40 * a)})"
    if f.kind in ("process", "root"):
        return f"rgb({120 + int(40 * a)},{150 + int(40 * b)},210)"
    return f"rgb({205 + int(50 * a)},{int(230 * b)},{int(55 * a)})"


_HEADER = """<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" onload="init(evt)"
 xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">
<style type="text/css">
 svg {{ background: #fafaf5; }}
 text {{ font-family: Verdana, sans-serif; font-size: {fs}px; fill: #000; }}
 g.f text {{ pointer-events: none; }}
 g.f:hover rect {{ stroke: #000; stroke-width: 0.5; cursor: pointer; }}
 .ctl {{ cursor: pointer; fill: #333; }}
 .hide {{ display: none; }}
</style>
<script type="text/ecmascript"><![CDATA[
{script}
]]></script>"""

# Plain ES5, no libraries: the file must work offline, attached to a bug report.
_SCRIPT = """
var frames, details, matched, unzoomBtn, W, PAD = %(pad)s, FW = %(fw)s, UNIT = "%(unit)s";
function num(g, a) { return +g.getAttribute("data-" + a); }
function init(evt) {
  frames = Array.prototype.slice.call(document.getElementById("frames").getElementsByTagName("g"));
  details = document.getElementById("details"); matched = document.getElementById("matched");
  unzoomBtn = document.getElementById("unzoom");
  W = frames[0].getElementsByTagName("rect")[0].width.baseVal.value;
  frames.forEach(function (g) {
    g.onmouseover = function () { details.textContent = g.getAttribute("data-i"); };
    g.onmouseout = function () { details.textContent = " "; };
    g.onclick = function () { zoom(g); };
  });
  unzoomBtn.onclick = function () { zoom(frames[0]); };
  document.getElementById("search").onclick = searchPrompt;
  window.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { zoom(frames[0]); search(""); }
    if ((e.ctrlKey || e.metaKey) && e.key === "f") { e.preventDefault(); searchPrompt(); }
  });
}
function label(g, w) {
  var n = g.getAttribute("data-n"), c = Math.floor((w - 6) / FW);
  g.getElementsByTagName("text")[0].textContent = c < 3 ? "" : (n.length <= c ? n : n.slice(0, c - 2) + "..");
}
function zoom(z) {
  var x0 = num(z, "x"), w0 = num(z, "w"), d0 = num(z, "d");
  frames.forEach(function (g) {
    var x = num(g, "x"), w = num(g, "w"), d = num(g, "d");
    var below = d < d0 && x <= x0 && x + w >= x0 + w0;
    var inside = d >= d0 && x >= x0 && x + w <= x0 + w0;
    if (!below && !inside) { g.style.display = "none"; return; }
    g.style.display = "";
    var nx = below ? 0 : (x - x0) / w0 * W, nw = below ? W : w / w0 * W;
    var r = g.getElementsByTagName("rect")[0], t = g.getElementsByTagName("text")[0];
    r.setAttribute("x", PAD + nx); r.setAttribute("width", nw); t.setAttribute("x", PAD + nx + 3);
    r.style.opacity = below && g !== z ? 0.6 : 1;
    label(g, nw);
  });
  unzoomBtn.classList.toggle("hide", z === frames[0]);
}
function searchPrompt() {
  var term = prompt("Search frames (regular expression):", "");
  if (term !== null) search(term);
}
function search(term) {
  var re = null, spans = [];
  try { re = term ? new RegExp(term) : null; } catch (e) { alert("bad expression: " + e.message); return; }
  frames.forEach(function (g) {
    var r = g.getElementsByTagName("rect")[0];
    if (!r.hasAttribute("data-fill")) r.setAttribute("data-fill", r.getAttribute("fill"));
    var hit = re && g !== frames[0] && re.test(g.getAttribute("data-n"));
    r.setAttribute("fill", hit ? "rgb(230,0,230)" : r.getAttribute("data-fill"));
    if (hit) spans.push([num(g, "x"), num(g, "x") + num(g, "w")]);
  });
  spans.sort(function (a, b) { return a[0] - b[0]; });
  var covered = 0, end = -1;
  spans.forEach(function (s) {
    if (s[0] >= end) { covered += s[1] - s[0]; end = s[1]; }
    else if (s[1] > end) { covered += s[1] - end; end = s[1]; }
  });
  var total = num(frames[0], "w");
  matched.textContent = re ? "Matched: " + (100 * covered / total).toFixed(2) + "%% of " + total + " " + UNIT : " ";
}
"""
