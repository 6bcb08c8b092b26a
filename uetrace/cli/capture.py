"""`trace capture`: record with every selected tracer into one archive."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from uetrace.capture import options as o
from uetrace.cli.options import Duration, Size
from uetrace.cli.output import make_console
from uetrace.cli.output_options import output_file_options
from uetrace.units import human_bytes


class ProgressView:
    """Live per-tracer rates on a terminal; nothing on a pipe (CI logs stay readable)."""

    def __init__(self, console: Console, enabled: bool):
        self.console = console
        self.live = Live(console=console, refresh_per_second=4, transient=False) if enabled else None
        self._last: dict[str, tuple[float, int]] = {}

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def update(self, p) -> None:
        if not self.live:
            return
        t = Table(header_style="bold")
        for col in ("tracer", "records", "records/s", "lost"):
            t.add_column(col, justify="right" if col != "tracer" else "left")
        now = time.monotonic()
        for name, st in p.tracers.items():
            prev_t, prev_n = self._last.get(name, (now, st["records"]))
            rate = (st["records"] - prev_n) / (now - prev_t) if now > prev_t else 0.0
            self._last[name] = (now, st["records"])
            t.add_row(name, f"{st['records']:,}", f"{rate:,.0f}", f"{st['lost']:,}",
                      style="red" if st["lost"] else None)
        self.live.update(Group(Text(_title(p), style="bold"), t))


def _range(b: o.Bounds) -> click.IntRange:
    return click.IntRange(b.min, b.max)


def _title(p) -> str:
    left = f", {max(0.0, p.duration - p.elapsed):.0f}s left" if p.duration else ", Ctrl-C to stop"
    return f"capturing: {p.elapsed:.0f}s elapsed{left}; {human_bytes(p.bytes_written)} written"


@click.command("capture")
@click.option("-d", "--duration", type=Duration(), default=None,
              help="How long to record (500ms, 10s, 2m). Default: until Ctrl-C, SIGTERM or SIGHUP.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("capture.tar.zst"),
              show_default=True, help="Archive to write: NAME.partial while capturing, renamed to NAME at the end "
              "(a killed capture leaves NAME.partial).")
@output_file_options
@click.option("--spool-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the segments being written (default: the output's folder; a 0700 "
                   "uetrace-seg-PID-* folder inside it is removed at the end).")
@click.option("--max-size", type=Size(), default=None, metavar="SIZE",
              help="Stop recording when the archive nears SIZE (100M, 2G): it ends below SIZE unless the "
                   "symbol snapshot written at the end is larger than a tenth of it.")
@click.option("--rotate", type=Size(), default=None, metavar="SIZE",
              help="Roll into numbered standalone archives of about SIZE (5M, 1G), like tcpdump -C: "
                   "-o run.tar.zst writes run-000001.tar.zst, run-000002.tar.zst, ... (each with its own "
                   "manifest and symbol snapshot; the offline commands take 'run-*.tar.zst' as one capture). "
                   "With --max-size, that bounds all the parts together. Parts of an earlier capture to the "
                   "same name are refused unless --force, which deletes them.")
@click.option("--keep", type=int, default=None, metavar="N",
              help="--rotate: keep only the newest N parts (the one being written included), deleting the "
                   "oldest as new ones start (like tcpdump -W). Default: keep all.")
@click.option("--upload", "upload_url", default=None, metavar="URL",
              help="Then send the archive with a verified HTTPS PUT (see `trace upload`); the local copy stays.")
@click.option("--upload-ca-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="--upload: trust this CA certificate (PEM).")
@click.option("-t", "--tracers", default=None, metavar="LIST",
              help="Comma-separated tracers: 'proc,lock' is exactly these, '+lock,+alloc' the default set "
                   "plus these (default: proc, sock, tls, stack, net; lock and alloc only when named).")
@click.option("-p", "--pid", "pids", type=int, multiple=True, help="Only record these processes (repeatable).")
@click.option("-c", "--comm", "comms", multiple=True, help="Only record tasks with this command name (repeatable).")
@click.option("--snaplen", type=_range(o.SNAPLEN), default=o.SNAPLEN.default, show_default=True,
              help="Payload bytes kept per socket read/write.")
@click.option("--sock-hooks", type=click.Choice(o.SOCK_HOOKS), default=o.SOCK_HOOKS[0], show_default=True,
              help="sock/tls tracers: the kernel's socket tracepoints (Linux 6.10+; auto falls back where they "
                   "are missing), or programs on every system call (~1.3 us more per request, and a blocking "
                   "read's wait is recorded).")
@click.option("--ring-size", type=_range(o.RING_MIB), default=o.RING_MIB.default, show_default=True, metavar="MIB",
              help="Ring buffer size per tracer, in MiB (a power of two).")
@click.option("--segment-seconds", type=Duration(), default=o.SEGMENT_SECONDS, show_default=True,
              help=f"Roll Parquet segments at this age (and at {o.SEGMENT_BYTES >> 20} MiB).")
@click.option("--alloc-sample", type=_range(o.ALLOC_SAMPLE), default=o.ALLOC_SAMPLE.default, show_default=True,
              metavar="N",
              help="alloc tracer: keep 1 in N heap blocks (by address hash; leak figures are scaled back).")
@click.option("--all-processes", is_flag=True,
              help="lock/alloc tracers: probe every process, not only --pid/--comm (slows the whole system).")
@click.option("--iface", "ifaces", multiple=True, metavar="NAME",
              help="net tracer: interface to attach to (repeatable; default: every interface that is up).")
@click.option("--xdp-mode", type=click.Choice(o.XDP_MODES), default=o.XDP_MODES[0], show_default=True,
              help="net tracer: XDP mode; native may make some NIC drivers reset the link.")
@click.option("--net-snaplen", type=_range(o.NET_SNAPLEN), default=o.NET_SNAPLEN.default, show_default=True,
              help="net tracer: bytes kept of each packet (headers included).")
@click.option("--tc-attach", type=click.Choice(o.TC_ATTACH_MODES), default=o.TC_ATTACH_MODES[0], show_default=True,
              help="net tracer: egress hook; auto uses a TCX link where the kernel has it (>= 6.6).")
@click.option("--freq", type=_range(o.FREQ), default=o.FREQ.default, show_default=True, metavar="HZ",
              help="stack tracer: samples per second on each CPU.")
@click.option("--offcpu", is_flag=True, help="stack tracer: also record off-CPU intervals (sched_switch).")
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="RECIPIENT",
              help="Encrypt the archive with age to this X25519 recipient (age1..., repeatable; "
                   "`trace keygen` makes a key pair). Readers then need --identity; `age -d` opens it too.")
@click.option("--user", default=None, metavar="NAME",
              help="Write the archive as this user, from a process with no privilege (default: the user "
                   "who ran sudo, from SUDO_UID/SUDO_GID; as a root login: root). The output folder must be "
                   "writable by that user.")
@click.option("--no-redact", is_flag=True,
              help="Keep secrets: by default header values such as Authorization and Cookie, URL query values "
                   "and userinfo, and secret-looking command-line arguments are masked before anything is written.")
@click.option("--redact-header", "redact_headers", multiple=True, metavar="NAME",
              help="Also mask the values of this HTTP header (repeatable).")
@click.option("--keep-header", "keep_headers", multiple=True, metavar="NAME",
              help="Do not mask this HTTP header, though it is on the deny list (repeatable).")
@click.option("-q", "--quiet", is_flag=True, help="No live progress view.")
def command(duration, output, force, mode, spool_dir, max_size, rotate, keep, upload_url, upload_ca_cert, tracers,
            pids, comms, snaplen, sock_hooks, ring_size, segment_seconds, alloc_sample, all_processes, ifaces, xdp_mode,
            net_snaplen, tc_attach, freq, offcpu, encrypt_to, user, no_redact, redact_headers, keep_headers, quiet):
    """Record what the tracers see into one archive (needs root).

    Secrets are masked in place (same length) before anything is written:
    see --no-redact, --redact-header, --keep-header, and `trace redact`.

    Ctrl-C, SIGTERM or SIGHUP stops early and still writes a complete archive
    (a third one quits at once, leaving NAME.partial). An existing output is
    refused unless --force. A full disk stops the capture, keeps every finished
    segment and exits 1.

    \b
    Examples:
      sudo trace capture -d 60s -o run.tar.zst
      sudo trace capture -d 10s --tracers sock,proc --pid 1234 -o web.tar.zst
      sudo trace capture -d 10s -t +lock,+alloc --comm myserver -o slow.tar.zst
      sudo trace capture --rotate 100M --keep 10 -o ring.tar.zst   # ring-000001.tar.zst, ...
    """
    from uetrace.capture.parts import check_rotation, part_glob
    from uetrace.capture.session import CaptureSession
    from uetrace.capture.tracers.catalog import TRACERS, select
    from uetrace.errors import BadInputError
    from uetrace.redaction.policy import RedactionPolicy

    if ring_size & (ring_size - 1):
        raise BadInputError(f"--ring-size {ring_size}: must be a power of two (MiB)")
    check_rotation(rotate, keep, max_size)
    if rotate is not None and upload_url:
        raise BadInputError("--upload sends one archive: upload the parts of --rotate with `trace upload`")
    names = select(tracers) if tracers else []
    opts = o.CaptureOptions(output=output, duration=duration, tracers=names, pids=list(pids),
                            comms=list(comms), snaplen=snaplen, sock_hooks=sock_hooks, ring_size=ring_size << 20,
                            segment_seconds=segment_seconds, command_line=sys.argv[:],
                            force=force, mode=mode, spool_dir=spool_dir, max_size=max_size,
                            rotate=rotate, keep=keep,
                            encrypt_to=list(encrypt_to), user=user,
                            net=o.NetOptions(ifaces=list(ifaces), xdp_mode=xdp_mode, snaplen=net_snaplen,
                                             tc_attach=tc_attach),
                            stack=o.StackOptions(freq=freq, offcpu=offcpu),
                            uprobe=o.UprobeOptions(all_processes=all_processes, alloc_sample=alloc_sample),
                            redaction=None if no_redact else RedactionPolicy.make(redact_headers, keep_headers))
    err = make_console(stderr=True)
    if no_redact:
        err.print("[yellow]note:[/] --no-redact: secrets in payloads and command lines are kept as they are "
                  "(`trace redact` masks them in a copy before sharing)")
    costly = [TRACERS[n] for n in names if TRACERS[n].cost]
    if costly and all_processes:
        err.print("[yellow]warning:[/] --all-processes: every process is probed, expect a slower system: "
                  + "; ".join(f"{t.name} {t.cost}" for t in costly))
    elif all_processes:
        err.print("[yellow]warning:[/] --all-processes applies to the lock and alloc tracers only, and neither "
                  "is selected (name them: -t +lock,+alloc)")
    elif costly and (pids or comms):
        err.print("[yellow]note:[/] the target processes will run slower: "
                  + "; ".join(f"{t.name} {t.cost}" for t in costly))
    if upload_url:
        from uetrace.upload import UploadOptions, check_url

        upload_opts = UploadOptions(ca_cert=upload_ca_cert)
        check_url(upload_url, upload_opts)  # a bad URL is refused before anything is recorded
    with ProgressView(err, enabled=not quiet and err.is_terminal) as view:
        session = CaptureSession(opts, on_progress=view.update,
                                 on_notice=lambda text: err.print(f"note: {text}", markup=False, highlight=False))
        manifest = session.run()
    _summary(err, manifest, session.archive.path)
    if session.rotation:
        rot = session.rotation
        deleted = f", the {len(rot.removed)} oldest deleted by --keep" if rot.removed else ""
        err.print(f"{len(rot.parts) + 1} parts written{deleted}: {part_glob(output)}", markup=False,
                  highlight=False)
    if upload_url:
        from uetrace.upload import UploadError, upload

        try:
            res = upload(output, upload_url, upload_opts)
        except UploadError as e:
            raise UploadError(f"{e} (the archive is kept at {output})") from None
        err.print(f"uploaded {output} to {res.url}: sha256 {res.sha256}"
                  + (", checked" if res.verified_by else ", the server allows no check of what arrived"),
                  markup=False, highlight=False)


def _summary(console: Console, m: dict, output: Path) -> None:
    for name, t in m["tracers"].items():
        if not t.get("attached"):
            console.print(f"[yellow]warning:[/] tracer {name} not attached: {t.get('reason')}")
        for f in t.get("attach_failures", []) if t.get("attached") else []:
            console.print(f"[yellow]warning:[/] {name}: {escape(f['point'])}: {escape(f['error'][:300])}",
                          highlight=False)
        if t.get("lost"):
            console.print(f"[red]warning:[/] {name} lost {t['lost']:,} records (see trace info)")
    masked = (m.get("redaction") or {}).get("masked") or {}
    if masked:
        console.print("redacted: " + ", ".join(f"{n:,} values in {k}" for k, n in masked.items()), highlight=False)
    total = sum(t.get("records", 0) for t in m["tracers"].values())
    size = output.stat().st_size if output.exists() else 0
    console.print(f"wrote {output} ({human_bytes(size)}): {total:,} records, "
                  f"stopped by {m.get('stop_reason', 'duration')}")
