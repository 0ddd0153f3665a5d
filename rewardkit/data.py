"""Load reward-model data from a file, a folder of files, or a Hugging Face Hub dataset.

``--data`` may point at ``.jsonl``, ``.json``, ``.csv``, ``.parquet`` (and ``.jsonl.gz`` /
``.json.gz``) files, a folder of them (read non-recursively, in name order; other files are
ignored; files named by split, as train-00000-of-00001.parquet and test.jsonl, are read one split at a
time), or a Hub dataset id ``owner/name`` (with ``--split``, default "train"). The row
layouts and their normal forms are described in :mod:`rewardkit.data_formats`; normal forms:

* pairwise: ``{"prompt": str, "chosen": str, "rejected": str, "margin": float | None}``
* mse:      ``{"prompt": str, "response": str, "reward": float}``
* ranking:  ``{"prompt": str, "responses": list[str]}`` (best first, at least 2)
* score:    ``{"prompt": str, "response": str}`` (``objective="score"``, for ``rewardkit score``;
  a reward column is allowed and ignored; pairwise or ranked rows are refused: use evaluate)

Every problem with the input is a :class:`RewardDataError` naming the source, the row and the
column; nothing else escapes this module. Row numbers are 1-based: the line for JSONL, the
data row (header not counted; the message also gives the line) for CSV, the element for a
JSON array, and the row for Parquet, JSON column objects and Hub datasets.
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
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rewardkit import data_formats as formats
from rewardkit.data_formats import Layout, RowError

logger = logging.getLogger(__name__)

OBJECTIVES = ("pairwise", "mse", "ranking")
SCORE = "score"
SUFFIXES = {".jsonl.gz": "jsonl", ".json.gz": "json", ".jsonl": "jsonl", ".json": "json",
            ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # old Mac line ends, which csv wants as separate lines
_JSON_WRAPPER_KEYS = ("data", "train", "rows")
_PARQUET_BATCH_ROWS = 1024
_SKIP_EXAMPLES = 5
_SKIP_HINT = " Fix or remove the row, or pass --skip-invalid (Python: skip_invalid=True) to skip invalid rows."


class RewardDataError(ValueError):
    """Bad input data. Attributes: source (file path or dataset id, str|None), row (int|None,
    1-based), column (str|None). str(err) is one readable paragraph naming them.

    Also: ``where`` (the row as worded in the message, e.g. "data row 3 (line 5)") and
    ``reason`` (a short category for row-level problems, used to count skipped rows).
    """

    def __init__(self, message: str, *, source: str | os.PathLike | None = None, row: int | None = None,
                 column: str | None = None, where: str | None = None, reason: str | None = None) -> None:
        self.message = " ".join(str(message).split())
        super().__init__(self.message)
        self.source = None if source is None else str(source)
        self.row = row
        self.column = column
        self.where = where or (f"row {row}" if row is not None else None)
        self.reason = reason

    def __str__(self) -> str:
        parts = [self.source, self.where, f"column {self.column!r}" if self.column else None]
        place = ", ".join(part for part in parts if part)
        return f"{place}: {self.message}" if place else self.message

    def __reduce__(self):  # keep the attributes when pickled (e.g. by DataLoader workers)
        return _rebuild_error, (self.message, self.source, self.row, self.column, self.where, self.reason)


def _rebuild_error(message, source, row, column, where, reason) -> RewardDataError:
    return RewardDataError(message, source=source, row=row, column=column, where=where, reason=reason)


@dataclass
class SkipReport:
    """Rows left out under ``skip_invalid``: a count per reason and where the first few were."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, error: RewardDataError) -> None:
        reason = error.reason or "invalid row"
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _SKIP_EXAMPLES:
            name = Path(error.source).name if error.source else "?"
            examples.append(f"{name} {error.where}" if error.where else name)

    def summary(self) -> str:
        if not self.counts:
            return "no rows skipped"
        parts = [f"{reason}: {count} (first at {', '.join(self.examples[reason])})"
                 for reason, count in sorted(self.counts.items(), key=lambda item: -item[1])]
        return f"skipped {self.total} invalid row(s); " + "; ".join(parts)


