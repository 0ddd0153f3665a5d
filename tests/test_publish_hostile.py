"""Publishing a model folder rewardkit did not write (downloaded, unpacked, edited): nothing from
outside the folder and no code of the folder's own reaches the Hub, and none of it runs here."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from rewardkit import publishing
from rewardkit.errors import UserInputError
from rewardkit.publishing import build_publish_folder
from tests import helpers

REPO_ID = "rewardkit-test/hostile"
SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- not for the Hub"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("saved")
    helpers.tiny_reward_model().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "model"))


@pytest.mark.parametrize("name", ["vocab.txt", "merges.txt", "chat_template.jinja", "tokenizer.json"])
def test_a_file_linking_out_of_the_model_folder_is_refused_not_published(model_dir, tmp_path, name):
    """A BERT tokenizer reads neither vocab.txt beside tokenizer.json nor merges.txt nor a chat
    template, so a `merges.txt -> ~/.ssh/id_rsa` was copied (links followed), verified and uploaded."""
    secret = tmp_path / "id_rsa"
    secret.write_text(SECRET)
    if (model_dir / name).exists():
        (model_dir / name).unlink()
    os.symlink(secret, model_dir / name)
    with pytest.raises(UserInputError, match=f"links to files outside it: {name}"):
        build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    assert not (tmp_path / "out").exists()


def test_a_link_within_the_model_folder_is_published_as_a_copy(model_dir, tmp_path):
    (model_dir / "files").mkdir()
    (model_dir / "tokenizer.json").rename(model_dir / "files" / "tokenizer.json")
    os.symlink("files/tokenizer.json", model_dir / "tokenizer.json")
    out = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    assert not (out / "tokenizer.json").is_symlink()
    assert (out / "tokenizer.json").read_bytes() == (model_dir / "files" / "tokenizer.json").read_bytes()


def test_the_installed_code_files_are_published_not_the_folders(model_dir, tmp_path, caplog):
    """An edited or foreign modeling_reward.py that scores the same passed verification, ran in its
    fresh load, and was uploaded: the code the Hub serves must be the code rewardkit evaluated with."""
    with (model_dir / "modeling_reward.py").open("a") as code:
        code.write("\nimport os  # anything at all could follow\n")
    with caplog.at_level(logging.WARNING, logger="rewardkit.publishing"):
        out = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    for name in publishing.CODE_FILES:
        assert (out / name).read_bytes() == (helpers.REPO_ROOT / name).read_bytes(), name
    assert "modeling_reward.py that differs from the installed rewardkit's" in caplog.text
    assert "configuration_reward.py" not in caplog.text


def test_the_published_auto_map_names_only_the_published_code(model_dir, tmp_path):
    config = json.loads((model_dir / "config.json").read_text())
    config["auto_map"]["AutoModelForCausalLM"] = "someone/elsewhere--evil.Model"  # Hub code, loaded by that class
    (model_dir / "config.json").write_text(json.dumps(config))
    out = build_publish_folder(model_dir, tmp_path / "out", repo_id=REPO_ID)
    assert json.loads((out / "config.json").read_text())["auto_map"] == publishing.REQUIRED_AUTO_MAP


def test_the_reference_scores_run_no_code_of_the_folder(model_dir, tmp_path):
    """verify_folder scored its reference in rewardkit's own process with AutoTokenizer(...,
    trust_remote_code=True), which imported a .py file that tokenizer_config.json's auto_map named."""
    marker = tmp_path / "ran"
    (model_dir / "evil_tok.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                                           "from transformers import BertTokenizerFast as EvilTokenizer\n")
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": [None, "evil_tok.EvilTokenizer"]}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    scores = publishing._score_reference(model_dir, publishing.PROBES)
    assert len(scores) == len(publishing.PROBES)
    assert not marker.exists()
