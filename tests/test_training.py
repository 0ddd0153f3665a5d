"""Training: the three objectives, checkpoints that load on their own, resume after SIGKILL."""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, EvalPrediction, TrainerCallback

from rewardkit import fit, resume
from rewardkit.errors import UserInputError
from rewardkit.features import PairEncoder, encode_rows
from rewardkit.fit import TrainingDivergedError, _training_speed, run_training
from rewardkit.metrics import ranking_metrics
from rewardkit.scoring import RewardScorer
from rewardkit.training import (
    RewardTrainer,
    _group_matrix,
    pairwise_eval_metrics,
    ranking_eval_metrics,
    ranking_top1,
)
from rewardkit.training_args import DataArguments, RewardTrainingArguments
from tests import helpers

WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "paper", "window"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return helpers.save_tiny_backbone(tmp_path_factory.mktemp("tiny_base"))


def _args(output_dir, base, **overrides) -> RewardTrainingArguments:
    values = dict(output_dir=str(output_dir), base_model=str(base), max_length=32, learning_rate=2e-3,
                  per_device_train_batch_size=8, num_train_epochs=2, save_strategy="no", logging_steps=5,
                  disable_tqdm=True, seed=0, reward_stats_samples=64)
    values.update(overrides)
    return RewardTrainingArguments(**values)


def _pairwise_rows(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choices(WORDS, k=3)) + "?"
        rows.append({"prompt": prompt, "chosen": "yes, gladly: " + rng.choice(WORDS), "rejected": "no. " + rng.choice(WORDS)})
    return rows


def _scalar_rows(n, seed):
    rng = random.Random(seed)
    kinds = [("great " + w, 2.0) for w in WORDS] + [("terrible " + w, -2.0) for w in WORDS] + [("okay " + w, 0.0) for w in WORDS]
    return [{"prompt": " ".join(rng.choices(WORDS, k=3)), "completion": text, "reward": reward}
            for text, reward in (rng.choice(kinds) for _ in range(n))]


def test_default_length_is_the_sentence_transformers_backbones_own(tiny_base, tmp_path):
    """No --max-length: a backbone with a sentence_bert_config.json trains (and is later scored) at
    the max_seq_length it declares, and the summary says so; one without it at 512 (capped); an
    unreadable file counts as absent."""
    st_base = tmp_path / "st_base"
    shutil.copytree(tiny_base, st_base)
    (st_base / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24, "do_lower_case": False}))
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", st_base, max_length=None, max_steps=1))
    assert result.max_length == 24 and json.loads((tmp_path / "out" / "config.json").read_text())["trained_max_length"] == 24
    assert "Truncation at 24 tokens (from the backbone's sentence_bert_config.json max_seq_length):" in result.describe()
    assert fit.backbone_max_seq_length(str(tiny_base)) is None
    assert fit.max_length_and_source(str(tiny_base), AutoTokenizer.from_pretrained(tiny_base), None, None) == (512, "the default")
    assert fit.max_length_and_source(str(st_base), AutoTokenizer.from_pretrained(st_base), None, 16) == (16, "--max-length")
    (st_base / "sentence_bert_config.json").write_text("[256]")
    assert fit.backbone_max_seq_length(str(st_base)) is None


def test_a_default_length_the_model_cuts_shorter_says_what_it_was_cut_from(tiny_base, tmp_path):
    """A sentence-transformers backbone that declares more tokens than its position embeddings hold
    trained at 512 with the summary's "Truncation at 512 tokens; the backbone's max_seq_length
    (sentence_bert_config.json)", read as if the backbone said 512; the default likewise."""
    from transformers import BertConfig

    st_base = tmp_path / "st_base"
    shutil.copytree(tiny_base, st_base)
    (st_base / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1024}))
    tokenizer = AutoTokenizer.from_pretrained(st_base)
    assert fit.max_length_and_source(str(st_base), tokenizer, fit.load_model_config(str(st_base)), None) == (
        512, "the backbone's sentence_bert_config.json max_seq_length 1024, capped by the model")
    short = BertConfig(max_position_embeddings=128)
    assert fit.max_length_and_source(str(tiny_base), tokenizer, short, None) == (128, "the default 512, capped by the model")
    assert fit.max_length_and_source(str(tiny_base), tokenizer, short, 600) == (128, "--max-length 600, capped by the model")
    assert fit.max_length_and_source(str(tiny_base), tokenizer, short, 100) == (100, "--max-length")


def test_pairwise_training_learns_and_stores_reward_stats(tiny_base, tmp_path):
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(96, 0))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(32, 1))
    result = run_training(DataArguments(data=str(train), eval_data=str(held)), _args(tmp_path / "out", tiny_base))
    assert result.objective == "pairwise" and result.steps == 24
    assert result.eval_metrics["eval_accuracy"] >= 0.9
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["reward_std"] > 0 and config["reward_mean"] == pytest.approx(result.reward_mean)
    assert result.truncation.startswith("192 texts:") and "(held-out: 64 texts:" in result.truncation  # 96 + 32 pairs
    assert config["trained_max_length"] == 32 and RewardScorer(str(tmp_path / "out")).max_length == 32
    assert RewardScorer(str(tmp_path / "out"), max_length=48).max_length == 48  # asked for: honoured
    for name in ("model.safetensors", "configuration_reward.py", "modeling_reward.py", "tokenizer.json", "README.md",
                 "training_summary.json"):
        assert (tmp_path / "out" / name).exists(), name
    # Readable as any file the user writes (transformers writes the weights 0600 on its own).
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_mse_training_lowers_heldout_rmse(tiny_base, tmp_path):
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _scalar_rows(120, 0))
    held_rows = _scalar_rows(40, 1)
    held = helpers.write_jsonl(tmp_path / "held.jsonl", held_rows)

    def rmse(scorer):
        predicted = scorer.score([r["prompt"] for r in held_rows], [r["completion"] for r in held_rows])
        return sum((p - r["reward"]) ** 2 for p, r in zip(predicted, held_rows)) ** 0.5 / len(held_rows) ** 0.5

    from transformers import AutoTokenizer

    from modeling_reward import RewardModel

    torch.manual_seed(0)
    untrained = RewardScorer(RewardModel.from_backbone(str(tiny_base)), tokenizer=AutoTokenizer.from_pretrained(tiny_base))
    result = run_training(DataArguments(data=str(train), eval_data=str(held)),
                          _args(tmp_path / "out", tiny_base, num_train_epochs=4))
    assert result.objective == "mse"
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["trained_objective"] == "mse"  # explanations read it: a reward on the annotations' scale
    trained_rmse = rmse(RewardScorer(str(tmp_path / "out")))
    assert trained_rmse < 0.5 * rmse(untrained)
    # bf16 autocast in training, fp32 in the scorer: a few 1e-4 apart (0.143 vs 0.1434 here)
    assert result.eval_metrics["eval_rmse"] == pytest.approx(trained_rmse, abs=1e-3)


def test_mse_training_does_not_depend_on_the_scale_of_the_targets(tiny_base, tmp_path):
    """Targets are standardized for training (the fresh head starts at their mean and scale, the
    loss is MSE / std², the head steps at std x the learning rate): a model trained on 100 y + 1000
    predicts 100 r + 1000 where one trained on y predicts r. Before, the head started at 0 and
    moved a learning rate per step: on targets around 1000 it ended near 0 (RMSE ~1000)."""
    rows = _scalar_rows(64, 0)
    held_rows = _scalar_rows(16, 1)
    prompts, responses = [r["prompt"] for r in held_rows], [r["completion"] for r in held_rows]
    raw = {}
    for name, scale, shift in (("plain", 1.0, 0.0), ("scaled", 100.0, 1000.0)):
        train = helpers.write_jsonl(tmp_path / f"{name}.jsonl", [{**r, "reward": scale * r["reward"] + shift} for r in rows])
        result = run_training(DataArguments(data=str(train)),
                              _args(tmp_path / name, tiny_base, num_train_epochs=2, precision="fp32",
                                    cpu_split_batches=False))
        assert result.target_mean == pytest.approx(scale * np.mean([r["reward"] for r in rows]) + shift)
        assert "standardized targets" in result.describe()
        raw[name] = np.asarray(RewardScorer(str(tmp_path / name)).raw_rewards(prompts, responses))
    np.testing.assert_allclose(raw["scaled"], 100.0 * raw["plain"] + 1000.0, atol=0.05)


def test_constant_mse_targets_are_reported_with_std_0_not_the_scale_1(tiny_base, tmp_path):
    """All targets equal: training divides by 1 (nothing to scale), and the summary and the card
    said "std 1" / "standard deviation 1" of targets whose spread is 0."""
    rows = [{**row, "reward": 3.0} for row in _scalar_rows(8, 0)]
    train = helpers.write_jsonl(tmp_path / "constant.jsonl", rows)
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=1))
    assert (result.target_mean, result.target_std) == (3.0, 0.0)
    assert "Targets: all 3 (std 0, so nothing to standardize: the losses are plain MSE)" in result.describe()
    assert "(training targets: mean 3, standard deviation 0)" in (tmp_path / "out" / "README.md").read_text()


