"""Fast batched scoring with a reward model: score, compare, rank, best-of-n.

Why it is fast (measured in benchmarks/score_throughput.py): texts are tokenized once in a batch,
sorted by length, and cut into batches by a *token budget* (rows x longest row) instead of a fixed
count, so short texts travel in large batches and long ones in small batches, with almost no
padding; `torch.inference_mode()`; SDPA attention; results are put back in the caller's order.

Which number is which:
    raw reward   r: the head's output; differences give P(a > b) = sigmoid((r_a - r_b) / T).
    score        what `score()` returns: the model output `alpha * r`, or
                 `alpha * (r - reward_mean) / reward_std` when normalization is on.
    compare      P(a > b) from raw rewards and the stored calibration temperature T (1 if none).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rewardkit.features import PairEncoder, pad_batch, resolve_max_length

logger = logging.getLogger(__name__)

CPU_TOKEN_BUDGET = 8192  # tokens per batch; beyond ~4 rows per batch a 2-core CPU gains little
GPU_TOKEN_BUDGET = 65536
PROGRESS_MIN_TEXTS = 2048


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def token_budget_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with rows x longest row <= token_budget
    (a row longer than the budget gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        too_many = max_batch_size is not None and len(current) >= max_batch_size
        if current and ((len(current) + 1) * longest > token_budget or too_many):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def score_encoded(
    model,
    items: Sequence[dict[str, list[int]]],
    *,
    pad_token_id: int,
    padding_side: str = "right",
    token_budget: int | None = None,
    batch_size: int | None = None,
    output: str = "logits",
    show_progress: bool | None = None,
) -> np.ndarray:
    """Score already-encoded inputs; returns (N,) float64 in the order of `items`.

    Args:
        output: "logits" (alpha-scaled model output) or "rewards" (raw head output).
        token_budget: tokens per batch (default by device); `batch_size` caps rows per batch.
    """
    if not items:
        return np.zeros(0)
    device = next(model.parameters()).device
    if token_budget is None:
        token_budget = GPU_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET
    lengths = [len(item["input_ids"]) for item in items]
    batches = token_budget_batches(lengths, token_budget, batch_size)
    results = np.empty(len(items), dtype=np.float64)
    progress = None
    if show_progress or (show_progress is None and len(items) >= PROGRESS_MIN_TEXTS):
        from tqdm.auto import tqdm

        progress = tqdm(total=len(items), desc="Scoring", unit="text")
    was_training = model.training
    model.eval()
    try:
        for indices in batches:
            batch = pad_batch([items[i] for i in indices], pad_token_id, padding_side)
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(**batch)
            values = outputs["rewards"] if output == "rewards" else outputs["logits"]
            results[indices] = values[:, 0].float().cpu().numpy()
            if progress is not None:
                progress.update(len(indices))
    finally:
        model.train(was_training)
        if progress is not None:
            progress.close()
    return results


class RewardScorer:
    """Score (prompt, response) pairs with a reward model, fast, in the caller's order.

    Args:
        model_or_path: a local folder or Hub repo id of a rewardkit model, or a loaded `RewardModel`
            (then pass `tokenizer`). Folders are loaded with the installed `modeling_reward`
            classes: no remote code is executed.
        device: "cpu", "cuda", ...; default CUDA when available.
        batch_size: max rows per batch (default: limited by the token budget only).
        max_length: max tokens per pair (default: the model's limit, at most 512); prompts are cut
            from the left, responses kept.
        dtype: e.g. torch.bfloat16 on GPU (default float32; bf16 is slower on CPUs without AMX).
        normalize: return (r - reward_mean) / reward_std (times alpha) from the stored statistics.
        token_budget: tokens per batch (rows x longest row).

    Example:
        >>> scorer = RewardScorer("reward-model-demo")  # doctest: +SKIP
        >>> scorer.score(["What is 2+2?"], ["4"])  # doctest: +SKIP
        [3.1]
        >>> scorer.compare("What is 2+2?", "4", "5")  # P("4" is preferred)  # doctest: +SKIP
        0.97
    """

    def __init__(
        self,
        model_or_path: Any,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        max_length: int | None = None,
        *,
        tokenizer: Any = None,
        dtype: torch.dtype | None = None,
        normalize: bool = False,
        token_budget: int | None = None,
        show_progress: bool | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        from modeling_reward import RewardModel

        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.device = pick_device(device)
        if isinstance(model_or_path, (str, os.PathLike)):
            source = str(model_or_path)
            check_reward_model_source(source)
            self.model = RewardModel.from_pretrained(source, dtype=dtype or torch.float32, use_safetensors=True)
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(source)
        else:
            if tokenizer is None:
                raise ValueError("Pass `tokenizer=` together with a loaded model.")
            self.model, self.tokenizer = model_or_path, tokenizer
            if dtype is not None:
                self.model = self.model.to(dtype)
        self.model.to(self.device).eval()
        if normalize and (self.model.config.reward_mean is None or self.model.config.reward_std is None):
            raise ValueError("normalize=True needs reward_mean and reward_std in the model config "
                             "(stored by `rewardkit train`).")
        self.normalize = normalize
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.show_progress = show_progress
        self.max_length = resolve_max_length(self.tokenizer, self.model.config, max_length)
        self.encoder = PairEncoder(self.tokenizer, self.max_length)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------ numbers

    @property
    def alpha(self) -> float:
        return float(self.model.config.alpha)

    @property
    def temperature(self) -> float:
        """Calibration temperature T of P(a > b) = sigmoid((r_a - r_b) / T); 1.0 when none stored."""
        return float(self.model.config.temperature or 1.0)

    def raw_rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Unscaled head outputs r (before alpha and normalization)."""
        return self._run(prompts, responses, "rewards").tolist()

    def score(self, prompts: Sequence[str] | str, responses: Sequence[str] | str) -> list[float]:
        """The model's rewards (alpha-scaled; normalized when asked), in the caller's order.

        A single prompt string is paired with every response."""
        prompts, responses = _align(prompts, responses)
        raw = self._run(prompts, responses, "rewards")
        if self.normalize or self.model.config.normalize_rewards:
            raw = (raw - self.model.config.reward_mean) / self.model.config.reward_std
        return (raw * self.alpha).tolist()

    def compare(self, prompt: str, a: str, b: str) -> float:
        """P(a is preferred to b) = sigmoid((r_a - r_b) / T), from raw rewards and the stored
        temperature. compare(p, a, b) + compare(p, b, a) == 1."""
        r_a, r_b = self._run([prompt, prompt], [a, b], "rewards")
        return _sigmoid((r_a - r_b) / self.temperature)

    def rank(self, prompt: str, responses: Sequence[str]) -> list[tuple[str, float]]:
        """[(response, score), ...] best first (ties keep the input order)."""
        responses = list(responses)
        scores = self.score([prompt] * len(responses), responses)
        order = sorted(range(len(responses)), key=lambda i: -scores[i])
        return [(responses[i], scores[i]) for i in order]

    def best_of_n(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[str]:
        """The highest-scored candidate for each prompt (all candidates scored in one sorted run)."""
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists.")
        for i, group in enumerate(candidates):
            if isinstance(group, str) or len(group) == 0:
                raise ValueError(f"candidates[{i}] must be a non-empty list of strings.")
        flat_prompts = [p for p, group in zip(prompts, candidates) for _ in group]
        flat = [c for group in candidates for c in group]
        scores = self.score(flat_prompts, flat)
        best, start = [], 0
        for group in candidates:
            group_scores = scores[start:start + len(group)]
            best.append(group[int(np.argmax(group_scores))])
            start += len(group)
        return best

    # ------------------------------------------------------------------ internals

    def _run(self, prompts: Sequence[str], responses: Sequence[str], output: str) -> np.ndarray:
        _check_texts(prompts, "prompts")
        _check_texts(responses, "responses")
        items = self.encoder.encode(list(prompts), list(responses))
        return score_encoded(
            self.model, items, pad_token_id=self._pad_id, padding_side=self.tokenizer.padding_side,
            token_budget=self.token_budget, batch_size=self.batch_size, output=output,
            show_progress=self.show_progress,
        )


def _align(prompts: Sequence[str] | str, responses: Sequence[str] | str) -> tuple[list[str], list[str]]:
    if isinstance(responses, str):
        responses = [responses]
    if isinstance(prompts, str):
        prompts = [prompts] * len(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    return list(prompts), list(responses)


def _check_texts(texts: Sequence[str], name: str) -> None:
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}.")


def check_reward_model_source(source: str) -> None:
    """Refuse early, with a clear message, what is not a rewardkit model folder (local paths only;
    Hub ids are checked by `from_pretrained`)."""
    path = Path(source)
    if not path.exists():
        if source.count("/") == 1 and not source.startswith((".", "/")):
            return  # a Hub repo id
        raise FileNotFoundError(f"No model at {source!r}: the folder does not exist.")
    if not (path / "config.json").exists():
        raise ValueError(f"{source!r} is not a model folder: it has no config.json.")
    import json

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        raise ValueError(f"{source}/config.json cannot be read: {error}.") from error
    if model_type != "reward_model":
        raise ValueError(f"{source!r} holds a {model_type!r} model, not a rewardkit reward model "
                         "(config.json model_type must be 'reward_model'). Train one with `rewardkit train`.")
    if not (path / "model.safetensors").exists() and not list(path.glob("model-*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")]
        hint = f" It has pickle weights ({', '.join(pickles)}), which rewardkit refuses to load: " \
               "they can run arbitrary code. Convert them to safetensors first." if pickles else ""
        raise ValueError(f"{source!r} has no model.safetensors weights.{hint}")
