"""Where rows come from: a file (.jsonl, .json, .csv, .parquet, gzipped JSON), a folder of them, a
`datasets` save_to_disk folder, or a Hub dataset id; each read as a stream of raw :class:`Record`.

:mod:`rewardkit.data` turns these records into validated rows; this module knows only files and
their formats: encodings, JSON shapes, CSV dialects, split names, and every way reading them fails
(always as a :class:`~rewardkit.data_errors.RewardDataError` naming the file and, where there is one,
the row and column).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import itertools
import json
import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rewardkit import data_formats as formats
from rewardkit.data_errors import SKIP_EXAMPLES, SKIP_HINT, RewardDataError

logger = logging.getLogger("rewardkit.data")  # one logger name for all of data loading, which users filter by

SUFFIXES = {".jsonl.gz": "jsonl", ".json.gz": "json", ".jsonl": "jsonl", ".json": "json",
            ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # old Mac line ends, which csv wants as separate lines
_JSON_WRAPPER_KEYS = ("data", "train", "rows")
_PARQUET_BATCH_ROWS = 1024


class Record(NamedTuple):
    """One raw row as read, or the skippable error that replaced it (broken line, not an object)."""

    number: int
    where: str
    value: Any = None
    error: RewardDataError | None = None
    text_lists: bool = False


Input = tuple[str, Callable[[], Iterator[Record]]]


def resolve(source: str | os.PathLike, split: str | None) -> tuple[str, list[Input]]:
    """(display name, inputs): each input is a name and a function opening its record stream."""
    if isinstance(source, str) and not source.strip():  # Path("") is ".", the current folder
        raise RewardDataError("no data given: the data source is an empty name")
    try:
        path = Path(source)
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists()
    except (TypeError, ValueError, OSError) as exc:
        raise RewardDataError(f"cannot use {source!r} as a data source: {exc}") from None
    if is_dir and _is_saved_dataset(path):
        return str(path), [(str(path), lambda: _read_saved_dataset(path, split))]
    inputs = _folder_inputs(path, split) if is_dir else [(str(path), _reader_for(path, split))] if is_file else None
    if split is not None and inputs and _names_ignore_split([Path(name) for name, _ in inputs], is_dir):
        logger.warning("--split %s is ignored for local data %s (it selects a Hub split, a key of a JSON "
                       "document or a split of a save_to_disk folder)", split, path)
    if inputs is not None:
        return str(path), inputs
    if exists:
        raise RewardDataError("this is neither a regular file nor a folder", source=path)
    text = os.fspath(source)
    if isinstance(text, str) and has_hub_dataset_id_form(text):
        return text, [(text, lambda: _read_hub(text, split or "train"))]
    raise RewardDataError("no such file or folder (and it is not a Hub dataset id like owner/name)",
                          source=text)


def ignores_split(source: str | os.PathLike) -> bool:
    """Whether `source` is local data whose rows no split picks: a JSONL, CSV or Parquet file, or a
    folder of them none of which a name gives a split (train.jsonl, test-00000-of-00001.parquet).
    `evaluate --split test` on such data reads every row; recorded as "split test", the card named
    a test split that was never read. A JSON document, a save_to_disk folder and a Hub dataset read
    their split; an unreadable source is not judged here (reading it says what is wrong)."""
    try:
        path = Path(source)
        if path.is_file():
            return _names_ignore_split([path], is_dir=False)
        if not path.is_dir() or _is_saved_dataset(path):
            return False
        names = [entry for entry in path.iterdir() if not entry.name.startswith(".") and entry.is_file()]
    except (TypeError, ValueError, OSError):
        return False
    return _names_ignore_split([name for name in names if suffix_kind(name)], is_dir=True)


def split_read(source: str | os.PathLike | None, split: str | None) -> str | None:
    """The split to record for `source` (training summary, metrics.json): None where it picked no
    rows (`ignores_split`) or there is no source; recorded anyway, the card named a split that was
    never read."""
    return None if source is None or ignores_split(source) else split


def _names_ignore_split(paths: list[Path], is_dir: bool) -> bool:
    """The data files read (of a folder, when `is_dir`) take no split: none is a JSON document (which
    reads its split's key itself, and says when it has none) and, in a folder, none is named by
    split. The one rule of the "--split is ignored" warning and of `ignores_split`."""
    return bool(paths) and not any(suffix_kind(path) == "json" or (is_dir and _split_of(path) is not None)
                                   for path in paths)


def has_hub_dataset_id_form(text: str) -> bool:
    """`owner/name` without a data-file suffix: what a source that is no local path is read as (a
    Hub dataset id). Local paths are checked first, by the caller."""
    return bool(_HUB_ID.fullmatch(text)) and not suffix_kind(Path(text))


def _folder_inputs(folder: Path, split: str | None) -> list[Input]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise RewardDataError(f"cannot list the folder: {exc}", source=folder) from None
    inputs = []
    for path in entries:
        if path.name.startswith(".") or not path.is_file():
            continue
        if suffix_kind(path):
            inputs.append((str(path), _reader_for(path, split)))
        else:
            logger.info("ignoring %s: not a supported data file", path)
    if not inputs:
        raise RewardDataError(f"the folder holds no data files (looked for {', '.join(SUFFIXES)}; "
                              "subfolders are not searched)", source=folder)
    return _split_files(inputs, folder, split)


# File names the Hub and `datasets` give the files of one split: train.jsonl, test-00000-of-00002.parquet,
# train_prefs-00000-of-00001.parquet (UltraFeedback), train-00000-of-00001-4746b2ea8a2a1d6d.parquet (the
# Hub's Parquet conversion adds a hash)
_SPLIT_FILE = re.compile(r"(?P<split>[A-Za-z]\w*?)(?P<shard>-\d{5}-of-\d{5}(?:-[0-9a-f]{8,})?)?")
_SPLIT_NAMES = frozenset({"train", "training", "validation", "valid", "val", "dev", "test", "testing", "eval",
                          "evaluation"})


def _split_of(path: Path) -> str | None:
    """The split a data file's name gives it (`train-00000-of-00001.parquet` -> train), if any: a
    shard name gives any split (`train_prefs-00000-of-00001`), a plain name only a usual split name
    (`test.jsonl`, not `notes.jsonl`)."""
    suffix = next((suffix for suffix in SUFFIXES if path.name.lower().endswith(suffix)), None)
    match = _SPLIT_FILE.fullmatch(path.name[:-len(suffix)]) if suffix else None
    return match["split"] if match and (match["shard"] or match["split"] in _SPLIT_NAMES) else None


def _split_files(inputs: list[Input], folder: Path, split: str | None) -> list[Input]:
    """The inputs of one split when the folder holds split-named files (a Hub dataset downloaded
    with its data/ folder: train-00000-of-00001.parquet beside test-00000-of-00001.parquet). They
    were all read as one data set, the test split trained on, and --split was ignored."""
    splits: dict[str, list[Input]] = {}
    for item in inputs:
        name = _split_of(Path(item[0]))
        if name is not None:
            splits.setdefault(name, []).append(item)
    if len(splits) < 2 and (split is None or not splits):
        return inputs
    chosen = split if split is not None else "train"
    if chosen not in splits:
        held = ", ".join(repr(name) for name in splits)
        raise RewardDataError(f"the folder holds the files of the splits {held} (by their names)"
                              + (f", none of split {split!r}" if split is not None else "")
                              + "; pick one with --split", source=folder)
    others = [Path(name).name for name, _ in inputs if _split_of(Path(name)) != chosen]
    logger.warning("%s holds the files of the splits %s: reading the %d file(s) of %r%s; pass --split to read "
                   "another", folder, ", ".join(repr(name) for name in splits), len(splits[chosen]), chosen,
                   f" (left out: {', '.join(others[:SKIP_EXAMPLES])}{', ...' if len(others) > SKIP_EXAMPLES else ''})")
    return splits[chosen]


def suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if name.endswith(suffix)), None)


def _reader_for(path: Path, split: str | None = None) -> Callable[[], Iterator[Record]]:
    kind = suffix_kind(path)
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    if kind is None:
        raise RewardDataError(f"unsupported file type {path.suffix or '(no extension)'!r}; use "
                              f"{', '.join(SUFFIXES)}", source=path)
    if kind == "json":
        return lambda: _read_json(path, split)
    return lambda: readers[kind](path)


def _read_error(path: Path, exc: BaseException) -> RewardDataError:
    return RewardDataError(f"cannot read the file: {exc or type(exc).__name__}", source=path)


def _binary_lines(path: Path) -> Iterator[bytes]:
    """Lines as bytes, so that decoding errors can be pinned to a line.

    The readers below keep no line, raw or decoded, once it is handed on (no generator variable
    holds one while its consumer works on the row): a 50 MB CSV field was held 8 times over while
    its row was scored (raw line, decoded line, csv's 4-bytes-a-character field buffer, the value)."""
    try:
        handle = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise _read_error(path, exc) from None
    with handle:
        yield from iter(lambda: _read_line(handle, path), b"")


def _read_line(handle: Any, path: Path) -> bytes:
    try:
        return handle.readline()
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, exc) from None


def _decode(raw: bytes, path: Path, line: int | None) -> str:
    """UTF-8 text; ``raw`` is one line (``line``) or a whole file (``line`` None).

    A byte-order mark is dropped only where the file starts: elsewhere U+FEFF is data (a CSV
    field or a quoted line may begin with it). The start of the file is also where UTF-16 shows
    itself, so it is named as such instead of as a puzzling "invalid byte" or "broken JSON".
    """
    starts_file = line is None or line == 1
    if starts_file:
        _refuse_wide_encoding(raw, path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1)
        line = line if line is not None else raw.count(b"\n", 0, exc.start) + 1
        raise RewardDataError(f"the file is not UTF-8 text ({exc.reason} at byte {offset + 1} of "
                              "the line); re-save it as UTF-8", source=path,
                              where=f"line {line}") from None
    return text.removeprefix("\ufeff") if starts_file else text


def _refuse_wide_encoding(start: bytes, path: Path) -> None:
    """UTF-16 (Excel's "Unicode text", PowerShell's default) starts with a byte-order mark or,
    without one, puts a NUL byte beside every ASCII character; UTF-8 text has neither."""
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        how = "it starts with a UTF-16 byte-order mark"
    elif b"\x00" in start[:2]:
        how = "it has NUL bytes between its characters"
    else:
        return
    raise RewardDataError(f"the file is UTF-16 (or another wide encoding), not UTF-8: {how}; "
                          "re-save it as UTF-8", source=path, where="line 1")


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    numbers = itertools.count(1)  # not enumerate, whose reused result tuple keeps the last raw line
    return map(lambda raw: (number := next(numbers), _decode(raw, path, number)), _binary_lines(path))


def _read_jsonl(path: Path) -> Iterator[Record]:
    for number, text in _decoded_lines(path):
        if text and not text.isspace():  # text.strip() would copy the line
            record = _json_record(text, number, f"line {number}", path)
            del text  # not held while the row is used
            yield record


class _KeyedTwice(dict):
    """A JSON object that spells a key more than once; ``repeated`` is the first such key."""

    repeated = ""


def _json_object(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook``: json keeps the last of two equal keys without a word, so
    {"chosen": "a", "chosen": "z"} would train on "z". Mark such objects to report them."""
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    marked = _KeyedTwice(value)
    marked.repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
    return marked


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_json_object)


def _json_record(text: str, number: int, where: str, path: Path) -> Record:
    try:
        value = _loads(text)
    except (ValueError, RecursionError) as exc:
        hint = (" (the file looks like one JSON document, not JSON Lines with one object per "
                "line: name it .json)" if number == 1 and text.lstrip().startswith("[") else "")
        return _bad_record(_json_problem(exc) + hint, path, number, where, "broken JSON")
    return _object_record(value, number, where, path)


def _json_problem(exc: ValueError | RecursionError) -> str:
    """What json.loads disliked, worded for people (it says "Expecting value" for a trailing
    comma and "maximum recursion depth exceeded" for deep nesting)."""
    if isinstance(exc, RecursionError):
        return "the JSON is nested too deeply to read (over about 1,000 levels of [ or {)"
    if not isinstance(exc, json.JSONDecodeError):
        return f"unreadable JSON ({type(exc).__name__}: {str(exc)[:100]})"
    message = f"broken JSON ({exc.msg.removesuffix(' at')} at character {exc.colno})"
    return message + (" after a trailing comma, which JSON does not allow"
                      if _after_trailing_comma(exc.doc, exc.pos) else "")


def _after_trailing_comma(doc: str, pos: int) -> bool:
    """True when ``doc[pos]`` closes a list or object right after a comma (``[1, 2,]``)."""
    if pos >= len(doc) or doc[pos] not in "]}":
        return False
    before = pos - 1
    while before >= 0 and doc[before] in " \t\r\n":
        before -= 1
    return before >= 0 and doc[before] == ","


def _object_record(value: Any, number: int, where: str, path: Path) -> Record:
    if isinstance(value, _KeyedTwice):
        return _bad_record(_REPEATED_KEY, path, number, where, "duplicate column",
                           column=value.repeated)
    if isinstance(value, dict):
        return Record(number, where, value)
    message = f"expected a JSON object of columns, got {formats.kind_of(value)}"
    return _bad_record(message, path, number, where, "not an object")


_REPEATED_KEY = "the object names this column more than once (JSON would silently keep only the last value); keep one"


def _bad_record(message: str, path: Path, number: int, where: str, reason: str,
                column: str | None = None) -> Record:
    """A row that could not even be parsed: skippable like an invalid row."""
    error = RewardDataError(message + "." + SKIP_HINT, source=path, row=number, column=column,
                            where=where, reason=reason)
    return Record(number, where, error=error)


def _read_json(path: Path, split: str | None = None) -> Iterator[Record]:
    """A whole JSON document: an array of rows, {"data"|"train"|"rows": [...]}, columns, or a
    pandas ``to_json`` default / ``orient="split"`` document;
    with ``split``, {split: [...]} (e.g. {"train": [...], "test": [...]} and --split test)."""
    raw = b"".join(_binary_lines(path))
    text = _decode(raw, path, None)
    if not text.strip():
        return
    try:
        document = _loads(text)
    except (ValueError, RecursionError) as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else None
        hint = (" (the file looks like JSON Lines, one object per line: name it .jsonl)"
                if where and exc.msg == "Extra data" else "")
        raise RewardDataError(_json_problem(exc) + hint, source=path, where=where) from None
    rows, label = _json_rows(document, path, split)
    for number, value in enumerate(rows, 1):
        yield _object_record(value, number, f"{label} {number}", path)


def _json_rows(document: Any, path: Path, split: str | None = None) -> tuple[list, str]:
    """The rows of a JSON document. ``split`` picks a top-level key of that name (a document
    holding several splits); a document of split arrays without it is refused, and other shapes
    are read with a warning saying which, so that --split never reads another split than asked."""
    if isinstance(document, _KeyedTwice):  # {"train": [...], "train": [...]}, or a column twice
        raise RewardDataError(_REPEATED_KEY, source=path, column=document.repeated)
    if isinstance(document, dict) and split is not None and isinstance(document.get(split), list):
        logger.info("%s: reading the %r array (--split %s)", path, split, split)
        return document[split], "element"
    rows, label, key = _default_json_rows(document, path)
    arrays = [name for name, value in document.items() if isinstance(value, list)] if key else []
    if split is not None and (key == "train" or len(arrays) > 1):
        # {"train": [...], "test": [...]}: its arrays are splits, and another one than asked would be
        # trained or evaluated on (as a folder of split files and a DatasetDict refuse to)
        raise RewardDataError(f"the JSON document holds the arrays {', '.join(map(repr, arrays))}, not {split!r}; "
                              "pick one with --split", source=path)
    if split is not None:
        read = f"the {key!r} array" if key else "the whole document"
        logger.warning("--split %s: the JSON document %s has no %r array; read %s instead", split,
                       path, split, read)
    elif key is not None and any(isinstance(value, list) for name, value in document.items() if name != key):
        # {"train": [...], "test": [...]} read as --eval-data without --eval-split: say it is train
        others = ", ".join(repr(name) for name, value in document.items() if name != key and isinstance(value, list))
        logger.warning("the JSON document %s also holds the arrays %s; read the %r array (pass --split to "
                       "pick another)", path, others, key)
    return rows, label


def _default_json_rows(document: Any, path: Path) -> tuple[list, str, str | None]:
    """(rows, row label, wrapper key or None) of a JSON document read without a split."""
    if isinstance(document, list):
        return document, "element", None
    pandas_rows = _pandas_json_rows(document)
    if pandas_rows is not None:
        return pandas_rows, "row", None
    if isinstance(document, dict):
        for key in _JSON_WRAPPER_KEYS:
            if isinstance(document.get(key), list):
                return document[key], "element", key
        columns = list(document.values())
        if all(isinstance(c, list) for c in columns) and len({len(c) for c in columns}) <= 1:
            names = list(document)
            return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)], "row", None
    raise RewardDataError(
        f"the JSON holds {formats.kind_of(document)} of an unsupported shape; use an array of row "
        "objects, an object with a 'data', 'train' or 'rows' array, or an object of equal-length "
        "column arrays (pandas: DataFrame.to_json(path, orient='records'))", source=path)


def _pandas_json_rows(document: Any) -> list | None:
    """The rows of what pandas' ``DataFrame.to_json`` writes by default (orient "columns":
    ``{"prompt": {"0": "p", ...}, ...}``, every column keyed by the same index) and with
    ``orient="split"`` (``{"columns": [...], "index": [...], "data": [[...], ...]}``); None for
    other shapes. Without this the first was refused as "unsupported" and the second read its
    "data" array of lists as rows that are not objects."""
    if not isinstance(document, dict) or not document:
        return None
    names, data = document.get("columns"), document.get("data")
    if (set(document) <= {"columns", "index", "data"} and isinstance(names, list) and isinstance(data, list)
            and all(isinstance(name, str) for name in names) and all(isinstance(row, list) for row in data)):
        return [dict(zip(names, row)) if len(row) == len(names) else row for row in data]
    columns = list(document.values())
    if not all(isinstance(column, dict) and column for column in columns):
        return None
    index = list(columns[0])
    if any(list(column) != index for column in columns[1:]):
        return None
    return [{name: column[key] for name, column in document.items()} for key in index]


def _read_csv(path: Path) -> Iterator[Record]:
    """CSV with a header row; quoted newlines work; data rows are numbered without the header."""
    _raise_csv_field_limit()
    lines = _Lines(_decoded_lines(path))
    header = _next_csv_row(lines, path)
    if header is None:
        return
    if lines.ended:
        raise RewardDataError(f"the header runs to the end of the file (line {lines.count}): a closing "
                              "quote (\") of a quoted name is missing", source=path, where="line 1")
    names = [name.strip() for name in header]
    _refuse_other_separator(names, path)
    duplicates = sorted(n for n, count in Counter(names).items() if n and count > 1)
    if duplicates:
        raise RewardDataError(f"the header names columns more than once: {', '.join(duplicates)}",
                              source=path, where="line 1")
    data_row, last_line = 0, lines.count
    while (fields := _next_csv_row(lines, path)) is not None:
        first_line, last_line = last_line + 1, lines.count
        if len(fields) <= 1 and not "".join(fields).strip():
            continue  # blank line
        data_row += 1
        where = f"data row {data_row} (line {first_line})"
        if lines.ended:  # csv closes a quote left open at the end of the file, with every line after it inside
            yield _bad_record(f"a quoted field of it runs to the end of the file: its closing quote (\") is "
                              f"missing, so lines {first_line}-{last_line} were read as this one row",
                              path, data_row, where, "unclosed quote")
            continue
        if len(fields) != len(names):
            message = f"the row has {len(fields)} fields but the header has {len(names)}"
            if any("\n" in value or "\r" in value for value in fields):  # a quote left open
                message += ("; a quoted field of it runs over a line end, so a closing quote (\") "
                            "may be missing")
            yield _bad_record(message, path, data_row, where, "wrong field count")
            continue
        row = {name: value for name, value in zip(names, fields, strict=True) if name}
        yield Record(data_row, where, row, text_lists=True)


class _Lines:
    """The lines fed to `csv.reader` (a lone CR ends one too), counted (`count`, csv's line_num),
    noting when they ran out. csv reads past a row's end only inside a quoted field, so running
    out while reading a row means a quote left open, which it closes without a word at the end of
    the file (`strict=True` would refuse it, but also quotes that csv reads fine elsewhere, such
    as `"a"b`). Holds no line it has handed on."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._pieces: list[str] = []
        self.ended = False
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        while not self._pieces:
            try:
                _, text = next(self._lines)
            except StopIteration:
                self.ended = True
                raise
            self._pieces = [piece for piece in _LONE_CR.split(text) if piece][::-1]
        self.count += 1
        return self._pieces.pop()


def _refuse_other_separator(names: list[str], path: Path) -> None:
    """A header read as one column that holds semicolons or tabs: Excel writes "CSV" with ';' in
    locales whose decimal mark is a comma, and .tsv files get renamed .csv. Said as such, since
    the layout error would name one column 'prompt;chosen;rejected' and suggest --columns."""
    if len(names) != 1:
        return
    separator, word = next(((mark, word) for mark, word in (
        (";", "semicolons (as Excel writes CSV in many locales)"), ("\t", "tabs")) if mark in names[0]), (None, None))
    if separator is None:
        return
    raise RewardDataError(f"the header is one column {_short(names[0])}: its columns are separated by {word}, but "
                          "rewardkit reads comma-separated CSV; re-save it with commas, e.g. "
                          f"pandas.read_csv(path, sep={separator!r}).to_csv(new_path, index=False)",
                          source=path, where="line 1")


def _short(name: str) -> str:
    text = repr(name)
    return text if len(text) <= 60 else text[:57] + "..."


def _next_csv_row(lines: _Lines, path: Path) -> list[str] | None:
    """The next row, read by a reader of its own: a csv reader keeps the buffer of its longest field
    (4 bytes a character) until it is freed, 200 MB for a 50 MB field held while the file is read."""
    try:
        return next(csv.reader(lines), None)
    except csv.Error as exc:
        raise RewardDataError(f"broken CSV: {exc}", source=path, where=f"line {lines.count}") from None


def _raise_csv_field_limit() -> None:
    """Long responses exceed csv's 128 KiB default field limit; raise it as far as allowed."""
    limit = 2**31 - 1
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _read_parquet(path: Path) -> Iterator[Record]:
    """Parquet in record batches, so memory stays bounded on large files."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise RewardDataError(f"reading Parquet needs pyarrow ({exc})", source=path) from None
    number = 0
    batches = _parquet_batches(pq, pa, path)
    while True:
        try:
            batch = next(batches, None)
            rows = batch.to_pylist() if batch is not None else None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise RewardDataError(f"cannot read the Parquet file: {exc}", source=path) from None
        if rows is None:
            return
        for row in rows:
            number += 1
            yield Record(number, f"row {number}", row)


def _parquet_batches(pq: Any, pa: Any, path: Path) -> Iterator[Any]:
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RewardDataError(f"cannot read the Parquet file: {exc}", source=path) from None
    _refuse_repeated_parquet_column(names, path)
    try:
        return iter(parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise RewardDataError(f"cannot read the Parquet file: {exc}", source=path) from None


def _refuse_repeated_parquet_column(names: list[str], path: Path) -> None:
    """Parquet allows two fields of one name; each row would keep only the last one's value."""
    repeated = next((name for name, count in Counter(names).items() if count > 1), None)
    if repeated is not None:
        raise RewardDataError("the file has more than one column of this name (each row would keep "
                              "only the last one's value); rename or drop the others", source=path,
                              column=repeated)


def _read_hub(dataset_id: str, split: str) -> Iterator[Record]:
    """A Hub dataset split via `datasets` (downloaded whole, then read row by row)."""
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # datasets raises many unrelated types (network, config, auth)
        raise RewardDataError(
            f"the Hugging Face dataset {dataset_id!r} (split {split!r}) couldn't be loaded: "
            f"{type(exc).__name__}: {exc}. Check the id and split, your network or HF_HUB_OFFLINE, "
            "or download the data and pass the file instead (no local file or folder has "
            "that name either).", source=dataset_id) from None
    yield from _dataset_records(dataset, dataset_id)


def _is_saved_dataset(folder: Path) -> bool:
    """A folder `datasets` wrote with `save_to_disk`: a Dataset (state.json + dataset_info.json
    beside Arrow shards) or a DatasetDict (dataset_dict.json + one such folder per split)."""
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file())


def _read_saved_dataset(folder: Path, split: str | None) -> Iterator[Record]:
    """Rows of a `save_to_disk` folder, read with `datasets.load_from_disk` (memory-mapped Arrow:
    rows are read as they are needed, not loaded whole). A DatasetDict needs a split: `split`,
    else "train" when it has one."""
    try:
        import datasets

        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises many types for a broken folder
        raise RewardDataError(f"this looks like a `datasets` save_to_disk folder, but it couldn't be loaded: "
                              f"{type(exc).__name__}: {exc}", source=folder) from None
    if isinstance(loaded, datasets.DatasetDict):
        name = split if split is not None else ("train" if "train" in loaded else None)
        if name not in loaded:
            raise RewardDataError(f"the saved DatasetDict holds the splits {', '.join(map(repr, loaded))}"
                                  + (f", not {split!r}" if split is not None else "") + "; pick one with --split",
                                  source=folder)
        loaded = loaded[name]
    elif split is not None:
        logger.warning("--split %s is ignored for %s: it holds one saved Dataset, not a DatasetDict", split, folder)
    yield from _dataset_records(loaded, folder)


def _dataset_records(dataset: Any, source: str | os.PathLike) -> Iterator[Record]:
    """The rows of a `datasets.Dataset`, numbered from 1; decoding errors name the row."""
    rows = iter(dataset)
    for number in itertools.count(1):
        try:
            row = next(rows, None)
        except Exception as exc:  # whatever `datasets` raises while decoding a row
            raise RewardDataError(f"reading the dataset failed: {type(exc).__name__}: {exc}",
                                  source=source, row=number) from None
        if row is None:
            return
        yield Record(number, f"row {number}", row)
