"""The one error data loading raises, and the wording its row-level messages share.

Its own module so that :mod:`rewardkit.data` (rows, layouts, skips) and :mod:`rewardkit.data_sources`
(files, folders, Hub datasets) can both raise it without importing each other.
"""

from __future__ import annotations

import os

SKIP_EXAMPLES = 5  # how many skipped rows (or left-out files) a message names before "..."
SKIP_HINT = " Fix or remove the row, or pass --skip-invalid (Python: skip_invalid=True) to skip invalid rows."


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
