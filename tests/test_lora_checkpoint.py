"""A --use-lora run's checkpoint-N/ scored and evaluated as the model it stands for (base model +
adapters + head), refused by name when its base model cannot be had, calibrated in its own
reward_config.json, and published only through the command that makes it a model folder."""

import json
import os
import random
import shlex
import shutil

import pytest

from rewardkit.cli import main
from rewardkit.evaluation import evaluate_model
from rewardkit.file_names import ADAPTER_DIR
from rewardkit.fit import run_training
from rewardkit.lora import load_adapter
from rewardkit.publishing import build_publish_folder
from rewardkit.scoring import RewardScorer
from rewardkit.training_args import DataArguments, RewardTrainingArguments
from tests import helpers

pytest.importorskip("peft")

WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "paper", "window"]
PROMPTS = ["what is the river?", "cloud stone?", "a b c"]
RESPONSES = ["yes, gladly: river", "no. paper", "window garden music"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """Three LoRA steps with a checkpoint after each, the base model given as a relative folder."""
    root = tmp_path_factory.mktemp("lora_ckpt")
    helpers.save_tiny_backbone(root / "base")
    rng = random.Random(0)
    rows = [{"prompt": " ".join(rng.choices(WORDS, k=3)) + "?", "chosen": "yes, gladly: " + rng.choice(WORDS),
             "rejected": "no. " + rng.choice(WORDS)} for _ in range(24)]
    helpers.write_jsonl(root / "train.jsonl", rows)
    args = RewardTrainingArguments(
        output_dir=str(root / "out"), base_model="base", max_length=32, learning_rate=5e-3,
        per_device_train_batch_size=8, max_steps=3, save_strategy="steps", save_steps=1, disable_tqdm=True,
        seed=0, reward_stats_samples=16, use_lora=True, lora_r=4, lora_alpha=8, keep_adapter=True,
        precision="fp32", report_to="none")
    here = os.getcwd()
    os.chdir(root)  # `--base-model base`, as typed in the run's folder
    try:
        run_training(DataArguments(data="train.jsonl"), args)
    finally:
        os.chdir(here)
    return root


def test_the_last_lora_checkpoint_scores_and_evaluates_as_the_merged_final_model(lora_run, tmp_path, monkeypatch,
                                                                                  capsys):
    """`score` and `evaluate` refused every LoRA checkpoint ("score the run's --output-dir"), so the
    checkpoints of a run could not be compared. Rebuilt from the run's base model, the last one gives
    the final model's scores; an earlier one its own. Scored from another working directory: the
    base model was recorded as typed ("base"), then read as a Hub id."""
    monkeypatch.chdir(tmp_path)
    out = lora_run / "out"
    merged, last = RewardScorer(str(out)), RewardScorer(str(out / "checkpoint-3"))
    assert last.score(PROMPTS, RESPONSES) == pytest.approx(merged.score(PROMPTS, RESPONSES), abs=1e-6)
    assert RewardScorer(str(out / "checkpoint-1")).score(PROMPTS, RESPONSES) != pytest.approx(
        merged.score(PROMPTS, RESPONSES), abs=1e-6)
    assert last.model.config.trained_objective == "pairwise" == merged.model.config.trained_objective
    assert load_adapter(out / ADAPTER_DIR).config.trained_objective == "pairwise"  # was dropped on rebuilding
    assert main(["score", "--model", str(out / "checkpoint-3"), "--prompt", PROMPTS[0], "--response",
                 RESPONSES[0]]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == pytest.approx(merged.score(PROMPTS[0], RESPONSES[0])[0],
                                                                         abs=1e-6)
    figures = [evaluate_model(str(model), lora_run / "train.jsonl") for model in (out, out / "checkpoint-3")]
    for key in ("accuracy", "mean_margin", "n", "trained_objective", "on_training_data"):
        assert figures[1][key] == pytest.approx(figures[0][key]), key
    assert figures[1]["on_training_data"] is True  # the checkpoint's training_data.json is read


def _copy_checkpoint(lora_run, tmp_path, **adapter_config):
    checkpoint = shutil.copytree(lora_run / "out" / "checkpoint-3", tmp_path / "checkpoint-3")
    path = checkpoint / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **adapter_config}))
    return checkpoint


