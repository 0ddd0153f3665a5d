"""The "How sure it is" section of ``report.md``: mean confidence against accuracy, ECE against
what chance alone would show, and what this run's ``--calibrate`` did. Over- or under-confidence
is stated only beyond twice the standard error of the accuracy (that of a calibrated model; on ranked
data widened by the groups' design effect, since the pairs of one group share responses); the chance
ranges of ECE and accuracy are simulated from the model's own probabilities, on ranked data by drawing
each group's whole ranking (the pairs of a group come from one ranking, as their labels did), once per
report: "Where it fails" reads the same simulations (calibrated_draws)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from rewardkit.calibration import (
    expected_calibration_error,
    preference_probability,
    search_bound_reason,
    temperature_interval_text,
)
from rewardkit.report_format import count, image, num, pct, std_error, these

if TYPE_CHECKING:
    from rewardkit.report import _Context


def uncalibrated_mse(ctx: _Context) -> bool:
    """An mse-trained model read on preferences without a fitted T: its T = 1 differences are in the
    annotations' units, so σ of them is no probability and max(P, 1 − P) no confidence of the model."""
    return ctx.kind != "mse" and ctx.metrics.get("trained_objective") == "mse" and ctx.temperature == 1.0


def md_confidence(ctx: _Context) -> list[str]:
    lines = ["## How sure it is", ""]
    if ctx.kind == "mse":
        return lines + [
            "Calibration is measured on preference pairs only (pairwise or ranked evaluation).",
            "",
        ]
    m = ctx.metrics
    margins = ctx.preference_margins
    ranking = ctx.kind == "ranking"
    pairs = "within-group pairs" if ranking else "pairs"
    n = m.get("n_pairs" if ranking else "n", margins.size if margins is not None else None)
    conf = m.get("mean_confidence")
    if conf is None and margins is not None:
        p = np.asarray(preference_probability(margins, ctx.temperature))
        conf = float(np.mean(np.maximum(p, 1 - p)))
    acc = m.get("pairwise_accuracy" if ranking else "accuracy")
    deff = groups_design_effect(m) if ranking else None
    if conf is None and acc is None:
        return lines + ["No pair margins were given, so calibration was not measured.", ""]
    if uncalibrated_mse(ctx):
        return lines + _uncalibrated_mse_confidence(ctx, conf, acc, pairs) + _calibration_note(ctx) + image(
            "reliability.png", "Reliability diagram", ctx,
            f"{pairs.capitalize()} grouped by max(P, 1 − P) at T = 1, which for this model depends on the "
            f"annotations' scale (see above). n = {pairs} in each bin.")
    if isinstance(conf, (int, float)) and isinstance(acc, (int, float)):
        lines += [
            f"On average the model is **{pct(conf)}** sure which of two responses is better "
            f"(mean of max(P, 1 − P) at T = {ctx.temperature:.3g}) and it picks the "
            + ("better-ranked" if ranking else "human-preferred")
            + f" one **{pct(acc)}** of the time. "
            + _confidence_verdict(float(conf), float(acc), n, accuracy_by_chance(ctx), pairs, deff),
            "",
        ]
    if ranking:
        lines += [_groups_note(deff, ctx.group_sizes is not None, bool(m.get("temperature_interval_by_group"))), ""]
    ece = m.get("ece")
    if isinstance(ece, (int, float)):
        winner = "better wins" if ranking else "chosen wins"
        loser = "worse wins" if ranking else "rejected wins"
        lines += [
            f"Calibration error (ECE, Guo et al. 2017) is **{num(float(ece))}**: on average the "
            f"stated probability is {num(100 * float(ece), 1)} percentage points away from how often "
            f"the model is actually right (0 = perfectly calibrated). Each pair is counted in both "
            f"orders, (P, {winner}) and (1 − P, {loser}), because the label alone is "
            f'always "{winner}".',
            "",
        ]
        floor = _ece_by_chance(ctx)
        if floor is not None and margins is not None:
            within = float(ece) <= floor
            lines += [
                "A perfectly calibrated model with these same probabilities would show an ECE of "
                f"up to {floor:.3f} on {count(margins.size, pairs)} by chance alone (95th "
                f"percentile of {_ECE_SIMULATIONS} simulations), so "
                + (
                    "this ECE cannot be told apart from perfect calibration on these pairs."
                    if within
                    else "the miscalibration is larger than chance explains."
                ),
                "",
            ]
        else:
            within = False
        if ctx.temperature == 1.0 and ece > 0.05 and not within and "temperature_fitted" not in m:
            fit = ("rewardkit.calibration.fit_temperature(rewardkit.metrics.within_group_margins(groups))"
                   if ranking else "rewardkit.calibration.fit_temperature(chosen - rejected)")
            data = "held-out ranked groups" if ranking else "held-out pairs"
            lines += [
                f"To calibrate, fit a temperature on {data} (`rewardkit evaluate "
                f"--calibrate`, or `{fit}`) "
                f"and report with that T on other {data.split()[-1]}; rankings and accuracy do not change.",
                "",
            ]
    lines += _calibration_note(ctx) + _training_data_note(ctx)
    lines += image(
        "reliability.png",
        "Reliability diagram",
        ctx,
        f"{pairs.capitalize()} grouped by how sure the model is of its pick. Bars below the dashed "
        "diagonal: it is right less often than it is sure (over-confident); above it: "
        f"under-confident. n = {pairs} in each bin.",
    )
    return lines


