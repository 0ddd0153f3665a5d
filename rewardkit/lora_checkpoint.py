"""A `--use-lora` run's `checkpoint-N/` as the reward model it stands for, so that `score` and
`evaluate` take it like a full fine-tune's checkpoint (to pick the best step, or see where a run went
wrong).

Such a checkpoint holds no whole model: PEFT's adapter and the trained head (`adapter_config.json`,
`adapter_model.safetensors`), the RewardConfig the weights were trained as (`reward_config.json`),
the tokenizer and the Trainer's state. Together with the run's base model, which `adapter_config.json`
names (an absolute path for a local folder), that is the whole model: the base model + the adapters
merged + the trained head, exactly what training saves as the final folder at its last step. The base
model is checked against the backbone the checkpoint records (a base of another shape or vocabulary
would score without an error, wrongly), and one that cannot be found is refused by name.

`publish` does not merge a checkpoint: it has no reward statistics or training summary. The
`rewardkit train` command that turns it into a complete model folder (`export_command`) resumes from
it at its own step, which trains nothing and saves the checkpoint's weights merged.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import torch

from rewardkit.errors import UserInputError
from rewardkit.file_names import (
    ADAPTER_CONFIG_FILE,
    CHECKPOINT_DATA_FILE,
    REWARD_CONFIG_FILE,
    TRAINER_STATE_FILE,
    read_record,
)

# The backbone's shape: what a checkpoint's weights were trained on, compared with the base model
# found here, and with the --base-model of a resumed run in rewardkit.resume
BACKBONE_SHAPE_KEYS = ("model_type", "hidden_size", "n_embd", "dim", "num_hidden_layers", "n_layer", "n_layers",
                       "vocab_size")


def is_lora_checkpoint(folder: str | os.PathLike) -> bool:
    """A `--use-lora` run's `checkpoint-N/`: a PEFT adapter and the Trainer's state, no config.json
    (an `OUTPUT_DIR/adapter/` has no Trainer state)."""
    folder = Path(folder)
    return ((folder / ADAPTER_CONFIG_FILE).is_file() and (folder / TRAINER_STATE_FILE).is_file()
            and not (folder / "config.json").exists())


def load_lora_checkpoint(folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Any:
    """The plain `RewardModel` of a LoRA checkpoint: its run's base model + its adapters (merged) +
    its trained head, with the config in its reward_config.json, in eval mode.

    Args:
        folder: a `checkpoint-N/` of `rewardkit train --use-lora`.
        dtype: the backbone's dtype (None: float32); the head stays float32. The adapters are merged
            in float32 first, as training merges the final model.

    Raises:
        UserInputError: the checkpoint records no reward config (an older rewardkit) or no base
            model, or its base model cannot be found or is not the one it was trained on.
    """
    from rewardkit.lora import load_adapter, merge_lora

    folder = Path(folder)
    saved = _reward_config(folder)
    base = _recorded_base(folder)
    _check_base_fits(folder, base, saved.get("backbone_config") or {})
    try:
        peft_model = load_adapter(folder, base_model=base, dtype=torch.float32)
    except OSError as error:  # a Hub id that could not be fetched, a folder that lost its weights
        raise UserInputError(f"{folder} is a LoRA checkpoint whose base model {base} (named in its "
                             f"{ADAPTER_CONFIG_FILE}) could not be loaded: {error}") from error
    model = merge_lora(peft_model)
    model.config.pad_token_id = saved.get("pad_token_id", model.config.pad_token_id)
    if dtype is not None and dtype != torch.float32:
        model.backbone.to(dtype)
    model.name_or_path = str(folder)
    return model.eval()


def _reward_config(folder: Path) -> dict:
    """reward_config.json: how the adapters were trained (pooling, alpha, backbone, trained length)."""
    path = folder / REWARD_CONFIG_FILE
    if not path.is_file():
        raise UserInputError(
            f"{folder} is a LoRA checkpoint without {REWARD_CONFIG_FILE} (written by a rewardkit before checkpoints "
            "recorded it), so the pooling, alpha and backbone its adapters were trained with are unknown and it cannot "
            "be rebuilt as a model. Score the run's --output-dir (the merged final model), or resume training from "
            "it (--resume_from_checkpoint) with the flags it was trained with.")
    return json.loads(path.read_text(encoding="utf-8"))


def _recorded_base(folder: Path) -> str:
    """The base model the run loaded, as its adapter_config.json names it; refused by name when there
    is none, when a local folder is gone, or when a Hub id cannot be had offline."""
    base = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8")).get("base_model_name_or_path")
    where = f"{folder / ADAPTER_CONFIG_FILE} (base_model_name_or_path)"
    if not base:
        raise UserInputError(f"{folder} is a LoRA checkpoint that names no base model in {where}, so its adapters "
                             "cannot be put on the model they were trained on. Set it there to the run's --base-model.")
    path = Path(base).expanduser()
    if path.exists():
        return str(path)
    if path.is_absolute() or base.startswith((".", "~")):
        raise UserInputError(f"{folder} is a LoRA checkpoint of a run on the base model {base}, which is no longer "
                             f"there. Put that model back, or set {where} to where it is now.")
    _check_hub_id_offline(folder, base, where)
    return base


def _check_hub_id_offline(folder: Path, base: str, where: str) -> None:
    """Offline (HF_HUB_OFFLINE), a Hub id missing from the local cache: said by name, instead of
    transformers' "We couldn't connect to 'https://huggingface.co'"."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    try:
        cached = try_to_load_from_cache(base, "config.json")
    except Exception:  # an odd id or cache layout: from_pretrained says what is wrong  # noqa: BLE001
        return
    if not isinstance(cached, str):
        raise UserInputError(f"{folder} is a LoRA checkpoint of a run on the Hub model {base}, which is not in the "
                             "local Hugging Face cache, and HF_HUB_OFFLINE is set, so it cannot be downloaded. Unset "
                             f"HF_HUB_OFFLINE, or set {where} to a local copy of that model.")


