"""`trace keygen`: an age key pair for `trace capture --encrypt-to` and `--identity`."""

from __future__ import annotations

from pathlib import Path

import click

from uetrace.cli.output_options import output_file_options


@click.command("keygen")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Key file to write (0600 unless --mode): the secret key, in age-keygen's format.")
@output_file_options
def command(output: Path, force: bool, mode: int):
    """Make an age X25519 key pair: write the secret key to OUTPUT, print the recipient.

    \b
    Examples:
      trace keygen -o key.txt
      sudo trace capture -d 10s --encrypt-to "$(trace keygen -o key.txt)" -o run.tar.zst.age
      trace analyze --identity key.txt run.tar.zst.age
      age -d -i key.txt run.tar.zst.age > run.tar.zst
    """
    from uetrace.encryption import new_key_pair
    from uetrace.output_files import write_output

    text, recipient = new_key_pair()
    write_output(output, text, force=force, mode=mode)
    click.echo(recipient)