class _SameRewardForAll(TrainerCallback):
    """A head that gives every response the raw reward 0.25 once training ends (weights 0)."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.score.weight.zero_()
            model.score.bias.fill_(0.25)


def test_no_reward_spread_is_stated_as_std_0_and_no_statistics_are_stored(tiny_base, tmp_path):
    """Every training response with the same raw reward: the spread 0 was stored as reward_std 1,
    and the summary, the card ("standard deviation 1") and `score` stated that 1 as the std. The
    config now holds no statistics (normalization needs a std > 0); the summary keeps the true 0."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=1),
                          callbacks=[_SameRewardForAll()])
    assert (result.reward_mean, result.reward_std) == (0.25, 0.0)
    summary = result.describe()
    assert "Raw rewards on 32 training responses: all 0.25 (std 0); config.json stores no reward_mean" in summary
    assert "std 1" not in summary
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["reward_mean"], config["reward_std"], config["normalize_rewards"]) == (None, None, False)
    assert json.loads((tmp_path / "out" / "training_summary.json").read_text())["reward_std"] == 0.0
    card = " ".join((tmp_path / "out" / "README.md").read_text().split())
    assert "over 32 training responses the raw reward was always 0.25 (standard deviation 0)" in card
    assert "standard deviation **1**" not in card


def test_a_normalizing_model_with_no_reward_spread_is_saved_unnormalized_and_says_so(caplog):
    """Normalization divides by reward_std, so with a spread of 0 a continued normalizing model
    cannot normalize: its config is left without statistics and normalization off, with a warning."""
    from modeling_reward import RewardConfig

    config = RewardConfig(backbone_config=helpers.tiny_backbone_config())
    with caplog.at_level("WARNING", logger="rewardkit.fit"):
        fit.store_reward_stats(config, (0.25, 0.0), normalize=True)
    assert (config.reward_mean, config.reward_std, config.normalize_rewards) == (None, None, False)
    assert "no spread to normalize by: normalize_rewards, on in the base model, is off" in caplog.text
    fit.store_reward_stats(config, (0.25, 2.0), normalize=True)
    assert (config.reward_mean, config.reward_std, config.normalize_rewards) == (0.25, 2.0, True)


def test_summary_says_how_to_read_rewards_and_margins_with_the_models_alpha():
    """The summary printed raw rewards and the held-out mean_margin with no word on what they mean:
    only `rewardkit demo` said it, after the summary. It now gives P(a > b) = sigmoid(margin / T) at
    T = 1 (nothing is calibrated at training time) and the divisor of this model's outputs."""
    from rewardkit.fit import TrainResult

    common = dict(output_dir="out", base_model="tiny", detected_layout="x", train_rows=8, eval_rows=4, epochs=1.0,
                  steps=1, seconds=1.0, examples_per_second=8.0, train_loss=0.69, max_length=32)
    pairs = " ".join(TrainResult(objective="pairwise", **common, alpha=10.0, reward_mean=0.5, reward_std=2.0,
                                 eval_metrics={"eval_mean_margin": 0.8}).describe().split())
    assert ("P(a preferred to b) = sigmoid((r_a - r_b) / T) with T = 1, uncalibrated (`rewardkit evaluate "
            "--calibrate` fits T on held-out pairs): a margin of 1 (held-out mean_margin is the mean r_chosen - "
            "r_rejected) means P = 0.73") in pairs
    assert "The model outputs s = alpha x r, alpha = 10, so P(a preferred to b) = sigmoid((s_a - s_b) / 10)." in pairs
    normalized = TrainResult(objective="ranking", **common, alpha=10.0, reward_mean=0.5, reward_std=2.0,
                             normalize_rewards=True).describe()
    assert "alpha x (r - reward_mean) / reward_std, alpha = 10, so P(a preferred to b) = sigmoid((s_a - s_b) / 5)" in normalized
    rated = TrainResult(objective="mse", **common, alpha=4.0, reward_mean=-0.5, reward_std=2.0,
                        normalize_rewards=True).describe()
    assert "the model outputs s = alpha x (r - reward_mean) / reward_std, alpha = 4 (r = s x 2 / 4 - 0.5)" in rated
    assert "sigmoid" not in rated  # an mse model's difference is no probability until a T is calibrated
    plain = TrainResult(objective="mse", **common, alpha=1.0, reward_mean=0.1, reward_std=2.0).describe()
    assert "the model outputs s = alpha x r, alpha = 1." in plain and "r = s / 1" not in plain  # s is r: nothing to undo


def test_max_length_that_is_not_a_whole_number_is_refused_before_training(tmp_path):
    """From Python or a YAML config (argparse converts text only), 40.5 trained, then failed in the
    tokenizer on the first long text, or saved a config.json that refuses to load."""
    with pytest.raises(ValueError, match="--max-length must be a whole number of tokens, got 40.5"):
        RewardTrainingArguments(output_dir=str(tmp_path / "o"), max_length=40.5)


def test_max_length_follows_the_scorers_rule_numpy_integers_included(tmp_path):
    """Training and scoring check max_length by one rule (features.check_max_length_type): a numpy
    integer (a length from an array of sweeps) was refused by training and taken by the scorer.
    It is kept as a plain int, which config.json and training_summary.json can hold."""
    args = RewardTrainingArguments(output_dir=str(tmp_path / "o"), max_length=np.int64(64))
    assert args.max_length == 64 and type(args.max_length) is int
    for bad in (True, "64", 64.0):
        with pytest.raises(ValueError, match="--max-length must be a whole number of tokens"):
            RewardTrainingArguments(output_dir=str(tmp_path / "o"), max_length=bad)
    with pytest.raises(ValueError, match="--max-length must be at least 8, got 7"):
        RewardTrainingArguments(output_dir=str(tmp_path / "o"), max_length=np.int32(7))


def test_ranking_trains_with_one_forward_pass_per_batch_of_groups(tiny_base, tmp_path, tokenizer):
    from modeling_reward import RewardModel

    rows = [{"prompt": f"question {i}", "responses": ["excellent answer", "fine answer", "poor answer", "awful"]}
            for i in range(3)]
    model = RewardModel.from_backbone(str(tiny_base))
    features = encode_rows(rows, "ranking", PairEncoder(tokenizer, 32))
    trainer = RewardTrainer(model=model, args=_args(tmp_path / "o", tiny_base), train_dataset=features,
                            processing_class=tokenizer, objective="ranking")
    calls = []
    # a pre-hook: with the one-row last layer the backbone's own forward stops before its end
    model.backbone.register_forward_pre_hook(lambda module, args: calls.append(1))
    batch_sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)
    loss = trainer.compute_loss(model, trainer.data_collator(features))
    assert len(calls) == 1 and batch_sizes == [12]  # 3 groups x K=4 in ONE forward pass
    assert loss.item() > 0

    train = helpers.write_jsonl(tmp_path / "rank.jsonl", [
        {"prompt": " ".join(random.Random(i).choices(WORDS, k=3)),
         "responses": ["excellent " + w, "fine " + w, "poor " + w, "awful " + w]}
        for i, w in enumerate(WORDS * 6)])
    args = _args(tmp_path / "out", tiny_base, num_train_epochs=3, reward_stats_samples=1000)
    result = run_training(DataArguments(data=str(train), eval_fraction=0.25), args)
    assert result.objective == "ranking"
    assert result.eval_metrics["eval_top1_accuracy"] >= 0.75
    # The card says how many responses reward_mean/std came from: all the groups' responses (4 each,
    # under the cap of 1000), not the cap (what it said for ranked data, whose K varies).
    assert result.reward_stats_responses == 4 * result.train_rows < 1000
    assert f"over {result.reward_stats_responses} training responses" in (tmp_path / "out" / "README.md").read_text()


def test_trainer_requires_a_tokenizer(tiny_base, tmp_path):
    from modeling_reward import RewardModel

    with pytest.raises(ValueError, match="processing_class"):
        RewardTrainer(model=RewardModel.from_backbone(str(tiny_base)), args=_args(tmp_path, tiny_base),
                      train_dataset=[], objective="pairwise")


def test_checkpoints_hold_code_and_tokenizer_and_load_alone(tiny_base, tmp_path):
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(32, 0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, save_strategy="steps", save_steps=2,
                                                       num_train_epochs=1))
    checkpoint = tmp_path / "out" / "checkpoint-4"
    for name in ("configuration_reward.py", "modeling_reward.py", "tokenizer.json", "tokenizer_config.json",
                 "model.safetensors", "config.json"):
        assert (checkpoint / name).exists(), name
    umask = os.umask(0)
    os.umask(umask)
    assert (checkpoint / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not transformers' 0600
    code = f"""
    import json, torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained({str(checkpoint)!r}, trust_remote_code=True)
    model = AutoModel.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
    with torch.no_grad():
        print(json.dumps(model(**tok(["q"], ["a"], return_tensors="pt")).logits[:, 0].tolist()))
    """
    loaded = helpers.run_fresh_python(code, tmp_path)
    expected = RewardScorer(str(checkpoint)).score(["q"], ["a"])
    assert loaded == pytest.approx(expected, abs=1e-5)


def test_a_checkpoint_records_its_training_data_so_evaluate_marks_figures_of_it(tiny_base, tmp_path):
    """A checkpoint-N/ has no training_summary.json, so `evaluate` of a checkpoint on the very data it
    was trained on said `"on_training_data": null` (calibrating on it was not warned about), and
    `publish --metrics` put those figures in model-index as a held-out result. Each checkpoint now
    records its data (training_data.json), which publish never uploads (it holds a local path)."""
    from rewardkit.evaluation import evaluate_model
    from rewardkit.publishing import build_publish_folder

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    other = helpers.write_jsonl(tmp_path / "other.jsonl", _pairwise_rows(16, 1))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, save_strategy="steps", save_steps=1,
                                                       num_train_epochs=1, reward_stats_samples=0))
    checkpoint = tmp_path / "out" / "checkpoint-1"
    assert evaluate_model(str(checkpoint), str(train))["on_training_data"] is True
    assert json.loads((checkpoint / "training_data.json").read_text()) == {"data": str(train), "data_split": None}
    assert evaluate_model(str(checkpoint), str(other))["on_training_data"] is False
    metrics = evaluate_model(str(checkpoint), str(train), calibrate=True)
    assert metrics["calibrated_on_training_data"] is True and metrics["on_training_data"] is True
    assert not (checkpoint / "training_summary.json").exists()  # a checkpoint gets no summary (and no card) of ours
    built = build_publish_folder(checkpoint, tmp_path / "hub", repo_id="me/rm", evaluation=metrics)
    assert not (built / "training_data.json").exists() and "model-index" not in (built / "README.md").read_text()
    assert str(tmp_path) not in " ".join(path.read_text() for path in built.glob("*.json"))


