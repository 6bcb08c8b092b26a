"""--force and --mode: the options of every command that writes a file (uetrace/output_files.py)."""

from __future__ import annotations

import click

from uetrace.errors import BadInputError
from uetrace.output_files import DEFAULT_MODE, parse_mode


class FileMode(click.ParamType):
    """An octal permission mode: 600, 0640, 0o644."""

    name = "mode"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_mode(str(value))
        except BadInputError as e:
            self.fail(str(e), param, ctx)


def output_file_options(f):
    f = click.option("--mode", type=FileMode(), default=f"{DEFAULT_MODE:04o}", show_default=True,
                     help="Permissions of the file written (it may hold payloads, command lines, paths).")(f)
    return click.option("--force", is_flag=True,
                        help="Replace the output if it exists (a symlink there is replaced, not followed).")(f)
