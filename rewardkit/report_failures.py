"""The "Where it fails" section of ``report.md``: how many pairs the model gets the wrong way round
(for ranked data, within-group pairs and top-1 misses) and whether that many is expected of a
calibrated model; then the worst-scored examples (pairs, responses or groups), texts cut and escaped,
or replaced by their lengths when redacted (on under CI)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from rewardkit.calibration import preference_probability
from rewardkit.report_confidence import (
    accuracy_by_chance,
    calibrated_draws,
    confidence_call,
    groups_design_effect,
    uncalibrated_mse,
)
from rewardkit.report_format import (
    TEXT_LIMIT,
    accuracy_interval_parts,
    count,
    escape,
    is_count,
    num,
    pct,
    truncate,
)

if TYPE_CHECKING:
    from rewardkit.report import _Context


_PREFERRED_COLUMNS = (
    "prompt",
    "chosen",
    "rejected",
    "response",
    "margin",
    "reward",
    "predicted",
    "target",
)


def _columns(examples: Sequence[dict[str, Any]]) -> list[str]:
    keys = {k for ex in examples for k in ex}
    return [k for k in _PREFERRED_COLUMNS if k in keys] + sorted(keys - set(_PREFERRED_COLUMNS))


def _cell(value: Any, redact: bool, column: str = "") -> str:
    """A table cell: texts cut (a prompt keeps its end, where the turn being answered is, and loses
    its leading blank lines) and escaped, or only their length when redacted; numbers rounded."""
    if isinstance(value, str):
        if redact:
            return f"({len(value):,} chars)"
        return escape(truncate(value.strip(), keep_end=True) if column == "prompt" else truncate(value))
    return num(value)


def _margins_of(examples: Sequence[dict[str, Any]]) -> list[float]:
    return [ex["margin"] for ex in examples if isinstance(ex.get("margin"), (int, float))]


def _worst_margin_note(examples: Sequence[dict[str, Any]], temperature: float) -> str:
    """How sure "surest" is: the probability behind the most negative margin shown."""
    margins = _margins_of(examples)
    if not margins or min(margins) >= 0:
        return ""
    worst = float(min(margins))
    p = float(preference_probability(worst, temperature))
    return (
        f" The most negative margin shown, {num(worst)}, means P(chosen ≻ rejected) = {p:.2f} at "
        f"T = {temperature:.3g}: the model is {pct(1 - p)} sure of the wrong answer there."
    )


def md_failures(ctx: _Context) -> list[str]:
    counts = {"pairwise": _misordered_pairs, "ranking": _misordered_within_groups}.get(ctx.kind)
    lines = ["## Where it fails", "", *(counts(ctx) if counts else [])]
    examples = ctx.worst_examples
    if not examples:
        return lines + ["No worst examples were given.", ""]
    if ctx.kind == "pairwise":
        margins = _margins_of(examples)
        if margins and min(margins) > 0:
            lead = (f"**No pair is misordered**: every chosen answer scored above its rejected one. "
                    f"Below are the {count(len(examples), 'closest calls')} instead, smallest margin first.")
        else:
            shown = sum(1 for x in margins if x < 0)
            lead = f"The {count(len(examples), 'pairs')} with the smallest margins, most negative first"
            lead += "." if shown in (0, len(examples)) else (
                f": the first {shown} misordered, the rest the closest calls the model got right.")
        lines += [
            lead + " A negative margin means the model gave the rejected answer the higher reward; "
            "the more negative, the surer it was of the wrong answer." + _worst_margin_note(examples, ctx.temperature),
            "",
        ]
    elif ctx.kind == "mse":
        lines += [
            f"The {count(len(examples), 'responses')} whose prediction (`predicted`) lies furthest from "
            "the target score (`target`), largest |predicted − target| first.",
            "",
        ]
    else:
        lines += _ranking_failures_intro(ctx)
    if ctx.redact:
        lines += [
            "*Text redacted (evaluation data can contain offensive red-teaming content; "
            "redaction is on by default when `CI` is set): only lengths and numbers are "
            "shown.*",
            "",
        ]
    else:
        lines += [f"Texts are cut to {TEXT_LIMIT} characters (prompts keep their end, the part the model "
                  "reads when a prompt is too long); ⏎ marks a line break.", ""]
    cols = _columns(examples)
    if "row" in cols:
        lines += [
            "`row` is the row's number in the data file (for JSONL, its line number)"
            + ("; `file` the file it came from." if "file" in cols else "."),
            "",
        ]
    lines.append("| # | " + " | ".join(escape(c) for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for i, ex in enumerate(examples, 1):
        cells = [_cell(ex[c], ctx.redact, c) if c in ex else "" for c in cols]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _misordered_pairs(ctx: _Context) -> list[str]:
    """How many pairs the model gets the wrong way round (the table below shows at most 10), why
    some always are (its own probabilities predict how many), and when they are a fault: more or
    fewer than a calibrated model would get wrong (the test of "How sure it is", so the two sections
    cannot disagree), or an accuracy that a model that guesses could show."""
    m = ctx.metrics
    n, acc, ties = m.get("n"), m.get("accuracy"), m.get("ties", 0)
    wrong = _wrong_count(n, acc, ties)
    if wrong is None:
        return []
    text = (f"The model gives the rejected answer the higher reward in **{num(wrong)} of {count(n, 'pairs')}** "
            f"({pct(wrong / n)}" + (f"; {_more_ties(ties)})." if ties else ")."))
    conf, draws = m.get("mean_confidence"), calibrated_draws(ctx)
    if isinstance(conf, (int, float)) and draws is not None and not uncalibrated_mse(ctx):
        text += (f" A calibrated model gets some wrong: with these probabilities (at T = {ctx.temperature:.3g}) "
                 f"about {num(round(draws.expected_misordered))} ({_chance_range(draws.misordered)} by chance), "
                 "since a pair called at P = 0.75 goes the other way one time in four, and human labels are "
                 "themselves noisy. " + _verdict(float(conf), float(acc), n, accuracy_by_chance(ctx), "pairs"))
    interval = accuracy_interval_parts(acc, n)  # the report's and the card's rule for "reaches 0.5"
    if interval is not None and interval[1]:
        text += (f" But its accuracy's 95% interval ({interval[0]}) reaches 0.5: these "
                 "pairs cannot tell it from a model that guesses, so which pairs it gets wrong says little yet.")
    return [text, ""]


def _verdict(conf: float, acc: float, n: Any, chance: tuple[float, float] | None, pairs: str,
             design_effect: float | None = None, counted: str = "Its count") -> str:
    """The call of "How sure it is" (confidence_call), in words beside the counts. A count outside
    its chance range with no call (the gap is within that test's 2 points or twice the standard
    error) is said to be so, not called "what its confidence predicts" next to a range it lies out of."""
    call = confidence_call(conf, acc, n, chance, design_effect)
    if call == "over":
        return "It gets more wrong than that: it is over-confident (see \"How sure it is\")."
    if call == "under":
        return "It gets fewer wrong than that: it is under-confident (see \"How sure it is\")."
    if chance is not None and not chance[0] <= acc <= chance[1]:
        return (f"{counted} lies outside that range, but its accuracy is too close to its confidence for "
                "\"How sure it is\" to call it over- or under-confident.")
    return f"{counted} is what its confidence predicts, as far as these {pairs} can tell."


def _chance_range(simulated: NDArray[np.float64]) -> str:
    """"L to H": the whole counts within the central 95% of a calibrated model's simulated counts, so
    that a count printed inside the range is inside it (rounding could put a bound of 9.6 at 10)."""
    low, high = np.quantile(simulated, [0.025, 0.975])
    return f"{num(math.ceil(low - 1e-9))} to {num(math.floor(high + 1e-9))}"


def _wrong_count(n: Any, accuracy: Any, ties: Any) -> int | None:
    """Pairs ranked the wrong way round, from their count, accuracy and exact ties (the accuracy
    counts a tie as half right); None when the metrics do not give them."""
    if not (is_count(n) and n > 0 and isinstance(accuracy, (int, float)) and is_count(ties)):
        return None
    return round(n * (1 - float(accuracy)) - ties / 2)


def _more_ties(ties: int) -> str:
    """The ties beside a count of misordered pairs: "1 more is an exact tie", "3 more are exact ties"."""
    return "1 more is an exact tie" if ties == 1 else f"{num(ties)} more are exact ties"


def _misordered_within_groups(ctx: _Context) -> list[str]:
    """How many within-group pairs the model orders against the labels, and in how many groups the
    labelled best is not on top: the counts the pairwise report opens with (the list below shows at
    most 10 groups and only their top). Beside them what a calibrated model would misorder (see
    _calibrated_groups). Nothing when no pair is misordered: the list's lead says so."""
    m = ctx.metrics
    n, acc, ties = m.get("n_pairs"), m.get("pairwise_accuracy"), m.get("ties", 0)
    wrong = _wrong_count(n, acc, ties)
    if wrong is None or acc == 1.0:
        return []
    text = (f"The model puts a worse-ranked response above a better-ranked one in **{num(wrong)} of "
            f"{count(n, 'within-group pairs')}** ({pct(wrong / n)}" + (f"; {_more_ties(ties)})" if ties else ")"))
    misses = _top1_misses(m)
    if misses is not None:
        text += (f", and another response above the labelled best one in **{num(misses)} of "
                 f"{count(m['n_groups'], 'groups')}** ({'top-1 miss' if misses == 1 else 'top-1 misses'})")
    return [text + "." + _calibrated_groups(ctx, misses), ""]


