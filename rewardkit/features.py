"""Tokenize (prompt, response) pairs for a reward model, and collate them with dynamic padding.

Truncation follows the contract: when a pair is too long, the prompt is cut from the LEFT (the
latest turns of a dialogue are what the response answers) and the response is kept whole; the
response is cut (from the right) only when it alone exceeds the budget, and then a quarter of the
budget still goes to the end of the prompt. Right truncation, the transformers default, cuts the
part where chosen and rejected differ: on HH-RLHF at 256 tokens it turns about 10% of pairs into
identical inputs.
"""

from __future__ import annotations

import copy
import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 512
MIN_MAX_LENGTH = 8  # special tokens plus a few tokens of text
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# Long texts are tokenized through a window of their characters (see `PairEncoder`): it starts at
# this many characters per token wanted and grows by _WINDOW_GROWTH until it holds enough tokens.
_WINDOW_CHARS_PER_TOKEN = 8
_WINDOW_GROWTH = 4
# Words that end (prompt: start) this close to a window's cut edge, or are among the last (first)
# _EDGE_WORDS of the window, may tokenize differently in the whole text: they are never used.
_EDGE_CHARS = 64
_EDGE_WORDS = 2


def requested_max_length(model_config=None, requested: int | None = None,
                         backbone_length: int | None = None) -> tuple[int, str]:
    """The length asked for, before any cap, and where it comes from (training summaries name it):
    `requested`, else the length the model was trained with (`trained_max_length` in a rewardkit
    config), else `backbone_length` (the length a sentence-transformers backbone declares it works
    at), else 512."""
    if requested is not None:
        return requested, "--max-length"
    trained = getattr(model_config, "trained_max_length", None)
    if isinstance(trained, int) and trained > 0:
        return trained, "the length the base model was trained at"
    if isinstance(backbone_length, int) and backbone_length > 0:
        return backbone_length, "the backbone's sentence_bert_config.json max_seq_length"
    return DEFAULT_MAX_LENGTH, "the default"


