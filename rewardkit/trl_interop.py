"""Using rewardkit models with TRL (1.16): train one with TRL's `RewardTrainer`, use one as the reward
in GRPO / RLOO.

Both TRL paths see text differently from how a rewardkit model reads it, which matters for encoder
backbones (BERT, RoBERTa, DeBERTa) whose input is the *pair* `[CLS] prompt [SEP] response [SEP]`:

* `RewardTrainer` on raw text concatenates `prompt + chosen` into one string (no separator, no
  segment ids) and appends `eos_token`, which BERT tokenizers do not have (it crashes; with
  `eos_token="[SEP]"` the text ends in a doubled `[SEP]`). It also DROPS pairs longer than
  `max_length` instead of truncating them. `preference_dataset` tokenizes the pairs the rewardkit
  way (left-truncated prompt, whole response, segment ids) into TRL's pre-tokenized columns, and
  `PreferenceCollator` keeps the segment ids that TRL's own collator would lose, so what TRL trains
  on is exactly what `RewardScorer`, `pipeline` and rewardkit's own trainer see.
* GRPO / RLOO given a model path load it with
  `AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, trust_remote_code=True)`
  (fine: rewardkit folders load that way) but score `prompt + completion` as one string tokenized
  with `add_special_tokens=False`: an encoder then sees no [CLS]/[SEP] and scores something it was
  never trained on. `reward_function(path)` gives TRL a reward function that scores the pairs
  correctly (and fast: length-sorted batches). Decoder backbones ("last" pooling) whose tokenizer
  adds no special tokens (GPT-2, Qwen2) read `prompt + completion` as a plain concatenation anyway, so
  the model path is fine for them; BOS-adding tokenizers (Llama, Mistral, OPT) are not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rewardkit.features import PairEncoder, pad_batch, resolve_max_length

logger = logging.getLogger(__name__)

Message = dict[str, str]


# --------------------------------------------------------------------------------------------------
# TRL RewardTrainer: data and collator
# --------------------------------------------------------------------------------------------------


def preference_dataset(rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int | None = None,
                       model_config: Any = None) -> Any:
    """Pairwise rows (`prompt`, `chosen`, `rejected`, optional `margin`; rewardkit's normal form, e.g.
    `load_reward_data(...).rows`) -> a `datasets.Dataset` with TRL's pre-tokenized columns
    `chosen_ids` / `rejected_ids`, plus `chosen_token_type_ids` / `rejected_token_type_ids` for
    tokenizers with segments and `margin` when rows have one.

    TRL skips its own text processing for such a dataset (no EOS appended, no concatenation). Its
    length filter still DROPS pairs longer than `RewardConfig.max_length` (default 1024): every pair
    here fits `max_length`, so nothing is dropped while `RewardConfig.max_length` is at least that
    (or None, no filter).
    """
    from datasets import Dataset

    _check_pairwise(rows)
    max_length = resolve_max_length(tokenizer, model_config, max_length)
    _warn_longer_than_trained(model_config, max_length)
    encoder = PairEncoder(tokenizer, max_length)
    prompts = [row["prompt"] for row in rows]
    chosen = encoder.encode(prompts, [row["chosen"] for row in rows])
    rejected = encoder.encode(prompts, [row["rejected"] for row in rows])
    columns: dict[str, list] = {"chosen_ids": [c["input_ids"] for c in chosen],
                                "rejected_ids": [r["input_ids"] for r in rejected]}
    if chosen and "token_type_ids" in chosen[0]:
        columns["chosen_token_type_ids"] = [c["token_type_ids"] for c in chosen]
        columns["rejected_token_type_ids"] = [r["token_type_ids"] for r in rejected]
    if any(row.get("margin") is not None for row in rows):
        columns["margin"] = [float(row.get("margin") or 0.0) for row in rows]
    logger.info("Tokenized %d pairs for TRL (%s).", len(rows), encoder.stats.describe())
    return Dataset.from_dict(columns)


def _warn_longer_than_trained(model_config: Any, max_length: int) -> None:
    """A rewardkit model's config records the length it was trained at (`trained_max_length`), at
    which `RewardScorer`, `rewardkit evaluate` and the card cut pairs. Cut longer here, TRL trains
    it on pairs that it is then scored on cut shorter, until the config says the new length; `score`
    and `evaluate` warn of a longer length too (`rewardkit.scoring`), this said nothing."""
    trained = getattr(model_config, "trained_max_length", None)
    if isinstance(trained, int) and max_length > trained:
        logger.warning("preference_dataset cuts pairs at %d tokens, longer than the %d this model was trained at "
                       "(trained_max_length in its config, the length RewardScorer, `rewardkit evaluate` and the card "
                       "cut pairs at): once TRL trains it on these pairs, set model.config.trained_max_length = %d "
                       "before saving it.", max_length, trained, max_length)


def _check_pairwise(rows: Sequence[dict[str, Any]]) -> None:
    """Ranked or mse rows (`load_reward_data(...).rows` of such a file) failed with a bare
    KeyError 'chosen'; TRL's RewardTrainer trains on pairs only, so they are refused by row."""
    for number, row in enumerate(rows, 1):
        missing = [key for key in ("prompt", "chosen", "rejected") if key not in row]
        if missing:
            raise ValueError(
                f"Row {number} is not a pairwise row: it has no {', '.join(repr(k) for k in missing)} "
                f"(its columns: {', '.join(map(repr, row))}). TRL's RewardTrainer trains on chosen/rejected "
                "pairs: give rows of a pairwise file (load_reward_data(path, objective='pairwise')); "
                "train ranked or mse data with `rewardkit train`.")


