"""Load reward-model data from a file, a folder of files, or a Hugging Face Hub dataset.

``--data`` may point at ``.jsonl``, ``.json``, ``.csv``, ``.parquet`` (and ``.jsonl.gz`` /
``.json.gz``) files, a folder of them (read non-recursively, in name order; other files are
ignored; files named by split, as train-00000-of-00001.parquet and test.jsonl, are read one split at a
time), a `datasets` save_to_disk folder, or a Hub dataset id ``owner/name`` (with ``--split``,
default "train"). The row layouts and their normal forms are described in
:mod:`rewardkit.data_formats`; normal forms:

* pairwise: ``{"prompt": str, "chosen": str, "rejected": str, "margin": float | None}``
* mse:      ``{"prompt": str, "response": str, "reward": float}``
* ranking:  ``{"prompt": str, "responses": list[str]}`` (best first, at least 2)
* score:    ``{"prompt": str, "response": str}`` (``objective="score"``, for ``rewardkit score``;
  a reward column is allowed and ignored; pairwise or ranked rows are refused: use evaluate)

Every problem with the input is a :class:`RewardDataError` naming the source, the row and the
column; nothing else escapes this module. Row numbers are 1-based: the line for JSONL, the
data row (header not counted; the message also gives the line) for CSV, the element for a
JSON array, and the row for Parquet, JSON column objects and datasets (saved or on the Hub).

This module turns raw records into validated rows (layout, normal form, skips);
:mod:`rewardkit.data_sources` opens the files, folders and datasets and reads their records.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardkit import data_formats as formats
from rewardkit.data_errors import SKIP_EXAMPLES, SKIP_HINT, RewardDataError
from rewardkit.data_formats import Layout, RowError
from rewardkit.data_sources import Record, ignores_split, resolve

logger = logging.getLogger(__name__)

OBJECTIVES = ("pairwise", "mse", "ranking")
SCORE = "score"


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
        if len(examples) < SKIP_EXAMPLES:
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
    rows: a JSONL, CSV or Parquet file, or a folder of them not named by split, ignores it
    (`--split train` on train.jsonl reads every row, as no --split does; see `ignores_split`), and
    elsewhere no split reads "train" (a folder of split files, a DatasetDict, a Hub dataset, a JSON
    document's "train" array)."""
    if a is None or b is None:
        return False
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.exists() or second.exists():
        if not (first.exists() and second.exists() and first.resolve() == second.resolve()):
            return False
        if ignores_split(first):
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
    ``columns`` renames the file's columns to the names rewardkit reads: a dict maps
    ``{file column: rewardkit name}`` (``{"question": "prompt"}``); a string is the CLI's
    ``--columns`` form, ``"prompt=question"`` (rewardkit name first), as `parse_column_map` reads it.
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
        self.display, self.inputs = resolve(source, split)
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
                           len(self.inputs), ", ".join(Path(name).name for name in empty[:SKIP_EXAMPLES]))
        if yielded == 0:
            first = str(self.first_problem).replace(SKIP_HINT.strip(), "")
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

    def _row(self, source: str, record: Record) -> dict | None:
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

    def _layout_for(self, found: Layout | None, row: dict, source: str, record: Record) -> Layout:
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

    def _located(self, problem: RowError, source: str, record: Record) -> RewardDataError:
        column, message = problem.column, problem.message
        if problem.reason == "missing column":  # name the alias this data uses ('response', not 'completion')
            problem = self._missing_column_as_the_data_names_it(problem)
            column, message = problem.column, problem.message
        original = next((old for old, new in self.column_map.items() if new == column), None)
        if original is not None:
            message += f" (column {original!r} in the data, renamed to {column!r} by --columns)"
            column = original
        hint = "" if problem.reason == "unrecognised layout" else SKIP_HINT
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
            "score --data FILE --output OUT.jsonl` (Python: rewardkit.score_files.score_file, or "
            "objective='score' here); to train or evaluate with mse, add a 'reward' column." if found else "")
    return RowError(f"cannot tell what kind of reward data this is from its columns ({_names(row)})."
                    f"{hint} Accepted layouts: {formats.ACCEPTED_LAYOUTS}. Rename columns with "
                    "--columns new=old", None, "unrecognised layout")


def _mixed_layout_error(row: dict, found: Layout, description: str, first_seen: str,
                        source: str, record: Record) -> RewardDataError:
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
