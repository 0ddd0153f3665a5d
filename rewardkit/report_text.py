"""``report.md`` of an evaluation report (:mod:`rewardkit.report`): what a reward means, the
headline metrics, how sure the model is (:mod:`rewardkit.report_confidence`), what it prefers
(:mod:`rewardkit.report_lengths`), where it fails (:mod:`rewardkit.report_failures`); shared
formatting in :mod:`rewardkit.report_format`.

Every verdict in the text follows from numbers printed next to it: "over-/under-confident" and
"length bias" are stated only when the gap is beyond twice its standard error on the evaluated
pairs (for length: the model's share of longer-answer picks against that of a model as accurate whose
mistakes do not depend on length); otherwise the report says the pairs cannot tell. Figures measured at a
temperature fitted on the same pairs (``--calibrate``) are flagged as no independent check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rewardkit.calibration import preference_probability, temperature_fitted_on_these_pairs
from rewardkit.report_confidence import md_confidence, uncalibrated_mse
from rewardkit.report_failures import md_failures
from rewardkit.report_format import accuracy_interval_text, cell_value, count, escape, image, num
from rewardkit.report_lengths import md_preferences

if TYPE_CHECKING:
    from rewardkit.report import _Context


def render_markdown(ctx: _Context) -> str:
    sections = [
        _md_header(ctx),
        _md_meaning(ctx),
        _md_headline(ctx),
        md_confidence(ctx),
        md_preferences(ctx),
        md_failures(ctx),
        _md_footer(ctx),
    ]
    return "\n".join(line for section in sections for line in section).rstrip() + "\n"


_KIND_TEXT = {
    "pairwise": "preference pairs (chosen vs rejected)",
    "mse": "scalar scores (regression)",
    "ranking": "ranked groups of responses",
}


def _md_header(ctx: _Context) -> list[str]:
    title = "# Reward model report" + (f": {escape(ctx.model_name)}" if ctx.model_name else "")
    m = ctx.metrics
    n = m.get("n", m.get("n_groups"))
    unit = {"pairwise": "pairs", "mse": "responses", "ranking": "groups"}[ctx.kind]
    data = m.get("data_name", m.get("data"))
    source = f" from {escape(str(data))}" if isinstance(data, str) and data else ""
    temperature = "" if ctx.kind == "mse" else f"; temperature T = {ctx.temperature:.3g}"
    lines = [
        title,
        "",
        f"Evaluated on {_KIND_TEXT[ctx.kind]}{source}: {count(n, unit)}{temperature}.",
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
    limit_text = f"{num(limit)} tokens" if isinstance(limit, int) else "the model's maximum length"
    if prompt_cut == 0 and response_cut == 0:
        return [f"No text was cut: every (prompt, response) fitted in {limit_text}.", ""]
    return [
        f"Texts were cut to fit {limit_text}: the start of the prompt was cut in "
        f"{num(prompt_cut)} of {count(texts, 'scored texts')} and the end of the response in "
        f"{num(response_cut)}. The model judged those texts without the part that was cut.",
        "",
    ]


def _md_meaning(ctx: _Context) -> list[str]:
    if ctx.kind == "mse":
        return _md_meaning_scalar(ctx)
    t = ctx.temperature
    margins = [0.0, 0.5, 1.0, 2.0, 4.0]
    probs = [float(preference_probability(m, t)) for m in margins]
    # an mse model evaluated on preferences: its reward is a predicted annotation, and at T = 1 its
    # differences (in the annotations' units) are no probabilities (the report said they were)
    mse_model = ctx.metrics.get("trained_objective") == "mse"
    intro = (
        "The model gives every response a single number, its **reward**. This model was trained to "
        "predict annotated rewards (mse), so a reward is a **predicted annotation** on the annotations' "
        "own scale. A preference between two responses to the same prompt comes from the *difference* "
        "of their rewards, read as a probability (Bradley-Terry model):"
        if mse_model else
        "The model gives every response a single number, its **reward**. On its own the number "
        "means nothing: adding the same constant to every reward changes nothing. The reward is "
        "a **relative score**: only the *difference* between two responses to the same prompt "
        "matters. The model reads a difference as a probability (Bradley-Terry model):"
    )
    lines = [
        "## What the numbers mean",
        "",
        intro,
        "",
        f"> P(a ≻ b) = σ((r_a − r_b) / T), with σ(x) = 1 / (1 + e^(−x)) and **T = {t:.3g}** "
        f"in this report {_temperature_origin(ctx)}",
        "",
        "| reward difference r_a − r_b | " + " | ".join(f"{m:g}" for m in margins) + " |",
        "|---|" + "---|" * len(margins),
        "| P(a preferred over b) | " + " | ".join(f"{p:.2f}" for p in probs) + " |",
        "",
        *_observed_differences(ctx),
        *_alpha_note(ctx),
    ]
    if uncalibrated_mse(ctx):
        return lines + [
            "But **no temperature was fitted for this model (T = 1)**, and an mse model's reward differences "
            "are in the annotations' units, so these are **not preference probabilities**: they, and the "
            "confidence, log loss, Brier score and ECE below, depend on the annotations' scale. The accuracy "
            "(how often the better response scores higher) and the margins do not. Fit T on held-out "
            "preference pairs (`rewardkit evaluate --calibrate`) before reading differences as probabilities.",
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


def _observed_differences(ctx: _Context) -> list[str]:
    """Where this model's differences fall on that scale: the fixed columns above can all lie
    beyond a weak model's margins."""
    margins = ctx.preference_margins
    if margins is None:
        return []
    size = np.abs(margins)
    median, high = float(np.median(size)), float(np.quantile(size, 0.95))
    t = ctx.temperature
    return [
        f"On these pairs the typical reward difference |r_a − r_b| is {median:.3g} (median; P = "
        f"{float(preference_probability(median, t)):.2f} for the higher one) and 95% of them are below "
        f"{high:.3g} (P = {float(preference_probability(high, t)):.2f}).",
        "",
    ]


