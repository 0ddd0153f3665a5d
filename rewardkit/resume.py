"""Resuming a training run, and what a new run in an old --output-dir replaces.

`rewardkit train --resume_from_checkpoint` checks a checkpoint against this run before any data is
read (its kind, backbone, pooling, LoRA flags and trained length), so a mismatch is refused by name
rather than failing in torch's size-mismatch dump or training on silently; re-running a finished
run restores it instead of stepping past the limit. A new run removes the earlier run's checkpoints
and adapter it did not write again, once it succeeds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rewardkit.errors import UserInputError
from rewardkit.features import resolve_max_length
from rewardkit.file_names import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_DIR,
    CHECKPOINT_DATA_FILE,
    REWARD_CONFIG_FILE,
    TRAINER_STATE_FILE,
    read_record,
)
from rewardkit.lora_checkpoint import BACKBONE_SHAPE_KEYS
from rewardkit.training import RewardTrainer
from rewardkit.training_args import RewardTrainingArguments

logger = logging.getLogger(__name__)


def train_from_checkpoint(trainer, checkpoint: str | None):
    """`trainer.train(resume_from_checkpoint=...)`, with torch's bare "loaded state dict contains a
    parameter group that doesn't match the size of optimizer's group" explained: the checkpoint
    trained another set of weights than this run would (its optimizer state is per weight)."""
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    except ValueError as error:
        mismatch = ("doesn't match the size of optimizer's group", "has a different number of parameter groups")
        if not checkpoint or not any(text in str(error) for text in mismatch):
            raise
        raise UserInputError(
            f"{checkpoint} was trained with a different set of trainable weights than this run, so its optimizer "
            "state does not fit: resume with the flags it was trained with (--no-freeze-embeddings if it trained the "
            "word embeddings; --use-lora and the same --lora-target-modules for LoRA). A checkpoint of a rewardkit "
            "version before the word embeddings and BERT's unused pooler were frozen, or an mse checkpoint of a "
            "version before the reward head got optimizer groups of its own (standardized targets), cannot be "
            "resumed: start again, or continue from its weights alone with --base-model CHECKPOINT.") from error


def checkpoint_to_resume(args: RewardTrainingArguments) -> str | None:
    """--resume_from_checkpoint as a folder ('last': the newest in --output-dir, None when there is
    none), checked before any data is read: it must exist and be of the kind this run trains. A
    --use-lora run's checkpoints are PEFT adapters, a full fine-tune's whole models; resumed across,
    transformers failed late with "Can't find a checkpoint index (pytorch_model.bin.index.json or
    model.safetensors.index.json)", which names neither the flag nor the fix."""
    from transformers.trainer_utils import get_last_checkpoint

    resume = args.resume_from_checkpoint
    if resume in ("last", "latest", "true", "True"):
        resume = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
        if resume is None:
            logger.warning("No checkpoint in %s to resume from; starting from scratch.", args.output_dir)
    if not resume:
        return None
    folder = Path(resume)
    if not folder.is_dir():
        raise UserInputError(f"--resume_from_checkpoint {resume}: no such folder (give a checkpoint-N folder, or 'last' "
                             "for the newest in --output-dir).")
    adapter = (folder / ADAPTER_CONFIG_FILE).is_file()
    whole = any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))
    if adapter and not whole and not args.use_lora:
        raise UserInputError(f"{resume} is a LoRA checkpoint (a PEFT adapter): resume it with --use-lora and the LoRA "
                             "flags it was trained with.")
    if whole and not adapter and args.use_lora:
        raise UserInputError(f"{resume} is a full fine-tune's checkpoint, not a LoRA adapter: resume it without "
                             "--use-lora, or start a LoRA run from its weights with --base-model.")
    return str(resume)  # a LoRA checkpoint's flags are checked once the model's config is read


def checkpoint_reward_config_file(folder: Path) -> Path:
    """Where a checkpoint records the RewardConfig its weights were trained as: config.json of a full
    fine-tune, reward_config.json of a LoRA one (`RewardConfigInLoraCheckpoints`)."""

    return folder / (REWARD_CONFIG_FILE if (folder / ADAPTER_CONFIG_FILE).is_file() else "config.json")


