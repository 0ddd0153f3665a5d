"""``report.md`` of an evaluation report (:mod:`rewardkit.report`): what a reward means, the
headline metrics, how sure the model is, what it prefers, where it fails.

Every verdict in the text follows from numbers printed next to it: "over-/under-confident" and
"length bias" are stated only when the gap is beyond twice its standard error on the evaluated
pairs (and, for the accuracy gap between chosen-shorter and chosen-longer pairs, above
:data:`LENGTH_GAP_POINTS`); otherwise the report says the pairs cannot tell. Figures measured at a
temperature fitted on the same pairs (``--calibrate``) are flagged as optimistic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rewardkit.calibration import (
    expected_calibration_error,
    preference_probability,
)

if TYPE_CHECKING:
    from rewardkit.report import _Context

TEXT_LIMIT = 120  # characters of each worst-example text shown in report.md
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|!~&$])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def format_correlation(value: float | None) -> str:
    """A correlation with its sign (+0.42), or "undefined" (constant input)."""
    return "undefined" if value is None else f"{value:+.2f}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}" if math.isfinite(value) else "n/a"
    return _escape(str(value))


def _cell_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _num(value)


def _std_error(rate: Any, n: Any) -> float | None:
    """Standard error of a proportion ``rate`` measured over ``n`` items."""
    if not isinstance(rate, (int, float)) or not _is_count(n) or n < 1:
        return None
    return math.sqrt(max(float(rate) * (1.0 - float(rate)), 0.0) / int(n))


def _margin_of_error(rate: Any, n: Any) -> float | None:
    """Half-width of the normal-approximation 95% interval of a proportion over n items."""
    se = _std_error(rate, n)
    return None if se is None else 1.96 * se


def _pct(value: Any) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{100 * float(value):.0f}%"


def _escape(text: str) -> str:
    """One table-cell-safe line: newlines shown as ⏎, markdown/HTML characters backslashed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text.replace("\t", " "))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\n", " ⏎ ")


def _truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _image(name: str, alt: str, ctx: _Context, how_to_read: str) -> list[str]:
    if name not in ctx.plots:
        return []
    return [f"![{alt}]({name})", "", how_to_read, ""]


