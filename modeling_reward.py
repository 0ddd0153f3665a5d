"""RewardModel: a pretrained backbone, a pooling step and a one-output regression head, plus its losses.

This file is uploaded to the Hugging Face Hub beside the weights (remote code). It imports only torch,
transformers and `configuration_reward.py`, so `AutoModel.from_pretrained(repo, trust_remote_code=True)`
needs nothing else installed.

Shapes in comments: B = batch, S = sequence length, H = hidden width, G = prompt groups, K = responses
per group.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel, TextClassificationPipeline
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging

try:  # transformers >= 5: init helpers that leave already-loaded weights alone
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    _init = nn.init

try:  # relative import when loaded from the Hub (transformers copies this file beside the config)
    from .configuration_reward import RewardConfig, check_pooling_reads_the_text, real_number
except ImportError:  # imported as a top-level module (pip install rewardkit)
    from configuration_reward import RewardConfig, check_pooling_reads_the_text, real_number

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
    """K-wise ranking loss: the pairwise Bradley-Terry loss averaged over every within-group pair.

    All responses of a group come from one forward pass; this turns their K rewards into
    K*(K-1)/2 comparisons (InstructGPT's recipe, Ouyang et al. 2022, sec. 3.5). The mean is over
    pairs, not groups: a group weighs K*(K-1)/2, so with a group of 3 and a group of 5 the larger
    one carries 10 of 13 pairs. (InstructGPT divides each group by its own K-choose-2, so every
    prompt counts once; with equal K the two agree.)

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


def first_attended(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) mask -> (B,) position of each row's first attended token ([CLS] under any padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).expand_as(attention_mask)
    first = torch.where(attention_mask.bool(), positions, attention_mask.shape[1]).amin(dim=1)
    return first.clamp(max=attention_mask.shape[1] - 1)


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
    if pooling == "cls":
        return _gather_position(hidden, first_attended(mask))
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, S)
    attended = mask.bool()
    if pooling == "last":
        last = torch.where(attended, positions, -1).amax(dim=1).clamp(min=0)
        return _gather_position(hidden, last)
    raise ValueError(f"Unknown pooling {pooling!r}.")


# --------------------------------------------------------------------------------------------------
# One-row last layer. With "cls" pooling only one position of the last layer's output is read, so
# that layer's query, attention output and feed-forward are computed for that position alone; its
# keys and values still come from every token. Same numbers up to float rounding, about 1/6 fewer
# FLOPs on a 6-layer encoder (1/12 on 12 layers), in training and in scoring.
# --------------------------------------------------------------------------------------------------

# Encoders whose layers have BERT's post-LayerNorm structure in transformers (query/key/value,
# attention.output, intermediate, output) with absolute positions.
_BERT_STYLE_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})


