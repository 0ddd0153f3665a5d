"""`RewardTrainer`: transformers' Trainer with the three reward-model objectives.

- pairwise: chosen and rejected in one batch of 2B rows, split with `chunk(2)`, Bradley-Terry loss
  (with the per-pair margin when the data has one and `use_margin` is on);
- mse: the raw reward regressed on annotated rewards, on standardized targets (see
  `target_statistics`): the loss is MSE / variance of the training targets, the fresh head starts
  at their mean and scale, and the head's gradient and learning rate are multiplied by their std,
  which is training the head in standardized units (r = mean + std * h) with the weights saved in the
  targets' own units: a model trained on 10 * y + 50 gives 10 * r + 50 of one trained on y;
- ranking: K responses per prompt in one forward pass, mean loss over all K-choose-2 pairs.

Evaluation returns per-example rewards from `prediction_step`, so `compute_metrics` reports what a
user cares about: pairwise accuracy and margin, RMSE, ranking top-1 and pairwise accuracy.

On a multi-core CPU each training batch is cut in two halves (whole pairs / rows / groups) that run
forward and backward at once, one per thread, their losses weighted to the whole batch's mean
(`cpu_workers.py` has the measurements; `--no-cpu-split-batches` turns it off).
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import EvalPrediction, Trainer, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from modeling_reward import mse_loss, pairwise_loss, ranking_loss
from rewardkit.cpu_workers import cpu_worker_split, map_in_workers
from rewardkit.features import COLLATORS, MODEL_INPUT_KEYS
from rewardkit.memory import memory_callback

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


_ROW_KEYS = frozenset(MODEL_INPUT_KEYS)
_EXAMPLE_KEYS = frozenset({"margin", "labels", "group_sizes"})  # one value per pair / row / group


def halve_batch(inputs: dict[str, torch.Tensor], objective: str) -> list[tuple[dict[str, torch.Tensor], float]]:
    """A collated batch cut into two parts of whole examples, each with its share of the batch loss:
    pairs (pairwise), rows (mse) or groups (ranking, weighted by their K-choose-2 comparisons).

    The cut balances the two parts' padded tokens (rows x longest row), not their example counts,
    so that on batches of mixed lengths the two threads finish closer together. (On HH-RLHF's
    length-grouped batches it changes little: whole pairs are the unit, and the threads still wait
    for each other ~5% of a step.)
    Each part drops the padding columns none of its rows use (the model derives positions from
    the attention mask, so no reward changes). One part when the batch has a single example or a
    column this function does not know how to cut."""
    if "attention_mask" not in inputs or not set(inputs) <= _ROW_KEYS | _EXAMPLE_KEYS:
        return [(inputs, 1.0)]
    if objective == "pairwise":
        pairs = inputs["input_ids"].shape[0] // 2
        example_rows = [[i, pairs + i] for i in range(pairs)]  # chosen rows first, then rejected
        loss_units = [1] * pairs
    elif objective == "mse":
        example_rows = [[i] for i in range(inputs["input_ids"].shape[0])]
        loss_units = [1] * len(example_rows)
    else:
        sizes = inputs["group_sizes"].tolist()
        starts = [sum(sizes[:g]) for g in range(len(sizes))]
        example_rows = [list(range(start, start + k)) for start, k in zip(starts, sizes)]
        loss_units = [k * (k - 1) // 2 for k in sizes]
    if len(example_rows) < 2:
        return [(inputs, 1.0)]
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    cut = _balanced_cut([[lengths[r] for r in rows] for rows in example_rows])
    parts = []
    for examples in (range(0, cut), range(cut, len(example_rows))):
        row_index = torch.tensor([r for e in examples for r in example_rows[e]], dtype=torch.long)
        if objective == "pairwise":  # keep "chosen rows, then rejected rows" inside the part
            row_index = torch.cat([row_index[0::2], row_index[1::2]])
        example_index = torch.tensor(list(examples), dtype=torch.long)
        part = {key: value[row_index] if key in _ROW_KEYS else value[example_index] for key, value in inputs.items()}
        weight = sum(loss_units[e] for e in examples) / sum(loss_units)
        parts.append((_without_padding_columns(part), weight))
    return parts


def _balanced_cut(example_lengths: list[list[int]]) -> int:
    """Index that splits the examples (each a list of row lengths) into two non-empty runs so that
    the larger of their padded-token counts (rows x longest row) is smallest; the most even cut
    among ties."""
    def cost(examples: list[list[int]]) -> int:
        rows = [length for lengths in examples for length in lengths]
        return len(rows) * max(rows)

    count = len(example_lengths)
    return min(range(1, count), key=lambda cut: (max(cost(example_lengths[:cut]), cost(example_lengths[cut:])),
                                                  abs(2 * cut - count)))


def _without_padding_columns(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Token columns cut to the span some row attends to (either padding side)."""
    used = batch["attention_mask"].any(dim=0).nonzero()
    if used.numel() == 0:
        return batch
    first, last = int(used[0]), int(used[-1]) + 1
    return {key: value[:, first:last] if key in _ROW_KEYS else value for key, value in batch.items()}


