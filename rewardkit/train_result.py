"""What a training run did (`TrainResult`), and how `rewardkit train` says it: steps, time, speed
and loss (of which steps, when resumed), held-out figures (of which weights), the targets' scale
for mse, the raw rewards' mean and std, how to read a reward (P(a > b) at T = 1, alpha),
truncation and skipped rows. training_summary.json is its `to_dict`; the model card and
`evaluate --calibrate` read that file back."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rewardkit.model_card import format_seconds


@dataclass
class TrainResult:
    """What a training run did, in plain data (JSON-serialisable via `to_dict`)."""

    output_dir: str
    objective: str
    base_model: str
    detected_layout: str
    train_rows: int
    eval_rows: int
    epochs: float
    steps: int  # the model's optimizer steps in all, those of the checkpoint resumed from included
    seconds: float | None  # this call's (None: a re-run of a finished run whose time was not recorded)
    examples_per_second: float | None  # this call's training alone, without the held-out evaluations
    train_loss: float  # transformers' mean training loss over this call's steps (not the last step's)
    max_length: int
    max_length_source: str = ""  # "--max-length", "the default", ...: why the run cut at max_length
    eval_seconds: float = 0.0  # held-out evaluations during training (part of `seconds`)
    steps_this_call: int | None = None  # the steps `train_loss`, `seconds` and the speed are of
    base_model_id: str | None = None  # the Hub id the base model came from (the card's `base_model`), if known
    resumed_from: str | None = None  # --resume_from_checkpoint, as resolved ("last" -> its folder)
    resumed_from_step: int | None = None
    restored_from: str | None = None  # a finished run re-run: its checkpoint, saved unchanged; the
    # time, speed and loss above are then those recorded when it was trained
    eval_metrics: dict[str, float] = field(default_factory=dict)
    eval_step: int | None = None  # the step whose weights eval_metrics describe (= the saved weights)
    eval_of: str = ""  # "final weights" or "best checkpoint (by eval_loss)" (--load_best_model_at_end)
    reward_mean: float | None = None
    reward_std: float | None = None
    reward_stats_responses: int | None = None  # how many training responses reward_mean/std were measured on
    alpha: float = 1.0  # the saved model's: it outputs alpha * r (alpha * (r - mean) / std when normalizing)
    normalize_rewards: bool = False  # the saved model's config says so (with reward_mean / reward_std)
    skipped: str = "no rows skipped"
    truncation: str = ""
    skipped_identical: int = 0  # training pairs / ranked groups left out: responses identical once encoded
    eval_skipped_identical: int = 0  # the same, held out
    eval_overlap: int = 0  # held-out rows that are also training rows (same texts)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    hardware: str = ""
    target_mean: float | None = None  # mse: the training targets' mean and std, which the loss is
    target_std: float | None = None  # standardized by (train_loss and eval_loss are MSE / std²)
    data: str | None = None  # --data as given (a local path made absolute) and its --split: `evaluate
    data_split: str | None = None  # --calibrate` tells by them when T is fitted on the training data
    eval_data: str | None = None  # --eval-data, as `data` (None: held-out rows split off --data, or none)
    eval_split: str | None = None  # --eval-split: the card names it with eval_data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        unit = {"pairwise": "pairs", "mse": "rows", "ranking": "groups"}[self.objective]
        one = unit.removesuffix("s")  # _count adds the s back unless the count is 1: "on 1 pair"
        lines = [
            f"Trained {'an' if self.objective == 'mse' else 'a'} {self.objective} reward model on {_count(self.train_rows, one)} ({self.detected_layout}).",
            self._steps_line(unit),
        ]
        if self.eval_metrics:
            shown = ", ".join(f"{k.removeprefix('eval_')} {_held_out_figure(k.removeprefix('eval_'), v)}"
                              for k, v in self.eval_metrics.items()
                              if k.removeprefix("eval_") in {"accuracy", "mean_margin", "rmse", "top1_accuracy",
                                                             "pairwise_accuracy", "loss"})
            precision = str(self.hyperparameters.get("precision", ""))
            note = (f" (scored in the training precision, {precision.split(',')[0]}; `rewardkit evaluate` scores "
                    "in fp32 and can differ by a few examples)" if "autocast" in precision else "")
            which = f", {self.eval_of} at step {self.eval_step}" if self.eval_of and self.eval_step is not None else ""
            lines.append(f"  Held-out ({_count(self.eval_rows, one)}{which}): {shown}{note}.")
            if self.eval_overlap:
                lines.append(f"  Warning: {self.eval_overlap} of the {_count(self.eval_rows, 'held-out ' + one)} "
                             f"{'is' if self.eval_overlap == 1 else 'are'} also in the training data, so these "
                             "figures are not an independent check.")
        if self.target_std == 0:
            lines.append(f"  Targets: all {self.target_mean:.4g} (std 0, so nothing to standardize: the losses are plain "
                         "MSE); rmse is in the targets' units, as are the saved model's raw rewards.")
        elif self.target_std is not None:
            lines.append(f"  Targets: mean {self.target_mean:.4g}, std {self.target_std:.4g}; the losses are MSE on "
                         "standardized targets (MSE / std²: 1.0 = no better than predicting the mean), rmse is in "
                         "the targets' units, as are the saved model's raw rewards.")
        if self.reward_mean is not None:
            lines.append(self._reward_stats_line())
        lines.append(self._reading_line())
        source = f" (from {self.max_length_source})" if self.max_length_source else ""
        lines.append(f"  Truncation at {self.max_length} tokens{source}: {self.truncation}. Data: {self.skipped}.")
        if self.skipped_identical or self.eval_skipped_identical:
            lines.append(f"  Identical inputs: skipped {self._identical_counts(unit)} whose responses encode to the "
                         f"same tokens at {self.max_length} tokens (raise --max-length if they differ after the cut).")
        lines.append(f"  Model saved to {self.output_dir} (loads with AutoModel.from_pretrained(..., "
                     "trust_remote_code=True)).")
        return "\n".join(lines)

    def _reward_stats_line(self) -> str:
        """Where the training responses' raw rewards lay. No spread is said as it is: the config then
        holds no statistics (`fit.store_reward_stats`), where a stand-in std of 1 was printed as "std 1"."""
        measured = (_count(self.reward_stats_responses, "training response") if self.reward_stats_responses
                    else "training responses")  # a sample, not all
        if self.reward_std != 0:
            return (f"  Raw rewards on {measured}: mean {self.reward_mean:.4g}, std {self.reward_std:.4g} "
                    "(stored in config.json as reward_mean / reward_std).")
        what = (f"Raw reward on {measured}: {self.reward_mean:.4g}, so no spread" if self.reward_stats_responses == 1
                else f"Raw rewards on {measured}: all {self.reward_mean:.4g} (std 0)")
        return (f"  {what}; config.json stores no reward_mean / reward_std, and normalization, which divides by "
                "the std, is unavailable.")

    def _reading_line(self) -> str:
        """How to read the figures above: what a raw reward and a margin mean, at T = 1 (nothing is
        calibrated at training time), and how alpha (and normalization) scale the model's output. The
        summary printed rewards and `mean_margin` with no word on them; `rewardkit demo` said it after
        the summary, plain `train` never."""
        divisor = self.alpha / self.reward_std if self.normalize_rewards and self.reward_std else self.alpha
        output = (f"alpha x (r - reward_mean) / reward_std, alpha = {self.alpha:g}" if self.normalize_rewards
                  else f"alpha x r, alpha = {self.alpha:g}")
        if self.objective == "mse":
            back = (f"r = s x {self.reward_std:.4g} / {self.alpha:g} {'-' if self.reward_mean < 0 else '+'} "
                    f"{abs(self.reward_mean):.4g}" if self.normalize_rewards and self.reward_std else f"r = s / {self.alpha:g}")
            back = "" if back == "r = s / 1" else f" ({back})"  # at alpha 1, not normalized, s is r
            return (f"  Reading the rewards: the raw reward r predicts the annotation, in the targets' units; the model "
                    f"outputs s = {output}{back}.")
        margin = " (held-out mean_margin is the mean r_chosen - r_rejected)" if "eval_mean_margin" in self.eval_metrics else ""
        return ("  Reading the rewards: a raw reward r means nothing alone; for two responses to one prompt, "
                "P(a preferred to b) = sigmoid((r_a - r_b) / T) with T = 1, uncalibrated (`rewardkit evaluate "
                f"--calibrate` fits T on held-out pairs): a margin of 1{margin} means P = 0.73. The model outputs "
                f"s = {output}, so P(a preferred to b) = sigmoid((s_a - s_b) / {divisor:.4g}).")

    def _steps_line(self, unit: str) -> str:
        """Steps, epochs, time, speed and loss, saying which steps the time and loss are of: a
        resumed call's own (the summary once read as if the whole run took them), or, for a
        re-run of a finished run, those recorded when its weights were trained."""
        line = f"  {_count(self.steps, 'step')}, {self.epochs:g} epoch(s)"
        if self.restored_from:
            line += (f"; nothing left to train: {Path(self.restored_from).name} had reached the end, its weights "
                     "are saved unchanged")
            figures = self._figures(unit)
            return line + (f". When they were trained: {figures}." if figures else
                           ". The time and loss of their training were not recorded.")
        if self.resumed_from:
            step = f" (step {self.resumed_from_step})" if self.resumed_from_step is not None else ""
            return f"{line}, resumed from {Path(self.resumed_from).name}{step}: {self._figures(unit)}."
        return f"{line} {self._figures(unit)}."

    def _figures(self, unit: str) -> str:
        """'steps 5-8 in 1.6 s (...): 12.00 pairs/s of training; mean training loss 0.4208 over steps 5-8'."""
        span = self._loss_span()
        parts = []
        if self.seconds is not None:
            ran = f"{span} ran in " if self.resumed_from and span else "in "
            parts.append(f"{ran}{format_seconds(self.seconds)}"
                         + (f" ({format_seconds(self.eval_seconds)} of it held-out evaluation)" if self.eval_seconds else "")
                         + (f": {self.examples_per_second:.2f} {unit}/s of training" if self.examples_per_second
                            else ""))
        if math.isfinite(self.train_loss) or not self.restored_from:
            parts.append(f"mean training loss {self.train_loss:.4f}" + (f" over {span}" if span else ""))
        return "; ".join(parts)

    def _loss_span(self) -> str:
        """'the 8 steps' or 'steps 5-8': the steps this call ran (transformers' loss is their mean)."""
        if self.steps_this_call is None:
            return ""
        if self.steps_this_call >= self.steps:
            return f"the {_count(self.steps, 'step')}"
        first = self.steps - self.steps_this_call + 1
        return f"step {first}" if first == self.steps else f"steps {first}-{self.steps}"

    def _identical_counts(self, unit: str) -> str:
        """'18 training pairs and 6 held-out pairs', leaving out a zero."""
        counts = [f"{count} {what} {unit.removesuffix('s') if count == 1 else unit}"
                  for count, what in ((self.skipped_identical, "training"), (self.eval_skipped_identical, "held-out"))
                  if count]
        return " and ".join(counts)


def _count(number: int, noun: str) -> str:
    """'1 step', '8 steps'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _held_out_figure(name: str, value: float) -> str:
    """Shares and losses to 4 decimals; `mean_margin` and `rmse`, which are in the rewards' (or the
    targets') own units, to 4 significant digits: at 4 decimals a margin of 4.9e-05 read "0.0000", and
    the RMSE of targets rated in thousandths "0.0000", as if the model had none."""
    return f"{value:.4g}" if name in ("mean_margin", "rmse") else f"{value:.4f}"
