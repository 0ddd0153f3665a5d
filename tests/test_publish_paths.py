"""Publishing leaks no local path, and the card shows hyperparameters as a reader would type them.

A trained model folder records where things came from on the author's machine: the packaged
MiniLM's site-packages path (config.json, adapter/reward_config.json, adapter_config.json), the
evaluation data's path (metrics.json), `--dataset` paths. None of them may reach the Hub folder;
Hub ids must stay as they are. No network anywhere.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers.trainer_utils import SchedulerType

from rewardkit.calibration import T_MAX
from rewardkit.file_names import ADAPTER_DIR
from rewardkit.model_card import (
    PACKAGED_MINILM_ID,
    UNKNOWN_DATASET_TYPE,
    dataset_display_name,
    hub_dataset_id,
    render_model_card,
    write_model_card,
)
from rewardkit.publishing import publish
from tests import helpers

REPO_ID = "rewardkit-test/no-paths"
# Where the reviewer's data lived: absolute local paths, as `rewardkit evaluate` and `--dataset` record them.
EVAL_DATA = "/work/shared/data/hh-rlhf-harmless/dev.jsonl"
TRAIN_DATA = "/home/alice/private/hh-rlhf-harmless/train.jsonl"
EVALUATION = {
    "accuracy": 0.5545, "mean_margin": 0.0066, "ece": 0.0345, "brier": 0.2481, "n": 312,
    "data": EVAL_DATA, "data_name": EVAL_DATA, "model": "/home/alice/runs/hh-rm",
}
# As rewardkit.fit records them: `str()` of the scheduler enum, and max_length (also a row of its own).
HYPERPARAMETERS = {
    "learning_rate": 1e-4, "lr_scheduler_type": "SchedulerType.LINEAR", "max_length": 128, "seed": 42,
    "train_sampling_strategy": "group_by_length", "lora_r": 4, "lora_target_modules": ["query", "value"],
}
# An absolute POSIX path of two or more parts ("/a/b"), not the tail of a URL or of "pairs/s".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.~-]+/)+[\w.~-]+")


def _training_summary() -> dict:
    """The fields rewardkit.fit writes to training_summary.json."""
    return {
        "output_dir": "/home/alice/runs/hh-rm", "objective": "pairwise", "base_model": str(helpers.minilm_path()),
        "detected_layout": "pairwise (implicit prompt, HH-RLHF transcripts)", "train_rows": 200, "eval_rows": 32,
        "epochs": 1.0, "steps": 13, "seconds": 18.0, "examples_per_second": 11.3, "train_loss": 0.69,
        "max_length": 128, "eval_metrics": {"eval_accuracy": 0.55}, "reward_mean": 0.13, "reward_std": 0.12,
        "hyperparameters": HYPERPARAMETERS, "hardware": "CPU (test)",
    }


@pytest.fixture(scope="module")
def lora_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A folder shaped like `rewardkit train --use-lora --keep-adapter --output-dir`, trained on the
    packaged MiniLM: its local path is recorded in config.json, adapter/adapter_config.json and
    adapter/reward_config.json, as training records it."""
    pytest.importorskip("peft")
    from rewardkit.lora import apply_lora, save_adapter

    folder = tmp_path_factory.mktemp("trained-lora")
    minilm = str(helpers.minilm_path())
    torch.manual_seed(0)
    model = helpers.tiny_reward_model()
    model.config.backbone_config._name_or_path = minilm
    model.save_pretrained(folder)  # first: LoRA wraps the model's layers in place
    tokenizer.save_pretrained(folder)
    save_adapter(apply_lora(model, r=4), folder / ADAPTER_DIR)
    adapter_config = json.loads((folder / ADAPTER_DIR / "adapter_config.json").read_text())
    (folder / ADAPTER_DIR / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": minilm}))
    (folder / "training_summary.json").write_text(json.dumps(_training_summary()))
    write_model_card(folder, training=_training_summary())
    for name in ("reward_config.json", "adapter_config.json"):
        assert minilm in (folder / ADAPTER_DIR / name).read_text(), f"the fixture must record the local path in {name}"
    assert minilm in (folder / "config.json").read_text()
    return folder


@pytest.fixture(scope="module")
def dry_run(lora_model_dir, tmp_path_factory):
    """`publish --dry-run --out DIR --metrics metrics.json --dataset PATH --dataset HUB_ID`, verified."""
    out = tmp_path_factory.mktemp("publish") / "hub-folder"
    return publish(lora_model_dir, REPO_ID, dry_run=True, out=out, evaluation=EVALUATION,
                   datasets=[TRAIN_DATA, "Anthropic/hh-rlhf"])


def _text_files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in {".json", ".md"}}