def render_markdown(ctx: _Context) -> str:
    sections = [
        _md_header(ctx),
        _md_meaning(ctx),
        _md_headline(ctx),
        _md_confidence(ctx),
        _md_preferences(ctx),
        _md_failures(ctx),
        _md_footer(ctx),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


_KIND_TEXT = {
    "pairwise": "preference pairs (chosen vs rejected)",
    "mse": "scalar scores (regression)",
    "ranking": "ranked groups of responses",
}


def _md_header(ctx: _Context) -> list[str]:
    title = "# Reward model report" + (f": {_escape(ctx.model_name)}" if ctx.model_name else "")
    m = ctx.metrics
    n = m.get("n", m.get("n_groups"))
    unit = {"pairwise": "pairs", "mse": "responses", "ranking": "groups"}[ctx.kind]
    data = m.get("data_name", m.get("data"))
    source = f" from {_escape(str(data))}" if isinstance(data, str) and data else ""
    temperature = "" if ctx.kind == "mse" else f"; temperature T = {ctx.temperature:.3g}"
    lines = [
        title,
        "",
        f"Evaluated on {_KIND_TEXT[ctx.kind]}{source}: {_num(n)} {unit}{temperature}.",
        "",
    ]
    return lines + _truncation_note(m)


def _truncation_note(m: dict[str, Any]) -> list[str]:
    """What the model did not see: texts cut to its maximum length (from ``truncation``)."""
    cut = m.get("truncation")
    if not isinstance(cut, dict) or not isinstance(cut.get("texts"), int) or cut["texts"] < 1:
        return []
    texts, prompt_cut, response_cut = cut["texts"], cut.get("prompt_cut"), cut.get("response_cut")
    if not isinstance(prompt_cut, int) or not isinstance(response_cut, int):
        return []
    limit = m.get("max_length")
    limit_text = f"{_num(limit)} tokens" if isinstance(limit, int) else "the model's maximum length"
    if prompt_cut == 0 and response_cut == 0:
        return [f"No text was cut: every (prompt, response) fitted in {limit_text}.", ""]
    return [
        f"Texts were cut to fit {limit_text}: the start of the prompt was cut in "
        f"{_num(prompt_cut)} of {_num(texts)} scored texts and the end of the response in "
        f"{_num(response_cut)}. The model judged those texts without the part that was cut.",
        "",
    ]


def _md_meaning(ctx: _Context) -> list[str]:
    if ctx.kind == "mse":
        return _md_meaning_scalar(ctx)
    t = ctx.temperature
    margins = [0.0, 0.5, 1.0, 2.0, 4.0]
    probs = [float(preference_probability(m, t)) for m in margins]
    lines = [
        "## What the numbers mean",
        "",
        "The model gives every response a single number, its **reward**. On its own the number "
        "means nothing: adding the same constant to every reward changes nothing. The reward is "
        "a **relative score**: only the *difference* between two responses to the same prompt "
        "matters. The model reads a difference as a probability (Bradley-Terry model):",
        "",
        f"> P(a ≻ b) = σ((r_a − r_b) / T), with σ(x) = 1 / (1 + e^(−x)) and **T = {t:.3g}** "
        f"in this report {_temperature_origin(ctx)}",
        "",
        "| reward difference r_a − r_b | " + " | ".join(f"{m:g}" for m in margins) + " |",
        "|---|" + "---|" * len(margins),
        "| P(a preferred over b) | " + " | ".join(f"{p:.2f}" for p in probs) + " |",
        "",
    ]
    if ctx.kind == "pairwise":
        lines += [
            "These are probabilities, so even a good model gives the rejected response the "
            "higher reward in some pairs: at P = 0.75 the humans are expected to prefer the "
            "other answer one time in four. The accuracy below says how often the chosen "
            "response scores higher, the margin by how much.",
            "",
        ]
    elif ctx.kind == "ranking":
        lines += [
            "Inside a ranked group every better-ranked response is preferred over every "
            "worse-ranked one, so a group of K responses holds K(K − 1)/2 such pairs; the "
            "probabilities below are measured over all of them. Even a good model puts some "
            "pairs in the wrong order: at P = 0.75 the ranking is expected to disagree one time "
            "in four.",
            "",
        ]
    return lines


def _md_meaning_scalar(ctx: _Context) -> list[str]:
    """Scalar targets: the reward is read as a prediction of the annotated score. Phrased by what
    the data is, not by how the model was trained (the metrics do not say; ``objective`` is the
    kind of the evaluated data)."""
    t = ctx.temperature
    lines = [
        "## What the numbers mean",
        "",
        "The model gives every response a single number, its **reward**. These scalar targets "
        "give each response an annotated score, so here the reward is read as a **prediction of "
        "that score**, on the targets' own scale. RMSE and MAE measure how far the reward lies "
        "from the target (so a constant added to every reward changes them); Pearson r asks "
        "whether the reward rises and falls with the target, Spearman ρ whether it puts the "
        "responses in the same order (both ignore scale and offset).",
        "",
        "A model trained on preferences rather than on scores like these has nothing tying its "
        "rewards to the targets' scale or offset; for such a model RMSE and MAE mostly measure "
        "that mismatch, and the correlations are the fairer test.",
        "",
    ]
    alpha = ctx.metrics.get("alpha")
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and alpha != 1:
        lines += [
            f"The model's `score()` output is α × reward with α = {float(alpha):.3g}; the "
            "metrics below compare the raw reward (before α) with the targets.",
            "",
        ]
    difference = (
        "The difference between two responses' rewards can still be read as a preference: the "
        "response with the higher reward is predicted to be the better one. "
    )
    if t == 1.0:
        difference += (
            "But σ(r_a − r_b) is **not a calibrated probability** here: no temperature was fitted "
            "for this model (T = 1), so nothing ties the size of a difference to how often people "
            "would prefer one response. Fit one on held-out preference pairs (`rewardkit evaluate "
            "--calibrate`) before reading differences as probabilities."
        )
    else:
        difference += (
            f"The model carries a temperature T = {t:.3g} (stored with it, e.g. by an earlier "
            "`--calibrate` on preference pairs), which turns a difference into P(a ≻ b) = "
            "σ((r_a − r_b) / T); these scalar targets do not test that probability, calibration "
            "is measured on preference pairs only."
        )
    return lines + [difference, ""]


def _temperature_origin(ctx: _Context) -> str:
    """Where T came from, without claiming a fit that did not happen in this run."""
    if ctx.temperature == 1.0:
        return "(T = 1: the raw, uncalibrated model)."
    if _fitted_here(ctx):
        return "(fitted on these same pairs by `--calibrate`; T = 1 would be the raw model)."
    return (
        "(the temperature stored with the model, e.g. by an earlier `--calibrate`; T = 1 would "
        "be the raw model)."
    )


def _fitted_here(ctx: _Context) -> bool:
    """True when this run's ``--calibrate`` fitted T on the evaluated pairs and the report uses it."""
    fitted = ctx.metrics.get("temperature_fitted")
    return (
        isinstance(fitted, (int, float))
        and ctx.metrics.get("temperature_written") is not False
        and math.isclose(float(fitted), ctx.temperature)
    )


#: Rows that evaluate_model adds next to the metrics of each kind: (label, what it means).
_CONTEXT_ROWS: dict[str, tuple[str, str]] = {
    "n_responses": ("Responses", "number of responses scored, over all groups"),
    "ece_before": (
        "ECE before calibration",
        "calibration error at the temperature before calibration, on these pairs",
    ),
    "ece_after": (
        "ECE after calibration",
        "calibration error at the fitted T, measured on the same pairs T was fitted on: "
        "optimistic (see below)",
    ),
    "temperature_before": (
        "Temperature before calibration",
        "T the model had before this run's `--calibrate` (1 = raw model)",
    ),
    "temperature_fitted": (
        "Fitted temperature",
        "T that `--calibrate` fitted on these same pairs (minimum log loss)",
    ),
    "temperature_written": (
        "Temperature written",
        "whether the fitted T was written to the model's config.json (not when the fit hit a "
        "bound of its search range)",
    ),
    "alpha": ("Score scale α", "factor applied to the raw reward in the model's `score()` output"),
    "max_length": (
        "Max length (tokens)",
        "longer (prompt, response) texts were cut to this many tokens before scoring",
    ),
    "skipped": ("Skipped rows", "invalid rows left out (`--skip-invalid`); 0 = every row was used"),
}

#: What the metrics of each kind of data are computed on, with respect to α (the alpha row).
_ALPHA_USE = {
    "pairwise": "accuracy and probabilities use the raw reward (before α)",
    "mse": "metrics (RMSE, MAE, correlations) compare the raw reward (before α) with the targets",
    "ranking": "Kendall τ, top-1 and pairwise accuracy use the raw reward (before α)",
}


def _context_row(key: str, kind: str) -> tuple[str, str]:
    """(label, what it means) of a row that is not one of the kind's own metrics."""
    if key == "alpha":
        label, meaning = _CONTEXT_ROWS["alpha"]
        return label, f"{meaning}; {_ALPHA_USE[kind]}"
    if key == "n" and kind == "ranking":  # evaluate_model sets n = n_groups for ranking
        return "Groups evaluated", "number of ranked groups evaluated (`n`)"
    if key in _CONTEXT_ROWS:
        return _CONTEXT_ROWS[key]
    return _escape(key.replace("_", " ").capitalize()), "no description (added by the caller)"


#: Pairwise rows whose value depends on T: flagged when T was fitted on the evaluated pairs.
_T_DEPENDENT = frozenset({"mean_confidence", "log_loss", "brier", "ece"})


def _rows_for(kind: str) -> list[tuple[str, str, str]]:
    """(metrics key, label, what it means) for the headline table."""
    if kind == "pairwise":
        return [
            ("n", "Pairs", "number of (chosen, rejected) pairs evaluated"),
            (
                "accuracy",
                "Accuracy",
                "fraction of pairs where the chosen response gets the "
                "higher reward (exact ties count ½)",
            ),
            ("ties", "Ties", "pairs with exactly equal rewards"),
            ("mean_margin", "Mean margin", "average reward(chosen) − reward(rejected)"),
            ("median_margin", "Median margin", "median reward(chosen) − reward(rejected)"),
            (
                "mean_confidence",
                "Mean confidence",
                "average max(P, 1 − P): how sure the model is of its pick",
            ),
            ("log_loss", "Log loss", "mean −log P(chosen ≻ rejected); 0.693 = coin flip"),
            ("brier", "Brier score", "mean (1 − P(chosen ≻ rejected))²; 0.25 = coin flip"),
            ("ece", "ECE", "expected calibration error (0 = stated probabilities are honest)"),
        ]
    if kind == "mse":
        return [
            ("n", "Responses", "number of scored responses"),
            ("rmse", "RMSE", "root mean squared error against the target score"),
            ("mae", "MAE", "mean absolute error against the target score"),
            ("pearson", "Pearson r", "linear agreement with the targets (1 = perfect)"),
            ("spearman", "Spearman ρ", "agreement in order with the targets (1 = perfect)"),
        ]
    return [
        ("n_groups", "Groups", "number of ranked groups evaluated"),
        ("n_pairs", "Pairs", "within-group pairs of responses"),
        (
            "kendall_tau",
            "Kendall τ",
            "mean agreement of reward order with the true order (1 = same, −1 = reversed)",
        ),
        (
            "kendall_tau_groups",
            "Groups with a τ",
            "groups that entered that mean (τ is undefined when all rewards in a group are equal)",
        ),
        (
            "top1_accuracy",
            "Top-1 accuracy",
            "fraction of groups where the best response gets the highest reward",
        ),
        (
            "pairwise_accuracy",
            "Pairwise accuracy",
            "fraction of within-group pairs ordered correctly (ties count ½)",
        ),
        (
            "mean_confidence",
            "Mean confidence",
            "average max(P, 1 − P) over within-group pairs: how sure the model is of its pick",
        ),
        ("log_loss", "Log loss", "mean −log P(better ≻ worse) over within-group pairs; 0.693 = coin flip"),
        ("brier", "Brier score", "mean (1 − P(better ≻ worse))² over within-group pairs; 0.25 = coin flip"),
        ("ece", "ECE", "expected calibration error over within-group pairs (0 = honest probabilities)"),
    ]


def _md_headline(ctx: _Context) -> list[str]:
    lines = ["## Headline metrics", "", "| metric | value | what it means |", "|---|---|---|"]
    m = ctx.metrics
    shown = set()
    fitted_here = ctx.kind in ("pairwise", "ranking") and _fitted_here(ctx)
    for key, label, meaning in _rows_for(ctx.kind):
        if key in m:
            if key == "accuracy" and ctx.kind == "pairwise":
                moe = _margin_of_error(m.get("accuracy"), m.get("n"))
                if moe is not None:
                    meaning += f"; 95% margin of error on these pairs: ±{moe:.3f}"
            if fitted_here and key in _T_DEPENDENT:
                meaning += "; at a T fitted on these same pairs: optimistic"
            lines.append(f"| {label} | {_cell_value(m[key])} | {meaning} |")
            shown.add(key)
    known = [k for k in _CONTEXT_ROWS if k in m]  # what evaluate_model adds, in a set order
    for key in known + sorted(set(m) - set(_CONTEXT_ROWS)):  # then whatever the caller put in
        value = m[key]
        if key in shown or key == "temperature" or not isinstance(value, (int, float)):
            continue
        if key == "n" and ctx.kind == "ranking" and m.get("n_groups") == value:
            continue  # the same count as the Groups row already shown
        label, meaning = _context_row(key, ctx.kind)
        lines.append(f"| {label} | {_cell_value(value)} | {meaning} |")
    lines.append("")
    hist_caption = {
        "pairwise": "Where the rewards lie. Their absolute position is arbitrary; what matters "
        "is how far the chosen rewards sit to the right of the rejected ones.",
        "mse": "Distribution of the predicted rewards next to the target scores they are "
        "compared with.",
        "ranking": "Where the rewards lie. Their absolute position is arbitrary; only the order "
        "within each group matters.",
    }[ctx.kind]
    lines += _image("reward_hist.png", "Reward histogram", ctx, hist_caption)
    lines += _image(
        "margin_hist.png",
        "Margin histogram",
        ctx,
        "Each pair's reward(chosen) − reward(rejected). Right of the black line the "
        "model agrees with the human label; the further from 0, the surer it is.",
    )
    lines += _image(
        "pred_vs_target.png",
        "Predicted vs target",
        ctx,
        "Each dot is a response; on the dashed line the prediction equals the target.",
    )
    return lines


def _md_confidence(ctx: _Context) -> list[str]:
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
    if conf is None and acc is None:
        return lines + ["No pair margins were given, so calibration was not measured.", ""]
    if isinstance(conf, (int, float)) and isinstance(acc, (int, float)):
        lines += [
            f"On average the model is **{_pct(conf)}** sure which of two responses is better "
            f"(mean of max(P, 1 − P) at T = {ctx.temperature:.3g}) and it picks the "
            + ("better-ranked" if ranking else "human-preferred")
            + f" one **{_pct(acc)}** of the time. {_confidence_verdict(float(conf), float(acc), n)}",
            "",
        ]
    if ranking:
        lines += [
            "The pairs of one group share responses, so they are not independent draws: the "
            "noise bounds in this section, computed as if they were, are somewhat too narrow.",
            "",
        ]
    ece = m.get("ece")
    if isinstance(ece, (int, float)):
        winner = "better wins" if ranking else "chosen wins"
        loser = "worse wins" if ranking else "rejected wins"
        lines += [
            f"Calibration error (ECE, Guo et al. 2017) is **{float(ece):.3f}**: on average the "
            f"stated probability is {100 * float(ece):.1f} percentage points away from how often "
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
                f"up to {floor:.3f} on {_num(margins.size)} {pairs} by chance alone (95th "
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
    lines += _calibration_note(ctx)
    lines += _image(
        "reliability.png",
        "Reliability diagram",
        ctx,
        f"{pairs.capitalize()} grouped by how sure the model is of its pick. Bars below the dashed "
        "diagonal: it is right less often than it is sure (over-confident); above it: "
        f"under-confident. n = {pairs} in each bin.",
    )
    return lines


def _confidence_verdict(conf: float, acc: float, n: Any) -> str:
    """Over- or under-confident only when the gap exceeds what sampling noise in the accuracy
    allows (twice its standard error on n pairs, and at least 2 points)."""
    gap = conf - acc
    se = _std_error(acc, n)
    tol = max(0.02, 2.0 * se) if se is not None else 0.02
    noise = f"±{100 * tol:.1f} points" + (
        f" (twice the standard error of the accuracy on {_num(n)} pairs)"
        if se is not None and tol > 0.02
        else ""
    )
    if abs(gap) > tol:
        word = "over" if gap > 0 else "under"
        return (
            f"It is **{word}-confident** by {100 * abs(gap):.1f} percentage points, beyond "
            f"{noise}."
        )
    return (
        f"The {100 * abs(gap):.1f}-point gap is within {noise}, so its confidence matches how "
        "often it is right as far as these pairs can tell."
    )


_ECE_SIMULATIONS = 200


def _ece_by_chance(ctx: _Context) -> float | None:
    """95th percentile of the ECE of a perfectly calibrated model with the same probabilities:
    outcomes drawn from the model's own P (fixed seed), then scored exactly as the real ECE."""
    margins = ctx.preference_margins
    if margins is None:
        return None
    p = np.asarray(preference_probability(margins, ctx.temperature), dtype=np.float64)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(_ECE_SIMULATIONS):
        won = (rng.random(p.size) < p).astype(np.float64)
        values.append(expected_calibration_error(np.r_[p, 1 - p], np.r_[won, 1 - won], ctx.n_bins))
    return float(np.quantile(values, 0.95))


def _calibration_note(ctx: _Context) -> list[str]:
    """What this run's ``--calibrate`` did, and why its after-figures are optimistic."""
    m = ctx.metrics
    fitted = m.get("temperature_fitted")
    if not isinstance(fitted, (int, float)):
        return []
    before = m.get("temperature_before")
    before_text = f"T before: {float(before):.3g}" if isinstance(before, (int, float)) else ""
    if m.get("temperature_written") is False:
        return [
            f"`--calibrate` fitted T = {float(fitted):.3g}, a bound of its search range (the pairs "
            "are perfectly separated, or all wrong), so it was **not** written to the model's "
            f"config; the numbers in this report use T = {ctx.temperature:.3g}. Calibrate on "
            "more held-out pairs.",
            "",
        ]
    ranking = ctx.kind == "ranking"
    n = m.get("n_pairs" if ranking else "n")
    pairs = "within-group pairs" if ranking else "pairs"
    lines = [
        f"`--calibrate` fitted T = {float(fitted):.3g} on these same {_num(n)} {pairs} and wrote it "
        "to the model's config.json" + (f" ({before_text})" if before_text else "") + "."
    ]
    eb, ea = m.get("ece_before"), m.get("ece_after")
    if isinstance(eb, (int, float)) and isinstance(ea, (int, float)):
        lines[-1] += f" ECE before calibration: {float(eb):.3f}; after: {float(ea):.3f}."
    lines += [
        "",
        "**Caveat: these figures flatter the calibrated model.** The ECE after calibration, and "
        "the mean confidence, log loss and Brier score above, are measured on the very pairs T "
        "was fitted on, so T was chosen to suit exactly these pairs (accuracy does not depend on "
        "T). For an unbiased figure, evaluate the calibrated model on other held-out pairs, "
        "without `--calibrate`.",
        "",
    ]
    return lines


#: An accuracy gap between pairs whose chosen answer is shorter and longer is worth naming from
#: this many points on (if it is also beyond twice its standard error).
LENGTH_GAP_POINTS = 0.10


def _md_preferences(ctx: _Context) -> list[str]:
    lines = ["## What it prefers", ""]
    lb = ctx.length_bias()
    if not lb:
        return lines + ["No response lengths were given, so length bias was not measured.", ""]
    rho = lb.get("spearman_reward_length")
    if lb.get("longer_preferred_rate") is not None:
        lines += _length_comparison(lb)
        lines += _response_cut_note(ctx.metrics)
    elif ctx.kind == "pairwise":
        lines += ["All pairs have answers of equal length; the length preference is undefined.", ""]
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
        f"always scores higher).{direction}",
        "",
    ]
    target_rho = lb.get("spearman_target_length")
    if "spearman_target_length" in lb:
        lines += [
            f"For comparison, the target scores themselves correlate with length at "
            f"{format_correlation(target_rho)}: a length effect the labels do not have is the model's own.",
            "",
        ]
    elif ctx.kind == "ranking":
        lines += [
            "There is no label baseline for this comparison: the ranked data gives an order "
            "within each group, not a score that could be correlated with length, and this "
            "evaluation does not measure how often the labelled order itself puts the longer "
            "response first. So this correlation cannot tell a length preference of the model "
            "from one the labels already have (better-ranked responses that are also longer).",
            "",
        ]
    lines += _image(
        "reward_vs_length.png",
        "Reward vs length",
        ctx,
        f"Each dot is a response: its length in {ctx.length_unit} and its reward.",
    )
    return lines


@dataclass
class _LengthStats:
    """The model's length preference against the labels', with sampling noise (from the
    ``length_bias`` metrics, so every number in the verdict is one the report prints).

    ``diff`` = share of unequal-length pairs where the model rewards the longer answer higher
    minus the share where the humans chose it. Both shares are over the *same* pairs, so its
    standard error is that of a paired difference: per pair, (model picks longer) − (humans chose
    longer) is 0 where the model is right, +err where the chosen answer is shorter and −err where
    it is longer (err = 1, or ½ for a tie). ``gap`` = accuracy on chosen-shorter pairs minus
    accuracy on chosen-longer pairs (positive: the model leans towards the shorter answer)."""

    n: int
    model_rate: float
    label_rate: float
    diff: float
    diff_se: float
    gap: float | None = None
    gap_se: float | None = None

    @property
    def diff_clear(self) -> bool:
        return abs(self.diff) > 2 * self.diff_se if self.diff_se > 0 else self.diff != 0

    @property
    def gap_large(self) -> bool:
        return self.gap is not None and abs(self.gap) > LENGTH_GAP_POINTS

    @property
    def gap_clear(self) -> bool:
        if self.gap is None or self.gap_se is None:
            return False
        return abs(self.gap) > 2 * self.gap_se if self.gap_se > 0 else self.gap != 0


def _length_stats(lb: dict[str, Any]) -> _LengthStats | None:
    model_rate, label_rate, n = (
        lb.get("longer_preferred_rate"),
        lb.get("chosen_longer_rate"),
        lb.get("unequal_length_n"),
    )
    if not (isinstance(model_rate, (int, float)) and isinstance(label_rate, (int, float))):
        return None
    if not _is_count(n) or n < 1:
        return None
    n = int(n)
    diff = float(model_rate) - float(label_rate)
    acc_s, n_s = lb.get("chosen_shorter_accuracy"), lb.get("chosen_shorter_n")
    acc_l, n_l = lb.get("chosen_longer_accuracy"), lb.get("chosen_longer_n")
    if _is_count(n_s) and _is_count(n_l) and n_s + n_l == n:
        err_s = n_s * (1.0 - float(acc_s)) if n_s and acc_s is not None else 0.0
        err_l = n_l * (1.0 - float(acc_l)) if n_l and acc_l is not None else 0.0
        # mean of the squared per-pair difference is at most the error rate (equal without ties)
        variance = max((err_s + err_l) / n - diff**2, 0.0)
    else:  # no per-class accuracies: treat the two shares as independent (more conservative)
        variance = float(model_rate) * (1 - float(model_rate)) + float(label_rate) * (
            1 - float(label_rate)
        )
    stats = _LengthStats(n, float(model_rate), float(label_rate), diff, math.sqrt(variance / n))
    if isinstance(acc_s, (int, float)) and isinstance(acc_l, (int, float)) and n_s and n_l:
        stats.gap = float(acc_s) - float(acc_l)
        stats.gap_se = math.sqrt(
            float(acc_s) * (1 - float(acc_s)) / n_s + float(acc_l) * (1 - float(acc_l)) / n_l
        )
    return stats


def _length_comparison(lb: dict[str, Any]) -> list[str]:
    """The numbers, then a verdict that follows from them (see _LengthStats)."""
    st = _length_stats(lb)
    first = (
        f"It gives the longer answer the higher reward in **{_pct(lb.get('longer_preferred_rate'))}** "
        f"of pairs (of {_num(lb.get('unequal_length_n'))} pairs whose answers differ in length); "
        f"the human labels chose the longer answer in **{_pct(lb.get('chosen_longer_rate'))}** of "
        "them."
    )
    if st is not None:
        first += (
            f" The difference, {_points(st.diff, sign=True)}, is "
            + ("larger than" if st.diff_clear else "within")
            + f" twice its standard error ({_points(2 * st.diff_se)} on these {_num(st.n)} pairs)"
            + (", so it is more than chance." if st.diff_clear else ", so chance alone could explain it.")
        )
    lines = [first, ""]
    second = (
        f"Accuracy when the chosen answer is shorter: **{_num(lb.get('chosen_shorter_accuracy'), 2)}** "
        f"(n = {_num(lb.get('chosen_shorter_n'))}); when it is longer: "
        f"**{_num(lb.get('chosen_longer_accuracy'), 2)}** (n = {_num(lb.get('chosen_longer_n'))})."
    )
    if st is not None and st.gap is not None and st.gap_se is not None and st.gap_large:
        second += (
            f" It is right {_points(abs(st.gap))} more often when the chosen answer is the "
            f"{'shorter' if st.gap > 0 else 'longer'} one (twice the standard error of that gap: "
            f"{_points(2 * st.gap_se)})."
        )
    lines += [second, ""]
    if st is not None:
        lines += [_length_verdict(st), ""]
    return lines


def _length_verdict(st: _LengthStats) -> str:
    """Bold verdict: a bias is named only when the numbers printed before it are beyond chance."""
    gap_dir = None if st.gap is None else ("shorter" if st.gap > 0 else "longer")
    if st.diff_clear:
        toward = "longer" if st.diff > 0 else "shorter"
        text = (
            f"**Length bias toward {toward} answers**: the model prefers the longer answer "
            f"{_points(abs(st.diff))} {'more' if st.diff > 0 else 'less'} often than the human "
            "labels do"
        )
        if st.gap_large and st.gap_clear and gap_dir == toward:
            text += (
                f", and it is right far more often when the human-preferred answer is the "
                f"{gap_dir} one"
            )
        text += (
            f". It {'over' if toward == 'longer' else 'under'}-rewards length relative to the "
            "labels."
        )
        if st.gap_large and st.gap_clear and gap_dir != toward:
            text += (
                f" (Its accuracy is nevertheless higher when the chosen answer is the {gap_dir} "
                "one: the two measures disagree, so look at the plot below before concluding.)"
            )
        return text
    if st.gap_large and st.gap_clear and gap_dir is not None:
        return (
            f"**Length bias toward {gap_dir} answers**: its overall share of longer-answer picks "
            f"is within chance of the labels', but given the same human label it is right "
            f"{_points(abs(st.gap))} more often when the preferred answer is the {gap_dir} one, "
            f"beyond twice the standard error. It {'under' if gap_dir == 'shorter' else 'over'}"
            "-rewards length relative to the labels."
        )
    text = "**No length bias detected**"
    if 2 * st.diff_se <= 0.05:
        text += (
            f": its preference for length is in line with the human labels (difference "
            f"{_points(st.diff, sign=True)}, within ±{_points(2 * st.diff_se)})."
        )
    else:
        text += (
            f", but with {_num(st.n)} pairs only a difference larger than about "
            f"{_points(2 * st.diff_se)} would show; evaluate on more pairs to rule out a smaller "
            "one."
        )
    if st.gap_large:
        text += (
            f" The accuracy gap of {_points(abs(st.gap or 0.0))} is within twice its standard "
            "error: too few pairs to tell it from chance."
        )
    return text


def _points(x: float, *, sign: bool = False) -> str:
    """A difference of proportions in percentage points, one decimal."""
    value = 100 * x
    text = f"{value:+.1f}" if sign else f"{value:.1f}"
    return text.replace("-", "−") + " points"


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _response_cut_note(m: dict[str, Any]) -> list[str]:
    cut = m.get("truncation")
    if not isinstance(cut, dict) or not _is_count(cut.get("response_cut")):
        return []
    if cut["response_cut"] == 0:
        return []
    return [
        f"(Lengths are those of the full responses; in {_num(cut['response_cut'])} of "
        f"{_num(cut.get('texts'))} scored texts the end of the response was cut before scoring, "
        "so the model did not see all of it.)",
        "",
    ]


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


def _cell(value: Any, redact: bool) -> str:
    if isinstance(value, str):
        return f"({len(value):,} chars)" if redact else _escape(_truncate(value))
    return _num(value)


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
        f" The most negative margin shown, {worst:.3f}, means P(chosen ≻ rejected) = {p:.2f} at "
        f"T = {temperature:.3g}: the model is {_pct(1 - p)} sure of the wrong answer there."
    )