def _number(value: Any) -> float | None:
    """`value` as a float when it is a number (not a bool), else None: metrics.json of older
    versions or other callers may lack a field."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _score_scale(m: dict[str, Any], r: str = "r") -> tuple[str, float, bool] | None:
    """How the model's `score()` output is made from the raw reward (written `r`), with its
    numbers; the factor a difference of scores carries (a score difference of that much is a
    reward difference of 1); and whether normalization is on: ("α × r with α = 2", 2, False) or
    ("α × (r − μ) / s with α = 2, μ = 0.25 and s = 1.5", 2 / 1.5, True): s, not σ, which the
    report keeps for the sigmoid of P(a ≻ b) = σ((r_a − r_b) / T), a few lines away. None when the score is
    the raw reward itself (α = 1, no normalization) or the metrics do not say (no alpha)."""
    alpha = _number(m.get("alpha"))
    if alpha is None:
        return None
    mean, std = _number(m.get("reward_mean")), _number(m.get("reward_std"))
    if m.get("normalize_rewards") is True and mean is not None and std:
        return f"α × ({r} − μ) / s with α = {alpha:.3g}, μ = {mean:.3g} and s = {std:.3g}", alpha / std, True
    if alpha == 1:
        return None
    return f"α × {r} with α = {alpha:.3g}", alpha, False


def _alpha_note(ctx: _Context) -> list[str]:
    """r above is the raw reward; what `score()`, `pipeline` and TRL return is α·r, or
    α·(r − μ)/s when the model normalizes: a difference of scores must be divided by α (by α/s)
    before it is read on the table above."""
    scale = _score_scale(ctx.metrics)
    if scale is None:
        return []
    formula, factor, normalized = scale
    why = (" (μ and s are the mean and standard deviation of the rewards of the training responses, "
           "`reward_mean` and `reward_std` in its config; μ shifts every score alike, so it drops out of "
           "a difference)" if normalized else "")
    divisor = f"α / s = {factor:.3g}" if normalized else f"{factor:.3g}"
    return [
        f"r is the **raw** reward. This model's `score()` output (also what `pipeline` and TRL see) is "
        f"{formula}{why}: divide a difference of scores by {divisor} before reading it here "
        f"(a score difference of {factor:.3g} is a reward difference of 1).",
        "",
    ]


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
    scale = _score_scale(ctx.metrics, r="reward")
    if scale is not None:
        formula, _, normalized = scale
        lines += [
            f"The model's `score()` output is {formula}; the metrics below compare the raw reward "
            f"({'before α and normalization' if normalized else 'before α'}) with the targets.",
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
    return temperature_fitted_on_these_pairs(ctx.metrics, ctx.temperature)


#: Rows that evaluate_model adds next to the metrics of each kind: (label, what it means).
_CONTEXT_ROWS: dict[str, tuple[str, str]] = {
    "n_responses": ("Responses", "number of responses scored, over all groups"),
    "ece_before": (
        "ECE before calibration",
        "calibration error at the temperature before calibration, on these pairs",
    ),
    "ece_after": (
        "ECE after calibration",
        "calibration error at the fitted T, measured on the same pairs T was fitted on: no "
        "independent check (see below)",
    ),
    "log_loss_before": (
        "Log loss before calibration",
        "mean −log P(preferred) at the temperature before calibration, on these pairs",
    ),
    "temperature_lr_vs_1": (
        "Likelihood ratio, fitted T vs T = 1",
        "2n·(NLL at T = 1 − NLL at the fitted T), for ranked data divided by the design effect of its "
        "groups (their pairs share responses); above 3.84, T differs from 1 at the 5% level",
    ),
    "temperature_interval_by_group": (
        "Temperature interval by group",
        "the interval for T and the statistic above allow for the pairs of one ranked group being "
        "correlated (they share responses), instead of counting them as independent pairs",
    ),
    "temperature_differs_from_1": (
        "T differs from 1",
        "whether these pairs tell the fitted T apart from 1 (the 95% interval for T is in the text below)",
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
        "bound of its search range, nor when every margin was 0 and nothing was fitted)",
    ),
    "calibrated_on_training_data": (
        "Calibrated on training data",
        "whether these pairs are the data the model was trained on (its training_summary.json says, or a "
        "checkpoint's training_data.json; not shown when none records it): a T fitted on them is too small for new pairs, its probabilities over-confident",
    ),
    "on_training_data": (
        "On training data",
        "whether these rows are the data the model was trained on (its training_summary.json says, or a "
        "checkpoint's training_data.json; not shown when none records it): then no held-out check, and the model card keeps them out of its results metadata",
    ),
    "alpha": ("Score scale α", "factor applied to the raw reward in the model's `score()` output"),
    "normalize_rewards": (
        "Normalized scores",
        "yes: the model's `score()` output is α × (r − reward_mean) / reward_std (`normalize_rewards` "
        "in its config); no: α × r",
    ),
    "reward_mean": ("Reward mean μ", "mean raw reward of the training responses (`reward_mean`)"),
    "reward_std": ("Reward std s", "standard deviation of the raw rewards of the training responses (`reward_std`)"),
    "max_length": (
        "Max length (tokens)",
        "longer (prompt, response) texts were cut to this many tokens before scoring",
    ),
    "dtype": ("Backbone precision", "what the backbone computed in (`--dtype`; fp32 by default); bf16 moves "
              "rewards in the third significant digit"),
    "skipped": ("Skipped rows", "invalid rows left out (`--skip-invalid`); 0 = every row was used"),
}


#: What the metrics of each kind of data are computed on, with respect to α (the alpha row).
_ALPHA_USE = {
    "pairwise": "accuracy, margins and probabilities use the raw reward (before α)",
    "mse": "metrics (RMSE, MAE, correlations) compare the raw reward (before α) with the targets",
    "ranking": "Kendall τ, top-1 and pairwise accuracy, margins and probabilities use the raw reward (before α)",
}


def _context_row(key: str, kind: str, metrics: dict[str, Any]) -> tuple[str, str]:
    """(label, what it means) of a row that is not one of the kind's own metrics."""
    if key == "ece_after" and metrics.get("temperature_written") is False:  # no T fitted, or none used
        return _CONTEXT_ROWS[key][0], "the ECE above: no T was written, so calibration changed nothing"
    if key == "alpha":
        label, meaning = _CONTEXT_ROWS["alpha"]
        use = _ALPHA_USE[kind]
        if metrics.get("normalize_rewards"):  # the score is α(r − μ)/s: the metrics come before both
            use = use.replace("(before α)", "(before α and normalization)")
        return label, f"{meaning}; {use}"
    if key == "n" and kind == "ranking":  # evaluate_model sets n = n_groups for ranking
        return "Groups evaluated", "number of ranked groups evaluated (`n`)"
    if key in _CONTEXT_ROWS:
        return _CONTEXT_ROWS[key]
    return escape(key.replace("_", " ").capitalize()), "no description (added by the caller)"


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
            ("rmse", "RMSE", "root mean squared error against the target score; read it against the target std"),
            ("target_std", "Target std", "standard deviation of the targets on these responses: the RMSE of "
             "always predicting their mean, so an RMSE near it is no better than that"),
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
            "fraction of groups where the best response gets the highest reward (shared with k − 1 "
            "others: counts 1/k)",
        ),
        ("top1_ties", "Top-1 ties", "groups whose best response shares the highest reward with others"),
        (
            "pairwise_accuracy",
            "Pairwise accuracy",
            "fraction of within-group pairs ordered correctly (ties count ½)",
        ),
        ("ties", "Ties", "within-group pairs with exactly equal rewards"),
        (
            "mean_confidence",
            "Mean confidence",
            "average max(P, 1 − P) over within-group pairs: how sure the model is of its pick",
        ),
        ("log_loss", "Log loss", "mean −log P(better ≻ worse) over within-group pairs; 0.693 = coin flip"),
        ("brier", "Brier score", "mean (1 − P(better ≻ worse))² over within-group pairs; 0.25 = coin flip"),
        ("ece", "ECE", "expected calibration error over within-group pairs (0 = honest probabilities)"),
        (
            "confidence_design_effect",
            "Design effect (confidence)",
            "variance of pairwise accuracy − mean confidence over that of as many independent pairs, at least 1 "
            "(the pairs of a group share responses; n/a with one group): the over- or under-confidence "
            "verdict below widens its standard error by its square root",
        ),
    ]