def test_a_lora_checkpoint_whose_base_model_cannot_be_had_is_refused_by_name(lora_run, tmp_path, monkeypatch):
    """The base model is the run's, or nothing: a folder that is gone, a Hub id offline and not
    cached, and a base of another vocabulary (which took the adapters without an error) are refused
    by name; so is a checkpoint of an older rewardkit, which records no reward config."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    cases = [(str(tmp_path / "gone"), "base model .*gone, which is no longer there"),
             ("someone/bert-base", "Hub model someone/bert-base, which is not in the local Hugging Face cache, and "
                                   "HF_HUB_OFFLINE is set")]
    for base, says in cases:
        checkpoint = _copy_checkpoint(lora_run, tmp_path, base_model_name_or_path=base)
        with pytest.raises(ValueError, match=says):
            RewardScorer(str(checkpoint))
        shutil.rmtree(checkpoint)
    from transformers import AutoModel

    other = tmp_path / "other"
    AutoModel.from_config(helpers.tiny_backbone_config("bert", vocab_size=30600)).save_pretrained(other)
    checkpoint = _copy_checkpoint(lora_run, tmp_path, base_model_name_or_path=str(other))
    with pytest.raises(ValueError, match="vocab_size 30522 \\(base model: 30600\\).*not the base model"):
        RewardScorer(str(checkpoint))
    (checkpoint / "reward_config.json").unlink()
    with pytest.raises(ValueError, match="without reward_config.json .*cannot be rebuilt"):
        RewardScorer(str(checkpoint))


def test_calibrating_a_lora_checkpoint_writes_t_into_its_reward_config(lora_run, tmp_path, monkeypatch):
    """`evaluate --calibrate` of a LoRA checkpoint was refused as "not a local folder (a Hub repo
    id?)"; T now goes where the checkpoint's config is read from (reward_config.json), and no
    config.json is created (a folder with one and no weights would be taken for a broken model)."""
    checkpoint = _copy_checkpoint(lora_run, tmp_path)
    monkeypatch.setattr("rewardkit.evaluation.fit_temperature", lambda margins: 0.5)
    metrics = evaluate_model(str(checkpoint), lora_run / "train.jsonl", calibrate=True)
    assert metrics["temperature_written"] and metrics["temperature"] == 0.5
    assert json.loads((checkpoint / "reward_config.json").read_text())["calibration_temperature"] == 0.5
    assert not (checkpoint / "config.json").exists()
    assert RewardScorer(str(checkpoint)).temperature == 0.5


def test_publishing_a_lora_checkpoint_names_the_command_that_makes_it_a_model_folder(lora_run, tmp_path, capsys):
    """publish of a LoRA checkpoint said "a checkpoint becomes one by resuming training from it",
    naming no command. The command it names now trains no step and saves the checkpoint as a
    complete model folder, which scores as the checkpoint does and publishes."""
    out = lora_run / "out"
    with pytest.raises(ValueError, match="checkpoint of a --use-lora run.*rewardkit train ") as refused:
        build_publish_folder(out / "checkpoint-2", tmp_path / "hub", repo_id="someone/rm")
    command = shlex.split(str(refused.value).split("publish that folder: ")[1].split(" (add the")[0])
    folder = command[command.index("--output-dir") + 1]
    assert folder == str(lora_run / "out-checkpoint-2")
    assert main(command[1:]) == 0
    capsys.readouterr()
    assert RewardScorer(folder).score(PROMPTS, RESPONSES) == pytest.approx(
        RewardScorer(str(out / "checkpoint-2")).score(PROMPTS, RESPONSES), abs=1e-6)
    assert json.loads((lora_run / "out-checkpoint-2" / "config.json").read_text())["reward_std"] > 0
    build_publish_folder(folder, tmp_path / "hub", repo_id="someone/rm")