def resumed_max_length(checkpoint: str | None, args: RewardTrainingArguments, tokenizer,
                        model_config) -> tuple[int, str] | None:
    """A resumed run without --max-length goes on at the length its checkpoint was trained at
    (`trained_max_length` in its config.json, or reward_config.json for LoRA), not at the base
    model's default: resumed without the flag, a run begun at --max-length 128 trained its remaining
    steps at 512 and saved a model that scores at 512. None when not resuming, when --max-length is
    given (a change of length is the user's to make), or when the checkpoint records none."""
    if not checkpoint or args.max_length is not None:
        return None
    folder = Path(checkpoint)
    recorded = checkpoint_reward_config_file(folder)
    try:
        length = json.loads(recorded.read_text(encoding="utf-8")).get("trained_max_length")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
        return None
    return resolve_max_length(tokenizer, model_config, length), f"the length {folder.name} was trained at"


def check_lora_flags_match(folder: Path, args: RewardTrainingArguments, model_config) -> None:
    """A LoRA checkpoint resumed with other LoRA flags, refused by name (with the checkpoint's values)
    before any data is read: another --lora-r failed in torch's size-mismatch dump of every adapter
    weight, and another --lora-alpha resumed without a word, rescaling the trained adapters' update
    (alpha / r) mid-run. Target modules are compared as the modules they adapt, the default and
    `all-linear` resolved for this backbone: a checkpoint trained on key,value resumed without the
    flag (BERT's default: query,value) loaded silently, its optimizer state on other adapters."""
    saved = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8") or "{}")
    differ = [(flag, saved[key], value) for flag, key, value in (("--lora-r", "r", args.lora_r),
                                                                  ("--lora-alpha", "lora_alpha", args.lora_alpha))
              if key in saved and saved[key] != value]
    if isinstance(saved.get("target_modules"), list):
        from modeling_reward import RewardConfig, RewardModel
        from rewardkit.lora import ALL_LINEAR, adapted_module_paths, resolve_target_modules

        config = model_config if isinstance(model_config, RewardConfig) else RewardConfig(backbone_config=model_config)
        with torch.device("meta"):  # the architecture alone: no weights are read or allocated
            skeleton = RewardModel(config)
        targets = resolve_target_modules(skeleton, args.lora_target_modules)
        if adapted_module_paths(skeleton, saved["target_modules"]) != adapted_module_paths(skeleton, targets):
            how = {None: ", the default", ALL_LINEAR: ", all-linear"}.get(
                args.lora_target_modules and ",".join(args.lora_target_modules), "")
            differ.append(("--lora-target-modules", saved["target_modules"], f"{','.join(targets)}{how}"))
    if differ:
        trained = ", ".join(f"{flag} {','.join(old) if isinstance(old, list) else old} (this run: {new})"
                            for flag, old, new in differ)
        raise UserInputError(f"{folder} was trained with {trained}: resume it with the LoRA flags it was trained with.")


# What a checkpoint's weights were trained as, compared on resume: the backbone's shape
# (BACKBONE_SHAPE_KEYS: another --base-model, or none given, failed in torch's size-mismatch dump
# after the data was read) and the pooling.


def check_checkpoint_model_matches(folder: Path, args: RewardTrainingArguments, base_model: str, model_config) -> None:
    """A checkpoint resumed onto another backbone or with another pooling, refused by name before any
    data is read. A full fine-tune's checkpoint records its RewardConfig in config.json, a LoRA
    one in reward_config.json (`RewardConfigInLoraCheckpoints`; older LoRA checkpoints have none,
    and are not checked). Resumed without the --pooling it trained with, a `mean` checkpoint went
    on training and was saved as `cls` without a word: other weights than those it had learnt."""
    from modeling_reward import RewardConfig

    recorded = checkpoint_reward_config_file(folder)
    saved = json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else {}
    if saved.get("model_type") != RewardConfig.model_type:
        return
    config = model_config if isinstance(model_config, RewardConfig) else RewardConfig(backbone_config=model_config)
    pooling = args.pooling or config.pooling
    differ = []
    saved_backbone, backbone = saved.get("backbone_config") or {}, config.backbone_config.to_dict()
    shape = [key for key in BACKBONE_SHAPE_KEYS if key in saved_backbone and saved_backbone[key] != backbone.get(key)]
    if shape:
        differ.append(("--base-model", "a backbone of " + ", ".join(f"{k} {saved_backbone[k]}" for k in shape),
                       f"{base_model}, " + ", ".join(f"{k} {backbone.get(k)}" for k in shape)))
    if saved.get("pooling") and saved["pooling"] != pooling:
        differ.append(("--pooling", saved["pooling"], pooling + ("" if args.pooling else ", the default")))
    if differ:
        trained = ", ".join(f"{flag} {old} (this run: {new})" for flag, old, new in differ)
        raise UserInputError(f"{folder} was trained with {trained}: resume it with the --base-model and --pooling it "
                             "was trained with.")