def test_dry_run_folder_holds_no_local_path(dry_run, lora_model_dir):
    files = _text_files(dry_run.folder)
    assert {"README.md", "config.json", "adapter/reward_config.json", "adapter/adapter_config.json"} <= set(files)
    local = [str(helpers.minilm_path()), str(helpers.minilm_path().resolve()), sys.prefix, str(Path.home()),
             str(lora_model_dir), EVAL_DATA, TRAIN_DATA, "/home/alice", "/work/shared"]
    for name, text in files.items():
        leaked = [path for path in local if path in text]
        assert not leaked, f"{name} holds local paths {leaked}"
        assert not _ABSOLUTE_PATH.findall(text), f"{name} holds absolute paths {_ABSOLUTE_PATH.findall(text)}"


def test_adapter_reward_config_names_the_backbone_by_hub_id(dry_run):
    reward_config = json.loads((dry_run.folder / ADAPTER_DIR / "reward_config.json").read_text())
    config = json.loads((dry_run.folder / "config.json").read_text())
    adapter_config = json.loads((dry_run.folder / ADAPTER_DIR / "adapter_config.json").read_text())
    assert reward_config["backbone_config"]["_name_or_path"] == PACKAGED_MINILM_ID
    assert config["backbone_config"]["_name_or_path"] == PACKAGED_MINILM_ID
    assert adapter_config["base_model_name_or_path"] == PACKAGED_MINILM_ID
    # Only the path was rewritten: the fields that rebuild the model are those trained.
    assert reward_config["backbone_config"]["hidden_size"] == config["backbone_config"]["hidden_size"] == 32


def test_card_of_a_folder_with_an_adapter_says_what_it_is_and_how_to_load_it(dry_run, lora_model_dir):
    """`publish` uploads `adapter/` beside the merged model, and the card said nothing about it."""
    text = (dry_run.folder / "README.md").read_text()
    assert "in `adapter/` (PEFT format" in text and "have it merged already" in text
    assert f'snapshot_download("{REPO_ID}", allow_patterns="adapter/*")' in text
    assert f'load_adapter(f"{{folder}}/adapter", base_model="{PACKAGED_MINILM_ID}")' in text
    assert "in `adapter/`" in (lora_model_dir / "README.md").read_text()  # the training folder's card too
    from rewardkit.model_card import render_model_card

    plain = render_model_card(json.loads((dry_run.folder / "config.json").read_text()), _training_summary(),
                              repo_id=REPO_ID)
    assert "adapter/" not in plain and "load_adapter" not in plain


def test_local_data_is_named_by_file_name_and_kept_out_of_the_metadata(dry_run):
    card = ModelCard.load(dry_run.folder / "README.md")
    assert card.data.datasets == ["Anthropic/hh-rlhf"]  # Hub ids only: a path is no dataset id
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        (UNKNOWN_DATASET_TYPE, "dev.jsonl (local data)")}
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "mean_margin", "ece", "brier"}
    assert "| 0.5545 | dev.jsonl (local data, n=312) |" in card.text
    assert "200 pairs from train.jsonl (local data), Anthropic/hh-rlhf (" in card.text


def test_hub_evaluation_data_keeps_its_id():
    evaluation = {**EVALUATION, "data": "Anthropic/hh-rlhf", "data_name": "Anthropic/hh-rlhf"}
    card = ModelCard(render_model_card({}, _training_summary(), evaluation, repo_id=REPO_ID, datasets=["Anthropic/hh-rlhf"]))
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {("Anthropic/hh-rlhf", "Anthropic/hh-rlhf")}
    assert card.data.datasets == ["Anthropic/hh-rlhf"]
    assert "| 0.5545 | Anthropic/hh-rlhf (n=312) |" in card.text and "local data" not in card.text


