"""rewardkit.data against hostile input: a corpus of hand-made broken files, monsters made at
test time (5 MB fields, Parquet columns of the wrong type) and hypothesis (damaged files, the same
rows in every format, odd arguments).

The promise (issue 8): every input either loads correctly or raises `RewardDataError` naming the
file, and the row and column where there is one; no other exception escapes `rewardkit.data`.
tests/test_data.py covers layouts and row validation; this file covers everything around them.
The corpus is described file by file in tests/data/broken/README.md.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardkit.data import RewardDataError, iter_reward_rows, load_reward_data, parse_column_map

BROKEN = Path(__file__).parent / "data" / "broken"
FIVE_MB = 5 * 1024 * 1024
PAIR = {"prompt": "What is the capital of France?", "chosen": "Paris.", "rejected": "Lyon, I think."}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Loads:
    """The file loads: `rows` rows, the first one equal to `first` when given."""

    rows: int
    first: dict | None = None


@dataclass(frozen=True)
class Refused:
    """The file is refused: `fragment` in the message, `where` as worded, `row`/`column` as set.
    `skipped`: rows loaded with skip_invalid=True (None: still refused, it is not a row problem)."""

    fragment: str
    where: str | None = None
    row: int | None = None
    column: str | None = None
    skipped: int | None = None


CORPUS = {
    # encodings: UTF-8 with or without BOM loads; anything else is named, with the line
    "latin1.jsonl": Refused("not UTF-8", where="line 2"),
    "latin1.csv": Refused("not UTF-8", where="line 3"),
    "utf16_bom.jsonl": Refused("UTF-16", where="line 1"),
    "utf16_no_bom.csv": Refused("UTF-16", where="line 1"),
    "utf16_no_bom.json": Refused("UTF-16", where="line 1"),
    "utf8_bom.jsonl": Loads(2, {**PAIR, "margin": None}),
    "utf8_bom.csv": Loads(2, {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": None}),
    # line ends, quoting, layouts
    "crlf.jsonl": Loads(2, {**PAIR, "margin": None}),
    "quoted_newlines.csv": Loads(2, {"prompt": "Write a poem\r\nabout rain", "chosen": 'Rain falls,\r\nsoftly "here"',
                                     "rejected": "no", "margin": None}),
    "unclosed_quote.csv": Refused("closing quote", where="data row 2 (line 3)", row=2, skipped=1),
    "wrong_field_count.csv": Refused("4 fields but the header has 3", where="data row 2 (line 3)", row=2, skipped=1),
    "duplicate_header.csv": Refused("more than once: chosen", where="line 1"),
    "mixed_layouts.jsonl": Refused("looks like mse", where="line 3", row=3),
    "mixed_layouts.csv": Refused("looks like mse", where="data row 2 (line 3)", row=2),
    "mixed_layouts.json": Refused("looks like ranking", where="element 2", row=2),
    # JSON syntax
    "trailing_comma.json": Refused("trailing comma", where="line 12"),
    "trailing_comma_row.jsonl": Refused("trailing comma", where="line 2", row=2, skipped=1),
    "json_lines_in.json": Refused("name it .jsonl", where="line 2"),
    "json_array_in.jsonl": Refused("name it .json", where="line 1", row=1),
    "deeply_nested.json": Refused("nested too deeply"),
    "deeply_nested_value.jsonl": Refused("message 1 must be an object", where="line 2", row=2, column="prompt", skipped=1),
    "lone_surrogate.jsonl": Refused("unpaired surrogate", where="line 2", row=2, column="chosen", skipped=1),
    "huge_number.jsonl": Refused("finite number", where="line 2", row=2, column="reward", skipped=1),
    # empty and compressed
    "empty.jsonl": Refused("no rows"),
    "empty.csv": Refused("no rows"),
    "empty.json": Refused("no rows"),
    "empty.parquet": Refused("Parquet"),
    "blank_lines.jsonl": Refused("no rows"),
    "empty.jsonl.gz": Refused("no rows"),
    "truncated.jsonl.gz": Refused("cannot read the file"),
    "not_gzip.jsonl.gz": Refused("Not a gzipped file"),
}


def _load(path: Path | str, **kwargs) -> list[dict]:
    """Load twice, whole and streamed: both ways must agree row for row (or fail alike)."""
    rows = load_reward_data(path, **kwargs).rows
    assert [row for _, row in iter_reward_rows(path, **kwargs)] == rows
    return rows


def _check_error(err: RewardDataError, source: Path | str | None) -> None:
    """What every data error owes the user: one short line, naming the file, and a row
    whenever it names a column."""
    text = str(err)
    assert "\n" not in text and len(text) < 2000, text[:300]
    if source is not None:
        assert err.source == str(source) and str(source) in text
    if err.column is not None:
        assert err.row is not None and f"column {err.column!r}" in text


# ---- the corpus of hand-made broken files ----------------------------------------------------

def test_every_corpus_file_has_an_expectation():
    """A file added to tests/data/broken without an expected outcome would test nothing."""
    files = {path.name for path in BROKEN.iterdir() if path.name != "README.md"}
    assert files == set(CORPUS)
    assert max(path.stat().st_size for path in BROKEN.iterdir()) <= 8192  # small, hand-made


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_file_loads_or_is_refused_as_expected(name):
    path, expected = BROKEN / name, CORPUS[name]
    if isinstance(expected, Loads):
        rows = _load(path)
        assert len(rows) == expected.rows
        assert expected.first is None or rows[0] == expected.first
        return
    with pytest.raises(RewardDataError, match=expected.fragment) as info:
        _load(path)
    err = info.value
    _check_error(err, path)
    assert (err.where, err.row, err.column) == (expected.where, expected.row, expected.column)
    if expected.skipped is None:  # not a row problem: skipping rows cannot help
        with pytest.raises(RewardDataError):
            _load(path, skip_invalid=True)
    else:
        assert len(_load(path, skip_invalid=True)) == expected.skipped


def test_bom_is_dropped_at_the_start_of_the_file_only():
    """U+FEFF inside the data (here: the start of a CSV line) is text, not a byte-order mark."""
    rows = _load(BROKEN / "utf8_bom.csv")
    assert rows[0]["prompt"] == "What is 2+2?" and rows[1]["prompt"] == "\ufeffWhat is 3+3?"


def test_truncated_gzip_streams_the_rows_before_the_damage():
    rows = iter_reward_rows(BROKEN / "truncated.jsonl.gz")
    first = next(rows)
    assert first[0] == 1 and first[1]["chosen"] == "Paris 0."
    with pytest.raises(RewardDataError, match="cannot read the file") as info:
        list(rows)
    _check_error(info.value, BROKEN / "truncated.jsonl.gz")


def test_folder_of_good_corpus_files_loads_in_name_order(tmp_path):
    for name in ("crlf.jsonl", "quoted_newlines.csv", "utf8_bom.jsonl"):
        shutil.copy(BROKEN / name, tmp_path / name)
    data = load_reward_data(tmp_path)
    assert len(data) == 6 and data.sources == [str(tmp_path / n) for n in sorted(p.name for p in tmp_path.iterdir())]


# ---- monsters made at test time --------------------------------------------------------------

def _write(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format the suffix names (all rows share their columns)."""
    name = path.name
    if name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0))
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps({"data": rows}), encoding="utf-8")
    elif name.endswith(".csv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(rows[0]))
            writer.writerows([[_cell(row[key]) for key in rows[0]] for row in rows])
    elif name.endswith(".parquet"):
        _write_parquet(path, rows)
    else:
        raise ValueError(name)
    return path


def _cell(value) -> str:
    """How a spreadsheet would write a value: lists as JSON text, nothing as an empty cell."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list) else repr(value) if isinstance(value, float) else str(value)


def _write_parquet(path: Path, rows: list[dict]) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    columns = {key: [row[key] for row in rows] for key in rows[0]}
    for key in ("margin", "reward"):  # numbers of one type per column, as Parquet wants
        if key in columns:
            columns[key] = pa.array([None if v is None else float(v) for v in columns[key]], pa.float64())
    pq.write_table(pa.table(columns), path)


FORMATS = ["a.jsonl", "a.json", "a.csv", "a.parquet", "a.jsonl.gz"]


@pytest.mark.parametrize("name", FORMATS)
def test_five_megabyte_field_loads_in_every_format(tmp_path, name):
    big = "word " * (FIVE_MB // 5)
    rows = _load(_write(tmp_path / name, [PAIR, {**PAIR, "chosen": big}]))
    assert len(rows) == 2 and rows[1]["chosen"] == big


@pytest.mark.parametrize("name", ["a.jsonl", "a.csv", "a.jsonl.gz"])
def test_a_big_field_is_held_once_while_its_row_is_used(tmp_path, name):
    """While `score` worked on a row, the readers still held its raw line, the decoded line and
    (CSV) csv's field buffer of 4 bytes a character: 8 copies of a 50 MB field, 3 for JSON Lines."""
    import gc
    import tracemalloc

    big = "wörd " * (FIVE_MB // 5)
    path = _write(tmp_path / name, [{**PAIR, "chosen": big}, PAIR])
    tracemalloc.start()
    try:
        rows = iter_reward_rows(path)
        _, row = next(rows)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        assert row["chosen"] == big and [number for number, _ in rows] == [2]
    finally:
        tracemalloc.stop()
    assert held < 1.5 * FIVE_MB, held


@pytest.mark.parametrize("name", ["a.jsonl", "a.csv"])
def test_five_megabyte_bad_value_gives_a_short_message(tmp_path, name):
    """The message names the problem, never the 5 MB that caused it."""
    path = _write(tmp_path / name, [{**PAIR, "margin": 1}, {**PAIR, "margin": "x" * FIVE_MB}])
    with pytest.raises(RewardDataError, match="must be a number") as info:
        _load(path)
    _check_error(info.value, path)
    assert (info.value.row, info.value.column) == (2, "margin")
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(PAIR) + "\n" + '{"prompt": "' + "x" * FIVE_MB + "\n")
    with pytest.raises(RewardDataError, match="broken JSON") as info:
        _load(broken)
    _check_error(info.value, broken)


def test_csv_header_with_100000_columns_is_refused_quickly(tmp_path):
    """The duplicate-column check once compared every name with every other: hours here."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(100_000)) + "\n" + ",".join("x" * 100_000) + "\n")
    started = time.perf_counter()
    with pytest.raises(RewardDataError, match="cannot tell") as info:
        _load(path)
    assert time.perf_counter() - started < 10
    _check_error(info.value, path)


def _parquet_cases():
    """(table, error fragment or None when it loads, column): each a Parquet writer's way of
    typing a column that rewardkit reads as text or as a number."""
    pa = pytest.importorskip("pyarrow")
    import datetime
    import decimal

    import numpy as np

    def mse(reward):
        return pa.table({"prompt": ["p"], "completion": ["c"], "reward": reward})

    return {
        "int chosen": (pa.table({"prompt": ["p"], "chosen": [5], "rejected": ["b"]}), "must be text", "chosen"),
        "binary prompt": (pa.table({"prompt": pa.array([b"p"]), "chosen": ["a"], "rejected": ["b"]}), "binary data", "prompt"),
        "struct chosen": (pa.table({"prompt": ["p"], "chosen": [{"x": 1}], "rejected": ["b"]}), "an object", "chosen"),
        "date prompt": (pa.table({"prompt": [datetime.date(2024, 1, 1)], "completion": ["c"], "reward": [1.0]}), "must be text", "prompt"),
        "text reward": (mse(["high"]), "must be a number", "reward"),
        "bool reward": (mse([True]), "must be a number", "reward"),
        "timestamp reward": (mse(pa.array([datetime.datetime(2024, 1, 1)], pa.timestamp("s"))), "must be a number", "reward"),
        "duration reward": (mse(pa.array([datetime.timedelta(1)], pa.duration("s"))), "must be a number", "reward"),
        "int responses": (pa.table({"prompt": ["p"], "responses": [[1, 2]]}), "must be text", "responses"),
        "text responses": (pa.table({"prompt": ["p"], "responses": ["a, b"]}), "must be a list", "responses"),
        "nested responses": (pa.table({"prompt": ["p"], "responses": [[["a"], ["b"]]]}), "must be text", "responses"),
        "text ranks": (pa.table({"prompt": ["p"], "responses": [["a", "b"]], "ranks": [["x", "y"]]}), "must be a number", "ranks"),
        "decimal reward": (mse(pa.array([decimal.Decimal("1.5")], pa.decimal128(5, 2))), None, None),
        "float16 reward": (mse(pa.array(np.array([1.5], np.float16))), None, None),
        "numeric text reward": (mse(pa.array(["1.5"], pa.large_string())), None, None),
        "dictionary prompt": (pa.table({"prompt": pa.array(["p"]).dictionary_encode(), "completion": ["c"],
                                        "reward": [1.5]}), None, None),
    }


@pytest.mark.parametrize("case", ["int chosen", "binary prompt", "struct chosen", "date prompt", "text reward",
                                  "bool reward", "timestamp reward", "duration reward", "int responses",
                                  "text responses", "nested responses", "text ranks", "decimal reward",
                                  "float16 reward", "numeric text reward", "dictionary prompt"])
def test_parquet_columns_of_the_wrong_type(tmp_path, case):
    import pyarrow.parquet as pq

    table, fragment, column = _parquet_cases()[case]
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path)
    if fragment is None:
        rows = _load(path)
        assert rows[0].get("reward", 1.5) == 1.5 and rows[0]["prompt"] == "p"
        return
    with pytest.raises(RewardDataError, match=fragment) as info:
        _load(path)
    _check_error(info.value, path)
    assert (info.value.row, info.value.column, info.value.where) == (1, column, "row 1")


def test_parquet_truncated_or_bad_deep_in_a_later_batch(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    chosen = [f"answer {i}" for i in range(3000)]
    chosen[2499] = ""  # in the third record batch of 1024 rows
    pq.write_table(pa.table({"prompt": ["p"] * 3000, "chosen": chosen, "rejected": ["no"] * 3000}),
                   tmp_path / "big.parquet", row_group_size=500)
    with pytest.raises(RewardDataError) as info:
        _load(tmp_path / "big.parquet")
    assert (info.value.row, info.value.column) == (2500, "chosen")
    whole = (tmp_path / "big.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(RewardDataError, match="Parquet") as info:
        _load(tmp_path / "cut.parquet")
    _check_error(info.value, tmp_path / "cut.parquet")


# ---- hypothesis: damaged files ---------------------------------------------------------------

def _valid_file(fmt: str) -> bytes:
    """A small valid pairwise file in `fmt`, to be damaged."""
    rows = [{**PAIR, "chosen": f"Paris, {i}é", "margin": i / 4} for i in range(12)]
    with tempfile.TemporaryDirectory() as folder:
        return _write(Path(folder) / f"a{fmt}", rows).read_bytes()


VALID = {fmt: _valid_file(fmt) for fmt in (".jsonl", ".json", ".csv", ".parquet", ".jsonl.gz")}
MUTATION = st.tuples(st.sampled_from(["set", "cut", "insert", "delete"]), st.floats(0, 1),
                     st.binary(min_size=1, max_size=4))


def _mutate(content: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    data = bytearray(content)
    for op, where, payload in mutations:
        at = int(where * len(data))
        if op == "set" and at < len(data):
            data[at] = payload[0]
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = payload
        else:
            del data[at:at + len(payload) * 4]
    return bytes(data)


def _loads_or_names_the_file(path: Path, **kwargs) -> None:
    try:
        rows = _load(path, **kwargs)
    except RewardDataError as err:
        _check_error(err, path)
    else:
        assert rows and all(set(row) == {"prompt", "chosen", "rejected", "margin"} for row in rows)
        assert all(isinstance(row[key], str) and row[key].strip() for row in rows for key in ("chosen", "rejected"))


@FUZZ
@given(fmt=st.sampled_from(sorted(VALID)), mutations=st.lists(MUTATION, min_size=1, max_size=6), skip=st.booleans())
def test_damaged_files_load_or_raise_a_data_error_naming_the_file(fmt, mutations, skip):
    """Flipped, inserted and cut bytes in files that were valid: past the header and the magic
    numbers, into the places random bytes never reach (Parquet pages, gzip blocks, CSV quotes)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"damaged{fmt}"
        path.write_bytes(_mutate(VALID[fmt], mutations))
        _loads_or_names_the_file(path, skip_invalid=skip)


# ---- hypothesis: the same rows in every format -----------------------------------------------

SPECIAL = st.sampled_from(["\r", "\n", "\r\n", "\ufeff", "\x00", '"', ",", " ", "\t", "\x85", "\u2028",
                           "[", "Assistant:", "\n\nHuman: ", "é", "日本", ""])
TEXT = st.lists(SPECIAL | st.text(st.characters(blacklist_categories=("Cs",)), max_size=5), max_size=5).map("".join)
NUMBER = st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
LAYOUTS = {
    "pairwise": st.fixed_dictionaries({"prompt": TEXT, "chosen": TEXT, "rejected": TEXT, "margin": NUMBER}),
    "implicit prompt": st.fixed_dictionaries({"chosen": TEXT, "rejected": TEXT}),
    "mse": st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT, "reward": NUMBER}),
    "ranking": st.fixed_dictionaries({"prompt": TEXT, "responses": st.lists(TEXT, max_size=4)}),
    "ranking + scores": st.fixed_dictionaries({"prompt": TEXT, "responses": st.lists(TEXT, min_size=3, max_size=3),
                                               "scores": st.lists(st.floats(-5, 5), min_size=3, max_size=3)}),
}


