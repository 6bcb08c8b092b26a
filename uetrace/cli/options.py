"""Click pieces every reading command shares: the archive argument with the reader's limits
(--strict, --max-expand) and key (--identity), --json, --format, and the parameter types for durations and sizes as
users type them."""

from __future__ import annotations

import glob as globlib
import re
from pathlib import Path

import click

from uetrace.durations import parse_duration
from uetrace.units import parse_size

FORMATS = ("table", "csv", "json")
_LIMITS_KEY = "uetrace.read_limits"
READING_KEY = "uetrace.reading"  # set on a command that reads an archive: its failures are bad input


class Size(click.ParamType):
    """512M, 4G, or plain bytes."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


def _store(ctx: click.Context, param: click.Parameter, value):
    ctx.meta[READING_KEY] = True
    ctx.meta.setdefault(_LIMITS_KEY, {})[param.name] = value
    return value


def _limit_options(f):
    f = click.option("--identity", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     expose_value=False, callback=_store, envvar="UETRACE_IDENTITY", show_envvar=True,
                     metavar="FILE", help="age key file (`trace keygen`) to open an encrypted archive.")(f)
    f = click.option("--strict", is_flag=True, expose_value=False, callback=_store,
                     help="Fail, instead of warning, when a segment does not match the manifest's sha256 "
                     "or is not a readable Parquet file.")(f)
    return click.option("--max-expand", type=Size(), default=None, expose_value=False, callback=_store,
                        envvar="UETRACE_MAX_EXPAND", show_envvar=True, metavar="SIZE",
                        help="Refuse archives that unpack (or whose tables decode) to more than SIZE "
                        "[default: members 64 and tables 1024 times the archive's size, at least 256M, at most 32G]."
                        )(f)


def archive_argument(f):
    """The ARCHIVE argument and the options that bound what opening it may cost. The archive is
    untrusted: see docs/architecture.md, "Reading untrusted archives"."""
    return click.argument("archive", type=click.Path(dir_okay=False, path_type=Path), callback=_store,
                          expose_value=True)(_limit_options(f))


def archives_argument(f):
    """ARCHIVE... (one or more) with the same limits, for commands that read several captures. A
    pattern in quotes ('run-*.tar.zst') is expanded here, in name order (rotated parts sort in order)."""
    return click.argument("archives", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path),
                          callback=_store_archives, expose_value=True)(_limit_options(f))


def archives_and_statement_argument(f):
    """ARCHIVE... [SQL] as `archives`, split by split_statement (one variadic argument: click cannot end
    one with an optional one)."""
    return click.argument("archives", nargs=-1, required=True, metavar="ARCHIVE... [SQL]", callback=_store,
                          expose_value=True)(_limit_options(f))


_GLOB = re.compile(r"[*?\[]")


def expand_archives(values: tuple) -> tuple[Path, ...]:
    """Each pattern (a name with * ? [ that is no file) as the files it matches, sorted."""
    out: list[Path] = []
    for v in values:
        text = str(v)
        if _GLOB.search(text) and not Path(text).exists():
            found = sorted(globlib.glob(text))
            if not found:
                raise click.BadParameter(f"no file matches {text!r}")
            out.extend(Path(x) for x in found)
        else:
            out.append(Path(text))
    return tuple(out)


def _store_archives(ctx: click.Context, param: click.Parameter, value):
    return _store(ctx, param, expand_archives(value))


def split_statement(args: tuple[str, ...]) -> tuple[tuple[Path, ...], str | None]:
    """(archives, SQL) from ARCHIVE... [SQL]: with two or more arguments the last is the statement unless
    it names a file, matches one, or ends like an archive."""
    last = args[-1] if args else ""
    is_archive = (Path(last).exists() or last.endswith((".tar.zst", ".zst", ".partial"))
                  or (_GLOB.search(last) is not None and bool(globlib.glob(last))))
    if len(args) >= 2 and not is_archive:
        return expand_archives(args[:-1]), last
    return expand_archives(args), None


def read_limits():
    """The ReadLimits the current command's options ask for."""
    from uetrace.analyze.archive import ReadLimits

    given = click.get_current_context().meta.get(_LIMITS_KEY, {})
    return ReadLimits(max_expand=given.get("max_expand"), strict=bool(given.get("strict")),
                      identity=given.get("identity"))


def json_option(help: str = "Machine-readable report."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def format_option(f):
    """--format table|csv|json for commands that print rows (see output.print_rows)."""
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format.")(f)


class Duration(click.ParamType):
    """500ms, 10s, 2m, 1h, or plain seconds."""

    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
