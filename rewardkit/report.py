"""Write a human-readable evaluation report: ``metrics.json``, PNG plots and ``report.md``.

The report answers the question users actually ask, "what does the number mean?", in four
parts: what a reward is (a relative score read through Bradley-Terry, P(a ≻ b) = σ((r_a − r_b)/T)),
the headline metrics, how sure the model is (calibration, Guo et al., 2017), what it prefers
(length bias) and where it fails (worst examples, redacted in CI since evaluation sets contain
red-teaming text).

The plots are drawn in :mod:`rewardkit.report_plots`, the text in :mod:`rewardkit.report_text`;
this module validates the inputs and writes the files, all or nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rewardkit import report_text
from rewardkit.metrics import jsonable, pairwise_metrics, spearman, within_group_pairs
from rewardkit.report_plots import new_figure, plots_for

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
    pair_margins: ArrayLike | None = None,
    group_sizes: ArrayLike | None = None,
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
    ``lengths`` and ``pair_margins``: reward(better) − reward(worse) of every within-group pair,
    see :func:`rewardkit.metrics.within_group_margins`, for the calibration section and the
    reliability diagram; and ``group_sizes``, the number of responses of each group in the order
    of ``rewards``, so that the calibration section's chance ranges draw whole rankings, not each
    pair on its own; without them "Where it fails" sets no calibrated model's counts beside the
    model's). ``metrics`` is the dict from :mod:`rewardkit.metrics`; it is written to
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
        pair_margins=_opt(pair_margins, "pair_margins"),
        group_sizes=None if group_sizes is None else np.asarray(group_sizes).reshape(-1),
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
    pair_margins: NDArray[np.float64] | None
    group_sizes: NDArray[Any] | None
    worst_examples: list[dict[str, Any]]
    model_name: str
    temperature: float
    redact: bool
    length_unit: str
    n_bins: int
    plots: set[str] = field(default_factory=set)  # file names of the plots actually written
    calibrated: Any = field(default=None, repr=False)  # report_confidence.calibrated_draws, drawn once

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
        if self.pair_margins is not None and self.kind != "ranking":
            raise ValueError("pair_margins are for ranked data; give chosen and rejected for pairwise data")
        if self.group_sizes is not None:
            self._validate_groups()
        if int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins!r}")
        metric_t = self.metrics.get("temperature")
        if isinstance(metric_t, (int, float)) and not math.isclose(metric_t, self.temperature):
            logger.warning(
                "metrics were computed at T = %g but the report uses T = %g",
                metric_t,
                self.temperature,
            )

    def _validate_groups(self) -> None:
        """``group_sizes`` must split ``rewards`` into groups whose within-group margins are the
        ``pair_margins`` given: the chance ranges draw rankings from those rewards and score them
        with those margins' probabilities, so a mismatch would make them the ranges of other data."""
        sizes = self.group_sizes
        assert sizes is not None
        if self.kind != "ranking":
            raise ValueError("group_sizes are for ranked data")
        if sizes.dtype.kind not in "iuf" or not np.all(np.isfinite(sizes)) or np.any(sizes != np.round(sizes)) \
                or np.any(sizes < 2):
            raise ValueError(f"group_sizes must be whole numbers of at least 2 (responses per group), got {sizes!r}")
        if self.rewards is None or self.pair_margins is None:
            raise ValueError("group_sizes need the rewards they split into groups and those groups' pair_margins")
        if int(sizes.sum()) != self.rewards.size:
            raise ValueError(f"group_sizes add up to {int(sizes.sum())} responses but {self.rewards.size} rewards "
                             "were given")
        better, worse = self.pair_sides
        if better.size != self.pair_margins.size or not np.allclose(
                self.rewards[better] - self.rewards[worse], self.pair_margins, rtol=1e-9, atol=1e-9):
            raise ValueError("pair_margins are not the within-group margins of rewards split by group_sizes "
                             "(see rewardkit.metrics.within_group_margins)")

    @cached_property
    def pair_sides(self) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """(better, worse): indices into ``rewards`` of both responses of every within-group pair, in
        the order of ``pair_margins`` (ranked data with ``group_sizes``)."""
        assert self.group_sizes is not None
        ends = np.cumsum(self.group_sizes.astype(np.intp))
        groups = np.split(np.arange(int(ends[-1]) if ends.size else 0), ends[:-1])
        better, worse = within_group_pairs(groups)
        return better.astype(np.intp), worse.astype(np.intp)

    @property
    def has_pairs(self) -> bool:
        return self.chosen is not None and self.rejected is not None

    @property
    def margins(self) -> NDArray[np.float64]:
        assert self.chosen is not None and self.rejected is not None
        return self.chosen - self.rejected

    @property
    def preference_margins(self) -> NDArray[np.float64] | None:
        """The margins P(a ≻ b) is read from: chosen − rejected (pairwise), better − worse within
        each group (ranking, when given); None otherwise or when there are none."""
        margins = self.margins if self.kind == "pairwise" and self.has_pairs else self.pair_margins
        return margins if margins is not None and margins.size else None

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
    for name, draw in plots_for(ctx):
        fig = new_figure()
        draw(fig, ctx)
        fig.savefig(directory / name, format="png")
        fig.clear()
        ctx.plots.add(name)
        names.append(name)
    (directory / "report.md").write_text(report_text.render_markdown(ctx), encoding="utf-8")
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