KILL_AND_TRAIN = """
import os, signal, sys
from transformers import TrainerCallback
from rewardkit.fit import run_training
from rewardkit.training_args import DataArguments, RewardTrainingArguments

class KillAt(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {kill_step}:
            os.kill(os.getpid(), signal.SIGKILL)

args = RewardTrainingArguments(output_dir={out!r}, base_model={base!r}, max_length=32, learning_rate=2e-3,
    per_device_train_batch_size=4, num_train_epochs=2, save_strategy="steps", save_steps=3, logging_steps=1,
    disable_tqdm=True, seed=0, reward_stats_samples=0, resume_from_checkpoint={resume!r})
run_training(DataArguments(data={data!r}), args, callbacks=[KillAt()] if {kill_step} else None)
"""


def _train_subprocess(tmp_path, out, base, data, kill_step=0, resume=None):
    code = KILL_AND_TRAIN.format(out=str(out), base=str(base), data=str(data), kill_step=kill_step, resume=resume)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false",
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "HOME": str(tmp_path)}
    import os

    env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_sigkill_then_resume_gives_the_same_weights(tiny_base, tmp_path):
    data = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(40, 0))  # 10 steps/epoch, 20 in all
    straight = _train_subprocess(tmp_path, tmp_path / "straight", tiny_base, data)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed = _train_subprocess(tmp_path, tmp_path / "resumed", tiny_base, data, kill_step=12)
    assert killed.returncode == -9  # really killed, mid-run (second epoch)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = _train_subprocess(tmp_path, tmp_path / "resumed", tiny_base, data, resume="last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoint-12" in resumed.stderr or (tmp_path / "resumed" / "checkpoint-12").exists()

    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-4, worst


def test_a_new_run_removes_what_an_earlier_run_left_and_did_not_write_again(tiny_base, tmp_path, caplog):
    """A full fine-tune trained into the folder of an earlier --use-lora --keep-adapter run left its
    adapter/ and higher-numbered checkpoint beside the new model: the card said "This repository also
    holds the LoRA adapter the model was trained with", publish uploaded it, and
    `--resume_from_checkpoint last` picked the old checkpoint. A run that fails removes nothing."""

    class Fail(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            raise RuntimeError("stopped")

    data = DataArguments(data=str(helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))))
    out = tmp_path / "out"
    steps = dict(save_strategy="steps", save_steps=1, per_device_train_batch_size=16)
    run_training(data, _args(out, tiny_base, max_steps=3, use_lora=True, lora_r=4, lora_alpha=8, keep_adapter=True,
                             lora_target_modules=["query", "value"], **steps))
    earlier = {"adapter", "checkpoint-1", "checkpoint-2", "checkpoint-3"}
    assert earlier <= {p.name for p in out.iterdir()}
    with pytest.raises(RuntimeError, match="stopped"):
        run_training(data, _args(out, tiny_base, max_steps=2, **steps), callbacks=[Fail()])
    assert earlier <= {p.name for p in out.iterdir()}

    run_training(data, _args(out, tiny_base, max_steps=2, **steps))
    assert not (out / "adapter").exists() and not (out / "checkpoint-3").exists()
    assert all((out / f"checkpoint-{n}" / "config.json").is_file() for n in (1, 2))  # this run's (no adapters)
    assert "LoRA adapter" not in (out / "README.md").read_text()
    assert "checkpoint-3/, adapter/" in caplog.text
    assert resume.checkpoint_to_resume(_args(out, tiny_base, resume_from_checkpoint="last")).endswith("checkpoint-2")


def test_a_checkpoint_saved_where_an_earlier_run_saved_one_holds_this_runs_files_alone(tiny_base, tmp_path):
    """The Trainer saved a new run's checkpoint-N/ over an earlier run's of the same step, so the files
    it did not write stayed: a LoRA run's checkpoint kept an earlier full fine-tune's weights and
    config.json, and `score` of it loaded those (neither run's model) instead of the LoRA run's (its
    last checkpoint: the merged model's scores); a full fine-tune's kept the LoRA adapter, which a
    --use-lora resume would load."""
    data = DataArguments(data=str(helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))))
    out, checkpoint = tmp_path / "out", tmp_path / "out" / "checkpoint-1"
    steps = dict(max_steps=1, save_strategy="steps", save_steps=1, reward_stats_samples=0)
    lora = dict(use_lora=True, lora_r=4, lora_alpha=8, lora_target_modules=["query", "value"])
    run_training(data, _args(out, tiny_base, **steps))
    run_training(data, _args(out, tiny_base, **steps, **lora))
    assert (checkpoint / "adapter_config.json").is_file()
    assert not (checkpoint / "model.safetensors").exists() and not (checkpoint / "config.json").exists()
    texts = (["a question?", "q"], ["an answer", "another answer"])
    assert RewardScorer(str(checkpoint)).score(*texts) == pytest.approx(RewardScorer(str(out)).score(*texts), abs=1e-6)
    run_training(data, _args(out, tiny_base, **steps))
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "adapter_config.json").exists()
    with pytest.raises(UserInputError, match="full fine-tune's checkpoint, not a LoRA adapter"):
        resume.checkpoint_to_resume(_args(out, tiny_base, resume_from_checkpoint=str(checkpoint), **lora))


def test_an_interrupted_run_says_what_it_left_and_a_stopped_save_keeps_no_earlier_summary(tiny_base, tmp_path,
                                                                                          caplog, monkeypatch):
    """Ctrl-C (SIGTERM too: rewardkit.cli raises it as KeyboardInterrupt) during training said only
    "rewardkit: interrupted.": now the log names the checkpoint to resume from. Stopped while saving,
    the earlier run's training_summary.json and card stayed beside the new weights, and `publish`
    rendered the old run's steps and metrics into the new model's card."""

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    data = DataArguments(data=str(helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))))
    out = tmp_path / "out"
    run_training(data, _args(out, tiny_base, max_steps=1))
    assert (out / "training_summary.json").is_file() and (out / "README.md").is_file()
    steps = dict(max_steps=3, save_strategy="steps", save_steps=1, per_device_train_batch_size=16)
    with pytest.raises(KeyboardInterrupt):
        run_training(data, _args(out, tiny_base, **steps), callbacks=[CtrlC()])
    assert f"{out} holds no new model; {out / 'checkpoint-1'} is its newest checkpoint" in caplog.text
    assert (out / "training_summary.json").is_file()  # the earlier model, untouched

    def save_then_stop(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    original = RewardTrainer.save_model
    monkeypatch.setattr(RewardTrainer, "save_model", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_training(data, _args(out, tiny_base, max_steps=1))  # no checkpoints: save_model is the final save
    assert (out / "model.safetensors").is_file()
    assert not (out / "training_summary.json").exists() and not (out / "README.md").exists()
    assert "Stopped while saving the model" in caplog.text


def test_a_split_that_picks_no_rows_is_not_recorded_by_training(tiny_base, tmp_path):
    """`train --split test --eval-split validation` on JSONL files reads every row of both (and warns
    that --split is ignored), but training_summary.json recorded both splits and the card named the
    held-out figures "split validation", in model-index too. A folder of split files records it."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(8, 1))
    run_training(DataArguments(data=str(train), split="test", eval_data=str(held), eval_split="validation"),
                 _args(tmp_path / "out", tiny_base, max_steps=1))
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["data_split"] is None and summary["eval_split"] is None
    assert "validation" not in (tmp_path / "out" / "README.md").read_text()
    from rewardkit.data_sources import split_read

    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(held, splits / "validation.jsonl")
    assert split_read(splits, "validation") == "validation" and split_read("owner/name", "test") == "test"


def test_held_out_set_is_evaluated_once_per_epoch_and_its_time_is_not_training_time(tiny_base, tmp_path):
    """The Trainer evaluates at each epoch's end; the final metrics reuse the last of those (same
    weights) instead of a second pass, and pairs/s leaves the evaluations out."""
    from transformers import TrainerCallback

    class CountEvaluations(TrainerCallback):
        calls = 0

        def on_evaluate(self, args, state, control, **kwargs):
            CountEvaluations.calls += 1

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(48, 0))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(16, 1))
    result = run_training(DataArguments(data=str(train), eval_data=str(held)), _args(tmp_path / "out", tiny_base),
                          callbacks=[CountEvaluations()])
    assert CountEvaluations.calls == 2  # two epochs, no third pass
    assert 0 < result.eval_seconds < result.seconds and "eval_accuracy" in result.eval_metrics
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["eval_metrics"] == result.eval_metrics
    # the training file, absolute, so that `evaluate --calibrate` can tell when it is given it again
    assert summary["data"] == str(train.resolve()) and summary["data_split"] is None
    assert summary["eval_data"] == str(held.resolve()) and summary["eval_split"] is None  # the card names them
    # two epochs of 48 pairs, on the printed clock less its evaluation time: the figures divide out
    assert result.examples_per_second == pytest.approx(2 * 48 / (result.seconds - result.eval_seconds), rel=1e-6)
    # 96 pairs in a 10 s train() of which 2 s evaluation: 12 pairs/s of training, not 9.6, whatever
    # the Trainer's shorter clock (9 s) said
    assert _training_speed(96, 10.0, 2.0) == pytest.approx(12.0)


def test_summary_reports_the_epochs_actually_run(tiny_base, tmp_path):
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(64, 0))
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=2))
    assert result.steps == 2 and result.epochs == pytest.approx(0.25)  # 2 of 8 steps per epoch, not "2 epochs"
    assert "2 steps, 0.25 epoch(s)" in result.describe()


def test_max_steps_is_among_the_hyperparameters_when_it_stopped_the_run(tiny_base, tmp_path):
    """The card listed num_train_epochs 2 beside "Steps / epochs | 2 / 0.25", with no word of the
    --max_steps that overrode it."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(64, 0))
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=2))
    assert result.hyperparameters["max_steps"] == 2
    assert "| max_steps | 2 |" in (tmp_path / "out" / "README.md").read_text()
    full = run_training(DataArguments(data=str(train)), _args(tmp_path / "full", tiny_base, num_train_epochs=1))
    assert "max_steps" not in full.hyperparameters


