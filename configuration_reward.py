"""Configuration of a reward model: a pretrained encoder (or decoder) plus a one-output regression head.

This file is uploaded to the Hugging Face Hub beside the weights (remote code) and must import
only torch, transformers and `modeling_reward.py`.

What the numbers mean (kept here so that it travels with every published model):
    raw reward      r(prompt, response): the head's output. Only differences between rewards of the
                    same model mean something: P(a is preferred to b) = sigmoid((r_a - r_b) / T)
                    (Bradley-Terry), with T = `calibration_temperature` when calibration stored one, else 1.
    model output    `logits = alpha * r` (what `model(...)`, `pipeline` and TRL see). `alpha` is a
                    pure multiplier, e.g. to put rewards on the scale an RL algorithm expects.
    normalized      (r - reward_mean) / reward_std with the statistics of the training responses;
                    opt-in (`normalize_rewards=True`), so 0 means "an average training response".
"""

from __future__ import annotations

import math

import transformers
from transformers import AutoConfig, PretrainedConfig

POOLING_CHOICES = ("cls", "mean", "last")

# Written into every config.json so that all three Auto classes find the remote code.
# (`register_for_auto_class` alone would record only the last class registered.)
AUTO_MAP = {
    "AutoConfig": "configuration_reward.RewardConfig",
    "AutoModel": "modeling_reward.RewardModel",
    "AutoModelForSequenceClassification": "modeling_reward.RewardModel",
}

def _custom_pipelines() -> dict:
    """Read by `pipeline("text-classification", model=repo, trust_remote_code=True)` from the loaded
    config: it then builds `modeling_reward.RewardPipeline`, which takes `alpha=` per call.
    (transformers' own pipeline hands options it does not know to the tokenizer, which dropped
    `alpha=10` without a word.) A new dict on every call: `pipeline()` replaces the class names in
    what it reads with the classes themselves, and a shared dict would then no longer save as JSON."""
    return {
        "text-classification": {
            "impl": "modeling_reward.RewardPipeline",
            "pt": ["AutoModelForSequenceClassification"],
            "type": "text",
        }
    }


# Backbones whose natural summary token is the last one (causal decoders).
_DECODER_HINTS = ("ForCausalLM", "LMHeadModel")
_DECODER_TYPES = frozenset({"gpt2", "opt", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3",
                            "gpt_neox", "gptj", "falcon", "bloom"})
# In transformers' causal-LM table without a masked-LM class, yet their AutoModel reads both ways.
_NOT_CAUSAL = frozenset({"xlnet", "bert-generation"})


