"""Publish a trained reward model to the Hugging Face Hub: build, verify, upload.

Three separate steps, so that each can be tested and reasoned about on its own:

1. `build_publish_folder` (pure, offline): copy exactly the files the Hub model needs (safetensors
   weights, config.json with auto_map, the installed rewardkit's two remote-code files, tokenizer
   files; never a link to a file outside the model folder) and re-render
   README.md for the real repo id. Training leftovers (checkpoints, optimizer state, pickles,
   training_summary.json, dotfiles) never reach the Hub.
2. `verify_folder`: load the folder the way a Hub user will (a fresh interpreter, an empty
   HF_MODULES_CACHE, `trust_remote_code=True`) and check that it scores like the local model.
3. `upload_folder`: create the repo (and branch), upload everything in one `upload_folder` call
   (one commit, unless huggingface_hub splits a very large upload into parts), then delete weight
   files an earlier upload left.

`publish` chains them and refuses to upload anything that failed verification.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardkit.errors import UserInputError
from rewardkit.file_names import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_DIR,
    ADAPTER_WEIGHTS_FILE,
    CHECKPOINT_DATA_FILE,
    REWARD_CONFIG_FILE,
    SUMMARY_FILE,
    TRAINER_STATE_FILE,
    read_record,
)

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CODE_FILES = ("configuration_reward.py", "modeling_reward.py")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "spm.model",
)
CARD_FILE = "README.md"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "training_args.bin")
REQUIRED_AUTO_MAP = {
    "AutoConfig": "configuration_reward.RewardConfig",
    "AutoModel": "modeling_reward.RewardModel",
    "AutoModelForSequenceClassification": "modeling_reward.RewardModel",
}
REWARD_MODEL_TYPE = "reward_model"
# `rewardkit train --use-lora --keep-adapter` also leaves the unmerged LoRA adapter + head (PEFT format)
# in OUTPUT_DIR/adapter/; it is published beside the merged model for PEFT users. PEFT's own README
# there is left out: it records local paths.
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, REWARD_CONFIG_FILE)
TOLERANCE = 1e-4
VERIFY_TIMEOUT_S = 600

# Fixed (prompt, response) probes: short and long, ASCII and not, an empty-ish response, so that
# tokenizer, padding and truncation differences between the two loads would show.
PROBES: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of France?", "I don't know, look it up."),
    ("Explain photosynthesis to a child. " * 8, "Plants use sunlight, water and air to make their own food."),
    ("Wie spät ist es? 今何時ですか", "."),
]

_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")  # real tokens: hf_ + 34 characters


class PublishError(RuntimeError):
    """Publishing failed or was refused; the message says what to do next (and never holds a token)."""


@dataclass
class PublishResult:
    """What `publish` did.

    folder: the built folder; None when it was a temporary folder removed after the upload.
    files: the file names in the folder (what was, or would be, uploaded).
    url: the commit URL on the Hub; None for a dry run.
    verified: whether the folder passed `verify_folder`.
    """

    folder: Path | None
    repo_id: str
    files: list[str]
    url: str | None
    verified: bool


# --------------------------------------------------------------------------------------------------
# Repo ids
# --------------------------------------------------------------------------------------------------


def validate_repo_id(repo_id: str) -> str:
    """Check `owner/name` against the Hub's rules, so a typo fails before any work is done.

    A bare `name` is refused too: the Hub would put it under whoever the token belongs to, which is
    rarely what a script that runs for several people means.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserInputError(
            f"Invalid repo id {repo_id!r}: use the form 'owner/name' (your user or organization name, "
            "a slash, then the model name), e.g. 'alice/my-reward-model'."
        )
    try:
        hub_validate(repo_id)
    except HFValidationError as error:
        raise UserInputError(
            f"Invalid repo id {repo_id!r}: {error} Names may use letters, digits, '-', '_' and '.', "
            "may not start or end with '-' or '.', and are at most 96 characters."
        ) from None
    return repo_id


