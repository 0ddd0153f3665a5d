"""Fast batched scoring with a reward model: score, compare, rank, best-of-n (whole files:
:mod:`rewardkit.score_files`).

Why it is fast (measured in benchmarks/score_throughput.py, figures in benchmarks/RESULTS.md):
texts are tokenized once in a batch, sorted by length, and cut into batches by a *token budget*
(rows x longest row) instead of a fixed count, so short texts travel in large batches and long
ones in small batches, with almost no padding; the budget is small on CPU so that a batch's
activations stay in cache (the element-wise ops between matmuls are memory-bound);
`torch.inference_mode()`; SDPA attention; on a multi-core CPU two batches run at once, one per
thread (`cpu_workers.py`); results are put back in the caller's order.

Which number is which:
    raw reward   r: the head's output; differences give P(a > b) = sigmoid((r_a - r_b) / T).
    score        what `score()` returns: the model output `alpha * r`, or
                 `alpha * (r - reward_mean) / reward_std` when normalization is on.
    compare      P(a > b) from raw rewards and the stored calibration temperature T (1 if none;
                 an mse model without T is warned about: its T = 1 makes no probability).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from rewardkit.calibration import preference_probability
from rewardkit.cpu_linear import onednn_linears
from rewardkit.cpu_workers import cpu_worker_split, map_in_workers
from rewardkit.errors import UserInputError
from rewardkit.features import PairEncoder, TruncationStats, pad_batch, resolve_max_length
from rewardkit.file_names import (
    ADAPTER_CONFIG_FILE,
    REWARD_CONFIG_FILE,
    ROWS_PER_CHUNK,
    TRAINER_STATE_FILE,
)

logger = logging.getLogger(__name__)

# Tokens per batch (rows x longest row). On CPU a small budget wins: matmuls are already efficient
# at ~1-2k rows, while larger batches push the activations out of cache and make GELU, LayerNorm,
# residual adds and bias copies memory-bound (see benchmarks/RESULTS.md for the sweep).
CPU_TOKEN_BUDGET = 2048
GPU_TOKEN_BUDGET = 65536
PROGRESS_MIN_TEXTS = 2048
FILE_CHUNK_ROWS = ROWS_PER_CHUNK  # kept under its old name
OUTPUTS = ("logits", "rewards")

_T = TypeVar("_T")


def token_budget_batches(
    lengths: Sequence[int], token_budget: int, max_batch_size: int | None = None, workers: int = 1
) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with rows x longest row <= token_budget
    (a row longer than the budget gets a batch of its own).

    With `workers` > 1 (batches scored that many at a time) the batches are evened out: their count
    is rounded up to a multiple of `workers` and the largest made as small as that count allows, so
    no worker idles beside a lone last batch (3 full batches on 2 workers take 2 rounds; 4 batches
    of three quarters take 1.5), and a job that fits one batch still gets one batch per worker."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches = _greedy_batches(order, lengths, token_budget, max_batch_size)
    if workers < 2 or len(order) < 2:
        return batches
    wanted = min(len(order), -(-len(batches) // workers) * workers)
    low, high = 1, token_budget  # the smallest budget that still needs at most `wanted` batches
    while low < high:
        middle = (low + high) // 2
        if len(_greedy_batches(order, lengths, middle, max_batch_size)) <= wanted:
            high = middle
        else:
            low = middle + 1
    return _greedy_batches(order, lengths, low, max_batch_size)


def _greedy_batches(order: list[int], lengths: Sequence[int], token_budget: int,
                    max_batch_size: int | None) -> list[list[int]]:
    """`order` (longest first) cut into consecutive batches, each filled while rows x its first
    (longest) row fits the budget: the fewest batches for that budget."""
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


def iter_chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """Consecutive lists of `size` items (the last one shorter): bounded memory over a stream."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}.")
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """"bf16" / "bfloat16" / torch.bfloat16 -> torch.bfloat16 (and fp16, fp32); None stays None."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype in DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be one of {', '.join(sorted(DTYPES))} or torch.float32 / bfloat16 / float16, got {dtype!r}.")


def pick_device(device: str | torch.device | None) -> torch.device:
    """The device asked for, checked before any model is loaded (torch would otherwise fail deep in
    its CUDA initialisation, after the load); default CUDA when available, else CPU. Under torchrun /
    accelerate launch the default is the rank's own GPU (cuda:LOCAL_RANK), not the current device,
    which is still cuda:0 on every rank until something (the Trainer) sets it."""
    if device is None:
        from rewardkit.distributed import default_device, is_distributed

        if is_distributed():
            return torch.device(default_device())
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserInputError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or a torch.device, got {device!r}.") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                             "use device='cpu'.")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise UserInputError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are visible.")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise UserInputError(f"device {device!r} asked for, but MPS (Apple GPU) is not available here; use device='cpu'.")
    return chosen


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
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}.")
    if not items:
        return np.zeros(0)
    device = next(model.parameters()).device
    if token_budget is None:
        token_budget = GPU_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET
    lengths = [len(item["input_ids"]) for item in items]
    planned_workers, _ = cpu_worker_split(device, len(items))
    batches = token_budget_batches(lengths, token_budget, batch_size, planned_workers)
    workers, threads_each = cpu_worker_split(device, len(batches))
    results = np.empty(len(items), dtype=np.float64)
    progress = None
    if show_progress or (show_progress is None and len(items) >= PROGRESS_MIN_TEXTS and _progress_bars_on()):
        from tqdm.auto import tqdm

        progress = tqdm(total=len(items), desc="Scoring", unit="text")

    @torch.inference_mode()  # grad mode is per thread: entered here, in whichever thread runs the batch
    def run_batch(indices: list[int]) -> np.ndarray:
        batch = pad_batch([items[i] for i in indices], pad_token_id, padding_side)
        outputs = model(**{k: v.to(device) for k, v in batch.items()})
        values = outputs["rewards"] if output == "rewards" else outputs["logits"]
        return values[:, 0].float().cpu().numpy()

    try:
        with _scoring_mode(model):  # eval mode and oneDNN linears, shared by concurrent calls
            scored = map_in_workers(run_batch, batches, workers, threads_each)  # 2 at once on CPU (cpu_workers.py)
            for indices, values in zip(batches, scored, strict=True):
                results[indices] = values
                if progress is not None:
                    progress.update(len(indices))
    finally:
        if progress is not None:
            progress.close()
    return results


_SCORING: weakref.WeakKeyDictionary[Any, list] = weakref.WeakKeyDictionary()  # model -> [calls, was_training, patch]
_SCORING_LOCK = threading.Lock()


@contextmanager
def _scoring_mode(model) -> Iterator[None]:
    """The model in eval mode with oneDNN linear layers (CPU, cpu_linear.py) while any call scores
    with it: the first call to enter switches, the last to leave puts back the caller's mode and
    layers. Why counted: with a switch per call, one thread's restore (train mode: dropout on)
    landed in the middle of another thread's forward, whose scores then came out wrong."""
    with _SCORING_LOCK:
        state = _SCORING.get(model)
        if state is None:
            patch = onednn_linears(model)
            state = _SCORING[model] = [0, model.training, patch]
            model.eval()
            patch.__enter__()
        state[0] += 1
    try:
        yield
    finally:
        with _SCORING_LOCK:
            state[0] -= 1
            if state[0] == 0:
                del _SCORING[model]
                state[2].__exit__(None, None, None)
                model.train(state[1])