def examples_in_batch(inputs: dict[str, torch.Tensor], objective: str) -> int:
    """Pairs (pairwise), rows (mse) or groups (ranking) in a collated batch. Counted as they are
    trained because transformers' samples/s assumes every batch full (steps x batch size), which
    overstated the speed of a run whose epochs end in a short batch (20 pairs in batches of 16 and
    --max_steps 3: 36 pairs trained, 48 counted)."""
    if objective == "ranking":
        return len(inputs["group_sizes"])
    rows = inputs["input_ids"].shape[0]
    return rows // 2 if objective == "pairwise" else rows


def comparisons_in_batch(inputs: dict[str, torch.Tensor], objective: str) -> int:
    """What a batch's loss is the mean over: pairs (pairwise), rows (mse) or within-group pairs
    (ranking)."""
    if objective == "ranking":
        return within_group_pairs(inputs["group_sizes"])
    return examples_in_batch(inputs, objective)


def _group_matrix(rewards: torch.Tensor, group_sizes: torch.Tensor) -> torch.Tensor:
    """Flat (sum K,) rewards -> (G, K_max), groups padded with zeros at the end."""
    groups = torch.split(rewards, group_sizes.tolist())
    return pad_sequence(list(groups), batch_first=True, padding_value=0.0)


def within_group_pairs(group_sizes: torch.Tensor) -> int:
    """K-choose-2 summed over groups: the pairs the ranking loss averages over."""
    return int((group_sizes * (group_sizes - 1)).sum()) // 2


def target_statistics(features: list[dict]) -> tuple[float, float]:
    """(mean, std) of the annotated rewards of mse training features, the scale training
    standardizes them by. A std of 0 (every target the same) is taken as 1: nothing to scale."""
    targets = np.asarray([float(feature["reward"]) for feature in features], dtype=np.float64)
    if targets.size == 0:
        raise ValueError("no mse training rows to take the target statistics from.")
    std = float(targets.std())
    return float(targets.mean()), std if std > 0 else 1.0


def head_parameter_names(model) -> list[str]:
    """Names of the trainable parameters of the reward head `score` (its PEFT `modules_to_save`
    copy under LoRA, not the frozen original)."""
    names = []
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        if parameter.requires_grad and parts[-1] in ("weight", "bias") and (
                parts[:-1] == ["score"] or parts[-2:-1] == ["score"] or parts[-4:-2] == ["score", "modules_to_save"]):
            names.append(name)
    return names


@torch.no_grad()
def init_head_to_targets(model, mean: float, std: float) -> None:
    """A fresh head set to the mse targets' scale: weights times `std`, bias `mean`, so the first
    rewards are the target mean plus noise of the usual relative size (the zero-bias, 0.02-scale
    head would otherwise have to walk, one learning-rate step at a time, to targets around 5 or
    50). Call it before LoRA wraps the model, and only on a head that has not been trained."""
    head = model.score
    head.weight.mul_(std)
    head.bias.fill_(mean)


