"""Save -> load through every public door, in a fresh interpreter with an empty HF_MODULES_CACHE."""

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers.dynamic_module_utils import get_imports

from tests import helpers

PROMPTS = ["What is the capital of Italy?", "Say hi", "Is the sun a star?"]
RESPONSES = ["Rome.", "Go away.", "Yes, the Sun is a G-type main-sequence star."]

LOAD_ALL_WAYS = """
import json, sys, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline
source = {source!r}
prompts, responses = {prompts!r}, {responses!r}
tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)  # transformers 5 reads config.json first
batch = tokenizer(prompts, responses, padding=True, return_tensors="pt")
results = {{}}
for name, cls in [("auto_model", AutoModel), ("auto_seq_cls", AutoModelForSequenceClassification)]:
    model, info = cls.from_pretrained(source, trust_remote_code=True, output_loading_info=True)
    with torch.no_grad():
        results[name] = model.eval()(**batch).logits[:, 0].tolist()
    results[name + "_missing"] = list(info["missing_keys"])
    results[name + "_unexpected"] = list(info["unexpected_keys"])
    results[name + "_module"] = type(model).__module__
pipe = pipeline("text-classification", model=source, trust_remote_code=True)
outputs = pipe([{{"text": p, "text_pair": r}} for p, r in zip(prompts, responses)])
results["pipeline"] = [o["score"] for o in outputs]
results["pipeline_labels"] = [o["label"] for o in outputs]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tokenizer):
    """A tiny model with a non-trivial head, saved with its tokenizer, and its own rewards."""
    torch.manual_seed(1)
    model = helpers.tiny_reward_model()
    with torch.no_grad():
        model.score.bias.fill_(-3.0)  # rewards well below 0: a sigmoid would show at once
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch = tokenizer(PROMPTS, RESPONSES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits[:, 0].tolist()
    return folder, expected


def _check_all_ways(results: dict, expected: list[float]) -> None:
    for name in ("auto_model", "auto_seq_cls", "pipeline"):
        assert results[name] == pytest.approx(expected, abs=1e-5), name
    for name in ("auto_model", "auto_seq_cls"):
        assert results[name + "_missing"] == [] and results[name + "_unexpected"] == []
        assert results[name + "_module"].startswith("transformers_modules"), "remote code was used"
    assert results["pipeline_labels"] == ["reward"] * len(expected)
    assert all(score < 0 for score in results["pipeline"])  # raw reward, no sigmoid


def test_saved_folder_holds_code_and_safetensors_only(saved_model):
    folder, _ = saved_model
    names = {p.name for p in Path(folder).iterdir()}
    assert {"config.json", "model.safetensors", "configuration_reward.py", "modeling_reward.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_reward.RewardConfig",
        "AutoModel": "modeling_reward.RewardModel",
        "AutoModelForSequenceClassification": "modeling_reward.RewardModel",
    }
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "reward"}


def test_fresh_process_loads_from_folder_all_three_ways(saved_model, tmp_path):
    folder, expected = saved_model
    code = LOAD_ALL_WAYS.format(source=str(folder), prompts=PROMPTS, responses=RESPONSES)
    _check_all_ways(helpers.run_fresh_python(code, tmp_path, without_rewardkit=True), expected)


def test_fresh_process_loads_by_repo_id_from_hf_cache(saved_model, tmp_path):
    folder, expected = saved_model
    cache = tmp_path / "hub_cache"
    helpers.place_in_hf_cache(Path(folder), cache, "rewardkit-test/tiny-reward")
    code = LOAD_ALL_WAYS.format(source="rewardkit-test/tiny-reward", prompts=PROMPTS, responses=RESPONSES)
    results = helpers.run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")},
                                       without_rewardkit=True)
    _check_all_ways(results, expected)


KEPT_FIELDS = ("alpha", "pooling", "reward_mean", "reward_std", "calibration_temperature", "trained_max_length",
               "trained_objective")
HUB_USER = """
import json, tempfile, torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, pipeline
repo, fields = {repo!r}, {fields!r}
prompts, responses = {prompts!r}, {responses!r}
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
batch = tokenizer(prompts, responses, padding=True, return_tensors="pt")
config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
results = {{"config": {{name: getattr(config, name) for name in fields}}}}
model = AutoModel.from_pretrained(repo, trust_remote_code=True, output_hidden_states=True).eval()
with torch.no_grad():
    output = model(**batch)