@dataclass
class RewardData:
    """Loaded, validated rows in normal form plus where they came from and what was dropped."""

    objective: str
    rows: list[dict]
    sources: list[str]
    skipped: SkipReport
    detected_layout: str

    def __len__(self) -> int:
        return len(self.rows)


def parse_column_map(spec: str | None) -> dict[str, str]:
    """'new=old,new2=old2' -> {"old": "new", ...} meaning rename column old to new.

    Targets must be column names rewardkit understands, so a typo fails here, not later as a
    puzzling "missing column".
    """
    mapping: dict[str, str] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        new, sep, old = (part.strip() for part in item.partition("="))
        if not sep or not new or not old:
            raise RewardDataError(f"bad column mapping {item.strip()!r}: write it as new=old, "
                                  "e.g. --columns prompt=question,chosen=best")
        _check_target(new)
        if old in mapping:
            raise RewardDataError(f"bad column mapping: column {old!r} is renamed twice")
        if new in mapping.values():
            raise RewardDataError(f"bad column mapping: two columns are renamed to {new!r}")
        mapping[old] = new
    return mapping


def check_limit(limit: int | None) -> None:
    """`limit` (rows to read) must be None or a whole number >= 1: the one check that loading,
    streaming, `evaluate` and `score --data` share."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise RewardDataError(f"limit must be a positive whole number, got {limit!r}")


def same_data_source(a: str | os.PathLike | None, split_a: str | None, b: str | os.PathLike | None,
                     split_b: str | None) -> bool:
    """True when two data sources read the same rows: one local file or folder (after `~` and
    symlinks) or one Hub dataset id, with the same split. The split counts only where it picks
    rows: a JSONL, CSV or Parquet file ignores it (`--split train` on train.jsonl reads every row,
    as no --split does), and elsewhere no split reads "train" (a folder of split files, a
    DatasetDict, a Hub dataset, a JSON document's "train" array)."""
    if a is None or b is None:
        return False
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.exists() or second.exists():
        if not (first.exists() and second.exists() and first.resolve() == second.resolve()):
            return False
        if first.is_file() and _suffix_kind(first) in ("jsonl", "csv", "parquet"):
            return True
    elif os.fspath(a) != os.fspath(b):  # neither is local: Hub ids
        return False
    return (split_a or "train") == (split_b or "train")


def load_reward_data(source: str | os.PathLike, *, split: str | None = None,
                     columns: dict[str, str] | str | None = None, objective: str | None = None,
                     skip_invalid: bool = False, limit: int | None = None) -> RewardData:
    """Load a file / folder / Hub dataset id; detect the layout (or check it against `objective`:
    data whose layout contradicts the objective is a RewardDataError that says what was detected
    vs asked); validate; normalise. ``limit`` stops after that many valid rows.

    ``objective="score"`` accepts prompt + response rows (reward optional) for scoring.
    """
    check_limit(limit)
    stream = _RowStream(source, split, columns, objective, skip_invalid, None)
    rows: list[dict] = []
    with closing(stream.rows()) as numbered_rows:
        for _, row in numbered_rows:
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                stream.check_column_map()  # of the rows read
                break
    stream.log_skips()
    description = stream.whole_description()
    logger.info("Loaded %d %s rows from %s (%s)", len(rows), stream.objective_found, stream.display, description)
    return RewardData(objective=stream.objective_found, rows=rows, sources=stream.sources,
                      skipped=stream.skipped, detected_layout=description)


def iter_reward_rows(source: str | os.PathLike, *, split: str | None = None,
                     columns: dict[str, str] | str | None = None, objective: str | None = None,
                     skip_invalid: bool = False, skipped: SkipReport | None = None,
                     limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """Streaming version (for scoring 100,000-row files with bounded memory): yields
    (row_number, normal-form row) lazily; JSONL/CSV read line by line, Parquet by record batches.
    Raises the same errors. Used by `score` and `evaluate`.

    Arguments and the source's existence are checked at once; the data only as it is read.
    Pass a ``SkipReport`` as ``skipped`` to collect skipped rows (also logged at the end).
    JSON files and Hub datasets are not streamable and are read whole first.

    ``limit`` stops after that many valid rows, and then checks ``--columns`` and logs the skips
    of the rows read, as the end of the data would: a caller that stopped reading instead
    skipped both (a typo in ``--columns ranks=...`` ignored the ranks, silently).

    Row numbers count from 1 in each file, as data error messages do; so when the source is a
    folder of several files each row also carries ``source_file`` (the file's name), which
    ``score_file`` writes out as ``"file"`` so every output line is identifiable.
    """
    check_limit(limit)
    stream = _RowStream(source, split, columns, objective, skip_invalid, skipped)
    several_files = len(stream.inputs) > 1

    def generate() -> Iterator[tuple[int, dict]]:
        with closing(stream.rows()) as numbered_rows:
            for count, (number, row) in enumerate(numbered_rows, 1):
                if several_files:
                    row = {**row, "source_file": Path(stream.sources[-1]).name}
                last = count == limit
                if last:  # the end of what was asked for: checked and reported as the end of the data is
                    stream.check_column_map()  # of the rows read
                    stream.log_skips()
                yield number, row
                if last:
                    return
        stream.log_skips()

    return generate()


def row_position(number: int, row: dict) -> dict[str, Any]:
    """Where a row of `iter_reward_rows` came from, for output records: {"row": n}, preceded by
    {"file": name} when the source is a folder of several files (numbering restarts per file)."""
    return {"file": row["source_file"], "row": number} if "source_file" in row else {"row": number}


def row_words(number: int, row: dict) -> str:
    """`row_position` in words for messages: 'row 12', or 'row 12 of part-2.jsonl'."""
    return f"row {number} of {row['source_file']}" if "source_file" in row else f"row {number}"


# ---- the row stream: readers -> layout -> normal form -----------------------------------------

class _Record(NamedTuple):
    """One raw row as read, or the skippable error that replaced it (broken line, not an object)."""

    number: int
    where: str
    value: Any = None
    error: RewardDataError | None = None
    text_lists: bool = False


class _RowStream:
    """Reads every input of a source in turn and normalises rows against one shared layout."""

    def __init__(self, source, split, columns, objective, skip_invalid, skipped) -> None:
        if objective is not None and objective not in (*OBJECTIVES, SCORE):
            raise RewardDataError(f"unknown objective {objective!r}; use one of "
                                  f"{', '.join((*OBJECTIVES, SCORE))}")
        self.column_map = _column_map(columns)
        self.objective = objective
        self.skip_invalid = skip_invalid
        self.skipped = skipped if skipped is not None else SkipReport()
        self.display, self.inputs = _resolve(source, split)
        self.sources: list[str] = []
        self.layout: Layout | None = None
        self.first_seen = ""
        self.first_columns: frozenset[str] = frozenset()  # the columns the first valid row filled
        self.description = ""  # of the first valid row
        self.first_row: dict = {}
        self.ranking_orders: list[str] = []  # where the valid ranked rows took their order from
        self.first_problem: RewardDataError | None = None
        self.seen_columns: set[str] = set()  # every column name read, before renaming

    @property
    def objective_found(self) -> str:
        return self.layout.objective if self.layout else (self.objective or "unknown")

    def rows(self) -> Iterator[tuple[int, dict]]:
        yielded, empty = 0, []
        for name, read in self.inputs:
            self.sources.append(name)
            count = 0
            with closing(read()) as records:
                for record in records:
                    count += 1
                    row = self._row(name, record)
                    if row is not None:
                        yielded += 1
                        yield record.number, row
            if count == 0:
                empty.append(name)
        if len(empty) == len(self.inputs):
            raise RewardDataError("there are no rows in it (the file is empty or holds only a header / an "
                                  "empty list)" if len(empty) == 1 else "none of its files holds a row",
                                  source=self.display)
        self.check_column_map()
        if empty:  # an empty part file beside full ones (Spark and others write them): say so, go on
            logger.warning("%s: %d of %d files hold no rows and were skipped: %s", self.display, len(empty),
                           len(self.inputs), ", ".join(Path(name).name for name in empty[:_SKIP_EXAMPLES]))
        if yielded == 0:
            first = str(self.first_problem).replace(_SKIP_HINT.strip(), "")
            raise RewardDataError(f"no valid rows: {self.skipped.summary()}. The first problem was: "
                                  f"{first}", source=self.display)

    def check_column_map(self) -> None:
        """A ``--columns`` entry that renames a column no row has, to a name no row has either,
        did nothing: a typo (``prompt=contxt``) that silently read HH-style pairs as implicit-prompt
        transcripts, or left an optional column (margin, ranks) out. An entry whose target the data
        already has is fine (one --columns for --data and an --eval-data that uses our names)."""
        unused = [(old, new) for old, new in self.column_map.items()
                  if old not in self.seen_columns and new not in self.seen_columns]
        if unused and self.seen_columns:
            old, new = unused[0]
            columns = ", ".join(repr(name) for name in sorted(self.seen_columns)[:12])
            raise RewardDataError(f"--columns renames {old!r} to {new!r}, but no row has a column {old!r} "
                                  f"(its columns: {columns}); check the name", source=self.display)

    def log_skips(self) -> None:
        if self.skipped.total:
            logger.warning("%s: %s", self.display, self.skipped.summary())

    def _row(self, source: str, record: _Record) -> dict | None:
        """The normal form of one record, or None when it was skipped."""
        if record.error is not None:
            return self._invalid(record.error)
        if self.column_map:
            self.seen_columns.update(record.value)
        row = _rename(record.value, self.column_map)
        try:
            if record.text_lists:  # CSV: blank cells are nulls, and message lists are written as text
                row = formats.message_lists_from_text(_blank_cells_as_null(row))
            found = formats.detect_layout(row)
            layout = self._layout_for(found, row, source, record)
            normal = formats.normalise_row(row, layout, text_lists=record.text_lists)
        except RowError as problem:
            return self._invalid(self._located(problem, source, record))
        if self.layout is None:
            self.layout, self.first_seen = layout, f"{source} {record.where}"
            self.first_columns = frozenset(key for key, value in row.items() if value is not None)
            self.description = formats.describe_layout(row, layout)
            logger.info("%s: detected %s", source, self.description)
            _warn_unread_columns(self.display, row, layout)
            _warn_score_output(self.display, row, layout)
            self.first_row = row
        if layout.objective == "ranking":
            order = formats.ranking_order(row)
            if order not in self.ranking_orders:
                self.ranking_orders.append(order)
        return normal

    def whole_description(self) -> str:
        """The layout of all rows read: the first row's, unless ranked rows took their order from
        different places (ranks, scores, the list order)."""
        if len(self.ranking_orders) > 1:
            return formats.describe_ranking_orders(self.first_row, self.ranking_orders)
        return self.description

    def _layout_for(self, found: Layout | None, row: dict, source: str, record: _Record) -> Layout:
        """The layout to check this row against; contradictions and mixed layouts are fatal."""
        if self.layout is not None:
            if found is not None and not self._fits(found):
                raise _mixed_layout_error(row, found, self.description, self.first_seen, source, record)
            return self.layout
        if self.objective is None:
            if found is None or found.objective == SCORE:
                raise _unrecognised(row, found)
            return found
        if found is None:
            return formats.layout_for_objective(self.objective, row)
        if not formats.compatible(self.objective, found.objective):
            # Scoring is no objective a user picks: "asked for objective 'score'" named none they gave.
            asked = ("scoring reads (prompt, response) rows" if self.objective == SCORE
                     else f"asked for objective {self.objective!r}")
            raise RewardDataError(
                f"{asked} but the data looks like "
                f"{formats.describe_layout(row, found)} (columns: {_names(row)}). "
                + _contradiction_hint(self.objective, found.objective),
                source=source, row=record.number, where=record.where)
        return Layout(self.objective, found.implicit_prompt)

    def _fits(self, found: Layout) -> bool:
        assert self.layout is not None
        if not formats.compatible(self.layout.objective, found.objective):
            return False
        # Explicit prompts after implicit ones would be silently mis-split: call it a mix. The
        # reverse (a row lacking the prompt column) is reported as a missing column instead.
        return not (self.layout.implicit_prompt and not found.implicit_prompt)

    def _located(self, problem: RowError, source: str, record: _Record) -> RewardDataError:
        column, message = problem.column, problem.message
        if problem.reason == "missing column":  # name the alias this data uses ('response', not 'completion')
            problem = self._missing_column_as_the_data_names_it(problem)
            column, message = problem.column, problem.message
        original = next((old for old, new in self.column_map.items() if new == column), None)
        if original is not None:
            message += f" (column {original!r} in the data, renamed to {column!r} by --columns)"
            column = original
        hint = "" if problem.reason == "unrecognised layout" else _SKIP_HINT
        return RewardDataError(message.rstrip(".") + "." + hint, source=source, row=record.number,
                               column=column, where=record.where, reason=problem.reason)

    def _missing_column_as_the_data_names_it(self, problem: RowError) -> RowError:
        """A missing column has aliases (`completion` / `response`); the error names the one the
        earlier rows of this data filled, the others as "also accepted"."""
        aliases = next((group for group in formats.COLUMN_ALIASES if problem.column in group), ())
        used = next((name for name in aliases if name in self.first_columns), None)
        return problem if used is None or used == problem.column else formats.missing_column(aliases, used)

    def _invalid(self, error: RewardDataError) -> None:
        if not self.skip_invalid:
            raise error
        if self.first_problem is None:
            self.first_problem = error
        self.skipped.add(error)
        logger.debug("skipping %s", error)
        return None


def _warn_unread_columns(display: str, row: dict, layout: Layout) -> None:
    """Once per data source: implicit-prompt rows take the prompt from the shared start of
    chosen/rejected, so a prompt kept under an unknown name (``query``) would be dropped for
    every row whose transcripts happen to share a few words. Say so while it can be fixed."""
    unread = formats.unread_text_columns(row) if layout.implicit_prompt else []
    if unread:
        logger.warning("%s: there is no prompt column, so each prompt is the shared start of "
                       "chosen/rejected, and column(s) %s hold text rewardkit does not read; if "
                       "one of them is the prompt, pass --columns prompt=<name>", display,
                       ", ".join(repr(name) for name in unread))


#: The columns of a `rewardkit score --data` output line (`file` only when it scored a folder, the
#: `*_cut` marks only on lines whose text was cut to fit max_length).
_SCORE_OUTPUT_COLUMNS = frozenset({"file", "row", "prompt", "response", "score", "raw_reward", "prompt_cut",
                                   "response_cut"})


def _warn_score_output(display: str, row: dict, layout: Layout) -> None:
    """Once per data source: mse rows with exactly the columns of `rewardkit score --data` output
    take a model's scores as their targets, so evaluating that model on them measures only how
    it agrees with itself. A warning, not a refusal: `score` is an accepted name for annotated
    rewards (and with a `row` id beside it the file looks the same), and another model's scores
    are legitimate targets (distillation, agreement between two models)."""
    columns = {key for key, value in row.items() if value is not None}
    if layout.objective != "mse" or "reward" in columns or not {"row", "score"} <= columns <= _SCORE_OUTPUT_COLUMNS:
        return
    logger.warning("%s looks like the output of `rewardkit score --data` (columns %s): its 'score' column is "
                   "read as the mse target, so a model is measured against a model's scores (against its own, "
                   "the metrics only show that it agrees with itself). Evaluate on annotated rewards or "
                   "preference pairs; if these scores are meant as targets, --columns reward=score says so "
                   "and silences this.", display, ", ".join(repr(name) for name in row))


def _blank_cells_as_null(row: dict) -> dict:
    """A CSV row with its blank cells as None. CSV cannot leave a column out of one row or write
    a null, so an unused column, an unfilled alias (`completion` beside `response`) or an
    optional column (`ranks` beside `scores`) shows as an empty cell. As None they are read the
    way the same rows are read from JSON or Parquet: absent for recognising the layout, skipped
    by aliases and optional columns, and an empty value where a value is required."""
    return {key: None if isinstance(value, str) and not value.strip() else value
            for key, value in row.items()}


def _unrecognised(row: dict, found: Layout | None) -> RowError:
    hint = (" These rows have a prompt and a response but no reward: to score them, use `rewardkit "
            "score --data FILE --output OUT.jsonl` (Python: rewardkit.scoring.score_file, or "
            "objective='score' here); to train or evaluate with mse, add a 'reward' column." if found else "")
    return RowError(f"cannot tell what kind of reward data this is from its columns ({_names(row)})."
                    f"{hint} Accepted layouts: {formats.ACCEPTED_LAYOUTS}. Rename columns with "
                    "--columns new=old", None, "unrecognised layout")


def _mixed_layout_error(row: dict, found: Layout, description: str, first_seen: str,
                        source: str, record: _Record) -> RewardDataError:
    return RewardDataError(
        f"this row looks like {formats.describe_layout(row, found)} (columns: {_names(row)}) but "
        f"the rows before it are {description} (first at {first_seen}). One file or folder must "
        "hold a single layout; split the rows into separate files.",
        source=source, row=record.number, where=record.where, reason="mixed layout")


def _contradiction_hint(asked: str, found: str) -> str:
    if asked == SCORE:
        return ("Scoring takes one prompt + response per row; to measure a model on pairwise "
                "or ranked rows use `rewardkit evaluate`.")
    instead = f"use objective {found!r}, or " if found in OBJECTIVES else ""
    return (f"Either {instead}give {asked} data ({formats.COLUMNS_NEEDED[asked]}); "
            "--columns new=old renames columns.")


def _names(row: dict) -> str:
    names = [repr(str(key))[:40] for key in list(row)[:12]]
    return ", ".join(names) + (", ..." if len(row) > 12 else "") if names else "none"


def _column_map(columns: dict[str, str] | str | None) -> dict[str, str]:
    if columns is None or isinstance(columns, str):
        return parse_column_map(columns)
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in columns.items()):
        raise RewardDataError("columns must be a 'new=old,...' string or a {old: new} dict of names")
    for new in columns.values():
        _check_target(new)
    return dict(columns)


def _check_target(name: str) -> None:
    if name not in formats.KNOWN_COLUMNS:
        raise RewardDataError(f"bad column mapping: {name!r} is not a column rewardkit reads; "
                              f"use one of {', '.join(sorted(formats.KNOWN_COLUMNS))}")


def _rename(row: dict, column_map: dict[str, str]) -> dict:
    """Apply ``{old: new}``; a renamed column replaces a column already called ``new``."""
    if not column_map:
        return row
    renamed = {key: value for key, value in row.items() if key not in column_map}
    renamed.update({new: row[old] for old, new in column_map.items() if old in row})
    return renamed


# ---- sources ------------------------------------------------------------------------------------

_Input = tuple[str, Callable[[], Iterator[_Record]]]


def _resolve(source: str | os.PathLike, split: str | None) -> tuple[str, list[_Input]]:
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
    split_used = is_dir and _split_of(Path(inputs[0][0])) is not None
    if split is not None and inputs and not split_used and not any(
            _suffix_kind(Path(name)) == "json" for name, _ in inputs):
        # JSON documents read the split's key themselves (and say when they have none)
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


def has_hub_dataset_id_form(text: str) -> bool:
    """`owner/name` without a data-file suffix: what a source that is no local path is read as (a
    Hub dataset id). Local paths are checked first, by the caller."""
    return bool(_HUB_ID.fullmatch(text)) and not _suffix_kind(Path(text))


def _folder_inputs(folder: Path, split: str | None) -> list[_Input]:
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise RewardDataError(f"cannot list the folder: {exc}", source=folder) from None
    inputs = []
    for path in entries:
        if path.name.startswith(".") or not path.is_file():
            continue
        if _suffix_kind(path):
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


def _split_files(inputs: list[_Input], folder: Path, split: str | None) -> list[_Input]:
    """The inputs of one split when the folder holds split-named files (a Hub dataset downloaded
    with its data/ folder: train-00000-of-00001.parquet beside test-00000-of-00001.parquet). They
    were all read as one data set, the test split trained on, and --split was ignored."""
    splits: dict[str, list[_Input]] = {}
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
                   f" (left out: {', '.join(others[:_SKIP_EXAMPLES])}{', ...' if len(others) > _SKIP_EXAMPLES else ''})")
    return splits[chosen]


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((kind for suffix, kind in SUFFIXES.items() if name.endswith(suffix)), None)