def check_max_length_type(value, name: str = "max_length") -> int | None:
    """`max_length` must be None or a whole number: 64.5 passed every check and then failed deep in
    the tokenizer ("'float' object cannot be interpreted as an integer") on the first text it had
    to cut, and "64" failed with a bare TypeError; a bool is no length either. Returns it as a plain
    int (a numpy integer too: it is stored in config.json). The one rule for scoring and training
    (`RewardTrainingArguments`, whose `name` is the flag, --max-length)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise ValueError(f"{name} must be a whole number of tokens, got {value!r}.")
    return None if value is None else int(value)


def resolve_max_length(tokenizer, model_config=None, requested: int | None = None,
                       backbone_length: int | None = None) -> int:
    """Tokens per (prompt, response): `requested_max_length`, capped by the tokenizer's
    `model_max_length` and the backbone's position embeddings (RoBERTa reserves padding_idx + 1);
    an explicit `requested` over the cap is said in a warning."""
    limits = []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limits.append(model_max)
    backbone = getattr(model_config, "backbone_config", model_config)
    positions = getattr(backbone, "max_position_embeddings", None) or getattr(backbone, "n_positions", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(backbone, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "longformer"}:
            positions -= (getattr(backbone, "pad_token_id", 1) or 1) + 1
        limits.append(positions)
    ceiling = min(limits) if limits else DEFAULT_MAX_LENGTH
    requested = check_max_length_type(requested)
    wanted, _ = requested_max_length(model_config, requested, backbone_length)
    if requested is None:
        return min(ceiling, wanted)
    if requested < MIN_MAX_LENGTH:
        raise ValueError(f"max_length must be at least {MIN_MAX_LENGTH} tokens, got {requested}.")
    if requested > ceiling:
        logger.warning("max_length %d exceeds what the model takes (%d); using %d.", requested, ceiling, ceiling)
        return ceiling
    return requested


@dataclass
class TruncationStats:
    """How often truncation happened, so it can be reported instead of happening silently."""

    texts: int = 0
    prompt_cut: int = 0
    response_cut: int = 0

    def describe(self) -> str:
        return (f"{self.texts} texts: {self.prompt_cut} had the start of the prompt cut, "
                f"{self.response_cut} had the end of the response cut")

    def add(self, other: TruncationStats, sign: int = 1) -> None:
        """Add `other`'s counts to these (one call's counts into a whole file's); `sign=-1` takes
        them off (texts encoded, then left out of training)."""
        self.texts += sign * other.texts
        self.prompt_cut += sign * other.prompt_cut
        self.response_cut += sign * other.response_cut


@dataclass
class PairEncoder:
    """Encodes (prompt, response) as `tokenizer(prompt, response)` would, with our truncation.

    Uses the fast tokenizer's Rust backend directly (batch encoding, exact special-token template);
    falls back to the Python tokenizer API for tokenizers without one.

    A pair never holds more than `max_length` tokens, so only the first `budget + 1` tokens of a
    response (cut on the right) and the last `budget + 1` of a prompt (cut on the left) can matter:
    the +1 tells "longer than the budget" apart, which is all the truncation counts need. Texts
    longer than `_WINDOW_CHARS_PER_TOKEN` characters per such token are tokenized through a window
    of their start (response) or end (prompt), grown until it holds enough tokens away from its cut
    edge. Tokenizing a 300 MB field whole took minutes and ~20 GB before truncation threw nearly
    all of it away; the ids are the same as whole-text tokenization's (tests/test_features.py
    compares them by property test). Only texts whose tokenizer reads them as one word (a
    pre-tokenizer-less BPE, or a word of a whole window) still cost their full length.

    Example:
        >>> encoder = PairEncoder(tokenizer, max_length=256)  # doctest: +SKIP
        >>> encoder.encode(["Hi?"], ["Hello!"])[0]["input_ids"]  # [CLS] hi ? [SEP] hello ! [SEP]  # doctest: +SKIP
    """

    tokenizer: Any
    max_length: int
    stats: TruncationStats = field(default_factory=TruncationStats)

    def __post_init__(self) -> None:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # A private copy: tokenizer.json files often carry padding/truncation settings of their own.
            backend = copy.deepcopy(backend)
            backend.no_truncation()
            backend.no_padding()
        self._backend = backend
        self._special = self.tokenizer.num_special_tokens_to_add(pair=True)
        self._budget = self.max_length - self._special
        if self._budget < 4:
            raise ValueError(f"max_length {self.max_length} leaves no room for text after special tokens.")
        self._returns_token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        # An added token ("[SEP]", "<|im_end|>") cut by a window's edge must lie inside the edge.
        added = getattr(self.tokenizer, "get_added_vocab", dict)()
        self._edge_chars = _EDGE_CHARS + max(map(len, added), default=0)

    def _split_budget(self, prompt_len: int, response_len: int) -> tuple[int, int]:
        """How many prompt tokens (kept from the end) and response tokens (from the start) fit."""
        if prompt_len + response_len <= self._budget:
            return prompt_len, response_len
        if response_len <= self._budget:
            return self._budget - response_len, response_len
        keep_prompt = min(prompt_len, self._budget // 4)
        return keep_prompt, self._budget - keep_prompt

    def encode(self, prompts: Sequence[str], responses: Sequence[str], *,
               counts: TruncationStats | None = None,
               cuts: list[tuple[bool, bool]] | None = None) -> list[dict[str, list[int]]]:
        """Encode pairs; returns one dict per pair with input_ids, attention_mask (and
        token_type_ids for tokenizers that use them), unpadded.

        `counts` also receives this call's truncation counts (beside the running `stats`): exact
        even while other threads encode with the same encoder, where a difference of `stats`
        taken before and after would also count their texts. `cuts` receives (prompt cut,
        response cut) per pair, in order: which texts the counts are of."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
        if self._backend is None:
            return [self._encode_slow(p, r, counts, cuts) for p, r in zip(prompts, responses)]
        prompt_encodings = self._encode_windowed(prompts, from_end=True)
        response_encodings = self._encode_windowed(responses, from_end=False)
        processor = self._backend.post_processor
        encoded = []
        for prompt_enc, response_enc in zip(prompt_encodings, response_encodings):
            keep_prompt, keep_response = self._split_budget(len(prompt_enc.ids), len(response_enc.ids))
            self._count(len(prompt_enc.ids) - keep_prompt, len(response_enc.ids) - keep_response, counts, cuts)
            if keep_prompt < len(prompt_enc.ids):
                _cut(prompt_enc, keep_prompt, "left")
            if keep_response < len(response_enc.ids):
                _cut(response_enc, keep_response, "right")
            if processor is not None:
                merged = processor.process(prompt_enc, response_enc, add_special_tokens=True)
            else:
                from tokenizers import Encoding

                merged = Encoding.merge([prompt_enc, response_enc])
            item = {"input_ids": merged.ids, "attention_mask": merged.attention_mask}
            if self._returns_token_types:
                item["token_type_ids"] = merged.type_ids
            encoded.append(item)
        return encoded

    def _encode_windowed(self, texts: Sequence[str], from_end: bool) -> list:
        """Backend encodings (no special tokens) of `texts`, each either whole or holding exactly
        the first (`from_end`: last) `budget + 1` tokens of the whole text's encoding.

        A text longer than the window is encoded from its first (last) `size` characters; the words
        of that window away from its cut edge (`_safe_tokens`) are words of the whole text, which
        the tokenizer's model encodes word by word. Too few such tokens: a window 4x as large."""
        need = self._budget + 1
        size = need * _WINDOW_CHARS_PER_TOKEN
        encodings: list = [None] * len(texts)
        pending = list(range(len(texts)))
        while pending:
            windows = [texts[i] if len(texts[i]) <= size else texts[i][-size:] if from_end else texts[i][:size]
                       for i in pending]
            waiting = []
            for i, window, encoding in zip(pending, windows, self._backend.encode_batch(windows, add_special_tokens=False)):
                if len(window) == len(texts[i]):
                    encodings[i] = encoding
                elif _safe_tokens(encoding, len(window), _edge_zone(window, self._edge_chars, from_end), from_end) >= need:
                    encoding.truncate(need, direction="left" if from_end else "right")
                    encodings[i] = encoding
                else:
                    waiting.append(i)
            pending, size = waiting, size * _WINDOW_GROWTH
        return encodings

    def _count(self, prompt_removed: int, response_removed: int, counts: TruncationStats | None = None,
               cuts: list[tuple[bool, bool]] | None = None) -> None:
        if cuts is not None:
            cuts.append((prompt_removed > 0, response_removed > 0))
        for stats in (self.stats, counts) if counts is not None else (self.stats,):
            stats.texts += 1
            stats.prompt_cut += prompt_removed > 0
            stats.response_cut += response_removed > 0

    def _encode_slow(self, prompt: str, response: str, counts: TruncationStats | None = None,
                     cuts: list[tuple[bool, bool]] | None = None) -> dict[str, list[int]]:
        """Tokenizers without a Rust backend: token-level truncation, then the tokenizer's template."""
        prompt_ids = self._ids_slow(prompt, from_end=True)
        response_ids = self._ids_slow(response, from_end=False)
        keep_prompt, keep_response = self._split_budget(len(prompt_ids), len(response_ids))
        self._count(len(prompt_ids) - keep_prompt, len(response_ids) - keep_response, counts, cuts)
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:]
        response_ids = response_ids[:keep_response]
        item = self.tokenizer.prepare_for_model(prompt_ids, response_ids, add_special_tokens=True)
        return {key: list(item[key]) for key in MODEL_INPUT_KEYS if key in item}

    def _ids_slow(self, text: str, from_end: bool) -> list[int]:
        """`_encode_windowed` for a Python tokenizer, which gives no word offsets: the window is cut
        just before (prompt: at) a plain space, where Python tokenizers split words, and its first
        (last) `budget + 1` ids are used only when `_EDGE_WORDS * 8` more ids stand between them and
        the cut. A window with no space beyond its size is the whole text."""
        need = self._budget + 1
        size = need * _WINDOW_CHARS_PER_TOKEN
        while len(text) > size:
            cut = text.rfind(" ", 0, len(text) - size + 1) if from_end else text.find(" ", size)
            if cut <= 0:
                break
            ids = self.tokenizer.encode(text[cut:] if from_end else text[:cut], add_special_tokens=False)
            if len(ids) >= need + _EDGE_WORDS * 8:
                return ids[-need:] if from_end else ids[:need]
            size *= _WINDOW_GROWTH
        return self.tokenizer.encode(text, add_special_tokens=False)