def _outcome(path: Path, skip: bool) -> tuple:
    try:
        return ("loads", _load(path, skip_invalid=skip))
    except RewardDataError as err:
        _check_error(err, path)
        return ("refused", err.row, err.column, err.reason)


@FUZZ
@given(rows=st.sampled_from(sorted(LAYOUTS)).flatmap(lambda kind: st.lists(LAYOUTS[kind], min_size=1, max_size=4)),
       skip=st.booleans())
def test_same_rows_give_the_same_result_in_every_format(rows, skip):
    """JSONL is the reference: JSON, gzip and Parquet must load the same normal rows or refuse the
    same row and column; CSV (which has only text) must load the same rows whenever JSONL does.
    Texts are full of what breaks readers: line ends, BOMs, NULs, quotes, commas."""
    with tempfile.TemporaryDirectory() as folder:
        results = {name: _outcome(_write(Path(folder) / name, rows), skip) for name in FORMATS}
    reference = results.pop("a.jsonl")
    csv_result = results.pop("a.csv")
    assert all(result == reference for result in results.values()), (results, reference)
    assert csv_result[0] == reference[0] and (reference[0] == "refused" or csv_result == reference)


# ---- hypothesis: odd arguments ---------------------------------------------------------------

SOURCES = st.sampled_from([None, 123, 1.5, b"bytes.jsonl", "", "   ", "a\x00b.jsonl", "no/such/dir/file.jsonl",
                           Path("missing.csv"), ["list.jsonl"], {"a": 1}, "data.txt"])