def test_training_speed_counts_the_examples_actually_trained(tiny_base, tmp_path):
    """20 pairs in batches of 8 (8 + 8 + 4 per epoch) and --max_steps 5: 8+8+4+8+8 = 36 pairs
    trained, not the 5 x 8 = 40 that transformers assumes (every batch full), so pairs/s was too high."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(20, 0))
    result = run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=5,
                                                                      train_sampling_strategy="sequential"))
    assert result.steps == 5
    assert result.examples_per_second == pytest.approx(36 / (result.seconds - result.eval_seconds), rel=1e-6)
    assert _training_speed(96, 10.0, 2.0) == pytest.approx(12.0)  # 96 pairs in 10 s, of which 2 s evaluation


def test_training_a_rewardkit_model_further_drops_what_was_measured_on_its_old_weights(tiny_base, tmp_path, caplog):
    """Continued from a calibrated model, the new folder kept T = 2.5 (the card: "fitted on held-out
    pairs") and, with --reward-stats-samples 0, the old reward mean/std, none of them measured on
    the new weights; a model that normalizes by them cannot do without new ones."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "first", tiny_base, num_train_epochs=1))
    config_file = tmp_path / "first" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "calibration_temperature": 2.5}))
    caplog.set_level("WARNING")
    run_training(DataArguments(data=str(train)), _args(tmp_path / "again", tmp_path / "first", num_train_epochs=1,
                                                       reward_stats_samples=0))
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["calibration_temperature"] is None and again["reward_mean"] is None and again["reward_std"] is None
    assert "T = 2.5" not in (tmp_path / "again" / "README.md").read_text()
    assert "calibrated (T = 2.5)" in caplog.text and "rewardkit evaluate --calibrate" in caplog.text

    config_file.write_text(json.dumps({**config, "normalize_rewards": True}))
    with pytest.raises(ValueError, match="normalizes its rewards .* drop --reward-stats-samples 0"):
        run_training(DataArguments(data=str(train)), _args(tmp_path / "norm", tmp_path / "first", reward_stats_samples=0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "norm", tmp_path / "first", num_train_epochs=1))
    normalized = json.loads((tmp_path / "norm" / "config.json").read_text())
    assert normalized["normalize_rewards"] and normalized["reward_mean"] != config["reward_mean"]


def test_checkpoints_of_a_continued_normalizing_model_use_no_stale_statistics(tiny_base, tmp_path):
    """A normalizing model trained further saved every checkpoint-N/ with the old weights' reward
    mean/std: `score` of the last checkpoint gave 7.04 where the final model, of the same weights,
    gave -0.019. Checkpoints are now saved unnormalized; the final model normalizes by its own."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "first", tiny_base, num_train_epochs=1))
    config_file = tmp_path / "first" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "normalize_rewards": True}))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "norm", tmp_path / "first", max_steps=2,
                                                       save_strategy="steps", save_steps=2))
    checkpoint = json.loads((tmp_path / "norm" / "checkpoint-2" / "config.json").read_text())
    assert not checkpoint["normalize_rewards"] and checkpoint["reward_mean"] is None and checkpoint["reward_std"] is None
    final = RewardScorer(str(tmp_path / "norm"))
    saved = RewardScorer(str(tmp_path / "norm" / "checkpoint-2"))  # the same weights (step 2 is the last)
    prompts, responses = ["a question?"] * 2, ["yes, gladly: sure", "no. never"]
    raw = saved.raw_rewards(prompts, responses)
    assert final.raw_rewards(prompts, responses) == pytest.approx(raw, abs=1e-6)
    assert saved.score(prompts, responses) == pytest.approx(raw, abs=1e-6)  # alpha 1, as its config says
    mean, std = final.model.config.reward_mean, final.model.config.reward_std
    assert final.normalize and final.score(prompts, responses) == pytest.approx([(r - mean) / std for r in raw], abs=1e-5)


def test_training_a_rewardkit_model_further_keeps_its_alpha_unless_alpha_is_given(tiny_base, tmp_path):
    """--alpha defaulted to 1.0 and overrode the base model's: a model saved with alpha 10, trained
    further without --alpha, came back scoring a tenth of what it did (pooling already carried over)."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "first", tiny_base, num_train_epochs=1, alpha=10.0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "kept", tmp_path / "first", num_train_epochs=1))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "given", tmp_path / "first", num_train_epochs=1,
                                                       alpha=2.0))
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["alpha"] == 10.0
    assert json.loads((tmp_path / "given" / "config.json").read_text())["alpha"] == 2.0
    run_training(DataArguments(data=str(train)), _args(tmp_path / "fresh", tiny_base, num_train_epochs=1))
    assert json.loads((tmp_path / "fresh" / "config.json").read_text())["alpha"] == 1.0


def test_resuming_a_checkpoint_of_the_other_kind_or_none_is_refused_by_name(tiny_base, tmp_path):
    """A LoRA run's checkpoint resumed without --use-lora failed late with transformers' "Can't find
    a checkpoint index (pytorch_model.bin.index.json or model.safetensors.index.json)"."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    adapter, whole = tmp_path / "lora" / "checkpoint-2", tmp_path / "full" / "checkpoint-2"
    for folder, name in ((adapter, "adapter_config.json"), (whole, "model.safetensors")):
        folder.mkdir(parents=True)
        (folder / name).write_text("{}")
    cases = [(dict(resume_from_checkpoint=str(adapter)), "is a LoRA checkpoint .* with --use-lora"),
             (dict(resume_from_checkpoint=str(whole), use_lora=True), "full fine-tune's checkpoint.* without --use-lora"),
             (dict(resume_from_checkpoint=str(tmp_path / "missing")), "no such folder")]
    for flags, says in cases:
        with pytest.raises(ValueError, match=says):
            run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, **flags))


def test_a_lora_checkpoint_resumed_with_other_lora_flags_is_refused_by_name(tiny_base, tmp_path):
    """Another --lora-r failed in torch's size-mismatch dump of every adapter weight; another
    --lora-alpha resumed silently with the adapters' update rescaled."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    checkpoint = tmp_path / "lora" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16,
                                                                "target_modules": ["value", "query"]}))
    cases = [(dict(lora_r=16, lora_alpha=16), r"--lora-r 8 \(this run: 16\)"),
             (dict(lora_r=8, lora_alpha=32), r"--lora-alpha 16 \(this run: 32\)"),
             (dict(lora_r=8, lora_alpha=16, lora_target_modules=["query", "key"]),
              r"--lora-target-modules value,query \(this run: query,key\)")]
    for flags, says in cases:
        with pytest.raises(ValueError, match=says):
            run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, use_lora=True,
                                                                 resume_from_checkpoint=str(checkpoint), **flags))


