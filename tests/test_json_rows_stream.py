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


def _random_row(rng) -> dict:
    def value():
        k = rng.random()
        if k < 0.1:
            return None
        if k < 0.2:
            return rng.choice([True, False])
        if k < 0.4:
            return rng.randint(-2**70, 2**70)
        if k < 0.55:
            return rng.choice([0.1, 1e300, -2.5, 1 / 3, 0.0, 1e-320, float("nan"), float("inf")])
        if k < 0.8:
            return "".join(rng.choice("aé\u2028\"\\\n\t\x00x/😀") for _ in range(rng.randint(0, 8)))
        if k < 0.95:
            return ["".join(rng.choice("ab\"\\é") for _ in range(3)) for _ in range(rng.randint(0, 3))]
        return rng.choice([(1, 2), {"n": 1}, [1, "x"], b"raw"])  # not flat: the general encoder's
    return {"".join(rng.choice("kq\"é") for _ in range(3)) + str(i): value() for i in range(rng.randint(0, 6))}


def test_flat_rows_print_what_json_dumps_prints(capsys):
    """Rows of scalars are written without json's pure-Python indenting encoder: same bytes."""
    import random
    rng = random.Random(7)
    rows = [_random_row(rng) for _ in range(3000)]
    echo_json(rows)
    whole = capsys.readouterr().out
    echo_json_list(iter(rows))
    assert capsys.readouterr().out == whole