def test_a_chosen_name_for_local_data_is_kept_and_marked_local():
    evaluation = {**EVALUATION, "data_name": "HH harmless dev"}  # `evaluate_model(..., data_name=...)`
    card = ModelCard(render_model_card({}, _training_summary(), evaluation, repo_id=REPO_ID))
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        (UNKNOWN_DATASET_TYPE, "HH harmless dev (local data)")}
    assert "| HH harmless dev (local data, n=312) |" in card.text and EVAL_DATA not in str(card)


def test_ranked_evaluation_names_its_pair_metrics_without_chosen_and_rejected():
    evaluation = {"objective": "ranking", "n": 40, "n_pairs": 240, "kendall_tau": 0.31, "top1_accuracy": 0.45,
                  "pairwise_accuracy": 0.66, "ece": 0.04, "brier": 0.21, "data": EVAL_DATA}
    card = ModelCard(render_model_card({}, _training_summary(), evaluation, repo_id=REPO_ID))
    names = {r.metric_type: r.metric_name for r in card.data.eval_results}
    assert set(names) == {"kendall_tau", "top1_accuracy", "accuracy", "ece", "brier"}
    assert names["accuracy"].startswith("Pairwise accuracy over all within-group pairs")
    assert names["ece"] == "Expected calibration error of P(better ≻ worse) over all within-group pairs"
    assert "chosen" not in card.text.split("## Evaluation")[-1].split("##")[0]


def test_training_metrics_on_a_split_of_local_data_name_no_path():
    card = ModelCard(render_model_card({}, _training_summary(), None, repo_id=REPO_ID, datasets=[TRAIN_DATA]))
    assert card.data.datasets is None
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        (UNKNOWN_DATASET_TYPE, "train.jsonl (local data)")}
    assert TRAIN_DATA not in str(card) and "/home/alice" not in str(card)


def test_training_metrics_on_a_held_out_file_name_that_file_in_the_metadata():
    """`train --eval-data dev.jsonl`, `publish --dataset Anthropic/hh-rlhf`: the table named the held-out
    file, and model-index said the figures were measured on Anthropic/hh-rlhf (the training data)."""
    training = {**_training_summary(), "eval_data": EVAL_DATA}
    card = ModelCard(render_model_card({}, training, None, repo_id=REPO_ID, datasets=["Anthropic/hh-rlhf"]))
    assert card.data.datasets == ["Anthropic/hh-rlhf"]
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        (UNKNOWN_DATASET_TYPE, "dev.jsonl (local data)")}
    assert "held-out file dev.jsonl, local data (n=" in card.text and EVAL_DATA not in str(card)
    on_hub = ModelCard(render_model_card({}, {**training, "eval_data": "Anthropic/hh-rlhf"}, None, repo_id=REPO_ID))
    assert {(r.dataset_type, r.dataset_name) for r in on_hub.data.eval_results} == {
        ("Anthropic/hh-rlhf", "Anthropic/hh-rlhf")}


def test_without_dataset_flags_the_card_names_the_data_training_recorded():
    """`train --data Anthropic/hh-rlhf` then `publish` without `--dataset`: the summary records the
    data (`data`), but the card read a `datasets` key nothing writes, so it had no `datasets`
    metadata, its Data row named no data and model-index called an --eval-fraction split "held-out data"."""
    on_hub = {**_training_summary(), "data": "Anthropic/hh-rlhf", "eval_data": None}
    card = ModelCard(render_model_card({}, on_hub, None, repo_id=REPO_ID))
    assert card.data.datasets == ["Anthropic/hh-rlhf"]
    assert "| Data | 200 pairs from Anthropic/hh-rlhf (" in card.text
    assert {(r.dataset_type, r.dataset_name) for r in card.data.eval_results} == {
        ("Anthropic/hh-rlhf", "Anthropic/hh-rlhf (held-out split of the training data)")}
    local = ModelCard(render_model_card({}, {**on_hub, "data": TRAIN_DATA}, None, repo_id=REPO_ID))
    assert local.data.datasets is None and "| Data | 200 pairs from train.jsonl (local data) (" in local.text
    assert "/home/alice" not in str(local)
    given = ModelCard(render_model_card({}, on_hub, None, repo_id=REPO_ID, datasets=["org/other"]))
    assert given.data.datasets == ["org/other"]  # --dataset says what the data is: it wins