def test_a_lora_checkpoint_resumed_with_other_target_modules_is_refused_however_they_are_given(tiny_base, tmp_path):
    """Target modules are compared as the modules they adapt: a checkpoint trained on key,value and
    resumed without --lora-target-modules (BERT's default: query,value) loaded silently, its
    optimizer state on other adapters; `all-linear` resumed onto query,value failed late in an
    optimizer-state message naming neither value. Another spelling of the same modules resumes."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    checkpoint = tmp_path / "lora" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for trained, flags, says in [(["value", "key"], {}, r"value,key \(this run: query,value, the default\)"),
                                 (["query", "value"], {"lora_target_modules": ["all-linear"]},
                                  r"query,value \(this run: dense,key,query,value, all-linear\)")]:
        (checkpoint / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32, "target_modules": trained}))
        with pytest.raises(ValueError, match=says):
            run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, use_lora=True,
                                                                 resume_from_checkpoint=str(checkpoint), **flags))
    same = _args(tmp_path / "out", tiny_base, use_lora=True, lora_target_modules=["attention.self.query", "self.value"])
    resume.check_lora_flags_match(checkpoint, same, fit.load_model_config(str(tiny_base)))  # no error


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_a_checkpoint_resumed_with_another_pooling_or_backbone_is_refused_before_the_data(tiny_base, tmp_path, use_lora):
    """A `mean` checkpoint resumed without --pooling trained on and was saved as `cls` without a
    word; resumed without its --base-model it failed in torch's size-mismatch dump after the data
    was read. LoRA checkpoints now carry reward_config.json, so both kinds are checked. The data
    file does not exist: the refusal comes first."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    out = tmp_path / "out"
    run_training(DataArguments(data=str(train)), _args(out, tiny_base, use_lora=use_lora, pooling="mean", max_steps=2,
                                                       save_strategy="steps", save_steps=2))
    checkpoint = out / "checkpoint-2"
    assert json.loads((checkpoint / ("reward_config.json" if use_lora else "config.json")).read_text())["pooling"] == "mean"
    missing = DataArguments(data=str(tmp_path / "no_such.jsonl"))
    for base, flags, says in [(tiny_base, {}, r"--pooling mean \(this run: cls, the default\)"),
                              (tiny_base, {"pooling": "last"}, r"--pooling mean \(this run: last\)"),
                              (helpers.minilm_path(), {"pooling": "mean"}, r"--base-model a backbone of hidden_size 32")]:
        with pytest.raises(ValueError, match=says):
            run_training(missing, _args(out, base, use_lora=use_lora, max_steps=4, resume_from_checkpoint="last", **flags))
    resume.check_checkpoint_model_matches(checkpoint, _args(out, tiny_base, pooling="mean"), str(tiny_base),
                                        fit.load_model_config(str(tiny_base)))  # the flags it trained with: no error


def test_a_checkpoint_resumed_on_other_data_is_refused(tiny_base, tmp_path):
    """Resumed with another --data, a run skipped as many batches of the new data as the checkpoint
    had trained on (rows never trained on), and its summary named the new data alone, so `evaluate`
    on the data the checkpoint trained on called it held out. The same file by another spelling resumes."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    out = tmp_path / "out"
    run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_steps=1, save_strategy="steps", save_steps=1,
                                                       reward_stats_samples=0))
    other = DataArguments(data=str(helpers.write_jsonl(tmp_path / "other.jsonl", _pairwise_rows(16, 1))))
    with pytest.raises(UserInputError, match=r"checkpoint-1 was trained on .*train\.jsonl, but this run reads .*other"):
        run_training(other, _args(out, tiny_base, max_steps=2, resume_from_checkpoint="last", reward_stats_samples=0))
    result = run_training(DataArguments(data=str(tmp_path / "." / "train.jsonl")),
                          _args(out, tiny_base, max_steps=2, resume_from_checkpoint="last", reward_stats_samples=0))
    assert result.resumed_from_step == 1 and result.steps == 2


def test_cls_pooling_on_a_causal_decoder_is_refused_before_the_data(tmp_path):
    """`rewardkit train --base-model <gpt2> --pooling cls` trained a model whose every reward read the
    first token alone (loss log 2, accuracy noise, no word said). The data file does not exist: the
    refusal comes first, with the base model named."""
    base = helpers.save_tiny_backbone(tmp_path / "gpt2", "gpt2")
    missing = DataArguments(data=str(tmp_path / "no_such.jsonl"))
    with pytest.raises(UserInputError, match=r"gpt2: pooling 'cls' reads the first token.*Use pooling 'last'"):
        run_training(missing, _args(tmp_path / "out", base, pooling="cls"))


def test_summary_prints_short_times_small_stds_and_one_step_readably():
    """A 0.015 s evaluation printed as "0.0 s of it held-out evaluation", a std of 0.00028 as
    "std 0.000", and a one-step run as "1 steps"."""
    from rewardkit.fit import TrainResult

    result = TrainResult(output_dir="out", objective="pairwise", base_model="tiny", detected_layout="pairwise",
                         train_rows=8, eval_rows=2, epochs=0.5, steps=1, seconds=0.31, examples_per_second=25.8,
                         train_loss=0.6931, max_length=32, eval_seconds=0.015, steps_this_call=1,
                         reward_mean=0.05812, reward_std=0.00028)
    text = result.describe()
    assert "  1 step, 0.5 epoch(s) in 0.3 s (<0.1 s of it held-out evaluation): 25.80 pairs/s" in text
    assert "mean training loss 0.6931 over the 1 step." in text
    assert "mean 0.05812, std 0.00028 (stored" in text


def test_summary_prints_held_out_margins_and_rmse_in_their_units_not_as_zero():
    """The held-out line printed every figure to 4 decimals: a mean margin of 4.9e-05 (a model whose
    rewards are small) read "mean_margin 0.0000", and an RMSE of targets rated in thousandths "rmse 0.0000"."""
    from rewardkit.fit import TrainResult

    common = dict(output_dir="out", base_model="tiny", detected_layout="x", train_rows=8, eval_rows=4, epochs=1.0,
                  steps=1, seconds=1.0, examples_per_second=8.0, train_loss=0.69, max_length=32)
    pairs = TrainResult(objective="pairwise", **common, eval_metrics={
        "eval_loss": 0.69312, "eval_accuracy": 0.548077, "eval_mean_margin": 4.8564e-05})
    assert "loss 0.6931, accuracy 0.5481, mean_margin 4.856e-05" in pairs.describe()
    rated = TrainResult(objective="mse", **common, eval_metrics={"eval_loss": 0.5, "eval_rmse": 0.000731})
    assert "loss 0.5000, rmse 0.000731" in rated.describe()


def test_resumed_summaries_leave_out_an_unknown_step_and_name_a_single_last_step():
    """A checkpoint without trainer_state.json printed "(step None)"; a run resumed one step before
    its end put "steps 8-8" on the card."""
    from rewardkit.fit import TrainResult
    from rewardkit.model_card import _resumed

    result = TrainResult(output_dir="out", objective="pairwise", base_model="tiny", detected_layout="pairwise",
                         train_rows=8, eval_rows=0, epochs=1.0, steps=8, seconds=3.0, examples_per_second=2.7,
                         train_loss=0.6, max_length=32, steps_this_call=8, resumed_from="o/checkpoint-0")
    text = result.describe()
    assert "resumed from checkpoint-0: " in text and "None" not in text
    card = _resumed({"resumed_from": "o/checkpoint-7", "resumed_from_step": 7, "steps": 8})
    assert card == "from checkpoint-7 (step 7); the training time is of step 8"
    assert _resumed({"resumed_from": "o/checkpoint-4", "resumed_from_step": 4, "steps": 8}).endswith("steps 5-8")


class _PoisonWeights(TrainerCallback):
    """Fills the weights with NaN: before the last step (the loss turns NaN) or after training
    (the loss is finite, the reward statistics are not)."""

    def __init__(self, when: str) -> None:
        self.when = when

    def _poison(self, model) -> None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(float("nan"))

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.when == "last step" and state.global_step == state.max_steps - 1:
            self._poison(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.when == "after training":
            self._poison(model)


@pytest.mark.parametrize("when, says", [("last step", "mean training loss nan"),
                                        ("after training", "reward mean nan")])
def test_a_diverged_run_is_refused_before_anything_is_saved(tiny_base, tmp_path, when, says):
    """NaN weights were saved, then the model card crashed on them, leaving half a folder. (The
    Trainer's logging_nan_inf_filter hides a NaN step loss; off here so that the loss shows it.)"""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    out = tmp_path / "out"
    args = _args(out, tiny_base, num_train_epochs=1, logging_nan_inf_filter=False)
    with pytest.raises(TrainingDivergedError, match=f"training diverged: .*{says}.*learning rate"):
        run_training(DataArguments(data=str(train)), args, callbacks=[_PoisonWeights(when)])
    assert not out.exists() or not any(out.iterdir())


def test_summary_reports_skipped_held_out_rows_apart(tiny_base, tmp_path, tokenizer):
    """Held-out rows skipped under --skip-invalid were warned about, but the summary said
    "Data: no rows skipped" (it reported only the training data)."""
    from rewardkit.fit import prepare_data

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(8, 0))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", [*_pairwise_rows(4, 1), {"prompt": "p", "chosen": "x", "rejected": "x"}])
    data_args = DataArguments(data=str(train), eval_data=str(held), skip_invalid=True)
    prepared = prepare_data(data_args, _args(tmp_path / "out", tiny_base), tokenizer, 32)
    assert prepared.eval_rows == 4
    assert prepared.skipped.startswith("training data: no rows skipped; held-out data: skipped 1 invalid row(s)")
    assert "identical chosen/rejected: 1 (first at held.jsonl line 5)" in prepared.skipped
    clean = DataArguments(data=str(train), eval_data=str(train), skip_invalid=True)
    assert prepare_data(clean, _args(tmp_path / "out", tiny_base), tokenizer, 32).skipped == "no rows skipped"


def _collapsing_pairs(n):
    """Pairs that differ only at the end of a long shared response: identical once cut to 32 tokens."""
    long = " ".join(["word"] * 60)
    return [{"prompt": f"question {i}", "chosen": f"{long} good {WORDS[i % 8]}", "rejected": f"{long} bad {WORDS[i % 8]}"}
            for i in range(n)]


