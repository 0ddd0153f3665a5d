"""Publishing: the folder built for the Hub, its card, fresh-process loads by repo id, and the upload
path with a fake HfApi (no network anywhere)."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from rewardkit import publishing
from rewardkit.errors import UserInputError
from rewardkit.model_card import PACKAGED_MINILM_ID, render_model_card, write_model_card
from rewardkit.publishing import PublishError, build_publish_folder, publish, upload_folder
from tests import helpers

REPO_ID = "rewardkit-test/tiny-reward"
EXPECTED_FILES = sorted([
    "README.md", "config.json", "configuration_reward.py", "modeling_reward.py", "model.safetensors",
    "tokenizer.json", "tokenizer_config.json",
])
# As `rewardkit evaluate --report-dir R` writes R/metrics.json (pairwise data).
EVALUATION = {
    "accuracy": 0.8125, "mean_margin": 0.4321, "ece": 0.0312, "brier": 0.171, "n": 64, "ties": 0,
    "data_name": "hh-rlhf-harmless-test",
    "length_bias": {"spearman_reward_length": 0.123, "longer_preferred_rate": 0.55, "chosen_shorter_accuracy": 0.7},
}
PROMPTS = ["What is the capital of Italy?", "Say hi"]
RESPONSES = ["Rome.", "Go away."]
FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789"


def _training_summary(base_model: str) -> dict:
    """The fields rewardkit.fit writes to training_summary.json."""
    return {
        "output_dir": "/home/someone/runs/rm", "objective": "pairwise", "base_model": base_model,
        "detected_layout": "pairwise (prompt, chosen, rejected)", "train_rows": 40, "eval_rows": 8,
        "epochs": 1.0, "steps": 5, "seconds": 3.2, "examples_per_second": 12.5, "train_loss": 0.61,
        "max_length": 128, "eval_metrics": {"eval_accuracy": 0.625, "eval_loss": 0.66},
        "reward_mean": -3.0, "reward_std": 0.5, "skipped": "no rows skipped", "truncation": "none",
        "hyperparameters": {"learning_rate": 5e-5, "per_device_train_batch_size": 8, "seed": 42},
        "hardware": "CPU (test)", "data": "/home/someone/data/train.jsonl", "data_split": None, "eval_data": None,
        "eval_split": None,
    }


def _save_trained_dir(folder: Path, tokenizer, *, seed: int = 1) -> Path:
    """A folder shaped like `rewardkit train --output-dir`, plus training leftovers that must not ship."""
    torch.manual_seed(seed)
    model = helpers.tiny_reward_model(reward_mean=-3.0, reward_std=0.5)
    with torch.no_grad():
        model.score.bias.fill_(-3.0)  # rewards well below 0: a sigmoid would show at once
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    summary = _training_summary(str(helpers.minilm_path()))  # fit.py records the packaged MiniLM's path
    (folder / "training_summary.json").write_text(json.dumps(summary))
    write_model_card(folder, training=summary)
    checkpoint = folder / "checkpoint-5"
    checkpoint.mkdir()
    (checkpoint / "optimizer.pt").write_bytes(b"not really")
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "pytorch_model.bin").write_bytes(b"a stale pickle beside the safetensors: never published")
    (folder / "events.out.tfevents.1").write_bytes(b"tensorboard")
    (folder / ".hidden").write_text("dotfile")
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return _save_trained_dir(tmp_path_factory.mktemp("trained"), tokenizer)


@pytest.fixture(scope="module")
def dry_run(model_dir, tmp_path_factory):
    """`publish --dry-run --out DIR`, verified in a fresh process."""
    out = tmp_path_factory.mktemp("publish") / "folder"
    return publish(model_dir, REPO_ID, dry_run=True, out=out, evaluation=EVALUATION, datasets=["Anthropic/hh-rlhf"])


@pytest.fixture(scope="module")
def expected_logits(model_dir, tokenizer) -> list[float]:
    from modeling_reward import RewardModel

    model = RewardModel.from_pretrained(model_dir).eval()
    batch = tokenizer(PROMPTS, RESPONSES, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()


class FakeApi:
    """Records HfApi calls; `upload_folder` also records which files the folder held at that moment."""

    def __init__(self, fail_with: Exception | None = None, existing_private: bool = True,
                 remote_files: tuple[str, ...] = ()):
        self.existing_private = existing_private  # what repo_info reports after create_repo
        self.remote_files = remote_files  # what the repo held before the upload
        self.calls: list[tuple[str, dict]] = []
        self.uploaded_files: list[str] | None = None
        self.fail_with = fail_with

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        if self.fail_with is not None:
            raise self.fail_with
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def repo_info(self, repo_id, **kwargs):
        self.calls.append(("repo_info", {"repo_id": repo_id, **kwargs}))
        return type("RepoInfo", (), {"private": self.existing_private})()

    def list_repo_files(self, repo_id, **kwargs):
        self.calls.append(("list_repo_files", {"repo_id": repo_id, **kwargs}))
        return list(self.remote_files) + list(self.uploaded_files or [])

    def create_commit(self, repo_id, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        self.uploaded_files = publishing.folder_files(kwargs["folder_path"])
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123"})()


# --------------------------------------------------------------------------------------------------
# 1. The folder and its card
# --------------------------------------------------------------------------------------------------


def test_dry_run_folder_holds_exactly_the_hub_files(dry_run, model_dir):
    assert dry_run.url is None and dry_run.verified and dry_run.repo_id == REPO_ID
    assert dry_run.files == EXPECTED_FILES == publishing.folder_files(dry_run.folder)
    config = json.loads((dry_run.folder / "config.json").read_text())
    assert config["auto_map"] == publishing.REQUIRED_AUTO_MAP
    assert config["model_type"] == "reward_model"
    for name in ("model.safetensors", "modeling_reward.py", "configuration_reward.py", "tokenizer.json"):
        assert (dry_run.folder / name).read_bytes() == (model_dir / name).read_bytes(), name
    # No local path of this machine travels to the Hub.
    assert str(helpers.minilm_path()) not in (dry_run.folder / "config.json").read_text()
    assert str(helpers.minilm_path()) not in (dry_run.folder / "README.md").read_text()
    assert not list(dry_run.folder.parent.glob(".folder*")), "no staging folder left behind"


def test_card_metadata_and_measured_results(dry_run):
    card = ModelCard.load(dry_run.folder / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.language == "en"
    assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
    assert "reward-model" in data.tags
    assert data.base_model == PACKAGED_MINILM_ID  # mapped from the packaged MiniLM's local path
    assert data.datasets == ["Anthropic/hh-rlhf"]
    measured = {result.metric_type: result.metric_value for result in data.eval_results}
    assert measured == {key: EVALUATION[key] for key in ("accuracy", "mean_margin", "ece", "brier")}
    assert {result.dataset_name for result in data.eval_results} == {"hh-rlhf-harmless-test"}
    text = card.text
    assert f'repo = "{REPO_ID}"' in text and f'model="{REPO_ID}"' in text
    assert "P(a ≻ b) = σ((r_a − r_b) / T)" in text  # what the numbers mean
    assert "alpha = 1" in text and "reward_std" in text and "Normalization is **off**" in text
    assert "0.8125" in text and "0.123" in text  # results table and length bias from the evaluation


@pytest.mark.parametrize("key", ["calibration_temperature", "temperature"])  # and the key before the rename
def test_card_explains_calibration_and_normalization_when_stored(model_dir, tmp_path, key):
    folder = _copy_model(model_dir, tmp_path / "calibrated")
    config = json.loads((folder / "config.json").read_text())
    config.update({key: 2.0, "normalize_rewards": True, "alpha": 0.5})
    (folder / "config.json").write_text(json.dumps(config))
    out = build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)
    text = (out / "README.md").read_text()
    assert "T = 2**" in text and "difference of 1 means P = 0.62" in text
    published = json.loads((out / "config.json").read_text())
    assert published["calibration_temperature"] == 2.0 and "temperature" not in published
    # transformers 4.x pipelines load a tokenizer for a custom model type only when the config names it
    assert published["tokenizer_class"] == json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert "alpha * (r − reward_mean) / reward_std" in text and "Normalization is **on**" in text
    assert "alpha * (r + 3) / 0.5" in text and "alpha = 0.5" in text


def test_card_of_a_checkpoint_says_it_is_one_and_names_its_training_data(model_dir, tmp_path, caplog):
    """A published `checkpoint-N/` (no training_summary.json) got the card of a model "saved outside
    `rewardkit train`, e.g. by TRL's RewardTrainer", and the log said the training section "will show
    '?'", which it did not. The card now says it is a checkpoint, of which step, and names the data
    the checkpoint records (training_data.json); a folder that is neither keeps the old sentence."""
    folder = _copy_model(model_dir, tmp_path / "checkpoint-3")
    (folder / "training_summary.json").unlink()
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3, "epoch": 0.5}))
    (folder / "training_data.json").write_text(json.dumps({"data": "/home/someone/data/train.jsonl", "data_split": None}))
    with caplog.at_level("WARNING", logger="rewardkit.publishing"):
        out = build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)
    card = " ".join((out / "README.md").read_text().split())
    assert "This is a training checkpoint (`checkpoint-3/`, saved at step 3), which holds no training record" in card
    assert "| Data | train.jsonl (local data) |" in card and "saved outside `rewardkit train`" not in card
    assert "is a training checkpoint (step 3)" in caplog.text and "'?'" not in caplog.text
    assert "/home/someone" not in card and not (out / "training_data.json").exists()
    for name in ("trainer_state.json", "training_data.json"):
        (folder / name).unlink()
    card = " ".join(build_publish_folder(folder, tmp_path / "out2", repo_id=REPO_ID).joinpath("README.md").read_text().split())
    assert "No training record (`training_summary.json`) came with this model (it was saved outside `rewardkit train`" in card


def test_card_reads_normalized_outputs_and_margins_in_their_units(model_dir, tmp_path):
    """A model that normalizes told Hub users to "set normalize_rewards=True at load time" (it was
    on already) and that "+1 is one standard deviation better" (it is +alpha); the results table
    called the raw-reward margin a "reward margin", next to a model output that is alpha-scaled."""
    folder = _copy_model(model_dir, tmp_path / "normalized")
    config = json.loads((folder / "config.json").read_text())
    config.update({"normalize_rewards": True, "alpha": 4.0})
    (folder / "config.json").write_text(json.dumps(config))
    out = build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID, evaluation=EVALUATION)
    text = " ".join((out / "README.md").read_text().split())  # the card wraps its lines
    assert "Normalization is **on**" in text and "Set `normalize_rewards=False` at load time to get `alpha * r`" in text
    assert "Set `normalize_rewards=True`" not in text
    assert "+4 is one standard deviation better" in text and "+1 is one" not in text
    assert "| Mean raw reward margin (r_chosen − r_rejected, before alpha and normalization) | 0.4321 |" in text
    plain = " ".join((build_publish_folder(model_dir, tmp_path / "plain", repo_id=REPO_ID) / "README.md").read_text().split())
    assert "Set `normalize_rewards=True` at load time" in plain and "+1 is one standard deviation better" in plain


def test_card_names_the_differences_that_matter_at_a_small_temperature(model_dir, tmp_path):
    """At T = 0.1 the card read "a difference of 1 means P = 1.00; a difference of 2, P = 1.00",
    which tells a user nothing about the differences they will see."""
    folder = _copy_model(model_dir, tmp_path / "sharp")
    config = json.loads((folder / "config.json").read_text())
    config["calibration_temperature"] = 0.1
    (folder / "config.json").write_text(json.dumps(config))
    text = " ".join((build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID) / "README.md").read_text().split())
    assert "a difference of 2, P = 1.00. At this T, P = 0.75 takes a difference of only 0.11 and P = 0.9 one of 0.22." in text
    plain = " ".join((build_publish_folder(model_dir, tmp_path / "plain", repo_id=REPO_ID) / "README.md").read_text().split())
    assert "At this T" not in plain  # T = 1: differences of 1 and 2 already read 0.73 and 0.88


def test_dry_run_without_out_keeps_a_temporary_folder(model_dir):
    result = publish(model_dir, REPO_ID, dry_run=True, verify=False)
    try:
        assert result.folder.is_dir() and result.files == EXPECTED_FILES and not result.verified
    finally:
        shutil.rmtree(result.folder.parent)


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def _run_card_blocks(blocks: list[str], cache: Path, tmp_path: Path) -> dict:
    """Run a card's Python blocks, each on its own, in a fresh interpreter reading the Hub cache `cache`."""
    code = (
        "import json\n"
        f"blocks = {blocks!r}\n"
        "for block in blocks:\n"
        "    exec(compile(block, '<model card>', 'exec'), {'__name__': '__main__'})  # each block on its own\n"
        "print(json.dumps({'ran': len(blocks)}))\n"
    )
    return helpers.run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})