def test_metadata_tells_a_held_out_split_of_the_training_data_from_a_split_of_its_own():
    """model-index named `--eval-fraction`'s rows of Anthropic/hh-rlhf's train split "Anthropic/hh-rlhf",
    as it named `--eval-data Anthropic/hh-rlhf --eval-split test`, with no split either time: a Hub
    reader could not tell held-out training rows from the test split (nor, for local data, from the
    training file: "train.jsonl (local data)")."""
    def datasets_of(training, **kwargs):
        card = ModelCard(render_model_card({}, {**_training_summary(), **training}, None, repo_id=REPO_ID, **kwargs))
        return {(r.dataset_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results}

    assert datasets_of({"data": "Anthropic/hh-rlhf", "data_split": "train", "eval_data": None}) == {
        ("Anthropic/hh-rlhf", "Anthropic/hh-rlhf (held-out split of the training data)", None)}
    assert datasets_of({"data": "Anthropic/hh-rlhf", "eval_data": "Anthropic/hh-rlhf", "eval_split": "test"}) == {
        ("Anthropic/hh-rlhf", "Anthropic/hh-rlhf", "test")}
    assert datasets_of({"data": TRAIN_DATA, "eval_data": None}) == {
        (UNKNOWN_DATASET_TYPE, "train.jsonl (local data) (held-out split of the training data)", None)}


def test_an_evaluation_of_the_training_data_is_marked_and_kept_out_of_the_metadata():
    """`evaluate --data train.jsonl` (the model's own training file), then `publish --metrics`: the card
    said "Length bias measured on held-out pairs" and model-index listed the training-data accuracy as
    the model's result. The table now says so, the length bias is "on training pairs", model-index has
    none; an evaluation's --split is named in the table and model-index."""
    evaluation = {**EVALUATION, "objective": "pairwise", "length_bias": {"spearman_reward_length": 0.2}}
    card = ModelCard(render_model_card({}, _training_summary(), {**evaluation, "on_training_data": True}, repo_id=REPO_ID))
    assert card.data.eval_results is None
    assert "| 0.5545 | dev.jsonl (local data, n=312; the model's training data: not held out, no independent check) |" in card.text
    assert "Length bias measured on training pairs:" in card.text and "held-out pairs" not in card.text
    held_out = ModelCard(render_model_card({}, _training_summary(), {**evaluation, "on_training_data": False,
                                                                     "split": "test"}, repo_id=REPO_ID))
    assert {(r.dataset_name, r.dataset_split) for r in held_out.data.eval_results} == {("dev.jsonl (local data)", "test")}
    assert "| 0.5545 | dev.jsonl (local data, split test, n=312) |" in held_out.text
    assert "Length bias measured on held-out pairs:" in held_out.text


@pytest.mark.parametrize("name, hub_id, display", [
    ("Anthropic/hh-rlhf", "Anthropic/hh-rlhf", "Anthropic/hh-rlhf"),
    ("trl-lib/ultrafeedback_binarized", "trl-lib/ultrafeedback_binarized", "trl-lib/ultrafeedback_binarized"),
    (EVAL_DATA, None, "dev.jsonl (local data)"),
    ("data/dev.jsonl", None, "dev.jsonl (local data)"),  # owner/name shaped, but a data file
    ("dev.jsonl", None, "dev.jsonl (local data)"),
    ("./hh/dev.jsonl.gz", None, "dev.jsonl.gz (local data)"),
    ("~/data/hh-folder", None, "hh-folder (local data)"),
    ("/work/shared/data/hh-rlhf-harmless/", None, "hh-rlhf-harmless (local data)"),
    ("C:\\Users\\alice\\data\\dev.jsonl", None, "dev.jsonl (local data)"),
    ("/", None, "local data"),
    ("held-out data", None, "held-out data"),  # a label, not a path
    ("hh-rlhf-harmless-test", None, "hh-rlhf-harmless-test"),
])
def test_hub_dataset_ids_and_local_data_names(name, hub_id, display):
    assert hub_dataset_id(name) == hub_id
    assert dataset_display_name(name) == display


def test_an_existing_local_folder_shaped_like_a_hub_id_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Anthropic" / "hh-rlhf").mkdir(parents=True)  # rewardkit.data reads it, not the Hub
    assert hub_dataset_id("Anthropic/hh-rlhf") is None
    assert dataset_display_name("Anthropic/hh-rlhf") == "hh-rlhf (local data)"


# --------------------------------------------------------------------------------------------------
# Hyperparameter table
# --------------------------------------------------------------------------------------------------


def _training_rows(card_text: str) -> list[tuple[str, str]]:
    section = card_text.split("## Training", 1)[1].split("## Evaluation", 1)[0]
    rows = [tuple(cell.strip() for cell in line.strip("|").split("|"))
            for line in section.splitlines() if line.startswith("| ") and line.count("|") == 3]
    return [row for row in rows if row[0]]  # not the empty header row


def test_hyperparameters_show_enum_values_and_each_key_once(dry_run):
    rows = _training_rows((dry_run.folder / "README.md").read_text())
    keys = [key for key, _ in rows]
    assert len(keys) == len(set(keys)), f"duplicate rows: {keys}"
    assert [key for key in keys if key.lower().replace(" ", "_") == "max_length"] == ["Max length"]
    values = dict(rows)
    assert values["lr_scheduler_type"] == "linear"
    assert values["Max length"].startswith("128 tokens")
    assert values["lora_target_modules"] == "query, value"
    assert values["train_sampling_strategy"] == "group_by_length" and values["learning_rate"] == "0.0001"
    assert "SchedulerType" not in (dry_run.folder / "README.md").read_text()


@pytest.mark.parametrize("value, shown", [
    (SchedulerType.COSINE, "cosine"),  # an enum member passed as is
    ("SchedulerType.LINEAR", "linear"),  # its str(), as training summaries recorded it
    ("SchedulerType.REDUCE_ON_PLATEAU", "reduce_lr_on_plateau"),  # the value, not the lower-cased name
    ("NoSuchEnum.MEMBER", "NoSuchEnum.MEMBER"),  # unknown: left as written, never guessed
    ("linear", "linear"),
])
def test_hyperparameter_values_are_rendered_as_typed(value, shown):
    training = {**_training_summary(), "hyperparameters": {"lr_scheduler_type": value, "max_length": 64}}
    rows = dict(_training_rows(render_model_card({}, training, repo_id=REPO_ID)))
    assert rows["lr_scheduler_type"] == shown
    assert "max_length" not in rows and rows["Max length"].startswith("128 tokens")


def test_max_length_row_falls_back_to_the_hyperparameter():
    training = {key: value for key, value in _training_summary().items() if key != "max_length"}
    text = render_model_card({}, training, repo_id=REPO_ID)
    rows = dict(_training_rows(text))
    assert rows["Max length"].startswith("128 tokens") and "max_length" not in rows
    assert "MAX_LENGTH = 128  #" in text  # the usage example truncates as training did


# Prompts whose left cut falls inside words at some lengths: WordPiece splits these words into pieces
# ("insurrection" -> "ins", "##urre", "##ction"), and the card once cut the prompt *text* where the
# first kept piece began, which the tokenizer read again as other pieces ("##ei" became "e", "##ive").
_MID_WORD_PROMPT = ("\n\nHuman: Were the insurrectionists deceived about the unconstitutionality of the "
                    "electioneering? " * 4 + "\n\nAssistant:")


@pytest.mark.parametrize("max_length", range(20, 60, 3))
def test_card_usage_code_feeds_the_model_what_rewardkit_trained_it_on(tokenizer, monkeypatch, max_length):
    """The card's first Python block, run as written (the repo loads from the local tokenizer and a
    tiny model), must give the model the token ids rewardkit's encoder gives it for long pairs: a
    prompt cut inside a word, a response too long by itself or as long as the budget (the prompt then
    goes entirely), an empty prompt. Cutting the text by
    characters fed 4 of 624 HH-RLHF dev texts at 128 tokens other ids (and then cut the prompt's
    final "Assistant:" too): rewards 0.09 to 0.20 off, against a median pair margin of 0.6."""
    import transformers

    from rewardkit.features import PairEncoder

    summary = {**_training_summary(), "max_length": max_length}
    block = re.findall(r"```python\n(.*?)```", render_model_card({}, summary, repo_id=REPO_ID), flags=re.DOTALL)[0]
    load_tokenizer = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda repo, **kwargs: load_tokenizer(helpers.minilm_path(), **kwargs))
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda repo, **kwargs: helpers.tiny_reward_model())
    encoder = PairEncoder(tokenizer, max_length=max_length)
    cases = [("What is the capital of France?", "Paris."), (_MID_WORD_PROMPT, "They were not deceived."),
             (_MID_WORD_PROMPT, "unconstitutionally " * 40), (_MID_WORD_PROMPT, "yes " * (max_length - 3)),  # = budget
             ("Why?", "Because the electioneering was unconstitutional. " * 8), ("", "only a response here")]
    for prompt, response in cases:
        namespace = {"__name__": "__main__"}
        example_lines = f"prompt = {prompt!r}\nresponses = [{response!r}, 'Yes.']"
        example = re.sub(r"(?m)^prompt = .*\nresponses = .*$", lambda _, lines=example_lines: lines, block)
        exec(compile(example, "<model card>", "exec"), namespace)
        inputs = namespace["inputs"]
        fed = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()  # the first response, unpadded
        assert fed == encoder.encode([prompt], [response])[0]["input_ids"], (max_length, prompt[:20], response[:20])


