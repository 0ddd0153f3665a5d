"""Evaluate a reward model on a data set: stream, score, measure, calibrate, report.

This is the model-dependent glue between :mod:`rewardkit.scoring` (rewards from texts) and the
pure functions of :mod:`rewardkit.metrics`, :mod:`rewardkit.calibration` and
:mod:`rewardkit.report` (numbers from rewards). Rows are streamed with
:func:`rewardkit.data.iter_reward_rows` and scored a chunk at a time; only float arrays (rewards
and response lengths) outlive a chunk, plus the texts of the few worst examples, so a 100,000-row
file is evaluated in bounded memory.

What is measured (see :mod:`rewardkit.metrics` for each number):

* pairwise: accuracy, margins, ECE, Brier, log loss of P(chosen > rejected) at the model's
  stored temperature, from *raw* rewards (what Bradley-Terry probabilities use), and the length
  bias (rewards against response lengths in characters);
* mse: RMSE / MAE / Pearson / Spearman of the *raw* reward against the annotated reward (what mse
  training fits; alpha and normalization only rescale what `score()` returns);
* ranking: Kendall tau, top-1 and pairwise accuracy within each ranked group, and the ECE,
  Brier score and log loss of P(better > worse) over every within-group pair.

With ``calibrate``: the fitted T, ECE and log loss before it, and how firmly the pairs pin T down
(:func:`rewardkit.calibration.temperature_evidence`).

Always: ``rewards`` (distribution of raw rewards), ``n``, the objective, model, data, the
model's score scale (alpha, normalize_rewards, reward_mean, reward_std), temperature,
skipped-row counts and truncation counts.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from rewardkit.calibration import (
    CalibrationWarning,
    at_search_bound,
    fit_temperature,
    search_bound_reason,
    temperature_evidence,
    temperature_interval_text,
)
from rewardkit.data import (
    OBJECTIVES,
    RewardDataError,
    SkipReport,
    check_limit,
    iter_reward_rows,
    row_position,
    row_words,
    same_data_source,
)
from rewardkit.data_sources import split_read
from rewardkit.errors import UserInputError
from rewardkit.features import TruncationStats
from rewardkit.file_names import (
    ADAPTER_DIR,
    CHECKPOINT_DATA_FILE,
    REWARD_CONFIG_FILE,
    ROWS_PER_CHUNK,
    SUMMARY_FILE,
    read_record,
)
from rewardkit.lora_checkpoint import is_lora_checkpoint
from rewardkit.metrics import (
    jsonable,
    pairwise_metrics,
    ranking_length_bias,
    ranking_metrics,
    reward_stats,
    scalar_metrics,
    within_group_margins,
)
from rewardkit.scoring import RewardScorer, iter_chunks, rewards_of_rows

__all__ = ["CHUNK_ROWS", "WORST_EXAMPLES", "evaluate_model", "store_temperature"]

logger = logging.getLogger(__name__)

CHUNK_ROWS = ROWS_PER_CHUNK  # rows scored per chunk: one length-sorted scoring run, bounded memory
WORST_EXAMPLES = 10  # examples (with their texts) kept for the report's "where it fails"

_Numbered = tuple[int, dict]


def evaluate_model(
    model: str | os.PathLike | RewardScorer,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    columns: dict[str, str] | str | None = None,
    objective: str | None = None,
    skip_invalid: bool = False,
    report_dir: str | os.PathLike | None = None,
    calibrate: bool = False,
    batch_size: int | None = None,
    max_length: int | None = None,
    device: str | None = None,
    limit: int | None = None,
    data_name: str | None = None,
    dtype: str | torch.dtype | None = None,
) -> dict[str, Any]:
    """Score `data` with `model` and return its metrics (a JSON-serialisable dict, no NaN).

    Args:
        model: a model folder or Hub repo id (loaded with `RewardScorer(model, device,
            batch_size, max_length, dtype=dtype)`), or a ready `RewardScorer` (then leave
            `batch_size`, `max_length`, `device` and `dtype` unset: they belong to the scorer).
        data, split, columns, skip_invalid: as for `rewardkit.data.load_reward_data`.
        objective: "pairwise", "mse" or "ranking"; detected from the columns when None.
        report_dir: also write metrics.json, PNG plots and report.md there.
        calibrate: pairwise or ranked data. Fit the Bradley-Terry temperature T on these pairs
            (for ranked data: every within-group pair, better-ranked response as "chosen") and
            write it into the model folder's config.json, so `RewardScorer.compare` is
            calibrated from then on. The returned metrics are then those at the fitted T, with
            `ece_before`, `ece_after`, `temperature_before` and `temperature_fitted`. Fit on
            held-out data, never on the training set.
        limit: evaluate only the first `limit` valid rows.
        data_name: how the data is named in the report and model card (default: `data`).

    Raises:
        RewardDataError: bad data (naming file, row and column).
        ValueError: bad arguments, e.g. `calibrate` with scalar (mse) data or a model that is
            not a local folder.
    """
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)} (or None to detect it), "
                         f"got {objective!r}.")
    check_limit(limit)
    if calibrate and objective not in (None, *_CALIBRATABLE):
        raise UserInputError(_calibration_refusal(objective))
    if report_dir is not None:
        _check_report_dir(Path(report_dir), data)
    scorer = _scorer_for(model, batch_size=batch_size, max_length=max_length, device=device, dtype=dtype)
    folder = _calibration_folder(scorer) if calibrate else None
    skipped = SkipReport()
    rows = iter_reward_rows(data, split=split, columns=columns, objective=objective,
                            skip_invalid=skip_invalid, skipped=skipped, limit=limit)
    with closing(rows):
        collector = _collect(scorer, rows, objective, calibrate)
    metrics = collector.metrics(scorer)
    if calibrate:
        assert folder is not None and isinstance(collector, (_PairwiseCollector, _RankingCollector))
        metrics = _calibrate(collector, scorer, folder, metrics)
        training = _training_summary(folder)
        metrics["calibrated_on_training_data"] = _is_training_file(training or _checkpoint_record(folder), data, split)
    # the card marks figures of the training data (no held-out check) and keeps them out of model-index
    metrics["on_training_data"] = (metrics["calibrated_on_training_data"] if calibrate else
                                   _reads_training_data(_summary_beside(scorer), data, split))
    metrics["objective"] = collector.kind
    metrics.update(_context(scorer, model, data, data_name, skipped, collector.truncation))
    # the card names it (a data set's test split and its train split read alike); None where no split
    # picks rows, as of a JSONL file: "split test" named a split that was never read
    metrics["split"] = split_read(data, split)
    metrics = jsonable(metrics)
    if calibrate and metrics.get("temperature_written"):
        _record_calibration(folder, training, metrics)
        _render_card_again(folder, metrics, training)
    if report_dir is not None:
        collector.write_report(report_dir, metrics, model_name=metrics["model"])
    logger.info("evaluated %s on %d %s rows of %s", metrics["model"], metrics["n"], metrics["objective"],
                metrics["data"])
    return metrics


# --------------------------------------------------------------------------------------------
# model and calibration
# --------------------------------------------------------------------------------------------


def _check_report_dir(report_dir: Path, data: Any) -> None:
    """A report folder that cannot be one (a file, or inside a file) is refused before any work: it
    failed at the very end, after scoring every row and after `calibrate` had written T into the
    model's config.json, so a failed call had changed the model. Nor may it be the data folder,
    all of whose files are read as data: the report's metrics.json was, and the next evaluation
    (or training) of that folder failed on it as "a JSON object of an unsupported shape"."""
    existing = report_dir.expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"report_dir {report_dir} cannot be a folder: {existing} is a file. Give a folder path.")
    try:
        folder = Path(data).expanduser()
        same = folder.is_dir() and folder.resolve() == report_dir.expanduser().resolve()
    except (TypeError, ValueError, OSError):  # not a path: reading the data says what is wrong with it
        same = False
    if same:
        raise UserInputError(f"report_dir {report_dir} is the data folder {data}, whose files are all read as data "
                             "(its metrics.json would be read as rows next time). Choose a folder outside it.")


def _scorer_for(model: Any, *, batch_size: int | None, max_length: int | None, device: str | None,
                dtype: str | torch.dtype | None = None) -> RewardScorer:
    if isinstance(model, RewardScorer):
        given = {k: v for k, v in {"batch_size": batch_size, "max_length": max_length, "device": device,
                                   "dtype": dtype}.items() if v is not None}
        if given:
            raise ValueError(f"{', '.join(given)} cannot be applied to a ready RewardScorer; pass them "
                             "to RewardScorer(...) instead, or pass the model path here.")
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model folder, a Hub repo id or a RewardScorer, got {type(model).__name__}.")
    return RewardScorer(model, device=device, batch_size=batch_size, max_length=max_length, dtype=dtype)


def _calibration_folder(scorer: RewardScorer) -> Path:
    """The local model folder a fitted temperature will be written to (checked before scoring)."""
    if scorer.source is None:
        raise ValueError("Calibration (--calibrate, calibrate=True) writes the temperature into the model folder's config.json, "
                         "but this RewardScorer was built from a model object; load it from its "
                         "folder (RewardScorer(path)) or pass the path.")
    folder = Path(scorer.source).expanduser()
    if not _config_file(folder).is_file():
        raise UserInputError(f"Calibration (--calibrate, calibrate=True) writes the temperature into the model folder's config.json, "
                             f"but {scorer.source!r} is not a local folder (a Hub repo id?). Download the "
                             "model to a folder, evaluate that folder, then publish it again.")
    return folder


#: Data whose rows imply preference pairs, so a temperature can be fitted on them.
_CALIBRATABLE = ("pairwise", "ranking")


def _calibration_refusal(kind: str) -> str:
    return (f"Calibration (--calibrate, calibrate=True) fits the temperature of P(a ≻ b) on preference pairs "
            f"(pairwise or ranked data); {kind!r} data has target scores, not preferences.")


def _calibrate(collector: _PairwiseCollector | _RankingCollector, scorer: RewardScorer, folder: Path,
               metrics: dict[str, Any]) -> dict[str, Any]:
    """Fit T on the margins, store it when usable, and return the metrics at the fitted T, with how
    firmly the pairs pin T down (`temperature_evidence`: a usable T may still be no better
    supported than T = 1; it is written as the best estimate, with a warning)."""
    margins = collector.margins()
    before = {"temperature_before": metrics["temperature"], "ece_before": metrics["ece"],
              "log_loss_before": metrics["log_loss"]}
    if not np.any(margins):
        # fit_temperature returns T = 1 here (the likelihood does not depend on T), which was
        # written as if fitted: nothing was learnt from these pairs, so nothing is written.
        logger.warning("every pair's reward margin is 0 (the model gives both responses the same reward): the pairs "
                       "say nothing about the temperature; none written to %s", folder)
        return {**metrics, **before, "ece_after": metrics["ece"], "temperature_fitted": None,
                "temperature_written": False}
    with warnings.catch_warnings():  # worded once below, for this command, not twice (warning + log)
        warnings.simplefilter("ignore", CalibrationWarning)
        fitted = fit_temperature(margins)
    usable = not at_search_bound(fitted)  # the same test fit_temperature warns by
    groups = collector.pair_groups() if isinstance(collector, _RankingCollector) else None
    evidence = temperature_evidence(margins, fitted, groups=groups) if usable else {}
    if usable:
        store_temperature(folder, fitted)
        scorer.model.config.calibration_temperature = fitted
        metrics = collector.metrics(scorer)
        if not evidence["temperature_differs_from_1"]:
            logger.warning("the fitted temperature T = %.3g cannot be told apart from T = 1 on these %d pairs (95%% "
                           "interval: %s): written as the best estimate, but the calibrated probabilities "
                           "are no better established than the raw ones; calibrate on more held-out pairs",
                           fitted, margins.size, temperature_interval_text(*evidence["temperature_interval"]))
    else:
        logger.warning("the fitted temperature %g is %s: no estimate, not written to %s; evaluate on more "
                       "held-out pairs", fitted, search_bound_reason(fitted), folder)
    return {**metrics, **before, "ece_after": metrics["ece"], "temperature_fitted": fitted,
            "temperature_written": usable, **evidence}


def _training_summary(folder: Path) -> dict | None:
    """The folder's training_summary.json, None when it has none or it is unreadable (a model from
    the Hub, a hand-edited file): read once for what `--calibrate` checks in it and adds to it."""
    return read_record(folder / SUMMARY_FILE) or None


def _checkpoint_record(folder: Path) -> dict | None:
    """A checkpoint's training_data.json (`data`, `data_split`, as a training summary records them),
    None when it has none or it is unreadable: a checkpoint has no training_summary.json, and
    without this its figures on its own training data were not marked as such."""
    return read_record(folder / CHECKPOINT_DATA_FILE) or None


def _summary_beside(scorer: RewardScorer) -> dict | None:
    """The training summary of the model folder the scorer loaded (a checkpoint's record of its
    training data), None for a Hub id or a model object."""
    if not scorer.source:
        return None
    folder = Path(scorer.source).expanduser()
    return _training_summary(folder) or _checkpoint_record(folder)


def _reads_training_data(training: dict | None, data: Any, split: str | None) -> bool | None:
    """Whether `data` (with `split`) is the data `training` (a training summary) records training on;
    None when no summary records its data."""
    if not (training and training.get("data")):
        return None
    return same_data_source(training["data"], training.get("data_split"), data, split)


def _is_training_file(training: dict | None, data: Any, split: str | None) -> bool | None:
    """Whether `data` is the data the model was trained on (its training summary says: the same
    file, folder or Hub dataset and split), None when no summary records it (a model from the Hub,
    a summary from before `data` was recorded): `false` claimed held-out pairs that nothing had
    checked. Said at once: a model fits its own training pairs better than new ones, so a T fitted
    on them comes out too small and its probabilities over-confident."""
    same = _reads_training_data(training, data, split)
    if not same:
        return same
    # worded for every outcome: a T fitted here is written, or not (a search bound, all margins 0)
    logger.warning("--calibrate ran on %s, the data this model was trained on: a temperature fitted on its pairs is "
                   "too small for new pairs (the model fits its training pairs better), so its probabilities are "
                   "over-confident. Calibrate on held-out pairs.", data)
    return True


# What the card says of a stored T (which pairs it was fitted on, how firmly they pin it down):
# kept in training_summary.json, from which `rewardkit publish` renders the card again.
CALIBRATION_RECORD_KEYS = ("temperature_fitted", "temperature_written", "temperature_interval",
                           "temperature_differs_from_1", "temperature_interval_by_group", "calibrated_on_training_data", "n", "n_pairs", "objective")


def _record_calibration(folder: Path, training: dict | None, metrics: dict[str, Any]) -> None:
    """Keep the facts of the fit that stored T in the folder's training_summary.json (`calibration`).
    The card said "fitted on the model's own training pairs" or "cannot tell it from T = 1" only
    while rendered with this evaluation: `rewardkit publish` renders it from the training summary
    (and `--metrics`, when given), and the published card then said "fitted on held-out preference
    pairs", without the interval. Nothing is written without a training summary (no card of
    ours to render)."""
    if training is None:
        return
    summary = folder / SUMMARY_FILE
    training["calibration"] = {key: metrics[key] for key in CALIBRATION_RECORD_KEYS if key in metrics}
    tmp = summary.with_name(f".{summary.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(training, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, summary)
    finally:
        tmp.unlink(missing_ok=True)


def _render_card_again(folder: Path, metrics: dict[str, Any], training: dict | None) -> None:
    """Render the folder's model card again (with these metrics) once a T is stored: the card states
    T and what reward differences mean at it ("a difference of 1 means P = 0.73" at T = 1), and it
    kept saying T = 1 while `compare` used the fitted T. Only the card `rewardkit train` wrote (tag
    `rewardkit`, training_summary.json beside it) is replaced. A README of the user's own is left
    as it is, and so is a published card (a model downloaded from the Hub: no training summary),
    which came back as "your-name/reward-model" without its license, data or training record.
    `training`: the summary `_training_summary` read (with the calibration record added), not read
    again; None when it could not, and then a summary file that is there is read as before."""
    from huggingface_hub import metadata_load

    from rewardkit.model_card import write_model_card

    card = folder / "README.md"
    if not card.is_file() or "rewardkit" not in ((metadata_load(card) or {}).get("tags") or []):
        return
    summary = folder / SUMMARY_FILE
    if not summary.is_file():
        logger.warning("%s was not rendered again (no training_summary.json beside it: not the card `rewardkit train` "
                       "wrote); it still states the temperature it had. `rewardkit publish` renders the card with "
                       "T = %.4g.", card, metrics["temperature"])
        return
    if training is None:  # there, but not a readable JSON object: fails here as it always did
        training = json.loads(summary.read_text(encoding="utf-8"))
    write_model_card(folder, training=training, evaluation=metrics)
    logger.info("rendered the model card %s again with T = %.4g and this evaluation", card, metrics["temperature"])


def _config_file(folder: Path) -> Path:
    """The file a model folder's RewardConfig is read from: config.json, or reward_config.json of a
    LoRA run's checkpoint-N/ (which `load_lora_checkpoint` rebuilds the model with; calibrated, a
    checkpoint got a config.json holding T alone, and `score` of it then failed as a folder without
    weights)."""
    return folder / (REWARD_CONFIG_FILE if is_lora_checkpoint(folder) else "config.json")


def store_temperature(folder: str | os.PathLike, temperature: float) -> Path:
    """Write `temperature` into `folder`/config.json (a LoRA checkpoint's reward_config.json) as
    `calibration_temperature`, leaving every other field as it is, and into a LoRA run's
    `adapter/reward_config.json` (what `load_adapter` rebuilds the model from) when there is one.
    The old key `temperature` (a generation setting to transformers) is removed if an earlier
    version wrote it.

    Crash-safe: every new file is written and fsynced beside its original first, and only then
    are they renamed over the originals (`os.replace`, atomic each), back to back: a crash while
    writing leaves the old files untouched, never a half-written config."""
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    path = _config_file(Path(folder))
    adapter_config = Path(folder) / ADAPTER_DIR / REWARD_CONFIG_FILE
    targets = ([adapter_config] if adapter_config.is_file() else []) + [path]
    written: list[tuple[Path, Path]] = []
    try:
        for target in targets:
            written.append((_with_temperature(target, temperature), target))
        for tmp, target in written:
            os.replace(tmp, target)
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    logger.info("stored temperature %.4g in %s", temperature, path)
    return path


def _with_temperature(path: Path, temperature: float) -> Path:
    """A fsynced copy of the JSON config `path` with the temperature set, beside it; returns its path."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("temperature", None)
    config["calibration_temperature"] = float(temperature)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# --------------------------------------------------------------------------------------------
# streaming and collection
# --------------------------------------------------------------------------------------------


def _collect(scorer: RewardScorer, rows: Iterator[_Numbered], objective: str | None,
             calibrate: bool) -> _Collector:
    """Score every row, a chunk at a time, into the collector for the data's objective."""
    from tqdm.auto import tqdm

    collector: _Collector | None = None
    disable = None if scorer.show_progress is None else not scorer.show_progress
    with tqdm(desc="Evaluating", unit="row", disable=disable) as progress:
        for chunk in iter_chunks(rows, CHUNK_ROWS):
            if collector is None:
                kind = objective or _kind_of(chunk[0][1])
                if calibrate and kind not in _CALIBRATABLE:
                    raise UserInputError(_calibration_refusal(kind))
                collector = _COLLECTORS[kind]()
            collector.add(scorer, chunk)
            progress.update(len(chunk))
    if collector is None:  # iter_reward_rows raises on empty data; this guards the contract
        raise RewardDataError("no rows to evaluate")
    return collector


def _kind_of(row: dict) -> str:
    """The objective of a normal-form row (see rewardkit.data)."""
    if "chosen" in row:
        return "pairwise"
    if "responses" in row:
        return "ranking"
    if "reward" in row:
        return "mse"
    raise RewardDataError(f"rows with columns {sorted(row)} cannot be evaluated: give pairwise, "
                          "scalar (reward) or ranked data")


@dataclass
class _Worst:
    """The `k` examples with the lowest key, in a bounded heap: only their texts are kept."""

    k: int = WORST_EXAMPLES
    _heap: list[tuple[float, int, dict]] = field(default_factory=list)  # (-key, -seq, example)
    _seen: int = 0

    def offer(self, key: float, make_example: Callable[[], dict]) -> None:
        """Keep this example if its key is among the k lowest so far (earlier rows win ties);
        `make_example` is called only then, so the other rows' texts are never copied."""
        self._seen += 1
        rank = (-key, -self._seen)  # heap[0] holds the highest kept key: the first to go
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (*rank, make_example()))
        elif rank > self._heap[0][:2]:
            heapq.heapreplace(self._heap, (*rank, make_example()))

    def examples(self) -> list[dict]:
        """Worst first."""
        return [example for _, _, example in sorted(self._heap, key=lambda t: (-t[0], -t[1]))]