def test_card_python_blocks_run_by_repo_id_from_hf_cache(dry_run, tmp_path):
    """Every Python block of the card runs as printed, the pipeline's per-call `alpha=` included (the
    card named `model(**inputs, alpha=10)` alone, though the pipeline takes it too)."""
    blocks = _python_blocks((dry_run.folder / "README.md").read_text())
    assert len(blocks) >= 2 and all(REPO_ID in block for block in blocks)
    assert 'print(reward_pipe(pair, truncation="only_first", max_length=128, alpha=10))' in blocks[1]
    cache = tmp_path / "hub_cache"
    helpers.place_in_hf_cache(dry_run.folder, cache, REPO_ID)
    assert _run_card_blocks(blocks, cache, tmp_path) == {"ran": len(blocks)}


def test_card_of_a_branch_loads_that_branch(model_dir, tmp_path):
    """`publish --revision v1` uploads to the branch v1; the card there must load v1: a plain
    `from_pretrained(repo)` loads main, which may not hold this model at all (here: nothing)."""
    folder = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID, revision="v1")
    card = (folder / "README.md").read_text()
    blocks = _python_blocks(card)
    assert len(blocks) >= 2 and all('revision="v1"' in block or "revision=revision" in block for block in blocks)
    assert 'snapshot_download("rewardkit-test/tiny-reward", revision="v1")' in card  # the rewardkit block
    cache = tmp_path / "hub_cache"
    helpers.place_in_hf_cache(folder, cache, REPO_ID)
    refs = cache / ("models--" + REPO_ID.replace("/", "--")) / "refs"
    (refs / "main").rename(refs / "v1")  # the model is on the branch only
    assert _run_card_blocks(blocks, cache, tmp_path) == {"ran": len(blocks)}
    main_card = (build_publish_folder(model_dir, tmp_path / "main", repo_id=REPO_ID, revision="main") / "README.md").read_text()
    assert "revision" not in main_card  # main is what from_pretrained loads anyway