def test_figures_at_a_temperature_fitted_on_the_same_pairs_are_marked_and_kept_out_of_the_metadata():
    """`evaluate --calibrate` then `publish --metrics`: ECE and Brier were measured on the pairs T
    was fitted on. The table marks them (and shows the ECE before); model-index, which readers
    take as held-out results, does not carry them."""
    evaluation = {**EVALUATION, "temperature_fitted": 0.8, "temperature_written": True, "temperature_before": 1.0,
                  "ece_before": 0.0712, "ece_after": 0.0345}
    card = ModelCard(render_model_card({"calibration_temperature": 0.8}, _training_summary(), evaluation,
                                       repo_id=REPO_ID))
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy", "mean_margin"}
    assert "| Expected calibration error of P(chosen ≻ rejected) (measured on the pairs `--calibrate` fitted T on: " \
           "no independent check) | 0.0345 |" in card.text
    assert "| Expected calibration error before calibration (T = 1) | 0.0712 |" in card.text
    plain = ModelCard(render_model_card({}, _training_summary(), EVALUATION, repo_id=REPO_ID))
    assert {r.metric_type for r in plain.data.eval_results} == {"accuracy", "mean_margin", "ece", "brier"}
    assert "independent check" not in plain.text


def test_a_card_without_results_has_no_stray_model_name_key():
    training = {key: value for key, value in _training_summary().items() if key != "eval_metrics"}
    card = ModelCard(render_model_card({}, training, None, repo_id=REPO_ID))
    assert card.data.eval_results is None and "model_name" not in card.data.to_dict()
    with_results = ModelCard(render_model_card({}, _training_summary(), EVALUATION, repo_id=REPO_ID))
    assert with_results.data.to_dict()["model-index"][0]["name"] == REPO_ID  # model_name names this entry