class _Collector:
    """Accumulates float arrays chunk by chunk; turns them into metrics and a report. Raw rewards
    are fetched without the scorer's progress bar and truncation message: evaluate draws one bar
    and reports truncation once, in the metrics and the report (`_context`)."""

    kind = ""
    # Truncation of this evaluation's texts only, counted per call (not a difference of the scorer's
    # running totals, which another thread's calls on the same scorer would add to).
    truncation: TruncationStats

    def add(self, scorer: RewardScorer, chunk: list[_Numbered]) -> None:
        raise NotImplementedError

    def metrics(self, scorer: RewardScorer) -> dict[str, Any]:
        raise NotImplementedError

    def write_report(self, report_dir: str | os.PathLike, metrics: dict[str, Any], *, model_name: str) -> None:
        raise NotImplementedError


def _concat(parts: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    return np.concatenate(parts) if parts else np.zeros(0)


def _lengths(texts: list[str]) -> NDArray[np.float64]:
    return np.array([len(text) for text in texts], dtype=np.float64)


class _PairwiseCollector(_Collector):
    """Raw rewards of chosen and rejected responses and their lengths in characters."""

    kind = "pairwise"

    def __init__(self) -> None:
        self.truncation = TruncationStats()
        self.chosen: list[NDArray[np.float64]] = []
        self.rejected: list[NDArray[np.float64]] = []
        self.chosen_lengths: list[NDArray[np.float64]] = []
        self.rejected_lengths: list[NDArray[np.float64]] = []
        self.worst = _Worst()

    def add(self, scorer: RewardScorer, chunk: list[_Numbered]) -> None:
        prompts = [row["prompt"] for _, row in chunk]
        chosen = [row["chosen"] for _, row in chunk]
        rejected = [row["rejected"] for _, row in chunk]
        # One run over both halves: all 2n texts are length-sorted together.
        n = len(chunk)
        raw = rewards_of_rows(scorer, prompts + prompts, chosen + rejected,
                       lambda i: f"{row_words(*chunk[i % n])} ({'chosen' if i < n else 'rejected'})", self.truncation)
        c, r = raw[: len(chunk)], raw[len(chunk):]
        self.chosen.append(c)
        self.rejected.append(r)
        self.chosen_lengths.append(_lengths(chosen))
        self.rejected_lengths.append(_lengths(rejected))
        for (number, row), margin in zip(chunk, (c - r).tolist()):
            self.worst.offer(margin, lambda number=number, row=row, margin=margin: {
                **row_position(number, row), "prompt": row["prompt"], "chosen": row["chosen"],
                "rejected": row["rejected"], "margin": margin})

    def margins(self) -> NDArray[np.float64]:
        return _concat(self.chosen) - _concat(self.rejected)

    def metrics(self, scorer: RewardScorer) -> dict[str, Any]:
        c, r = _concat(self.chosen), _concat(self.rejected)
        out = pairwise_metrics(c, r, temperature=scorer.temperature,
                               chosen_lengths=_concat(self.chosen_lengths),
                               rejected_lengths=_concat(self.rejected_lengths))
        out["rewards"] = reward_stats(np.concatenate([c, r]))
        return out

    def write_report(self, report_dir: str | os.PathLike, metrics: dict[str, Any], *, model_name: str) -> None:
        from rewardkit.report import write_report

        write_report(report_dir, metrics=metrics, kind="pairwise", chosen=_concat(self.chosen),
                     rejected=_concat(self.rejected), chosen_lengths=_concat(self.chosen_lengths),
                     rejected_lengths=_concat(self.rejected_lengths), worst_examples=self.worst.examples(),
                     model_name=model_name, temperature=metrics["temperature"])


class _ScalarCollector(_Collector):
    """Raw rewards, targets and lengths. The metrics compare the RAW reward with the targets: it is
    what mse training fitted to them (as the in-training eval_rmse does); `alpha` and reward
    normalization rescale what `score()` returns at inference and would make RMSE measure the
    scale, not the fit."""

    kind = "mse"

    def __init__(self) -> None:
        self.truncation = TruncationStats()
        self.raw: list[NDArray[np.float64]] = []
        self.targets: list[NDArray[np.float64]] = []
        self.lengths: list[NDArray[np.float64]] = []
        self.worst = _Worst()

    def add(self, scorer: RewardScorer, chunk: list[_Numbered]) -> None:
        prompts = [row["prompt"] for _, row in chunk]
        responses = [row["response"] for _, row in chunk]
        raw = rewards_of_rows(scorer, prompts, responses, lambda i: row_words(*chunk[i]), self.truncation)
        targets = np.array([float(row["reward"]) for _, row in chunk])
        self.raw.append(raw)
        self.targets.append(targets)
        self.lengths.append(_lengths(responses))
        for (number, row), predicted, target in zip(chunk, raw.tolist(), targets.tolist()):
            self.worst.offer(-abs(predicted - target), lambda number=number, row=row, predicted=predicted, target=target: {
                **row_position(number, row), "prompt": row["prompt"], "response": row["response"],
                "predicted": predicted, "target": target})

    def metrics(self, scorer: RewardScorer) -> dict[str, Any]:
        out = scalar_metrics(_concat(self.raw), _concat(self.targets), lengths=_concat(self.lengths))
        out["rewards"] = reward_stats(_concat(self.raw))
        out["temperature"] = scorer.temperature
        return out

    def write_report(self, report_dir: str | os.PathLike, metrics: dict[str, Any], *, model_name: str) -> None:
        from rewardkit.report import write_report

        write_report(report_dir, metrics=metrics, kind="mse", rewards=_concat(self.raw),
                     targets=_concat(self.targets), lengths=_concat(self.lengths),
                     worst_examples=self.worst.examples(), model_name=model_name,
                     temperature=metrics["temperature"])


class _RankingCollector(_Collector):
    """Raw rewards and response lengths per ranked group (best first)."""

    kind = "ranking"

    def __init__(self) -> None:
        self.truncation = TruncationStats()
        self.groups: list[NDArray[np.float64]] = []
        self.group_lengths: list[NDArray[np.float64]] = []
        self.worst = _Worst()

    def add(self, scorer: RewardScorer, chunk: list[_Numbered]) -> None:
        prompts = [row["prompt"] for _, row in chunk for _ in row["responses"]]
        responses = [text for _, row in chunk for text in row["responses"]]
        owners = [(number, row, k) for number, row in chunk for k in range(1, len(row["responses"]) + 1)]
        raw = rewards_of_rows(scorer, prompts, responses,
                       lambda i: f"{row_words(*owners[i][:2])} (response ranked {owners[i][2]})", self.truncation)
        lengths = _lengths(responses)
        start = 0
        for number, row in chunk:
            group = raw[start:start + len(row["responses"])]
            self.group_lengths.append(lengths[start:start + len(row["responses"])])
            start += len(row["responses"])
            self.groups.append(group)
            margin = float(group[0] - group[1:].max())  # best response vs its strongest rival
            self.worst.offer(margin, lambda number=number, row=row, group=group, margin=margin: {
                **row_position(number, row), "prompt": row["prompt"], "response": row["responses"][0],
                "reward": float(group[0]), "margin": margin})

    def margins(self) -> NDArray[np.float64]:
        """reward(better) − reward(worse) for every within-group pair: what calibration fits."""
        return within_group_margins(self.groups)

    def pair_groups(self) -> NDArray[np.intp]:
        """The group of each of `margins`: its pairs share responses, so T's interval counts them
        as correlated (`temperature_evidence`), not as that many independent pairs."""
        sizes = [len(group) * (len(group) - 1) // 2 for group in self.groups]
        return np.repeat(np.arange(len(sizes)), sizes)

    def metrics(self, scorer: RewardScorer) -> dict[str, Any]:
        out = ranking_metrics(self.groups, temperature=scorer.temperature)
        flat = _concat(self.groups)
        out["n"] = out["n_groups"]
        out["n_responses"] = int(flat.size)
        out["length_bias"] = ranking_length_bias(self.groups, self.group_lengths)
        out["rewards"] = reward_stats(flat)
        return out

    def write_report(self, report_dir: str | os.PathLike, metrics: dict[str, Any], *, model_name: str) -> None:
        from rewardkit.report import write_report

        write_report(report_dir, metrics=metrics, kind="ranking", rewards=_concat(self.groups),
                     lengths=_concat(self.group_lengths), pair_margins=self.margins(),
                     group_sizes=[len(group) for group in self.groups], worst_examples=self.worst.examples(),
                     model_name=model_name, temperature=metrics["temperature"])


_COLLECTORS: dict[str, type[_Collector]] = {
    "pairwise": _PairwiseCollector, "mse": _ScalarCollector, "ranking": _RankingCollector,
}


# --------------------------------------------------------------------------------------------
# the context around the numbers
# --------------------------------------------------------------------------------------------


def _backbone_dtype(scorer: RewardScorer) -> str:
    """"fp32", "bf16" or "fp16": what the backbone scored in (`--dtype`). Recorded because it moves the
    numbers: an evaluation (or a --calibrate fit) run in bf16 did not say so anywhere."""
    backbone = getattr(scorer.model, "backbone", None) or scorer.model
    dtype = next((p.dtype for p in backbone.parameters() if p.is_floating_point()), torch.float32)
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def _context(scorer: RewardScorer, model: Any, data: Any, data_name: str | None, skipped: SkipReport,
             truncation: TruncationStats) -> dict[str, Any]:
    """Where the numbers come from: model, data, scale, skipped rows, truncation. The scale is the
    model's own (alpha, and normalize_rewards with reward_mean / reward_std): what its `score()`,
    `pipeline` and TRL return, which the report tells readers how to convert back to raw rewards."""
    name = scorer.source or (str(model) if isinstance(model, (str, os.PathLike)) else None)
    config = scorer.model.config
    return {
        "model": name or getattr(scorer.model, "name_or_path", "") or type(scorer.model).__name__,
        "data": os.fspath(data),
        "data_name": data_name or os.fspath(data),
        "alpha": scorer.alpha,
        "trained_objective": getattr(config, "trained_objective", None),  # how report.md reads the reward
        "normalize_rewards": bool(config.normalize_rewards),
        "reward_mean": config.reward_mean,
        "reward_std": config.reward_std,
        "max_length": scorer.max_length,
        "dtype": _backbone_dtype(scorer),
        "skipped": skipped.total,
        "skipped_reasons": dict(skipped.counts),
        "truncation": asdict(truncation),
    }