class EarlierRunLeftovers(TrainerCallback):
    """What an earlier run left in --output-dir that a new (not resumed) run does not write again:
    its `checkpoint-N/` folders of steps this run never saves, and its `adapter/` (--keep-adapter)
    when this run keeps none. Left beside the new model they passed for its own: `publish` uploaded
    the old adapter/ and the card said "the LoRA adapter the model was trained with", and
    `--resume_from_checkpoint last` took the old run's higher-numbered checkpoint. They are removed
    when the new model is about to be saved (an interrupted, failed or diverged run removes nothing),
    and the log says so; an old checkpoint-N/ of a step this run saves is removed just before this
    run writes its own there (`before_checkpoint_save`)."""

    def __init__(self, output_dir: Path):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


        self.output_dir = output_dir
        folders = sorted(output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) if output_dir.is_dir() else []
        self.checkpoints = {f.name for f in folders if f.is_dir() and f.name.split("-")[-1].isdigit()}
        self.adapter = (output_dir / ADAPTER_DIR / ADAPTER_CONFIG_FILE).is_file()

    def __bool__(self) -> bool:
        return bool(self.checkpoints) or self.adapter

    def before_checkpoint_save(self, args, state) -> None:
        """Called by `RewardTrainer` (rank 0) just before it writes checkpoint-N/: an earlier run's
        folder of that step is removed first. Saved over, it kept the files this run does not write:
        a LoRA run's checkpoint kept an earlier full fine-tune's model.safetensors and config.json,
        and `score` of it loaded those (neither run's model); a full fine-tune's kept a LoRA run's
        adapter, which a --use-lora resume then loaded."""
        import shutil

        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if name in self.checkpoints:
            shutil.rmtree(self.output_dir / name, ignore_errors=True)
            self.checkpoints.discard(name)
            logger.info("Removed %s/ of an earlier run in %s before saving this run's checkpoint there.", name,
                        self.output_dir)

    def on_save(self, args, state, control, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        self.checkpoints.discard(f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")  # this run's own now

    def remove(self, *, kept_adapter: bool) -> list[str]:
        """Delete the leftovers (rank 0, once training succeeded); returns their names."""
        import shutil


        names = sorted(self.checkpoints, key=lambda name: int(name.split("-")[-1]))
        names += [] if kept_adapter or not self.adapter else [ADAPTER_DIR]
        for name in names:
            shutil.rmtree(self.output_dir / name, ignore_errors=True)
        if names:
            logger.warning("Removed what an earlier run left in %s and this run did not write again: %s (they "
                           "would have passed for this model's; --resume_from_checkpoint continues a run instead).",
                           self.output_dir, ", ".join(f"{name}/" for name in names))
        return names


class RewardConfigInLoraCheckpoints(TrainerCallback):
    """Writes the reward model's config (reward_config.json, as `save_adapter` does) into each LoRA
    checkpoint: PEFT saves the adapter alone, so nothing recorded the backbone or pooling the
    adapters were trained with for `check_checkpoint_model_matches` to compare on resume."""

    def on_save(self, args, state, control, model=None, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        from rewardkit.lora import is_peft_model

        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and is_peft_model(model) and folder.is_dir():
            config = model.get_base_model().config.to_dict()
            (folder / REWARD_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")


class TrainingDataInCheckpoints(TrainerCallback):
    """Writes the run's training data into each checkpoint (training_data.json: `data` and
    `data_split`, as training_summary.json records them). A `checkpoint-N/` has no training
    summary (it is written with the final model), so `rewardkit evaluate` of a checkpoint on the
    data it was trained on said `"on_training_data": null`, and `publish --metrics` then put those
    figures in model-index as a held-out result. `publish` never uploads the file (local paths)."""

    def __init__(self, data: str | None, data_split: str | None):
        self.record = {"data": data, "data_split": data_split}

    def on_save(self, args, state, control, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            (folder / CHECKPOINT_DATA_FILE).write_text(json.dumps(self.record, indent=2, sort_keys=True) + "\n",
                                                       encoding="utf-8")


def check_checkpoint_data_matches(folder: Path, data: str, split: str | None) -> None:
    """A checkpoint resumed on other data than it recorded (`TrainingDataInCheckpoints`), refused by
    name before any data is read. Resuming continues the same run: the Trainer skips the batches of
    the epoch the checkpoint already trained on, so of other data those rows were never trained on,
    the summary counted them as trained, and it named the new data alone (so `evaluate` on the data
    the checkpoint had trained on called it held out). Checkpoints without the record are not checked."""
    from rewardkit.data import same_data_source
    from rewardkit.data_sources import split_read

    record = folder / CHECKPOINT_DATA_FILE
    saved = read_record(record)
    if not saved.get("data"):
        return
    if same_data_source(saved["data"], saved.get("data_split"), data, split_read(data, split)):
        return
    trained = saved["data"] + (f" (split {saved['data_split']})" if saved.get("data_split") else "")
    raise UserInputError(
        f"{folder} was trained on {trained}, but this run reads {data}: resuming continues the same run and skips "
        "the batches the checkpoint already trained on, which of other data are rows never trained on. Resume with "
        "the --data (and --split) it was trained on, or train on the new data from a full fine-tune's checkpoint "
        f"with --base-model CHECKPOINT. (The same rows moved to another path: remove {record}, the record this "
        "check reads, and resume again.)")


def run_already_finished(checkpoint: str, args: RewardTrainingArguments) -> bool:
    """Whether `checkpoint` already reached --max_steps (or, without it, --num_train_epochs).
    transformers 5.23 resumed from such a checkpoint runs one more optimizer step before it checks,
    so re-running a finished job changed its weights and trained past the limit."""
    state_file = Path(checkpoint) / TRAINER_STATE_FILE
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text(encoding="utf-8"))
    if args.max_steps is not None and args.max_steps > 0:
        return int(state.get("global_step") or 0) >= args.max_steps
    return float(state.get("epoch") or 0.0) >= float(args.num_train_epochs) - 1e-6


def checkpoint_step(checkpoint: str) -> int | None:
    """The step a checkpoint was saved at (its trainer_state.json), or None when it has none."""
    state_file = Path(checkpoint) / TRAINER_STATE_FILE
    if not state_file.is_file():
        return None
    return int(json.loads(state_file.read_text(encoding="utf-8")).get("global_step") or 0)


# The figures of the training call that produced a model, kept when a finished run is re-run.
_TRAINING_FIGURES = ("seconds", "eval_seconds", "examples_per_second", "train_loss", "steps_this_call",
                     "resumed_from", "resumed_from_step")


def recorded_figures(summary: Path, checkpoint: str, global_step: int) -> dict[str, Any]:
    """For a re-run of a finished run (`restore_finished_run`): the time, speed and loss its
    training_summary.json recorded when the weights were trained, since this call trains nothing
    (they were overwritten with 0 s and 0 pairs/s). Only a summary of the same final step counts;
    without one they are unrecorded (None, loss NaN), never invented."""
    recorded = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
    if recorded.get("steps") != global_step:
        recorded = {}
    figures = {"seconds": None, "eval_seconds": 0.0, "examples_per_second": None, "train_loss": float("nan"),
               "steps_this_call": None, "resumed_from": None, "resumed_from_step": None}
    figures.update({key: recorded[key] for key in _TRAINING_FIGURES if key in recorded})
    if recorded and "steps_this_call" not in recorded:  # a summary before steps_this_call: unresumed, as a rule
        figures["steps_this_call"] = recorded.get("steps")
    figures["train_loss"] = float(figures["train_loss"] if figures["train_loss"] is not None else "nan")
    return {**figures, "restored_from": str(checkpoint)}


def restore_finished_run(trainer: RewardTrainer, checkpoint: str) -> None:
    """In place of `train()` for a finished run: the checkpoint's weights (the best checkpoint's
    with --load_best_model_at_end) and its Trainer state, untouched by any further step."""
    from transformers.trainer_callback import TrainerState

    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_FILE))
    best = trainer.state.best_model_checkpoint
    weights = best if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else checkpoint
    logger.warning("%s already reached the end of training (step %d, epoch %g): nothing left to train; "
                   "saving the weights of %s unchanged. Raise --max_steps or --num_train_epochs to train further.",
                   checkpoint, trainer.state.global_step, trainer.state.epoch or 0, weights)
    trainer._load_from_checkpoint(weights)