def test_card_gives_the_calibration_interval_and_says_when_t_is_not_told_from_1():
    evaluation = {**EVALUATION, "temperature_fitted": 0.517, "temperature_written": True, "temperature_before": 1.0,
                  "ece_before": 0.009, "ece_after": 0.069, "temperature_interval": [0.24, 3.9],
                  "temperature_differs_from_1": False, "temperature_lr_vs_1": 0.48}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), evaluation, repo_id=REPO_ID)
    assert ("**T = 0.517** fitted on held-out preference pairs (stored in `config.json` as `calibration_temperature`); 95% "
            "interval 0.24 to 3.9 on 312 pairs, which cannot tell it from T = 1: read the probabilities as rough.") in text
    firm = {**evaluation, "temperature_interval": [0.41, 0.62], "temperature_differs_from_1": True}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), firm, repo_id=REPO_ID)
    assert "95% interval 0.41 to 0.62 on 312 pairs." in text and "rough" not in text
    # an end at the search bound T_MAX is no limit the pairs set: not "0.24 to 1e+03"
    open_ended = {**evaluation, "temperature_interval": [0.24, T_MAX * (1 - 1e-15)]}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), open_ended, repo_id=REPO_ID)
    assert "95% interval 0.24 or more (no upper limit within the search range, which ends at 1e+06) on 312" in text
    # a card whose metrics are not the run that fitted the stored T says nothing about an interval
    other = render_model_card({"calibration_temperature": 0.8}, _training_summary(), evaluation, repo_id=REPO_ID)
    assert "95% interval 0.24 to 3.9" not in other  # (the accuracy has a 95% interval of its own)
    # ranked data: T is fitted on the groups' within-group pairs, and the card says how many
    ranked = {**firm, "objective": "ranking", "n": 15, "n_pairs": 45}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), ranked, repo_id=REPO_ID)
    assert "95% interval 0.41 to 0.62 on 15 ranked groups (45 within-group pairs), computed as if" in text


