"""LoRA (PEFT): default targets, the trained head survives merge + save + reload, adapter == merged."""

import json
import random
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from rewardkit.file_names import ADAPTER_DIR
from rewardkit.fit import run_training
from rewardkit.lora import (
    apply_lora,
    default_target_modules,
    load_adapter,
    resolve_target_modules,
    warn_if_base_is_local,
)
from rewardkit.publishing import build_publish_folder
from rewardkit.scoring import RewardScorer
from rewardkit.training_args import DataArguments, RewardTrainingArguments
from tests import helpers

pytest.importorskip("peft")

PROBES = [("what is the river?", "yes, gladly: river"), ("cloud stone?", "no. paper"), ("a b c", "window garden music")]
WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "paper", "window"]


def test_default_targets_follow_peft_per_backbone_and_skip_the_head():
    assert default_target_modules(helpers.tiny_reward_model("bert")) == ["query", "value"]
    assert default_target_modules(helpers.tiny_reward_model("gpt2")) == ["c_attn"]
    model = helpers.tiny_reward_model("bert")
    everything = resolve_target_modules(model, ["all-linear"])
    assert "query" in everything and "dense" in everything
    assert "score" not in everything  # the head is trained in full, never adapted
    with pytest.raises(ValueError, match="no such module"):
        resolve_target_modules(model, ["q_proj"])



@pytest.mark.parametrize(("targets", "says"), [
    (["attention"], "attention: a BertAttention in the 'bert' backbone, which LoRA cannot adapt"),
    (["query", "LayerNorm"], "LayerNorm: a LayerNorm"),
    (["pooler"], "pooler: only in a part of the 'bert' backbone that our pooling never reads"),
    (["pooler.dense"], "never reads"),
    (["score"], "score: the reward head, which is trained in full"),
])
def test_targets_lora_cannot_adapt_are_refused_by_flag(targets, says):
    """Every name that exists passed the check; PEFT then failed with the repr of the whole module
    (a container, a LayerNorm) or "No modules were targeted" (the excluded pooler), naming no flag."""
    model = helpers.tiny_reward_model("bert")
    with pytest.raises(ValueError, match="^--lora-target-modules ") as error:
        resolve_target_modules(model, targets)
    assert says in str(error.value) and "Its linear layers: dense, key, query, value." in str(error.value)
    for spelled in (["word_embeddings"], ["attention.self.query"], ["backbone.encoder.layer.0.attention.self.query"]):
        assert resolve_target_modules(model, spelled) == spelled  # what PEFT adapts still passes

@pytest.mark.parametrize("targets", [["all-linear"], None, ["dense"]])
def test_bert_pooler_never_gets_an_adapter(targets, monkeypatch):
    """all-linear expands to bare names ("dense"), which PEFT matched as a suffix of
    backbone.pooler.dense too: adapters on a layer our pooling never reads. The fallback default
    (every linear layer, for backbones PEFT has no default for) had the same hole."""
    import peft.utils

    if targets is None:  # a backbone type PEFT has no default for
        monkeypatch.setattr(peft.utils, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", {})
    model = helpers.tiny_reward_model("bert")
    assert model.backbone.pooler is not None
    peft_model = apply_lora(model, r=4, target_modules=targets)
    names = [name for name, _ in peft_model.named_parameters() if "lora_A" in name]
    assert any("intermediate.dense" in name for name in names)
    assert not [name for name in names if "pooler" in name]


def test_only_adapters_and_head_train():
    peft_model = apply_lora(helpers.tiny_reward_model("bert"), r=4)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or ".score." in name for name in trainable)
    assert any(".score." in name for name in trainable)


