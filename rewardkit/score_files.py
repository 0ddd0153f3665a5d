"""`rewardkit score --data FILE --output OUT.jsonl` as a function: every row of a data file scored
and written as one JSON line, in input order, streamed so that memory stays flat however long the
file is (`score_file`); the output's name, stream or file, and its lines' columns."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rewardkit.errors import UserInputError
from rewardkit.features import TruncationStats
from rewardkit.scoring import (
    FILE_CHUNK_ROWS,
    RewardScorer,
    iter_chunks,
    log_truncation,
    rewards_of_rows,
    truncation_marks,
)

logger = logging.getLogger(__name__)


def score_file(
    scorer: RewardScorer,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    split: str | None = None,
    columns: dict[str, str] | str | None = None,
    skip_invalid: bool = False,
    chunk_rows: int = FILE_CHUNK_ROWS,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Score every (prompt, response) row of `data` and write JSONL lines
    `{"row": n, "prompt": ..., "response": ..., "score": ..., "raw_reward": ...}` to `output`, in
    input order. `score` is what `scorer.score()` returns; `raw_reward` is r, what preferences are
    read from (P(a > b) = sigmoid((r_a - r_b) / T)), so the file alone answers both. A line whose
    text was cut to fit max_length also carries `"prompt_cut": true` and/or `"response_cut": true`
    (`truncation_marks`).

    Streams: rows are read, scored and written `chunk_rows` at a time, so a 100,000-row file
    needs memory for one chunk only (each chunk is still length-sorted for speed). `row` is the
    row number in the source (1-based, as in data error messages); when `data` is a folder of
    several files, lines also carry `"file"` (the file's name), since numbering restarts per file. The lines go to a temporary
    sibling file that replaces `output` only when every row is written: a failed run leaves no
    half-written output behind. `output="-"` writes to stdout, and a device or pipe (/dev/stdout,
    /dev/null) is written in place (see `is_stream`).

    `shard=(index, count)` scores only the valid rows i with i % count == index (one process of a
    multi-process run: see `rewardkit.distributed.score_file_distributed`).

    `limit` scores only the first `limit` valid rows (as `evaluate --limit`), before sharding, so a
    multi-process run scores the same rows as a single process.

    Truncation (see `RewardScorer`'s max_length) is counted over the whole file and reported once
    at the end, by `log_truncation` (a shard leaves that to `score_file_distributed`, which adds up
    the shards), and in the returned counts.

    Returns:
        {"rows": rows written, "skipped": invalid rows skipped (with skip_invalid), "output": path,
        "truncation": {"texts", "prompt_cut", "response_cut"}: texts scored, and how many of them
        lost the start of the prompt / the end of the response (as in `evaluate`'s metrics)}
    """
    from rewardkit.data import SkipReport, check_limit, iter_reward_rows

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    check_limit(limit)
    if shard is None:  # a shard writes a part file; its caller checked the final name
        check_output_name(output)
    final = Path(output).expanduser()
    if final.is_dir():
        raise IsADirectoryError(f"--output {final} is a folder; give a file name such as scores.jsonl.")
    skipped = SkipReport()
    # `limit` stops reading at the limit-th valid row (a huge file is read no further) and checks
    # --columns on the rows read
    rows = iter_reward_rows(data, split=split, columns=columns, objective="score",
                            skip_invalid=skip_invalid, skipped=skipped, limit=limit)
    if shard is not None:
        rows = _shard_rows(rows, *shard)
    cut = TruncationStats()
    if is_stream(output):
        with closing(rows), _open_stream(output) as handle:
            written = _write_scores(scorer, rows, handle, chunk_rows, cut)
            handle.flush()
        return _finish(scorer, data, final, written, skipped, cut, shard)
    # a link (latest.jsonl -> runs/7/scores.jsonl) is written through, as `>` would: renaming over
    # the link itself would leave its target stale
    target = final.resolve() if final.is_symlink() else final
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle, closing(rows):
            written = _write_scores(scorer, rows, handle, chunk_rows, cut)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _finish(scorer, data, final, written, skipped, cut, shard)