def _top1_misses(m: dict[str, Any]) -> int | None:
    """Groups whose labelled best is not on top; None when a tie at the top makes it no whole count
    (top-1 accuracy counts such a group 1/k) or the metrics do not give it."""
    groups, top1 = m.get("n_groups"), m.get("top1_accuracy")
    if not (is_count(groups) and groups > 0 and isinstance(top1, (int, float)) and m.get("top1_ties") == 0):
        return None
    return round(groups * (1 - float(top1)))  # without ties at the top each group counts 1 or 0


def _calibrated_groups(ctx: _Context, misses: int | None) -> str:
    """What a calibrated model with these rewards misorders, as the pairwise report says of its pairs:
    the expected number of misordered within-group pairs (Σ min(P, 1 − P) over those not exactly
    tied) and of top-1 misses (Plackett-Luce: the labelled best is on top with probability
    softmax(rewards / T) of the top), each with the central 95% of the simulations of "How sure it
    is", which draw each group's whole ranking. Nothing without ``group_sizes``: drawn pair by pair,
    as if the pairs of a group shared no responses, the ranges would be too narrow. The verdict is
    that section's own test, so the two cannot disagree; a top-1 count outside its range is said as a
    fact of the top, not as over- or under-confidence."""
    m, draws = ctx.metrics, calibrated_draws(ctx)
    conf, acc = m.get("mean_confidence"), m.get("pairwise_accuracy")
    if (draws is None or draws.top1_misses is None or draws.expected_top1_misses is None or uncalibrated_mse(ctx)
            or not isinstance(conf, (int, float)) or not isinstance(acc, (int, float))):
        return ""
    top1 = "" if misses is None else (f" and about {num(round(draws.expected_top1_misses))} top-1 misses "
                                      f"({_chance_range(draws.top1_misses)})")
    text = (f" A calibrated model misorders some: with these probabilities (at T = {ctx.temperature:.3g}) about "
            f"{num(round(draws.expected_misordered))} within-group pairs ({_chance_range(draws.misordered)} by "
            f"chance){top1}, since each group's labels are one ranking in which a response placed above another at "
            "P = 0.75 comes out below it one time in four, and human labels are themselves noisy (ranges: central 95% "
            f"of {num(draws.misordered.size)} simulations drawing each group's whole ranking from the model's rewards). ")
    text += _verdict(float(conf), float(acc), m.get("n_pairs"), accuracy_by_chance(ctx), "groups",
                     groups_design_effect(m), "Its count of misordered pairs")
    if misses is not None:
        low, high = np.quantile(draws.top1_misses, [0.025, 0.975])
        if not low <= misses <= high:
            text += (f" Its top-1 misses lie {'above' if misses > high else 'below'} their range: the labelled best "
                     f"is on top {'less' if misses > high else 'more'} often than its own probabilities say.")
    return text