def _uncalibrated_mse_confidence(ctx: _Context, conf: Any, acc: Any, pairs: str) -> list[str]:
    """In place of "the model is 84% sure" and a calibration verdict: at T = 1 an mse model's
    max(P, 1 − P) and ECE measure the annotations' scale (annotations ×10 would make it "sure" of
    every pick), so they are given as what they are and no verdict is drawn from them."""
    figures = []
    if isinstance(conf, (int, float)):
        figures.append(f"the mean of max(P, 1 − P), {num(float(conf))},")
    ece = ctx.metrics.get("ece")
    if isinstance(ece, (int, float)):
        figures.append(f"the ECE, {num(float(ece))},")
    measured = (" and ".join(figures) + " at T = 1 depend on the annotations' scale (annotations ten times as "
                "large would make it look sure of every pick), so no verdict on its calibration is drawn from "
                "them. " if figures else "")
    right = (f"It picks the {'better-ranked' if ctx.kind == 'ranking' else 'human-preferred'} response "
             f"**{pct(acc)}** of the time; that does not depend on T. " if isinstance(acc, (int, float)) else "")
    return [
        "This model was trained to predict annotations (mse) and **no temperature was fitted (T = 1)**, so "
        f"this report cannot say how sure it is: {measured}{right}To measure that, fit T on held-out {pairs} "
        f"(`rewardkit evaluate --calibrate`) and evaluate with it on other {pairs}.",
        "",
    ]


def confidence_call(conf: float, acc: float, n: Any, chance: tuple[float, float] | None = None,
                    design_effect: float | None = None) -> str | None:
    """"over", "under" or None (these pairs cannot tell): the one test behind every word the report
    says on over- or under-confidence (here and in "Where it fails"). A verdict needs the gap beyond
    twice the standard error the accuracy would have if the model were calibrated (right with
    probability equal to its confidence; a score test, as Wilson's interval), and at least 2 points.
    Taken from the observed accuracy instead, that error is 0 at 0% or 100% and one lucky pair would
    read as "under-confident". sqrt(c(1 − c)/n) at the mean confidence c bounds the exact value from
    above. That normal bound is loose on a handful of pairs (one wrong pair at P = 0.88 is "beyond ±65
    points", yet a calibrated model gets it wrong 12% of the time), so with ``chance`` (the central
    95% of a calibrated model's simulated accuracy on these pairs) a verdict also needs the accuracy
    outside it, as the ECE next to it is judged against its own simulations. ``design_effect``
    (ranked data: see rewardkit.metrics._confidence_design_effect) widens that standard error by its
    square root, since the pairs of one group are no independent draws."""
    gap = conf - acc
    if abs(gap) <= _tolerance(conf, n, design_effect)[0] or (chance is not None and chance[0] <= acc <= chance[1]):
        return None
    return "over" if gap > 0 else "under"


def _tolerance(conf: float, n: Any, design_effect: float | None = None) -> tuple[float, bool]:
    """(the gap a verdict must exceed, whether that is twice the standard error rather than 2 points)."""
    se = std_error(conf, n)
    if se is not None and design_effect is not None:
        se *= math.sqrt(design_effect)
    tol = max(0.02, 2.0 * se) if se is not None else 0.02
    return tol, se is not None and tol > 0.02


