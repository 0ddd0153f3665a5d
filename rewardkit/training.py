"""`RewardTrainer`: transformers' Trainer with the three reward-model objectives.

- pairwise: chosen and rejected in one batch of 2B rows, split with `chunk(2)`, Bradley-Terry loss
  (with the per-pair margin when the data has one and `use_margin` is on);
- mse: the raw reward regressed on annotated rewards;
- ranking: K responses per prompt in one forward pass, mean loss over all K-choose-2 pairs.

Evaluation returns per-example rewards from `prediction_step`, so `compute_metrics` reports what a
user cares about: pairwise accuracy and margin, RMSE, ranking top-1 and pairwise accuracy.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling_reward import mse_loss, pairwise_loss, ranking_loss
from rewardkit.features import COLLATORS

logger = logging.getLogger(__name__)


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from (seed, epoch) alone, not from the global RNG.

    The global RNG is restored from the checkpoint on resume, mid-epoch, so an order drawn from it
    would differ from the uninterrupted run's; this one is the same, so a resumed run ends with the
    same weights."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        from transformers.trainer_pt_utils import get_length_grouped_indices

        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only be
    read by setting it, which briefly affects files other threads create)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def apply_umask_permissions(folder: Path) -> None:
    """Give the files of a saved model the permissions a normal file write would (0644 under the
    usual umask 022). transformers 5.23 writes model.safetensors through a private temporary file,
    so it lands as 0600: readable by its owner only, which breaks sharing the folder (a shared
    cache, a container running as another user) while every other file is readable."""
    umask = current_umask()
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


class _ReadableCheckpoints(TrainerCallback):
    """Checkpoint folders get the same file permissions as the final model folder."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            apply_umask_permissions(folder)


def _group_matrix(rewards: torch.Tensor, group_sizes: torch.Tensor) -> torch.Tensor:
    """Flat (sum K,) rewards -> (G, K_max), groups padded with zeros at the end."""
    groups = torch.split(rewards, group_sizes.tolist())
    return pad_sequence(list(groups), batch_first=True, padding_value=0.0)


class RewardTrainer(Trainer):
    """Trainer for `RewardModel` on features from `rewardkit.features.encode_rows`.

    Args:
        objective: "pairwise", "mse" or "ranking".
        Other arguments are Trainer's; `processing_class` (the tokenizer) is required: it pads the
        batches and is saved into every checkpoint so each one loads on its own.
    """

    def __init__(self, *args: Any, objective: str, **kwargs: Any) -> None:
        if objective not in COLLATORS:
            raise ValueError(f"Unknown objective {objective!r}; expected one of {sorted(COLLATORS)}.")
        tokenizer = kwargs.get("processing_class")
        if tokenizer is None:
            raise ValueError("RewardTrainer needs `processing_class` (the tokenizer).")
        kwargs.setdefault("data_collator", COLLATORS[objective](tokenizer))
        kwargs.setdefault("compute_metrics", METRICS[objective])
        super().__init__(*args, **kwargs)
        self.add_callback(_ReadableCheckpoints())
        self.objective = objective
        self._train_metrics: dict[str, list[float]] = defaultdict(list)

    # ------------------------------------------------------------------ batching

    def _get_train_sampler(self, train_dataset=None):
        """Length grouping from our precomputed `length` (pairs have no single `input_ids`)."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and len(dataset) and "length" in dataset[0]:
            return SeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=[feature["length"] for feature in dataset],
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        """Longest first, deterministic: batches of similar length waste little on padding, and the
        metrics (computed over the whole set, predictions paired with their labels) ignore order."""
        if len(eval_dataset) and "length" in eval_dataset[0]:
            order = sorted(range(len(eval_dataset)), key=lambda i: -eval_dataset[i]["length"])
            return order
        return torch.utils.data.SequentialSampler(eval_dataset)

    # ------------------------------------------------------------------ losses

    def _rewards(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        model_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        outputs = model(**model_inputs)
        rewards = outputs["rewards"] if "rewards" in outputs else outputs["logits"]
        return rewards[:, 0], outputs  # (N,)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rewards, outputs = self._rewards(model, inputs)
        if self.objective == "pairwise":
            chosen, rejected = rewards.chunk(2)  # (B,), (B,)
            margin = inputs.get("margin") if getattr(self.args, "use_margin", True) else None
            loss = pairwise_loss(chosen, rejected, margin)
            self._record(accuracy=(chosen > rejected).float().mean(), margin=(chosen - rejected).mean())
            extras = {"rewards_chosen": chosen, "rewards_rejected": rejected}
        elif self.objective == "mse":
            loss = mse_loss(rewards, inputs["labels"])
            extras = {"rewards": rewards}
        else:
            matrix = _group_matrix(rewards, inputs["group_sizes"])  # (G, K_max)
            loss = ranking_loss(matrix, inputs["group_sizes"])
            self._record(top1=(matrix.argmax(dim=1) == 0).float().mean())
            extras = {"rewards": matrix}
        if return_outputs:
            return loss, extras
        return loss

    def _record(self, **values: torch.Tensor) -> None:
        if self.model.training:
            for name, value in values.items():
                self._train_metrics[name].append(float(value.detach()))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Merge the running training metrics (accuracy, margin) into the Trainer's logs."""
        if self._train_metrics and "loss" in logs:
            for name, values in self._train_metrics.items():
                logs[f"train_{name}"] = round(sum(values) / len(values), 4)
            self._train_metrics.clear()
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ evaluation

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, extras = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        if self.objective == "pairwise":
            predictions = torch.stack([extras["rewards_chosen"], extras["rewards_rejected"]], dim=1)  # (B, 2)
            preferred = torch.zeros(len(predictions), dtype=torch.long, device=predictions.device)  # column 0 wins
            return loss, predictions.detach(), preferred
        if self.objective == "mse":
            return loss, extras["rewards"].detach(), inputs["labels"]
        return loss, extras["rewards"].detach(), inputs["group_sizes"]


# ---------------------------------------------------------------------- metrics during training


def pairwise_eval_metrics(prediction: EvalPrediction) -> dict[str, float]:
    rewards = np.asarray(prediction.predictions, dtype=np.float64)  # (N, 2)
    margins = rewards[:, 0] - rewards[:, 1]
    return {"accuracy": float(np.mean(margins > 0) + 0.5 * np.mean(margins == 0)), "mean_margin": float(margins.mean())}


def mse_eval_metrics(prediction: EvalPrediction) -> dict[str, float]:
    predicted = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    target = np.asarray(prediction.label_ids, dtype=np.float64).reshape(-1)
    return {"rmse": float(np.sqrt(np.mean((predicted - target) ** 2)))}


def ranking_eval_metrics(prediction: EvalPrediction) -> dict[str, float]:
    matrix = np.asarray(prediction.predictions, dtype=np.float64)  # (G, K_max), padded
    sizes = np.asarray(prediction.label_ids).reshape(-1).astype(int)
    top1, correct, pairs = 0, 0, 0
    for row, size in zip(matrix, sizes):
        values = row[:size]
        top1 += int(np.argmax(values) == 0)
        upper = np.triu_indices(size, k=1)
        correct += int(np.sum(values[upper[0]] > values[upper[1]]))
        pairs += len(upper[0])
    return {"top1_accuracy": top1 / max(len(sizes), 1), "pairwise_accuracy": correct / max(pairs, 1)}


METRICS = {"pairwise": pairwise_eval_metrics, "mse": mse_eval_metrics, "ranking": ranking_eval_metrics}