def _finish(scorer: RewardScorer, data: Any, final: Path, written: int, skipped: Any, cut: TruncationStats,
            shard: tuple[int, int] | None) -> dict[str, Any]:
    if shard is None:
        log_truncation(cut, scorer.max_length)
    logger.info("scored %d rows of %s into %s (%d skipped)", written, data, final, skipped.total)
    return {"rows": written, "skipped": skipped.total, "output": str(final), "truncation": asdict(cut)}


# Names of other formats: `score --output scores.csv` (or .parquet, .json, .jsonl.gz) wrote JSON Lines
# under that name, which pandas, `datasets` and rewardkit's own reader then failed to read as named.
_NOT_JSONL_SUFFIXES = (".json", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".bz2", ".xz", ".zst", ".zip")


def check_output_name(output: str | os.PathLike) -> None:
    """Refuse an output file name that promises another format than the JSON Lines written (a
    stream such as `-` or /dev/stdout has no format in its name)."""
    name = Path(output).name.lower()
    suffix = next((suffix for suffix in _NOT_JSONL_SUFFIXES if name.endswith(suffix)), None)
    if suffix is not None and not is_stream(output):
        raise UserInputError(f"--output {output} names a {suffix} file, but scores are written as uncompressed "
                             "JSON Lines (one object per line); name it .jsonl (convert or compress it afterwards).")


def is_stream(path: str | os.PathLike) -> bool:
    """`-` or an existing device, pipe or socket (/dev/stdout, /dev/null, a shell's `>(...)`). These
    are written in place: renaming a finished temporary file over one would replace the device node
    itself (as root: /dev/null becomes a regular file) or fail, and a pipe has nothing to keep whole."""
    if str(path) == "-":
        return True
    try:
        mode = Path(path).expanduser().stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


@contextmanager
def _open_stream(output: str | os.PathLike) -> Iterator[Any]:
    """stdout for `-` (left open), else the device or pipe itself."""
    if str(output) == "-":
        yield sys.stdout
        return
    with open(Path(output).expanduser(), "w", encoding="utf-8") as handle:
        yield handle


def _shard_rows(rows: Iterator[tuple[int, dict]], index: int, count: int) -> Iterator[tuple[int, dict]]:
    """Every `count`-th row starting at `index` (interleaved: long and short rows spread evenly)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is not in [0, {count}).")
    try:
        for position, item in enumerate(rows):
            if position % count == index:
                yield item
    finally:
        rows.close()


def _write_scores(scorer: RewardScorer, rows: Iterable[tuple[int, dict]], handle: Any, chunk_rows: int,
                  cut: TruncationStats) -> int:
    """Score chunk by chunk and write each line; one progress bar over rows, not one per chunk."""
    from tqdm.auto import tqdm

    from rewardkit.data import row_position, row_words

    written = 0
    disable = None if scorer.show_progress is None else not scorer.show_progress
    with tqdm(desc="Scoring", unit="row", disable=disable) as progress:
        for chunk in iter_chunks(rows, chunk_rows):
            prompts = [row["prompt"] for _, row in chunk]
            responses = [row["response"] for _, row in chunk]
            cuts: list[tuple[bool, bool]] = []
            raw = rewards_of_rows(scorer, prompts, responses, lambda i, chunk=chunk: row_words(*chunk[i]), cut, cuts)
            for (number, row), value, reward, cuts_of_row in zip(chunk, scorer.rewards_to_scores(raw).tolist(),
                                                                 raw.tolist(), cuts):
                line = {**row_position(number, row), "prompt": row["prompt"], "response": row["response"],
                        "score": value, "raw_reward": reward, **truncation_marks(*cuts_of_row)}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += len(chunk)
            progress.update(len(chunk))
    return written