def _confidence_verdict(conf: float, acc: float, n: Any, chance: tuple[float, float] | None = None,
                        pairs: str = "pairs", design_effect: float | None = None) -> str:
    """The sentence of :func:`confidence_call`, with its numbers."""
    gap = conf - acc
    tol, from_se = _tolerance(conf, n, design_effect)
    widened = (f", widened by the square root of the groups' design effect, {design_effect:.2f}"
               if design_effect is not None else "")
    noise = f"±{100 * tol:.1f} points" + (
        f" (twice the standard error of the accuracy on {count(n, pairs)}, were the model calibrated{widened})"
        if from_se
        else ""
    )
    call = confidence_call(conf, acc, n, chance, design_effect)
    if call is None and abs(gap) > tol and chance is not None:
        return (
            f"The {100 * abs(gap):.1f}-point gap could be chance: a perfectly calibrated model with these "
            f"probabilities is right on {pct(chance[0])} to {pct(chance[1])} of {these(n, pairs)} "
            f"(central 95% of {_ECE_SIMULATIONS} simulations), so these {pairs} cannot tell whether its "
            "confidence matches how often it is right."
        )
    if call is not None:
        return (
            f"It is **{call}-confident** by {100 * abs(gap):.1f} percentage points, beyond "
            f"{noise}."
        )
    return (
        f"The {100 * abs(gap):.1f}-point gap is within {noise}, so its confidence matches how "
        "often it is right as far as these pairs can tell."
    )


def groups_design_effect(m: dict[str, Any]) -> float | None:
    """The ranked metrics' ``confidence_design_effect`` when usable (None in metrics of older versions)."""
    deff = m.get("confidence_design_effect")
    usable = isinstance(deff, (int, float)) and not isinstance(deff, bool) and math.isfinite(deff) and deff >= 1
    return float(deff) if usable else None


def _groups_note(deff: float | None, by_group: bool, t_by_group: bool) -> str:
    """Ranked data: which bounds of this section allow for the pairs of one group sharing responses.
    The verdict's does with the groups' design effect; the simulated chance ranges (accuracy, ECE)
    do when the groups are known (``by_group``: whole rankings drawn, see _simulate), else they
    draw each pair on its own and are too narrow; T's interval does when recorded so."""
    t_note = "; the 95% interval for T below is not (it allows for it)" if t_by_group else ""
    shared = "The pairs of one group share responses, so they are not independent draws: "
    if by_group:
        ranges = ("the chance ranges in this section (each simulation draws every group's whole ranking from the "
                  "model's own rewards, a Plackett-Luce draw in which each pair comes out either way with the "
                  "model's own probability)")
        if deff is None:
            return (f"{shared}{ranges} allow for it; the verdict's twice-standard-error bound, computed as if they "
                    f"were independent, is somewhat too narrow{t_note}.")
        t_also = "; so does the 95% interval for T below" if t_by_group else ""
        return (f"{shared}the verdict's bound above allows for it (widened by the square root of the groups' "
                f"design effect, {deff:.2f}), and so do {ranges}{t_also}.")
    if deff is None:
        return (f"{shared}the noise bounds in this section, computed as if they were, are somewhat too "
                f"narrow{t_note}.")
    return (f"{shared}the verdict's bound above allows for it (widened by the square root of the groups' design "
            f"effect, {deff:.2f}); the chance ranges in this section, simulated as if they were independent, are "
            f"somewhat too narrow{t_note}.")


_ECE_SIMULATIONS = 200


@dataclass(frozen=True)
class CalibratedDraws:
    """What a perfectly calibrated model with the report's probabilities shows on these pairs, one
    value per simulation (labels drawn from the model's own P; see calibrated_draws): its accuracy
    (ties half right, as the accuracy counts them), ECE, and misordered pairs (exact ties left out, as
    "Where it fails" counts them); on ranked groups also its top-1 misses (groups whose drawn best
    response is not the one with the highest reward). Beside them the expected numbers of misordered
    pairs and of top-1 misses, computed exactly."""

    accuracy: NDArray[np.float64]
    ece: NDArray[np.float64]
    misordered: NDArray[np.float64]
    expected_misordered: float
    top1_misses: NDArray[np.float64] | None = None
    expected_top1_misses: float | None = None


def calibrated_draws(ctx: _Context) -> CalibratedDraws | None:
    """The simulations of a calibrated model on these pairs, drawn once per report and kept on
    ``ctx``: "How sure it is" (accuracy and ECE ranges) and "Where it fails" (misordered pairs, top-1
    misses) read the same draws, so the two sections cannot disagree, and the report, written after
    every evaluate, no longer draws them two or three times over. None without pair margins."""
    margins = ctx.preference_margins
    if margins is None:
        return None
    if getattr(ctx, "calibrated", None) is None:
        ctx.calibrated = _simulate(ctx, margins)
    return ctx.calibrated


