"""Rows of an Arrow table as JSON text, computed a column at a time.

`trace requests --json` prints millions of rows. Made into one dict per row and encoded by the json
module (whose C encoder is not used when indent= is given), a row cost ~12 us. Here each column becomes
an array of its rows' `"key": value` text with pyarrow.compute (or codes into the texts of its few
distinct values), and one element-wise join per row puts the columns together, a block of rows at a
time: Python touches only what needs it (a dictionary's distinct strings, strings that need escaping,
distinct floats, non-empty lists), and a row costs under 1 us.

The text of a row is exactly what `json.dumps(row, indent=1)` gives for it as a dict (ensure_ascii:
strings escaped as json.encoder.encode_basestring_ascii does; floats as float.__repr__, NaN and
Infinity as json writes them; ints in decimal; true, false, null), every line after the first indented
one more space: the layout of an item of a list written with indent=1, as in

    [
     {
      "key": value,
      "list": [
       "a",
       "b"
      ],
      "empty": []
     },
     {...}
    ]

Keys are the columns' names, in the table's order. Values of types not formatted here (structs,
timestamps, binary, ...) are encoded one at a time by the json module with default=str, as
`json.dumps(rows, indent=1, default=str)` would encode them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["json_item_blocks", "json_item_texts", "text_bytes"]

_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]

# A character encode_basestring_ascii escapes: outside printable ASCII (0x20-0x7e), or " or \.
_NEEDS_ESCAPE = r"[^\x20\x21\x23-\x5b\x5d-\x7e]"
_STR = pa.string()
BLOCK_ROWS = 256  # rows made into text at a time: ~256 KB for `trace requests`, in a core's L2 cache


@dataclass(frozen=True)
class _Coded:
    """A column (or a run of columns) as codes into a few texts: rows with one code have one text."""

    texts: pa.Array  # strings, no nulls
    codes: np.ndarray  # int64, one per row, each < len(texts)


_Piece = str | pa.Array | _Coded  # the same text for every row, each row's own, or one of a few


def json_item_texts(data: pa.Table | pa.RecordBatch, before: str = "") -> pa.ChunkedArray:
    """Per row of `data`, `before + json.dumps(row_as_dict, indent=1).replace("\\n", "\\n ")`: the row
    as an item of a JSON list written with indent=1, without the item's leading space (see the module's
    docstring), after `before`."""
    return pa.chunked_array(list(json_item_blocks(data, before)), _STR)


def json_item_blocks(data: pa.Table | pa.RecordBatch, before: str = "",
                     rows: int = BLOCK_ROWS) -> Iterator[pa.Array]:
    """json_item_texts(data, before), `rows` rows at a time, each block made when asked: written before
    the next is made, a block's text is still in the CPU's cache (a pass over text that is not costs as
    much as making it)."""
    for batch in data.to_batches() if isinstance(data, pa.Table) else [data]:
        n = batch.num_rows
        if not n:
            continue
        plan = _plan(batch, before)
        for start in range(0, n, rows):
            yield _render(plan, start, min(start + rows, n))


def text_bytes(texts: pa.Array) -> memoryview:
    """The UTF-8 of all the strings of `texts` one after the other (''.join(texts)), without a copy."""
    if texts.type != _STR:
        raise TypeError(f"text_bytes takes a string array, not {texts.type}")
    if not len(texts) or texts.buffers()[2] is None:
        return memoryview(b"")
    offsets = np.frombuffer(texts.buffers()[1], np.int32, len(texts) + 1, texts.offset * 4)
    return memoryview(texts.buffers()[2])[int(offsets[0]):int(offsets[-1])]


def _plan(batch: pa.RecordBatch, before: str) -> list[_Piece]:
    """The pieces whose element-wise join is the text of each row of batch. A piece costs a pass over
    its text in the join (~10 ns a row), so neighbouring columns of few distinct values (a table of
    requests has runs of them: pids and threads, names, flags, columns null throughout) are made one
    piece: their texts joined once per distinct combination, to be taken by row."""
    n = batch.num_rows
    most = max(n // 4, 16)  # distinct combinations beyond which a run of coded columns ends
    pieces: list[_Piece] = []
    run: list[_Coded] = []
    combined, bound = np.zeros(n, np.int64), 1  # the run's combined codes, each < bound

    def end_run() -> None:
        if len(run) > 1:
            pieces.append(_fused(run, combined, bound))
        elif run:
            pieces.append(run[0] if len(run[0].texts) > 1 else run[0].texts[0].as_py())
        run.clear()

    sep = before + "{\n  "
    for name, column in zip(batch.schema.names, batch.columns):
        for piece in _column(column, sep + _encode_str(name) + ": "):
            if not isinstance(piece, _Coded):
                end_run()
                pieces.append(piece)
                continue
            m = len(piece.texts)
            if run and bound * m > most:  # maybe too many combinations: count them
                combined, rows = _compress(combined, bound)
                bound = len(rows)
                if bound * m > most:
                    more, rows = _compress(combined * m + piece.codes, bound * m)
                    if len(rows) <= most:
                        run.append(piece)
                        combined, bound = more, len(rows)
                        continue
                    end_run()
            if run:
                run.append(piece)
                combined, bound = combined * m + piece.codes, bound * m
            else:
                run.append(piece)
                combined, bound = piece.codes, m
        sep = ",\n  "
    end_run()
    pieces.append("\n }" if batch.num_columns else before + "{}")
    merged: list[_Piece] = []  # texts for every row next to each other made one
    for p in pieces:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return merged


def _render(plan: list[_Piece], start: int, stop: int) -> pa.Array:
    """Rows start to stop of the plan's join."""
    args = [p if isinstance(p, str) else p.slice(start, stop - start) if isinstance(p, pa.Array)
            else p.texts.take(pa.array(p.codes[start:stop])) for p in plan]
    if len(args) == 1:
        return args[0] if not isinstance(args[0], str) else pa.array([args[0]] * (stop - start), _STR)
    return pc.binary_join_element_wise(*[pa.scalar(a, _STR) if isinstance(a, str) else a for a in args], "")


