"""--precision: bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere; rewards in fp32."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import rewardkit.training_args as training_args
from rewardkit.fit import run_training
from rewardkit.training_args import DataArguments, RewardTrainingArguments
from tests import helpers


@pytest.fixture
def cpu_only(monkeypatch):
    """A machine without GPU whose CPU feature is whatever the test sets."""
    monkeypatch.setattr(training_args, "has_accelerator", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def with_feature(feature):
        monkeypatch.setattr(training_args, "cpu_bf16_feature", lambda: feature)

    return with_feature


def test_auto_picks_bf16_on_a_cpu_with_native_bf16(cpu_only):
    cpu_only("AVX512-BF16")
    args = RewardTrainingArguments(output_dir="x")
    assert args.bf16 and not args.fp16 and args.use_cpu  # transformers refuses bf16 on CPU without use_cpu
    assert args.precision_description == "bf16 autocast, fp32 weights (auto: AVX512-BF16)"


def test_auto_stays_fp32_where_bf16_would_be_emulated(cpu_only):
    cpu_only(None)
    args = RewardTrainingArguments(output_dir="x")
    assert not args.bf16 and not args.fp16
    assert args.precision_description == "fp32"


def test_explicit_choices_and_contradictions(cpu_only):
    cpu_only("AMX")
    assert not RewardTrainingArguments(output_dir="x", precision="fp32").bf16
    cpu_only(None)
    forced = RewardTrainingArguments(output_dir="x", precision="bf16")
    assert forced.bf16 and forced.precision_description == "bf16 autocast, fp32 weights"
    assert RewardTrainingArguments(output_dir="x", bf16=True).bf16  # the transformers flag still works
    with pytest.raises(ValueError, match="--precision fp32 contradicts"):
        RewardTrainingArguments(output_dir="x", precision="fp32", bf16=True)
    with pytest.raises(ValueError, match="--precision bf16 contradicts --fp16"):
        RewardTrainingArguments(output_dir="x", precision="bf16", fp16=True)
    with pytest.raises(ValueError, match="--precision must be one of"):
        RewardTrainingArguments(output_dir="x", precision="int8")


def test_an_explicit_false_wins_over_auto_and_contradicting_precision_is_refused(cpu_only):
    """bf16=False could not be told from the default, so auto turned bf16 on anyway on a CPU with
    AVX512-BF16 although the help says an explicit --bf16 wins."""
    cpu_only("AVX512-BF16")
    off = RewardTrainingArguments(output_dir="x", bf16=False)
    assert off.bf16 is False and off.fp16 is False and off.precision_description == "fp32"
    assert RewardTrainingArguments(output_dir="x", fp16=False).bf16  # not fp16 says nothing against bf16
    assert RewardTrainingArguments(output_dir="x", precision="bf16", fp16=False).bf16
    assert RewardTrainingArguments(output_dir="x", precision="fp32", bf16=False).precision_description == "fp32"
    with pytest.raises(ValueError, match="--precision bf16 contradicts --bf16 false"):
        RewardTrainingArguments(output_dir="x", precision="bf16", bf16=False)
    with pytest.raises(ValueError, match="--precision fp16 contradicts --fp16 false"):
        RewardTrainingArguments(output_dir="x", precision="fp16", fp16=False)


@pytest.mark.parametrize("given", [dict(precision="fp16"), dict(fp16=True), dict(precision="fp16", use_cpu=True)])
def test_fp16_is_refused_where_training_runs_on_the_cpu(cpu_only, given):
    """accelerate turns fp16 autocast off on CPU without a word: `--precision fp16` trained in fp32
    (and without split batches, 2x slower) while the summary and model card said "fp16 autocast"."""
    cpu_only("AVX512-BF16")
    with pytest.raises(ValueError, match="needs a GPU: on CPU accelerate ignores it"):
        RewardTrainingArguments(output_dir="x", **given)


@pytest.mark.parametrize(("flags", "yaml", "bf16"), [
    ([], "", True),  # auto on a CPU with AVX512-BF16
    (["--bf16", "false"], "", False),
    (["--bf16=False"], "", False),
    ([], "bf16: false\n", False),
    ([], "no_bf16: true\n", False),
    (["--bf16"], "", True),
    (["--bf16", "true", "--precision", "fp32"], None, None),  # refused
    (["--precision", "bf16", "--bf16", "false"], None, None),  # refused
])
def test_bf16_false_on_the_command_line_and_in_yaml_is_honoured(cpu_only, tmp_path, monkeypatch, capsys, flags,
                                                                 yaml, bf16):
    from rewardkit.cli import main

    cpu_only("AVX512-BF16")
    spec = tmp_path / "spec.yaml"
    spec.write_text("data: d.jsonl\n" + (yaml or ""))
    argv = ["--config", str(spec), *flags, "--output-dir", str(tmp_path / "o")]
    if bf16 is None:
        assert main(["train", *argv]) != 0 and "contradicts --bf16" in capsys.readouterr().err
        return
    _, train_args = helpers.train_cli_arguments(monkeypatch, argv)
    assert {"bf16": train_args.bf16, "fp16": train_args.fp16} == {"bf16": bf16, "fp16": False}


def test_rewards_stay_fp32_under_autocast():
    model = helpers.tiny_reward_model("bert")
    inputs = {"input_ids": torch.randint(5, 100, (3, 9))}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**inputs)
    assert output.rewards.dtype == torch.float32 and output.logits.dtype == torch.float32
    with torch.no_grad():
        exact = model(**inputs).rewards
    assert torch.allclose(output.rewards, exact, atol=0.05)  # bf16 backbone, fp32 head: close, not equal


def test_bf16_training_learns_and_saves_fp32_weights(tmp_path):
    base = helpers.save_tiny_backbone(tmp_path / "base")
    rows = [{"prompt": f"question {i}?", "chosen": "yes, gladly: here it is", "rejected": "no."} for i in range(48)]
    data = helpers.write_jsonl(tmp_path / "train.jsonl", rows)
    args = RewardTrainingArguments(output_dir=str(tmp_path / "out"), base_model=str(base), max_length=32,
                                   learning_rate=2e-3, per_device_train_batch_size=8, num_train_epochs=2,
                                   save_strategy="no", disable_tqdm=True, seed=0, reward_stats_samples=16,
                                   precision="bf16")
    result = run_training(DataArguments(data=str(data), eval_fraction=0.25), args)
    assert result.eval_metrics["eval_accuracy"] >= 0.9
    assert result.hyperparameters["precision"].startswith("bf16 autocast")
    weights = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    summary = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert summary["hyperparameters"]["precision"].startswith("bf16 autocast")


def test_cpu_bf16_training_computes_attention_in_fp32_for_the_run_only(tmp_path, tokenizer):
    from rewardkit.cpu_attention import NAME
    from rewardkit.fit import load_model

    base = helpers.save_tiny_backbone(tmp_path / "base")
    common = dict(output_dir=str(tmp_path / "out"), base_model=str(base), use_cpu=True)
    torch.manual_seed(0)  # the same fresh head in both
    fast = load_model(str(base), RewardTrainingArguments(**common, precision="bf16"), tokenizer)
    torch.manual_seed(0)
    plain = load_model(str(base), RewardTrainingArguments(**common, precision="fp32"), tokenizer)
    assert fast.backbone.config._attn_implementation == NAME
    assert plain.backbone.config._attn_implementation == "sdpa"
    batch = tokenizer(["a question", "another, longer question here"], ["yes", "no"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(fast(**batch).rewards, plain(**batch).rewards, atol=1e-6)  # fp32: same math
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.allclose(fast(**batch).rewards, plain(**batch).rewards, atol=0.05)
    fast.save_pretrained(tmp_path / "saved")
    assert NAME not in (tmp_path / "saved" / "config.json").read_text()


def test_continued_training_of_a_half_precision_reward_folder_loads_fp32_weights(tmp_path, tokenizer):
    """A reward model saved in bf16 (e.g. by a bf16 scorer) loads in its stored dtype by default in
    transformers 5; training it further must start from fp32 weights ("weights stay fp32")."""
    from rewardkit.fit import load_model

    model = helpers.tiny_reward_model("bert")
    model.backbone.to(torch.bfloat16)
    model.save_pretrained(tmp_path / "rm")
    args = RewardTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, precision="fp32")
    loaded = load_model(str(tmp_path / "rm"), args, tokenizer)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}


@pytest.mark.parametrize("compute_capability, expected", [((7, 5), None), ((8, 0), "cuda")])
def test_auto_on_cuda_picks_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, compute_capability, expected):
    """torch.cuda.is_bf16_supported() answers True on pre-Ampere GPUs (T4, V100) too, where bf16 is
    only emulated; auto must stay fp32 there. Simulated: no CUDA kernel runs."""
    from types import SimpleNamespace

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(major=compute_capability[0], minor=compute_capability[1]))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    assert training_args.native_bf16_device(use_cpu=False) == expected


@pytest.mark.parametrize("native, expected", [(True, "cuda"), (False, None)])
def test_auto_asks_the_gpu_for_native_bf16_not_emulated(monkeypatch, native, expected):
    """torch.cuda.is_bf16_supported() also says True on T4/V100, which only emulate bf16 (slower than
    fp32 there): auto must ask with including_emulation=False and stay fp32 on such a GPU."""
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return native or including_emulation  # an emulating GPU says True unless asked for native

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert training_args.native_bf16_device(use_cpu=False) == expected
    assert asked == {"including_emulation": False}


@pytest.mark.parametrize("major, expected", [(8, "cuda"), (7, None)])
def test_auto_on_torch_without_the_emulation_argument_reads_the_compute_capability(monkeypatch, major, expected):
    """torch < 2.3 has no including_emulation argument: compute capability 8 (Ampere) and later is native."""
    def old_is_bf16_supported():
        return True

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: type("Props", (), {"major": major})())
    monkeypatch.setattr(torch.version, "hip", None)
    assert training_args.native_bf16_device(use_cpu=False) == expected


def test_reward_statistics_of_a_bf16_run_are_those_of_the_saved_fp32_model(tmp_path):
    """reward_mean / reward_std are what the saved model gives its training responses when scored
    (fp32), not the bf16-autocast forward that training ran through (accelerate keeps its autocast
    wrapper on the model after training: the statistics came out ~1e-3 off on this tiny model)."""
    from rewardkit import RewardScorer

    base = helpers.save_tiny_backbone(tmp_path / "base")
    rows = [{"prompt": f"question {i}?", "chosen": f"yes, gladly: here is answer {i}", "rejected": f"no {i}."}
            for i in range(16)]
    data = helpers.write_jsonl(tmp_path / "train.jsonl", rows)
    args = RewardTrainingArguments(output_dir=str(tmp_path / "out"), base_model=str(base), max_length=32,
                                   learning_rate=2e-3, per_device_train_batch_size=8, max_steps=2,
                                   save_strategy="no", disable_tqdm=True, seed=0, precision="bf16")
    result = run_training(DataArguments(data=str(data)), args)
    scorer = RewardScorer(tmp_path / "out", device="cpu")
    raw = scorer.raw_rewards([row["prompt"] for row in rows] * 2,
                             [row["chosen"] for row in rows] + [row["rejected"] for row in rows])
    tolerance = 2e-5 * float(np.std(raw))  # fp32 rounding; the bf16 forward was 1e-4 to 4e-4 of a std off
    assert result.reward_mean == pytest.approx(float(np.mean(raw)), abs=tolerance)
    assert result.reward_std == pytest.approx(float(np.std(raw)), abs=tolerance)