def accuracy_by_chance(ctx: _Context) -> tuple[float, float] | None:
    """Central 95% of the accuracy of a perfectly calibrated model with the same probabilities
    (see calibrated_draws)."""
    draws = calibrated_draws(ctx)
    return None if draws is None else (float(np.quantile(draws.accuracy, 0.025)),
                                       float(np.quantile(draws.accuracy, 0.975)))


def _ece_by_chance(ctx: _Context) -> float | None:
    """95th percentile of the ECE of a perfectly calibrated model with the same probabilities
    (see calibrated_draws), scored exactly as the real ECE."""
    draws = calibrated_draws(ctx)
    return None if draws is None else float(np.quantile(draws.ece, 0.95))


def _simulate(ctx: _Context, margins: NDArray[np.float64]) -> CalibratedDraws:
    """_ECE_SIMULATIONS draws (fixed seed) of labels from the model's own probabilities. Pairwise:
    each pair on its own, right with probability max(P, 1 − P). Ranked groups (``group_sizes``
    given): every group is ordered by reward / T plus Gumbel noise (a Plackett-Luce draw, the
    random-utility model Bradley-Terry comes from), so each pair goes a's way with probability
    σ((r_a − r_b)/T), its P, and the pairs of one group come from one ranking, as their labels did.
    Drawn pair by pair instead, the K(K − 1)/2 pairs of a group were that many independent draws: on
    calibrated groups of 10 the report said "the miscalibration is larger than chance explains" about
    one time in five. One noise draw per response, so no dearer than a draw per pair."""
    p = np.asarray(preference_probability(margins, ctx.temperature), dtype=np.float64)
    sure, decided = np.maximum(p, 1 - p), margins != 0
    groups = _Groups(ctx) if ctx.group_sizes is not None and ctx.rewards is not None else None
    rng = np.random.default_rng(0)
    accuracy, ece, misordered, misses = (np.zeros(_ECE_SIMULATIONS) for _ in range(4))
    for i in range(_ECE_SIMULATIONS):
        if groups is None:
            u = rng.random(p.size)
            won, right = u < p, u < sure
        else:
            utility = groups.scaled + rng.gumbel(size=groups.scaled.size)
            won = utility[groups.better] > utility[groups.worse]
            right = won == (margins > 0)
            misses[i] = groups.top1_misses(utility)
        accuracy[i] = np.mean(np.where(decided, right, 0.5))
        misordered[i] = np.count_nonzero(decided & ~right)
        outcome = won.astype(np.float64)
        ece[i] = expected_calibration_error(np.r_[p, 1 - p], np.r_[outcome, 1 - outcome], ctx.n_bins)
    return CalibratedDraws(accuracy, ece, misordered, float(np.sum((1 - sure)[decided])),
                           *((misses, groups.expected_top1_misses()) if groups is not None else ()))