def test_pairs_that_truncation_makes_identical_are_skipped_and_reported(tiny_base, tmp_path, tokenizer, caplog):
    """Pairs that --max-length cut into identical inputs were trained (loss log 2, no gradient) and
    held out (accuracy of float noise) with only "had the end of the response cut" in the summary."""
    import logging

    from rewardkit.fit import prepare_data

    rows = _pairwise_rows(12, 0) + _collapsing_pairs(6)
    train = helpers.write_jsonl(tmp_path / "train.jsonl", rows)
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(3, 1) + _collapsing_pairs(2))
    with caplog.at_level(logging.WARNING, logger="rewardkit.fit"):
        prepared = prepare_data(DataArguments(data=str(train), eval_data=str(held)), _args(tmp_path / "out", tiny_base),
                                tokenizer, 32)
    assert len(prepared.train_features) == 12 and prepared.skipped_identical == 6
    assert prepared.eval_rows == len(prepared.eval_features) == 3 and prepared.eval_skipped_identical == 2
    assert "training data: skipped 6 of 18 pairs whose chosen and rejected encode to the same tokens" in caplog.text
    assert "held-out data: skipped 2 of 5 pairs" in caplog.text and "raise --max-length" in caplog.text
    assert all(f["chosen"] != f["rejected"] for f in prepared.train_features + prepared.eval_features)

    out = tmp_path / "out"
    result = run_training(DataArguments(data=str(train), eval_data=str(held)), _args(out, tiny_base, max_steps=1))
    assert result.train_rows == 12 and result.eval_rows == 3
    assert "Identical inputs: skipped 6 training pairs and 2 held-out pairs" in result.describe()
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["skipped_identical"] == 6 and summary["eval_skipped_identical"] == 2
    only = helpers.write_jsonl(tmp_path / "only.jsonl", _collapsing_pairs(4))
    with pytest.raises(ValueError, match="training data: all 4 are pairs whose chosen and rejected .*--max-length"):
        prepare_data(DataArguments(data=str(only)), _args(out, tiny_base), tokenizer, 32)


def test_truncation_counts_are_of_the_pairs_kept_not_of_those_skipped_as_identical(tiny_base, tmp_path, tokenizer):
    """The summary said "36 texts: ... 12 had the end of the response cut" of a run trained on 12
    pairs (24 texts, none cut): the 6 pairs skipped as identical were counted too."""
    from rewardkit.fit import prepare_data

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(12, 0) + _collapsing_pairs(6))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(3, 1) + _collapsing_pairs(2))
    prepared = prepare_data(DataArguments(data=str(train), eval_data=str(held)), _args(tmp_path / "out", tiny_base),
                            tokenizer, 32)
    assert prepared.truncation == ("24 texts: 0 had the start of the prompt cut, 0 had the end of the response cut "
                                   "(held-out: 6 texts: 0 had the start of the prompt cut, 0 had the end of the "
                                   "response cut)")


def test_ranked_groups_that_truncation_collapses_are_skipped_whole(tiny_base, tmp_path, tokenizer):
    """A group in which two responses encode alike would train (and score) a pair of ties; the
    group is skipped whole, as a group holding the same response twice is an invalid row."""
    from rewardkit.fit import prepare_data

    long = " ".join(["word"] * 60)
    rows = [{"prompt": f"q{i}", "responses": [f"best {w}", f"fine {w}", f"bad {w}"]} for i, w in enumerate(WORDS)]
    rows.append({"prompt": "q", "responses": ["best", long + " good", long + " bad"]})
    train = helpers.write_jsonl(tmp_path / "rank.jsonl", rows)
    prepared = prepare_data(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base), tokenizer, 32)
    assert prepared.objective == "ranking" and len(prepared.train_features) == 8 and prepared.skipped_identical == 1


def test_held_out_rows_that_are_also_training_rows_are_counted_and_said(tiny_base, tmp_path, tokenizer, caplog):
    """--eval-data the same file as --data printed held-out accuracy 1.0 with no warning, and the
    card called it a held-out split."""
    import logging

    from rewardkit.fit import prepare_data

    rows = _pairwise_rows(16, 0)
    train = helpers.write_jsonl(tmp_path / "train.jsonl", rows)
    respaced = [{**row, "chosen": "  " + row["chosen"].replace(" ", "   ")} for row in rows[:3]]  # same texts
    held = helpers.write_jsonl(tmp_path / "held.jsonl", respaced + _pairwise_rows(2, 1))
    with caplog.at_level(logging.WARNING, logger="rewardkit.fit"):
        prepared = prepare_data(DataArguments(data=str(train), eval_data=str(held)), _args(tmp_path / "o", tiny_base),
                                tokenizer, 32)
    assert prepared.eval_overlap == 3 and "held-out data: 3 of its 5 rows are also in the training data" in caplog.text
    assert prepare_data(DataArguments(data=str(train), eval_data=str(helpers.write_jsonl(
        tmp_path / "new.jsonl", _pairwise_rows(4, 1)))), _args(tmp_path / "o", tiny_base), tokenizer, 32).eval_overlap == 0
    doubled = helpers.write_jsonl(tmp_path / "doubled.jsonl", rows + rows)  # --eval-fraction on duplicated rows
    split = prepare_data(DataArguments(data=str(doubled), eval_fraction=0.25), _args(tmp_path / "o", tiny_base),
                         tokenizer, 32)
    assert 0 < split.eval_overlap <= split.eval_rows == 8

    out = tmp_path / "out"
    result = run_training(DataArguments(data=str(train), eval_data=str(train)), _args(out, tiny_base, max_steps=1))
    assert result.eval_overlap == 16
    assert "16 of the 16 held-out pairs are also in the training data" in result.describe()
    assert json.loads((out / "training_summary.json").read_text())["eval_overlap"] == 16
    assert "n=16; 16 of them also in the training data: not an independent check" in (out / "README.md").read_text()


def test_held_out_ranking_metrics_count_ties_as_evaluate_does():
    """The card shows the in-training figure under the same name as `evaluate`'s: a tie counted 0
    there and ½ here, and a tie at the top went to index 0."""
    from transformers import EvalPrediction

    # groups [1, 1, 0] (tie at the top: 1/2; pairs 0.5 + 1 + 1) and [2, 3] padded (top-1 miss; 0 of 1)
    prediction = EvalPrediction(predictions=np.array([[1.0, 1.0, 0.0], [2.0, 3.0, 0.0]]), label_ids=np.array([3, 2]))
    assert ranking_eval_metrics(prediction) == pytest.approx({"top1_accuracy": 0.25, "pairwise_accuracy": 2.5 / 4})


def test_held_out_ranking_loss_is_the_mean_over_within_group_pairs_whatever_the_eval_batch_size(tmp_path, tokenizer):
    """eval_loss was Trainer's mean over groups of their batch's mean: a batch of three K=2 groups
    (3 pairs) weighed as much as three groups of a batch of two K=6 groups and a K=3 (33 pairs), so
    the held-out loss changed with --per_device_eval_batch_size. It is the mean over all
    within-group pairs, as the training loss (and `evaluate`'s log loss at T = 1) is."""
    from rewardkit.fit import disable_dropout

    def words(i, k):
        return " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k))

    rows = [{"prompt": words(i, 3), "responses": [f"{words(i + j, 1 + (i * j) % 5)} {j}" for j in range(k)]}
            for i, k in enumerate((2, 2, 2, 6, 6, 3))]
    features = encode_rows(rows, "ranking", PairEncoder(tokenizer, 32))
    losses = []
    for batch_size in (1, 2, 4, len(rows)):
        torch.manual_seed(0)
        model = helpers.tiny_reward_model()
        disable_dropout(model)
        model.score.weight.data.mul_(200)  # rewards far enough apart for the groups' losses to differ
        args = RewardTrainingArguments(output_dir=str(tmp_path), precision="fp32", report_to="none", disable_tqdm=True,
                                       per_device_eval_batch_size=batch_size)
        trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, objective="ranking",
                                eval_dataset=features)
        losses.append(trainer.evaluate()["eval_loss"])
        with torch.no_grad():
            rewards = [model(**trainer.data_collator([f])).rewards[:, 0].tolist() for f in features]
    log_loss = ranking_metrics(rewards)["log_loss"]  # -log σ(r_better − r_worse) over the 3+3+3+15+15+3 pairs
    assert abs(np.log(2) - log_loss) > 1e-3
    assert losses == pytest.approx([log_loss] * 4, rel=1e-5)


def test_ranking_top1_ignores_the_padding_of_shorter_groups():
    """train_top1 took argmax over groups padded with 0.0: a group of all-negative rewards had its
    padding "win" and counted as a miss although its best response scored highest."""
    rewards, sizes = torch.tensor([-1.0, -2.0, -0.5, -1.5, -3.0]), torch.tensor([2, 3])
    matrix = _group_matrix(rewards, sizes)
    assert ranking_top1(matrix, sizes).item() == 1.0
    assert ranking_top1(matrix, torch.tensor([3, 3])).item() == 0.5  # the padding, read as a reward, wins


def test_ranking_top1_counts_a_shared_top_as_one_kth_like_the_held_out_metric():
    """train_top1 (argmax) counted a tie at the top as a win for the best response, so it read
    higher than the held-out top1_accuracy of the same rewards, which counts 1/k."""
    matrix = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, -1.0]])
    sizes = torch.tensor([3, 3, 3])
    expected = ranking_metrics([row.tolist() for row in matrix])["top1_accuracy"]
    assert ranking_top1(matrix, sizes).item() == pytest.approx(expected) == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)