class NonFiniteRewardError(ValueError):
    """The model gave NaN or inf for some texts. `positions` index the texts of the scoring call;
    callers that read rows (`evaluate`, `score_file`) say which rows with `located`."""

    SHOWN = 5

    def __init__(self, positions: Sequence[int], total: int, dtype: torch.dtype, where: Sequence[str] | None = None):
        self.positions, self.total, self.dtype = list(positions), total, dtype
        shown = list(where) if where is not None else [f"text {i}" for i in self.positions[:self.SHOWN]]
        more = f" and {len(self.positions) - len(shown)} more" if len(self.positions) > len(shown) else ""
        # Half precision can overflow where fp32 does not; NaN weights (a diverged run) give NaN anywhere.
        overflow = ("the bf16/fp16 forward overflowed (score in fp32: --dtype fp32, dtype='fp32'), or "
                    if dtype in (torch.bfloat16, torch.float16) else "")
        super().__init__(
            f"the model gave a non-finite reward (NaN or inf) for {len(self.positions)} of {total} texts "
            f"({', '.join(shown)}{more}): {overflow}its weights hold NaN or inf (a training that diverged). "
            "No score was written for them.")

    def located(self, where: Callable[[int], str]) -> NonFiniteRewardError:
        """The same error naming the first few texts by `where(position)` ("row 12 (rejected)")."""
        return NonFiniteRewardError(self.positions, self.total, self.dtype, [where(i) for i in self.positions[:self.SHOWN]])