def _reader_for(path: Path, split: str | None = None) -> Callable[[], Iterator[_Record]]:
    kind = _suffix_kind(path)
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
    """Lines as bytes, so that decoding errors can be pinned to a line."""
    try:
        handle = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise _read_error(path, exc) from None
    with handle:
        while True:
            try:
                line = handle.readline()
            except (OSError, EOFError, zlib.error) as exc:
                raise _read_error(path, exc) from None
            if not line:
                return
            yield line


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
    for number, raw in enumerate(_binary_lines(path), 1):
        yield number, _decode(raw, path, number)


def _read_jsonl(path: Path) -> Iterator[_Record]:
    for number, text in _decoded_lines(path):
        if text.strip():
            yield _json_record(text, number, f"line {number}", path)


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


def _json_record(text: str, number: int, where: str, path: Path) -> _Record:
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


def _object_record(value: Any, number: int, where: str, path: Path) -> _Record:
    if isinstance(value, _KeyedTwice):
        return _bad_record(_REPEATED_KEY, path, number, where, "duplicate column",
                           column=value.repeated)
    if isinstance(value, dict):
        return _Record(number, where, value)
    message = f"expected a JSON object of columns, got {formats.kind_of(value)}"
    return _bad_record(message, path, number, where, "not an object")


