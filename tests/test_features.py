"""Tokenization of (prompt, response) pairs: the truncation contract and the collators."""

import pytest
import torch

from rewardkit.features import (
    PairEncoder,
    PairwiseCollator,
    RankingCollator,
    encode_rows,
    identical_inputs,
    resolve_max_length,
)


def test_long_prompt_keeps_whole_response_and_end_of_prompt(tokenizer):
    prompt = " ".join(f"word{i}" for i in range(600)) + " FINALQUESTION"
    response = "the short answer is yes"
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert prompt_tokens > 600
    encoder = PairEncoder(tokenizer, max_length=128)
    item = encoder.encode([prompt], [response])[0]
    assert len(item["input_ids"]) == 128
    text = tokenizer.decode(item["input_ids"])
    assert text.rstrip().endswith("[SEP] the short answer is yes [SEP]")
    assert "finalquestion" in text  # the END of the prompt survives
    assert "word0 " not in text and "word1 " not in text  # its start was cut
    assert item["token_type_ids"][-1] == 1 and item["token_type_ids"][0] == 0
    assert encoder.stats.prompt_cut == 1 and encoder.stats.response_cut == 0


def test_short_pair_equals_plain_tokenizer_call(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=64)
    item = encoder.encode(["What is 2+2?"], ["It is 4."])[0]
    reference = tokenizer("What is 2+2?", "It is 4.")
    assert item["input_ids"] == reference["input_ids"]
    assert item["token_type_ids"] == reference["token_type_ids"]


def test_response_longer_than_budget_is_cut_at_its_end_and_prompt_tail_kept(tokenizer):
    encoder = PairEncoder(tokenizer, max_length=64)
    item = encoder.encode(["which color is best"], [" ".join(["blue"] * 200)])[0]
    assert len(item["input_ids"]) == 64
    text = tokenizer.decode(item["input_ids"])
    assert text.startswith("[CLS] which color is best [SEP] blue")
    assert encoder.stats.response_cut == 1


def test_right_truncation_would_make_pairs_identical_ours_does_not(tokenizer):
    """HH-RLHF pairs share a long prompt and differ at the end: right truncation of the whole
    transcript (what TRL does with implicit-prompt data) erases that."""
    prompt = "Human: " + " ".join(["context"] * 300) + " Assistant:"
    chosen, rejected = "I cannot help with that.", "Sure, here is how."
    right = [tokenizer(prompt + " " + r, truncation=True, max_length=64)["input_ids"] for r in (chosen, rejected)]
    assert right[0] == right[1]
    ours = PairEncoder(tokenizer, max_length=64).encode([prompt, prompt], [chosen, rejected])
    assert ours[0]["input_ids"] != ours[1]["input_ids"]


def test_resolve_max_length_caps_at_model_limit(tokenizer):
    assert resolve_max_length(tokenizer, None, None) == 512
    assert resolve_max_length(tokenizer, None, 4096) == 512
    assert resolve_max_length(tokenizer, None, 100) == 100


def test_scoring_length_defaults_to_the_trained_one(tokenizer):
    from transformers import BertConfig

    from configuration_reward import RewardConfig

    backbone = BertConfig(max_position_embeddings=512)
    assert resolve_max_length(tokenizer, RewardConfig(backbone, trained_max_length=128), None) == 128
    assert resolve_max_length(tokenizer, RewardConfig(backbone, trained_max_length=128), 300) == 300  # asked for
    assert resolve_max_length(tokenizer, RewardConfig(backbone, trained_max_length=4096), None) == 512  # capped
    assert resolve_max_length(tokenizer, RewardConfig(backbone), None) == 512  # not recorded
    # A sentence-transformers backbone's own length fills in for an unrecorded one, never over the rest:
    assert resolve_max_length(tokenizer, RewardConfig(backbone), None, backbone_length=256) == 256
    assert resolve_max_length(tokenizer, RewardConfig(backbone, trained_max_length=128), None, backbone_length=256) == 128
    assert resolve_max_length(tokenizer, None, 300, backbone_length=256) == 300
    assert resolve_max_length(tokenizer, None, None, backbone_length=4096) == 512  # capped
    with pytest.raises(ValueError, match="trained_max_length"):
        RewardConfig(backbone, trained_max_length=0)
    assert RewardConfig(backbone, trained_objective="ranking").trained_objective == "ranking"
    with pytest.raises(ValueError, match="trained_objective"):
        RewardConfig(backbone, trained_objective="regression")


def test_pairwise_collator_stacks_chosen_then_rejected(tokenizer):
    rows = [{"prompt": "a?", "chosen": "good answer here", "rejected": "bad", "margin": 1.5},
            {"prompt": "b?", "chosen": "fine", "rejected": "no", "margin": None}]
    features = encode_rows(rows, "pairwise", PairEncoder(tokenizer, 32))
    batch = PairwiseCollator(tokenizer)(features)
    assert batch["input_ids"].shape[0] == 4
    expected_first = torch.tensor(features[0]["chosen"]["input_ids"])
    assert torch.equal(batch["input_ids"][0, : len(expected_first)], expected_first)
    expected_third = torch.tensor(features[0]["rejected"]["input_ids"])
    assert torch.equal(batch["input_ids"][2, : len(expected_third)], expected_third)
    assert batch["attention_mask"][2, len(expected_third):].sum() == 0  # dynamic padding, right side
    assert batch["margin"].tolist() == [1.5, 0.0]


def test_ranking_collator_flattens_groups(tokenizer):
    rows = [{"prompt": "p", "responses": ["a", "b", "c", "d"]}, {"prompt": "q", "responses": ["x", "y"]}]
    batch = RankingCollator(tokenizer)(encode_rows(rows, "ranking", PairEncoder(tokenizer, 32)))
    assert batch["input_ids"].shape[0] == 6
    assert batch["group_sizes"].tolist() == [4, 2]


def test_identical_inputs_finds_pairs_and_ranked_groups_that_encoding_collapses(tokenizer):
    """Texts the data check accepts as different can still encode alike: differing only after the
    --max-length cut, or only in case for an uncased vocabulary. Such pairs taught nothing."""
    long = " ".join(["word"] * 60)
    pairs = [{"prompt": "q", "chosen": long + " good", "rejected": long + " bad"},  # cut before they differ
             {"prompt": "q", "chosen": "good", "rejected": "bad"},
             {"prompt": "q", "chosen": "Yes", "rejected": "yes"}]  # an uncased vocabulary
    assert identical_inputs(encode_rows(pairs, "pairwise", PairEncoder(tokenizer, 32)), "pairwise") == [0, 2]
    assert identical_inputs(encode_rows(pairs[:1], "pairwise", PairEncoder(tokenizer, 128)), "pairwise") == []
    groups = [{"prompt": "q", "responses": ["best", long + " good", long + " bad"]},  # two of three collapse
              {"prompt": "q", "responses": ["best", "worst"]}]
    assert identical_inputs(encode_rows(groups, "ranking", PairEncoder(tokenizer, 32)), "ranking") == [0]
    scalar = [{"prompt": "q", "response": long, "reward": 1.0}]
    assert identical_inputs(encode_rows(scalar, "mse", PairEncoder(tokenizer, 32)), "mse") == []