def test_pipeline_by_repo_id_returns_the_raw_reward(dry_run, expected_logits, tmp_path):
    cache = tmp_path / "hub_cache"
    helpers.place_in_hf_cache(dry_run.folder, cache, REPO_ID)
    code = f"""
    import json, torch
    from transformers import AutoModel, AutoTokenizer, pipeline
    pipe = pipeline("text-classification", model={REPO_ID!r}, trust_remote_code=True)
    outputs = pipe([{{"text": p, "text_pair": r}} for p, r in zip({PROMPTS!r}, {RESPONSES!r})])
    tokenizer = AutoTokenizer.from_pretrained({REPO_ID!r}, trust_remote_code=True)
    model = AutoModel.from_pretrained({REPO_ID!r}, trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**tokenizer({PROMPTS!r}, {RESPONSES!r}, padding=True, return_tensors="pt")).logits[:, 0]
    print(json.dumps({{"scores": [o["score"] for o in outputs], "labels": [o["label"] for o in outputs],
                       "logits": logits.tolist(), "module": type(model).__module__}}))
    """
    result = helpers.run_fresh_python(code, tmp_path, {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")})
    assert result["labels"] == ["reward", "reward"]
    assert result["scores"] == pytest.approx(result["logits"], abs=1e-5)
    assert result["scores"] == pytest.approx(expected_logits, abs=1e-5)
    assert all(score < 0 for score in result["scores"])  # raw reward, no sigmoid
    assert result["module"].startswith("transformers_modules")


def test_sharded_weights_are_published_with_their_index(tokenizer, tmp_path):
    model_dir = tmp_path / "sharded"
    helpers.tiny_reward_model().save_pretrained(model_dir, max_shard_size="1MB")
    tokenizer.save_pretrained(model_dir)
    folder = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    names = publishing.folder_files(folder)
    shards = [n for n in names if re.fullmatch(r"model-\d+-of-\d+\.safetensors", n)]
    assert len(shards) > 1 and "model.safetensors.index.json" in names and "model.safetensors" not in names
    assert set(names) - set(shards) == set(EXPECTED_FILES) - {"model.safetensors"} | {"model.safetensors.index.json"}


def test_an_unsharded_save_over_a_sharded_one_publishes_its_weights_not_the_stale_index(tokenizer, tmp_path, caplog):
    """transformers' unsharded save deletes the old shards but leaves their index; publish refused
    that folder with "names shards that are not there", and saving again did not help."""
    model_dir = tmp_path / "resaved"
    model = helpers.tiny_reward_model()
    model.save_pretrained(model_dir, max_shard_size="50KB")
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert (model_dir / "model.safetensors.index.json").is_file()  # what transformers leaves
    with caplog.at_level(logging.WARNING, logger="rewardkit.publishing"):
        folder = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    assert publishing.folder_files(folder) == EXPECTED_FILES
    assert "publishing model.safetensors only" in caplog.text


def test_a_sharded_save_over_an_unsharded_one_is_refused_naming_both(tokenizer, tmp_path):
    """The reverse order leaves the old model.safetensors beside the new shards' complete index, and
    from_pretrained loads the single file: publishing it (or the shards) would be a guess at which
    set of weights is the model."""
    model_dir = tmp_path / "resharded"
    model = helpers.tiny_reward_model()
    model.save_pretrained(model_dir)
    model.save_pretrained(model_dir, max_shard_size="50KB")
    tokenizer.save_pretrained(model_dir)
    assert (model_dir / "model.safetensors").is_file()  # what transformers leaves
    with pytest.raises(UserInputError, match="two sets of weights.*is the newer.*loads model.safetensors"):
        build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)


# --------------------------------------------------------------------------------------------------
# 2. Upload path (fake api, no network)
# --------------------------------------------------------------------------------------------------


def test_upload_creates_repo_then_one_commit_with_exactly_the_built_files(model_dir, dry_run):
    api = FakeApi()
    result = publish(model_dir, REPO_ID, private=True, commit_message="first", evaluation=EVALUATION,
                     datasets=["Anthropic/hh-rlhf"], api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "repo_info", "upload_folder", "list_repo_files"]
    create = api.calls[0][1]
    assert create["repo_id"] == REPO_ID and create["exist_ok"] is True and create["private"] is True
    assert create.get("repo_type", "model") == "model"
    upload = api.calls[2][1]
    assert upload["repo_id"] == REPO_ID and upload["commit_message"] == "first" and upload["revision"] is None
    assert api.uploaded_files == EXPECTED_FILES == result.files
    assert result.url == f"https://huggingface.co/{REPO_ID}/commit/abc123" and result.verified
    assert result.folder is None and not Path(upload["folder_path"]).exists(), "temporary folder removed"


def test_without_private_a_new_repo_gets_the_owners_default_visibility(dry_run):
    """private=False would make the repo public even in an organization that defaults to private."""
    api = FakeApi()
    upload_folder(dry_run.folder, REPO_ID, api=api)
    assert api.calls[0][1]["private"] is None
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder", "list_repo_files"]


def test_weights_an_earlier_upload_left_are_deleted_after_the_upload(dry_run):
    """Old shards, pickles and adapters would be served beside the verified weights. They are
    deleted in a commit after the upload succeeded; the files just uploaded and other files stay."""
    earlier = ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "adapter/adapter_model.safetensors", "notes.txt", ".gitattributes")
    api = FakeApi(remote_files=earlier)
    upload_folder(dry_run.folder, REPO_ID, api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder", "list_repo_files", "create_commit"]
    deleted = [op.path_in_repo for op in api.calls[-1][1]["operations"]]
    assert deleted == ["adapter/adapter_model.safetensors", "model-00001-of-00002.safetensors",
                       "model.safetensors.index.json", "pytorch_model.bin"]
    assert publishing.stale_files(["model.safetensors", "config.json"], ["model.safetensors", "config.json"]) == []


def test_a_failed_upload_deletes_nothing(dry_run):
    api = FakeApi(fail_with=_FakeHubError("500", 500), remote_files=("pytorch_model.bin",))
    with pytest.raises(PublishError):
        upload_folder(dry_run.folder, REPO_ID, api=api)
    assert "create_commit" not in [name for name, _ in api.calls]


def test_private_upload_to_an_existing_public_repo_is_refused(dry_run):
    api = FakeApi(existing_private=False)
    with pytest.raises(PublishError, match="already exists and is public"):
        upload_folder(dry_run.folder, REPO_ID, private=True, api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "repo_info"]  # nothing uploaded


def test_offline_or_tokenless_publish_fails_before_building(model_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set"):
        publish(model_dir, REPO_ID, out=tmp_path / "out")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(PublishError, match="No Hugging Face token"):
        publish(model_dir, REPO_ID, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_upload_to_a_branch_creates_it_first(dry_run):
    api = FakeApi()
    url = upload_folder(dry_run.folder, REPO_ID, revision="v1", api=api)
    assert [name for name, _ in api.calls] == ["create_repo", "create_branch", "upload_folder", "list_repo_files"]
    assert api.calls[3][1]["revision"] == "v1"  # stale files are looked up on the branch uploaded to
    assert api.calls[1][1]["branch"] == "v1" and api.calls[1][1]["exist_ok"] is True
    assert api.calls[2][1]["revision"] == "v1" and url.endswith("/commit/abc123")


def _tamper_weights(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["score.bias"] = tensors["score.bias"] + 1.0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_mismatching_folder_is_refused_before_any_api_call(model_dir, tmp_path, monkeypatch):
    real_build = publishing.build_publish_folder

    def build_then_tamper(*args, **kwargs):
        folder = real_build(*args, **kwargs)
        _tamper_weights(folder)  # e.g. a different model swapped in between build and upload
        return folder

    monkeypatch.setattr(publishing, "build_publish_folder", build_then_tamper)
    api = FakeApi()
    out = tmp_path / "refused"
    with pytest.raises(PublishError, match="scores differently"):
        publish(model_dir, REPO_ID, api=api, out=out)
    assert api.calls == []
    assert not out.exists(), "a folder that failed verification is not left looking complete"


@pytest.mark.parametrize(("loaded", "problem"), [
    ({"missing_keys": ["score.weight"], "unexpected_keys": [], "module": "transformers_modules.x"}, "missing keys"),
    ({"missing_keys": [], "unexpected_keys": ["head.extra"], "module": "transformers_modules.x"}, "unexpected keys"),
    ({"missing_keys": [], "unexpected_keys": [], "module": "modeling_reward"}, "not from the folder's remote code"),
])
def test_loads_with_key_problems_or_without_remote_code_are_refused(loaded, problem):
    with pytest.raises(PublishError, match=problem):
        publishing._check_loaded(loaded, Path("folder"))


class _FakeResponse:
    def __init__(self, status_code: int):
        self.status_code = status_code


class _FakeHubError(Exception):
    def __init__(self, message: str, status_code: int):
        super().__init__(message)
        self.response = _FakeResponse(status_code)


@pytest.mark.parametrize(("error", "advice"), [
    (_FakeHubError(f"401 Unauthorized: invalid token {FAKE_TOKEN} (Bearer {FAKE_TOKEN})", 401), ["hf auth login", "HF_TOKEN"]),
    (_FakeHubError(f"403 Forbidden for token={FAKE_TOKEN}", 403), ["write access", "HF_TOKEN"]),
    (ConnectionError(f"Max retries exceeded; headers={{'authorization': 'Bearer {FAKE_TOKEN}'}}"), ["network", "hf auth login"]),
])
def test_hub_errors_become_publish_errors_without_the_token(dry_run, error, advice):
    api = FakeApi(fail_with=error)
    with pytest.raises(PublishError) as caught:
        upload_folder(dry_run.folder, REPO_ID, token=FAKE_TOKEN, api=api)
    message = str(caught.value)
    assert FAKE_TOKEN not in message and FAKE_TOKEN not in repr(caught.value)
    assert all(words in message for words in advice), message
    assert "\n" not in message  # one paragraph
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # traceback cannot show it
    assert [name for name, _ in api.calls] == ["create_repo"]


def test_token_from_environment_is_scrubbed_too(dry_run, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "plain-secret-value-42")
    api = FakeApi(fail_with=_FakeHubError("401: token plain-secret-value-42 is invalid", 401))
    with pytest.raises(PublishError) as caught:
        upload_folder(dry_run.folder, REPO_ID, api=api)
    assert "plain-secret-value-42" not in str(caught.value) and "hf auth login" in str(caught.value)


# --------------------------------------------------------------------------------------------------
# 3. Refusals and safety
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["no-owner", "a/b/c", "owner/bad--name", "owner/-dash", "owner/", "/name", "own er/x"])
def test_invalid_repo_ids_are_refused_before_any_work(bad, model_dir, tmp_path):
    api = FakeApi()
    with pytest.raises(ValueError, match="repo id"):
        publish(model_dir, bad, api=api, out=tmp_path / "out")
    assert api.calls == [] and not (tmp_path / "out").exists()


FORBIDDEN_IN_HUB_CODE = ["subprocess", "socket", "requests", "urllib", "eval(", "exec(", "open(", ".write(", "os.system"]


@pytest.mark.parametrize("filename", publishing.CODE_FILES)
def test_hub_code_files_hold_no_network_process_exec_or_file_writing_code(filename, dry_run):
    for source in (helpers.REPO_ROOT / filename, dry_run.folder / filename):
        text = source.read_text()
        found = [word for word in FORBIDDEN_IN_HUB_CODE if word in text]
        assert not found, f"{source}: {found}"


def _copy_model(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def test_refuses_pickle_weights_only(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    torch.save({"score.bias": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle weights only"):
        build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)
    assert not (tmp_path / "out").exists()


def test_refuses_a_folder_holding_only_pytorch_model_bin(tmp_path):
    folder = tmp_path / "only_bin"
    folder.mkdir()
    torch.save({"score.bias": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle weights only.*pytorch_model.bin"):
        build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)


def test_refuses_missing_code_files(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "nocode")
    (folder / "modeling_reward.py").unlink()
    with pytest.raises(ValueError, match="modeling_reward.py"):
        build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)


def test_refuses_models_that_are_not_reward_models(minilm_path, tmp_path):
    with pytest.raises(ValueError, match="not a rewardkit reward model"):
        build_publish_folder(minilm_path, tmp_path / "out", repo_id=REPO_ID)


def test_refuses_config_without_full_auto_map(model_dir, tmp_path):
    folder = _copy_model(model_dir, tmp_path / "noautomap")
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]["AutoModel"]  # what register_for_auto_class alone would leave
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="auto_map.*AutoModel"):
        build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID)


def test_crash_while_building_leaves_no_folder(model_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_copy = shutil.copyfile

    def copy_then_crash(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(publishing.shutil, "copyfile", copy_then_crash)
    with pytest.raises(OSError, match="disk full"):
        build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    assert list(tmp_path.iterdir()) == [], "neither the folder nor its staging copy is left"


def test_rebuild_replaces_an_earlier_build_but_never_other_folders(model_dir, tmp_path):
    out = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    (out / "README.md").write_text("stale")
    build_publish_folder(model_dir, out, repo_id="someone/else")
    assert 'repo = "someone/else"' in (out / "README.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ValueError, match="outside the model folder"):
        build_publish_folder(model_dir, model_dir / "publish", repo_id=REPO_ID)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="other files"):
        build_publish_folder(model_dir, other, repo_id=REPO_ID)
    assert (other / "todo.txt").read_text() == "mine"


def test_card_says_when_held_out_rows_were_training_rows_and_keeps_them_out_of_model_index():
    """Held-out figures measured partly on training rows were published as a held-out split, and
    as model-index results a Hub reader takes for an independent check."""
    from rewardkit.model_card import render_model_card

    summary = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    clean = render_model_card({"alpha": 1.0}, summary)
    assert "held-out split of the training data (n=8) |" in clean and "model-index" in clean
    card = render_model_card({"alpha": 1.0}, {**summary, "eval_overlap": 8})
    assert ("held-out split of the training data (n=8; 8 of them also in the training data: not an independent "
            "check)") in card
    assert "model-index" not in card


def test_card_names_a_held_out_file_as_a_file(tmp_path):
    """Rows of a separate --eval-data file were called a "held-out split" (of what?); the summary
    now records the file, and the card names it as it names local data: by its file name only. A
    Hub dataset was a "held-out file" named like the training data, without its split, and a
    summary that predates the record was said to hold a split of the training data."""
    from rewardkit.model_card import render_model_card

    held = tmp_path / "private" / "dev.jsonl"
    held.parent.mkdir()
    held.write_text("{}\n")
    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "eval_data": str(held)}
    card = render_model_card({"alpha": 1.0}, summary)
    assert "held-out file dev.jsonl, local data (n=8) |" in card and "private" not in card
    # a Hub dataset (or a folder) is no file, and its --eval-split is what keeps it apart from training's
    hub = render_model_card({"alpha": 1.0}, {**summary, "eval_data": "Anthropic/hh-rlhf", "eval_split": "test"})
    assert "held-out data Anthropic/hh-rlhf, split test (n=8) |" in hub
    # a summary from before eval_data was recorded: maybe a file, maybe a split; the card claims neither
    old = {key: value for key, value in summary.items() if key not in ("data", "data_split", "eval_data", "eval_split")}
    assert "| held-out data (n=8) |" in render_model_card({"alpha": 1.0}, old)


def test_card_says_when_training_scored_its_held_out_figures_in_autocast():
    """The training summary said its held-out figures were scored in bf16 autocast and that an fp32
    `rewardkit evaluate` can differ by a few examples; the card gave them bare (HH-RLHF dev, 3 steps:
    card 0.4647, fp32 evaluate 0.4551)."""
    from rewardkit.model_card import render_model_card

    summary = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    bf16 = {**summary, "hyperparameters": {**summary["hyperparameters"],
                                           "precision": "bf16 autocast, fp32 weights (auto: AVX512-BF16)"}}
    assert ("| 0.625 | held-out split of the training data (n=8; scored in bf16 autocast during training: fp32 "
            "scoring can differ by a few examples) |") in render_model_card({"alpha": 1.0}, bf16)
    fp32 = {**summary, "hyperparameters": {**summary["hyperparameters"], "precision": "fp32"}}
    for plain in (summary, fp32):
        assert "| 0.625 | held-out split of the training data (n=8) |" in render_model_card({"alpha": 1.0}, plain)


def test_card_counts_ranked_results_in_groups_and_within_group_pairs():
    """A ranked model's card gave "Pairwise accuracy over all within-group pairs ... (n=8)" for 8
    groups holding 52 pairs (the report said "Groups 8, Pairs 52"): read as 8 pairs."""
    from rewardkit.model_card import render_model_card

    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "ranking",
               "eval_metrics": {"eval_top1_accuracy": 0.75, "eval_pairwise_accuracy": 0.8, "eval_loss": 0.5}}
    assert "| 0.8 | held-out split of the training data (n=8 ranked groups) |" in render_model_card({"alpha": 1.0}, summary)
    evaluation = {"objective": "ranking", "n": 8, "n_groups": 8, "n_pairs": 52, "pairwise_accuracy": 0.8,
                  "top1_accuracy": 0.75, "kendall_tau": 0.5, "data": "/home/someone/data/dev.jsonl"}
    card = render_model_card({"alpha": 1.0}, summary, evaluation)
    assert "| 0.8 | dev.jsonl (local data, n=8 ranked groups, 52 within-group pairs) |" in card
    assert "n=8)" not in card


def test_card_training_time_keeps_short_runs_readable():
    """A 0.4 s run showed as "Training time | 0 s"."""
    from rewardkit.model_card import _training_time

    assert [_training_time(x) for x in (0.04, 0.4, 9.94, 95.4, None, "?")] == ["<0.1 s", "0.4 s", "9.9 s", "95 s", None, None]


def test_card_training_time_says_what_of_it_was_held_out_evaluation():
    """The speed is of training alone (the summary's "6.2 s (1.5 s of it held-out evaluation): 2.55
    pairs/s of training"), but the card showed "6.2 s (2.55 pairs/s)": 12 pairs in 6.2 s is 1.94/s."""
    from rewardkit.model_card import render_model_card

    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "seconds": 6.2, "eval_seconds": 1.5,
               "examples_per_second": 12 / 4.7}
    card = render_model_card({"alpha": 1.0}, summary)
    assert "| Training time | 6.2 s (1.5 s of it held-out evaluation; 2.55 pairs/s of training) |" in card
    plain = render_model_card({"alpha": 1.0}, {**summary, "eval_seconds": 0.0})
    assert "| Training time | 6.2 s (2.55 pairs/s) |" in plain


def test_card_of_an_mse_model_reads_its_reward_as_a_predicted_annotation():
    """An mse model's card said its reward's absolute value meant nothing and read σ(r_a − r_b) at
    T = 1 as P(a ≻ b): for a model trained on scores the reward is a predicted annotation, and a
    difference is a probability only after --calibrate."""
    from rewardkit.model_card import render_model_card

    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "mse",
               "eval_metrics": {"eval_rmse": 0.4, "eval_loss": 0.2}, "target_mean": 5.5, "target_std": 2.0}
    card = render_model_card({"alpha": 1.0}, summary)
    assert "predict the annotated\n  reward on its own scale** (training targets: mean 5.5, standard deviation 2)" in card
    assert "**no preference probability**" in card and "no meaning of its own" not in card
    assert "P(first response preferred)" not in card and "print(raw)" in card
    assert "scorer.compare(" not in card  # σ(r_a − r_b) at T = 1 again, from rewardkit's example
    assert "some prompts simply get higher rewards" not in card
    calibrated = render_model_card({"alpha": 1.0, "calibration_temperature": 2.0}, summary)
    assert "T = 2**" in calibrated and "P(first response preferred)" in calibrated and "scorer.compare(" in calibrated
    pairwise = render_model_card({"alpha": 1.0}, _training_summary("sentence-transformers/all-MiniLM-L6-v2"))
    assert "no meaning of its own" in pairwise and "P(first response preferred)" in pairwise
    # Without training_summary.json the objective comes from config.json's trained_objective (it read
    # every such model as pairwise); an older config without it still reads as pairwise.
    unrecorded = render_model_card({"alpha": 1.0, "trained_objective": "mse"}, None)
    assert "**no preference probability**" in unrecorded and "no meaning of its own" not in unrecorded
    assert "no meaning of its own" in render_model_card({"alpha": 1.0}, None)


def test_card_shows_prompts_in_the_form_the_model_was_trained_on():
    """A model trained on HH-RLHF transcripts reads "\\n\\nHuman: q\\n\\nAssistant:" prompts, one trained
    on message lists their "User: q\\nAssistant:" rendering; the card showed every model a bare question
    (`prompt = "What is the capital of Japan?"`) and said nothing of the form."""
    import ast

    from rewardkit.model_card import render_model_card

    def card_for(layout):
        return render_model_card({"alpha": 1.0}, {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"),
                                                  "detected_layout": layout})

    hh = card_for("pairwise (implicit prompt, HH-RLHF transcripts)")
    assert 'prompt = "\\n\\nHuman: What is the capital of Japan?\\n\\nAssistant:"' in hh
    assert 'scorer.score(["\\n\\nHuman: What is 2 + 2?\\n\\nAssistant:"], ["4"])' in hh
    assert "trained on HH-RLHF transcripts" in hh
    for block in re.findall(r"```python\n(.*?)```", hh, flags=re.S):
        ast.parse(block)  # the examples stay valid Python
    conversations = card_for("pairwise (implicit prompt, conversational messages)")
    assert "`User:`" in conversations and "render_conversation" in conversations
    # implicit-prompt conversations trained on "User: q\nAssistant:" prompts, and the examples showed a bare question
    assert 'prompt = "User: What is the capital of Japan?\\nAssistant:"' in conversations
    assert 'scorer.compare("User: What is 2 + 2?\\nAssistant:", "4", "5")' in conversations
    explicit = card_for("pairwise (conversational messages, prompt/chosen/rejected)")
    assert "render_conversation" in explicit and 'prompt = "What is the capital of Japan?"' in explicit
    plain = card_for("pairwise (prompt/chosen/rejected)")
    assert 'prompt = "What is the capital of Japan?"' in plain and "trained on" not in plain.split("## Usage")[1][:300]


def test_a_base_model_loaded_by_a_bare_hub_id_is_named_on_the_card(tmp_path, monkeypatch):
    """`--base-model gpt2` (an id without owner) was left out of the card's `base_model` metadata:
    after training, "gpt2" cannot be told from a relative folder, so training records the id."""
    from rewardkit.fit import base_model_hub_id

    monkeypatch.chdir(tmp_path)
    assert base_model_hub_id("bert-base-uncased") == "bert-base-uncased"  # no such folder: loaded from the Hub
    assert base_model_hub_id("org/name") == "org/name"
    (tmp_path / "my-backbone").mkdir()
    assert base_model_hub_id("my-backbone") is None  # a local folder is no Hub id
    assert base_model_hub_id("./elsewhere") is None
    snapshot = tmp_path / "hub" / "models--org--name" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    assert base_model_hub_id(str(snapshot)) == "org/name"
    assert base_model_hub_id(str(helpers.minilm_path())) == PACKAGED_MINILM_ID

    summary = {**_training_summary("bert-base-uncased"), "base_model_id": "bert-base-uncased"}
    config = helpers.tiny_reward_model().config.to_dict()
    card = ModelCard(render_model_card(config, summary, repo_id=REPO_ID))
    assert card.data.base_model == "bert-base-uncased"
    assert "`bert-base-uncased`" in card.text
    older = _training_summary("bert-base-uncased")  # a summary written before base_model_id: as before
    assert ModelCard(render_model_card(config, older, repo_id=REPO_ID)).data.base_model is None


def test_card_license_is_the_given_or_the_base_models_never_assumed(tmp_path, caplog):
    """Every card said `license: apache-2.0`, a Llama or GPT-2 fine-tune's too, whose weights stay
    under their base model's license; and `rewardkit publish` had no flag to say otherwise."""
    from rewardkit.cli import make_parser
    from rewardkit.model_card import render_model_card

    config = helpers.tiny_reward_model().config.to_dict()
    minilm = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    llama = {**_training_summary("meta-llama/Llama-3.2-1B"), "base_model_id": "meta-llama/Llama-3.2-1B"}
    assert ModelCard(render_model_card(config, minilm, repo_id=REPO_ID)).data.license == "apache-2.0"
    assert ModelCard(render_model_card(config, llama, repo_id=REPO_ID)).data.license is None
    assert ModelCard(render_model_card(config, llama, repo_id=REPO_ID, license="llama3.2")).data.license == "llama3.2"
    args = make_parser().parse_args(["publish", "--model", "m", "--repo-id", REPO_ID, "--license", "mit"])
    assert args.license == "mit"
    with caplog.at_level(logging.WARNING, logger="rewardkit.publishing"):
        publishing._render_card(tmp_path, config, repo_id=REPO_ID, evaluation=None, datasets=None, license=None)
    assert "--license" in caplog.text  # no summary, no known base model: the card states no license, and says so


def test_card_language_is_the_given_or_the_base_models_never_assumed(model_dir, tmp_path):
    """Every card said `language: en` (the Hub filters models by it), a fine-tune of a multilingual
    backbone on German data too, and `rewardkit publish` had no flag to say otherwise."""
    from rewardkit.cli import main
    from rewardkit.model_card import render_model_card

    config = helpers.tiny_reward_model().config.to_dict()
    minilm = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    xlmr = {**_training_summary("FacebookAI/xlm-roberta-base"), "base_model_id": "FacebookAI/xlm-roberta-base"}
    assert ModelCard(render_model_card(config, minilm, repo_id=REPO_ID)).data.language == "en"
    assert ModelCard(render_model_card(config, xlmr, repo_id=REPO_ID)).data.language is None
    assert ModelCard(render_model_card(config, xlmr, repo_id=REPO_ID, language=["de"])).data.language == ["de"]
    assert main(["publish", "--model", str(model_dir), "--repo-id", REPO_ID, "--language", "de", "--language", "fr",
                 "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert ModelCard.load(tmp_path / "out" / "README.md").data.language == ["de", "fr"]


def test_card_never_tells_readers_to_pip_install_rewardkit():
    """The card's rewardkit snippets began with `pip install rewardkit`: no such package on PyPI,
    so a Hub reader's install failed ("No matching distribution found for rewardkit")."""
    from rewardkit.model_card import render_model_card

    card = render_model_card({"alpha": 1.0}, _training_summary(str(helpers.minilm_path())), adapter=True)
    assert "pip install rewardkit" not in card
    assert "install it from its repository" in card and "`pip install peft`" in card


def test_card_of_a_sharply_calibrated_mse_model_names_the_differences_that_matter():
    """An mse model calibrated to T = 0.09 read "a reward difference of 1 means P = 1.00" and no more:
    the pairwise card's note on the differences that give P = 0.75 and 0.9 was missing for it."""
    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "mse"}
    card = " ".join(render_model_card({"alpha": 1.0, "calibration_temperature": 0.1}, summary).split())
    assert "a reward difference of 1 means P = 1.00. At this T, P = 0.75 takes a difference of only 0.11" in card
    assert "At this T" not in render_model_card({"alpha": 1.0, "calibration_temperature": 2.0}, summary)


def test_card_of_an_uncalibrated_mse_model_marks_its_t_1_calibration_figures_and_leaves_them_out_of_model_index():
    """The card of an mse model without a fitted T says σ(r_a − r_b) is no preference probability, yet its
    table and model-index stated "Expected calibration error of P(chosen ≻ rejected)" and Brier at T = 1
    as the model's: they are marked in the table and left out of model-index (accuracy and margin kept)."""
    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "mse"}
    evaluation = {**EVALUATION, "objective": "pairwise", "temperature": 1.0}
    card = render_model_card({"alpha": 1.0}, summary, evaluation)
    data = ModelCard(card).data.to_dict()
    types = {m["type"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert types == {"accuracy", "mean_margin"}
    body = " ".join(card.split("---", 2)[2].split())
    assert "no preference probability" in body
    assert ("| Expected calibration error of P(chosen ≻ rejected) at T = 1 (no temperature fitted: for an mse model no "
            "preference probability, see above) | 0.0312 |") in body
    calibrated = render_model_card({"alpha": 1.0, "calibration_temperature": 2.0}, summary,
                                   {**evaluation, "temperature": 2.0})
    assert "ece" in {m["type"] for m in ModelCard(calibrated).data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert "at T = 1" not in calibrated
    pairwise = render_model_card({"alpha": 1.0}, {**summary, "objective": "pairwise"}, evaluation)
    assert "at T = 1" not in pairwise and "- type: ece" in pairwise


@pytest.mark.parametrize(("model_objective", "evaluation", "expected"), [
    ("mse", {**EVALUATION, "objective": "pairwise"},
     "Length bias measured on held-out pairs: Spearman correlation of reward with response length 0.123; the longer "
     "response gets the higher reward in 55% of pairs; accuracy when the chosen response is the shorter one: 0.7."),
    ("ranking", {**EVALUATION, "objective": "ranking"},
     "Length bias measured on held-out within-group pairs: Spearman correlation of reward with response length 0.123; "
     "the longer response gets the higher reward in 55% of within-group pairs; accuracy when the better-ranked "
     "response is the shorter one: 0.7."),
    ("pairwise", {"n": 40, "objective": "mse", "length_bias": {"spearman_reward_length": 0.2}},
     "Length bias measured on held-out responses: Spearman correlation of reward with response length 0.2."),
], ids=["mse-model-on-pairs", "ranked-data", "pairwise-model-on-scalar-data"])
def test_card_length_bias_is_worded_for_the_evaluated_data(model_objective, evaluation, expected):
    """The length-bias sentence followed the model's objective: an mse model evaluated on pairs read
    "measured on held-out responses: ... in 61% of pairs", and ranked data spoke of a chosen response."""
    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": model_objective}
    card = " ".join(render_model_card({"alpha": 1.0}, summary, evaluation).split())
    assert expected in card


@pytest.mark.parametrize(("evaluation", "expected"), [
    ({"n": 4, "objective": "mse", "length_bias": {"spearman_reward_length": 0.8, "spearman_target_length": 0.05}},
     "Length bias measured on held-out responses: Spearman correlation of reward with response length 0.8 (of the "
     "annotated targets themselves: 0.05)."),
    ({**EVALUATION, "objective": "pairwise", "length_bias": {**EVALUATION["length_bias"], "chosen_longer_rate": 0.52}},
     "the longer response gets the higher reward in 55% of pairs (the labels chose it in 52%);"),
    ({**EVALUATION, "objective": "ranking", "length_bias": {**EVALUATION["length_bias"], "chosen_longer_rate": 0.6}},
     "the longer response gets the higher reward in 55% of within-group pairs (the labelled order put it first in 60%);"),
], ids=["scalar-data", "pairs", "ranked-data"])
def test_card_length_bias_gives_the_labels_own_length_preference(evaluation, expected):
    """report.md sets the model's length preference against the labels' own (the targets' Spearman with
    length; how often the labels chose the longer response), the card stated the model's alone: "0.8" of an
    mse model whose targets correlate with length at 0.05 read the same as one whose targets do at 0.8."""
    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "mse"}
    card = " ".join(render_model_card({"alpha": 1.0}, summary, evaluation).split())
    assert expected in card


def test_card_of_an_mse_model_does_not_open_with_a_preference_score():
    """The card of every model opened "returns one number, the reward, that is higher for responses people
    prefer", an mse model's too, whose reward predicts an annotation on the annotations' scale."""
    mse = render_model_card({"alpha": 1.0}, {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"),
                                             "objective": "mse"})
    opening = " ".join(mse.split("---", 2)[2].split("## Usage")[0].split())
    assert "higher for responses people prefer" not in opening
    assert "a prediction of the response's annotated reward, on the scale of the rewards it was trained on" in opening
    pairwise = render_model_card({"alpha": 1.0}, _training_summary("sentence-transformers/all-MiniLM-L6-v2"))
    assert "higher for responses people prefer" in pairwise


@pytest.mark.parametrize("normalize", [False, True], ids=["alpha", "alpha-and-normalized"])
def test_card_says_how_to_read_outputs_without_the_raw_reward(tokenizer, normalize):
    """The card said "use the raw reward for P(a ≻ b)" and no more, while its pipeline (and RL libraries)
    return only the output alpha·r, or alpha·(r − mean)/std: a pipeline user of an alpha = 10 model who
    took σ(s_a − s_b) got a probability 10x too sharp (74x for a normalized one). The card now gives the
    divisor, and for an uncalibrated mse model the annotation behind an output; the numbers it prints
    must reproduce the model's own."""
    config = {"alpha": 10.0, "reward_mean": 0.25, "reward_std": 0.125, "normalize_rewards": normalize,
              "calibration_temperature": 0.5}
    model = helpers.tiny_reward_model(**config)
    inputs = tokenizer(["What is 2 + 2?"] * 2, ["4", "Go away."], padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    s, r = output.logits[:, 0].double(), output.rewards[:, 0].double()
    summary = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    card = " ".join(render_model_card(config, summary).split())
    divisor = float(re.search(r"P\(a ≻ b\) = σ\(\(s_a − s_b\) / ([0-9.]+)\), not σ\(s_a − s_b\)", card)[1])
    assert torch.sigmoid((s[0] - s[1]) / divisor) == pytest.approx(float(torch.sigmoid((r[0] - r[1]) / 0.5)), abs=1e-4)
    mse = {key: value for key, value in config.items() if key != "calibration_temperature"}
    card = " ".join(render_model_card(mse, {**summary, "objective": "mse"}).split())
    found = re.search(r"the predicted annotation is r = (?:([0-9.]+) × s ([+−]) ([0-9.]+)|s / ([0-9.]+))\.", card)
    if normalize:
        predicted = float(found[1]) * s + (1 if found[2] == "+" else -1) * float(found[3])
    else:
        predicted = s / float(found[4])
    assert predicted.tolist() == pytest.approx(r.tolist(), abs=1e-4)
    plain = render_model_card({"alpha": 1.0, "reward_mean": 0.25, "reward_std": 0.125}, summary)
    assert "From outputs alone" not in plain  # the output is the raw reward itself


@pytest.mark.parametrize("alpha", [1.0, 10.0])
def test_card_alpha_example_uses_a_value_other_than_the_models_alpha(alpha):
    """The card's per-call example always passed `alpha=10`: on a model whose alpha is 10 its two
    pipeline lines printed the same number, as if `alpha=` did nothing."""
    summary = _training_summary("sentence-transformers/all-MiniLM-L6-v2")
    card = render_model_card({"alpha": alpha}, summary)
    example = int(re.search(r"max_length=\d+, alpha=(\d+)\)\)", card)[1])
    assert example != alpha
    assert f"`model(**inputs, alpha={example})` or `reward_pipe(pair, alpha={example})`" in card
    assert f"from_pretrained(repo, alpha={example}, ...)" in card and f"model(**inputs, alpha={example}) does" in card


def test_dry_run_names_the_upload_command_with_every_flag_that_shapes_the_folder(tmp_path, monkeypatch, capsys):
    """The dry run ended "`rewardkit publish --model M --repo-id R` uploads it": run as printed, that
    dropped --metrics, --dataset and --license (and --revision, --private), so the upload carried a card
    without the evaluation, data sets or license of the folder that was built and checked."""
    import shlex

    from rewardkit.cli import main, make_parser

    metrics = tmp_path / "my metrics.json"
    metrics.write_text(json.dumps(EVALUATION), encoding="utf-8")
    seen = {}

    def fake_publish(model, repo_id, **kwargs):
        seen.update(kwargs)
        return publishing.PublishResult(folder=tmp_path / "out", repo_id=repo_id, files=["README.md"], url=None,
                                        verified=True)

    monkeypatch.setattr(publishing, "publish", fake_publish)
    argv = ["publish", "--model", "m", "--repo-id", REPO_ID, "--metrics", str(metrics), "--dataset", "a/b",
            "--dataset", "c/d", "--license", "mit", "--language", "de", "--language", "en", "--revision", "v1",
            "--private", "--dry-run",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = re.search(r"; `(rewardkit publish .*)` uploads it", capsys.readouterr().out).group(1)
    upload = vars(make_parser().parse_args(shlex.split(printed)[1:]))
    expected = {**vars(make_parser().parse_args(argv)), "dry_run": False, "out": None}
    assert upload == expected


@pytest.mark.parametrize(("evaluation", "named"), [
    ([EVALUATION], "must be a JSON object"),  # failed with "AttributeError: 'list' object has no attribute 'get'"
    ({**EVALUATION, "accuracy": "high"}, "'accuracy' is 'high', not a finite number"),
    ({**EVALUATION, "ece": float("nan")}, "'ece' is nan, not a finite number"),
    ({**EVALUATION, "n": "x"}, "'n' is 'x', not a whole number"),
    ({**EVALUATION, "length_bias": {"spearman_reward_length": "strong"}}, "'length_bias.spearman_reward_length'"),
    ({}, "none of the metrics the card states"),  # the card came out with no results, as without --metrics
    ({"model_type": "reward_model", "reward_mean": -3.0}, "none of the metrics"),  # the model's config.json
])
def test_metrics_the_card_cannot_state_as_measured_are_refused(model_dir, tmp_path, evaluation, named):
    """A hand-edited or wrong --metrics file put "Pairwise accuracy | high | held-out data (n=x)" or
    "| nan |" in the card's results table, stated as measured."""
    with pytest.raises(ValueError, match=re.escape(named)):
        build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID, evaluation=evaluation)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("recorded", "named"), [
    ({"reward_mean": 0.054, "reward_std": 0.5, "temperature": 1.0}, "reward_mean"),  # another model's (or run's) metrics
    ({"reward_mean": -3.0, "reward_std": 0.099, "temperature": 1.0}, "reward_std"),
    ({"reward_mean": -3.0, "reward_std": 0.5, "temperature": 1.0}, "temperature"),  # measured before --calibrate
])
def test_metrics_of_another_model_or_temperature_are_refused(model_dir, tmp_path, recorded, named):
    """`publish --metrics` put any metrics.json on the card and in the model-index: the report of
    another model (a LoRA run's card showed the full fine-tune's accuracy), or of this model before
    `evaluate --calibrate` (ECE and Brier at T = 1 beside a card that states the fitted T)."""
    folder = _copy_model(model_dir, tmp_path / "calibrated")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "calibration_temperature": 0.5}))
    with pytest.raises(ValueError, match=rf"{named}.*evaluate") as caught:
        build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID, evaluation={**EVALUATION, **recorded})
    assert not (tmp_path / "out").exists() and "metrics" in str(caught.value)
    matching = {**EVALUATION, "reward_mean": -3.0, "reward_std": 0.5, "temperature": 0.5}
    out = build_publish_folder(folder, tmp_path / "out", repo_id=REPO_ID, evaluation=matching)
    assert "| 0.8125 |" in (out / "README.md").read_text()