def _cut(encoding, keep: int, direction: str) -> None:
    """Truncate a backend encoding to `keep` tokens, leaving ONE overflowing piece. Truncation keeps
    what it cut as pieces of `keep` tokens, and the post-processor pairs every piece of the prompt
    with every piece of the response: a 3,000-token prompt and response cut to 3 tokens each made a
    million merged encodings (seconds; out of memory for longer texts). A second truncation
    replaces the first's pieces with the one token it cuts."""
    encoding.truncate(keep + 1, direction=direction)
    encoding.truncate(keep, direction=direction)


def _edge_zone(window: str, edge_chars: int, from_end: bool) -> int:
    """How many characters next to a window's cut edge may tokenize differently from the whole text:
    `edge_chars`, and for a window of a text's end (a prompt) also the rest of a run of digits that
    reaches that far. Llama 3's and Qwen's pre-tokenizers split digits into groups of 3 from the
    start of the run, so a window that cut a run regrouped all of it ("1234567" whole is 123|456|7,
    its last 5 digits 345|67): dozens of words, which the few words `_safe_tokens` leaves out at the
    edge did not cover. A window of a text's start groups a cut run as the whole text does."""
    if not from_end:
        return edge_chars
    while edge_chars < len(window) and window[edge_chars].isnumeric():
        edge_chars += 1
    return edge_chars