_REPEATED_KEY = "the object names this column more than once (JSON would silently keep only the last value); keep one"


def _bad_record(message: str, path: Path, number: int, where: str, reason: str,
                column: str | None = None) -> _Record:
    """A row that could not even be parsed: skippable like an invalid row."""
    error = RewardDataError(message + "." + _SKIP_HINT, source=path, row=number, column=column,
                            where=where, reason=reason)
    return _Record(number, where, error=error)


def _read_json(path: Path, split: str | None = None) -> Iterator[_Record]:
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


def _read_csv(path: Path) -> Iterator[_Record]:
    """CSV with a header row; quoted newlines work; data rows are numbered without the header."""
    _raise_csv_field_limit()
    lines = _Lines(piece for _, text in _decoded_lines(path) for piece in _LONE_CR.split(text) if piece)
    reader = csv.reader(lines)
    header = _next_csv_row(reader, path)
    if header is None:
        return
    if lines.ended:
        raise RewardDataError(f"the header runs to the end of the file (line {reader.line_num}): a closing "
                              "quote (\") of a quoted name is missing", source=path, where="line 1")
    names = [name.strip() for name in header]
    _refuse_other_separator(names, path)
    duplicates = sorted(n for n, count in Counter(names).items() if n and count > 1)
    if duplicates:
        raise RewardDataError(f"the header names columns more than once: {', '.join(duplicates)}",
                              source=path, where="line 1")
    data_row, last_line = 0, reader.line_num
    while (fields := _next_csv_row(reader, path)) is not None:
        first_line, last_line = last_line + 1, reader.line_num
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
        yield _Record(data_row, where, row, text_lists=True)


