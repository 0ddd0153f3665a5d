"""RewardModel: a pretrained backbone, a pooling step and a one-output regression head, plus its losses.

This file is uploaded to the Hugging Face Hub beside the weights (remote code). It imports only torch,
transformers and `configuration_reward.py`, so `AutoModel.from_pretrained(repo, trust_remote_code=True)`
needs nothing else installed.

Shapes in comments: B = batch, S = sequence length, H = hidden width, G = prompt groups, K = responses
per group.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging

try:  # transformers >= 5: init helpers that leave already-loaded weights alone
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    _init = nn.init

try:  # relative import when loaded from the Hub (transformers copies this file beside the config)
    from .configuration_reward import RewardConfig
except ImportError:  # imported as a top-level module (pip install rewardkit)
    from configuration_reward import RewardConfig

logger = logging.get_logger(__name__)


# --------------------------------------------------------------------------------------------------
# Losses. Inputs are unscaled rewards (before alpha / normalization).
# --------------------------------------------------------------------------------------------------


def _flat(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, 1) -> (B,). Anything else is a caller bug worth a clear message: a silent
    broadcast of (B, 1) against (B,) would give a (B, B) loss matrix."""
    if tensor.dim() == 2 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.dim() == 1:
        return tensor
    raise ValueError(f"{name} must have shape (batch,) or (batch, 1); got {tuple(tensor.shape)}.")


def pairwise_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """Bradley-Terry loss: mean of -log sigmoid(r_chosen - r_rejected - margin).

    Args:
        chosen_rewards: (B,) or (B, 1) rewards of the preferred responses.
        rejected_rewards: same shape, rewards of the other responses.
        margin: optional (B,) or (B, 1) per-pair margin (Llama 2 style): the chosen reward must beat
            the rejected one by at least this much before the loss flattens.

    Returns:
        A scalar tensor.

    Reference: Bradley & Terry (1952); Ouyang et al. (2022), eq. 1; Touvron et al. (2023), eq. 2.

    Example:
        >>> pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0]))  # -log sigmoid(1)
        tensor(0.3133)
    """
    chosen = _flat("chosen_rewards", chosen_rewards)
    rejected = _flat("rejected_rewards", rejected_rewards)
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen and rejected rewards differ in shape: {tuple(chosen.shape)} vs {tuple(rejected.shape)}.")
    difference = chosen - rejected  # (B,)
    if margin is not None:
        margin = _flat("margin", margin).to(difference.dtype)
        if margin.shape != difference.shape:
            raise ValueError(f"margin has shape {tuple(margin.shape)}, expected {tuple(difference.shape)}.")
        difference = difference - margin
    return -F.logsigmoid(difference).mean()