results["logits"], results["hidden_states"] = output.logits[:, 0].tolist(), len(output.hidden_states or ())
tupled = AutoModel.from_pretrained(repo, trust_remote_code=True, return_dict=False).eval()
with torch.no_grad():
    results["tuple"] = isinstance(tupled(**batch), tuple)
for dtype in ("auto", torch.bfloat16):
    loaded = AutoModel.from_pretrained(repo, trust_remote_code=True, dtype=dtype).eval()
    with torch.no_grad():
        logits = loaded(**batch).logits[:, 0].float().tolist()
    results[str(dtype)] = [str(loaded.backbone.dtype), str(loaded.score.weight.dtype), logits]
pipe = pipeline("text-classification", model=repo, trust_remote_code=True)
pairs = [{{"text": p, "text_pair": r}} for p, r in zip(prompts, responses)]
results["pipeline"] = [o["score"] for o in pipe(pairs, batch_size=2, truncation=True, function_to_apply="none")]
folder = tempfile.mkdtemp()
model.save_pretrained(folder)
again = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    results["again"] = again(**batch).logits[:, 0].tolist()
results["again_config"] = {{name: getattr(again.config, name) for name in fields}}
print(json.dumps(results))
"""


def test_a_hub_user_without_rewardkit_gets_what_transformers_models_give(tmp_path, tokenizer):
    """Loaded by repo id from the Hub cache in a fresh process where rewardkit cannot be imported:
    the config flags transformers' own models honour (`output_hidden_states`, `return_dict` given
    to from_pretrained) work, half precision keeps the head fp32, the pipeline takes pairs in
    batches, and a save of the loaded model keeps alpha, pooling, calibration and reward stats."""
    torch.manual_seed(1)
    fields = dict(alpha=2.0, reward_mean=-1.5, reward_std=0.25, calibration_temperature=0.75,
                  trained_max_length=64, trained_objective="pairwise")
    model = helpers.tiny_reward_model(**fields)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(**tokenizer(PROMPTS, RESPONSES, padding=True, return_tensors="pt")).logits[:, 0].tolist()
    helpers.place_in_hf_cache(tmp_path / "model", tmp_path / "hub_cache", "rewardkit-test/hub-user")
    code = HUB_USER.format(repo="rewardkit-test/hub-user", fields=KEPT_FIELDS, prompts=PROMPTS, responses=RESPONSES)
    results = helpers.run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "hub_cache"),
                                                        "HF_HOME": str(tmp_path / "home")}, without_rewardkit=True)
    stored = {**fields, "pooling": "cls"}
    assert results["config"] == stored and results["again_config"] == stored
    assert results["logits"] == pytest.approx(expected, abs=1e-5)
    assert results["hidden_states"] == 3  # embeddings + 2 layers; none came back before
    assert results["tuple"]  # a ModelOutput came back before
    assert results["auto"][:2] == ["torch.float32", "torch.float32"]
    assert results["auto"][2] == pytest.approx(expected, abs=1e-5)
    assert results["torch.bfloat16"][:2] == ["torch.bfloat16", "torch.float32"]
    assert results["torch.bfloat16"][2] == pytest.approx(expected, abs=0.05)
    assert results["pipeline"] == pytest.approx(expected, abs=1e-5)
    assert results["again"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("filename", ["configuration_reward.py", "modeling_reward.py"])
def test_hub_files_require_only_torch_and_transformers(filename):
    """transformers' own requirement check (the one `trust_remote_code` runs) must find nothing else."""
    imports = set(get_imports(helpers.REPO_ROOT / filename)) - set(sys.stdlib_module_names)
    assert imports <= {"torch", "transformers"}, imports
    source = (helpers.REPO_ROOT / filename).read_text()
    assert "import rewardkit" not in source and "from rewardkit" not in source


