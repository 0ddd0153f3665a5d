"""Write a human-readable evaluation report: ``metrics.json``, PNG plots and ``report.md``.

The report answers the question users actually ask, "what does the number mean?", in four
parts: what a reward is (a relative score read through Bradley-Terry, P(a ≻ b) = σ((r_a − r_b)/T)),
the headline metrics, how sure the model is (calibration, Guo et al., 2017), what it prefers
(length bias) and where it fails (worst examples, redacted in CI since evaluation sets contain
red-teaming text).

Plots are drawn with matplotlib's object-oriented :class:`~matplotlib.figure.Figure` on the Agg
canvas, never through ``pyplot``: nothing is registered in pyplot's global figure list, so no
figure outlives the function (no ``plt.close`` bookkeeping, bounded memory), nothing pops up
in notebooks, and the user's pyplot backend is left alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike, NDArray

from rewardkit.calibration import (
    expected_calibration_error,
    preference_probability,
    reliability_bins,
    symmetrize_pairwise,
)
from rewardkit.metrics import jsonable, pairwise_metrics, spearman

__all__ = ["KINDS", "REPORT_FILES", "write_report"]

logger = logging.getLogger(__name__)

KINDS = ("pairwise", "mse", "ranking")

#: Every file name :func:`write_report` can produce. When an existing report directory holds
#: nothing but these, it is swapped out as a whole; stale ones from an earlier run are removed.
REPORT_FILES = frozenset(
    {
        "metrics.json",
        "report.md",
        "reward_hist.png",
        "reliability.png",
        "margin_hist.png",
        "reward_vs_length.png",
        "pred_vs_target.png",
    }
)

TEXT_LIMIT = 120  # characters of each worst-example text shown in report.md
_FIGSIZE = (7.0, 4.6)
_DPI = 110
_CHOSEN_COLOR = "tab:blue"
_REJECTED_COLOR = "tab:orange"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|!~&$])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------


def write_report(
    report_dir: str | os.PathLike[str],
    *,
    metrics: dict[str, Any],
    kind: str,
    chosen: ArrayLike | None = None,
    rejected: ArrayLike | None = None,
    chosen_lengths: ArrayLike | None = None,
    rejected_lengths: ArrayLike | None = None,
    rewards: ArrayLike | None = None,
    targets: ArrayLike | None = None,
    lengths: ArrayLike | None = None,
    worst_examples: list[dict[str, Any]] | None = None,
    model_name: str = "",
    temperature: float = 1.0,
    redact: bool | None = None,
    length_unit: str = "characters",
    n_bins: int = 10,
    max_examples: int = 10,
) -> dict[str, Path]:
    """Write ``metrics.json``, plots and ``report.md`` into ``report_dir``; return their paths.

    ``kind`` is ``"pairwise"`` (give ``chosen``/``rejected`` rewards and optionally
    ``chosen_lengths``/``rejected_lengths``), ``"mse"`` (``rewards`` = predictions, ``targets``,
    optional ``lengths``) or ``"ranking"`` (``rewards`` flattened over all groups, optional
    ``lengths``). ``metrics`` is the dict from :mod:`rewardkit.metrics`; it is written to
    ``metrics.json`` as is (indent 2, sorted keys, NaN/inf written as ``null``). Plots whose data
    is not given are skipped and the report says so.

    ``worst_examples``: dicts such as ``{"prompt", "chosen", "rejected", "margin"}``; texts are
    cut to 120 characters and markdown-escaped. ``redact`` (default: on when the ``CI``
    environment variable is set to anything but ``""/0/false/no/off``) replaces every text by
    its length, because evaluation sets contain offensive red-teaming content.

    Atomicity: everything is written into a sibling ``.<name>.tmp-<pid>`` directory first.

    * ``report_dir`` does not exist: the finished directory is renamed into place, so it
      appears complete or not at all.
    * it exists and holds only report files (see :data:`REPORT_FILES`): it is swapped for
      the new one (old moved aside, new renamed in, old deleted); files of an earlier run that
      this run does not produce (e.g. ``reliability.png`` after an ``mse`` run) disappear.
    * it exists and holds other files too: those are left alone; the report files are
      replaced one by one with ``os.replace`` (each atomic), ``report.md`` last, and stale
      report files from an earlier run are removed.

    On error the temporary directory is removed and the exception propagates.

    Returns ``{file name: final path}`` for every file written.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    final = Path(report_dir).expanduser().resolve()
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} exists and is not a directory")
    if redact is None:
        redact = _ci_env_set()
    ctx = _Context(
        kind=kind,
        metrics=metrics,
        chosen=_opt(chosen, "chosen"),
        rejected=_opt(rejected, "rejected"),
        chosen_lengths=_opt(chosen_lengths, "chosen_lengths"),
        rejected_lengths=_opt(rejected_lengths, "rejected_lengths"),
        rewards=_opt(rewards, "rewards"),
        targets=_opt(targets, "targets"),
        lengths=_opt(lengths, "lengths"),
        worst_examples=list(worst_examples or [])[:max_examples],
        model_name=model_name,
        temperature=_positive(temperature),
        redact=bool(redact),
        length_unit=length_unit,
        n_bins=n_bins,
    )
    ctx.validate()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():  # left over from a crashed run of a process with our pid
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        names = _write_all(tmp, ctx)
        _publish(tmp, final, names)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s report (%d files) to %s", kind, len(names), final)
    return {name: final / name for name in names}