COLUMN_SPECS = st.lists(st.sampled_from([",", "=", " ", "prompt", "chosen", "q", "x", "response"]), max_size=8).map("".join)


@FUZZ
@given(source=SOURCES, columns=COLUMN_SPECS | st.dictionaries(st.text(max_size=3), st.text(max_size=8), max_size=2)
       | st.none() | st.integers(), objective=st.none() | st.text(max_size=8) | st.sampled_from(["pairwise", "score"]),
       limit=st.none() | st.integers(-2, 3) | st.booleans() | st.floats(0, 2))
def test_odd_arguments_raise_data_errors(tmp_path_factory, source, columns, objective, limit):
    """Whatever a notebook passes in, the answer is a RewardDataError, never a TypeError."""
    good = tmp_path_factory.getbasetemp() / "fuzz_args.jsonl"
    good.write_text(json.dumps(PAIR) + "\n")
    for where in (source, good):
        try:
            load_reward_data(where, columns=columns, objective=objective, limit=limit)
            iter_reward_rows(where, columns=columns, objective=objective)
        except RewardDataError as err:
            _check_error(err, None)


@FUZZ
@given(spec=COLUMN_SPECS)
def test_column_specs_parse_or_raise_data_errors(spec):
    try:
        mapping = parse_column_map(spec)
    except RewardDataError as err:
        assert "column mapping" in str(err)
    else:
        assert len(set(mapping.values())) == len(mapping)


def test_an_empty_source_name_is_not_the_current_folder(tmp_path, monkeypatch):
    """Path("") is "."; `--data ""` must not quietly read whatever data files sit in the cwd."""
    (tmp_path / "stray.jsonl").write_text(json.dumps(PAIR) + "\n")
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(RewardDataError, match="empty"):
            load_reward_data(empty)


def test_csv_with_unused_columns_is_read_by_its_filled_cells(tmp_path):
    """Spreadsheet exports keep every column: an mse sheet with empty chosen/rejected columns is
    mse data, not pairwise data with empty answers."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["prompt", "chosen", "rejected", "completion", "reward"],
                                  ["q", "", "", "c", "1.5"], ["q", "", " ", "d", "-1"]])
    (tmp_path / "sheet.csv").write_text(buffer.getvalue())
    data = load_reward_data(tmp_path / "sheet.csv")
    assert data.objective == "mse" and [row["reward"] for row in data.rows] == [1.5, -1.0]