def check_finite(values: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """`values` when all are finite; else `NonFiniteRewardError`: a NaN reward would otherwise
    reach JSON as the invalid token NaN and make every comparison with it False (argmax, ranks)."""
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise NonFiniteRewardError(bad.tolist(), len(values), dtype)
    return values


def rewards_of_rows(scorer: RewardScorer, prompts: list[str], responses: list[str], where: Callable[[int], str],
                    counts: TruncationStats, cuts: list[tuple[bool, bool]] | None = None) -> np.ndarray:
    """Raw rewards of texts read from data rows (`score_file`, `evaluate`), no bar and no truncation
    message (the callers report once per file), this call's truncation added to `counts` (and, per
    text, to `cuts`); a NaN or inf reward is an error naming its row by `where(i)` for text i, not a
    NaN in a file or a metric."""
    try:
        return scorer._run(prompts, responses, "rewards", show_progress=False, report_truncation=False, counts=counts,
                           cuts=cuts)
    except NonFiniteRewardError as error:
        raise error.located(where) from None


def _progress_bars_on() -> bool:
    """transformers' switch for progress bars (`disable_progress_bar()`, which `--quiet` flips)."""
    from transformers.utils.logging import is_progress_bar_enabled

    return is_progress_bar_enabled()


def _warn_longer_than_trained(config: Any, max_length: int) -> None:
    """Say when scoring reads more tokens per pair than training did (`trained_max_length`): the
    model never saw inputs that long, so its rewards of longer pairs are untested; the default, and
    any shorter length, is silent. `score` and `evaluate` both resolve max_length here."""
    trained = getattr(config, "trained_max_length", None)
    if isinstance(trained, int) and max_length > trained:
        logger.warning("max_length %d is longer than the %d tokens per pair this model was trained at: it never "
                       "saw inputs that long, and its rewards of pairs longer than %d tokens are untested.",
                       max_length, trained, trained)


class RewardScorer:
    """Score (prompt, response) pairs with a reward model, fast, in the caller's order.

    Args:
        model_or_path: a local folder or Hub repo id of a rewardkit model, or a loaded `RewardModel`
            (then pass `tokenizer`). Folders are loaded with the installed `modeling_reward`
            classes: no remote code is executed, and only safetensors weights are read. A loaded
            model is moved to `device` but otherwise left as it is: each call scores in eval mode
            and puts its training mode and layers back; with a `dtype` it does not have, the
            scorer scores a converted copy (later changes to the caller's model are not seen).
        device: "cpu", "cuda", ...; default CUDA when available (under torchrun, the rank's own GPU).
        batch_size: max rows per batch (default: limited by the token budget only).
        max_length: max tokens per pair (default: the length the model was trained with, else the
            model's limit, at most 512). A longer pair loses the start of its prompt first (the
            latest turns are kept, as in training); the end of the response is cut only when the
            response alone does not fit, and then a quarter of the room still goes to the end of
            the prompt. The first call that cuts a response logs a warning saying how many
            (responses that differ only after the cut get the same score), later calls of the same
            scorer log it at debug level; prompt-only cuts are an info line, likewise once.
            Running totals: `scorer.encoder.stats`.
        dtype: the backbone's precision: torch.bfloat16 / "bf16", torch.float16 / "fp16" or the default
            float32. The reward head is fp32 (in a copy of a caller's model whose head is not). bf16 is about 1.5x faster on CPUs with AVX512-BF16 or
            AMX (measured in benchmarks/score_throughput.py, with its agreement with fp32); GPUs
            compute bf16 natively too (not measured here); on other CPUs it is emulated and slower. Scores then differ from fp32 in the
            third significant digit; the 1e-5 agreement with the plain forward holds for fp32.
        normalize: what `score()` (and `rank`, `best_of_n`) return. None (the default) follows the
            model's config, so scores equal the model's own output (`model(...).logits`, `pipeline`):
            `alpha * (r - reward_mean) / reward_std` for a model saved with `normalize_rewards=True`,
            else `alpha * r`. True normalizes with the stored statistics (refused without them);
            False gives `alpha * r` even when the config normalizes. `compare` and `raw_rewards`
            never depend on it.
        token_budget: tokens per batch (rows x longest row).

    Attributes:
        source: the folder or repo id the model was loaded from (None for a model object); what
            `rewardkit.evaluation` writes a calibrated temperature back to.
        normalize: whether `score()` normalizes: the `normalize` argument with None resolved
            from the model's config (what applies, not what was passed).

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
        normalize: bool | None = None,
        token_budget: int | None = None,
        show_progress: bool | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("token_budget", token_budget)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}.")
        self.device = pick_device(device)
        dtype = resolve_dtype(dtype)
        if dtype == torch.float16 and self.device.type == "cpu":
            logger.warning("dtype fp16 on a CPU is emulated: measured 6-9x slower than fp32 on 2-core VMs (108 "
                           "texts: 2.37 s vs 0.41 s on Zen 4, 3.7-4.6 s vs 0.54-0.66 s on Zen 5); use bf16 (native on AVX512-BF16/AMX CPUs) or the default fp32.")
        self.source: str | None = None
        if isinstance(model_or_path, (str, os.PathLike)):
            self.source = str(model_or_path)
            self.model, self.tokenizer = _load(self.source, tokenizer, dtype)
        else:
            if tokenizer is None:
                raise ValueError("Pass `tokenizer=` together with a loaded model.")
            self.model, self.tokenizer = _backbone_in(model_or_path, dtype), tokenizer
        self.model.to(self.device)
        if self.source is not None:
            self.model.eval()  # a caller's model keeps its mode: each call scores in eval mode and restores it
        self.normalize = _resolve_normalize(normalize, self.model.config)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.show_progress = show_progress
        self.max_length = resolve_max_length(self.tokenizer, self.model.config, max_length)
        _warn_longer_than_trained(self.model.config, self.max_length)
        self.encoder = PairEncoder(self.tokenizer, self.max_length)
        # Each kind of cut is said once per scorer at its level, later calls log it at debug level
        # (a scoring loop is not flooded); a prompt-only info line does not mute a later response warning.
        self._said_response_cut = False
        self._said_prompt_cut = False
        self._said_uncalibrated = False  # compare() on an mse model without T: warned once
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    # ------------------------------------------------------------------ numbers

    @property
    def alpha(self) -> float:
        return float(self.model.config.alpha)

    @property
    def temperature(self) -> float:
        """Calibration temperature T of P(a > b) = sigmoid((r_a - r_b) / T); 1.0 when none stored."""
        return float(getattr(self.model.config, "calibration_temperature", None) or 1.0)

    def raw_rewards(self, prompts: Sequence[str] | str, responses: Sequence[str] | str, *,
                    show_progress: bool | None = None, report_truncation: bool = True,
                    cuts: list[tuple[bool, bool]] | None = None) -> list[float]:
        """Unscaled head outputs r (before alpha and normalization), in the caller's order.

        A single prompt string is paired with every response. `show_progress` overrides the
        scorer's setting for this call (callers that draw their own bar pass False);
        `report_truncation=False` leaves the truncation message to a caller that counts over many
        calls (as `evaluate` and `score_file` do through `rewards_of_rows`: one message per file,
        not one per chunk). A list passed
        as `cuts` receives (prompt cut, response cut) per text, in order: which texts the
        truncation message counted."""
        prompts, responses = _align(prompts, responses)
        return self._run(prompts, responses, "rewards", show_progress, report_truncation, cuts=cuts).tolist()

    def rewards_to_scores(self, raw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Raw rewards -> what `score()` returns (normalized when `self.normalize`, times alpha),
        so a caller that needs both scores each text once."""
        values = np.asarray(raw, dtype=np.float64)
        if self.normalize:
            config = self.model.config
            values = (values - config.reward_mean) / config.reward_std
        return values * self.alpha

    def score_formula(self) -> str:
        """How a score is made from the raw reward, with this model's numbers ("score = alpha (2)
        x (raw reward - mean (0.25)) / std (1.5)"): what the CLI tells a reader of its scores."""
        if not self.normalize:
            return f"score = alpha ({self.alpha:g}) x raw reward"
        config = self.model.config
        return (f"score = alpha ({self.alpha:g}) x (raw reward - mean ({config.reward_mean:g})) "
                f"/ std ({config.reward_std:g})")

    def score(self, prompts: Sequence[str] | str, responses: Sequence[str] | str) -> list[float]:
        """What `rewards_to_scores` makes of the raw rewards (alpha-scaled; normalized when
        `self.normalize`), in the caller's order.

        A single prompt string is paired with every response."""
        prompts, responses = _align(prompts, responses)
        return self.rewards_to_scores(self._run(prompts, responses, "rewards")).tolist()

    def compare(self, prompt: str, a: str, b: str) -> float:
        """P(a is preferred to b) = sigmoid((r_a - r_b) / T), from raw rewards and the stored
        temperature. compare(p, a, b) + compare(p, b, a) == 1.

        An mse model without a calibrated T gets a warning (once per scorer): its raw rewards are
        predicted annotations, and T = 1 ties nothing to how often people prefer one response, so
        the value then depends on the annotations' scale (two ratings 8 and 2 give 0.998)."""
        _check_texts([prompt, a, b], "compare arguments")
        self._warn_uncalibrated_mse()
        r_a, r_b = self._run([prompt, prompt], [a, b], "rewards")
        return preference_probability(float(r_a - r_b), self.temperature)

    def _warn_uncalibrated_mse(self) -> None:
        config = self.model.config
        if (self._said_uncalibrated or getattr(config, "trained_objective", None) != "mse"
                or getattr(config, "calibration_temperature", None) is not None):
            return
        self._said_uncalibrated = True
        logger.warning("compare(): this model was trained to predict annotated rewards (mse) and has no calibrated "
                       "temperature, so sigmoid(r_a - r_b) with T = 1 is no preference probability (it depends on the "
                       "annotations' scale). Fit T on held-out preference pairs (`rewardkit evaluate --calibrate`), "
                       "or compare `raw_rewards` directly.")

    def rank(self, prompt: str, responses: Sequence[str]) -> list[tuple[str, float]]:
        """[(response, score), ...] best first (ties keep the input order)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}.")
        if isinstance(responses, str):
            raise TypeError("responses must be a list of strings, not one string.")
        responses = _as_list(responses, "responses")
        scores = self.score([prompt] * len(responses), responses)
        order = sorted(range(len(responses)), key=lambda i: -scores[i])
        return [(responses[i], scores[i]) for i in order]

    def best_of_n(self, prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[str]:
        """The highest-scored candidate for each prompt (all candidates scored in one sorted run;
        ties go to the earliest candidate)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings (one per candidate list), not one "
                            "string: use best_of_n([prompt], [candidates]).")
        prompts, candidates = _as_list(prompts, "prompts"), _as_list(candidates, "candidates")
        if len(prompts) != len(candidates):
            raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists.")
        _check_texts(prompts, "prompts")
        for i, group in enumerate(candidates):
            if isinstance(group, str) or group is None or isinstance(group, dict) or len(group) == 0:
                raise ValueError(f"candidates[{i}] must be a non-empty list of strings.")
            _check_texts(group, f"candidates[{i}]")
        candidates = [list(group) for group in candidates]
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

    def _run(self, prompts: Sequence[str], responses: Sequence[str], output: str,
             show_progress: bool | None = None, report_truncation: bool = True,
             counts: TruncationStats | None = None, cuts: list[tuple[bool, bool]] | None = None) -> np.ndarray:
        """Scores of one call; `counts` (a whole file's) also gets this call's truncation counts, and
        `cuts` (prompt cut, response cut) per text."""
        _check_texts(prompts, "prompts")
        _check_texts(responses, "responses")
        cut = TruncationStats()  # this call's texts only, even while other threads use the scorer
        items = self.encoder.encode(list(prompts), list(responses), counts=cut, cuts=cuts)
        if counts is not None:
            counts.add(cut)
        if report_truncation:
            said = self._said_response_cut if cut.response_cut else self._said_prompt_cut
            log_truncation(cut, self.max_length, repeat=said)
            self._said_response_cut |= bool(cut.response_cut)
            self._said_prompt_cut |= bool(cut.prompt_cut and not cut.response_cut)
        values = score_encoded(
            self.model, items, pad_token_id=self._pad_id, padding_side=self.tokenizer.padding_side,
            token_budget=self.token_budget, batch_size=self.batch_size, output=output,
            show_progress=self.show_progress if show_progress is None else show_progress,
        )
        return check_finite(values, next(self.model.parameters()).dtype)