def test_held_out_flags_without_a_held_out_source_are_refused(tiny_base, tmp_path):
    """--eval-fraction was ignored beside --eval-data, and --load_best_model_at_end without held-out
    rows silently kept the last weights (evaluation is turned off when there is nothing to evaluate)."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(8, 0))
    with pytest.raises(ValueError, match="--eval-fraction 0.2 and --eval-data both"):
        DataArguments(data=str(train), eval_data=str(train), eval_fraction=0.2)
    args = _args(tmp_path / "out", tiny_base, load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch")
    with pytest.raises(ValueError, match="--load_best_model_at_end needs held-out data"):
        run_training(DataArguments(data=str(train)), args)
    assert not (tmp_path / "out").exists()


def test_load_best_model_at_end_reports_the_best_checkpoints_metrics(tiny_base, tmp_path):
    """With --load_best_model_at_end the saved weights are the best checkpoint's, but the summary,
    training_summary.json and the card reported the last evaluation's figures. Here "best" is the
    smallest mean margin, which the first epoch has (training widens it), so best != last."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(48, 0))
    held = helpers.write_jsonl(tmp_path / "held.jsonl", _pairwise_rows(16, 1))
    out = tmp_path / "out"
    args = _args(out, tiny_base, num_train_epochs=3, save_strategy="epoch", eval_strategy="epoch",
                 load_best_model_at_end=True, metric_for_best_model="mean_margin", greater_is_better=False)
    result = run_training(DataArguments(data=str(train), eval_data=str(held)), args)
    state = json.loads((out / "checkpoint-18" / "trainer_state.json").read_text())
    logged = {e["step"]: e for e in state["log_history"] if "eval_loss" in e}
    assert state["best_model_checkpoint"].endswith("checkpoint-6") and logged[6]["eval_mean_margin"] < logged[18]["eval_mean_margin"]
    assert result.steps == 18 and result.eval_step == 6 and result.eval_of == "best checkpoint (by eval_mean_margin)"
    assert result.eval_metrics["eval_mean_margin"] == pytest.approx(logged[6]["eval_mean_margin"])
    assert "best checkpoint (by eval_mean_margin) at step 6" in result.describe()
    assert json.loads((out / "training_summary.json").read_text())["eval_step"] == 6
    assert "best checkpoint (by eval_mean_margin) at step 6" in (out / "README.md").read_text()
    a, b = load_file(str(out / "model.safetensors")), load_file(str(out / "checkpoint-6" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)  # the figures describe the weights saved


def test_label_smoothing_is_refused_not_silently_ignored(tmp_path):
    """Trainer smooths labels in its own compute_loss, which RewardTrainer replaces: the flag trained
    without a word and without effect."""
    with pytest.raises(ValueError, match="--label_smoothing_factor 0.1 would be ignored"):
        RewardTrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.1)
    assert RewardTrainingArguments(output_dir=str(tmp_path), label_smoothing_factor=0.0).label_smoothing_factor == 0


def test_best_checkpoint_by_rmse_is_the_lowest_rmse_unless_greater_is_better_is_given(tmp_path):
    """transformers takes a metric not ending in "loss" as higher-is-better: --metric_for_best_model
    rmse kept the checkpoint of the worst held-out RMSE, which the summary called the best."""
    best = dict(output_dir=str(tmp_path), load_best_model_at_end=True)
    assert RewardTrainingArguments(**best, metric_for_best_model="rmse").greater_is_better is False
    assert RewardTrainingArguments(**best, metric_for_best_model="eval_rmse").greater_is_better is False
    assert RewardTrainingArguments(**best, metric_for_best_model="rmse", greater_is_better=True).greater_is_better
    assert RewardTrainingArguments(**best, metric_for_best_model="accuracy").greater_is_better is True
    assert RewardTrainingArguments(**best).greater_is_better is False  # loss


def test_a_metric_for_best_model_the_objective_does_not_evaluate_is_refused_before_training(tiny_base, tmp_path):
    """`accuracy` on mse data (one config for several objectives) failed with transformers' KeyError
    at the first evaluation, after a whole epoch of training."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _scalar_rows(12, 0))
    out = tmp_path / "out"
    args = _args(out, tiny_base, save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy")
    with pytest.raises(ValueError, match="--metric_for_best_model accuracy: mse training evaluates loss, rmse; "):
        run_training(DataArguments(data=str(train), eval_fraction=0.25), args)
    assert not out.exists()


def test_metric_names_are_those_the_held_out_metrics_return():
    from transformers import EvalPrediction

    from rewardkit.training import METRIC_NAMES, METRICS

    predictions = {"pairwise": (np.array([[1.0, 0.0]]), np.zeros(1)), "mse": (np.array([1.0]), np.array([0.5])),
                   "ranking": (np.array([[2.0, 1.0]]), np.array([2]))}
    for objective, (predicted, labels) in predictions.items():
        metrics = METRICS[objective](EvalPrediction(predictions=predicted, label_ids=labels))
        assert tuple(metrics) == METRIC_NAMES[objective]


def test_resuming_a_finished_run_trains_no_further_step(tiny_base, tmp_path, caplog):
    """transformers 5.23 resumed from a checkpoint at --max_steps runs one more step before it
    checks: re-running a finished job with --resume_from_checkpoint last changed its weights."""
    import logging

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(32, 0))
    out = tmp_path / "out"
    args = dict(max_steps=2, save_strategy="steps", save_steps=2, reward_stats_samples=16)
    first = run_training(DataArguments(data=str(train)), _args(out, tiny_base, **args))
    before = load_file(str(out / "model.safetensors"))
    with caplog.at_level(logging.WARNING, logger="rewardkit.resume"):
        again = run_training(DataArguments(data=str(train)), _args(out, tiny_base, resume_from_checkpoint="last", **args))
    assert "already reached the end of training (step 2" in caplog.text
    assert again.steps == 2 and not (out / "checkpoint-3").exists()
    after = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert again.train_loss == pytest.approx(first.train_loss) and again.reward_mean == pytest.approx(first.reward_mean, abs=1e-4)


def test_a_run_resumed_without_max_length_goes_on_at_its_checkpoints_length(tiny_base, tmp_path):
    """Resumed without repeating --max-length, a run begun at 24 tokens trained its remaining steps
    at the base model's 512 and saved a model that scores at 512 (trained_max_length), its summary
    saying "Truncation at 512 tokens; the default". An explicit --max-length still wins."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))  # 2 steps per epoch
    out = tmp_path / "out"
    run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_length=24, max_steps=1, save_strategy="steps",
                                                       save_steps=1))
    resumed = run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_length=None, max_steps=2,
                                                                 save_strategy="no", resume_from_checkpoint="last"))
    assert resumed.max_length == 24 and resumed.max_length_source == "the length checkpoint-1 was trained at"
    assert json.loads((out / "config.json").read_text())["trained_max_length"] == 24
    assert "Truncation at 24 tokens (from the length checkpoint-1 was trained at):" in resumed.describe()
    changed = run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_length=40, max_steps=2,
                                                                 save_strategy="no",
                                                                 resume_from_checkpoint=str(out / "checkpoint-1")))
    assert (changed.max_length, changed.max_length_source) == (40, "--max-length")


def test_a_resumed_run_reports_the_steps_time_and_loss_of_its_own_call(tiny_base, tmp_path):
    """Resumed from its step-4 checkpoint, a run of 8 steps reported "8 steps ... in 1.6 s ... final
    training loss" for the 4 steps that call ran, and neither summary nor card said it was resumed;
    re-run once finished, it overwrote the summary with 0.0085 s and 0 pairs/s ("Training time | 0 s")."""
    import shutil

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(32, 0))  # 4 steps per epoch
    common = dict(save_strategy="epoch", learning_rate=1e-2)
    full = run_training(DataArguments(data=str(train)), _args(tmp_path / "full", tiny_base, **common))
    assert full.steps == full.steps_this_call == 8 and full.resumed_from is None
    assert "8 steps, 2 epoch(s) in " in full.describe() and "mean training loss " in full.describe()
    assert f"mean training loss {full.train_loss:.4f} over the 8 steps." in full.describe()

    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "full", out)
    shutil.rmtree(out / "checkpoint-8")
    resumed = run_training(DataArguments(data=str(train)), _args(out, tiny_base, resume_from_checkpoint="last", **common))
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-4  # the same run, in two calls
    assert resumed.steps == 8 and resumed.steps_this_call == 4 and resumed.resumed_from_step == 4
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.restored_from is None
    described = resumed.describe()
    assert "8 steps, 2 epoch(s), resumed from checkpoint-4 (step 4): steps 5-8 ran in " in described
    assert f"mean training loss {resumed.train_loss:.4f} over steps 5-8." in described
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps_this_call"] == 4 and summary["resumed_from_step"] == 4
    assert "| Resumed | from checkpoint-4 (step 4); the training time is of steps 5-8 |" in (out / "README.md").read_text()

    again = run_training(DataArguments(data=str(train)), _args(out, tiny_base, resume_from_checkpoint="last", **common))
    kept = json.loads((out / "training_summary.json").read_text())
    for key in ("seconds", "examples_per_second", "eval_seconds", "train_loss", "steps_this_call", "resumed_from"):
        assert kept[key] == summary[key], key
    assert kept["restored_from"].endswith("checkpoint-8") and again.seconds == summary["seconds"]
    assert "nothing left to train: checkpoint-8 had reached the end" in again.describe()
    assert "When they were trained: steps 5-8 ran in " in again.describe()
    from rewardkit.model_card import _training_time

    assert f"| Training time | {_training_time(summary['seconds'])} ({summary['examples_per_second']:.2f} pairs/s) |" in (
        out / "README.md").read_text()

    (out / "training_summary.json").unlink()  # nothing recorded: said, not made up
    unrecorded = run_training(DataArguments(data=str(train)), _args(out, tiny_base, resume_from_checkpoint="last",
                                                                    **common))
    assert unrecorded.seconds is None and unrecorded.examples_per_second is None
    assert "The time and loss of their training were not recorded." in unrecorded.describe()
    assert "Training time" not in (out / "README.md").read_text()