# --------------------------------------------------------------------------------------------
# plumbing
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Everything the plots and the markdown need, validated once up front."""

    kind: str
    metrics: dict[str, Any]
    chosen: NDArray[np.float64] | None
    rejected: NDArray[np.float64] | None
    chosen_lengths: NDArray[np.float64] | None
    rejected_lengths: NDArray[np.float64] | None
    rewards: NDArray[np.float64] | None
    targets: NDArray[np.float64] | None
    lengths: NDArray[np.float64] | None
    worst_examples: list[dict[str, Any]]
    model_name: str
    temperature: float
    redact: bool
    length_unit: str
    n_bins: int
    plots: set[str] = field(default_factory=set)  # file names of the plots actually written

    def validate(self) -> None:
        """Fail before anything is written, not half-way through a plot."""
        _same_size(
            chosen=self.chosen,
            rejected=self.rejected,
            chosen_lengths=self.chosen_lengths,
            rejected_lengths=self.rejected_lengths,
        )
        _same_size(rewards=self.rewards, targets=self.targets, lengths=self.lengths)
        if (self.chosen_lengths is None) != (self.rejected_lengths is None):
            raise ValueError("give both chosen_lengths and rejected_lengths, or neither")
        if (self.chosen is None) != (self.rejected is None):
            raise ValueError("give both chosen and rejected, or neither")
        if int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins!r}")
        metric_t = self.metrics.get("temperature")
        if isinstance(metric_t, (int, float)) and not math.isclose(metric_t, self.temperature):
            logger.warning(
                "metrics were computed at T = %g but the report uses T = %g",
                metric_t,
                self.temperature,
            )

    @property
    def has_pairs(self) -> bool:
        return self.chosen is not None and self.rejected is not None

    @property
    def margins(self) -> NDArray[np.float64]:
        assert self.chosen is not None and self.rejected is not None
        return self.chosen - self.rejected

    def length_bias(self) -> dict[str, Any] | None:
        """From the metrics if present, else computed from the arrays if they were given."""
        lb = self.metrics.get("length_bias")
        if isinstance(lb, dict):
            return lb
        if self.kind == "pairwise" and self.has_pairs and self.chosen_lengths is not None:
            return pairwise_metrics(
                self.chosen,  # type: ignore[arg-type]
                self.rejected,  # type: ignore[arg-type]
                chosen_lengths=self.chosen_lengths,
                rejected_lengths=self.rejected_lengths,
            )["length_bias"]
        if self.rewards is not None and self.lengths is not None:
            return {"spearman_reward_length": spearman(self.rewards, self.lengths)}
        return None


def _opt(values: ArrayLike | None, name: str) -> NDArray[np.float64] | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _same_size(**arrays: NDArray[np.float64] | None) -> None:
    sizes = {name: a.size for name, a in arrays.items() if a is not None}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"arrays differ in length: {sizes}")


def _positive(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _ci_env_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _write_all(directory: Path, ctx: _Context) -> list[str]:
    names = ["metrics.json"]
    (directory / "metrics.json").write_text(_dump_json(ctx.metrics) + "\n", encoding="utf-8")
    for name, draw in _plots_for(ctx):
        fig = _new_figure()
        draw(fig, ctx)
        fig.savefig(directory / name, format="png")
        fig.clear()
        ctx.plots.add(name)
        names.append(name)
    (directory / "report.md").write_text(_render_markdown(ctx), encoding="utf-8")
    names.append("report.md")
    return names


def _publish(tmp: Path, final: Path, names: list[str]) -> None:
    """Move the finished ``tmp`` directory to ``final`` (see write_report for the rules)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    existing = {p.name for p in final.iterdir()}
    if existing <= REPORT_FILES:
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        return
    logger.info("%s holds other files; replacing the report files one by one", final)
    for name in sorted(names, key=lambda n: n == "report.md"):  # report.md last
        os.replace(tmp / name, final / name)
    for stale in sorted(REPORT_FILES & existing - set(names)):
        (final / stale).unlink(missing_ok=True)
    tmp.rmdir()