def truncation_marks(prompt_cut: bool, response_cut: bool) -> dict[str, bool]:
    """What a scored line adds when its text was cut to fit max_length: `"prompt_cut": true` (the
    start of the prompt) and/or `"response_cut": true` (the end of the response, so a response that
    differs only after the cut scores the same). The summary's counts said how many, not which."""
    return {**({"prompt_cut": True} if prompt_cut else {}), **({"response_cut": True} if response_cut else {})}


def log_truncation(cut: TruncationStats, max_length: int, *, repeat: bool = False) -> None:
    """Say what one call (or file) cut to fit `max_length`. A response cut at its end was scored
    without that end, so responses that differ only after the cut get the same score: a warning.
    A prompt cut at its start is the training contract (its latest turns are kept): an info line.
    `repeat`: the same scorer has said it before, so this goes to debug level: a loop that scores a
    batch per step (best-of-n, PPO) would otherwise repeat the warning every step. The running
    totals stay in `RewardScorer.encoder.stats`."""
    prompts = (f"the start of the prompt was cut in {cut.prompt_cut} of {cut.texts} texts to fit max_length "
               f"{max_length} tokens (the latest turns kept, as in training)")
    if cut.response_cut:
        logger.log(logging.DEBUG if repeat else logging.WARNING,
                   "%d of %d responses were cut at their end: alone they are longer than max_length %d tokens "
                   "allows, so they were scored without their end, and responses that differ only after the "
                   "cut get the same score. Raise --max-length (max_length=) if the model takes more.%s",
                   cut.response_cut, cut.texts, max_length, f" Also, {prompts}." if cut.prompt_cut else "")
    elif cut.prompt_cut:
        logger.log(logging.DEBUG if repeat else logging.INFO, "%s; no response was cut.", prompts[0].upper() + prompts[1:])