def test_card_says_whether_a_ranked_models_t_interval_allows_for_its_groups():
    """For ranked data T is fitted on every within-group pair, and those of one group share responses.
    The report said its interval, counting them as independent, was too narrow; the card stated it
    plainly. Now evaluate widens it by the groups' design effect and records that it did; a card
    rendered from a record without that (an older evaluate) carries the report's caveat."""
    evaluation = {**EVALUATION, "temperature_fitted": 0.517, "temperature_written": True, "objective": "ranking",
                  "n": 15, "n_pairs": 45, "temperature_interval": [0.41, 0.62], "temperature_differs_from_1": True}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), evaluation, repo_id=REPO_ID)
    assert ("95% interval 0.41 to 0.62 on 15 ranked groups (45 within-group pairs), computed as if the pairs of one "
            "group were independent draws (they share responses), so somewhat too narrow.") in text
    by_group = {**evaluation, "temperature_interval_by_group": True}
    text = render_model_card({"calibration_temperature": 0.517}, _training_summary(), by_group, repo_id=REPO_ID)
    assert ("95% interval 0.41 to 0.62 on 15 ranked groups (45 within-group pairs), allowing for the pairs of one "
            "group sharing responses.") in text and "too narrow" not in text


def test_a_model_without_a_training_record_gets_no_placeholder_rows():
    """A folder saved by TRL's RewardTrainer (README, TRL section) or by save_pretrained has no
    training_summary.json: its card said "Trained with rewardkit (pairwise Bradley-Terry loss ...)",
    and "Data | ? pairs (?)", "Steps / epochs | ? / ?",
    "Hardware | ?", "Training time | ? (0.00 pairs/s)" and a max length it was not trained at."""
    text = render_model_card({"backbone_config": {"_name_or_path": "bert-base-uncased"}}, None, repo_id=REPO_ID)
    section = text.split("## Training", 1)[1].split("## Evaluation", 1)[0]
    assert "?" not in section and "0.00" not in section
    rows = dict(_training_rows(text))
    assert rows["Base model"] == "`bert-base-uncased`"
    assert not {"Data", "Steps / epochs", "Max length", "Hardware", "Training time"} & set(rows)
    assert "training_summary.json" in section  # says why there is so little
    intro = text.split("## Usage", 1)[0]
    assert "Trained with [rewardkit]" not in intro and "trained\noutside `rewardkit train`" in intro
    assert "Bradley-Terry" not in intro  # its loss is not known: the pairwise default was stated as fact
    recorded = render_model_card({"trained_objective": "mse"}, None, repo_id=REPO_ID).split("## Usage", 1)[0]
    assert "Trained with [rewardkit]" in recorded  # config.json records what rewardkit train trained
    rows = dict(_training_rows(render_model_card({"trained_max_length": 256}, None, repo_id=REPO_ID)))
    assert rows["Max length"].startswith("256 tokens")  # the length the config records is known


def test_card_limitations_say_who_cuts_long_inputs_and_invent_no_training_length():
    """The card said 'Inputs longer than N tokens are truncated', N = 512 when no length was
    recorded: the model, the pipeline and a plain tokenizer call cut nothing, and 512 was invented."""
    recorded = render_model_card({"alpha": 1.0, "trained_max_length": 128}, {}, repo_id=REPO_ID)
    limitations = recorded[recorded.index("## Limitations"):]
    assert "are truncated" not in limitations
    assert "Training cut pairs to 128 tokens" in limitations and "`pipeline` does not cut" in limitations
    unrecorded = render_model_card({"alpha": 1.0}, {}, repo_id=REPO_ID)
    limitations = unrecorded[unrecorded.index("## Limitations"):]
    assert "512 tokens are truncated" not in limitations and "No training length was recorded" in limitations



