"""The PNG plots of an evaluation report (:mod:`rewardkit.report`): reward histograms (chosen vs
rejected), reward margins, the reliability diagram, reward vs length, prediction vs target.

Plots are drawn with matplotlib's object-oriented :class:`~matplotlib.figure.Figure` on the Agg
canvas, never through ``pyplot``: nothing is registered in pyplot's global figure list, so no
figure outlives the function (no ``plt.close`` bookkeeping, bounded memory), nothing pops up
in notebooks, and the user's pyplot backend is left alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray

from rewardkit.calibration import (
    _bin_index,
    expected_calibration_error,
    reliability_bins,
    symmetrize_pairwise,
)
from rewardkit.metrics import spearman
from rewardkit.report_format import count, format_correlation

if TYPE_CHECKING:
    from rewardkit.report import _Context

_FIGSIZE = (7.0, 4.6)
_DPI = 110
_CHOSEN_COLOR = "tab:blue"
_REJECTED_COLOR = "tab:orange"
_LABEL_INSIDE_MIN = 0.12  # bar height (accuracy) below which a reliability count goes above the bar

_Draw = Callable[[Figure, "_Context"], None]


def plots_for(ctx: _Context) -> list[tuple[str, _Draw]]:
    """Which plots this kind and the given data allow, in the order the report shows them."""
    plots: list[tuple[str, _Draw]] = []
    if ctx.kind == "pairwise" and ctx.has_pairs:
        plots += [
            ("reward_hist.png", _draw_pair_hist),
            ("margin_hist.png", _draw_margin_hist),
            ("reliability.png", _draw_reliability),
        ]
        if ctx.chosen_lengths is not None and ctx.rejected_lengths is not None:
            plots.append(("reward_vs_length.png", _draw_pair_vs_length))
    elif ctx.kind in ("mse", "ranking") and ctx.rewards is not None:
        plots.append(("reward_hist.png", _draw_reward_hist))
        if ctx.kind == "ranking" and ctx.preference_margins is not None:
            plots.append(("reliability.png", _draw_reliability))
        if ctx.kind == "mse" and ctx.targets is not None:
            plots.append(("pred_vs_target.png", _draw_pred_vs_target))
        if ctx.lengths is not None:
            plots.append(("reward_vs_length.png", _draw_reward_vs_length))
    return plots


def new_figure() -> Figure:
    fig = Figure(figsize=_FIGSIZE, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _bin_edges(values: NDArray[np.float64], *, align_zero: bool = False) -> NDArray[np.float64]:
    """Shared bin edges (so overlaid histograms are comparable): √n bins, 10 to 50.

    ``align_zero`` puts an edge exactly at 0, so no bar mixes right and wrong margins.
    """
    lo, hi = float(values.min()), float(values.max())
    if align_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    n_bins = int(np.clip(round(math.sqrt(values.size)), 10, 50))
    if not align_zero:
        return np.linspace(lo, hi, n_bins + 1)
    width = (hi - lo) / n_bins
    first, last = math.floor(lo / width), math.ceil(hi / width)
    first -= int(first * width > lo)  # guard against rounding dropping the extreme values
    last += int(last * width < hi)
    return width * np.arange(first, max(last, first + 1) + 1)


def _headroom(ax: Any, factor: float = 1.35) -> None:
    """Leave empty space above the tallest bar so the legend never covers data; counts are
    whole numbers, so only integer ticks."""
    ax.set_ylim(0, ax.get_ylim()[1] * factor)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _before_scale(ctx: _Context) -> str | None:
    """"before α = 10" (or "before α and normalization") when the model's `score()`, its `logits`
    (what pipeline and TRL see), is not the raw reward r the plots show; None when it is."""
    alpha, normalized = ctx.metrics.get("alpha"), ctx.metrics.get("normalize_rewards") is True
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or (alpha == 1 and not normalized):
        return None
    return "before α and normalization" if normalized else f"before α = {alpha:g}"


def _reward_label(ctx: _Context, name: str = "Reward") -> str:
    """The axis name of plotted rewards: a user comparing it with the model's output would find it
    off by α unless the label says it is the raw reward."""
    before = _before_scale(ctx)
    return name if before is None else f"Raw {name.lower()} r ({before}; not the model's score)"


def _draw_pair_hist(fig: Figure, ctx: _Context) -> None:
    assert ctx.chosen is not None and ctx.rejected is not None
    ax = fig.add_subplot()
    edges = _bin_edges(np.r_[ctx.chosen, ctx.rejected])
    for values, label, color in (
        (ctx.chosen, "chosen", _CHOSEN_COLOR),
        (ctx.rejected, "rejected", _REJECTED_COLOR),
    ):
        ax.hist(values, bins=edges, alpha=0.5, color=color, edgecolor=color, label=label)
        ax.axvline(
            values.mean(),
            color=color,
            linestyle="--",
            linewidth=1.5,
            label=f"mean {label} = {values.mean():.3g}",  # .2f showed 0.0162 vs 0.0137 as 0.02 vs 0.01
        )
    ax.set_xlabel(_reward_label(ctx))
    ax.set_ylabel("Number of responses")
    ax.set_title(f"Rewards of chosen vs rejected responses ({count(ctx.chosen.size, 'pairs')})")
    _headroom(ax)
    ax.legend(loc="upper right", frameon=False)


def _draw_margin_hist(fig: Figure, ctx: _Context) -> None:
    margins = ctx.margins
    ax = fig.add_subplot()
    edges = _bin_edges(margins, align_zero=True)
    for selected, color, label, always in (
        (margins > 0, "tab:green", "model agrees with humans (margin > 0)", True),
        (margins < 0, "tab:red", "model disagrees (margin < 0)", True),
        (margins == 0, "tab:gray", "tie (margin = 0)", False),  # only when there are ties
    ):
        if always or np.any(selected):
            ax.hist(margins[selected], bins=edges, color=color, alpha=0.75, label=label)
    ax.axvline(0.0, color="black", linewidth=1.5)
    accuracy = ctx.metrics.get("accuracy")
    if not isinstance(accuracy, (int, float)):
        accuracy = float(np.mean(np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))))
    before = _before_scale(ctx)
    ax.set_xlabel("Margin = reward(chosen) − reward(rejected)" + ("" if before is None else f" (raw rewards, {before})"))
    ax.set_ylabel("Number of pairs")
    ax.set_title(f"Reward margins: accuracy {accuracy:.1%} ({count(margins.size, 'pairs')})")
    _headroom(ax)
    ax.legend(loc="upper left", frameon=False)


def _draw_reliability(fig: Figure, ctx: _Context) -> None:
    """Confidence form of the diagram (Guo et al., 2017, fig. 1): "when it is X% sure, is it
    right X% of the time?". The symmetric bins below 0.5 are mirror images of those above
    (see calibration.symmetrize_pairwise), so only the upper half is drawn; the ECE in the
    title is over all bins, which for an even number of bins is the same number."""
    margins = ctx.preference_margins
    assert margins is not None
    probs, outcomes = symmetrize_pairwise(margins, ctx.temperature)
    bins = reliability_bins(probs, outcomes, ctx.n_bins)
    ece = expected_calibration_error(probs, outcomes, ctx.n_bins)
    # n = pairs, each in the bin of its confidence max(P, 1 − P): the bins hold both orientations, so
    # their counts count a tie (P = 0.5 twice) or, with an odd number of bins, a middle-bin pair twice
    pairs = np.bincount(_bin_index(np.maximum(probs, 1.0 - probs)[: margins.size], ctx.n_bins), minlength=ctx.n_bins)
    for b, in_bin in zip(bins, pairs.tolist()):
        b["pairs"] = in_bin
    shown = [b for b in bins if b["bin_hi"] > 0.5 and b["count"]]
    x_lo = min(b["bin_lo"] for b in bins if b["bin_hi"] > 0.5)
    width = 1.0 / ctx.n_bins
    ax = fig.add_subplot()
    ax.plot([x_lo, 1], [x_lo, 1], linestyle="--", color="gray", label="perfect calibration")
    centers = [(b["bin_lo"] + b["bin_hi"]) / 2 for b in shown]
    bars = ax.bar(
        centers,
        [b["accuracy"] for b in shown],
        width=width * 0.9,
        color=_CHOSEN_COLOR,
        alpha=0.8,
        edgecolor="black",
        label="how often its pick is right",
    )
    ax.scatter(
        centers,
        [b["mean_confidence"] for b in shown],
        color="black",
        marker="_",
        s=300,
        linewidths=2,
        zorder=3,
        label="its mean confidence in the bin",
    )
    # counts inside the bars, where the confidence markers cannot cover them; a bar too short to
    # hold its count (a bin the model got all wrong has height 0) gets it just above, in black
    tall = [b["accuracy"] >= _LABEL_INSIDE_MIN for b in shown]
    ax.bar_label(
        bars,
        labels=[f"n={b['pairs']:,}" if inside else "" for b, inside in zip(shown, tall)],
        label_type="center",
        fontsize=9,
        color="white",
        fontweight="bold",
    )
    for center, b, inside in zip(centers, shown, tall):
        if not inside:
            ax.text(center, b["accuracy"] + 0.02, f"n={b['pairs']:,}", ha="center", va="bottom", fontsize=9,
                    color="black", fontweight="bold")
    ax.set_xlim(x_lo, 1)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(f"Confidence in its pick, max(P, 1 − P) at T = {ctx.temperature:.3g}")
    ax.set_ylabel("Fraction of picks matching the " + ("labelled order" if ctx.kind == "ranking" else "human label"))
    ax.set_title(f"Reliability diagram (T = {ctx.temperature:.3g}): ECE = {ece:.3f}")
    ax.legend(loc="upper left", frameon=False)


def _draw_pair_vs_length(fig: Figure, ctx: _Context) -> None:
    assert ctx.chosen is not None and ctx.rejected is not None
    assert ctx.chosen_lengths is not None and ctx.rejected_lengths is not None
    rho = spearman(np.r_[ctx.chosen, ctx.rejected], np.r_[ctx.chosen_lengths, ctx.rejected_lengths])
    ax = fig.add_subplot()
    for lens, values, label, color in (
        (ctx.chosen_lengths, ctx.chosen, "chosen", _CHOSEN_COLOR),
        (ctx.rejected_lengths, ctx.rejected, "rejected", _REJECTED_COLOR),
    ):
        ax.scatter(lens, values, s=10, alpha=0.5, color=color, label=label, rasterized=True)
    _length_axes(ax, ctx, rho)
    ax.legend(frameon=False)


def _draw_reward_vs_length(fig: Figure, ctx: _Context) -> None:
    assert ctx.rewards is not None and ctx.lengths is not None
    ax = fig.add_subplot()
    ax.scatter(ctx.lengths, ctx.rewards, s=10, alpha=0.5, color=_CHOSEN_COLOR, rasterized=True)
    _length_axes(ax, ctx, spearman(ctx.rewards, ctx.lengths))


def _length_axes(ax: Any, ctx: _Context, rho: float | None) -> None:
    ax.set_xlabel(f"Response length ({ctx.length_unit})")
    ax.set_ylabel(_reward_label(ctx))
    ax.set_title(f"Reward vs response length: Spearman ρ = {format_correlation(rho)}")


def _draw_reward_hist(fig: Figure, ctx: _Context) -> None:
    assert ctx.rewards is not None
    ax = fig.add_subplot()
    series = [(ctx.rewards, "predicted reward" if ctx.kind == "mse" else "reward", _CHOSEN_COLOR)]
    if ctx.kind == "mse" and ctx.targets is not None:
        series.append((ctx.targets, "target score", _REJECTED_COLOR))
    edges = _bin_edges(np.concatenate([s[0] for s in series]))
    for values, label, color in series:
        ax.hist(values, bins=edges, alpha=0.5, color=color, edgecolor=color, label=label)
    xlabel = f"{_reward_label(ctx)} and target score" if len(series) > 1 else _reward_label(ctx)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Number of responses")
    ax.set_title(f"Reward distribution ({count(ctx.rewards.size, 'responses')})")
    _headroom(ax)
    ax.legend(loc="upper right", frameon=False)


def _draw_pred_vs_target(fig: Figure, ctx: _Context) -> None:
    assert ctx.rewards is not None and ctx.targets is not None
    ax = fig.add_subplot()
    ax.scatter(
        ctx.targets,
        ctx.rewards,
        s=10,
        alpha=0.5,
        color=_CHOSEN_COLOR,
        rasterized=True,
        label="responses",
    )
    lo = float(min(ctx.targets.min(), ctx.rewards.min()))
    hi = float(max(ctx.targets.max(), ctx.rewards.max()))
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="gray", label="prediction = target")
    rmse = float(np.sqrt(np.mean((ctx.rewards - ctx.targets) ** 2)))
    ax.set_xlabel("Target score")
    ax.set_ylabel(_reward_label(ctx, "Predicted reward"))
    ax.set_title(
        f"Predicted vs target: RMSE = {rmse:.3g}, Spearman ρ = "
        f"{format_correlation(spearman(ctx.rewards, ctx.targets))}"
    )
    ax.legend(frameon=False)