def _resolve_normalize(requested: bool | None, config: Any) -> bool:
    """The normalization `score()` applies: as asked, or (None) as the model's config does, so
    that by default a score equals the model's own output. An explicit False is honoured even
    when the config normalizes: the caller asked for alpha * r."""
    if requested is None:
        return bool(config.normalize_rewards)
    if not isinstance(requested, bool):
        raise TypeError(f"normalize must be True, False or None (follow the model's config), got {requested!r}.")
    if requested and (config.reward_mean is None or config.reward_std is None):
        raise ValueError("normalize=True needs reward_mean and reward_std in the model config "
                         "(stored by `rewardkit train`).")
    return requested


def _backbone_in(model: Any, dtype: torch.dtype | None) -> Any:
    """A caller's model with its backbone in `dtype` and the rest (the head) in fp32: the model itself
    when no change is needed, else a converted copy, so that the caller's model (perhaps still being
    trained) is not turned into bf16 behind its back. The head is made fp32 too: a model the caller
    had put in bf16 whole (`model.to(torch.bfloat16)`) kept a bf16 head, whose 8-bit mantissa gave
    nearby texts one and the same reward, under dtype="bf16" and even dtype="fp32"."""
    if dtype is None:
        return model
    backbone = getattr(model, "backbone", None)
    backbone = backbone if backbone is not None else model
    in_backbone = {id(p) for p in backbone.parameters()}
    if all(p.dtype == (dtype if id(p) in in_backbone else torch.float32)
           for p in model.parameters() if p.is_floating_point()):
        return model
    model = copy.deepcopy(model).to(torch.float32)
    backbone = getattr(model, "backbone", None)
    (backbone if backbone is not None else model).to(dtype)
    return model