class _Groups:
    """The ranked groups of ``ctx.rewards`` (split by ``group_sizes``), for the Plackett-Luce draws."""

    def __init__(self, ctx: _Context) -> None:
        assert ctx.group_sizes is not None and ctx.rewards is not None
        self.sizes = ctx.group_sizes.astype(np.intp)
        self.starts = np.r_[0, np.cumsum(self.sizes)[:-1]]
        self.better, self.worse = ctx.pair_sides
        self.scaled = ctx.rewards / ctx.temperature
        # responses that share their group's highest reward: the model's top (several when tied)
        self.on_top = ctx.rewards == self._group_max(ctx.rewards)

    def _group_max(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.repeat(np.maximum.reduceat(values, self.starts), self.sizes)

    def top1_misses(self, utility: NDArray[np.float64]) -> int:
        """Groups whose drawn best response (highest utility) is not on the model's top."""
        drawn_best = utility == self._group_max(utility)
        return self.sizes.size - int(np.count_nonzero(drawn_best & self.on_top))

    def expected_top1_misses(self) -> float:
        """Σ over groups of 1 − P(the drawn best is on the model's top): under Plackett-Luce a response
        comes first with probability softmax(rewards / T) over its group."""
        weights = np.exp(self.scaled - self._group_max(self.scaled))
        p_top = np.add.reduceat(weights * self.on_top, self.starts) / np.add.reduceat(weights, self.starts)
        return float(np.sum(1 - p_top))


def _calibration_note(ctx: _Context) -> list[str]:
    """What this run's ``--calibrate`` did, how firmly these pairs pin T down, and why the figures
    after it are no independent check (the fit minimised the log loss on these very pairs; ECE and
    Brier, which it does not minimise, may even rise)."""
    m = ctx.metrics
    fitted = m.get("temperature_fitted")
    if fitted is None and m.get("temperature_written") is False:
        return [
            "`--calibrate` fitted no temperature: every pair's reward margin is 0 (the model gives both "
            "responses the same reward), so the pairs say nothing about T. Nothing was written to the "
            f"model's config; the numbers in this report use T = {ctx.temperature:.3g}.",
            "",
        ]
    if not isinstance(fitted, (int, float)):
        return []
    before = m.get("temperature_before")
    before_text = f"T before: {float(before):.3g}" if isinstance(before, (int, float)) else ""
    if m.get("temperature_written") is False:
        return [
            f"`--calibrate` fitted T = {float(fitted):.3g}, {search_bound_reason(float(fitted))}; no "
            "estimate, so it was **not** written to the model's "
            f"config; the numbers in this report use T = {ctx.temperature:.3g}. Calibrate on "
            "more held-out pairs.",
            "",
        ]
    ranking = ctx.kind == "ranking"
    n = m.get("n_pairs" if ranking else "n")
    pairs = "within-group pairs" if ranking else "pairs"
    lines = [
        f"`--calibrate` fitted T = {float(fitted):.3g} on {these(n, pairs, 'same')} and wrote it "
        "to the model's config.json" + (f" ({before_text})" if before_text else "") + "."
    ]
    lines[-1] += _before_after(m, "log_loss", "Log loss") + _before_after(m, "ece", "ECE")
    eb, ea = m.get("ece_before"), m.get("ece_after")
    if isinstance(eb, (int, float)) and isinstance(ea, (int, float)) and ea > eb:
        lines[-1] += (" The fit minimises the log loss, not the binned ECE, so the ECE can rise, as it did "
                      "here.")
    lines += ["", *_temperature_support(m, n, pairs), ""]
    lines += [
        "**Caveat: these figures are no independent check.** The log loss after calibration is "
        "optimistic (T minimises it on these very pairs), and the ECE, Brier score and mean "
        "confidence above are measured on the same pairs (accuracy does not depend on T). For "
        "unbiased figures, evaluate the calibrated model on other held-out pairs, without "
        "`--calibrate`.",
        "",
    ]
    return lines


def _training_data_note(ctx: _Context) -> list[str]:
    """`--calibrate` on the model's own training data: warned about in the log, recorded in the
    metrics, and said here too, where the fitted T and its figures are read."""
    if not ctx.metrics.get("calibrated_on_training_data"):
        return []
    return [
        "**These pairs are the model's training data** (its training record says so): a model "
        "fits its training pairs better than new ones, so a T fitted on them is too small for new pairs and "
        "its probabilities over-confident. Calibrate on held-out pairs.",
        "",
    ]


def _before_after(m: dict[str, Any], key: str, name: str) -> str:
    before, after = m.get(f"{key}_before"), m.get(f"{key}_after", m.get(key))
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)):
        return ""
    return f" {name} before calibration: {float(before):.3f}; after: {float(after):.3f}."


def _temperature_support(m: dict[str, Any], n: Any, pairs: str) -> list[str]:
    """How firmly the pairs pin T down: its 95% interval, and whether T = 1 is inside it."""
    interval, statistic = m.get("temperature_interval"), m.get("temperature_lr_vs_1")
    if not (isinstance(interval, list) and len(interval) == 2 and isinstance(statistic, (int, float))):
        return []
    low, high = (float(value) for value in interval)
    basis = ("profile likelihood, widened for the pairs of one group being correlated: a design-effect "
             "adjustment over groups" if m.get("temperature_interval_by_group") else "profile likelihood")
    text = (f"95% interval for T on {these(n, pairs)} ({basis}): {temperature_interval_text(low, high)}; "
            f"likelihood-ratio statistic against T = 1: {float(statistic):.2f} (3.84 is the 5% threshold). ")
    if m.get("temperature_differs_from_1"):
        return [text + "T differs from 1 beyond chance: the raw model's probabilities were miscalibrated."]
    return [text + "**These pairs cannot tell T from 1**: the fitted T is the best single guess, but the "
            "calibrated probabilities are no better established than the raw ones. Calibrate on more "
            "held-out pairs."]