# --------------------------------------------------------------------------------------------------
# Step 1: build the folder (pure, offline)
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserInputError(f"Cannot read {path}: {error}") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """The one JSON layout of the published folder: indented, keys sorted, newline-terminated."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _weight_files(model_dir: Path) -> list[str]:
    """The safetensors weights to publish: one file, or an index and every shard it names.

    Pickle weights (`pytorch_model.bin`) are refused rather than converted: loading a pickle runs
    arbitrary code, and converting here would publish weights nobody evaluated in that form.

    `model.safetensors` beside an index whose shards are gone is published alone: an unsharded
    `save_pretrained` into a folder saved sharded before deletes the shards but leaves their index.
    Beside a complete index (a sharded save over an unsharded one, which leaves `model.safetensors`)
    the folder holds two models, and `from_pretrained` quietly loads the single file, perhaps the
    older one: refused, naming both and which is newer, rather than guessed.
    """
    index_path, single = model_dir / WEIGHTS_INDEX_FILE, model_dir / WEIGHTS_FILE
    if index_path.is_file():
        index = _read_json(index_path)
        shards = sorted(set((index.get("weight_map") or {}).values()))
        missing = [name for name in shards if not (model_dir / name).is_file()]
        if single.is_file() and (missing or not shards):
            logger.warning("%s holds %s and a stale %s (its shards are gone: an unsharded save over a sharded "
                           "one); publishing %s only.", model_dir, WEIGHTS_FILE, WEIGHTS_INDEX_FILE, WEIGHTS_FILE)
            return [WEIGHTS_FILE]
        if single.is_file():
            newer = max((single, index_path), key=lambda path: path.stat().st_mtime).name
            raise UserInputError(
                f"{model_dir} holds two sets of weights: {WEIGHTS_FILE} and the shards {WEIGHTS_INDEX_FILE} names "
                f"({newer} is the newer); `from_pretrained` loads {WEIGHTS_FILE}. Delete the one that is not this "
                "model (a sharded save over an unsharded one leaves the old single file), then publish."
            )
        if not shards or missing:
            raise UserInputError(
                f"{index_path} names shards that are not there: {missing or 'none listed'}. "
                "Save the model again with `save_pretrained` (it writes every shard)."
            )
        return [WEIGHTS_INDEX_FILE, *shards]
    if single.is_file():
        return [WEIGHTS_FILE]
    from rewardkit.lora_checkpoint import (  # (imports torch: not at the top)
        export_command,
        is_lora_checkpoint,
    )

    if is_lora_checkpoint(model_dir):  # score and evaluate rebuild it; a published model needs the whole folder
        raise UserInputError(
            f"{model_dir} is a checkpoint of a --use-lora run: adapters and head (PEFT format), with no merged "
            "weights, reward statistics or training summary to publish. Save it as a complete model folder "
            "without training a step (resuming at its own step trains nothing), then publish that folder: "
            f"{export_command(model_dir)} (add the --columns, --skip-invalid or --max-train-samples the run used). "
            "To publish the final model, publish the run's --output-dir."
        )
    if (model_dir / ADAPTER_CONFIG_FILE).is_file():  # its optimizer.pt etc. are no pickle weights to re-save
        raise UserInputError(
            f"{model_dir} is a LoRA adapter (PEFT format: a --use-lora run's checkpoint-N/ or adapter/), not a "
            "whole model. Publish the run's --output-dir: it holds the merged model, and adapter/ beside it when "
            "trained with --keep-adapter."
        )
    pickles = sorted(p.name for p in model_dir.iterdir() if p.name in PICKLE_WEIGHTS or p.suffix in {".bin", ".pt", ".pth", ".pkl"})
    if pickles:
        raise UserInputError(
            f"{model_dir} holds pickle weights only ({', '.join(pickles)}); rewardkit publishes safetensors "
            "only, because loading a pickle can run arbitrary code. Load the model and save it again with "
            "`model.save_pretrained(folder)` (safetensors is the default), then publish that folder."
        )
    raise UserInputError(f"{model_dir} holds no model weights ({WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE}).")


def _check_reward_config(config: dict[str, Any], model_dir: Path) -> None:
    """Refuse folders the Hub could not load as a rewardkit reward model."""
    if config.get("model_type") != REWARD_MODEL_TYPE:
        raise UserInputError(
            f"{model_dir} is not a rewardkit reward model: config.json has model_type "
            f"{config.get('model_type')!r}, expected {REWARD_MODEL_TYPE!r}. Train one with `rewardkit train`."
        )
    auto_map = config.get("auto_map") or {}
    wrong = {key: auto_map.get(key) for key, value in REQUIRED_AUTO_MAP.items() if auto_map.get(key) != value}
    if wrong:
        raise UserInputError(
            f"{model_dir / 'config.json'} lacks the auto_map entries that let `trust_remote_code` find the "
            f"model code: {', '.join(sorted(wrong))} (expected {REQUIRED_AUTO_MAP}). Save the model again "
            "with the installed rewardkit (`RewardModel.save_pretrained` writes all three)."
        )


# What the card reads as numbers from a metrics dict, beside its results-table metrics.
_EVALUATION_NUMBERS = ("n", "ece_before", "temperature_before")
_LENGTH_BIAS_NUMBERS = ("spearman_reward_length", "longer_preferred_rate", "chosen_shorter_accuracy")


def _check_evaluation_values(evaluation: Any) -> None:
    """Refuse a metrics dict the card cannot state truthfully: its values go into the results table
    as measured, so a hand-edited or wrong file put "accuracy | high | n=x" or "nan" on the card
    (and a JSON list failed with "AttributeError: 'list' object has no attribute 'get'")."""
    from rewardkit.model_card import METRIC_NAMES

    if evaluation is None:
        return
    if not isinstance(evaluation, dict):
        raise UserInputError(f"The metrics must be a JSON object, as the metrics.json of `rewardkit evaluate --report-dir R` "
                             f"is; got a {type(evaluation).__name__}.")
    if not any(evaluation.get(name) is not None for name, _, _ in METRIC_NAMES):
        # {} or another JSON object (the model's own config.json) passed, and the card came out without
        # a results table, as if no --metrics had been given
        names = ", ".join(name for name, _, _ in METRIC_NAMES)
        raise UserInputError(f"The metrics hold none of the metrics the card states ({names}): "
                             "it is no metrics.json of `rewardkit evaluate --report-dir R`. Pass R/metrics.json, or "
                             "leave --metrics out.")
    bias = evaluation.get("length_bias")
    if bias is not None and not isinstance(bias, dict):
        raise UserInputError(f"The metrics' 'length_bias' must be an object, got a {type(bias).__name__}.")
    values = [(key, evaluation.get(key)) for key in (*(name for name, _, _ in METRIC_NAMES), *_EVALUATION_NUMBERS)]
    values += [(f"length_bias.{key}", (bias or {}).get(key)) for key in _LENGTH_BIAS_NUMBERS]
    for key, value in values:
        whole = key == "n"
        if value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                             and (not whole or (isinstance(value, int) and value >= 0))):
            continue
        raise UserInputError(f"The metrics' {key!r} is {value!r}, not {'a whole number' if whole else 'a finite number'}: "
                             "the card would state it as measured. Pass the metrics.json that `rewardkit evaluate "
                             "--report-dir R` wrote for this model.")


def _check_evaluation_matches(evaluation: dict | None, config: dict[str, Any], model_dir: Path) -> None:
    """Refuse a metrics.json measured on another model, or on this one before `evaluate --calibrate`
    stored a T: the card and its model-index would state that model's accuracy, or ECE and Brier at
    another T, as this model's. evaluate records the config's reward statistics (fixed by training)
    and the T it used; a metrics dict without them (older or hand-made) is taken as it is."""
    if not evaluation:
        return
    temperature = config.get("calibration_temperature")
    ours = {"reward_mean": config.get("reward_mean"), "reward_std": config.get("reward_std"),
            "temperature": 1.0 if temperature is None else temperature}
    for key, value in ours.items():
        if key not in evaluation:
            continue
        recorded = evaluation[key]
        numbers = all(isinstance(v, (int, float)) for v in (recorded, value))
        if not (math.isclose(recorded, value, rel_tol=1e-9) if numbers else recorded == value):
            why = ("measured before `evaluate --calibrate` stored a T, or at another T" if key == "temperature"
                   else "another model's, or an earlier training run's into this folder")
            raise UserInputError(
                f"The metrics are not this model's: they record {key} = {recorded}, {model_dir / 'config.json'} "
                f"has {value} ({why}). Run `rewardkit evaluate --model {model_dir} --report-dir R` again and "
                "pass R/metrics.json."
            )


def _check_code_files(model_dir: Path) -> None:
    missing = [name for name in CODE_FILES if not (model_dir / name).is_file()]
    if missing:
        raise UserInputError(
            f"{model_dir} lacks the model code {', '.join(missing)}: without it the Hub model cannot load "
            "with trust_remote_code. Save the model again with `RewardModel.save_pretrained`, which "
            "copies both files."
        )


def _refuse_outside_links(model_dir: Path, names: list[str]) -> None:
    """Refuse a file to publish that is a link leading out of `model_dir`: copying follows links, so a
    `vocab.txt -> ~/.ssh/id_rsa` in a downloaded or unpacked folder went to the Hub under the user's
    name (a tokenizer that does not read the file, BERT's and merges.txt, still verifies)."""
    outside = [name for name in names if model_dir not in (model_dir / name).resolve().parents]
    if outside:
        raise UserInputError(
            f"{model_dir} holds links to files outside it: {', '.join(outside)}. rewardkit publishes only the "
            "model folder's own files, so that a link cannot send other content to the Hub; copy the files in "
            "(`cp -L`) if they are this model's, then publish."
        )


def _code_sources(model_dir: Path) -> dict[str, Path]:
    """The installed rewardkit's code files, which the upload carries (not the folder's): they are the
    code `score`, `evaluate` and verification's reference ran, and a folder's own copy may be edited
    or foreign code that the fresh load would run here and the Hub would serve under the user's name."""
    from importlib.util import find_spec

    sources = {name: Path(find_spec(name.removesuffix(".py")).origin) for name in CODE_FILES}
    changed = [name for name, source in sources.items() if (model_dir / name).read_bytes() != source.read_bytes()]
    if changed:
        logger.warning("%s holds a %s that differs from the installed rewardkit's; publishing the installed one "
                       "(the code rewardkit scored and evaluated this model with).", model_dir, " and a ".join(changed))
    return sources


def _tokenizer_files(model_dir: Path) -> list[str]:
    names = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if "tokenizer_config.json" not in names and "tokenizer.json" not in names:
        raise UserInputError(
            f"{model_dir} holds no tokenizer (tokenizer.json / tokenizer_config.json): users could not "
            "tokenize (prompt, response) pairs. Save it with `tokenizer.save_pretrained(folder)`."
        )
    return names


def _scrub_local_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Replace local paths recorded as `_name_or_path` by their Hub id (or drop them): they say
    nothing to a Hub user and may reveal user names and directory layouts."""
    from rewardkit.model_card import hub_model_id

    def scrub(values: dict[str, Any]) -> dict[str, Any]:
        cleaned = {}
        for key, value in values.items():
            if key == "_name_or_path" and isinstance(value, str) and value:
                value = hub_model_id(value) or ""
            elif isinstance(value, dict):
                value = scrub(value)
            cleaned[key] = value
        return cleaned

    return scrub(config)


def _render_card(model_dir: Path, config: dict[str, Any], *, repo_id: str, evaluation: dict | None,
                 datasets: list[str] | None, license: str | None, revision: str | None = None, adapter: bool = False,
                 language: list[str] | None = None) -> str:
    from rewardkit.model_card import card_license, render_model_card

    summary_path = model_dir / SUMMARY_FILE
    training = _read_json(summary_path) if summary_path.is_file() else {}
    step = None if training else _checkpoint_step(model_dir)
    if step is not None:
        datasets = datasets or _checkpoint_data(model_dir)
        logger.warning("%s is a training checkpoint (step %d), which has no %s (`rewardkit train` writes it with a "
                       "run's final model only): the card says so, and states no epochs, time or hyperparameters.", model_dir,
                       step, SUMMARY_FILE)
    elif not training:
        logger.warning("%s has no %s: the card says so, and states no training data, steps or time.", model_dir,
                       SUMMARY_FILE)
    if card_license(config, training, license) is None:
        logger.warning("The card states no license: the base model's license is not known here, and the weights "
                       "stay under it. Pass --license ID (a Hub license id: mit, llama3.2, other, ...).")
    return render_model_card(config, training, evaluation, repo_id=repo_id,
                             datasets=datasets or None, license=license, language=language or None,
                             revision=revision, adapter=adapter, checkpoint_step=step)


def _checkpoint_step(model_dir: Path) -> int | None:
    """The step of a Trainer's checkpoint (its trainer_state.json), None for any other folder."""
    step = read_record(model_dir / TRAINER_STATE_FILE).get("global_step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _checkpoint_data(model_dir: Path) -> list[str]:
    """The training data a checkpoint records (training_data.json, as the training summary names it),
    for the card to name as a final model's card does; [] when it records none."""
    data = read_record(model_dir / CHECKPOINT_DATA_FILE).get("data")
    return [data] if isinstance(data, str) and data else []


def is_previous_build(folder: Path) -> bool:
    """True when `folder` holds nothing but files a publish folder may hold (safe to replace)."""
    allowed = set(TOKENIZER_FILES) | set(CODE_FILES) | {WEIGHTS_FILE, WEIGHTS_INDEX_FILE, "config.json", CARD_FILE}
    shard = re.compile(r"model-\d+-of-\d+\.safetensors")

    def allowed_entry(p: Path) -> bool:
        if p.is_dir() and p.name == ADAPTER_DIR:
            return all(q.is_file() and q.name in ADAPTER_FILES for q in p.iterdir())
        return p.is_file() and (p.name in allowed or bool(shard.fullmatch(p.name)))

    return all(allowed_entry(p) for p in folder.iterdir())


def _adapter_files(model_dir: Path) -> list[str]:
    """`adapter/...` files to publish when training kept the LoRA adapter (all of them or none)."""
    adapter = model_dir / ADAPTER_DIR
    if not (adapter / ADAPTER_CONFIG_FILE).is_file():
        return []
    missing = [name for name in ADAPTER_FILES if not (adapter / name).is_file()]
    if missing:
        raise UserInputError(f"{adapter} is incomplete (no {', '.join(missing)}); train again with --keep-adapter "
                             "or delete the folder to publish the merged model alone.")
    return [f"{ADAPTER_DIR}/{name}" for name in ADAPTER_FILES]


def _scrub_adapter_config(path: Path) -> None:
    """The adapter config names its base model by the path it was loaded from: keep it only when
    it is a Hub id (a local path says nothing to a Hub user and may reveal user names)."""
    from rewardkit.model_card import hub_model_id

    config = _read_json(path)
    config["base_model_name_or_path"] = hub_model_id(config.get("base_model_name_or_path"))
    _write_json(path, config)


def _scrub_reward_config(path: Path) -> None:
    """`adapter/reward_config.json` is the reward model's config.json saved beside the adapter, so
    it records the backbone's `_name_or_path` (the packaged MiniLM's site-packages path, a Hub
    cache snapshot) just as config.json does: scrub it the same way."""
    _write_json(path, _scrub_local_paths(_read_json(path)))


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to `out_dir`, replacing an earlier build of it.

    A rename is atomic, so `out_dir` is either absent, the old build, or the complete new build;
    never half-written. Anything else already at `out_dir` is left alone and refused.
    """
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    if not out_dir.is_dir() or not is_previous_build(out_dir):
        raise UserInputError(
            f"{out_dir} exists and holds other files than a publish folder; choose a new output folder "
            "or delete it first (it is never merged into)."
        )
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _published_config(config: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """config.json as it goes to the Hub: local paths removed; auto_map names the published code files
    only (an extra entry such as `"AutoModelForCausalLM": "someone/repo--evil.Model"` went up as it was,
    and the Hub served it under the user's name to whoever loaded that class); a calibration temperature an earlier
    rewardkit stored as `temperature` moved to `calibration_temperature` (`temperature` is a
    generation setting: transformers 5 refuses to save a model config holding one and 4.x resets it
    to 1.0 on load); and the tokenizer class named, because transformers 4.x `pipeline` loads a
    tokenizer for a custom model type only when the config names its class."""
    config = _scrub_local_paths(config)
    config["auto_map"] = dict(REQUIRED_AUTO_MAP)  # no other entries: they could name code elsewhere on the Hub
    if "temperature" in config:
        legacy = config.pop("temperature")
        if config.get("calibration_temperature") is None:
            config["calibration_temperature"] = legacy
    tokenizer_config = model_dir / "tokenizer_config.json"
    if not config.get("tokenizer_class") and tokenizer_config.is_file():
        tokenizer_class = _read_json(tokenizer_config).get("tokenizer_class")
        if isinstance(tokenizer_class, str) and tokenizer_class:
            config["tokenizer_class"] = tokenizer_class
    return config


def build_publish_folder(model_dir: str | Path, out_dir: str | Path, *, repo_id: str,
                         evaluation: dict | None = None, datasets: list[str] | None = None,
                         license: str | None = None, revision: str | None = None,
                         language: list[str] | None = None) -> Path:
    """Write the folder to upload for the trained model in `model_dir`; return `out_dir`.

    The folder holds exactly: safetensors weights (one file, or shards + index), config.json (with
    the auto_map of all three Auto classes and no other; local paths removed), configuration_reward.py and
    modeling_reward.py as installed (not the folder's copies), the tokenizer files present, and README.md re-rendered for `repo_id` (so
    its usage example loads the real repo) from training_summary.json, `evaluation` (a metrics dict
    as `rewardkit evaluate --report-dir R` writes to R/metrics.json) and `datasets` (local data is
    named there by its file name only, and kept out of the metadata, which takes Hub ids); with a
    `revision` (the branch it goes to, other than main) the card's code loads that branch. A LoRA
    run with --keep-adapter adds `adapter/` (PEFT adapter + head + reward_config.json, local paths
    removed as in config.json); the merged weights are what `from_pretrained` loads either way.

    Nothing here touches the network. The files are written to a hidden sibling folder that is
    renamed to `out_dir` at the end, so a crash never leaves a folder that looks complete.

    Raises:
        FileNotFoundError: `model_dir` does not exist.
        ValueError: not a rewardkit reward model (a LoRA adapter), no auto_map, no code files, pickle weights only,
            no tokenizer, a file to publish that links outside `model_dir`, `evaluation` recorded for another model or T, or `out_dir` holds unrelated files.
    """
    model_dir, out_dir = Path(model_dir).expanduser().resolve(), Path(out_dir).expanduser().resolve()
    validate_repo_id(repo_id)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"Model folder {model_dir} does not exist (pass the --output-dir of `rewardkit train`).")
    if out_dir == model_dir or model_dir in out_dir.parents:
        raise UserInputError(f"The publish folder {out_dir} must be outside the model folder {model_dir}.")
    weights = _weight_files(model_dir)  # first: "pickle weights only" is the most useful refusal
    if not (model_dir / "config.json").is_file():
        raise UserInputError(f"{model_dir} has no config.json: it is not a saved reward model.")
    config = _read_json(model_dir / "config.json")
    _check_reward_config(config, model_dir)
    _check_evaluation_values(evaluation)
    _check_evaluation_matches(evaluation, config, model_dir)
    _check_code_files(model_dir)
    adapter = _adapter_files(model_dir)
    copied = [*weights, *_tokenizer_files(model_dir), *adapter]
    read = [*copied, *CODE_FILES, "config.json", *([SUMMARY_FILE] if (model_dir / SUMMARY_FILE).exists() else [])]
    _refuse_outside_links(model_dir, read)
    sources = {**{name: model_dir / name for name in copied}, **_code_sources(model_dir)}
    card = _render_card(model_dir, config, repo_id=repo_id, evaluation=evaluation, datasets=datasets, license=license,
                        revision=revision, adapter=bool(adapter), language=language)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the finished folder is an ordinary one
        for name, source in sources.items():
            (staging / name).parent.mkdir(exist_ok=True)  # adapter/
            shutil.copyfile(source, staging / name)  # copies, never links: the folder is its own
        if (staging / ADAPTER_DIR).is_dir():
            _scrub_adapter_config(staging / ADAPTER_DIR / ADAPTER_CONFIG_FILE)
            if (staging / ADAPTER_DIR / REWARD_CONFIG_FILE).is_file():
                _scrub_reward_config(staging / ADAPTER_DIR / REWARD_CONFIG_FILE)
        _write_json(staging / "config.json", _published_config(config, model_dir))
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("Built the publish folder %s for %s (%d files).", out_dir, repo_id, len(folder_files(out_dir)))
    return out_dir


def folder_files(folder: str | Path) -> list[str]:
    """Relative paths of every file under `folder`, sorted: what an upload of it would contain."""
    root = Path(folder)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# Step 2: verify in a fresh interpreter, as a Hub user would load it
# --------------------------------------------------------------------------------------------------

# Runs in a new interpreter; prints one JSON line. Loads only through the folder's own remote code.
_FRESH_LOAD_SCRIPT = r"""
import json, sys
import torch
from transformers import AutoModel, AutoTokenizer

folder, probes = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
model.eval()
batch = tokenizer([p for p, _ in probes], [r for _, r in probes], padding=True, truncation=True,
                  return_tensors="pt")
with torch.no_grad():
    output = model(**batch)
print(json.dumps({
    "logits": output.logits[:, 0].double().tolist(),
    "module": type(model).__module__,
    "missing_keys": sorted(info["missing_keys"]),
    "unexpected_keys": sorted(info["unexpected_keys"]),
    "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", [])),
}))
"""


def _score_reference(reference_dir: Path, probes: list[tuple[str, str]]) -> list[float]:
    """Scores of the probes from the installed `modeling_reward` (the code rewardkit trained and
    evaluated with), tokenized by the same AutoTokenizer call as the fresh load."""
    import torch
    from transformers import AutoTokenizer

    from modeling_reward import RewardModel

    model = RewardModel.from_pretrained(reference_dir, use_safetensors=True).eval()
    # No remote code here (as in `score`): a tokenizer_config.json auto_map in the folder being
    # published ran its .py file in this process. The fresh load alone runs remote code.
    tokenizer = AutoTokenizer.from_pretrained(reference_dir, config=model.config, trust_remote_code=False)
    batch = tokenizer([p for p, _ in probes], [r for _, r in probes], padding=True, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].double().tolist()


def _fresh_env(modules_cache: str) -> dict[str, str]:
    return {**os.environ, "HF_MODULES_CACHE": modules_cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _start_fresh_load(folder: Path, probes: list[tuple[str, str]], scratch: Path) -> subprocess.Popen:
    """Start loading `folder` with `trust_remote_code` in a new interpreter with an empty modules
    cache, so nothing from this process (installed modules, cached remote code) can stand in for
    the folder's files. Started in the background: the reference scores meanwhile."""
    modules_cache = scratch / "hf_modules"
    modules_cache.mkdir()
    return subprocess.Popen(
        [sys.executable, "-c", _FRESH_LOAD_SCRIPT, str(folder), json.dumps(probes)],
        cwd=scratch, env=_fresh_env(str(modules_cache)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish_fresh_load(process: subprocess.Popen, folder: Path) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=VERIFY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise PublishError(f"Verification of {folder} timed out after {VERIFY_TIMEOUT_S} s while loading it.") from None
    if process.returncode != 0:
        raise PublishError(
            f"The publish folder {folder} does not load the way a Hub user would load it "
            f"(AutoModel/AutoTokenizer.from_pretrained(..., trust_remote_code=True) in a fresh Python): "
            f"{stderr.strip()[-2000:]}"
        )
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise PublishError(f"Verification of {folder} printed no result: {stdout[-500:]!r}") from None


def _check_loaded(loaded: dict[str, Any], folder: Path) -> None:
    problems = [f"{kind.replace('_', ' ')}: {loaded[kind]}" for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if loaded.get(kind)]
    if not str(loaded.get("module", "")).startswith("transformers_modules"):
        problems.append(f"the model class came from {loaded.get('module')!r}, not from the folder's remote code")
    if problems:
        raise PublishError(f"The publish folder {folder} does not load cleanly: {'; '.join(problems)}.")


def verify_folder(folder: str | Path, reference_dir: str | Path | None = None) -> dict[str, Any]:
    """Check that `folder` loads from its own files and scores like the reference model.

    The folder is loaded in a fresh interpreter (empty HF_MODULES_CACHE, HF_HUB_OFFLINE=1) with
    `AutoModel`/`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)`, exactly as a Hub
    user would; the reference (`reference_dir`, default: the folder itself) is loaded here with the
    installed `modeling_reward.RewardModel`. Both score the fixed `PROBES`.

    Returns:
        {"probes", "published", "reference", "max_abs_diff"}.

    Raises:
        PublishError: the folder fails to load, loads with missing/unexpected keys, or any score
            differs from the reference by more than 1e-4.
    """
    folder = Path(folder).resolve()
    reference = Path(reference_dir).resolve() if reference_dir is not None else folder
    with tempfile.TemporaryDirectory(prefix="rewardkit-verify-") as scratch:
        process = _start_fresh_load(folder, PROBES, Path(scratch))
        try:
            expected = _score_reference(reference, PROBES)
        except BaseException:
            process.kill()
            process.communicate()
            raise
        loaded = _finish_fresh_load(process, folder)
    _check_loaded(loaded, folder)
    published = loaded["logits"]
    diffs = [abs(a - b) for a, b in zip(published, expected)]
    if len(published) != len(expected) or not all(d <= TOLERANCE for d in diffs):  # NaN fails too
        raise PublishError(
            f"The publish folder {folder} scores differently from {reference} (max difference "
            f"{max(diffs, default=float('nan')):.3g} > {TOLERANCE}): published {published}, local {expected}. "
            "The weights or the model code in the folder are not the ones you trained and evaluated; "
            "nothing was uploaded. Rebuild the folder from the trained model."
        )
    result = {"probes": PROBES, "published": published, "reference": expected, "max_abs_diff": max(diffs)}
    logger.info("Verified %s: loads with trust_remote_code in a fresh process; max |diff| %.2g.", folder, max(diffs))
    return result


# --------------------------------------------------------------------------------------------------
# Step 3: upload
# --------------------------------------------------------------------------------------------------


def _known_tokens(token: str | None) -> list[str]:
    """Every token that might appear in an error text: explicit, environment, `hf auth login` cache."""
    tokens = [token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        tokens.append(get_token())
    except Exception:  # scrubbing must never fail
        pass
    return [t for t in tokens if isinstance(t, str) and t]


def scrub_token(text: str, token: str | None = None) -> str:
    """`text` with every known token, and anything shaped like a Hugging Face token, masked."""
    for secret in sorted(_known_tokens(token), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _TOKEN_PATTERN.sub("hf_***", text)


def _status_code(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _upload_advice(error: BaseException, repo_id: str) -> str:
    """One sentence on what to do, chosen by the kind of failure."""
    from huggingface_hub.errors import LocalTokenNotFoundError, OfflineModeIsEnabled

    code = _status_code(error)
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE is set: unset it (or use --dry-run to only build the folder)."
    if isinstance(error, LocalTokenNotFoundError) or code == 401:
        return ("The Hub did not accept your credentials: run `hf auth login` or set HF_TOKEN to a token "
                "with write access (https://huggingface.co/settings/tokens).")
    if code == 403:
        return (f"Your token may not write to {repo_id!r}: use a token with write access, check that the owner "
                "is you or an organization you can write to, then run `hf auth login` again or set HF_TOKEN.")
    if code is not None:
        return f"The Hub answered HTTP {code}; check the repo id and try again."
    return ("Could not reach the Hugging Face Hub: check your network connection or proxy (HF_ENDPOINT), "
            "and that you are logged in (`hf auth login` or HF_TOKEN).")


# Files a model repo may hold from an earlier upload that this one would not replace: other weight
# shards or formats, a shard index, an adapter. Deleted after the upload succeeded, so the repo
# serves exactly the weights that were verified (and an interrupted upload deletes nothing).
STALE_FILE_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.pt", "*.pth",
                       "*.ckpt", "*.h5", "*.msgpack", f"{ADAPTER_DIR}/*"]


def stale_files(remote: list[str], uploaded: list[str]) -> list[str]:
    """Remote weight/adapter files (`STALE_FILE_PATTERNS`) that the upload did not replace."""
    keep = set(uploaded)
    return sorted(path for path in remote if path not in keep
                  and any(fnmatch.fnmatch(path, pattern) for pattern in STALE_FILE_PATTERNS))


def _delete_stale_files(api: Any, repo_id: str, revision: str | None, *, uploaded: list[str]) -> None:
    from huggingface_hub import CommitOperationDelete

    stale = stale_files(api.list_repo_files(repo_id, repo_type="model", revision=revision), uploaded)
    if stale:
        api.create_commit(repo_id, repo_type="model", revision=revision,
                          operations=[CommitOperationDelete(path_in_repo=path) for path in stale],
                          commit_message=f"Remove {len(stale)} weight/adapter file(s) of an earlier upload")
        logger.info("Deleted from %s what an earlier upload left: %s", repo_id, ", ".join(stale))


def upload_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                  commit_message: str | None = None, token: str | None = None, api: Any = None) -> str:
    """Upload `folder` to the model repo `repo_id` in one `upload_folder` call; return the commit URL.

    Creates the repo if needed (`exist_ok=True`) and the branch `revision` if given. A new repo is
    private with `private=True`, else gets the owner's default visibility (an organization may
    default to private); `private=True` on an existing public repo is refused, not ignored. Weights
    and adapter files of an earlier upload that this folder does not hold (`STALE_FILE_PATTERNS`)
    are deleted in a second commit once the upload succeeded: not in the upload itself, because
    huggingface_hub may split a large upload into several commits, and a stale-file deletion in
    the first of them would leave an interrupted upload with no weights at all. The token comes
    from `token`, else HF_TOKEN, else the `hf auth login` cache (HfApi looks in that order).

    Raises:
        PublishError: authentication, permission or network failure, with what to do next. The
            token never appears in the message, and the original exception is not chained (its
            text could hold the token).
    """
    from huggingface_hub import HfApi

    validate_repo_id(repo_id)
    folder = Path(folder)
    api = api or HfApi(token=token)
    message = commit_message or "Upload reward model with rewardkit"
    try:
        # None, not False: False would make a new repo public even where the owner defaults to private
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        if private and getattr(api.repo_info(repo_id, repo_type="model"), "private", None) is False:
            raise PublishError(f"{repo_id!r} already exists and is public; --private (private=True) cannot change "
                               "that, so nothing was uploaded. Make the repo private in its settings on the Hub, "
                               "or publish without --private.")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   revision=revision, commit_message=message)
        _delete_stale_files(api, repo_id, revision, uploaded=folder_files(folder))
    except PublishError:
        raise
    except Exception as error:  # every Hub/network failure becomes one clear message
        detail = scrub_token(f"{type(error).__name__}: {error}", token)
        raise PublishError(f"Uploading {folder} to {repo_id!r} failed. {_upload_advice(error, repo_id)} "
                           f"(Details: {detail})") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    logger.info("Uploaded %s to %s: %s", folder, repo_id, url)
    return url


# --------------------------------------------------------------------------------------------------
# All three
# --------------------------------------------------------------------------------------------------


def publish(model_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
            commit_message: str | None = None, dry_run: bool = False, out: str | Path | None = None,
            evaluation: dict | None = None, datasets: list[str] | None = None, api: Any = None,
            token: str | None = None, verify: bool = True, license: str | None = None,
            language: list[str] | None = None) -> PublishResult:
    """Build the Hub folder for `model_dir`, verify it in a fresh process, and upload it.

    Args:
        model_dir: the `--output-dir` of `rewardkit train`.
        repo_id: `owner/name` on the Hub.
        revision: the branch to upload to (created if needed); the card's code then loads that branch.
        dry_run: build and verify only; the folder is written to `out` (or a new temporary folder
            that is kept) for inspection.
        out: where to build the folder. Without it (and not a dry run) a temporary folder is used and
            removed after the upload.
        evaluation: a metrics dict (`rewardkit evaluate --report-dir R` -> R/metrics.json) for the card.
        license: the card's license (a Hub license id); default the base model's when known here,
            else the card states none (with a warning).
        language: the card's language codes (`en`, `de`, ...); default the base model's when known
            here (English for the packaged MiniLM), else the card states none.
        api: an `HfApi`-like object (tests inject a fake); default `HfApi(token=token)`.
        verify: load the folder in a fresh interpreter and compare scores first. A folder that fails
            is removed and nothing is uploaded (no Hub call at all).

    Raises:
        ValueError: bad repo id or a model folder that cannot be published.
        PublishError: verification or upload failed.
    """
    validate_repo_id(repo_id)
    if not dry_run and api is None:
        _check_can_reach_the_hub(token)
    name = repo_id.split("/")[1]
    scratch = None if out is not None else Path(tempfile.mkdtemp(prefix="rewardkit-publish-"))
    folder = Path(out) if out is not None else scratch / name
    succeeded = False
    try:
        build_publish_folder(model_dir, folder, repo_id=repo_id, evaluation=evaluation, datasets=datasets,
                             license=license, revision=revision, language=language)
        if verify:
            _verify_or_remove(folder, Path(model_dir))
        files = folder_files(folder)
        if dry_run:
            logger.info("Dry run: %s is ready for %s (%d files); nothing uploaded.", folder, repo_id, len(files))
            result = PublishResult(folder=folder.resolve(), repo_id=repo_id, files=files, url=None, verified=verify)
        else:
            url = upload_folder(folder, repo_id, private=private, revision=revision,
                                commit_message=commit_message, token=token, api=api)
            kept = None if scratch is not None else folder.resolve()
            result = PublishResult(folder=kept, repo_id=repo_id, files=files, url=url, verified=verify)
        succeeded = True
        return result
    finally:
        # A temporary folder goes after an upload, and after any failure; a dry run keeps it to look at.
        if scratch is not None and not (dry_run and succeeded):
            shutil.rmtree(scratch, ignore_errors=True)


def _check_can_reach_the_hub(token: str | None) -> None:
    """Refuse in a moment what would otherwise fail only after building and verifying the folder
    (~20 s): offline mode, or no token anywhere. (A wrong token still fails at the upload.)"""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PublishError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it, or use --dry-run to "
                           "only build and verify the folder. Nothing was built.")
    if token is None and get_token() is None:
        raise PublishError("No Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with "
                           "write access (https://huggingface.co/settings/tokens), or use --dry-run to only "
                           "build and verify the folder. Nothing was built.")


def _verify_or_remove(folder: Path, model_dir: Path) -> None:
    """A folder that failed verification must not be mistaken for a good one later: remove it."""
    try:
        verify_folder(folder, reference_dir=model_dir)
    except BaseException:  # PublishError, but also Ctrl-C or a crash while verifying
        shutil.rmtree(folder, ignore_errors=True)
        raise
