"""Offline symbolization and stack assembly on a synthetic capture (no root needed)."""

from __future__ import annotations

import pytest
from stack_archive import APP_BASE, KBASE, LIBC_BASE, START_NS, app, build

from uetrace.analyze.stacks import demangle, profile
from uetrace.analyze.stacks import samples as stack_samples
from uetrace.analyze.stacks.symbolize import symbolize

SPIN_A, CALLER_A, MAIN, START_MAIN = app(0x401310), app(0x401240), app(0x401130), LIBC_BASE + 0x3010
STACKS = {
    1: [SPIN_A, CALLER_A, MAIN, START_MAIN],                       # complete user stack
    2: [app(0x401320), 0x600000000010],                            # walk ended in stripped.so
    3: [KBASE + 0x310, KBASE + 0x210, KBASE + 0x110],              # write syscall in the kernel
}


@pytest.fixture
def cap(tmp_path):
    samples = ([{"pid": 100, "kstack_id": 3, "ustack_id": 1, "t": i} for i in range(30)]
               + [{"pid": 100, "ustack_id": 1, "t": 10**9 + i, "tid": 101} for i in range(10)]
               + [{"pid": 100, "ustack_id": 2, "t": 2 * 10**9} for _ in range(5)]
               + [{"pid": 100, "ustack_id": -17, "t": 3 * 10**9}]
               + [{"pid": 7, "comm": "kworker", "kstack_id": 3, "flags": 8, "t": 5}])
    c = build(tmp_path, samples, STACKS)
    yield c
    c.close()


def test_user_frame_function_module_offset_and_line(cap):
    f = symbolize(cap, 100, SPIN_A, START_NS)
    assert (f["function"], f["module"], f["offset"], f["file"], f["line"], f["resolved"]) == (
        "spin_a", "app", 0x10, "/src/app.c", 11, True)


def test_return_address_at_function_end_belongs_to_the_caller(cap):
    # 0x401240 is one past caller_a's last byte: a return address there is a call at its end.
    assert symbolize(cap, 100, CALLER_A, START_NS, leaf=False)["function"] == "caller_a"
    assert symbolize(cap, 100, CALLER_A, START_NS, leaf=True)["function"] == "app+0x401240"


def test_aliases_get_one_stable_name(cap):
    assert symbolize(cap, 100, LIBC_BASE + 0x2010)["function"] == "write"


def test_cxx_names_are_demangled(cap):
    f = symbolize(cap, 100, app(0x401410))
    assert (f["function"], f["offset"], f["resolved"]) == ("ns::Worker<int>::spin()", 0x10, True)


@pytest.mark.parametrize("mangled, readable", [
    ("_ZN3geo4GridIlE5relaxEl", "geo::Grid<long>::relax(long)"),
    ("_ZN3app6detail7phase_aEv", "app::detail::phase_a()"),
    ("_ZN2ns4spinILi3EEEvv", "void ns::spin<3>()"),
    ("_ZN2ns4spinEv.cold", "ns::spin() [clone .cold]"),
    ("_ZZ4mainENKUlvE_clEv", "main::{lambda()#1}::operator()() const"),
    ("main", "main"),                  # C names pass through
    ("_Znot_a_name", "_Znot_a_name"),  # so do names the demangler rejects
    ("app+0x401800", "app+0x401800"),
])
def test_demangle_matches_cxxfilt(mangled, readable):
    assert demangle.available(), "libstdc++'s demangler is not usable (pip install cxxfilt)"
    assert demangle.demangle(mangled) == readable


def test_unresolved_frames_keep_a_stable_module_offset_name(cap):
    outside = symbolize(cap, 100, app(0x401800))
    assert (outside["function"], outside["resolved"]) == ("app+0x401800", False)
    assert symbolize(cap, 100, 0x600000000010)["function"] == "stripped.so+0x10"
    assert symbolize(cap, 100, 0x7FFF00000000)["function"] == "[anon]+0x7fff00000000"
    assert symbolize(cap, 999, SPIN_A)["function"] == f"[anon]+0x{SPIN_A:x}"  # another pid's address space
    assert APP_BASE  # the mapping is per pid, not global


def test_kernel_frames_use_kallsyms(cap):
    assert symbolize(cap, 0, KBASE + 0x310)["function"] == "vfs_write"
    xfs = symbolize(cap, 0, KBASE + 0x410)
    assert (xfs["function"], xfs["module"], xfs["offset"]) == ("xfs_write", "xfs", 0x10)
    far = symbolize(cap, 0, KBASE + 0x400 + (4 << 20))
    assert far["function"].startswith("kernel+0x") and not far["resolved"]


def test_stacks_read_root_first_with_kernel_on_top(cap):
    st = stack_samples.load(cap)
    paths = {tuple(st.names(i)): w for i, w in enumerate(st.weights)}
    assert paths[("app", "__libc_start_call_main", "main", "caller_a", "spin_a",
                  "entry_SYSCALL_64", "ksys_write", "vfs_write")] == 30
    assert paths[("app", "[truncated user stack: stripped.so]", "stripped.so+0x10", "spin_a")] == 5
    assert paths[("app", "[user stack lost: EEXIST]")] == 1
    assert paths[("kworker", "entry_SYSCALL_64", "ksys_write", "vfs_write")] == 1


def test_filters(cap):
    assert stack_samples.load(cap, stack_samples.SampleFilter(tids=(101,))).total == 10
    assert stack_samples.load(cap, stack_samples.SampleFilter(comms=("kworker",))).total == 1
    assert stack_samples.load(cap, stack_samples.SampleFilter(start_s=0.5, end_s=2.5)).total == 15


def test_profile_reports_functions_and_truncation(cap):
    prof = profile.run(cap, profile.ProfileParams(top=5))
    top = {f["function"]: f for f in prof.top_functions}
    assert top["vfs_write"]["self"] == 31 and top["vfs_write"]["kernel"]
    assert top["spin_a"]["total"] == 45 and top["spin_a"]["self"] == 15
    assert prof.truncated["by_module"][0]["module"] == "stripped.so"
    assert prof.truncated["samples"] == 5
    assert prof.lost_stacks == 3
    text = prof.to_text()
    assert "truncated" in text and "stripped.so" in text and "lost in the kernel" in text


def test_cut_at_max_depth_is_marked(tmp_path):
    deep = [app(0x401310)] * 4
    c = build(tmp_path, [{"pid": 100, "ustack_id": 1}], {1: deep}, max_depth=4)
    try:
        assert stack_samples.load(c).names(0)[1] == "[user stack cut at max depth]"
    finally:
        c.close()