def _dump_json(metrics: dict[str, Any]) -> str:
    return json.dumps(jsonable(metrics), indent=2, sort_keys=True, allow_nan=False)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------

_Draw = Callable[[Figure, _Context], None]


def _plots_for(ctx: _Context) -> list[tuple[str, _Draw]]:
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
        if ctx.kind == "mse" and ctx.targets is not None:
            plots.append(("pred_vs_target.png", _draw_pred_vs_target))
        if ctx.lengths is not None:
            plots.append(("reward_vs_length.png", _draw_reward_vs_length))
    return plots


def _new_figure() -> Figure:
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


def _fmt_corr(value: float | None) -> str:
    return "undefined" if value is None else f"{value:+.2f}"


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
            label=f"mean {label} = {values.mean():.2f}",
        )
    ax.set_xlabel("Reward (raw model output)")
    ax.set_ylabel("Number of responses")
    ax.set_title(f"Rewards of chosen vs rejected responses ({ctx.chosen.size:,} pairs)")
    _headroom(ax)
    ax.legend(loc="upper right", frameon=False)


def _draw_margin_hist(fig: Figure, ctx: _Context) -> None:
    margins = ctx.margins
    ax = fig.add_subplot()
    edges = _bin_edges(margins, align_zero=True)
    ax.hist(
        margins[margins > 0],
        bins=edges,
        color="tab:green",
        alpha=0.75,
        label="model agrees with humans (margin > 0)",
    )
    ax.hist(
        margins[margins < 0],
        bins=edges,
        color="tab:red",
        alpha=0.75,
        label="model disagrees (margin < 0)",
    )
    if np.any(margins == 0):
        ax.hist(
            margins[margins == 0],
            bins=edges,
            color="tab:gray",
            alpha=0.75,
            label="tie (margin = 0)",
        )
    ax.axvline(0.0, color="black", linewidth=1.5)
    accuracy = ctx.metrics.get("accuracy")
    if not isinstance(accuracy, (int, float)):
        accuracy = float(np.mean(np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))))
    ax.set_xlabel("Margin = reward(chosen) − reward(rejected)")
    ax.set_ylabel("Number of pairs")
    ax.set_title(f"Reward margins: accuracy {accuracy:.1%} ({margins.size:,} pairs)")
    _headroom(ax)
    ax.legend(loc="upper left", frameon=False)


def _draw_reliability(fig: Figure, ctx: _Context) -> None:
    """Confidence form of the diagram (Guo et al., 2017, fig. 1): "when it is X% sure, is it
    right X% of the time?". The symmetric bins below 0.5 are mirror images of those above
    (see calibration.symmetrize_pairwise), so only the upper half is drawn; the ECE in the
    title is over all bins, which for an even number of bins is the same number."""
    probs, outcomes = symmetrize_pairwise(ctx.margins, ctx.temperature)
    bins = reliability_bins(probs, outcomes, ctx.n_bins)
    ece = expected_calibration_error(probs, outcomes, ctx.n_bins)
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
    # counts inside the bars, where the confidence markers cannot cover them
    ax.bar_label(
        bars,
        labels=[f"n={b['count']:,}" for b in shown],
        label_type="center",
        fontsize=9,
        color="white",
        fontweight="bold",
    )
    ax.set_xlim(x_lo, 1)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel(f"Confidence in its pick, max(P, 1 − P) at T = {ctx.temperature:.3g}")
    ax.set_ylabel("Fraction of picks matching the human label")
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
    ax.set_ylabel("Reward")
    ax.set_title(f"Reward vs response length: Spearman ρ = {_fmt_corr(rho)}")