def _compress(codes: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """codes (each < bound) numbered again 0..k-1 (k distinct ones, in their order), and a row of each."""
    if bound <= 4 * len(codes) + 4096:
        seen = np.zeros(bound, bool)
        seen[codes] = True
        number = np.cumsum(seen) - 1
        codes = number[codes]
        k = int(number[-1]) + 1
    else:
        distinct, codes = np.unique(codes, return_inverse=True)
        codes = codes.reshape(-1)
        k = len(distinct)
    rows = np.empty(k, np.int64)
    rows[codes] = np.arange(len(codes))
    return codes, rows


def _fused(run: list[_Coded], combined: np.ndarray, bound: int) -> _Piece:
    """A run of coded columns as one: per distinct combination (of the combined codes, each < bound)
    the columns' texts joined."""
    codes, rows = _compress(combined, bound)
    texts = pc.binary_join_element_wise(*[c.texts.take(pa.array(c.codes[rows])) for c in run], "")
    return texts[0].as_py() if len(texts) == 1 else _Coded(texts, codes)


def _column(arr: pa.Array, prefix: str) -> list[_Piece]:
    """The pieces of each row's `prefix` + JSON text of its value in `arr` (the value's nested lines
    indented two spaces more than json.dumps(value, indent=1) indents them)."""
    t = arr.type
    n = len(arr)
    if arr.null_count == n:
        return [_Coded(pa.array([prefix + "null"], _STR), np.zeros(n, np.int64))]
    if pa.types.is_dictionary(t):
        return [_dictionary(arr, prefix)]
    if pa.types.is_integer(t):
        coded = _few_ints(arr, prefix)
        if coded is not None:
            return [coded]
        text = pc.cast(arr, _STR)  # its own piece: adding the prefix to each value would cost as much
        return [prefix, text if not text.null_count else pc.fill_null(text, "null")]
    if pa.types.is_boolean(t):
        return [_Coded(pa.array([prefix + "false", prefix + "true", prefix + "null"], _STR),
                       _codes(arr, 2, lambda a: a.to_numpy(zero_copy_only=False).astype(np.int64)))]
    if pa.types.is_float64(t) or pa.types.is_float32(t):
        return [_floats(arr, prefix)]
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (pa.types.is_string(t.value_type)
                                                                or pa.types.is_large_string(t.value_type)):
        return [_string_lists(arr, prefix)]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [_strings(arr, prefix)]
    return [_one_at_a_time(arr, prefix)]


def _texts(arr: pa.Array, prefix: str) -> pa.Array:
    """`prefix` + the JSON text of each value of arr, as one array."""
    pieces = [p.texts.take(pa.array(p.codes)) if isinstance(p, _Coded) else p for p in _column(arr, prefix)]
    if len(pieces) == 1:
        return pieces[0] if not isinstance(pieces[0], str) else pa.array([pieces[0]] * len(arr), _STR)
    return pc.binary_join_element_wise(*pieces, "")


def _codes(arr: pa.Array, null: int, values: Callable[[pa.Array], np.ndarray]) -> np.ndarray:
    """values(arr) as int64 codes, `null` where arr is null."""
    if not arr.null_count:
        return values(arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    codes = values(arr.filter(arr.is_valid()))
    out = np.full(len(arr), null, np.int64)
    out[valid] = codes
    return out


def _dictionary(arr: pa.DictionaryArray, prefix: str) -> _Coded:
    """Each distinct value encoded once, its rows coded by the indices. A dictionary larger than the
    array (of a slice, or a take, of a big table) has only the values in use encoded."""
    indices, dictionary = arr.indices, arr.dictionary
    if len(dictionary) > len(arr):
        used = pc.unique(indices.drop_null())
        dictionary, indices = dictionary.take(used), pc.index_in(indices, value_set=used)
    texts = pa.concat_arrays([_texts(dictionary, prefix), pa.array([prefix + "null"], _STR)])
    return _Coded(texts, _codes(indices, len(dictionary), lambda a: a.to_numpy(zero_copy_only=False).astype(np.int64)))


def _few_ints(arr: pa.Array, prefix: str) -> _Coded | None:
    """Integers of a small range and few distinct values (pids, statuses, counts) coded; None: not."""
    n = len(arr)
    low, high = pc.min_max(arr).values()
    low, high = low.as_py(), high.as_py()
    if high - low > n:
        return None
    values = pc.fill_null(arr, low).to_numpy(zero_copy_only=False)
    if values.dtype == np.uint64:
        offsets = (values - np.uint64(low)).astype(np.int64)
    else:
        offsets = values.astype(np.int64) - low
    null = high - low + 1
    if arr.null_count:
        offsets[~arr.is_valid().to_numpy(zero_copy_only=False)] = null
    codes, rows = _compress(offsets, null + 1)
    if len(rows) > max(n // 4, 16):
        return None
    text = pc.cast(pa.array(values[rows]), _STR)
    if arr.null_count:
        text = pc.if_else(pa.array(offsets[rows] == null), pa.scalar("null", _STR), text)
    texts = pc.binary_join_element_wise(prefix, text, "")
    return _Coded(texts, codes)


def _strings(arr: pa.Array, prefix: str) -> pa.Array:
    """Strings in double quotes; those with a character to escape escaped by the json module."""
    if arr.type != _STR:
        arr = pc.cast(arr, _STR)
    out = pc.binary_join_element_wise(prefix + '"', arr, '"', "")
    if not _plain(arr):
        escape = pc.fill_null(pc.match_substring_regex(arr, _NEEDS_ESCAPE), False)
        rows = np.flatnonzero(escape.to_numpy(zero_copy_only=False))
        if len(rows):
            texts = [prefix + _encode_str(s) for s in arr.take(pa.array(rows)).to_pylist()]
            out = pc.replace_with_mask(out, escape, pa.array(texts, _STR))
    return out if not out.null_count else pc.fill_null(out, prefix + "null")


def _plain(arr: pa.Array) -> bool:
    """True if no byte of arr's strings needs escaping (printable ASCII but " and \\), on all of them at
    once (a regular expression per string cost ten times as much); False: maybe some."""
    raw = text_bytes(arr)
    if not len(raw):
        return True
    b = np.frombuffer(raw, np.uint8)
    if b.min() < 0x20 or b.max() > 0x7E:
        return False
    raw = bytes(raw)
    return b'"' not in raw and b"\\" not in raw


def _float_text(v: float) -> str:
    """A float as json.dumps writes it (allow_nan: NaN, Infinity, -Infinity)."""
    if math.isfinite(v):
        return float.__repr__(v)
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _floats(arr: pa.Array, prefix: str) -> _Coded:
    """float.__repr__ of each distinct value (Arrow's float to string is not Python's repr): values
    told apart by their bits, so 0.0 and -0.0 stay two."""
    if arr.type != pa.float64():
        arr = pc.cast(arr, pa.float64())  # exact: the Python float as_py() gives for a float32
    bits = arr.to_numpy(zero_copy_only=False).view(np.int64)  # a null becomes NaN: a code of its own below
    distinct, codes = np.unique(bits, return_inverse=True)
    texts = [prefix + _float_text(v) for v in distinct.view(np.float64).tolist()]
    codes = codes.reshape(-1).astype(np.int64)
    if arr.null_count:
        codes[~arr.is_valid().to_numpy(zero_copy_only=False)] = len(texts)
        texts.append(prefix + "null")
    return _Coded(pa.array(texts, _STR), codes)


def _string_lists(arr: pa.Array, prefix: str) -> _Coded:
    """`[]` for an empty list (most rows of a column such as `anomalies`), the others made in Python."""
    codes = arr.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)  # 0: null, 1: []
    texts = [prefix + "null", prefix + "[]"]
    full = np.flatnonzero(pc.fill_null(pc.greater(pc.list_value_length(arr), 0), False).to_numpy(zero_copy_only=False))
    if len(full):
        codes[full] = np.arange(2, 2 + len(full))
        texts += [prefix + "[\n   " + ",\n   ".join("null" if s is None else _encode_str(s) for s in v) + "\n  ]"
                  for v in arr.take(pa.array(full)).to_pylist()]
    return _Coded(pa.array(texts, _STR), codes)


def _one_at_a_time(arr: pa.Array, prefix: str) -> pa.Array:
    """Values of any other type: as_py() encoded by the json module, as it would be within the row."""
    return pa.array([prefix + json.dumps(v, indent=1, default=str).replace("\n", "\n  ") for v in arr.to_pylist()],
                    _STR)