@pytest.mark.parametrize("freeze", [True, False])
def test_word_embeddings_stay_as_pretrained_unless_no_freeze_embeddings(tiny_base, tmp_path, freeze):
    """--freeze-embeddings (the default) keeps the word embedding matrix as the backbone had it and
    trains everything else; --no-freeze-embeddings trains it too. The summary records which."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(32, 0))
    out = tmp_path / "out"
    result = run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_steps=3, freeze_embeddings=freeze))
    base = load_file(str(tiny_base / "model.safetensors"))
    trained = load_file(str(out / "model.safetensors"))
    word = next(k for k in base if k.endswith("word_embeddings.weight"))
    position = next(k for k in base if k.endswith("position_embeddings.weight"))
    assert torch.equal(base[word], trained[f"backbone.{word.removeprefix('bert.')}"]) == freeze
    assert not torch.equal(base[position], trained[f"backbone.{position.removeprefix('bert.')}"])
    assert result.hyperparameters["freeze_embeddings"] is freeze


@pytest.mark.parametrize(("every", "calls"), [(2, 3), (0, 0)])
def test_cpu_training_hands_free_memory_back_every_n_steps(tiny_base, tmp_path, monkeypatch, every, calls):
    import rewardkit.memory as memory

    if memory._glibc_malloc_trim() is None:
        pytest.skip("no glibc malloc_trim on this platform")
    released = []
    monkeypatch.setattr(memory, "release_free_memory", lambda: released.append(1) or True)
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(48, 0))
    run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, max_steps=6, malloc_trim_steps=every))
    assert len(released) == calls  # steps 2, 4, 6


def test_release_free_memory_calls_glibc_where_there_is_one():
    from rewardkit.memory import _glibc_malloc_trim, memory_callback, release_free_memory

    assert release_free_memory() == (_glibc_malloc_trim() is not None)
    assert memory_callback(10, on_cpu=False) is None and memory_callback(0, on_cpu=True) is None
    with pytest.raises(ValueError, match="--malloc-trim-steps"):
        RewardTrainingArguments(output_dir="x", malloc_trim_steps=-1)


def test_a_checkpoint_that_trained_the_word_embeddings_resumes_only_with_its_flags(tiny_base, tmp_path):
    """A checkpoint saved with --no-freeze-embeddings resumed under the default: its optimizer state
    holds more weights than the run trains, and torch refused it with a bare "doesn't match the size
    of optimizer's group". Now the error names the flag; with it, the run resumes."""
    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(32, 0))
    out = tmp_path / "out"
    common = dict(save_strategy="steps", save_steps=2, reward_stats_samples=16)
    run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_steps=2, freeze_embeddings=False, **common))
    with pytest.raises(ValueError, match="--no-freeze-embeddings"):
        run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_steps=4, resume_from_checkpoint="last", **common))
    result = run_training(DataArguments(data=str(train)), _args(out, tiny_base, max_steps=4, resume_from_checkpoint="last",
                                                               freeze_embeddings=False, **common))
    assert result.steps == 4 and result.hyperparameters["freeze_embeddings"] is False


def test_an_optimizer_state_with_other_parameter_groups_is_explained_not_bare():
    """An mse checkpoint saved before the head got optimizer groups of its own has 2 groups where the
    run builds 4: torch raised a bare "loaded state dict has a different number of parameter groups"."""
    from rewardkit.resume import train_from_checkpoint

    class OldCheckpoint:
        def train(self, resume_from_checkpoint=None):
            raise ValueError("loaded state dict has a different number of parameter groups")

    with pytest.raises(ValueError, match="mse checkpoint of a version before.*--base-model CHECKPOINT"):
        train_from_checkpoint(OldCheckpoint(), "out/checkpoint-4")
    with pytest.raises(ValueError, match="^loaded state dict"):  # not resuming: torch's own words
        train_from_checkpoint(OldCheckpoint(), None)


def test_load_best_model_at_end_evaluates_when_checkpoints_are_saved_unless_told_otherwise(tmp_path):
    """With --load_best_model_at_end and no --eval_strategy, transformers refused the default 'no';
    the strategy now follows --save_strategy, and --eval_steps --save_steps (evaluating every
    --logging_steps would cost time and fail when --save_steps is not a multiple of it)."""
    args = RewardTrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, save_strategy="steps",
                                   save_steps=25, logging_steps=10)
    assert (args.eval_strategy, args.eval_steps) == ("steps", 25)
    assert RewardTrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True).eval_strategy == "epoch"
    assert RewardTrainingArguments(output_dir=str(tmp_path)).eval_strategy == "no"
    with pytest.raises(ValueError, match="--load_best_model_at_end needs checkpoints.*--save_strategy is no"):
        RewardTrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, save_strategy="no")
    given = RewardTrainingArguments(output_dir=str(tmp_path), load_best_model_at_end=True, eval_strategy="steps",
                                    eval_steps=5, save_strategy="steps", save_steps=25)
    assert (given.eval_strategy, given.eval_steps) == ("steps", 5)


def test_progress_bars_keep_the_metrics_off_stdout(tiny_base, tmp_path, capfd, caplog):
    """With progress bars on (the CLI's default), transformers' ProgressCallback wrote every logged
    metrics dict to stdout (`{'train_runtime': '5.817', ...}`), ahead of the summary that
    `rewardkit train` prints there. They go to the log (stderr), as without bars."""
    import logging

    train = helpers.write_jsonl(tmp_path / "train.jsonl", _pairwise_rows(16, 0))
    with caplog.at_level(logging.INFO, logger="rewardkit"):
        run_training(DataArguments(data=str(train)), _args(tmp_path / "out", tiny_base, disable_tqdm=False, max_steps=2,
                                                           logging_steps=1, reward_stats_samples=0))
    out, _ = capfd.readouterr()
    assert out == ""
    assert "step 1: loss " in caplog.text and "step 2: train_runtime " in caplog.text


def _mse_trainer(tmp_path, tokenizer, train_dataset, model=None, **kwargs) -> RewardTrainer:
    torch.manual_seed(0)
    model = model or helpers.tiny_reward_model()
    args = RewardTrainingArguments(output_dir=str(tmp_path), precision="fp32", per_device_train_batch_size=8,
                                   report_to="none", disable_tqdm=True, max_steps=2, save_strategy="no",
                                   learning_rate=1e-3, cpu_split_batches=False)
    return RewardTrainer(model=model, args=args, train_dataset=train_dataset,
                         processing_class=tokenizer, objective="mse", **kwargs)


def test_mse_with_an_optimizer_and_scheduler_passed_in_leaves_their_groups_alone(tmp_path, tokenizer):
    """create_optimizer moved the head's parameters into new groups of a caller's optimizer too, after
    the caller's scheduler was built on its groups: the first scheduler step raised (zip() argument 2
    is shorter than argument 1)."""
    from transformers import get_linear_schedule_with_warmup

    rows = [{**r, "response": r["completion"], "reward": 10 * r["reward"] + 50} for r in _scalar_rows(16, 0)]
    features = encode_rows(rows, "mse", PairEncoder(tokenizer, 32))
    model = helpers.tiny_reward_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_linear_schedule_with_warmup(optimizer, 1, 2)
    trainer = _mse_trainer(tmp_path, tokenizer, features, model, optimizers=(optimizer, scheduler))
    trainer.train()
    assert trainer.state.global_step == 2 and len(optimizer.param_groups) == 1
    own = _mse_trainer(tmp_path, tokenizer, features)
    own.create_optimizer()
    assert len(own.optimizer.param_groups) == 4  # Trainer's own optimizer: the head in groups at lr x std


def test_mse_trainer_takes_a_streaming_dataset(tmp_path, tokenizer):
    """target_statistics took len() of any train_dataset: a streaming (iterable) one raised TypeError
    in the constructor. It trains unstandardized (or at a target_scale given)."""
    import datasets

    rows = [{**r, "response": r["completion"]} for r in _scalar_rows(16, 0)]
    stream = datasets.Dataset.from_list(encode_rows(rows, "mse", PairEncoder(tokenizer, 32))).to_iterable_dataset()
    assert _mse_trainer(tmp_path, tokenizer, stream).target_scale is None
    assert _mse_trainer(tmp_path, tokenizer, stream, target_scale=(1.0, 2.0)).target_scale == (1.0, 2.0)


def test_training_accuracy_counts_a_tie_as_half_like_the_held_out_metric():
    """train_accuracy counted a pair whose rewards tie exactly as wrong, while the held-out accuracy
    logged beside it (and `rewardkit evaluate`'s) counts it ½: the same rewards read 0.25 and 0.5."""
    chosen, rejected = torch.tensor([1.0, 0.5, 0.0, -1.0]), torch.tensor([0.0, 0.5, 1.0, -1.0])
    stub = types.SimpleNamespace(objective="pairwise", args=types.SimpleNamespace(use_margin=False),
                                 _rewards=lambda model, inputs: (torch.cat([chosen, rejected]), None))
    _, _, metrics, count = RewardTrainer._loss(stub, None, {})
    held_out = pairwise_eval_metrics(EvalPrediction(predictions=torch.stack([chosen, rejected], 1).numpy(),
                                                    label_ids=None))["accuracy"]
    assert count == 4 and metrics["accuracy"].item() == pytest.approx(held_out) == pytest.approx(0.5)