class _Lines:
    """The lines fed to `csv.reader`, noting when they ran out. csv reads past a row's end only
    inside a quoted field, so running out while reading a row means a quote left open, which it
    closes without a word at the end of the file (`strict=True` would refuse it, but also
    quotes that csv reads fine elsewhere, such as `"a"b`)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.ended = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        try:
            return next(self._lines)
        except StopIteration:
            self.ended = True
            raise


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


def _next_csv_row(reader: Any, path: Path) -> list[str] | None:
    try:
        return next(reader, None)
    except csv.Error as exc:
        line = reader.line_num
        raise RewardDataError(f"broken CSV: {exc}", source=path, where=f"line {line}") from None


def _raise_csv_field_limit() -> None:
    """Long responses exceed csv's 128 KiB default field limit; raise it as far as allowed."""
    limit = 2**31 - 1
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _read_parquet(path: Path) -> Iterator[_Record]:
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
            yield _Record(number, f"row {number}", row)


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


def _read_hub(dataset_id: str, split: str) -> Iterator[_Record]:
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


def _read_saved_dataset(folder: Path, split: str | None) -> Iterator[_Record]:
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


def _dataset_records(dataset: Any, source: str | os.PathLike) -> Iterator[_Record]:
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
        yield _Record(number, f"row {number}", row)