@dataclass
class PreferenceCollator:
    """TRL's preference batch (chosen rows, then rejected rows: `input_ids`, `attention_mask`,
    optional `margin`) plus `token_type_ids` when the dataset has them.

    Use with `trl.RewardConfig(remove_unused_columns=False)`: TRL otherwise drops every column but
    `chosen_ids`, `rejected_ids` and `margin` before the collator sees them.

    `pad_token_id` may be None: decoder tokenizers (GPT-2, Llama) have no pad token, so
    `PreferenceCollator(tokenizer.pad_token_id)` built before TRL sets one gave None and failed at
    the first batch deep in torch. Padding is then id 0; the attention mask hides it from the model
    whatever its id.
    """

    pad_token_id: int | None
    padding_side: str = "right"

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        items = [_item(example, "chosen") for example in examples] + [_item(example, "rejected") for example in examples]
        pad = 0 if self.pad_token_id is None else self.pad_token_id
        batch = pad_batch(items, pad, self.padding_side)
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([float(example["margin"]) for example in examples])
        return batch


def _item(example: dict[str, Any], side: str) -> dict[str, list[int]]:
    ids = list(example[f"{side}_ids"])
    item = {"input_ids": ids, "attention_mask": [1] * len(ids)}
    types = example.get(f"{side}_token_type_ids")
    if types is not None:
        item["token_type_ids"] = list(types)
    return item


# --------------------------------------------------------------------------------------------------
# GRPO / RLOO: a reward function that scores (prompt, completion) pairs the rewardkit way
# --------------------------------------------------------------------------------------------------


def reward_function(model: Any, *, name: str | None = None, **scorer_kwargs: Any) -> Callable[..., list[float]]:
    """A TRL reward function (`reward_funcs=[...]` of `GRPOTrainer` / `RLOOTrainer`) backed by
    `RewardScorer`: scores `(prompt, completion)` as a pair, in the order TRL passes them.

    Args:
        model: a rewardkit model folder or Hub id, or a ready `RewardScorer`.
        name: how TRL logs it (`rewards/<name>/mean`); default "rewardkit".
        **scorer_kwargs: `RewardScorer` options (device, batch_size, max_length, normalize, ...);
            refused beside a ready `RewardScorer`, whose own options apply.

    Conversational prompts/completions (lists of `{"role", "content"}`) are rendered the way
    rewardkit renders conversational training data ("User: ...\\nAssistant:"), so the reward model
    sees the format it was trained on.

    Example:
        >>> from trl import GRPOConfig, GRPOTrainer  # doctest: +SKIP
        >>> trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", train_dataset=prompts,  # doctest: +SKIP
        ...                       reward_funcs=[reward_function("you/my-reward-model")], args=GRPOConfig(...))
    """
    from rewardkit.scoring import RewardScorer

    if isinstance(model, RewardScorer) and scorer_kwargs:  # they would be silently ignored
        raise TypeError(f"reward_function got a ready RewardScorer and scorer options {sorted(scorer_kwargs)}: "
                        "pass the options to RewardScorer(...) or give reward_function a model path.")
    scorer = model if isinstance(model, RewardScorer) else RewardScorer(model, **scorer_kwargs)

    def rewardkit_reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        pairs = [as_pair(prompt, completion) for prompt, completion in zip(prompts, completions)]
        return scorer.score([p for p, _ in pairs], [c for _, c in pairs])

    rewardkit_reward.__name__ = name or "rewardkit"
    rewardkit_reward.scorer = scorer  # type: ignore[attr-defined]
    return rewardkit_reward


def as_pair(prompt: str | list[Message], completion: str | list[Message]) -> tuple[str, str]:
    """One TRL (prompt, completion), text or conversational, as rewardkit's (prompt, response) text."""
    from rewardkit.data_formats import render_conversation

    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt, completion
    turns = _turns(prompt) if not isinstance(prompt, str) else (("user", prompt),)
    if isinstance(completion, str):
        return render_conversation(turns), completion
    replies = _turns(completion)
    if not replies:
        return render_conversation(turns), ""
    return render_conversation(turns + replies[:-1]), replies[-1][1]


def _turns(messages: Sequence[Message]) -> tuple[tuple[str, str], ...]:
    return tuple((str(m.get("role", "")).strip().lower(), _content_text(m.get("content", ""))) for m in messages)


def _content_text(content: Any) -> str:
    """Message content as text; multimodal content lists keep their text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)