def test_a_local_base_model_is_said_to_be_a_local_folder_not_a_hub_model():
    """A backbone from a local folder with no Hub id was named by its folder name alone: a folder
    called `gpt2` holding a tiny random GPT-2 read "on top of `gpt2`", i.e. OpenAI's GPT-2 on the Hub."""
    config = {"backbone_config": {"model_type": "gpt2", "_name_or_path": "/home/alice/models/gpt2"}}
    training = {**_training_summary(), "base_model": "/home/alice/models/gpt2", "base_model_id": None}
    text = render_model_card(config, training, repo_id=REPO_ID)
    note = "(a local folder, backbone type `gpt2`; no Hub id recorded)"
    assert f"on top of `gpt2` {note}." in " ".join(text.split())
    assert dict(_training_rows(text))["Base model"] == f"`gpt2` {note}"
    assert "/home/alice" not in text
    hub = render_model_card(config, {**training, "base_model": "openai-community/gpt2"}, repo_id=REPO_ID)
    assert "no Hub id recorded" not in hub and "on top of `openai-community/gpt2`." in " ".join(hub.split())


# The length figures of a weak HH-RLHF model on dev.jsonl (`rewardkit evaluate`'s metrics.json).
HH_LENGTH_BIAS = {
    "spearman_reward_length": -0.1502, "unequal_length_n": 311, "longer_preferred_rate": 0.3987,
    "chosen_longer_rate": 0.4373, "chosen_shorter_n": 175, "chosen_shorter_accuracy": 0.64,
    "chosen_longer_n": 136, "chosen_longer_accuracy": 0.4485,
}


def _report_md(tmp_path: Path, metrics: dict) -> str:
    from rewardkit.report import write_report

    return write_report(tmp_path / "report", kind="pairwise", metrics=metrics, redact=True)["report.md"].read_text()


def test_card_accuracy_gives_the_reports_interval_and_says_when_it_reaches_chance(tmp_path):
    """The card gave "Pairwise accuracy | 0.5545" as a result, where report.md of the same evaluation
    gave its 95% interval (0.499 to 0.609) and said it cannot be told from guessing."""
    row = "| 95% interval for its accuracy on other pairs like these (Wilson) | 0.499 to 0.609; "
    chance = "it reaches 0.5: these pairs cannot tell the model from one that guesses"
    card = render_model_card({"alpha": 1.0}, _training_summary(), EVALUATION, repo_id=REPO_ID)
    assert f"| 0.5545 | dev.jsonl (local data, n=312) |\n{row}{chance} | dev.jsonl (local data, n=312) |" in card
    assert f"95% interval for its accuracy on other pairs like these: 0.499 to 0.609 (Wilson); {chance}" in _report_md(
        tmp_path, EVALUATION)
    strong = render_model_card({"alpha": 1.0}, _training_summary(), {**EVALUATION, "accuracy": 0.75})
    assert "other pairs like these (Wilson) | 0.699 to 0.795 | dev.jsonl" in strong and chance not in strong
    # training's held-out figure (no --metrics) is over its eval_rows pairs
    card = render_model_card({"alpha": 1.0}, _training_summary(), None)
    assert f"other pairs like these (Wilson) | 0.382 to 0.708; {chance} | held-out data (n=32) |" in card
    # ranked data's within-group pairs share responses: no interval, as report.md gives none
    ranked = {"objective": "ranking", "n": 40, "n_pairs": 240, "pairwise_accuracy": 0.55, "top1_accuracy": 0.4}
    assert "95% interval for its accuracy" not in render_model_card({"alpha": 1.0}, _training_summary(), ranked)


def test_card_length_bias_gives_both_accuracies_and_the_reports_verdict(tmp_path):
    """The card gave the accuracy where the chosen answer is shorter (0.64) alone, with no verdict,
    where report.md of the same evaluation said "Length bias toward shorter answers" (0.45 when longer)."""
    evaluation = {**EVALUATION, "objective": "pairwise", "length_bias": HH_LENGTH_BIAS}
    card = " ".join(render_model_card({"alpha": 1.0}, _training_summary(), evaluation).split())
    assert ("accuracy when the chosen response is the shorter one: 0.64 (n = 175); when it is the longer one: "
            "0.449 (n = 136). **Length bias toward shorter answers**: it is right 19.1 points more often") in card
    verdict = next(line for line in _report_md(tmp_path, evaluation).splitlines() if line.startswith("**Length bias"))
    assert verdict in card
    ranked = " ".join(render_model_card({"alpha": 1.0}, _training_summary(), {**evaluation, "objective": "ranking"}).split())
    assert ("when the better-ranked response is the shorter one: 0.64 (n = 175); when it is the longer one: 0.449 "
            "(n = 136). **Length bias toward shorter responses**") in ranked and "not independent" in ranked
