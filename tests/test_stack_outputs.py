"""Flame graph outputs from a synthetic capture (no root): folded stacks round-trip,
the SVG is well-formed with one rect per frame, speedscope JSON follows its spec."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from speedscope_schema import validate
from stack_archive import KBASE, LIBC_BASE, app, build, pack

from uetrace.analyze.stacks import folded
from uetrace.analyze.stacks import samples as stack_samples
from uetrace.analyze.stacks.speedscope import to_speedscope
from uetrace.analyze.stacks.svg import render_svg
from uetrace.cli import main

SVG = "{http://www.w3.org/2000/svg}"
STACKS = {1: [app(0x401310), app(0x401240), app(0x401130), LIBC_BASE + 0x3010],
          2: [app(0x401150), LIBC_BASE + 0x3010],
          3: [KBASE + 0x310, KBASE + 0x210, KBASE + 0x110]}


@pytest.fixture
def cap(tmp_path):
    samples = ([{"pid": 100, "ustack_id": 1, "kstack_id": 3, "t": i} for i in range(6)]
               + [{"pid": 100, "ustack_id": 1, "t": i} for i in range(3)]
               + [{"pid": 100, "ustack_id": 2, "comm": "app;worker", "t": 10**9}]
               + [{"pid": 7, "comm": "kworker/0:1", "kstack_id": 3, "flags": 8, "t": 2 * 10**9}])
    c = build(tmp_path / "cap", samples, STACKS)
    yield c
    c.close()


def prefixes(fold: dict[tuple[str, ...], int]) -> set[tuple[str, ...]]:
    return {stack[:i] for stack in fold for i in range(1, len(stack) + 1)}


def test_folded_round_trips(cap):
    fold = folded.fold(stack_samples.load(cap))
    text = folded.render(fold)
    assert folded.parse(text) == fold
    assert folded.render(folded.parse(text)) == text
    assert "app:worker;__libc_start_call_main;main 1" in text  # ';' in a name cannot split a frame
    assert "kworker/0:1;entry_SYSCALL_64_[k];ksys_write_[k];vfs_write_[k] 1" in text
    with pytest.raises(ValueError):
        folded.parse("a;b;c notanumber")


def test_svg_is_well_formed_with_one_rect_per_frame(cap):
    st = stack_samples.load(cap)
    root = ET.fromstring(render_svg(st, title="t <&> \"q\""))
    frames = root.find(f"{SVG}g[@id='frames']")
    groups = frames.findall(f"{SVG}g")
    assert len(root.findall(f".//{SVG}rect")) == len(groups) == len(prefixes(folded.fold(st))) + 1  # + "all"
    assert all(len(g.findall(f"{SVG}rect")) == 1 for g in groups)
    titles = {g.get("data-n"): g.find(f"{SVG}title").text for g in groups}
    assert titles["all"].startswith("all: 11 samples, 100.00%")
    assert "[kernel]" in titles["vfs_write"] and "samples" in titles["vfs_write"]
    assert {g.get("data-n") for g in groups if "k" in g.get("class").split()} == {
        "entry_SYSCALL_64", "ksys_write", "vfs_write"}
    script = root.find(f"{SVG}script").text
    for fn in ("function zoom(", "function search(", "onmouseover"):
        assert fn in script


def test_svg_frame_widths_add_up(cap):
    st = stack_samples.load(cap)
    root = ET.fromstring(render_svg(st))
    groups = root.find(f"{SVG}g[@id='frames']").findall(f"{SVG}g")
    by_depth: dict[int, int] = {}
    for g in groups:
        by_depth[int(g.get("data-d"))] = by_depth.get(int(g.get("data-d")), 0) + int(g.get("data-w"))
    assert by_depth[0] == 11 and by_depth[1] == 11  # the root, then one frame per comm
    assert all(by_depth[d] >= by_depth[d + 1] for d in range(max(by_depth)))


def test_speedscope_follows_the_spec(cap):
    st = stack_samples.load(cap)
    doc = to_speedscope(st)
    assert validate(doc) == []
    assert validate({"$schema": "x", "profiles": [{"type": "sampled", "samples": [[5]], "weights": []}]})
    assert [p["name"] for p in doc["profiles"]] == ["app (pid 100)", "kworker/0:1 (pid 7)"]
    names = [f["name"] for f in doc["shared"]["frames"]]
    p = doc["profiles"][0]
    assert sum(p["weights"]) == p["endValue"] == 10
    heaviest = p["samples"][p["weights"].index(max(p["weights"]))]
    assert [names[i] for i in heaviest][-2:] == ["ksys_write_[k]", "vfs_write_[k]"]


def test_cli_formats_and_filters(cap, tmp_path):
    archive = pack(cap, tmp_path / "synthetic.tar.zst")
    runner = CliRunner()
    res = runner.invoke(main, ["flamegraph", str(archive), "--format", "folded", "-o", "-", "--pid", "100",
                               "--from", "0", "--to", "0.5s"])
    assert res.exit_code == 0, res.output
    assert sum(folded.parse(res.output).values()) == 9
    out = tmp_path / "f.svg"
    res = runner.invoke(main, ["flamegraph", str(archive), "-o", str(out), "--comm", "kworker/0:1"])
    assert res.exit_code == 0, res.output
    ET.parse(out)
    assert out.stat().st_mode & 0o777 == 0o600   # names and command lines of processes (issue 11, finding 9)
    out = tmp_path / "f.json"
    res = runner.invoke(main, ["flamegraph", str(archive), "--format", "speedscope", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert validate(json.loads(out.read_text())) == []
    res = runner.invoke(main, ["flamegraph", str(archive), "--pid", "4242", "-o", str(tmp_path / "none.svg")])
    assert res.exit_code == 2 and "no samples match" in res.output
    assert not (tmp_path / "none.svg").exists()