def _load(source: str, tokenizer: Any, dtype: torch.dtype | None) -> tuple[Any, Any]:
    """Model and tokenizer from a folder or Hub id, with messages that say what to do."""
    from transformers import AutoTokenizer

    from rewardkit.lora_checkpoint import is_lora_checkpoint, load_lora_checkpoint

    if is_lora_checkpoint(Path(source).expanduser()):  # a --use-lora run's checkpoint-N/: base + adapters + head
        model = load_lora_checkpoint(Path(source).expanduser(), dtype)
    else:
        model = _load_model_folder(source, dtype)
    if tokenizer is not None:
        return model, tokenizer
    try:
        # Pass the loaded config: transformers 5 otherwise reads config.json (which names our remote
        # code) for the tokenizer too, and asks on stdin or warns; the tokenizer needs no code.
        return model, AutoTokenizer.from_pretrained(source, config=model.config, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"{source!r} holds a reward model but its tokenizer could not be loaded "
                         f"({error}); save the tokenizer beside the model or pass tokenizer=.") from error


def _load_model_folder(source: str, dtype: torch.dtype | None) -> Any:
    """A whole rewardkit model from a folder or Hub id."""
    from modeling_reward import RewardModel

    local = check_reward_model_source(source)
    try:
        return RewardModel.from_pretrained(source, dtype=dtype or torch.float32, use_safetensors=True)
    except OSError as error:
        if local:
            raise
        raise OSError(f"Could not load the reward model {source!r}: there is no local folder of that "
                      f"name, and as a Hub repo id it could not be fetched ({error}). Check the "
                      "path, or your network / HF_HUB_OFFLINE.") from error


