"""Tokenization of (prompt, response) pairs: the truncation contract and the collators."""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

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


class _WholeText(PairEncoder):
    """The reference: every text tokenized whole, then cut (PairEncoder before its windows)."""

    def _encode_windowed(self, texts, from_end):
        return self._backend.encode_batch(list(texts), add_special_tokens=False)

    def _ids_slow(self, text, from_end):
        return self.tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def tokenizers_of_every_kind(tokenizer):
    """The MiniLM WordPiece (its normalizer lowercases and strips accents) fast and slow (the
    Python path, `_encode_slow`), a byte-level BPE (GPT-2's pre-tokenizer: whitespace runs split
    before their last space) and a Metaspace Unigram behind NFKD, accent stripping, lowercasing and
    whitespace-run collapsing, both trained here in a second."""
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    from tests import helpers

    corpus = ["The quick brown fox jumps over the lazy dog.", "Naïve café résumé ÉCOLE über straße",
              "  spaces   and\ttabs\n\nnewlines", "中文 字符 テスト", "it's don't we'll 12345 3.14"] * 20
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="$A <|end|>", pair="$A <|end|> $B <|end|>",
                                                       special_tokens=[("<|end|>", 0)])
    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
                                               normalizers.Replace(Regex(" {2,}"), " ")])
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    unigram.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=150, special_tokens=["<unk>", "</s>"],
                                                                unk_token="<unk>"))
    digits = Tokenizer(models.BPE())  # Llama 3's and Qwen's way with numbers: groups of 3 from the run's start
    digits.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False)])
    digits.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|end|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    digits.post_processor = bpe.post_processor
    return {"wordpiece": tokenizer, "wordpiece-slow": BertTokenizerLegacy(str(helpers.minilm_path() / "vocab.txt")),
            "byte-bpe": PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<|end|>"),
            "unigram": PreTrainedTokenizerFast(tokenizer_object=unigram, unk_token="<unk>", pad_token="</s>"),
            "digit-groups": PreTrainedTokenizerFast(tokenizer_object=digits, eos_token="<|end|>", pad_token="<|end|>")}


_PIECES = ["1234567890" * 9, "word", "Wörd", "ÉCOLE", "straße", " ", "   ", "\t", "\n \n", "e\u0301", "\u0301", "İ", "ﬁ", "中文",
           "!", "...", "'s", "12", "[SEP]", "<|end|>", "x" * 120, "\u00a0", "\x00", "\u2028", "🙂", "Ａ"]
_TEXTS = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=3)), max_size=300).map("".join)


@pytest.mark.parametrize("kind", ["wordpiece", "wordpiece-slow", "byte-bpe", "unigram", "digit-groups"])
@settings(max_examples=60, deadline=None)
@given(prompt=_TEXTS, response=_TEXTS, max_length=st.sampled_from([8, 13, 24]))
@example(prompt="x" * 1500, response="ab" * 800, max_length=8)  # no space at all
@example(prompt="a " * 500 + " " * 1000, response=" " * 1000 + "a " * 500, max_length=8)  # a whitespace run at the edge
@example(prompt="word " * 10 + "1234567890" * 100 + " end", response="Yes.", max_length=24)  # digits regrouped
@example(prompt="word " * 10 + "1234567890" * 100 + "12 end", response="Yes.", max_length=24)
def test_long_texts_encode_exactly_as_when_tokenized_whole(tokenizers_of_every_kind, kind, prompt, response,
                                                           max_length):
    """Windowed tokenization (a 16-token budget reads windows of ~100 characters) gives the ids,
    token types and truncation counts of whole-text tokenization followed by our cut."""
    tokenizer = tokenizers_of_every_kind[kind]
    ours, whole = PairEncoder(tokenizer, max_length), _WholeText(tokenizer, max_length)
    cuts, whole_cuts = [], []
    assert ours.encode([prompt], [response], cuts=cuts) == whole.encode([prompt], [response], cuts=whole_cuts)
    assert cuts == whole_cuts and ours.stats == whole.stats


@pytest.mark.parametrize("kind", ["wordpiece", "wordpiece-slow"])
def test_a_huge_field_is_tokenized_through_a_bounded_window(tokenizers_of_every_kind, kind, monkeypatch):
    """A 300 MB response took 290 s and ~20 GB to score: it was tokenized whole, then cut to
    max_length. Now no tokenizer call sees more than a window of a few thousand characters."""
    huge = "Naïve words, over and over. " * 40_000  # 1.1 MB
    tokenizer, seen = tokenizers_of_every_kind[kind], []
    encoder = PairEncoder(tokenizer, 64)
    if encoder._backend is None:
        encode = tokenizer.encode
        monkeypatch.setattr(tokenizer, "encode", lambda text, **kw: seen.append(len(text)) or encode(text, **kw))
    else:
        monkeypatch.setattr(encoder, "_backend", _Spy(encoder._backend, seen))
    item = encoder.encode([huge, "Why?"], ["Yes.", huge])
    assert max(seen) < 10_000
    monkeypatch.undo()
    assert item == _WholeText(tokenizer, 64).encode([huge, "Why?"], ["Yes.", huge])
    assert (encoder.stats.prompt_cut, encoder.stats.response_cut) == (1, 1)


class _Spy:
    """A Rust backend that notes the length of every text it encodes."""

    def __init__(self, backend, seen):
        self.post_processor, self._backend, self._seen = backend.post_processor, backend, seen

    def encode_batch(self, texts, **kwargs):
        self._seen.extend(map(len, texts))
        return self._backend.encode_batch(texts, **kwargs)


def test_cutting_a_long_prompt_and_response_leaves_one_overflowing_piece_each(tokenizers_of_every_kind,
                                                                            monkeypatch):
    """Truncation keeps what it cuts as pieces, and the post-processor merges every prompt piece
    with every response piece: 600 byte-level tokens each, cut to 3 and 3, made ~40,000 merged
    encodings that nobody reads (3,000 each took 30 s; longer ones ran out of memory)."""
    encoder, merged = PairEncoder(tokenizers_of_every_kind["byte-bpe"], 8), []
    processor = encoder._backend.post_processor
    monkeypatch.setattr(encoder, "_backend", _Spy(encoder._backend, []))
    encoder._backend.post_processor = type("Processor", (), {"process": staticmethod(
        lambda *args, **kw: merged.append(processor.process(*args, **kw)) or merged[-1])})()
    item = encoder.encode(["x" * 600], ["y" * 600])[0]  # one word each: tokenized whole
    assert len(item["input_ids"]) == 8 and len(merged[0].overflowing) <= 4
