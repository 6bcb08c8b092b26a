"""`trace requests --json` prints its rows one at a time (uetrace/cli/output.py:echo_json_list): the
bytes must be exactly those of one json.dumps of the whole list, which the command printed before."""

from __future__ import annotations

import pytest

from uetrace.cli.output import echo_json, echo_json_list

CASES = [
    [],
    [{}],
    [[]],
    [{"a": "line\nbreak \\n", "b": [1, {"c": None, "d": []}], "e": {}}],
    [1, "two", {"k": {"x": [1, 2]}}, None, 3.5, True],
    [{"path": "/é?q=\u2028", "bytes": b"x"}],  # default=str turns bytes into their repr, as before
]


@pytest.mark.parametrize("data", CASES)
def test_streamed_list_prints_what_one_dump_printed(data, capsys):
    echo_json(data)
    whole = capsys.readouterr().out
    echo_json_list(iter(data))
    assert capsys.readouterr().out == whole