def pairwise_win_rate(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Share of pairs whose chosen reward is higher, an exact tie counting ½, as the held-out
    accuracy and `rewardkit evaluate` count it (`chosen > rejected` alone counted a tie as wrong, so
    train_accuracy read lower than the held-out accuracy of the same rewards)."""
    return (chosen > rejected).float().mean() + 0.5 * (chosen == rejected).float().mean()


def ranking_top1(matrix: torch.Tensor, group_sizes: torch.Tensor) -> torch.Tensor:
    """Share of groups whose best response (column 0) gets the highest reward; one that shares the
    top with k - 1 others counts 1/k, as in `metrics.ranking_metrics` (argmax would count such a tie
    as a win for column 0). The padded columns of shorter groups are masked first: their 0.0 would
    otherwise "win" over all-negative rewards."""
    columns = torch.arange(matrix.shape[1], device=matrix.device)
    padded = columns.unsqueeze(0) >= group_sizes.to(matrix.device).unsqueeze(1)
    masked = matrix.masked_fill(padded, float("-inf"))
    at_top = masked == masked.max(dim=1, keepdim=True).values  # (G, K)
    return (at_top[:, 0].float() / at_top.sum(dim=1).float()).mean()


class RewardTrainer(Trainer):
    """Trainer for `RewardModel` on features from `rewardkit.features.encode_rows`.

    Args:
        objective: "pairwise", "mse" or "ranking".
        target_scale: mse only: (mean, std) the targets are standardized by; by default
            `target_statistics` of the training data. The loss is then MSE / std² and the head
            gets `std` times its gradient and learning rate (its weight decay divided by `std`), which
            trains the head in standardized units; start a fresh head with `init_head_to_targets`.
        Other arguments are Trainer's; `processing_class` (the tokenizer) is required: it pads the
        batches and is saved into every checkpoint so each one loads on its own.
    """

    def __init__(self, *args: Any, objective: str, target_scale: tuple[float, float] | None = None,
                 **kwargs: Any) -> None:
        if objective not in COLLATORS:
            raise ValueError(f"Unknown objective {objective!r}; expected one of {sorted(COLLATORS)}.")
        tokenizer = kwargs.get("processing_class")
        if tokenizer is None:
            raise ValueError("RewardTrainer needs `processing_class` (the tokenizer).")
        kwargs.setdefault("data_collator", COLLATORS[objective](tokenizer))
        kwargs.setdefault("compute_metrics", METRICS[objective])
        super().__init__(*args, **kwargs)
        # Our losses are means over the batch. Trainer would otherwise see `**kwargs` in the model's
        # forward, count the `labels` of an mse batch as "items", take the loss as already divided
        # for gradient accumulation, and skip its division: gradients N times too large with N steps.
        self.model_accepts_loss_kwargs = False
        self.add_callback(_ReadableCheckpoints())
        release = memory_callback(getattr(self.args, "malloc_trim_steps", 0), on_cpu=self.args.device.type == "cpu")
        if release is not None:
            self.add_callback(release)
        self.objective = objective
        self._optimizer_given = (kwargs.get("optimizers") or (None, None))[0] is not None
        if objective == "mse" and target_scale is None and self.train_dataset is not None:
            if not isinstance(self.train_dataset, Sized):  # streaming: reading it here would consume it
                logger.warning("mse on a dataset without a length (streaming): its targets are not "
                               "standardized; pass target_scale=(mean, std) to standardize them.")
            elif len(self.train_dataset):
                target_scale = target_statistics(self.train_dataset)
        if target_scale is not None and not (math.isfinite(target_scale[0]) and math.isfinite(target_scale[1])
                                             and target_scale[1] > 0):
            raise ValueError(f"target_scale must be (finite mean, std > 0), got {target_scale!r}.")
        self.target_scale = (float(target_scale[0]), float(target_scale[1])) if objective == "mse" and target_scale else None
        self._train_metrics: dict[str, list] = defaultdict(lambda: [0.0, 0])  # name -> [weighted sum (a tensor once added to), count]
        self.examples_trained = 0  # pairs / rows / groups this process trained on in the last `train()` call
        self._eval_loss_total: list | None = None  # [loss x comparisons, comparisons] while evaluation_loop runs

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

    @property
    def _head_std(self) -> float | None:
        """The std the mse head's gradient and learning rate are scaled by; None when nothing is
        scaled (another objective, no standardization, or a std of 1)."""
        if self.target_scale is None or self.target_scale[1] == 1.0:
            return None
        return self.target_scale[1]

    def train(self, *args: Any, **kwargs: Any):
        """Trainer's training; for mse the head's gradients are multiplied by the targets' std while
        it runs (hooks removed after), so gradient clipping and the logged grad_norm see the
        gradient of a head in standardized units, as the backbone's already are."""
        self.examples_trained = 0
        handles = []
        std = self._head_std
        if std is not None:
            names = set(head_parameter_names(self.model))
            handles = [p.register_hook(lambda grad: grad * std) for n, p in self.model.named_parameters() if n in names]
        try:
            return super().train(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint, after the callbacks' `before_checkpoint_save(args, state)` (rank 0;
        the other ranks wait): `rewardkit.resume.EarlierRunLeftovers` removes an earlier run's
        checkpoint-N/ there, which the Trainer otherwise saved over, keeping its files beside this run's."""
        for callback in self.callback_handler.callbacks:
            if hasattr(callback, "before_checkpoint_save") and self.is_world_process_zero():
                callback.before_checkpoint_save(self.args, self.state)
        self.accelerator.wait_for_everyone()
        super()._save_checkpoint(model, trial)

    def create_optimizer(self, model=None):
        """Trainer's optimizer, with the mse head's parameters in groups of their own at `std` times
        the learning rate (weight decay / `std`). With the std x gradient of `train`, this is, step
        for step, the update of a head in standardized units (h, with r = mean + std * h) mapped
        back to the targets' units."""
        given = self._optimizer_given  # `optimizers=`: its groups, and any scheduler built on them, are
        optimizer = super().create_optimizer(model)  # the caller's; left as they are
        std = self._head_std
        if given and std is not None:
            logger.warning("mse with an optimizer passed in: the head's learning rate is not multiplied by the "
                           "targets' std (%.4g); give the head's parameters that lr yourself.", std)
        if given or std is None or not isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        opt_model = self.model if model is None else model
        names = set(head_parameter_names(opt_model))
        head = {id(p) for n, p in opt_model.named_parameters() if n in names}
        if any(optimizer.state.values()) or not head:
            return optimizer
        added = []
        for group in list(optimizer.param_groups):
            moved = [p for p in group["params"] if id(p) in head]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in head]
                added.append({**{k: v for k, v in group.items() if k != "params"}, "params": moved,
                              "lr": group["lr"] * std, "weight_decay": group.get("weight_decay", 0.0) / std})
        for group in added:
            optimizer.add_param_group(group)
        return optimizer

    # ------------------------------------------------------------------ losses

    def _rewards(self, model, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        model_inputs = {k: v for k, v in inputs.items() if k in MODEL_INPUT_KEYS}
        outputs = model(**model_inputs)
        rewards = outputs["rewards"] if "rewards" in outputs else outputs["logits"]
        return rewards[:, 0], outputs  # (N,)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Ranking: the within-group pairs of all micro-batches of one optimizer step (this
        process's), so that each micro-batch's loss is weighted by its share of them (see
        `_accumulation_factor`). Other objectives: Trainer's count (which our losses ignore)."""
        if self.objective == "ranking" and batch_samples and all("group_sizes" in b for b in batch_samples):
            return sum(within_group_pairs(b["group_sizes"]) for b in batch_samples)
        return super()._get_num_items_in_batch(batch_samples, device)

    def _accumulation_factor(self, inputs, num_items_in_batch) -> float:
        """Ranking with gradient accumulation: (pairs of this micro-batch) x (accumulation steps) /
        (pairs of the whole step). Trainer divides each micro-batch's mean loss by the steps, which
        weighs a micro-batch of small groups as much as one of large groups; times this factor, the
        step's gradient is that of the mean over all its pairs, as one large batch would give. 1.0
        elsewhere."""
        if self.objective != "ranking" or not isinstance(num_items_in_batch, int) or num_items_in_batch <= 0:
            return 1.0
        return within_group_pairs(inputs["group_sizes"]) * self.current_gradient_accumulation_steps / num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, extras, metrics, count = self._loss(model, inputs)
        if model.training:
            loss = loss * self._accumulation_factor(inputs, num_items_in_batch)
        self._record(metrics, count)
        if return_outputs:
            return loss, extras
        return loss

    def _loss(self, model, inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        """(loss, per-example rewards, training metrics, how many examples the metrics average)."""
        rewards, outputs = self._rewards(model, inputs)
        if self.objective == "pairwise":
            chosen, rejected = rewards.chunk(2)  # (B,), (B,)
            margin = inputs.get("margin") if getattr(self.args, "use_margin", True) else None
            loss = pairwise_loss(chosen, rejected, margin)
            metrics = {"accuracy": pairwise_win_rate(chosen, rejected), "margin": (chosen - rejected).mean()}
            return loss, {"rewards_chosen": chosen, "rewards_rejected": rejected}, metrics, len(chosen)
        if self.objective == "mse":
            labels = inputs["labels"]
            if self.target_scale is not None:  # standardized: MSE / std², 1.0 = no better than the mean
                mean, std = self.target_scale
                return mse_loss((rewards - mean) / std, (labels - mean) / std), {"rewards": rewards}, {}, len(rewards)
            return mse_loss(rewards, labels), {"rewards": rewards}, {}, len(rewards)
        matrix = _group_matrix(rewards, inputs["group_sizes"])  # (G, K_max)
        loss = ranking_loss(matrix, inputs["group_sizes"])
        metrics = {"top1": ranking_top1(matrix.detach(), inputs["group_sizes"])}
        return loss, {"rewards": matrix}, metrics, len(matrix)

    def _record(self, metrics: dict[str, torch.Tensor], count: int) -> None:
        """Running training metrics, weighted by the examples they average (a short last batch
        counts for what it holds). Summed as tensors, read at logging time: a float() here would
        wait for the GPU at every step."""
        if self.model.training:
            for name, value in metrics.items():
                total = self._train_metrics[name]
                total[0] = total[0] + value.detach() * count
                total[1] += count

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Merge the running training metrics (accuracy, margin) into the Trainer's logs."""
        if self._train_metrics and "loss" in logs:
            for name, (weighted_sum, count) in self._train_metrics.items():
                logs[f"train_{name}"] = round(float(weighted_sum) / count, 4)
            self._train_metrics.clear()
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ two halves at once on CPU

    def training_step(self, model, inputs, num_items_in_batch=None):
        """On a multi-core CPU: the batch's two halves forward and backward at once, one thread
        each (see `cpu_workers.py`); the gradient is the whole batch's (losses weighted by each
        half's share). Anywhere else, or when `_can_halve` says no: Trainer's own step."""
        self.examples_trained += examples_in_batch(inputs, self.objective)
        workers, threads_each = cpu_worker_split(self.args.device, 2)  # GPU or one thread: no work below
        halves = halve_batch(inputs, self.objective) if workers > 1 and self._can_halve(model) else []
        if len(halves) < 2:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        steps = self.current_gradient_accumulation_steps / self._accumulation_factor(inputs, num_items_in_batch)

        def forward_backward(half_and_weight):
            half, weight = half_and_weight
            with self.compute_loss_context_manager():
                loss, _, metrics, count = self._loss(model, self._prepare_inputs(half))
            loss = loss * weight / steps  # the Trainer divides by the accumulation steps too
            self.accelerator.backward(loss)
            return loss.detach(), metrics, count

        # The two backward passes add into .grad in whichever order the threads finish: a + b is
        # the same either way, but (earlier + a) + b is not, so gradients accumulated over earlier
        # steps are set aside and added after, in a fixed order (runs stay reproducible).
        params = [p for p in model.parameters() if p.requires_grad]
        earlier = [p.grad for p in params]
        for p in params:
            p.grad = None
        total = torch.zeros(())
        try:
            for loss, metrics, count in map_in_workers(forward_backward, halves, workers, threads_each):
                total = total + loss
                self._record(metrics, count)
        finally:  # also after an error: the earlier steps' gradients are not lost
            for p, grad in zip(params, earlier):
                if grad is not None:
                    p.grad = grad if p.grad is None else grad.add_(p.grad)
        return total

    def _can_halve(self, model) -> bool:
        """Halve only where Trainer's step is plain forward + backward (one process, no fp16 loss
        scaling, no gradient checkpointing, no custom loss function, no LOMO) and the
        forward draws no random numbers (dropout off), so the halves' order cannot change a run."""
        args = self.args
        return (getattr(args, "cpu_split_batches", True) and self.accelerator.num_processes == 1
                and not args.fp16 and not args.gradient_checkpointing and args.torch_empty_cache_steps is None
                and self.compute_loss_func is None
                and getattr(self, "loss_is_scaled_for_ga", None) is None and "lomo" not in str(args.optim).lower()
                and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()))

    # ------------------------------------------------------------------ evaluation

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        """Trainer's loop, with `<prefix>_loss` the mean over every held-out comparison (pair, row or
        within-group pair), as the training loss is defined. Trainer weighs each batch's mean loss
        by the batch's examples: right for pairs and rows, but for ranking it counted groups, so a
        batch of three K=2 groups (3 pairs) weighed as much as three K=6 groups (45 pairs) and the
        held-out loss changed with --per_device_eval_batch_size. (A non-finite total is left to
        Trainer's figure, which filters non-finite batches.)"""
        self._eval_loss_total = running = [torch.zeros((), device=self.args.device), 0]
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                             ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._eval_loss_total = None
        total, units = running
        units = torch.tensor(float(units), device=total.device)
        if self.accelerator.num_processes > 1:  # every process evaluated its share of the batches
            total, units = self.accelerator.reduce(total, "sum"), self.accelerator.reduce(units, "sum")
        key = f"{metric_key_prefix}_loss"
        if float(units) > 0 and math.isfinite(float(total)) and key in output.metrics:
            output.metrics[key] = float(total / units)
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, extras = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        running = self._eval_loss_total
        if running is not None:  # weighted by the comparisons the batch's mean loss is over
            units = comparisons_in_batch(inputs, self.objective)
            running[0] = running[0] + loss.to(running[0]) * units
            running[1] += units
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
    """Top-1 and pairwise accuracy as `rewardkit evaluate` defines them (rewardkit.metrics: a tie
    counts ½, a tie at the top 1/k), so the card shows one meaning per name."""
    from rewardkit.metrics import ranking_metrics

    matrix = np.asarray(prediction.predictions, dtype=np.float64)  # (G, K_max), padded
    sizes = np.asarray(prediction.label_ids).reshape(-1).astype(int)
    metrics = ranking_metrics([row[:size] for row, size in zip(matrix, sizes)])
    return {"top1_accuracy": metrics["top1_accuracy"], "pairwise_accuracy": metrics["pairwise_accuracy"]}


METRICS = {"pairwise": pairwise_eval_metrics, "mse": mse_eval_metrics, "ranking": ranking_eval_metrics}
# The names METRICS returns, known before any evaluation runs (--metric_for_best_model is checked against them).
METRIC_NAMES = {"pairwise": ("accuracy", "mean_margin"), "mse": ("rmse",),
                "ranking": ("top1_accuracy", "pairwise_accuracy")}