def test_wrapping_with_peft_does_not_leak_transformers_checkpointing_deprecation():
    """PEFT reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a model: every
    --use-lora run printed that FutureWarning in the middle of its output. Other warnings still show."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(helpers.tiny_reward_model("bert"), r=4, alpha=8, dropout=0.0)
        warnings.warn("a warning of our own", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "is_gradient_checkpointing" in m], messages
    assert "a warning of our own" in messages


def test_keep_adapter_needs_lora():
    with pytest.raises(ValueError, match="--keep-adapter needs --use-lora"):
        RewardTrainingArguments(output_dir="x", keep_adapter=True)


def test_use_lora_without_peft_is_refused_before_any_work_and_says_what_to_install(monkeypatch):
    """`pip install -e .` (the README's set-up) installs no PEFT: `--use-lora` used to read the data
    and load the backbone, then stop on a bare `No module named 'peft'`."""
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError, as when not installed
    with pytest.raises(ValueError, match=r"--use-lora needs PEFT.*pip install peft"):
        RewardTrainingArguments(output_dir="x", use_lora=True)
    RewardTrainingArguments(output_dir="x")  # without LoRA nothing needs PEFT


class _Recorder(TrainerCallback):
    """Head weights when training starts; raw rewards of the probes when it ends (in memory)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.head_before = None
        self.rewards_after = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        head = model.base_model.model.score.modules_to_save["default"]
        self.head_before = head.weight.detach().clone()
        self.dropout_on = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]

    def on_train_end(self, args, state, control, model=None, **kwargs):
        model.eval()
        batch = self.tokenizer([p for p, _ in PROBES], [r for _, r in PROBES], padding=True, return_tensors="pt")
        with torch.no_grad():
            self.rewards_after = model(**batch).rewards[:, 0].tolist()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """One LoRA training run (keep_adapter) shared by the tests below."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("lora")
    base = helpers.save_tiny_backbone(root / "base")
    rng = random.Random(0)
    rows = [{"prompt": " ".join(rng.choices(WORDS, k=3)) + "?", "chosen": "yes, gladly: " + rng.choice(WORDS),
             "rejected": "no. " + rng.choice(WORDS)} for _ in range(24)]
    data = helpers.write_jsonl(root / "train.jsonl", rows)
    recorder = _Recorder(AutoTokenizer.from_pretrained(base))
    args = RewardTrainingArguments(
        output_dir=str(root / "out"), base_model=str(base), max_length=32, learning_rate=5e-3,
        per_device_train_batch_size=8, max_steps=3, save_strategy="no", disable_tqdm=True, seed=0,
        reward_stats_samples=16, use_lora=True, lora_r=4, lora_alpha=8, keep_adapter=True,
        precision="fp32")  # the recorder's forward would run under the Trainer's autocast: compare fp32 to fp32
    result = run_training(DataArguments(data=str(data)), args, callbacks=[recorder])
    return root, result, recorder


def test_default_lora_run_trains_without_dropout_and_can_halve_batches(lora_run, tmp_path, tokenizer):
    """--disable-dropout (the default) promises every dropout layer off, but LoRA kept
    lora_dropout 0.05 (dropout was disabled before the adapters existed), which also kept every
    default LoRA run off the CPU two-halves step."""
    from rewardkit.fit import disable_dropout
    from rewardkit.lora import apply_lora_from_args
    from rewardkit.training import RewardTrainer

    _, result, recorder = lora_run
    assert recorder.dropout_on == [] and result.hyperparameters["lora_dropout"] == 0.0
    args = RewardTrainingArguments(output_dir=str(tmp_path), use_lora=True, precision="fp32", report_to="none")
    assert args.lora_dropout == 0.0
    assert RewardTrainingArguments(output_dir="x", use_lora=True, disable_dropout=False).lora_dropout == 0.05
    model = apply_lora_from_args(helpers.tiny_reward_model("bert"), args)
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, objective="pairwise")
    disable_dropout(model)  # the backbone's own dropout, as run_training does when loading
    assert trainer._can_halve(model)
    noisy = apply_lora(helpers.tiny_reward_model("bert"), r=4, dropout=0.1)
    disable_dropout(noisy)  # also reaches the adapters' dropout on a PEFT model
    assert trainer._can_halve(noisy)


@pytest.mark.parametrize("flags", [{"head_dropout": 0.3}, {"use_lora": True, "lora_dropout": 0.1}])
def test_explicit_dropout_under_disable_dropout_is_refused(flags):
    """--head-dropout 0.3 was silently zeroed by the default --disable-dropout."""
    name = next(k for k in flags if k.endswith("dropout")).replace("_", "-")
    with pytest.raises(ValueError, match=f"--{name} .* has no effect under --disable-dropout.*--no-disable-dropout"):
        RewardTrainingArguments(output_dir="x", **flags)
    assert RewardTrainingArguments(output_dir="x", disable_dropout=False, **flags)  # consistent: accepted


def test_merged_folder_has_the_trained_head_and_no_peft_leftovers(lora_run):
    root, result, recorder = lora_run
    out = root / "out"
    weights = load_file(str(out / "model.safetensors"))
    assert not [k for k in weights if "lora_" in k or "modules_to_save" in k or "base_model.model" in k]
    assert not torch.allclose(weights["score.weight"], recorder.head_before)  # trained, not the initial head
    for name in ("adapter_config.json", "adapter_model.safetensors", "reward_config.json"):
        assert (out / ADAPTER_DIR / name).is_file(), name
    assert result.hyperparameters["lora_r"] == 4
    # the adapted layers by name (the summary and card said "default")
    adapter_config = json.loads((out / ADAPTER_DIR / "adapter_config.json").read_text())
    assert sorted(result.hyperparameters["lora_target_modules"]) == sorted(adapter_config["target_modules"])
    from rewardkit.training import current_umask

    for path in (out / ADAPTER_DIR).iterdir():  # adapter_model.safetensors was written 0600, unreadable to others
        assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask(), path.name
    assert json.loads((out / "config.json").read_text())["reward_std"] > 0


def test_published_lora_model_reloads_in_a_fresh_process_with_its_trained_head(lora_run, tmp_path):
    root, _, recorder = lora_run
    folder = build_publish_folder(root / "out", tmp_path / "hub", repo_id="someone/lora-rm")
    assert (folder / ADAPTER_DIR / "adapter_model.safetensors").is_file()
    assert json.loads((folder / ADAPTER_DIR / "adapter_config.json").read_text())["base_model_name_or_path"] is None
    assert not (folder / ADAPTER_DIR / "README.md").exists()  # PEFT's card records local paths: not published
    build_publish_folder(root / "out", folder, repo_id="someone/lora-rm")  # a rebuild replaces it, adapter/ too
    code = f"""
    import json, torch
    from transformers import AutoModel, AutoTokenizer
    folder = {str(folder)!r}
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    batch = tokenizer({[p for p, _ in PROBES]!r}, {[r for _, r in PROBES]!r}, padding=True, return_tensors="pt")
    with torch.no_grad():
        rewards = model.eval()(**batch).rewards[:, 0].tolist()
    print(json.dumps({{"rewards": rewards, "missing": sorted(info["missing_keys"]), "module": type(model).__module__}}))
    """
    loaded = helpers.run_fresh_python(code, tmp_path)  # no PEFT, no rewardkit: trust_remote_code alone
    assert loaded["missing"] == [] and loaded["module"].startswith("transformers_modules")
    assert loaded["rewards"] == pytest.approx(recorder.rewards_after, abs=1e-5)


def test_adapter_and_merged_model_score_alike(lora_run):
    root, _, recorder = lora_run
    prompts, responses = [p for p, _ in PROBES], [r for _, r in PROBES]
    merged = RewardScorer(str(root / "out"))
    adapter_model = load_adapter(root / "out" / ADAPTER_DIR, base_model=str(root / "base"))
    from_adapter = RewardScorer(adapter_model, tokenizer=merged.tokenizer)
    assert from_adapter.raw_rewards(prompts, responses) == pytest.approx(merged.raw_rewards(prompts, responses), abs=1e-4)
    assert merged.raw_rewards(prompts, responses) == pytest.approx(recorder.rewards_after, abs=1e-5)
    assert adapter_model.config.reward_std == pytest.approx(merged.model.config.reward_std)



def test_publishing_a_lora_checkpoint_or_adapter_says_to_publish_the_merged_output_dir(lora_run, tmp_path):
    """`publish --model OUT/checkpoint-N` of a LoRA run called optimizer.pt, rng_state.pth and
    scheduler.pt "pickle weights" and said to load the model and save it again: there is no model
    in that folder to load, only an adapter, and the merged one is in OUT."""
    import shutil

    root, _, _ = lora_run
    checkpoint = shutil.copytree(root / "out" / ADAPTER_DIR, tmp_path / "checkpoint-3")
    for name in ("optimizer.pt", "rng_state.pth", "scheduler.pt", "training_args.bin"):
        torch.save({}, checkpoint / name)
    for folder in (checkpoint, root / "out" / ADAPTER_DIR):
        with pytest.raises(ValueError, match="is a LoRA adapter .*Publish the run's --output-dir") as error:
            build_publish_folder(folder, tmp_path / "pub", repo_id="someone/rm")
        assert "pickle" not in str(error.value)

def test_a_calibrated_lora_run_rebuilds_calibrated_from_its_adapter(lora_run, tmp_path):
    """`evaluate --calibrate` writes T to config.json and to adapter/reward_config.json, which
    load_adapter reads: the adapter compares with the same calibrated probabilities."""
    import shutil

    from rewardkit.evaluation import store_temperature

    root, _, _ = lora_run
    out = tmp_path / "out"
    shutil.copytree(root / "out", out)
    store_temperature(out, 0.4)
    adapter_model = load_adapter(out / ADAPTER_DIR, base_model=str(root / "base"))
    assert adapter_model.config.calibration_temperature == pytest.approx(0.4)
    assert RewardScorer(str(out)).temperature == pytest.approx(0.4)


def test_an_adapter_on_a_local_base_is_flagged_as_not_rebuildable_from_the_hub(lora_run, tmp_path, caplog):
    """publish writes base_model_name_or_path null for a local base (a local rewardkit folder in
    continued training): Hub users could not rebuild adapter/, and nothing said so."""
    import logging
    import shutil

    root, _, _ = lora_run
    with caplog.at_level(logging.WARNING, logger="rewardkit.lora"):
        assert warn_if_base_is_local(root / "out" / ADAPTER_DIR)
    assert "will name no base model" in caplog.text and "load_adapter(..., base_model=...)" in caplog.text
    hub = shutil.copytree(root / "out" / ADAPTER_DIR, tmp_path / "adapter")
    config = json.loads((hub / "adapter_config.json").read_text())
    (hub / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "someone/bert-tiny"}))
    assert not warn_if_base_is_local(hub)
    # the packaged MiniLM is a local folder that publish names by its Hub id: no warning for the default
    (hub / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(helpers.minilm_path())}))
    assert not warn_if_base_is_local(hub)
    # a legacy single-name id is not one publish keeps (it writes null): warned like a local folder
    (hub / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "gpt2"}))
    assert warn_if_base_is_local(hub)



def test_no_freeze_embeddings_with_lora_is_refused_not_ignored():
    """--use-lora --no-freeze-embeddings trained with the word embeddings frozen (PEFT trains only the
    adapters and the head) without a word, though the help says the flag trains them."""
    with pytest.raises(ValueError, match="--no-freeze-embeddings has no effect with --use-lora.*word_embeddings"):
        RewardTrainingArguments(output_dir="x", use_lora=True, freeze_embeddings=False)
    assert not RewardTrainingArguments(output_dir="x", freeze_embeddings=False).freeze_embeddings  # alone: fine

@pytest.mark.parametrize(("flags", "named"), [
    ({"lora_r": 8}, "--lora-r needs"),
    ({"lora_alpha": 16}, "--lora-alpha needs"),
    ({"lora_target_modules": ["query"]}, "--lora-target-modules needs"),
    ({"lora_dropout": 0.0}, "--lora-dropout needs"),
])
def test_lora_flags_without_use_lora_are_refused_by_name(flags, named):
    """--lora-r 8 --lora-target-modules query without --use-lora trained a full fine-tune without a
    word (only --keep-adapter was refused)."""
    with pytest.raises(ValueError, match=f"{named} --use-lora"):
        RewardTrainingArguments(output_dir="x", **flags)
    assert RewardTrainingArguments(output_dir="x", use_lora=True, **flags).use_lora  # with it: accepted


def test_lora_flags_without_use_lora_are_refused_on_the_command_line(tmp_path, capsys):
    from rewardkit.cli import main

    assert main(["train", "--data", str(tmp_path / "pairs.jsonl"), "--lora-r", "8", "--lora-target-modules", "query",
                 "--lora-dropout", "0.1", "--output-dir", str(tmp_path / "o")]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "--lora-r, --lora-dropout, --lora-target-modules need --use-lora" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_arguments_without_lora_can_be_copied(tmp_path):
    """`dataclasses.replace` (which transformers names as the way to copy TrainingArguments) re-runs
    __post_init__: the lora_dropout default filled in by the first one read as a LoRA flag given
    without --use-lora, and the copy was refused."""
    import dataclasses

    from rewardkit.training_args import RewardTrainingArguments

    args = RewardTrainingArguments(output_dir=str(tmp_path / "o"))
    copy = dataclasses.replace(args, learning_rate=1e-3)
    assert copy.learning_rate == 1e-3 and not copy.use_lora and copy.lora_dropout is None