def _md_failures(ctx: _Context) -> list[str]:
    lines = ["## Where it fails", ""]
    examples = ctx.worst_examples
    if not examples:
        return lines + ["No worst examples were given.", ""]
    if ctx.kind == "pairwise":
        margins = _margins_of(examples)
        if margins and min(margins) > 0:
            lead = (f"**No pair is misordered**: every chosen answer scored above its rejected one. "
                    f"Below are the {len(examples)} closest calls instead, smallest margin first.")
        else:
            lead = f"The {len(examples)} pairs with the smallest margins, most negative first."
        lines += [
            lead + " A negative margin means the model gave the rejected answer the higher reward; "
            "the more negative, the surer it was of the wrong answer." + _worst_margin_note(examples, ctx.temperature),
            "",
        ]
    elif ctx.kind == "mse":
        lines += [
            f"The {len(examples)} responses whose prediction (`predicted`) lies furthest from "
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
        lines += [f"Texts are cut to {TEXT_LIMIT} characters; ⏎ marks a line break.", ""]
    cols = _columns(examples)
    if "row" in cols:
        lines += [
            "`row` is the row's number in the data file (for JSONL, its line number)"
            + ("; `file` the file it came from." if "file" in cols else "."),
            "",
        ]
    lines.append("| # | " + " | ".join(_escape(c) for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for i, ex in enumerate(examples, 1):
        cells = [_cell(ex[c], ctx.redact) if c in ex else "" for c in cols]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


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
            f"(pairwise accuracy {_num(pair_acc)}), so there is no failure to show. Below are the "
            f"{len(examples)} closest calls instead: the groups whose best response leads its "
            "strongest rival by the least.",
            "",
        ]
    else:
        misses, ties = sum(1 for x in margins if x < 0), sum(1 for x in margins if x == 0)
        if not margins:
            text = f"The {len(examples)} groups given, without margins."
        elif misses == 0 and ties == 0:
            text = (
                f"The {len(examples)} groups with the smallest margins. None of them is a top-1 "
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
                f"The {len(examples)} groups with the smallest margins; {misses} of them are "
                "top-1 misses (negative margin)"
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


_EXPECTED_PLOTS = {
    "pairwise": ("reward_hist.png", "margin_hist.png", "reliability.png", "reward_vs_length.png"),
    "mse": ("reward_hist.png", "pred_vs_target.png", "reward_vs_length.png"),
    "ranking": ("reward_hist.png", "reliability.png", "reward_vs_length.png"),
}


def _md_footer(ctx: _Context) -> list[str]:
    lines = ["---", ""]
    missing = [name for name in _EXPECTED_PLOTS[ctx.kind] if name not in ctx.plots]
    if missing:
        lines += [f"Not drawn, for lack of data: {', '.join(missing)}.", ""]
    return lines + ["All numbers: [metrics.json](metrics.json). Generated by rewardkit.", ""]