class _LastLayerReached(Exception):
    """Raised by a pre-hook to stop the backbone at its last layer; carries that layer's input."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__("internal: backbone stopped before its last layer")
        self.hidden = hidden


def bert_style_last_layer(backbone: nn.Module) -> nn.Module | None:
    """The backbone's last encoder layer if it can be run for one row per sequence, else None.

    Anything not recognised (relative positions, decoders, cross-attention, chunked feed-forward,
    other layer structures) returns None and takes the ordinary full forward.
    """
    config = getattr(backbone, "config", None)
    if config is None or getattr(config, "model_type", None) not in _BERT_STYLE_MODEL_TYPES:
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or getattr(config, "chunk_size_feed_forward", 0):
        return None
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    layer = layers[-1]
    try:
        attention = layer.attention
        linears = (attention.self.query, attention.self.key, attention.self.value, attention.output.dense,
                   layer.intermediate.dense, layer.output.dense)
        norms = (attention.output.LayerNorm, layer.output.LayerNorm)
        sizes = (attention.self.num_attention_heads, attention.self.attention_head_size)
    except AttributeError:
        return None
    if not all(isinstance(m, nn.Linear) for m in linears) or not all(isinstance(m, nn.LayerNorm) for m in norms):
        return None
    if sizes[0] * sizes[1] != attention.self.query.out_features:
        return None
    return layer


def last_layer_one_row(layer: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                       rows: torch.Tensor) -> torch.Tensor:
    """A BERT-style layer's output at one position per sequence.

    Args:
        layer: a module accepted by `bert_style_last_layer`.
        hidden: (B, S, H) the layer's input.
        attention_mask: (B, S) 1 for real tokens.
        rows: (B,) the position to compute in each sequence.

    Returns:
        (B, H): what `layer(hidden)[b, rows[b]]` would be.
    """
    self_attention, attention_output = layer.attention.self, layer.attention.output
    batch = hidden.shape[0]
    heads, head_size = self_attention.num_attention_heads, self_attention.attention_head_size
    picked = hidden[torch.arange(batch, device=hidden.device), rows]  # (B, H)
    query = self_attention.query(picked).view(batch, heads, 1, head_size)  # (B, heads, 1, d)
    key = self_attention.key(hidden).view(batch, -1, heads, head_size).transpose(1, 2)  # (B, heads, S, d)
    value = self_attention.value(hidden).view(batch, -1, heads, head_size).transpose(1, 2)
    mask = attention_mask.to(hidden.device).bool()[:, None, None, :]  # (B, 1, 1, S): True = attend
    dropout = self_attention.dropout.p if layer.training else 0.0
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout,
                                             scale=getattr(self_attention, "scaling", head_size**-0.5))
    context = context.reshape(batch, heads * head_size)  # (B, H)
    attended = attention_output.LayerNorm(attention_output.dropout(attention_output.dense(context)) + picked)
    feed_forward = layer.output
    return feed_forward.LayerNorm(feed_forward.dropout(feed_forward.dense(layer.intermediate(attended))) + attended)


def _check_alpha(alpha) -> None:
    """Refuse a per-call alpha that is not a finite number > 0: it only rescales, and 0 or a negative
    value would erase or invert every ranking made from the output. Numpy scalars and tensors are
    checked too (a check of Python numbers alone let np.float32(0) and torch.tensor(-2.0) through).
    A tensor must hold one value: torch.tensor([1.0, 2.0]) broadcast the (B, 1) logits to (B, 2).
    Its value is not inspected while torch.compile / export traces the model (nor kept in a
    jit.trace graph, which records no Python check)."""
    if alpha is None:
        return
    if isinstance(alpha, torch.Tensor):
        if alpha.numel() != 1:
            raise ValueError(f"alpha must be a finite number > 0 (it only rescales rewards), got a tensor of shape "
                             f"{tuple(alpha.shape)}: one value per call.")
        if getattr(torch.compiler, "is_compiling", lambda: False)():
            return
        ok = (alpha.dtype != torch.bool and not alpha.is_complex()
              and bool((torch.isfinite(alpha) & (alpha > 0)).all()))
    else:
        value = real_number(alpha)  # Python and numpy numbers, as the config's alpha takes them
        ok = value is not None and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"alpha must be a finite number > 0 (it only rescales rewards), got {alpha!r}.")


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
        >>> tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")  # doctest: +SKIP
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
    # Loaded with dtype=bf16/fp16, the one-row head stays fp32 (see `_head`): it costs nothing and a
    # half-precision reward would round away small chosen-rejected differences.
    _keep_in_fp32_modules_strict = ["score"]
    # The `labels` loss is a mean over the batch. transformers' Trainer otherwise sees `**kwargs` in
    # `forward`, takes the loss as already divided for gradient accumulation and skips its own
    # division: with N accumulation steps the logged loss and the gradients were N times too large.
    accepts_loss_kwargs = False

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
        # True when the backbone's last layer can be run for the [CLS] row alone (see last_layer_one_row).
        # A flag, not the layer itself: a module attribute would register the layer twice.
        self._one_row_last_layer = bert_style_last_layer(self.backbone) is not None
        self._freeze_unread_pooler()
        self.post_init()

    def _freeze_unread_pooler(self) -> None:
        """BERT's pooler (any backbone module named `pooler`) is never read (every pooling reads the
        last hidden states), so it gets no gradient; left trainable, DDP with find_unused_parameters=False
        (the Trainer's choice under gradient checkpointing, TRL RewardTrainer's default) failed at its
        second step with "Expected to have finished reduction in the prior iteration". The one place
        that freezes it, for `rewardkit train` as for TRL users."""
        for name, module in self.backbone.named_modules():
            if name.split(".")[-1] == "pooler":
                module.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`, with the unread pooler frozen again: loading makes
        every floating-point weight trainable."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_unread_pooler()
        return loaded

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
                Without a `dtype` the backbone is loaded in float32, whatever dtype the checkpoint
                is stored in (transformers 5 would otherwise keep a stored fp16/bf16, and training
                would update half-precision weights).
            **config_kwargs: `RewardConfig` fields (`alpha`, `pooling`, `head_dropout`, ...). `pooling="cls"`
                on a causal decoder is refused (its first token sees nothing of the text after it).

        The head is float32 in every case, as `from_pretrained(..., dtype=...)` keeps it.
        """
        kwargs = dict(backbone_kwargs or {})
        if "dtype" not in kwargs and "torch_dtype" not in kwargs:
            kwargs["dtype"] = torch.float32
        backbone = AutoModel.from_pretrained(backbone_name_or_path, **kwargs)
        config = RewardConfig(backbone_config=backbone.config, **config_kwargs)
        check_pooling_reads_the_text(backbone.config, config.pooling)
        model = cls(config, backbone=backbone)
        model.name_or_path = str(backbone_name_or_path)
        return model

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """As `PreTrainedModel.resize_token_embeddings` (e.g. after adding special tokens), and the new
        size is also written into `config.backbone_config`, from which `from_pretrained` builds the
        embeddings: transformers records it on the top-level config only, and the saved model then
        failed to load (size mismatch of `word_embeddings`)."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        vocab_size = getattr(self.config, "vocab_size", None)  # what transformers just recorded
        if isinstance(vocab_size, int) and (new_num_tokens is not None or pad_to_multiple_of is not None):
            self.config.backbone_config.vocab_size = vocab_size
            self.backbone.config.vocab_size = vocab_size
        return embeddings

    def _position_ids_for(self, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Positions counted over attended tokens only, so a left-padded text gets the same position
        embeddings as the same text unpadded. None when the backbone takes no position ids.

        Computed for every batch, with no branch on the mask's values: for right padding they equal
        the backbone's defaults on every attended token, and a branch on data made `torch.export`
        fail and `torch.jit.trace` bake in the padding side of the example batch."""
        if not self._backbone_takes_position_ids:
            return None
        positions = attention_mask.long().cumsum(dim=1) - 1  # (B, S)
        return positions.clamp(min=0) + self._position_offset

    def _can_compute_one_row(self, attention_mask: torch.Tensor, kwargs: dict) -> bool:
        """True when only the [CLS] row of the last layer is needed: cls pooling, a BERT-style
        backbone, a (B, S) mask, and nobody asking for all hidden states or attention maps. Not
        under `torch.export` or `torch.compile`, which cannot trace the hook this path registers
        during forward (`torch.compile(model, fullgraph=True)` failed on it; without fullgraph it
        broke the graph there)."""
        if not self._one_row_last_layer or self.config.pooling != "cls" or attention_mask.dim() != 2:
            return False
        is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
        is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
        if is_exporting() or is_compiling():
            return False
        backbone_config = self.backbone.config
        wants_all = (kwargs.get("output_hidden_states", backbone_config.output_hidden_states)
                     or kwargs.get("output_attentions", backbone_config.output_attentions))
        return not wants_all

    def _pool_cls_one_row(self, backbone_inputs: dict, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Run the backbone up to its last layer, then that layer for the [CLS] rows only: (B, H).

        A pre-hook on the last layer catches its input and stops the backbone there, so embeddings,
        masks and the earlier layers run exactly as the backbone runs them. None if the backbone
        never reached the hook (then the caller runs the ordinary forward). Side effect worth
        knowing: forward *post*-hooks on the backbone or its last layer do not fire on this path
        (pass output_hidden_states=True, or use pooling "mean"/"last", to get the full forward).
        """
        layer = self.backbone.encoder.layer[-1]  # looked up per call: PEFT may have wrapped its linears

        def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            raise _LastLayerReached(hidden)

        handle = layer.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.backbone(**backbone_inputs, return_dict=True)
            return None
        except _LastLayerReached as reached:
            hidden = reached.hidden  # (B, S, H)
        finally:
            handle.remove()
        return last_layer_one_row(layer, hidden, attention_mask, first_attended(attention_mask))

    def _raise_if_too_long(self, attention_mask: torch.Tensor, error: Exception) -> None:
        """A clear error in place of torch's `index out of range in self` (or `index 512 is out of
        bounds`) when a text is longer than the backbone's table of learned positions (512 tokens for
        BERT): neither the tokenizer nor `pipeline` truncates by default. Returns when the length does
        not explain the error (the caller re-raises it)."""
        limit = getattr(self.backbone.config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            return
        limit -= self._position_offset  # RoBERTa's 514 positions hold 512 tokens
        longest = int(attention_mask.sum(dim=1).max()) if attention_mask.dim() == 2 else 0
        if longest > limit:
            raise ValueError(
                f"RewardModel: an input has {longest} tokens; this backbone "
                f"({self.backbone.config.model_type}) reads at most {limit}. Pass truncation=True, "
                f"max_length={limit} (or less) to the tokenizer or to the pipeline call."
            ) from error

    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) -> (B, 1) raw reward, in the head's own dtype even under autocast: a bf16 reward
        keeps 8 bits of mantissa, too few for the small chosen-rejected differences the pairwise
        loss and preference probabilities are made of."""
        device_type = pooled.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type=device_type, enabled=False):
                return self.score(self.dropout(pooled.to(self.score.weight.dtype)))
        return self.score(self.dropout(pooled.to(self.score.weight.dtype)))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        alpha: float | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> RewardModelOutput | tuple:
        """Score (prompt, response) pairs.

        The first five parameters are in the documented order (input_ids, attention_mask,
        token_type_ids, labels, alpha), so a positional call `model(ids, mask, types, labels)` gets
        its loss; `position_ids` (unlike BERT's forward) comes after them.

        Args:
            input_ids: (B, S) token ids of `tokenizer(prompt, response)`.
            attention_mask: (B, S) 1 for real tokens. Padding may be on either side.
            token_type_ids: (B, S) segment ids (BERT-style backbones).
            labels: (B,) or (B, 1) annotated rewards: returns the MSE of the raw reward against them.
            alpha: multiplier for this call only; `config.alpha` when None.
            return_dict: False for a tuple; `config.return_dict` when None.

        Returns:
            `RewardModelOutput` with `logits` (B, 1) = alpha * reward and `rewards` (B, 1) raw
            (its `to_tuple()` when `return_dict` is False).
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

        # `from_pretrained(repo, output_hidden_states=True)` and `model.config.output_hidden_states = True`
        # set the flag on this config, which the backbone never reads (it has its own): pass it on,
        # as transformers' own models honour it.
        for flag in ("output_hidden_states", "output_attentions"):
            if kwargs.get(flag) is None and getattr(self.config, flag, False):
                kwargs[flag] = True
        backbone_inputs = {"attention_mask": attention_mask, **kwargs}
        if input_ids is not None:
            backbone_inputs["input_ids"] = input_ids
        else:
            backbone_inputs["inputs_embeds"] = inputs_embeds
        if token_type_ids is not None and self._backbone_takes_token_type_ids:
            backbone_inputs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            backbone_inputs["position_ids"] = position_ids
        pooled, backbone_outputs = None, None
        try:
            if self._can_compute_one_row(attention_mask, kwargs):
                pooled = self._pool_cls_one_row(backbone_inputs, attention_mask)
            if pooled is None:
                backbone_outputs = self.backbone(**backbone_inputs, return_dict=True)
        except (IndexError, RuntimeError) as error:  # an embedding lookup, or BERT's buffered token_type_ids
            self._raise_if_too_long(attention_mask, error)
            raise
        if pooled is None:
            hidden = backbone_outputs.last_hidden_state  # (B, S, H)
            pooled = pool(hidden, attention_mask, self.config.pooling)  # (B, H)
        rewards = self._head(pooled)  # (B, 1)

        scaled = rewards
        if self.config.normalize_rewards:
            if self.config.reward_mean is None or self.config.reward_std is None:
                raise ValueError("normalize_rewards=True needs reward_mean and reward_std in the config "
                                 "(stored by `rewardkit train`); this model has none.")
            scaled = (scaled - self.config.reward_mean) / self.config.reward_std
        _check_alpha(alpha)
        scale = self.config.alpha if alpha is None else alpha.reshape(()) if isinstance(alpha, torch.Tensor) else alpha
        logits = scaled * scale  # (B, 1)

        loss = mse_loss(rewards, labels) if labels is not None else None
        output = RewardModelOutput(
            loss=loss,
            logits=logits,
            rewards=rewards,
            hidden_states=getattr(backbone_outputs, "hidden_states", None),
            attentions=getattr(backbone_outputs, "attentions", None),
        )
        # As transformers' own models: `return_dict=False` in the call, or else in the config
        # (`from_pretrained(repo, return_dict=False)`), gives a tuple.
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        if not return_dict:
            return output.to_tuple()
        return output


class RewardPipeline(TextClassificationPipeline):
    """transformers' text-classification pipeline, plus `alpha=` per call or at construction, as
    `model(**x, alpha=...)` takes it: `pipe(pair, alpha=10)` scores `10 * r` (normalized first when
    the config says so), a value that is not a finite number > 0 is refused before anything runs.

    `pipeline("text-classification", model=repo_or_folder, trust_remote_code=True)` builds this class
    (`RewardConfig.custom_pipelines`). transformers' own pipeline hands every option it does not know
    to the tokenizer, which ignored `alpha` without a word; a pipeline built around a model object
    (`pipeline(..., model=model)`) is still that one: pass `pipeline_class=RewardPipeline` there.
    """

    def _sanitize_parameters(self, alpha=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(**kwargs)
        if alpha is not None:
            _check_alpha(alpha)
            forward = {**forward, "alpha": alpha}
        return preprocess, forward, postprocess

    def _forward(self, model_inputs, alpha=None):
        if alpha is None:
            return super()._forward(model_inputs)
        return self.model(**model_inputs, alpha=alpha)


# Every save_pretrained copies both code files beside the weights (the auto_map itself comes
# from RewardConfig and names all three Auto classes).
RewardConfig.register_for_auto_class()
RewardModel.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "RewardConfig", "RewardModel", "RewardModelOutput", "RewardPipeline", "bert_style_last_layer", "first_attended",
    "last_layer_one_row", "mse_loss", "pairwise_loss", "pool", "ranking_loss",
]