def _align(prompts: Sequence[str] | str, responses: Sequence[str] | str) -> tuple[list[str], list[str]]:
    if isinstance(responses, str):
        responses = [responses]
    responses = _as_list(responses, "responses")
    if isinstance(prompts, str):
        prompts = [prompts] * len(responses)
    prompts = _as_list(prompts, "prompts")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses.")
    return prompts, responses


def _as_list(texts: Any, name: str) -> list:
    """A list or tuple (or any other sequence, a generator consumed once) of texts as a list; a
    dict, set or None is a mistake (a dict would score its keys, a set in no set order)."""
    if texts is None or isinstance(texts, (dict, set, frozenset, bytes)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}.")
    try:
        return list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}.") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_texts(texts: Sequence[str], name: str) -> None:
    """Strings, and valid Unicode: a lone surrogate (a broken "\\ud83d" escape, or a command-line
    argument that is not UTF-8, which Python keeps as \\udce9) made the tokenizer fail with
    "TextEncodeInput must be Union[...]", naming no text."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] must be a string, got {type(text).__name__}.")
        found = _SURROGATE.search(text)
        if found:
            raise ValueError(f"{name}[{i}] holds an unpaired surrogate \\u{ord(found.group()):04x} at character "
                             f"{found.start() + 1}, which is not valid Unicode text (a broken escape, or bytes "
                             "that are not UTF-8 decoded with errors='surrogateescape').")


_PICKLE_HINT = ("rewardkit refuses to load pickle weights: unpickling can run arbitrary code. "
                "Convert them to safetensors first (load with transformers, then "
                "save_pretrained(folder, safe_serialization=True)).")


def is_reward_model_folder(path: str | os.PathLike) -> bool:
    """A local folder whose config.json says `model_type: reward_model` (a rewardkit model, e.g.
    to continue training), as opposed to a backbone checkpoint or a Hub id."""
    config_file = Path(path) / "config.json"
    return config_file.is_file() and json.loads(config_file.read_text(encoding="utf-8")).get("model_type") == "reward_model"


def check_reward_model_source(source: str) -> bool:
    """Refuse early, with a clear message, what is not a rewardkit model folder (local paths only;
    Hub ids are checked by `from_pretrained`). Returns True for a local folder, False for a
    string that can only be a Hub repo id."""
    path = Path(source)
    if not path.exists():
        if source.count("/") == 1 and not source.startswith((".", "/", "~")):
            return False  # a Hub repo id
        raise FileNotFoundError(f"No model at {source!r}: the folder does not exist.")
    if not path.is_dir():
        raise UserInputError(f"{source!r} is a file; pass the model folder that holds config.json.")
    pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
    if not (path / "config.json").exists():
        if (path / ADAPTER_CONFIG_FILE).exists():  # checkpoint-N/ or adapter/ of a LoRA run
            # adapter/ (--keep-adapter) holds reward_config.json and no Trainer state; a checkpoint-N/ holds
            # trainer_state.json, and reward_config.json too since RewardConfigInLoraCheckpoints (resume.py)
            if (path / REWARD_CONFIG_FILE).exists() and not (path / TRAINER_STATE_FILE).exists():
                raise UserInputError(f"{source!r} is a saved LoRA adapter (PEFT format), not a whole model: score the "
                                     "run's --output-dir (the merged model), or rebuild it with "
                                     "rewardkit.lora.load_adapter(folder, base_model=...).")
            raise UserInputError(f"{source!r} is a PEFT (LoRA) adapter checkpoint, not a whole model: it holds the "
                                 "adapter and the head only, no config.json. Score the run's --output-dir (the merged "
                                 "model), or resume training from this checkpoint (--resume_from_checkpoint).")
        if pickles:
            raise UserInputError(f"{source!r} is not a rewardkit model folder: it has no config.json and no "
                                 f"safetensors weights, only pickle weights ({', '.join(pickles)}). {_PICKLE_HINT}")
        raise UserInputError(f"{source!r} is not a model folder: it has no config.json.")
    try:
        model_type = json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise UserInputError(f"{source}/config.json cannot be read: {error}.") from error
    if model_type != "reward_model":
        raise UserInputError(f"{source!r} holds a {model_type!r} model, not a rewardkit reward model "
                             "(config.json model_type must be 'reward_model'). Train one with `rewardkit train`.")
    if not (path / "model.safetensors").exists() and not list(path.glob("model-*.safetensors")):
        hint = f" It has pickle weights ({', '.join(pickles)}). {_PICKLE_HINT}" if pickles else ""
        raise UserInputError(f"{source!r} has no model.safetensors weights.{hint}")
    return True