def ranking_loss(rewards: torch.Tensor, group_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """K-wise ranking loss: the mean pairwise Bradley-Terry loss over all K-choose-2 pairs per group.

    All responses of a group come from one forward pass; this turns their K rewards into
    K*(K-1)/2 comparisons (InstructGPT's recipe, Ouyang et al. 2022, sec. 3.5).

    Args:
        rewards: (G, K) rewards; column 0 is the best response of its group, column K-1 the worst.
        group_sizes: optional (G,) number of real responses per group, for groups padded to K
            (padded columns are at the end and are ignored).

    Returns:
        A scalar: the mean over every real pair (i better than j) of -log sigmoid(r_i - r_j).

    Example:
        >>> ranking_loss(torch.tensor([[2.0, 1.0, 0.0]]))  # mean of 3 pairwise losses
        tensor(0.2297)
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must have shape (groups, K >= 2); got {tuple(rewards.shape)}.")
    num_groups, k = rewards.shape
    better = rewards.unsqueeze(2)  # (G, K, 1): row i
    worse = rewards.unsqueeze(1)  # (G, 1, K): column j
    pair_losses = -F.logsigmoid(better - worse)  # (G, K, K): loss of "i beats j"
    index = torch.arange(k, device=rewards.device)
    valid = (index.unsqueeze(1) < index.unsqueeze(0)).expand(num_groups, k, k)  # i < j: i ranked higher
    if group_sizes is not None:
        sizes = group_sizes.to(rewards.device).view(num_groups, 1, 1)
        if bool((sizes < 2).any()) or bool((sizes > k).any()):
            raise ValueError(f"group_sizes must be in [2, {k}]; got {group_sizes.tolist()}.")
        valid = valid & (index.view(1, 1, k) < sizes) & (index.view(1, k, 1) < sizes)
    return pair_losses[valid].mean()


def mse_loss(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted rewards (B,) or (B, 1) and annotated rewards (B,) or (B, 1)."""
    predicted = _flat("rewards", rewards)
    target = _flat("labels", labels).to(predicted.dtype)
    if predicted.shape != target.shape:
        raise ValueError(f"labels have shape {tuple(target.shape)}, expected {tuple(predicted.shape)}.")
    return F.mse_loss(predicted, target)


# --------------------------------------------------------------------------------------------------
# Pooling: from token states to one vector per sequence. All three read positions from the
# attention mask, so the result does not depend on padding side or on the rest of the batch.
# --------------------------------------------------------------------------------------------------


def _gather_position(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, positions]  # (B, H)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, S, H) token states + (B, S) mask -> (B, H).

    "cls": the first attended token ([CLS] for BERT, wherever padding put it);
    "last": the last attended token (left or right padding); "mean": mean over attended tokens.
    """
    mask = attention_mask.to(hidden.device)
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, S)
    attended = mask.bool()
    if pooling == "cls":
        first = torch.where(attended, positions, mask.shape[1]).amin(dim=1).clamp(max=mask.shape[1] - 1)
        return _gather_position(hidden, first)
    if pooling == "last":
        last = torch.where(attended, positions, -1).amax(dim=1).clamp(min=0)
        return _gather_position(hidden, last)
    raise ValueError(f"Unknown pooling {pooling!r}.")


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass
class RewardModelOutput(SequenceClassifierOutput):
    """`SequenceClassifierOutput` plus the unscaled reward.

    logits: (B, 1) `alpha * reward` (normalized first when `config.normalize_rewards`): what
        pipelines and RL trainers read.
    rewards: (B, 1) the raw head output, before alpha and normalization: what losses and
        preference probabilities use.
    """

    rewards: torch.Tensor | None = None


class RewardModel(PreTrainedModel):
    """A reward model: `reward = head(pool(backbone(prompt, response)))`; returns `alpha * reward`.

    Example:
        >>> from transformers import AutoTokenizer
        >>> model = RewardModel.from_backbone("bert-base-uncased")  # doctest: +SKIP
        >>> tokens = tokenizer("What is 2+2?", "4", return_tensors="pt")  # doctest: +SKIP
        >>> model(**tokens).logits  # (1, 1)  # doctest: +SKIP
    """

    config_class = RewardConfig
    base_model_prefix = "backbone"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: RewardConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone_config)
        self._no_split_modules = getattr(self.backbone, "_no_split_modules", None)
        self.dropout = nn.Dropout(config.head_dropout)
        self.score = nn.Linear(config.hidden_size, 1)
        accepted = inspect.signature(self.backbone.forward).parameters
        self._backbone_takes_position_ids = "position_ids" in accepted
        self._backbone_takes_token_type_ids = "token_type_ids" in accepted
        # RoBERTa-style embeddings count positions from padding_idx + 1.
        padding_idx = getattr(getattr(self.backbone, "embeddings", None), "padding_idx", None)
        self._position_offset = padding_idx + 1 if isinstance(padding_idx, int) else 0
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Only the head is ours; the backbone's own `_init_weights` covers its modules."""
        if module is getattr(self, "score", None):
            std = getattr(self.config.backbone_config, "initializer_range", None) or 0.02
            _init.normal_(module.weight, mean=0.0, std=std)
            _init.zeros_(module.bias)

    @classmethod
    def from_backbone(cls, backbone_name_or_path: str, *, backbone_kwargs: dict | None = None, **config_kwargs) -> RewardModel:
        """A reward model on a pretrained backbone (local path or Hub id) with a fresh head.

        Args:
            backbone_name_or_path: anything `AutoModel.from_pretrained` loads (encoders such as
                BERT/RoBERTa/DeBERTa, or decoders such as GPT-2/OPT/Llama, whose base model is used).
            backbone_kwargs: passed to `AutoModel.from_pretrained` (e.g. `dtype`, `attn_implementation`).
            **config_kwargs: `RewardConfig` fields (`alpha`, `pooling`, `head_dropout`, ...).
        """
        backbone = AutoModel.from_pretrained(backbone_name_or_path, **(backbone_kwargs or {}))
        config = RewardConfig(backbone_config=backbone.config, **config_kwargs)
        model = cls(config, backbone=backbone)
        model.name_or_path = str(backbone_name_or_path)
        return model.to(next(backbone.parameters()).dtype)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def _position_ids_for(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Positions counted over attended tokens only, so a left-padded text gets the same position
        embeddings as the same text unpadded. None (backbone default) when nothing is left-padded."""
        if not self._backbone_takes_position_ids or bool(attention_mask[:, 0].all()):
            return None
        positions = attention_mask.long().cumsum(dim=1) - 1  # (B, S)
        return positions.clamp(min=0) + self._position_offset

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        alpha: float | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RewardModelOutput | tuple:
        """Score (prompt, response) pairs.

        Args:
            input_ids: (B, S) token ids of `tokenizer(prompt, response)`.
            attention_mask: (B, S) 1 for real tokens. Padding may be on either side.
            token_type_ids: (B, S) segment ids (BERT-style backbones).
            labels: (B,) or (B, 1) annotated rewards: returns the MSE of the raw reward against them.
            alpha: multiplier for this call only; `config.alpha` when None.

        Returns:
            `RewardModelOutput` with `logits` (B, 1) = alpha * reward and `rewards` (B, 1) raw.
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("RewardModel.forward needs `input_ids` or `inputs_embeds`.")
        reference = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            pad_id = getattr(self.config, "pad_token_id", None)
            if input_ids is not None and pad_id is not None and pad_id != getattr(self.config, "eos_token_id", None):
                attention_mask = (input_ids != pad_id).long()
            else:
                attention_mask = torch.ones_like(reference, dtype=torch.long)
        if position_ids is None:
            position_ids = self._position_ids_for(attention_mask)

        backbone_inputs = {"attention_mask": attention_mask, **kwargs}
        if input_ids is not None:
            backbone_inputs["input_ids"] = input_ids
        else:
            backbone_inputs["inputs_embeds"] = inputs_embeds
        if token_type_ids is not None and self._backbone_takes_token_type_ids:
            backbone_inputs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            backbone_inputs["position_ids"] = position_ids
        backbone_outputs = self.backbone(**backbone_inputs, return_dict=True)

        hidden = backbone_outputs.last_hidden_state  # (B, S, H)
        pooled = pool(hidden, attention_mask, self.config.pooling)  # (B, H)
        rewards = self.score(self.dropout(pooled))  # (B, 1)

        scaled = rewards
        if self.config.normalize_rewards:
            scaled = (scaled - self.config.reward_mean) / self.config.reward_std
        scale = self.config.alpha if alpha is None else alpha
        logits = scaled * scale  # (B, 1)

        loss = mse_loss(rewards, labels) if labels is not None else None
        output = RewardModelOutput(
            loss=loss,
            logits=logits,
            rewards=rewards,
            hidden_states=getattr(backbone_outputs, "hidden_states", None),
            attentions=getattr(backbone_outputs, "attentions", None),
        )
        if return_dict is False:
            return output.to_tuple()
        return output


# Every save_pretrained copies both code files beside the weights (the auto_map itself comes
# from RewardConfig and names all three Auto classes).
RewardConfig.register_for_auto_class()
RewardModel.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = ["RewardConfig", "RewardModel", "RewardModelOutput", "mse_loss", "pairwise_loss", "pool", "ranking_loss"]