def _ranking_failures_intro(ctx: _Context) -> list[str]:
    """Whether any group is misordered at all, then what the ranking worst examples are (built in
    rewardkit.evaluation: per group, margin = reward of the labelled-best response − the highest
    reward among the others in the group; the smallest margins are kept)."""
    examples, m = ctx.worst_examples, ctx.metrics
    margins = _margins_of(examples)
    pair_acc, top1 = m.get("pairwise_accuracy"), m.get("top1_accuracy")
    lines: list[str] = []
    if isinstance(pair_acc, (int, float)) and pair_acc == 1.0:
        lines += [
            "**No group is misordered**: every within-group pair is in the labelled order "
            f"(pairwise accuracy {num(pair_acc)}), so there is no failure to show. Below are the "
            f"{count(len(examples), 'closest calls')} instead: the groups whose best response leads its "
            "strongest rival by the least.",
            "",
        ]
        comparison = _calibrated_groups(ctx, 0 if _top1_misses(m) == 0 else None).strip()
        lines += [comparison, ""] if comparison else []
    else:
        misses, ties = sum(1 for x in margins if x < 0), sum(1 for x in margins if x == 0)
        if not margins:
            text = f"The {count(len(examples), 'groups')} given, without margins."
        elif misses == 0 and ties == 0:
            text = (
                f"The {count(len(examples), 'groups')} with the smallest margins. None of them is a top-1 "
                "miss: the best response has the highest reward"
            )
            text += (
                " in every group (top-1 accuracy 1.000); the misordering is among the lower "
                "responses, which this list, sorted by the margin of the best response, does not "
                "show."
                if isinstance(top1, (int, float)) and top1 == 1.0
                else " in each of them."
            )
        else:
            text = (
                f"The {count(len(examples), 'groups')} with the smallest margins; {misses} of them "
                + ("is a top-1 miss" if misses == 1 else "are top-1 misses") + " (negative margin)"
                + (f" and {ties} a tie at the top (margin 0)." if ties else ".")
            )
        lines += [text, ""]
    return lines + [
        "Each row is one group: `response` is the response labelled best, `reward` its reward, "
        "and `margin` = that reward − the highest reward among the other responses of the group. "
        "A negative margin means the model put another response above the best one (a top-1 "
        "miss); 0 means a tie at the top. The margin looks only at the top: the lower responses "
        "of a group can be out of order whatever its margin (Kendall τ and pairwise accuracy "
        "above count those).",
        "",
    ]
