"""Formatting shared by the sections of ``report.md``: numbers, percentages, standard errors,
table-safe text and images. Text from evaluation data is escaped and cut here, so no section can
break the markdown or print a whole red-teaming transcript."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rewardkit.report import _Context


TEXT_LIMIT = 120  # characters of each worst-example text shown in report.md
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|!~&$])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def format_correlation(value: float | None) -> str:
    """A correlation with its sign (+0.42), or "undefined" (constant input)."""
    return "undefined" if value is None else f"{value:+.2f}"


def num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "n/a"
        text = f"{float(value):.{digits}f}"
        # a value that is not 0 is never printed as 0.000: an RMSE of 0.0002 (targets in small
        # units) read as a perfect fit, a top-1 margin of -0.0001 as a tie
        return f"{float(value):.{digits}g}" if value != 0 and float(text) == 0 else text
    return escape(str(value))


def count(n: Any, plural: str, singular: str | None = None) -> str:
    """`n` with its noun, given in the plural: "2 pairs", but "1 pair" (the noun less its final s),
    so a report on one pair does not say "on 1 pairs"."""
    return f"{num(n)} {(singular or plural[:-1]) if n == 1 else plural}"


def these(n: Any, plural: str, adjective: str = "") -> str:
    """"these (same) 60 pairs", but "this (same) pair": :func:`count` alone gives "these 1 pair"."""
    before = f"{adjective} " if adjective else ""
    return f"this {before}{plural[:-1]}" if n == 1 else f"these {before}{count(n, plural)}"


def cell_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return num(value)


def std_error(rate: Any, n: Any) -> float | None:
    """Standard error of a proportion over ``n`` items whose true rate is ``rate``: pass the rate a
    hypothesis says (as the verdicts do), not an observed 0 or 1, where this is 0 whatever ``n``."""
    if not isinstance(rate, (int, float)) or not is_count(n) or n < 1:
        return None
    return math.sqrt(max(float(rate) * (1.0 - float(rate)), 0.0) / int(n))


def wilson_interval(rate: Any, n: Any, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion ``rate`` observed over ``n`` items. Unlike
    rate ± 1.96·SE it does not shrink to a point at 0% or 100% (1 pair of 1 right: 0.21 to 1)."""
    if not isinstance(rate, (int, float)) or not is_count(n) or n < 1:
        return None
    p, z2 = float(rate), z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n))
    return max(center - half, 0.0), min(center + half, 1.0)


#: How report.md and the model card name a pairwise accuracy's interval: the accuracy on the pairs
#: themselves is an exact count, so the interval is for other pairs like these.
ACCURACY_INTERVAL = "95% interval for its accuracy on other pairs like these"


def accuracy_interval_parts(accuracy: Any, n: Any) -> tuple[str, str] | None:
    """("0.499 to 0.609", "it reaches 0.5: ...") of a pairwise accuracy over ``n`` pairs: its 95%
    Wilson interval, and a word when it reaches 0.5, where the pairs cannot tell the model from a
    coin ("" otherwise). None without a count."""
    interval = wilson_interval(accuracy, n)
    if interval is None:
        return None
    chance = "it reaches 0.5: these pairs cannot tell the model from one that guesses" if interval[0] <= 0.5 else ""
    return f"{interval[0]:.3f} to {interval[1]:.3f}", chance


def accuracy_interval_text(accuracy: Any, n: Any) -> str | None:
    """`accuracy_interval_parts` as one phrase, as report.md's headline gives it."""
    parts = accuracy_interval_parts(accuracy, n)
    if parts is None:
        return None
    return f"{ACCURACY_INTERVAL}: {parts[0]} (Wilson)" + (f"; {parts[1]}" if parts[1] else "")


def pct(value: Any) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{100 * float(value):.0f}%"


def escape(text: str) -> str:
    """One table-cell-safe line: newlines shown as ⏎, markdown/HTML characters backslashed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\t", " "))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\n", " ⏎ ")


def truncate(text: str, limit: int = TEXT_LIMIT, *, keep_end: bool = False) -> str:
    """At most `limit` characters: the start, or with `keep_end` the end (for prompts: the model
    reads the end of a long prompt, the turn being answered, and cuts its start)."""
    if len(text) <= limit:
        return text
    return "…" + text[len(text) - limit + 1:] if keep_end else text[: limit - 1] + "…"


def image(name: str, alt: str, ctx: _Context, how_to_read: str) -> list[str]:
    if name not in ctx.plots:
        return []
    return [f"![{alt}]({name})", "", how_to_read, ""]


def points(x: float, *, sign: bool = False) -> str:
    """A difference of proportions in percentage points, one decimal."""
    value = 100 * x
    text = f"{value:+.1f}" if sign else f"{value:.1f}"
    return text.replace("-", "−") + " points"


def is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