def _md_headline(ctx: _Context) -> list[str]:
    lines = ["## Headline metrics", "", "| metric | value | what it means |", "|---|---|---|"]
    m = ctx.metrics
    shown = set()
    fitted_here = ctx.kind in ("pairwise", "ranking") and _fitted_here(ctx)
    for key, label, meaning in _rows_for(ctx.kind):
        if key in m:
            if key == "accuracy" and ctx.kind == "pairwise":
                interval = accuracy_interval_text(m.get("accuracy"), m.get("n"))
                if interval is not None:  # worded as the model card words it
                    meaning += "; " + interval
            if key in ("pearson", "spearman") and m[key] is None:
                meaning += "; undefined here (n/a): the rewards or the targets are all equal, or there is one response"
            if uncalibrated_mse(ctx) and key in _T_DEPENDENT:  # σ of annotation units: no model's confidence
                meaning = meaning.replace(": how sure the model is of its pick", "") + "; at T = 1 of an mse model: depends on the annotations' scale, no probability (see above)"
            if fitted_here and key in _T_DEPENDENT:
                meaning += ("; at a T fitted to minimise it on these same pairs: optimistic" if key == "log_loss"
                            else "; measured on the pairs T was fitted on: no independent check")
            lines.append(f"| {label} | {cell_value(m[key])} | {meaning} |")
            shown.add(key)
    known = [k for k in _CONTEXT_ROWS if k in m]  # what evaluate_model adds, in a set order
    for key in known + sorted(set(m) - set(_CONTEXT_ROWS)):  # then whatever the caller put in
        value = m[key]
        if key in shown or key == "temperature" or not (isinstance(value, (int, float)) or key == "dtype"):
            continue
        if key == "n" and ctx.kind == "ranking" and m.get("n_groups") == value:
            continue  # the same count as the Groups row already shown
        label, meaning = _context_row(key, ctx.kind, m)
        lines.append(f"| {label} | {cell_value(value)} | {meaning} |")
    lines.append("")
    hist_caption = {
        "pairwise": "Where the rewards lie. Their absolute position is arbitrary; what matters "
        "is how far the chosen rewards sit to the right of the rejected ones.",
        "mse": "Distribution of the predicted rewards next to the target scores they are "
        "compared with.",
        "ranking": "Where the rewards lie. Their absolute position is arbitrary; only the order "
        "within each group matters.",
    }[ctx.kind]
    lines += image("reward_hist.png", "Reward histogram", ctx, hist_caption)
    lines += image(
        "margin_hist.png",
        "Margin histogram",
        ctx,
        "Each pair's reward(chosen) − reward(rejected). Right of the black line the "
        "model agrees with the human label; the further from 0, the surer it is.",
    )
    lines += image(
        "pred_vs_target.png",
        "Predicted vs target",
        ctx,
        "Each dot is a response; on the dashed line the prediction equals the target.",
    )
    return lines


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