def test_a_calibrated_model_saves_again_and_keeps_its_temperature(tmp_path):
    """Users `save_pretrained` / `push_to_hub` a loaded model (or TRL saves one it fine-tunes).
    Stored as `temperature`, the calibration would be a generation setting: transformers 5 refuses
    to save such a model config and 4.x resets it to 1.0 on load."""
    from transformers import AutoConfig, AutoModel

    model = helpers.tiny_reward_model(calibration_temperature=0.5)
    model.save_pretrained(tmp_path / "first")
    again = AutoModel.from_pretrained(tmp_path / "first", trust_remote_code=True)
    assert again.config.calibration_temperature == 0.5
    again.save_pretrained(tmp_path / "second")  # raised "Some generation parameters are set" before
    saved = json.loads((tmp_path / "second" / "config.json").read_text())
    assert saved["calibration_temperature"] == 0.5 and "temperature" not in saved

    # a config.json written before the rename still loads calibrated, and saves cleanly
    config = json.loads((tmp_path / "first" / "config.json").read_text())
    config["temperature"] = config.pop("calibration_temperature")
    (tmp_path / "first" / "config.json").write_text(json.dumps(config))
    legacy = AutoConfig.from_pretrained(tmp_path / "first", trust_remote_code=True)
    assert legacy.calibration_temperature == 0.5
    legacy.save_pretrained(tmp_path / "third")
    resaved = json.loads((tmp_path / "third" / "config.json").read_text())
    assert resaved["calibration_temperature"] == 0.5 and "temperature" not in resaved


def test_a_model_with_resized_token_embeddings_saves_and_loads_again(tmp_path, tokenizer):
    """Adding special tokens (a chat template's, TRL's `setup_chat_format`) resizes the embeddings.
    transformers records the new size on the top-level config only; the backbone is built from
    `backbone_config` on load, so the saved model failed with a size mismatch."""
    from transformers import AutoModel

    model = helpers.tiny_reward_model()
    model.resize_token_embeddings(helpers.BERT_VOCAB + 8)
    assert model.config.backbone_config.vocab_size == helpers.BERT_VOCAB + 8
    model.save_pretrained(tmp_path)
    loaded, info = AutoModel.from_pretrained(tmp_path, trust_remote_code=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert loaded.get_input_embeddings().weight.shape[0] == helpers.BERT_VOCAB + 8
    batch = tokenizer(PROMPTS, RESPONSES, padding=True, return_tensors="pt")
    batch["input_ids"][:, 1] = helpers.BERT_VOCAB + 3  # a new token's id
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(**batch).logits, model(**batch).logits, atol=1e-6)


PIPELINE_ALPHA = """
import json
from transformers import pipeline
pairs = [{{"text": p, "text_pair": r}} for p, r in zip({prompts!r}, {responses!r})]
pipe = pipeline("text-classification", model={repo!r}, trust_remote_code=True)
results = {{"class": type(pipe).__name__, "plain": [o["score"] for o in pipe(pairs)],
            "alpha": [o["score"] for o in pipe(pairs, alpha=10, batch_size=2, function_to_apply="none")],
            "after": [o["score"] for o in pipe(pairs)]}}
built = pipeline("text-classification", model={repo!r}, trust_remote_code=True, alpha=3.0)
results["built"] = [o["score"] for o in built(pairs)]
results["refused"] = []
for bad in (0, -2.0, "10"):
    try:
        pipe(pairs, alpha=bad)
    except ValueError as error:
        results["refused"].append(str(error))
results["inferred"] = type(pipeline(model={repo!r}, trust_remote_code=True)).__name__
print(json.dumps(results))
"""


def test_the_pipeline_takes_alpha_per_call_and_refuses_bad_values(saved_model, tmp_path):
    """transformers' text-classification pipeline hands options it does not know to the tokenizer:
    `pipe(pair, alpha=10)` returned the alpha=1 score without a word. The pipeline a Hub user builds
    by repo id (no rewardkit) now scales by it, as `model(**x, alpha=10)` does, and refuses 0,
    negatives and text; `pipeline(model=repo)` finds the task offline too."""
    folder, expected = saved_model
    helpers.place_in_hf_cache(Path(folder), tmp_path / "hub_cache", "rewardkit-test/alpha")
    code = PIPELINE_ALPHA.format(repo="rewardkit-test/alpha", prompts=PROMPTS, responses=RESPONSES)
    results = helpers.run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "hub_cache"),
                                                        "HF_HOME": str(tmp_path / "home")}, without_rewardkit=True)
    assert results["class"] == "RewardPipeline" and results["inferred"] == "RewardPipeline"
    assert results["plain"] == pytest.approx(expected, abs=1e-5)
    assert results["alpha"] == pytest.approx([10 * e for e in expected], abs=1e-4)
    assert results["after"] == pytest.approx(expected, abs=1e-5)  # per call, not remembered
    assert results["built"] == pytest.approx([3 * e for e in expected], abs=1e-4)
    assert len(results["refused"]) == 3 and all("alpha must be a finite number > 0" in e for e in results["refused"])