def _causal_lm_types() -> frozenset:
    """Model types transformers has a causal-LM class for and no masked-LM class (BERT and RoBERTa
    have both): the decoder-only families, read from transformers' own table so that a family our
    list does not name (gpt_neo, olmo2, qwen3_moe, smollm3, ...) counts too. Empty if the table moved."""
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:
        return frozenset()
    return frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - frozenset(MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def _has_decoder_architecture(backbone_config: PretrainedConfig) -> bool:
    """The checkpoint was saved from a language-model head class (GPT2LMHeadModel, LlamaForCausalLM)."""
    architectures = getattr(backbone_config, "architectures", None) or []
    return any(hint in arch for arch in architectures for hint in _DECODER_HINTS)


def is_causal_decoder(backbone_config: PretrainedConfig) -> bool:
    """True when the backbone's token states are causal: token i has attended to tokens <= i only,
    so the first token's state says nothing about the rest of the text. Encoder-decoders (their
    decoder also reads the whole encoder) and decoders run with bidirectional attention are not."""
    model_type = getattr(backbone_config, "model_type", "")
    if (model_type in _NOT_CAUSAL or getattr(backbone_config, "is_encoder_decoder", False)
            or getattr(backbone_config, "use_bidirectional_attention", False)):
        return False
    if getattr(backbone_config, "is_decoder", False) or _has_decoder_architecture(backbone_config):
        return True
    return model_type in _DECODER_TYPES or model_type in _causal_lm_types()


def _default_pooling(backbone_config: PretrainedConfig) -> str:
    """`cls` for encoders (BERT's [CLS] sees the whole text), `last` for causal decoders (only the
    last token has attended to everything) and for checkpoints of a language-model head class
    (XLNet's own summary token is its last)."""
    return "last" if is_causal_decoder(backbone_config) or _has_decoder_architecture(backbone_config) else "cls"


def check_pooling_reads_the_text(backbone_config: PretrainedConfig, pooling: str) -> None:
    """Refuse `cls` pooling on a causal decoder: its first token has attended to itself alone, so
    every response got the reward of the prompt's first token (all ties with a BOS token) and
    training reported a loss of log 2 and an accuracy of noise, without a word. Called where a new
    reward model is put on a backbone; a saved config is loaded as it is."""
    if pooling == "cls" and is_causal_decoder(backbone_config):
        raise ValueError(
            f"pooling 'cls' reads the first token, and in a causal decoder ({backbone_config.model_type}) that token "
            "has seen nothing after it: every response would get the same reward. Use pooling 'last' (the "
            "default for decoders) or 'mean'."
        )


# transformers 5 writes a rotary backbone's settings as `rope_parameters`; 4.x reads its own names
# and takes its defaults for the ones missing, so a Qwen2 (theta 1e6) or Llama 3 (500000, llama3
# scaling) backbone loaded there without a word and gave other rewards. README: loads with 4.57.
_TRANSFORMERS_4 = int(transformers.__version__.split(".")[0]) < 5
# 4.x names of the rotary base, per model type where it is not `rope_theta`.
_THETA_NAMES_4 = {"gpt_neox": "rotary_emb_base"}
_PARTIAL_NAMES_4 = {"gpt_neox": "rotary_pct"}
# Per-layer-type rotary settings (5.x nests them by layer type): 4.x names of each layer type's base.
_LAYER_THETA_NAMES_4 = {
    "modernbert": {"full_attention": "global_rope_theta", "sliding_attention": "local_rope_theta"},
    "gemma3_text": {"full_attention": "rope_theta", "sliding_attention": "rope_local_base_freq"},
}


def _rope_for_transformers_4(model_type: str, values: dict) -> dict:
    """The backbone dict with `rope_parameters` (transformers 5) spelled as transformers 4.x reads it:
    `rope_theta` (or the type's own name), `partial_rotary_factor` and, for a scaled rope,
    `rope_scaling`. A layout 4.x has no names for is refused rather than loaded with default
    rotary settings (wrong rewards)."""
    rope = values.get("rope_parameters")
    if not isinstance(rope, dict):
        return values
    values = {key: value for key, value in values.items() if key != "rope_parameters"}
    refusal = (f"RewardConfig: this model's {model_type!r} backbone was saved by transformers 5 with rotary "
               f"settings {rope} that transformers {transformers.__version__} cannot read (it would use its "
               "defaults and give other rewards). Load it with transformers>=5.3.")
    if rope and all(isinstance(layer, dict) for layer in rope.values()):  # per layer type
        names = _LAYER_THETA_NAMES_4.get(model_type, {})
        for layer_type, layer in rope.items():
            layer = dict(layer)
            if layer_type not in names or "rope_theta" not in layer:
                raise ValueError(refusal)
            values[names[layer_type]] = layer.pop("rope_theta")
            if layer.get("rope_type", "default") != "default":
                if layer_type != "full_attention" or model_type != "gemma3_text":  # 4.x scales Gemma 3's global layers only
                    raise ValueError(refusal)
                values["rope_scaling"] = {**layer, "type": layer["rope_type"]}
        return values
    rope = dict(rope)
    if "rope_theta" in rope:
        values[_THETA_NAMES_4.get(model_type, "rope_theta")] = rope.pop("rope_theta")
    if "partial_rotary_factor" in rope:
        values[_PARTIAL_NAMES_4.get(model_type, "partial_rotary_factor")] = rope.pop("partial_rotary_factor")
    if rope.get("rope_type", "default") != "default":
        values["rope_scaling"] = {**rope, "type": rope["rope_type"]}  # "type": the key older 4.x checks read
    return values


def _as_backbone_config(backbone_config: PretrainedConfig | dict | None) -> PretrainedConfig:
    """Accept a config object, its `to_dict()` form (as read back from config.json), or None (BERT-base)."""
    if backbone_config is None:
        return AutoConfig.for_model("bert")
    if isinstance(backbone_config, PretrainedConfig):
        return backbone_config
    if isinstance(backbone_config, dict):
        values = dict(backbone_config)
        model_type = values.pop("model_type", None)
        if not model_type:
            raise ValueError("RewardConfig: `backbone_config` dict needs a `model_type` (e.g. 'bert').")
        values.pop("transformers_version", None)
        if _TRANSFORMERS_4:
            values = _rope_for_transformers_4(model_type, values)
        return AutoConfig.for_model(model_type, **values)
    raise TypeError(
        "RewardConfig: `backbone_config` must be a PretrainedConfig, a dict with `model_type`, or None; "
        f"got {type(backbone_config).__name__}."
    )


def real_number(value) -> float | None:
    """`value` as a plain float when it is a number, Python's or numpy's (np.float32(2)), else None:
    booleans (numpy's too) and text are not numbers here. The one rule of the config's fields and of
    the forward's per-call alpha (a float is what config.json can hold). Duck-typed: this file may
    import only torch, transformers and the standard modules the Hub files already use."""
    if isinstance(value, (bool, str, bytes)) or str(getattr(value, "dtype", "")) in ("bool", "torch.bool"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check_positive_finite(name: str, value: float | None, allow_none: bool) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"RewardConfig: `{name}` must be a number, got None.")
    number = real_number(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"RewardConfig: `{name}` must be a finite number, got {value!r}.")
    if number <= 0:
        raise ValueError(f"RewardConfig: `{name}` must be > 0, got {value!r}.")
    return number


def _check_reward_mean(value: float | None) -> float | None:
    """A finite number (as float) or None."""
    number = None if value is None else real_number(value)
    if value is not None and (number is None or not math.isfinite(number)):
        raise ValueError(f"RewardConfig: `reward_mean` must be a finite number or None, got {value!r}.")
    return number


def _check_pooling(value: str) -> str:
    if value not in POOLING_CHOICES:
        raise ValueError(f"RewardConfig: `pooling` must be one of {POOLING_CHOICES}, got {value!r}.")
    return value


def _check_head_dropout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"RewardConfig: `head_dropout` must be in [0, 1), got {value!r}.")
    return value