def _check_base_fits(folder: Path, base: str, trained: dict) -> None:
    """The base model found has the backbone the checkpoint was trained on (type, sizes, vocabulary):
    another one of the same hidden size took the adapters without an error (another vocabulary: other
    token embeddings under them) and scored wrongly."""
    from transformers import AutoConfig

    from rewardkit.scoring import is_reward_model_folder

    if is_reward_model_folder(base):  # LoRA on a rewardkit model (continued training)
        found = json.loads((Path(base) / "config.json").read_text(encoding="utf-8")).get("backbone_config") or {}
    else:
        try:
            found = AutoConfig.from_pretrained(base).to_dict()
        except (OSError, ValueError) as error:
            raise UserInputError(f"{folder} is a LoRA checkpoint whose base model {base} (named in its "
                                 f"{ADAPTER_CONFIG_FILE}) could not be read: {error}") from error
    differ = [f"{key} {trained[key]} (base model: {found.get(key)})" for key in BACKBONE_SHAPE_KEYS
              if key in trained and trained[key] != found.get(key)]
    if differ:
        raise UserInputError(f"{folder} is a LoRA checkpoint trained on a backbone with {', '.join(differ)}: {base} "
                             "is not the base model its adapters were trained on. Set base_model_name_or_path in "
                             f"its {ADAPTER_CONFIG_FILE} to the run's --base-model.")


def export_command(folder: str | os.PathLike) -> str:
    """The `rewardkit train` command that saves the LoRA checkpoint `folder` as a complete model folder
    (merged weights, reward statistics, training summary, card) without training a step: it resumes
    from the checkpoint with its own step as --max_steps and the flags that resuming checks (data,
    base model, pooling, LoRA settings), read from the checkpoint's records."""
    folder = Path(folder)
    adapter = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    saved = read_record(folder / REWARD_CONFIG_FILE)
    record = read_record(folder / CHECKPOINT_DATA_FILE)
    step = read_record(folder / TRAINER_STATE_FILE).get("global_step")
    words = ["rewardkit", "train", "--data", record.get("data") or "DATA"]
    if record.get("data_split"):
        words += ["--split", record["data_split"]]
    words += ["--base-model", adapter.get("base_model_name_or_path") or "BASE_MODEL"]
    for flag, value in (("--objective", saved.get("trained_objective")), ("--pooling", saved.get("pooling"))):
        if value:
            words += [flag, str(value)]
    if saved.get("alpha") not in (None, 1.0):
        words += ["--alpha", f"{saved['alpha']:g}"]
    words += ["--use-lora", "--lora-r", str(adapter.get("r")), "--lora-alpha", f"{adapter.get('lora_alpha'):g}"]
    if adapter.get("target_modules"):
        targets = adapter["target_modules"]
        words += ["--lora-target-modules", ",".join(sorted(targets)) if isinstance(targets, list) else str(targets)]
    run = folder.absolute().parent  # the new folder goes beside the run's, not into it
    words += ["--resume_from_checkpoint", str(folder.absolute()), "--max_steps", str(step or "N"),
              "--output-dir", str(run.parent / f"{run.name}-{folder.name}")]
    return shlex.join(words)