def _draw_reward_hist(fig: Figure, ctx: _Context) -> None:
    assert ctx.rewards is not None
    ax = fig.add_subplot()
    series = [(ctx.rewards, "predicted reward" if ctx.kind == "mse" else "reward", _CHOSEN_COLOR)]
    if ctx.kind == "mse" and ctx.targets is not None:
        series.append((ctx.targets, "target score", _REJECTED_COLOR))
    edges = _bin_edges(np.concatenate([s[0] for s in series]))
    for values, label, color in series:
        ax.hist(values, bins=edges, alpha=0.5, color=color, edgecolor=color, label=label)
    xlabel = "Score" if len(series) > 1 else "Reward (raw model output)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Number of responses")
    ax.set_title(f"Reward distribution ({ctx.rewards.size:,} responses)")
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
    ax.set_ylabel("Predicted reward")
    ax.set_title(
        f"Predicted vs target: RMSE = {rmse:.3g}, Spearman ρ = "
        f"{_fmt_corr(spearman(ctx.rewards, ctx.targets))}"
    )
    ax.legend(frameon=False)


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------


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


def _render_markdown(ctx: _Context) -> str:
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
    n = ctx.metrics.get("n", ctx.metrics.get("n_groups"))
    unit = {"pairwise": "pairs", "mse": "responses", "ranking": "groups"}[ctx.kind]
    return [
        title,
        "",
        f"Evaluated on {_KIND_TEXT[ctx.kind]}: {_num(n)} {unit}; temperature T = "
        f"{ctx.temperature:.3g}.",
        "",
    ]


def _md_meaning(ctx: _Context) -> list[str]:
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
        "in this report "
        + (
            "(T = 1: the raw, uncalibrated model)."
            if t == 1.0
            else "(fitted temperature; T = 1 would be the raw model)."
        ),
        "",
        "| reward difference r_a − r_b | " + " | ".join(f"{m:g}" for m in margins) + " |",
        "|---|" + "---|" * len(margins),
        "| P(a preferred over b) | " + " | ".join(f"{p:.2f}" for p in probs) + " |",
        "",
    ]
    if ctx.kind == "pairwise":
        lines += [
            "So a chosen response that sometimes scores higher and sometimes lower than the "
            "rejected one is expected: the accuracy below says how often it is higher, the "
            "margin how sure the model is.",
            "",
        ]
    elif ctx.kind == "mse":
        lines += [
            "This model was trained to predict a score directly (MSE), so its rewards are on the "
            "scale of the training targets; for choosing between responses still only "
            "differences matter.",
            "",
        ]
    return lines


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
        ("n_groups", "Groups", "number of ranked groups"),
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
    ]


