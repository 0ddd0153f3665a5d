"""LoRA training of a reward model with PEFT, and the two forms it is saved in.

A LoRA reward model has two parts that must both survive saving: the low-rank adapters on the
backbone and the regression head. The head is new (randomly initialised) and small, so it is trained
in full through PEFT's `modules_to_save`; forgetting that is the classic way to publish a LoRA reward
model that reloads with a random head and scores noise. rewardkit saves:

* the merged model (adapters folded into the backbone weights, trained head in place) as an ordinary
  rewardkit folder: it loads with `trust_remote_code` alone, no PEFT needed, and scores at full speed;
* optionally (`--keep-adapter`) the unmerged adapter + head in PEFT format under `adapter/`, with the
  reward config beside it (`reward_config.json`) so the exact architecture can be rebuilt on the
  backbone: `load_adapter("out/adapter")`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from rewardkit.errors import UserInputError
from rewardkit.file_names import ADAPTER_CONFIG_FILE, REWARD_CONFIG_FILE

logger = logging.getLogger(__name__)

HEAD_MODULES = ("score",)  # RewardModel's regression head: trained and saved in full
ALL_LINEAR = "all-linear"
_UNREAD_BACKBONE_PARTS = ("pooler",)  # BERT's pooler is never read by our pooling
_ADAPTABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)  # PEFT's LoRA layers (+ GPT-2's Conv1D)


def is_unread_backbone_part(name: str) -> bool:
    """Whether the backbone module or parameter `name` (e.g. `pooler.dense.weight`) belongs to a part
    our pooling never reads: no adapters go there (they would be wasted), and training freezes it."""
    return any(part in name.split(".") for part in _UNREAD_BACKBONE_PARTS)


def _linear_module_names(backbone: nn.Module) -> list[str]:
    """Last name component of every linear layer of the backbone (nn.Linear, GPT-2's Conv1D), sorted."""
    from transformers.pytorch_utils import Conv1D

    names = set()
    for name, module in backbone.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and not is_unread_backbone_part(name):
            names.add(name.split(".")[-1])
    return sorted(names)


def unused_linear_paths(model: Any) -> list[str]:
    """Full paths (e.g. `backbone.pooler.dense`) of the backbone's linear layers that our pooling
    never reads (BERT's pooler). Target names are matched by PEFT as suffixes, so `dense` from
    `all-linear` also matches `backbone.pooler.dense`; these paths go to `exclude_modules`."""
    from transformers.pytorch_utils import Conv1D

    return sorted(f"backbone.{name}" for name, module in model.backbone.named_modules()
                  if isinstance(module, (nn.Linear, Conv1D))
                  and is_unread_backbone_part(name))


def default_target_modules(model: Any) -> list[str]:
    """Modules to adapt when the user names none.

    PEFT's own defaults per backbone type (BERT/RoBERTa: query, value; Llama/OPT/Mistral: q_proj,
    v_proj; GPT-2: c_attn) when it has one; otherwise every linear layer of the backbone. PEFT
    cannot infer this itself for a RewardModel (its `model_type` is "reward_model"), and its
    "all-linear" would put an adapter on our head too, which is trained in full instead.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    backbone_type = model.config.backbone_config.model_type
    if backbone_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[backbone_type])
    names = _linear_module_names(model.backbone)
    if not names:
        raise UserInputError(f"Found no linear layers to adapt in the {backbone_type!r} backbone; "
                             "name them with --lora-target-modules.")
    return names


def resolve_target_modules(model: Any, requested: list[str] | None) -> list[str]:
    """`requested` checked against the backbone, `all-linear` expanded, None -> the default."""
    if not requested:
        return default_target_modules(model)
    if requested == [ALL_LINEAR]:
        return _linear_module_names(model.backbone)
    problems = [problem for name in requested if (problem := _target_problem(model, name))]
    if problems:
        linear = ", ".join(_linear_module_names(model.backbone))
        raise UserInputError(f"--lora-target-modules {'; '.join(problems)}. Its linear layers: {linear}.")
    return list(requested)


def _target_problem(model: Any, target: str) -> str | None:
    """Why PEFT cannot adapt what `target` names (matched as PEFT does: the whole path or its last
    components), or None. Checked here because PEFT's own errors named no flag: a container such as
    `attention` or a `LayerNorm` failed with the repr of the whole module, `pooler` (never read,
    excluded) with "No modules were targeted for adaptation"."""
    from transformers.pytorch_utils import Conv1D

    if target in HEAD_MODULES:
        return f"{target}: the reward head, which is trained in full (never adapted)"
    hits = {name: module for name, module in model.backbone.named_modules()
            if name and (f"backbone.{name}" == target or f"backbone.{name}".endswith(f".{target}"))}
    read = {name: module for name, module in hits.items() if not is_unread_backbone_part(name)}
    backbone = f"the {model.config.backbone_config.model_type!r} backbone"
    if not read:
        return (f"{target}: only in a part of {backbone} that our pooling never reads ({', '.join(sorted(hits))})"
                if hits else f"{target}: no such module in {backbone}")
    kinds = sorted({type(module).__name__ for module in read.values() if not isinstance(module, _ADAPTABLE + (Conv1D,))})
    return f"{target}: a {', '.join(kinds)} in {backbone}, which LoRA cannot adapt (name linear layers)" if kinds else None


def adapted_module_paths(model: Any, targets: list[str]) -> set[str]:
    """Backbone paths of the modules `targets` put adapters on: PEFT matches each name as the whole
    path or its last components, and `apply_lora` leaves out the parts our pooling never reads. Two
    spellings of one choice (`query` and `attention.self.query`) give the same set."""
    return {name for name, _ in model.backbone.named_modules() if name and not is_unread_backbone_part(name)
            and any(name == target or name.endswith(f".{target}") for target in targets)}


def apply_lora(model: Any, *, r: int = 16, alpha: int = 32, dropout: float = 0.05,
               target_modules: list[str] | None = None) -> Any:
    """Wrap a `RewardModel` in a PEFT model: LoRA on the backbone, the head trained in full.

    Returns:
        A `peft.PeftModel` whose forward is the RewardModel's (same inputs, same outputs).

    Example:
        >>> peft_model = apply_lora(RewardModel.from_backbone("bert-base-uncased"), r=8)  # doctest: +SKIP
        >>> peft_model.print_trainable_parameters()  # adapters + the head  # doctest: +SKIP
    """
    from peft import LoraConfig, get_peft_model

    targets = resolve_target_modules(model, target_modules)
    # No task_type: PEFT's SEQ_CLS wrapper rewrites forward arguments; the plain PeftModel passes
    # ours (token_type_ids, alpha, ...) through unchanged.
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        exclude_modules=unused_linear_paths(model) or None,
                        modules_to_save=list(HEAD_MODULES), bias="none")
    with _without_checkpointing_deprecation():
        peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    logger.info("LoRA r=%d alpha=%d on %s; the head is trained in full: %d of %d parameters trainable (%.2f%%).",
                r, alpha, ",".join(targets), trainable, total, 100.0 * trainable / max(total, 1))
    return peft_model


def apply_lora_from_args(model: Any, args: Any) -> Any:
    """`apply_lora` with the `--lora-*` fields of `RewardTrainingArguments`."""
    return apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                      target_modules=args.lora_target_modules)


def is_peft_model(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft not installed: nothing can be a PEFT model
        return False
    return isinstance(model, PeftModel)


def save_adapter(peft_model: Any, folder: str | Path) -> Path:
    """The unmerged adapter + trained head in PEFT format, plus `reward_config.json` (the reward
    model's own config: pooling, alpha, reward statistics, backbone config) to rebuild it exactly."""
    from rewardkit.training import apply_umask_permissions

    folder = Path(folder)
    peft_model.save_pretrained(str(folder))
    config = peft_model.get_base_model().config.to_dict()
    (folder / REWARD_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    apply_umask_permissions(folder)  # the weights land 0600 (private temporary file), like model.safetensors
    logger.info("Saved the LoRA adapter and head (PEFT format) to %s.", folder)
    return folder


def warn_if_base_is_local(adapter_dir: str | Path) -> bool:
    """Warn (and return True) when `rewardkit publish` will not be able to name the adapter's base
    model: it keeps `base_model_name_or_path` only when `model_card.hub_model_id` finds an
    owner/name Hub id for it (the packaged MiniLM and Hub cache snapshots map to theirs), and writes
    null for anything else (a local folder, which must not reach the Hub, or a legacy single-name
    id). Hub users of adapter/ then need that base in hand; a local rewardkit model folder (LoRA on
    a model trained before) exists nowhere else. The merged model is not affected."""
    from rewardkit.model_card import hub_model_id

    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if hub_model_id(base):  # the same rule publish applies
        return False
    logger.warning("--keep-adapter: the adapter's base model %s has no owner/name Hub id rewardkit can publish "
                   "(a local folder, or a legacy single-name id), so the published adapter/adapter_config.json will "
                   "name no base model (base_model_name_or_path null). Hub users can use adapter/ only with that base "
                   "in hand (load_adapter(..., base_model=...)); the merged model loads on its own. Train on an "
                   "owner/name Hub model id for an adapter others can rebuild.", base or "(unnamed)")
    return True


def merge_lora(peft_model: Any) -> Any:
    """Fold the adapters into the backbone weights and put the trained head in place; returns the
    plain `RewardModel` (the PEFT wrapper must not be used afterwards)."""
    merged = peft_model.merge_and_unload()
    _check_head_is_plain(merged)
    return merged


def _check_head_is_plain(model: Any) -> None:
    """After merging, `score` must be the trained Linear, not PEFT's wrapper holding two copies (the
    original, untrained one would be what a plain state dict saves under `score.weight`)."""
    head = getattr(model, HEAD_MODULES[0], None)
    if not isinstance(head, nn.Linear):
        raise RuntimeError(f"Merging LoRA left the head as {type(head).__name__}, not a Linear layer: "
                           "saving it would lose the trained head.")


def load_adapter(adapter_dir: str | Path, base_model: str | None = None, **backbone_kwargs: Any) -> Any:
    """Rebuild the reward model from a saved adapter: backbone + adapters + trained head.

    Args:
        adapter_dir: `OUTPUT_DIR/adapter` of `rewardkit train --use-lora --keep-adapter`.
        base_model: the backbone it was trained on (path or Hub id); default: the one recorded in
            `adapter_config.json`.
        **backbone_kwargs: passed to `AutoModel.from_pretrained` for the backbone (e.g. `dtype`).

    Returns:
        A `peft.PeftModel` in eval mode that scores like the merged model (call `.merge_and_unload()`
        for a plain `RewardModel`).
    """
    from peft import PeftModel

    from modeling_reward import RewardModel
    from rewardkit.scoring import is_reward_model_folder

    adapter_dir = Path(adapter_dir)
    adapter_config = json.loads((adapter_dir / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    base = base_model or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG_FILE} names no base model; pass base_model=.")
    fields = _reward_config_fields(adapter_dir)
    if is_reward_model_folder(base):  # LoRA on a rewardkit model (continued training): its head is replaced
        model = RewardModel.from_pretrained(base, use_safetensors=True, **backbone_kwargs, **fields)
    else:
        model = RewardModel.from_backbone(base, backbone_kwargs=backbone_kwargs, **fields)
    with _without_checkpointing_deprecation():
        return PeftModel.from_pretrained(model, str(adapter_dir)).eval()


@contextmanager
def _without_checkpointing_deprecation() -> Iterator[None]:
    """Silence transformers' FutureWarning "`is_gradient_checkpointing` is deprecated" (that one
    message) around our PEFT wrapping calls: PEFT reads the deprecated property when it wraps a
    model, so each --use-lora run printed the warning in the middle of its output, about code that
    is neither the user's nor ours to change. Any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _reward_config_fields(adapter_dir: Path) -> dict[str, Any]:
    """The RewardConfig fields that shape outputs (pooling, alpha, statistics, ...), from
    reward_config.json; the backbone config itself comes from the backbone checkpoint."""
    path = adapter_dir / REWARD_CONFIG_FILE
    if not path.is_file():
        logger.warning("%s is missing: rebuilding the reward model with default pooling and alpha.", path)
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    # trained_objective too: without it a rebuilt mse model was explained and reported as a pairwise one
    names = ("alpha", "pooling", "head_dropout", "reward_mean", "reward_std", "normalize_rewards",
             "calibration_temperature", "trained_max_length", "trained_objective",
             "temperature")  # (the last: the key before the rename)
    return {name: saved[name] for name in names if name in saved}