def _safe_tokens(encoding, window_chars: int, edge_chars: int, from_end: bool) -> int:
    """How many tokens at the start (`from_end`: end) of a window's encoding belong to words that
    end (start) at least `edge_chars` characters from the window's cut edge and are not among its
    last (first) `_EDGE_WORDS` words: a word the edge cut, a whitespace run it shortened, or one
    whose normalization or pre-tokenization looks at the next characters. A word longer than the
    window (or a tokenizer without a pre-tokenizer, which sees one word) gives none."""
    words, offsets = encoding.word_ids, encoding.offsets
    order = range(len(words) - 1, -1, -1) if from_end else range(len(words))
    edge_word = (words[0] if from_end else words[-1]) if words else None
    safe = 0
    for index in order:
        word, (start, end) = words[index], offsets[index]
        near_edge = start < edge_chars if from_end else end > window_chars - edge_chars
        few_words = word is not None and edge_word is not None and abs(word - edge_word) < _EDGE_WORDS
        if near_edge or few_words or word is None:
            break
        safe += 1
    # The tokens counted so far may include the other tokens of the word that stopped the count.
    stop_word = words[order[safe]] if safe < len(words) else None
    while safe and stop_word is not None and words[order[safe - 1]] == stop_word:
        safe -= 1
    return safe


# --------------------------------------------------------------------------------------------------
# Padding and collators
# --------------------------------------------------------------------------------------------------