def _md_headline(ctx: _Context) -> list[str]:
    lines = ["## Headline metrics", "", "| metric | value | what it means |", "|---|---|---|"]
    shown = set()
    for key, label, meaning in _rows_for(ctx.kind):
        if key in ctx.metrics:
            lines.append(f"| {label} | {_num(ctx.metrics[key])} | {meaning} |")
            shown.add(key)
    for key in sorted(ctx.metrics):  # anything else the caller put in, without commentary
        value = ctx.metrics[key]
        if key not in shown and key != "temperature" and isinstance(value, (int, float)):
            lines.append(f"| {_escape(key)} | {_num(value)} | |")
    lines.append("")
    hist_caption = {
        "pairwise": "Where the rewards lie. Their absolute position is arbitrary; what matters "
        "is how far the chosen rewards sit to the right of the rejected ones.",
        "mse": "Distribution of the predicted rewards next to the target scores they were "
        "trained to match.",
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
    if ctx.kind != "pairwise":
        return lines + [
            "Calibration is measured on preference pairs only (pairwise evaluation).",
            "",
        ]
    m = ctx.metrics
    conf = m.get("mean_confidence")
    if conf is None and ctx.has_pairs:
        p = np.asarray(preference_probability(ctx.margins, ctx.temperature))
        conf = float(np.mean(np.maximum(p, 1 - p)))
    acc = m.get("accuracy")
    if isinstance(conf, (int, float)) and isinstance(acc, (int, float)):
        gap = float(conf) - float(acc)
        verdict = (
            f"it is **over-confident** by {100 * gap:.0f} percentage points"
            if gap > 0.02
            else f"it is **under-confident** by {100 * -gap:.0f} percentage points"
            if gap < -0.02
            else "its confidence matches how often it is right"
        )
        lines += [
            f"On average the model is **{_pct(conf)}** sure which of two responses is better "
            f"(mean of max(P, 1 − P) at T = {ctx.temperature:.3g}) and it picks the "
            f"human-preferred one **{_pct(acc)}** of the time: {verdict}.",
            "",
        ]
    ece = m.get("ece")
    if isinstance(ece, (int, float)):
        lines += [
            f"Calibration error (ECE, Guo et al. 2017) is **{float(ece):.3f}**: on average the "
            f"stated probability is {100 * float(ece):.1f} percentage points away from how often "
            "the model is actually right (0 = perfectly calibrated). Each pair is counted in both "
            "orders, (P, chosen wins) and (1 − P, rejected wins), because the label alone is "
            'always "chosen wins".',
            "",
        ]
        if ctx.temperature == 1.0 and ece > 0.05:
            lines += [
                "To calibrate, fit a temperature on held-out pairs with "
                "`rewardkit.calibration.fit_temperature(chosen - rejected)` and report with that T; "
                "rankings and accuracy do not change.",
                "",
            ]
    lines += _image(
        "reliability.png",
        "Reliability diagram",
        ctx,
        "Pairs grouped by how sure the model is of its pick. Bars below the dashed "
        "diagonal: it is right less often than it is sure (over-confident); above it: "
        "under-confident. n = pairs in each bin.",
    )
    return lines


def _md_preferences(ctx: _Context) -> list[str]:
    lines = ["## What it prefers", ""]
    lb = ctx.length_bias()
    if not lb:
        return lines + ["No response lengths were given, so length bias was not measured.", ""]
    rho = lb.get("spearman_reward_length")
    longer = lb.get("longer_preferred_rate")
    if longer is not None:
        lines.append(
            f"It gives the longer answer the higher reward in **{_pct(longer)}** of pairs "
            f"(of {_num(lb.get('unequal_length_n'))} pairs whose answers differ in length); "
            f"the human labels chose the longer answer in {_pct(lb.get('chosen_longer_rate'))} "
            "of them."
        )
        lines.append("")
        lines.append(
            f"Accuracy when the chosen answer is shorter: **{_num(lb.get('chosen_shorter_accuracy'), 2)}** "
            f"(n = {_num(lb.get('chosen_shorter_n'))}); when it is longer: "
            f"{_num(lb.get('chosen_longer_accuracy'), 2)} (n = {_num(lb.get('chosen_longer_n'))})."
        )
        lines.append("")
        baseline = lb.get("chosen_longer_rate")
        if isinstance(baseline, (int, float)) and float(longer) - float(baseline) > 0.1:
            lines += [
                "The model favours length more than the human labels do: "
                "a **length bias** worth checking.",
                "",
            ]
        elif isinstance(baseline, (int, float)) and abs(float(longer) - float(baseline)) <= 0.1:
            lines += ["Its preference for length is in line with the human labels.", ""]
    elif ctx.kind == "pairwise":
        lines += ["All pairs have answers of equal length; the length preference is undefined.", ""]
    lines += [
        f"Rank correlation (Spearman ρ) between reward and response length over all responses: "
        f"**{_fmt_corr(rho)}** (0 = no relation, +1 = longer always scores higher).",
        "",
    ]
    target_rho = lb.get("spearman_target_length")
    if "spearman_target_length" in lb:
        lines += [
            f"For comparison, the target scores themselves correlate with length at "
            f"{_fmt_corr(target_rho)}: a length effect the labels do not have is the model's own.",
            "",
        ]
    lines += _image(
        "reward_vs_length.png",
        "Reward vs length",
        ctx,
        f"Each dot is a response: its length in {ctx.length_unit} and its reward.",
    )
    return lines


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


def _md_failures(ctx: _Context) -> list[str]:
    lines = ["## Where it fails", ""]
    examples = ctx.worst_examples
    if not examples:
        return lines + ["No worst examples were given.", ""]
    if ctx.kind == "pairwise":
        lines += [
            "A negative margin means the model gave the rejected answer the higher reward; "
            "the more negative, the surer it was of the wrong answer.",
            "",
        ]
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
    lines.append("| # | " + " | ".join(_escape(c) for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for i, ex in enumerate(examples, 1):
        cells = [_cell(ex[c], ctx.redact) if c in ex else "" for c in cols]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


_EXPECTED_PLOTS = {
    "pairwise": ("reward_hist.png", "margin_hist.png", "reliability.png", "reward_vs_length.png"),
    "mse": ("reward_hist.png", "pred_vs_target.png", "reward_vs_length.png"),
    "ranking": ("reward_hist.png", "reward_vs_length.png"),
}


def _md_footer(ctx: _Context) -> list[str]:
    lines = ["---", ""]
    missing = [name for name in _EXPECTED_PLOTS[ctx.kind] if name not in ctx.plots]
    if missing:
        lines += [f"Not drawn, for lack of data: {', '.join(missing)}.", ""]
    return lines + ["All numbers: [metrics.json](metrics.json). Generated by rewardkit.", ""]