TRAINED_OBJECTIVES = ("pairwise", "mse", "ranking")


class RewardConfig(PretrainedConfig):
    """Configuration for `RewardModel`.

    Args:
        backbone_config: config of the encoder/decoder that reads `(prompt, response)`; any model
            `AutoModel` builds. A dict (with `model_type`) or config object; BERT-base when None.
        alpha: inference-time multiplier (> 0): the model returns `alpha * reward`. Default 1.0.
        pooling: how the token states become one vector: "cls" (first attended token; encoders),
            "mean" (mean over attended tokens) or "last" (last attended token; decoders).
            Default: "last" for causal decoders, "cls" otherwise.
        head_dropout: dropout before the regression head (training only). Default: the backbone's
            `hidden_dropout_prob` when it has one, else 0.1.
        reward_mean, reward_std: statistics of the raw reward over the training responses, stored
            after training so scores can be read on a known scale.
        normalize_rewards: when True the model outputs `alpha * (r - reward_mean) / reward_std`.
        calibration_temperature: Bradley-Terry temperature T fitted on held-out pairs
            (calibration): P(a > b) = sigmoid((r_a - r_b) / T). None means uncalibrated (T = 1).
            (Not `temperature`: that is a generation setting, which transformers 5 refuses to save
            in a model config and transformers 4 silently resets to 1.0 on load. A config.json
            written with the old key `temperature` is read into this field.)
        trained_max_length: tokens per (prompt, response) the model was trained with, stored by
            `rewardkit train`; rewardkit's scoring defaults to it, so a model trained at 128 tokens
            is not scored at 512 unless asked. (Named so because a config's `max_length` is a
            generation setting that transformers refuses to save.) None: not recorded.
        trained_objective: what `rewardkit train` trained the head on: "pairwise" or "ranking"
            (preferences: only reward differences mean something) or "mse" (the reward predicts an
            annotated score on its own scale). Explanations of the outputs read it. None: not recorded.

    Example:
        >>> from transformers import BertConfig
        >>> config = RewardConfig(backbone_config=BertConfig(hidden_size=32, num_hidden_layers=2,
        ...                       num_attention_heads=2, intermediate_size=37), alpha=2.0)
        >>> config.pooling, config.num_labels, config.problem_type
        ('cls', 1, 'regression')
    """

    model_type = "reward_model"
    # Class attribute (not an instance field): transformers recurses into sub-configs through it,
    # e.g. to set the attention implementation on the backbone.
    sub_configs = {"backbone_config": AutoConfig}

    def __init__(
        self,
        backbone_config: PretrainedConfig | dict | None = None,
        alpha: float = 1.0,
        pooling: str | None = None,
        head_dropout: float | None = None,
        reward_mean: float | None = None,
        reward_std: float | None = None,
        normalize_rewards: bool = False,
        calibration_temperature: float | None = None,
        trained_max_length: int | None = None,
        trained_objective: str | None = None,
        **kwargs,
    ):
        legacy_temperature = kwargs.pop("temperature", None)  # the key before it was renamed
        if calibration_temperature is None:
            calibration_temperature = legacy_temperature
        backbone_config = _as_backbone_config(backbone_config)
        if pooling is None:
            pooling = _default_pooling(backbone_config)
        _check_pooling(pooling)
        if head_dropout is None:
            head_dropout = getattr(backbone_config, "hidden_dropout_prob", None)
            head_dropout = 0.1 if head_dropout is None else head_dropout
        _check_head_dropout(head_dropout)
        # > 0: alpha only rescales. A negative alpha would invert every ranking that pipeline, TRL and
        # best-of-n make from the model output, while P(a > b) (raw rewards) kept the old order.
        alpha = _check_positive_finite("alpha", alpha, allow_none=False)
        reward_mean = _check_reward_mean(reward_mean)
        reward_std = _check_positive_finite("reward_std", reward_std, allow_none=True)
        calibration_temperature = _check_positive_finite("calibration_temperature", calibration_temperature,
                                                         allow_none=True)
        if trained_max_length is not None and (
            isinstance(trained_max_length, bool) or not isinstance(trained_max_length, int) or trained_max_length < 1
        ):
            raise ValueError(f"RewardConfig: `trained_max_length` must be a positive whole number or None, "
                             f"got {trained_max_length!r}.")
        if trained_objective not in (None, *TRAINED_OBJECTIVES):
            raise ValueError(f"RewardConfig: `trained_objective` must be one of {TRAINED_OBJECTIVES} or None, "
                             f"got {trained_objective!r}.")
        if normalize_rewards and (reward_mean is None or reward_std is None):
            raise ValueError(
                "RewardConfig: `normalize_rewards=True` needs `reward_mean` and `reward_std` "
                "(they are stored by `rewardkit train`)."
            )

        self.backbone_config = backbone_config
        self.alpha = float(alpha)
        self.pooling = pooling
        self.head_dropout = float(head_dropout)
        self.reward_mean = reward_mean
        self.reward_std = reward_std
        self.normalize_rewards = bool(normalize_rewards)
        self.calibration_temperature = calibration_temperature
        self.trained_max_length = trained_max_length
        self.trained_objective = trained_objective

        # One regression output that `pipeline` returns raw (no sigmoid), labelled "reward".
        num_labels = kwargs.pop("num_labels", 1)
        if num_labels != 1:
            raise ValueError(f"RewardConfig: a reward model has exactly one output; got num_labels={num_labels}.")
        problem_type = kwargs.pop("problem_type", "regression")
        if problem_type != "regression":
            raise ValueError(f"RewardConfig: `problem_type` must be 'regression', got {problem_type!r}.")
        kwargs["id2label"] = {0: "reward"}
        kwargs["label2id"] = {"reward": 0}
        kwargs["problem_type"] = "regression"
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        # The special tokens of the backbone matter to padding-aware pooling and to pipelines.
        for token_key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if kwargs.get(token_key) is None and getattr(backbone_config, token_key, None) is not None:
                kwargs[token_key] = getattr(backbone_config, token_key)
        # Keep the attention implementation the backbone was loaded with (e.g. "sdpa"): the
        # composite config otherwise resets it on its sub-configs.
        backbone_attention = getattr(backbone_config, "_attn_implementation", None)
        if kwargs.get("attn_implementation") is None and backbone_attention is not None:
            kwargs["attn_implementation"] = backbone_attention
        super().__init__(**kwargs)

    def __setattr__(self, name, value):
        # `from_pretrained(repo, alpha=10)` (and AutoConfig's, and `config.alpha = ...`) sets these
        # fields after `__init__`: they get the same checks, so `alpha=0` or `alpha=-1` at load
        # time is refused as in the constructor instead of silently zeroing or inverting every score.
        if name == "alpha":
            value = _check_positive_finite("alpha", value, allow_none=False)
        elif name in ("reward_std", "calibration_temperature"):
            value = _check_positive_finite(name, value, allow_none=True)
        elif name == "reward_mean":
            value = _check_reward_mean(value)
        elif name == "pooling":  # else `pooling="max"` loaded and failed only at the first forward
            value = _check_pooling(value)
        elif name == "head_dropout":
            value = _check_head_dropout(value)
        elif name == "problem_type" and value != "regression":
            # `from_pretrained(repo, problem_type="single_label_classification")` was taken, and the
            # pipeline then returned sigmoid(alpha * r) as the "reward".
            raise ValueError(f"RewardConfig: `problem_type` must be 'regression' (the pipeline then returns the "
                             f"reward itself, no sigmoid), got {value!r}.")
        super().__setattr__(name, value)

    @property
    def custom_pipelines(self) -> dict:
        """`_custom_pipelines()`, a fresh copy on every read. A property, not a config.json field:
        `pipeline()` always reads this class (remote code)."""
        return _custom_pipelines()

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's token states (what the head reads)."""
        names = ("hidden_size", "d_model", "n_embd", "dim")
        if self.backbone_config.model_type == "opt":  # OPT projects its output to the embedding width
            names = ("word_embed_proj_dim",) + names
        for name in names:
            value = getattr(self.backbone_config, name, None)
            if isinstance(value, int):
                return value
        raise ValueError(
            f"RewardConfig: cannot find the hidden size of backbone type {self.backbone_config.model_type!r}."
        )