def pad_batch(items: Sequence[dict[str, list[int]]], pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad to the longest item (dynamic padding): (N, S_max) tensors."""
    longest = max(len(item["input_ids"]) for item in items)
    batch: dict[str, torch.Tensor] = {}
    for key in MODEL_INPUT_KEYS:
        if key not in items[0]:
            continue
        fill = pad_token_id if key == "input_ids" else 0
        rows = []
        for item in items:
            values = list(item[key])
            padding = [fill] * (longest - len(values))
            rows.append(padding + values if padding_side == "left" else values + padding)
        batch[key] = torch.tensor(rows, dtype=torch.long)
    return batch


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return pad


@dataclass
class PairwiseCollator:
    """Chosen then rejected responses stacked in ONE batch of 2B rows, so one forward pass scores
    both (the loss splits the rewards with `chunk(2)`). Adds `margin` (B,) when the data has one."""

    tokenizer: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        items = [f["chosen"] for f in features] + [f["rejected"] for f in features]
        batch = pad_batch(items, _pad_id(self.tokenizer), self.tokenizer.padding_side)
        margins = [f.get("margin") for f in features]
        if any(m is not None for m in margins):
            batch["margin"] = torch.tensor([0.0 if m is None else float(m) for m in margins])
        return batch


@dataclass
class ScalarCollator:
    """(prompt, response, reward) rows: a padded batch plus `labels` (B,)."""

    tokenizer: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["encoded"] for f in features], _pad_id(self.tokenizer), self.tokenizer.padding_side)
        batch["labels"] = torch.tensor([float(f["reward"]) for f in features])
        return batch


@dataclass
class RankingCollator:
    """K ranked responses per prompt, all groups of the batch flattened into one (sum K, S) batch
    (one forward pass), plus `group_sizes` (G,) to rebuild the (G, K_max) reward matrix."""

    tokenizer: Any

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        items = [encoded for f in features for encoded in f["responses"]]
        batch = pad_batch(items, _pad_id(self.tokenizer), self.tokenizer.padding_side)
        batch["group_sizes"] = torch.tensor([len(f["responses"]) for f in features], dtype=torch.long)
        return batch


COLLATORS = {"pairwise": PairwiseCollator, "mse": ScalarCollator, "ranking": RankingCollator}


def encode_rows(rows: Sequence[dict[str, Any]], objective: str, encoder: PairEncoder) -> list[dict[str, Any]]:
    """Normal-form data rows (see `rewardkit.data`) -> features the collators take.

    Each feature also carries `length` (tokens of its longest sequence) for length-grouped batching.
    Tokenizes everything once, in batches, up front: no re-tokenization per epoch.
    """
    if objective == "pairwise":
        prompts = [row["prompt"] for row in rows]
        chosen = encoder.encode(prompts, [row["chosen"] for row in rows])
        rejected = encoder.encode(prompts, [row["rejected"] for row in rows])
        return [
            {"chosen": c, "rejected": r, "margin": row.get("margin"),
             "length": max(len(c["input_ids"]), len(r["input_ids"]))}
            for row, c, r in zip(rows, chosen, rejected)
        ]
    if objective == "mse":
        encoded = encoder.encode([row["prompt"] for row in rows], [row["response"] for row in rows])
        return [{"encoded": e, "reward": row["reward"], "length": len(e["input_ids"])} for row, e in zip(rows, encoded)]
    if objective == "ranking":
        flat_prompts = [row["prompt"] for row in rows for _ in row["responses"]]
        flat = encoder.encode(flat_prompts, [resp for row in rows for resp in row["responses"]])
        features, start = [], 0
        for row in rows:
            group = flat[start:start + len(row["responses"])]
            start += len(row["responses"])
            features.append({"responses": group, "length": max(len(g["input_ids"]) for g in group)})
        return features
    raise ValueError(f"Unknown objective {objective!r}; expected pairwise, mse or ranking.")


def identical_inputs(features: Sequence[dict[str, Any]], objective: str) -> list[int]:
    """Indices of features whose responses encode to the same model input: a pair whose chosen
    and rejected differ only after the --max-length cut (or only in what the tokenizer drops, such
    as case for an uncased vocabulary), or a ranked group with two such responses.

    The data check refuses identical texts (rewardkit.data_formats), but encoding can make
    different texts identical again. Such a pair teaches nothing (its loss is log 2 with zero
    gradient) and, held out, scores as a tie whose accuracy is float noise. A ranked group with
    two identical inputs is flagged whole, as a group holding the same response twice is an
    invalid row. mse rows have no second response to collapse into.
    """
    if objective == "pairwise":
        return [i for i, feature in enumerate(features) if feature["chosen"] == feature["rejected"]]
    if objective == "ranking":
        return [i for i, feature in enumerate(features)
                if len({_input_key(item) for item in feature["responses"]}) < len(feature["responses"])]
    return []


def _input_key(item: dict[str, list[int]]) -> tuple:
    """An encoded response as a hashable value (every model input it has)."""
    return tuple(tuple(item[key]) for key in MODEL_INPUT_KEYS if key in item)
