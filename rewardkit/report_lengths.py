"""The "What it prefers" section of ``report.md``: length bias, the known weakness of reward
models. The model's preference for the longer answer is set beside the human labels' and beside
what a model as accurate, its mistakes independent of length, would show; a verdict is given only
when the difference is beyond twice its standard error (see _LengthStats)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rewardkit.report_format import count, format_correlation, image, is_count, num, pct, points

if TYPE_CHECKING:
    from rewardkit.report import _Context


#: An accuracy gap between pairs whose chosen answer is shorter and longer is spelled out beside
#: the accuracies from this many points on (the verdict itself needs it beyond twice its standard error).
LENGTH_GAP_POINTS = 0.10


def md_preferences(ctx: _Context) -> list[str]:
    lines = ["## What it prefers", ""]
    lb = ctx.length_bias()
    if not lb:
        return lines + ["No response lengths were given, so length bias was not measured.", ""]
    rho = lb.get("spearman_reward_length")
    if lb.get("longer_preferred_rate") is not None:
        lines += _length_comparison(lb, ctx.kind)
        lines += _response_cut_note(ctx.metrics)
    elif ctx.kind == "pairwise":
        lines += ["All pairs have answers of equal length; the length preference is undefined.", ""]
    elif ctx.kind == "ranking" and "unequal_length_n" in lb:
        lines += ["All within-group pairs have responses of equal length; the length preference is undefined.", ""]
    direction = ""
    if isinstance(rho, (int, float)) and abs(rho) >= 0.1:
        direction = (
            f" In this data, longer responses tended to get {'higher' if rho > 0 else 'lower'} "
            "rewards"
            + (
                "; this pools responses to different prompts, so the pair-by-pair comparison "
                "above is the fairer test."
                if lb.get("longer_preferred_rate") is not None
                else "."
            )
        )
    lines += [
        f"Rank correlation (Spearman ρ) between reward and response length over all responses: "
        f"**{format_correlation(rho)}** (0 = no relation, +1 = longer always scores higher, −1 = shorter "
        f"always scores higher).{direction}{_why_undefined(rho)}",
        "",
    ]
    target_rho = lb.get("spearman_target_length")
    if "spearman_target_length" in lb:
        lines += [
            f"For comparison, the target scores themselves correlate with length at "
            f"{format_correlation(target_rho)}: a length effect the labels do not have is the model's own."
            if target_rho is not None else
            "For comparison, the target scores' correlation with length is undefined: the target scores, or the "
            "response lengths, are all equal.",
            "",
        ]
    elif ctx.kind == "ranking" and "unequal_length_n" not in lb:  # lengths measured, but not by pair
        lines += [
            "There is no label baseline for this comparison: the ranked data gives an order "
            "within each group, not a score that could be correlated with length, and this "
            "evaluation does not measure how often the labelled order itself puts the longer "
            "response first. So this correlation cannot tell a length preference of the model "
            "from one the labels already have (better-ranked responses that are also longer).",
            "",
        ]
    lines += image(
        "reward_vs_length.png",
        "Reward vs length",
        ctx,
        f"Each dot is a response: its length in {ctx.length_unit} and its reward.",
    )
    return lines


def _why_undefined(rho: Any) -> str:
    """Why a correlation printed as "undefined" is: it needs both sides to vary."""
    return "" if rho is not None else " It is undefined here: the rewards, or the response lengths, are all equal."


@dataclass
class _LengthStats:
    """The model's length preference against what its accuracy alone predicts, with sampling noise
    (from the ``length_bias`` metrics, so every number in the verdict is one the report prints).

    Why not against the labels' share alone: a model that makes mistakes picks the longer answer
    less often than the labels do whenever they mostly chose the longer one, length or no length.
    Right on 70% of pairs, its mistakes falling on long and short answers alike, where the labels
    chose the longer answer in 90%, it picks the longer one in 66%; set against the labels' 90% that
    read as a bias toward shorter answers, and so did a model giving every response the same reward.

    ``expected`` = the share of longer-answer picks of a model right as often as this one on these
    pairs (``accuracy``, ties half) whose mistakes do not depend on which answer is longer:
    label_rate·accuracy + (1 − label_rate)·(1 − accuracy). ``diff`` = model_rate − expected, which is
    −2·n_s·n_l/n² times ``gap`` = accuracy on chosen-shorter pairs minus accuracy on chosen-longer
    pairs (positive: the model leans towards the shorter answer). So both are one test, against
    "no bias" = the same (pooled) accuracy on both kinds of pair: the standard error of a gap between
    two proportions, so that 1 of 1 right against 0 of 1 is not "beyond chance". Where every pair's
    chosen answer is the longer one (or every one the shorter), a length preference and plain
    accuracy cannot be told apart: ``one_sided`` names that side, and nothing is tested. Ranked data's
    ``design_effect`` (pairs of one group are no independent draws) widens both standard errors by its
    square root."""

    n: int
    model_rate: float
    label_rate: float
    accuracy: float = 0.0
    expected: float = 0.0
    diff: float = 0.0
    diff_se: float = 0.0
    diff_max: float = 0.0  # the largest |diff| any model could show on these pairs: 2·n_s·n_l/n²
    gap: float | None = None
    gap_se: float | None = None
    one_sided: str | None = None  # "longer" / "shorter": the side every pair's chosen answer is on
    design_effect: float | None = None  # ranked data: the variance of the gap over that of independent pairs

    @property
    def diff_clear(self) -> bool:
        return self.one_sided is None and self.diff_se > 0 and abs(self.diff) > 2 * self.diff_se

    @property
    def gap_large(self) -> bool:
        return self.gap is not None and abs(self.gap) > LENGTH_GAP_POINTS


def _length_stats(lb: dict[str, Any]) -> _LengthStats | None:
    """None when the metrics lack the shares or the per-kind counts and accuracies (the numbers
    are then printed without a verdict)."""
    model_rate, label_rate, n = (
        lb.get("longer_preferred_rate"),
        lb.get("chosen_longer_rate"),
        lb.get("unequal_length_n"),
    )
    if not (isinstance(model_rate, (int, float)) and isinstance(label_rate, (int, float))):
        return None
    acc_s, n_s = lb.get("chosen_shorter_accuracy"), lb.get("chosen_shorter_n")
    acc_l, n_l = lb.get("chosen_longer_accuracy"), lb.get("chosen_longer_n")
    if not (is_count(n) and is_count(n_s) and is_count(n_l) and n >= 1 and n_s + n_l == n):
        return None
    n = int(n)
    stats = _LengthStats(n, float(model_rate), float(label_rate))
    if not (n_s and n_l):
        stats.one_sided = "longer" if n_l else "shorter"
        return stats
    if not (isinstance(acc_s, (int, float)) and isinstance(acc_l, (int, float))):
        return None
    stats.accuracy = (float(acc_s) * n_s + float(acc_l) * n_l) / n
    stats.expected = stats.label_rate * stats.accuracy + (1 - stats.label_rate) * (1 - stats.accuracy)
    stats.diff = stats.model_rate - stats.expected
    stats.gap = float(acc_s) - float(acc_l)
    deff = lb.get("design_effect")
    if isinstance(deff, (int, float)) and not isinstance(deff, bool) and math.isfinite(deff) and deff >= 1:
        stats.design_effect = float(deff)
    stats.gap_se = math.sqrt(stats.accuracy * (1 - stats.accuracy) * (1 / n_s + 1 / n_l) * (stats.design_effect or 1.0))
    stats.diff_max = 2 * n_s * n_l / n**2
    stats.diff_se = stats.diff_max * stats.gap_se
    return stats


#: How the length section names the two sides of a pair, by kind of data: ranked data's pairs are
#: the within-group pairs, the better-ranked response playing the chosen answer's part.
_PHRASES = {
    "pairwise": {"pairs": "pairs", "chosen": "the chosen answer", "answer": "answer",
                 "labels_chose": "the human labels chose the longer answer", "labels": "the human labels",
                 "preferred": "the human-preferred answer", "label": "human label",
                 "than_labels": "than the human labels do", "labels_share": "the labels'",
                 "labels_rel": "the labels", "preferred_plain": "the preferred answer"},
    "ranking": {"pairs": "within-group pairs", "chosen": "the better-ranked response", "answer": "response",
                "labels_chose": "the labelled order put the longer response first", "labels": "the labelled order",
                "preferred": "the better-ranked response", "label": "labelled order",
                "than_labels": "than the labelled order does", "labels_share": "the labelled order's",
                "labels_rel": "the labelled order", "preferred_plain": "the better-ranked response"},
}


def _length_comparison(lb: dict[str, Any], kind: str = "pairwise") -> list[str]:
    """The numbers, then a verdict that follows from them (see _LengthStats)."""
    w = _PHRASES.get(kind, _PHRASES["pairwise"])
    st = _length_stats(lb)
    first = (
        f"It gives the longer {w['answer']} the higher reward in **{pct(lb.get('longer_preferred_rate'))}** "
        f"of {w['pairs']} (of {count(lb.get('unequal_length_n'), w['pairs'])} whose {w['answer']}s differ in "
        f"length); {w['labels_chose']} in **{pct(lb.get('chosen_longer_rate'))}** of them."
    )
    if st is not None and st.one_sided is None:
        first += (
            f" A model right as often as this one on them ({pct(st.accuracy)}), its mistakes falling on long "
            f"and short {w['answer']}s alike, would give the longer {w['answer']} the higher reward in "
            f"{pct(st.expected)}: the difference, {points(st.diff, sign=True)}, is "
            + ("larger than" if st.diff_clear else "within")
            + f" twice its standard error ({points(2 * st.diff_se)} on these {num(st.n)} {w['pairs']})"
            + (", so it is more than chance." if st.diff_clear else ", so chance alone could explain it.")
        )
    if kind == "ranking":
        first += " " + _groups_note(st, "these standard errors")
    lines = [first, ""]
    second = (
        f"Accuracy when {w['chosen']} is shorter: **{num(lb.get('chosen_shorter_accuracy'), 2)}** "
        f"(n = {num(lb.get('chosen_shorter_n'))}); when it is longer: "
        f"**{num(lb.get('chosen_longer_accuracy'), 2)}** (n = {num(lb.get('chosen_longer_n'))})."
    )
    if st is not None and st.gap is not None and st.gap_se is not None and st.gap_large:
        second += (
            f" It is right {points(abs(st.gap))} more often when {w['chosen']} is the "
            f"{'shorter' if st.gap > 0 else 'longer'} one (twice the standard error of that gap: "
            f"{points(2 * st.gap_se)})."
        )
    lines += [second, ""]
    if st is not None:
        lines += [_length_verdict(st, w), ""]
    return lines


def length_verdict(lb: dict[str, Any], kind: str = "pairwise") -> str | None:
    """The bold verdict of this section from ``length_bias`` metrics, for the model card: its
    length-bias line gave the figures without it, so a card could read as no bias where report.md of
    the same evaluation said "Length bias toward shorter answers". None where the report gives none."""
    st = _length_stats(lb)
    if st is None:
        return None
    text = _length_verdict(st, _PHRASES.get(kind, _PHRASES["pairwise"]))
    if kind == "ranking" and st.one_sided is None:  # as the report says before its verdict
        text += " " + _groups_note(st, "the standard errors behind this verdict")
    return text


def _groups_note(st: _LengthStats | None, errors: str) -> str:
    """Ranked data: its within-group pairs share responses. With the groups' design effect the
    standard errors allow for it and the note says by how much; without (metrics of older versions)
    they are those of independent pairs, and the note says they are too small."""
    if st is not None and st.design_effect is not None:
        return (f"(Pairs of one group share responses, so they are not independent: {errors} allow for it, "
                f"widened by the square root of the groups' design effect, {st.design_effect:.2f}.)")
    return f"(Pairs of one group share responses, so they are not independent: {errors} are somewhat too small.)"


def _length_verdict(st: _LengthStats, w: dict[str, str] = _PHRASES["pairwise"]) -> str:
    """Bold verdict: a bias is named only when the numbers printed before it are beyond chance."""
    if st.one_sided is not None:
        chose = w["labels_chose"].replace("longer", st.one_sided)
        return (
            f"**Length bias not measurable on these {w['pairs']}**: {chose} in every one of them, so a model "
            f"that prefers {st.one_sided} {w['answer']}s cannot be told from one that is simply right. Evaluate "
            f"on {w['pairs']} where {w['preferred']} is sometimes the longer and sometimes the shorter one."
        )
    if st.diff_clear and st.gap is not None:
        toward = "shorter" if st.gap > 0 else "longer"
        return (
            f"**Length bias toward {toward} {w['answer']}s**: it is right {points(abs(st.gap))} more often "
            f"when {w['preferred']} is the {toward} one, and gives the longer {w['answer']} the higher reward "
            f"{points(abs(st.diff))} {'more' if st.diff > 0 else 'less'} often than a model as accurate whose "
            f"mistakes do not depend on length. It {'over' if toward == 'longer' else 'under'}-rewards length "
            f"relative to {w['labels_rel']}."
        )
    text = "**No length bias detected**"
    if 2 * st.diff_se <= 0.05:
        text += (
            f": its preference for length is what its accuracy predicts from {w['labels']} (difference "
            f"{points(st.diff, sign=True)}"
            + (f", within ±{points(2 * st.diff_se)})." if st.diff_se > 0 else ").")
        )
    elif 2 * st.diff_se >= st.diff_max:  # |diff| is at most diff_max on these pairs
        text += f", but {num(st.n)} {w['pairs']} are too few for any difference to show; evaluate on more pairs."
    else:
        text += (
            f", but with {num(st.n)} {w['pairs']} only a difference larger than about "
            f"{points(2 * st.diff_se)} would show; evaluate on more pairs to rule out a smaller "
            "one."
        )
    if st.gap_large:
        text += (
            f" The accuracy gap of {points(abs(st.gap or 0.0))} is within twice its standard "
            "error: too few pairs to tell it from chance."
        )
    return text


def _response_cut_note(m: dict[str, Any]) -> list[str]:
    cut = m.get("truncation")
    if not isinstance(cut, dict) or not is_count(cut.get("response_cut")):
        return []
    if cut["response_cut"] == 0:
        return []
    return [
        f"(Lengths are those of the full responses; in {num(cut['response_cut'])} of "
        f"{num(cut.get('texts'))} scored texts the end of the response was cut before scoring, "
        "so the model did not see all of it.)",
        "",
    ]