def test_card_counts_of_one_take_the_singular():
    """Review: a card of one ranked group said "n=1 ranked groups, 1 within-group pairs", and T's
    interval "on 1 pairs" / "on 1 ranked groups (1 within-group pairs)"."""
    from rewardkit.model_card import render_model_card

    summary = {**_training_summary("sentence-transformers/all-MiniLM-L6-v2"), "objective": "ranking",
               "eval_metrics": {"eval_top1_accuracy": 1.0, "eval_pairwise_accuracy": 1.0, "eval_loss": 0.5}}
    evaluation = {"objective": "ranking", "n": 1, "n_groups": 1, "n_pairs": 1, "pairwise_accuracy": 1.0,
                  "top1_accuracy": 1.0, "kendall_tau": 1.0, "data": "/home/someone/data/dev.jsonl",
                  "temperature": 0.517, "temperature_fitted": 0.517, "temperature_written": True,
                  "temperature_interval": [0.1, 3.0], "temperature_differs_from_1": False, "temperature_lr_vs_1": 0.1}
    card = render_model_card({"alpha": 1.0, "calibration_temperature": 0.517}, summary, evaluation)
    assert "| 1 | dev.jsonl (local data, n=1 ranked group, 1 within-group pair) |" in card
    assert "95% interval 0.1 to 3 on 1 ranked group (1 within-group pair), computed as if" in card
    pairwise = {**evaluation, "objective": "pairwise", "accuracy": 1.0}
    card += render_model_card({"alpha": 1.0, "calibration_temperature": 0.517}, {**summary, "objective": "pairwise"}, pairwise)
    assert "95% interval 0.1 to 3 on 1 pair, which cannot tell it from T = 1" in card
    assert not re.search(r"\b1 (pairs|ranked groups|within-group pairs)\b", card)
