"""RewardScorer and score_file: properties (hypothesis) on a tiny random model, errors, files."""

from __future__ import annotations

import copy
import json
import math
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardkit.cpu_workers import cpu_worker_split
from rewardkit.data import RewardDataError
from rewardkit.score_files import score_file
from rewardkit.scoring import RewardScorer, resolve_dtype, token_budget_batches
from tests import helpers

PROPERTY = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_LENGTH = 64

WORDS = ["the", "cat", "sat", "on", "a", "mat", "why", "is", "sky", "blue", "?", "!", "rome",
         "capital", "of", "italy", "42", "answer", "no", "yes", "please", "thanks", "é", "日本"]
# Short texts from real words (varied token counts) or arbitrary unicode, including "" and spaces.
texts = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join),
    st.text(max_size=60),
    st.sampled_from(["", " ", "\n\t "]),
)
pairs = st.lists(st.tuples(texts, texts), min_size=1, max_size=12)


@pytest.fixture(scope="module", autouse=True)
def _one_thread_here(one_thread):
    """Tiny models run faster on one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    model = helpers.tiny_reward_model(alpha=2.0)
    with torch.no_grad():  # a head with real spread, so orderings are not decided by rounding
        model.score.weight.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module")
def scorer(model, tokenizer):
    return RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH)


def _forward_one(model, item: dict) -> float:
    """The plain model on one unpadded input: the reference every batched path must match."""
    batch = {k: torch.tensor([v]) for k, v in item.items()}
    with torch.no_grad():
        return float(model(**batch).logits[0, 0])


# ---------------------------------------------------------------- properties


@PROPERTY
@given(pairs=pairs, seed=st.integers(0, 2**16))
def test_score_does_not_depend_on_batch_size_or_order(scorer, model, tokenizer, pairs, seed):
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    reference = np.array(scorer.score(prompts, responses))
    one_by_one = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, batch_size=1)
    assert np.allclose(one_by_one.score(prompts, responses), reference, rtol=0, atol=1e-5)
    order = np.random.default_rng(seed).permutation(len(pairs))
    shuffled = scorer.score([prompts[i] for i in order], [responses[i] for i in order])
    assert np.allclose(shuffled, reference[order], rtol=0, atol=1e-5)
    assert np.all(np.isfinite(reference))


@PROPERTY
@given(prompt=texts, a=texts, b=texts)
def test_compare_is_a_probability_and_antisymmetric(scorer, prompt, a, b):
    p_ab, p_ba = scorer.compare(prompt, a, b), scorer.compare(prompt, b, a)
    assert 0.0 <= p_ab <= 1.0
    assert p_ab + p_ba == pytest.approx(1.0, abs=1e-6)
    r_a, r_b = scorer.raw_rewards(prompt, [a, b])
    assert p_ab == pytest.approx(1.0 / (1.0 + math.exp(-(r_a - r_b))), abs=1e-5)


@PROPERTY
@given(prompt=texts, responses=st.lists(texts, min_size=1, max_size=8))
def test_rank_agrees_with_score(scorer, prompt, responses):
    ranked = scorer.rank(prompt, responses)
    assert sorted(r for r, _ in ranked) == sorted(responses)
    values = [v for _, v in ranked]
    assert values == sorted(values, reverse=True)
    single = dict(zip(responses, scorer.score(prompt, responses)))
    for response, value in ranked:
        assert value == pytest.approx(single[response], abs=1e-5)


@PROPERTY
@given(groups=st.lists(st.tuples(texts, st.lists(texts, min_size=1, max_size=5)), min_size=1, max_size=5))
def test_best_of_n_picks_the_highest_score(scorer, groups):
    prompts, candidates = [p for p, _ in groups], [c for _, c in groups]
    best = scorer.best_of_n(prompts, candidates)
    assert len(best) == len(groups)
    for prompt, group, chosen in zip(prompts, candidates, best):
        scores = scorer.score(prompt, group)
        assert chosen in group
        assert scorer.score(prompt, chosen)[0] >= max(scores) - 1e-5


@PROPERTY
@given(pairs=pairs, budget=st.sampled_from([1, 16, 64, 300, 100_000]), batch_size=st.sampled_from([None, 1, 3]))
def test_scorer_equals_plain_forward(model, tokenizer, pairs, budget, batch_size):
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH,
                          token_budget=budget, batch_size=batch_size)
    prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
    expected = [_forward_one(model, item) for item in scorer.encoder.encode(prompts, responses)]
    assert np.allclose(scorer.score(prompts, responses), expected, rtol=0, atol=1e-5)


def test_worker_split_only_on_a_multithreaded_cpu_with_several_batches(two_threads):
    cpu = torch.device("cpu")
    assert cpu_worker_split(cpu, 5) == (2, 1)
    assert cpu_worker_split(cpu, 1) == (1, 2)
    assert cpu_worker_split(torch.device("cuda"), 5) == (1, 2)
    torch.set_num_threads(1)
    assert cpu_worker_split(cpu, 5) == (1, 1)


def test_two_workers_score_like_the_plain_forward_and_leave_threads_alone(model, tokenizer, two_threads):
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, token_budget=40)
    prompts = [" ".join(WORDS[: 1 + i % 9]) for i in range(40)]
    responses = [" ".join(WORDS[i % 7: i % 7 + 1 + i % 13]) for i in range(40)]
    items = scorer.encoder.encode(prompts, responses)
    assert len(token_budget_batches([len(item["input_ids"]) for item in items], 40)) > 10
    expected = [_forward_one(model, item) for item in items]
    assert np.allclose(scorer.score(prompts, responses), expected, rtol=0, atol=1e-5)
    assert torch.get_num_threads() == 2 and not torch.is_inference_mode_enabled()


def test_an_error_in_a_worker_reaches_the_caller_and_the_model_is_restored(model, tokenizer, two_threads):
    calls = []

    def fail_on_third_batch(module, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("batch three failed")

    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, token_budget=20)
    model.train()
    handle = model.register_forward_pre_hook(fail_on_third_batch, with_kwargs=True)
    try:
        with pytest.raises(RuntimeError, match="batch three failed"):
            scorer.score(["a b c d e f"] * 30, [" ".join(WORDS[:i]) for i in range(30)])
        assert model.training  # the caller's mode is back
    finally:
        handle.remove()
        model.eval()
    assert model.score.__dict__.get("forward") is None  # oneDNN patch removed
    assert torch.get_num_threads() == 2


def _count_in_a_new_thread() -> int:
    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return counts[0]


def test_two_workers_leave_the_thread_count_of_later_threads_alone(model, tokenizer, two_threads):
    """A worker's `torch.set_num_threads(1)` also set the count every later thread starts with: a
    server's request threads (or a second scoring thread) then ran on one thread for good."""
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, token_budget=40)
    assert _count_in_a_new_thread() == 2
    scorer.score(["a b c d e f"] * 30, [" ".join(WORDS[:i]) for i in range(30)])
    assert _count_in_a_new_thread() == 2


def test_concurrent_calls_score_in_eval_mode_and_restore_the_callers_mode(model, tokenizer):
    """Thread A enters first and leaves while thread B is in its forward: A must not switch a model
    in train mode back to train (dropout) under B, and the last to leave restores train mode."""
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH)
    prompts, responses = ["Hi", "What is 2+2?", "Say no"], ["Hello!", "4", "no"]
    expected = scorer.score(prompts, responses)
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()
    results: dict[str, list[float]] = {}

    def pause(module, args, kwargs):
        if threading.current_thread().name == "A":
            a_inside.set()
            b_inside.wait(10)
        elif threading.current_thread().name == "B":
            b_inside.set()
            a_done.wait(10)

    def call(name: str) -> None:
        results[name] = scorer.score(prompts, responses)

    model.train()
    handle = model.register_forward_pre_hook(pause, with_kwargs=True)
    try:
        a = threading.Thread(target=call, args=("A",), name="A")
        b = threading.Thread(target=call, args=("B",), name="B")
        a.start()
        assert a_inside.wait(10)
        b.start()
        a.join(10)
        a_done.set()
        b.join(10)
        assert model.training
    finally:
        handle.remove()
        model.eval()
    assert np.allclose(results["A"], expected, rtol=0, atol=1e-5)
    assert np.allclose(results["B"], expected, rtol=0, atol=1e-5)
    assert all("forward" not in module.__dict__ for module in model.modules())


def test_a_callers_model_keeps_its_mode_and_precision(tokenizer):
    """The scorer scores in eval mode per call; it does not leave the caller's model in eval mode,
    nor turn its backbone into bf16 (a model still being trained would go on in bf16)."""
    torch.manual_seed(1)
    model = helpers.tiny_reward_model().train()
    fp32 = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH)
    assert model.training
    half = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, dtype="bf16")
    assert model.training and next(model.backbone.parameters()).dtype == torch.float32
    assert next(half.model.backbone.parameters()).dtype == torch.bfloat16
    items = fp32.encoder.encode(["Hi", "Why?"], ["Hello!", "Because."])
    model.eval()
    expected = [_forward_one(model, item) for item in items]
    model.train()
    assert np.allclose(fp32.score(["Hi", "Why?"], ["Hello!", "Because."]), expected, rtol=0, atol=1e-5)
    assert np.allclose(half.score(["Hi", "Why?"], ["Hello!", "Because."]), expected, rtol=0, atol=0.05)
    assert model.training


def test_token_budget_batches_cover_every_index_once_longest_first():
    lengths = [5, 1, 9, 9, 3, 7, 2]
    batches = token_budget_batches(lengths, token_budget=18, max_batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 2 and len(b) * max(lengths[i] for i in b) <= 18 or len(b) == 1 for b in batches)
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)


@PROPERTY
@given(lengths=st.lists(st.integers(1, 300), min_size=2, max_size=60), budget=st.sampled_from([64, 512, 2048]),
       batch_size=st.sampled_from([None, 3]))
def test_batches_for_two_workers_come_in_pairs_within_the_budget(lengths, budget, batch_size):
    plain = token_budget_batches(lengths, budget, batch_size)
    even = token_budget_batches(lengths, budget, batch_size, workers=2)
    assert sorted(i for b in even for i in b) == list(range(len(lengths)))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget for b in even)
    assert all(batch_size is None or len(b) <= batch_size for b in even)
    wanted = min(len(lengths), len(plain) + len(plain) % 2)  # rounded up to a whole number of rounds
    assert len(plain) <= len(even) <= wanted  # (a budget one token smaller can add two batches at once)
    cost = lambda batches: max(len(b) * max(lengths[i] for i in b) for b in batches)  # noqa: E731
    assert cost(even) <= cost(plain)


def test_a_one_batch_job_is_split_for_two_workers_and_a_lone_last_batch_evened_out():
    assert [len(b) for b in token_budget_batches([100] * 8, 2048, workers=2)] == [4, 4]
    assert [len(b) for b in token_budget_batches([100] * 30, 2048)] == [20, 10]
    assert [len(b) for b in token_budget_batches([100] * 30, 2048, workers=2)] == [15, 15]
    assert token_budget_batches([7], 2048, workers=2) == [[0]]


# ---------------------------------------------------------------- edge inputs


@pytest.mark.parametrize("response", ["", " ", "\n\n\t  "])
def test_empty_and_blank_responses_give_a_finite_score(scorer, response):
    [value] = scorer.score("What is 2+2?", [response])
    assert math.isfinite(value)
    assert math.isfinite(scorer.compare("", response, "4"))


def test_long_inputs_are_truncated_per_the_contract(scorer, tokenizer):
    long_prompt = "Human: " + " ".join(f"turn{i} words here" for i in range(400))  # > 5,000 characters
    response = "The answer is four."
    assert len(long_prompt) > 5000
    item = scorer.encoder.encode([long_prompt], [response])[0]
    ids = item["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(long_prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) == MAX_LENGTH
    assert ids[-len(response_ids) - 1:-1] == response_ids  # the response is kept whole
    kept_prompt = ids[1:-len(response_ids) - 2]
    assert kept_prompt == prompt_ids[-len(kept_prompt):]  # the prompt is cut from the left
    values = scorer.score([long_prompt, "Hi", "x" * 5000], [response, "y" * 5000, "z " * 3000])
    assert all(math.isfinite(v) for v in values)
    long_response = scorer.encoder.encode(["Hi"], ["z " * 3000])[0]["input_ids"]
    assert len(long_response) == MAX_LENGTH


def test_a_max_length_above_the_trained_length_is_warned_about(tokenizer, caplog):
    """`score` / `evaluate --max-length 128` on a model trained at 64 tokens said nothing, though
    the model never saw pairs that long; the trained length, or a shorter one, is silent."""
    model = helpers.tiny_reward_model(trained_max_length=64)
    with caplog.at_level("WARNING", logger="rewardkit.scoring"):
        for quiet in (None, 64, 32):
            RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=quiet)
        assert "trained at" not in caplog.text
        RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=128)
    assert "max_length 128 is longer than the 64 tokens per pair this model was trained at" in caplog.text


def test_a_calls_truncation_counts_only_its_own_texts(model, tokenizer, tmp_path, caplog, monkeypatch):
    """Another thread scoring with the same scorer between this call's encode and its report (run
    here inside the encode, deterministically): its cut responses were counted as this call's."""
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH)
    other = helpers.interleave_a_scoring_call(monkeypatch, scorer, ["z " * 300] * 3)  # 3 cut, not this call's
    with caplog.at_level("DEBUG", logger="rewardkit.scoring"):
        scorer.score("Hi", ["short", "z " * 300])
    said = [r.getMessage() for r in caplog.records if "responses were cut" in r.getMessage()]
    assert said[0].startswith("3 of 3 responses") and said[-1].startswith("1 of 2 responses")  # inner, then this call
    other.clear()
    path = _write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Hi", "response": "short"}])
    counts = score_file(scorer, path, tmp_path / "out.jsonl")
    assert counts["truncation"] == {"texts": 1, "prompt_cut": 0, "response_cut": 0}


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "rewardkit.scoring"]


def test_cut_responses_are_reported_once_per_call(scorer, caplog, tmp_path):
    """Two responses that differ only after the cut get the same score: that was silent. Now a
    scorer's first call that cuts (score, rank, ...) warns with the count, later calls of the same
    scorer log at debug level; score_file warns once per file; a prompt cut alone is an info line."""
    scorer = RewardScorer(scorer.model, tokenizer=scorer.tokenizer, device="cpu", max_length=MAX_LENGTH)  # says nothing yet
    same_start = "word " * 200
    long_responses = [same_start + "good ending", same_start + "bad ending"]
    with caplog.at_level("INFO", logger="rewardkit.scoring"):
        first, second = scorer.score("What?", long_responses)
        assert first == second  # what the warning is about
        assert _warnings(caplog) == [f"2 of 2 responses were cut at their end: alone they are longer than max_length "
                                     f"{MAX_LENGTH} tokens allows, so they were scored without their end, and responses "
                                     "that differ only after the cut get the same score. Raise --max-length "
                                     "(max_length=) if the model takes more."]
        caplog.clear()
    with caplog.at_level("DEBUG", logger="rewardkit.scoring"):
        # The same scorer again (a best-of-n or PPO loop scores every step): debug level, not a warning per step.
        scorer.rank("What?", [*long_responses, "short"])
        assert _warnings(caplog) == [] and "2 of 3 responses were cut" in caplog.text
        caplog.clear()
        scorer.score("q", ["short"])
        assert caplog.records == []
    fresh = RewardScorer(scorer.model, tokenizer=scorer.tokenizer, device="cpu", max_length=MAX_LENGTH)
    with caplog.at_level("INFO", logger="rewardkit.scoring"):
        fresh.score(["question " * 200, "q"], ["short", "also short"])
        assert _warnings(caplog) == [] and "The start of the prompt was cut in 1 of 2 texts" in caplog.text
        caplog.clear()
        # A prompt-only cut said first must not mute the first response cut's warning.
        fresh.score("What?", long_responses)
        assert len(_warnings(caplog)) == 1 and _warnings(caplog)[0].startswith("2 of 2 responses")
        caplog.clear()
        rows = [{"prompt": "p", "response": long_responses[i % 2]} for i in range(5)] + [{"prompt": "p", "response": "ok"}]
        data = _write_jsonl(tmp_path / "long.jsonl", rows)
        counts = score_file(scorer, data, tmp_path / "out.jsonl", chunk_rows=2)
        assert counts["truncation"] == {"texts": 6, "prompt_cut": 0, "response_cut": 5}
        assert len(_warnings(caplog)) == 1 and _warnings(caplog)[0].startswith("5 of 6 responses")


def test_empty_input_lists_score_to_empty(scorer):
    assert scorer.score([], []) == []


# ---------------------------------------------------------------- normalization


def test_normalize_applies_stored_statistics(tokenizer):
    torch.manual_seed(5)
    model = helpers.tiny_reward_model(alpha=3.0, reward_mean=0.25, reward_std=2.0)
    prompts, responses = ["a", "b", "what?"], ["one", "two two", "three three three"]
    plain = RewardScorer(model, tokenizer=tokenizer, device="cpu")
    normalized = RewardScorer(model, tokenizer=tokenizer, device="cpu", normalize=True)
    raw = np.array(plain.raw_rewards(prompts, responses))
    assert np.allclose(plain.score(prompts, responses), 3.0 * raw, atol=1e-6)
    assert np.allclose(normalized.score(prompts, responses), 3.0 * (raw - 0.25) / 2.0, atol=1e-6)
    # compare uses raw rewards: normalization is a monotone rescaling, not a preference change
    assert normalized.compare("a", "one", "two") == pytest.approx(plain.compare("a", "one", "two"))
    # a model that normalizes by itself: score equals its own output
    model.config.normalize_rewards = True
    builtin = RewardScorer(model, tokenizer=tokenizer, device="cpu")
    items = builtin.encoder.encode(prompts, responses)
    assert np.allclose(builtin.score(prompts, responses), [_forward_one(model, i) for i in items], atol=1e-5)


def test_normalize_without_statistics_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="reward_mean"):
        RewardScorer(model, tokenizer=tokenizer, device="cpu", normalize=True)
    with pytest.raises(TypeError, match="True, False or None"):
        RewardScorer(model, tokenizer=tokenizer, device="cpu", normalize="yes")


def test_normalize_follows_the_config_unless_told_and_says_what_applies(tokenizer):
    """A model saved with normalize_rewards=True: by default score() is its own output and
    `normalize` says True (it said False); an explicit normalize=False really gives alpha * r
    (it normalized anyway). The formula the CLI prints names mean and std."""
    torch.manual_seed(5)
    model = helpers.tiny_reward_model(alpha=2.0, reward_mean=0.25, reward_std=1.5, normalize_rewards=True)
    prompts, responses = ["a", "b"], ["one", "two two"]
    default = RewardScorer(model, tokenizer=tokenizer, device="cpu")
    plain = RewardScorer(model, tokenizer=tokenizer, device="cpu", normalize=False)
    raw = np.array(default.raw_rewards(prompts, responses))
    assert default.normalize is True and plain.normalize is False
    assert np.allclose(default.score(prompts, responses), 2.0 * (raw - 0.25) / 1.5, atol=1e-6)
    assert np.allclose(plain.score(prompts, responses), 2.0 * raw, atol=1e-6)
    assert default.score_formula() == "score = alpha (2) x (raw reward - mean (0.25)) / std (1.5)"
    assert plain.score_formula() == "score = alpha (2) x raw reward"
    assert plain.compare("a", "one", "two") == pytest.approx(default.compare("a", "one", "two"))


def test_compare_on_an_uncalibrated_mse_model_warns_once_that_it_is_no_probability(tokenizer, caplog):
    """An mse model's raw rewards are predicted annotations: with T = 1 its compare() value depends
    on the annotations' scale, not on how often people prefer a response (it was returned silently).
    Warned once per scorer; not for a pairwise model, nor once a T is calibrated."""
    torch.manual_seed(5)
    model = helpers.tiny_reward_model(trained_objective="mse")
    scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu")
    with caplog.at_level("WARNING", logger="rewardkit.scoring"):
        scorer.compare("a", "one", "two")
        scorer.compare("a", "two", "one")
    assert [r.message.count("no preference probability") for r in caplog.records] == [1]
    assert "--calibrate" in caplog.records[0].message
    for config in ({"trained_objective": "pairwise"}, {"trained_objective": "mse", "calibration_temperature": 2.0}):
        caplog.clear()
        with caplog.at_level("WARNING", logger="rewardkit.scoring"):
            RewardScorer(helpers.tiny_reward_model(**config), tokenizer=tokenizer, device="cpu").compare("a", "one", "two")
        assert not caplog.records, config


# ---------------------------------------------------------------- errors


def test_mismatched_lengths_are_refused(scorer):
    with pytest.raises(ValueError, match="2 prompts but 3 responses"):
        scorer.score(["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="candidate lists"):
        scorer.best_of_n(["a", "b"], [["x"]])
    with pytest.raises(ValueError, match="non-empty"):
        scorer.best_of_n(["a"], [[]])


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_string_inputs_are_refused(scorer, bad):
    with pytest.raises(TypeError, match="must be a string"):
        scorer.score(["ok", bad], ["fine", "fine"])
    with pytest.raises(TypeError, match="must be a string"):
        scorer.score(["ok"], [bad])
    with pytest.raises(TypeError):
        scorer.compare("p", "a", bad)


def test_lone_surrogates_are_refused_naming_the_text(scorer):
    """A lone surrogate (a broken escape, or a non-UTF-8 command-line argument that Python keeps as
    \\udce9) reached the tokenizer, which failed with "TextEncodeInput must be Union[...]"."""
    with pytest.raises(ValueError, match=r"responses\[1\] holds an unpaired surrogate \\udce9 at character 4"):
        scorer.score("p", ["fine", "caf\udce9"])
    with pytest.raises(ValueError, match=r"compare arguments\[2\] holds an unpaired surrogate \\ud83d"):
        scorer.compare("p", "a", "\ud83d")
    with pytest.raises(ValueError, match=r"candidates\[0\]\[1\] holds an unpaired surrogate"):
        scorer.best_of_n(["p"], [["a", "\udc00"]])


@pytest.mark.parametrize("bad", [64.5, "64", True])
def test_max_length_that_is_not_a_whole_number_is_refused(model, tokenizer, bad):
    """64.5 was taken, then failed in the tokenizer ("'float' object cannot be interpreted as an
    integer") on the first text it had to cut; "64" failed with a bare TypeError."""
    with pytest.raises(ValueError, match="max_length must be a whole number of tokens"):
        RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=bad)


def test_loaded_model_needs_its_tokenizer(model):
    with pytest.raises(ValueError, match="tokenizer"):
        RewardScorer(model)


def test_folder_of_another_model_type_is_refused(tmp_path, tokenizer):
    from transformers import BertModel

    BertModel(helpers.tiny_backbone_config("bert")).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a rewardkit reward model"):
        RewardScorer(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RewardScorer(tmp_path / "nothing-here")


def test_lora_checkpoint_folder_is_named_as_such(tmp_path):
    """checkpoint-N/ of a LoRA run: adapter + head + optimizer pickles, no config.json. It was
    called a folder of pickle weights to convert; the pickles are optimizer state, not weights."""
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    (checkpoint / "adapter_config.json").write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    (checkpoint / "optimizer.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="PEFT \\(LoRA\\) adapter checkpoint.*--output-dir") as caught:
        RewardScorer(checkpoint)
    assert "pickle" not in str(caught.value)
    (checkpoint / "reward_config.json").write_text("{}")  # OUTPUT_DIR/adapter/ of --keep-adapter instead
    with pytest.raises(ValueError, match="saved LoRA adapter.*load_adapter"):
        RewardScorer(checkpoint)


def test_lora_checkpoint_with_reward_config_is_still_named_a_checkpoint(tmp_path):
    """LoRA checkpoints hold reward_config.json too (RewardConfigInLoraCheckpoints), which was the
    one mark of an --keep-adapter adapter/: every checkpoint-N/ was called a saved adapter to rebuild
    with load_adapter. A checkpoint is now rebuilt on its run's base model (test_lora_checkpoint.py);
    one that names none is refused as a checkpoint, saying where to name it."""
    checkpoint = tmp_path / "checkpoint-10"
    checkpoint.mkdir()
    for name in ("adapter_config.json", "reward_config.json", "trainer_state.json"):
        (checkpoint / name).write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a LoRA checkpoint that names no base model.*base_model_name_or_path"):
        RewardScorer(checkpoint)


def test_pickle_only_folder_is_refused(tmp_path, model):
    bare = tmp_path / "bare"
    bare.mkdir()
    torch.save(model.state_dict(), bare / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"(?s)safetensors.*pickle.*safetensors"):
        RewardScorer(bare)
    configured = tmp_path / "configured"
    configured.mkdir()
    model.config.save_pretrained(configured)
    torch.save(model.state_dict(), configured / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"(?s)safetensors.*pickle"):
        RewardScorer(configured)


def test_saved_folder_loads_and_scores_like_the_model(tmp_path, model, tokenizer, scorer):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = RewardScorer(tmp_path, device="cpu", max_length=MAX_LENGTH)
    assert loaded.source == str(tmp_path)
    prompts, responses = ["Hi", "What is 2+2?"], ["Hello!", "4"]
    assert np.allclose(loaded.score(prompts, responses), scorer.score(prompts, responses), atol=1e-6)


def test_bf16_backbone_keeps_an_fp32_head_and_close_scores(tmp_path, model, tokenizer, scorer):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    prompts, responses = ["Hi", "What is 2+2?", "Say no"], ["Hello!", "4", "no"]
    exact = np.array(scorer.score(prompts, responses))
    for half in (RewardScorer(tmp_path, device="cpu", max_length=MAX_LENGTH, dtype="bf16"),  # loaded in bf16
                 RewardScorer(helpers.tiny_reward_model(alpha=2.0).eval(), tokenizer=tokenizer, dtype=torch.bfloat16)):
        assert half.model.score.weight.dtype == torch.float32
        assert next(half.model.backbone.parameters()).dtype == torch.bfloat16
    loaded_half = RewardScorer(tmp_path, device="cpu", max_length=MAX_LENGTH, dtype="bf16")
    close = np.array(loaded_half.score(prompts, responses))
    assert np.abs(close - exact).max() <= 0.05 * max(np.abs(exact).max(), 1.0)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_a_callers_model_in_bf16_whole_is_scored_with_an_fp32_head(model, tokenizer, dtype):
    """`model.to(torch.bfloat16)` then `RewardScorer(model, dtype=...)`: the head stayed bf16 (the
    backbone already had the dtype, or only it was converted), so its 8-bit mantissa gave nearby texts
    one and the same reward; the docs promise an fp32 head. The caller's model is left in bf16."""
    half = copy.deepcopy(model).to(torch.bfloat16)
    scorer = RewardScorer(half, tokenizer=tokenizer, device="cpu", max_length=MAX_LENGTH, dtype=dtype)
    assert scorer.model.score.weight.dtype == torch.float32
    assert next(scorer.model.backbone.parameters()).dtype == resolve_dtype(dtype)
    assert half.score.weight.dtype == torch.bfloat16
    rewards = scorer.raw_rewards("Tell me about the sky", [f"The sky is blue, reason {i}." for i in range(8)])
    assert len(set(rewards)) == 8


def test_unknown_dtype_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="dtype must be one of"):
        RewardScorer(model, tokenizer=tokenizer, dtype="int4")


# ---------------------------------------------------------------- score_file


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_score_file_writes_every_row_once_in_order(tmp_path, scorer):
    rows = [{"prompt": f"question {i}?", "response": "answer " * (i % 7 + 1)} for i in range(11)]
    rows[4] = {"prompt": "no response here"}  # invalid: skipped and counted
    data = _write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "out" / "scores.jsonl"
    counts = score_file(scorer, data, output, skip_invalid=True, chunk_rows=3)
    assert counts == {"rows": 10, "skipped": 1, "output": str(output),
                      "truncation": {"texts": 10, "prompt_cut": 0, "response_cut": 0}}
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [line["row"] for line in lines] == [i + 1 for i in range(11) if i != 4]
    valid = [row for i, row in enumerate(rows) if i != 4]
    assert [(line["prompt"], line["response"]) for line in lines] == [(r["prompt"], r["response"]) for r in valid]
    expected = scorer.score([r["prompt"] for r in valid], [r["response"] for r in valid])
    assert np.allclose([line["score"] for line in lines], expected, atol=1e-5)
    raw = scorer.raw_rewards([r["prompt"] for r in valid], [r["response"] for r in valid])
    assert np.allclose([line["raw_reward"] for line in lines], raw, atol=1e-5)  # P(a > b) from the file alone
    assert all(line.keys() == {"row", "prompt", "response", "score", "raw_reward"} for line in lines)
    assert sorted(p.name for p in output.parent.iterdir()) == ["scores.jsonl"]  # no temp file left


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_score_file_writes_into_a_pipe_or_device_in_place(tmp_path, scorer):
    """`--output /dev/stdout` (or /dev/null, a shell's >(...)) had a finished temporary file renamed
    over the device node: as root /dev/stdout became a regular file for the whole machine, and the
    pipe's reader got nothing. A named pipe stands in for them."""
    rows = [{"prompt": f"q{i}", "response": f"answer {i}"} for i in range(3)]
    data = _write_jsonl(tmp_path / "in.jsonl", rows)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there, so the writer need not wait
    try:
        counts = score_file(scorer, data, pipe)
        text = os.read(reader, 1 << 16).decode("utf-8")
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(pipe.stat().st_mode)  # still the pipe, not a file put in its place
    assert [json.loads(line)["row"] for line in text.splitlines()] == [1, 2, 3] and counts["rows"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "pipe"]


def test_score_file_writes_through_a_link_to_its_target(tmp_path, scorer):
    """`--output latest.jsonl`, a link to this run's file, had the link replaced by a new file and
    the target it names left with its old contents."""
    data = _write_jsonl(tmp_path / "in.jsonl", [{"prompt": "q", "response": "a"}])
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "scores.jsonl"
    target.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    score_file(scorer, data, link)
    assert link.is_symlink() and json.loads(target.read_text(encoding="utf-8"))["row"] == 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.jsonl"]  # no temp file left


def test_score_file_names_the_file_of_each_row_for_a_folder(tmp_path, scorer):
    """Row numbers restart in each file of a folder, so lines carry the file too: (file, row) is
    unique and in input order, and a single file's lines stay as they were (no "file")."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write_jsonl(folder / "a.jsonl", [{"prompt": f"a{i}", "response": f"ra{i}"} for i in range(3)])
    _write_jsonl(folder / "b.jsonl", [{"prompt": f"b{i}", "response": f"rb{i}"} for i in range(2)])
    output = tmp_path / "scores.jsonl"
    score_file(scorer, folder, output, chunk_rows=2)
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [(line["file"], line["row"], line["prompt"]) for line in lines] == [
        ("a.jsonl", 1, "a0"), ("a.jsonl", 2, "a1"), ("a.jsonl", 3, "a2"), ("b.jsonl", 1, "b0"), ("b.jsonl", 2, "b1")]
    single = tmp_path / "single.jsonl"
    score_file(scorer, folder / "a.jsonl", single)
    assert all("file" not in json.loads(line) for line in single.read_text(encoding="utf-8").splitlines())


def test_score_file_shards_split_the_valid_rows(tmp_path, scorer):
    rows = [{"prompt": f"q{i}", "response": f"r{i}"} for i in range(7)]
    rows.insert(2, {"prompt": "p", "response": ""})  # skipped alike by every shard
    data = _write_jsonl(tmp_path / "in.jsonl", rows)
    seen = []
    for index in range(3):
        part = tmp_path / f"part{index}.jsonl"
        counts = score_file(scorer, data, part, skip_invalid=True, shard=(index, 3))
        assert counts["skipped"] == 1
        seen += [json.loads(line)["row"] for line in part.read_text().splitlines()]
    assert sorted(seen) == [1, 2, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="shard"):
        score_file(scorer, data, tmp_path / "x.jsonl", shard=(3, 3))
    assert not (tmp_path / "x.jsonl").exists()


def test_score_file_limit_scores_the_first_valid_rows_on_every_shard(tmp_path, scorer):
    rows = [{"prompt": f"q{i}", "response": f"r{i}"} for i in range(9)]
    rows.insert(1, {"prompt": "p", "response": ""})  # skipped: not counted towards the limit
    rows.append({"prompt": "p"})  # past the limit: never read, so not an error
    data = _write_jsonl(tmp_path / "in.jsonl", rows)
    counts = score_file(scorer, data, tmp_path / "all.jsonl", skip_invalid=True, limit=4)
    assert counts["rows"] == 4
    assert [json.loads(line)["row"] for line in (tmp_path / "all.jsonl").read_text().splitlines()] == [1, 3, 4, 5]
    seen = []
    for index in range(2):
        part = tmp_path / f"part{index}.jsonl"
        score_file(scorer, data, part, skip_invalid=True, shard=(index, 2), limit=4)
        seen += [json.loads(line)["row"] for line in part.read_text().splitlines()]
    assert sorted(seen) == [1, 3, 4, 5]
    # without --skip-invalid the bad last row stops a full run, but a limit stops reading before it
    bad_tail = _write_jsonl(tmp_path / "tail.jsonl", [{"prompt": "q", "response": "r"}, {"prompt": "p"}])
    with pytest.raises(RewardDataError):
        score_file(scorer, bad_tail, tmp_path / "full.jsonl")
    assert score_file(scorer, bad_tail, tmp_path / "one.jsonl", limit=1)["rows"] == 1
    # a --columns entry naming no column of the rows read is refused with a limit too
    with pytest.raises(RewardDataError, match="no row has a column 'answr'"):
        score_file(scorer, data, tmp_path / "typo.jsonl", columns="completion=answr", skip_invalid=True, limit=2)
    with pytest.raises(ValueError, match="limit"):
        score_file(scorer, data, tmp_path / "x.jsonl", limit=0)


def test_score_file_marks_the_lines_whose_text_was_cut(tmp_path, scorer):
    """The summary said "2 of 4 responses were cut" (their scores ignore the end), but no line said
    which: the cut lines now carry `prompt_cut` / `response_cut`, as many as the summary counts."""
    long = "word " * 200  # > MAX_LENGTH tokens alone
    rows = [{"prompt": "p", "response": long}, {"prompt": long, "response": "ok"}, {"prompt": "p", "response": "ok"},
            {"prompt": long, "response": long + "end"}]
    data = _write_jsonl(tmp_path / "in.jsonl", rows)
    output = tmp_path / "scores.jsonl"
    counts = score_file(scorer, data, output, chunk_rows=3)
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [{key for key in line if key.endswith("_cut")} for line in lines] == [
        {"response_cut"}, {"prompt_cut"}, set(), {"prompt_cut", "response_cut"}]
    assert all(line[key] is True for line in lines for key in line if key.endswith("_cut"))
    assert counts["truncation"] == {"texts": 4, "prompt_cut": 2, "response_cut": 2}


@pytest.mark.parametrize("name", ["scores.csv", "scores.parquet", "scores.json", "scores.jsonl.gz", "S.TSV"])
def test_score_file_refuses_an_output_named_for_another_format(tmp_path, scorer, name):
    """`--output scores.csv` (or .parquet, .json, .jsonl.gz) got JSON Lines under that name, which
    pandas, `datasets` and rewardkit's own reader ("name it .jsonl") then failed to read."""
    data = _write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(ValueError, match=r"written as uncompressed JSON Lines.*name it \.jsonl"):
        score_file(scorer, data, tmp_path / name)
    assert list(tmp_path.iterdir()) == [data]
    assert score_file(scorer, data, tmp_path / "scores.out")["rows"] == 1  # a name of no known format is kept


def test_score_file_leaves_no_output_on_bad_data(tmp_path, scorer):
    data = _write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p"}])
    output = tmp_path / "scores.jsonl"
    with pytest.raises(RewardDataError, match="line 2"):
        score_file(scorer, data, output)
    assert list(tmp_path.iterdir()) == [data]


# ---------------------------------------------------------------- arguments checked up front


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("device, says", [("cuda", "sees no CUDA GPU"), ("cuda:1", "sees no CUDA GPU"),
                                          ("gpu", "device must be 'cpu', 'cuda'")])
def test_an_unusable_device_is_a_clear_error_before_loading(model, tokenizer, device, says):
    with pytest.raises(ValueError, match=says):
        RewardScorer(model, tokenizer=tokenizer, device=device)


@pytest.mark.parametrize("bad", [{"what": "x"}, None, {"a", "b"}])
def test_odd_text_containers_name_the_argument(scorer, bad):
    with pytest.raises(TypeError, match="responses must be a string or a list of strings"):
        scorer.score("q", bad)
    with pytest.raises(TypeError, match="prompts must be a string or a list of strings"):
        scorer.score(bad, ["r"])


def test_generators_are_read_once_and_candidates_named_by_their_place(scorer):
    assert scorer.score(iter(["q", "q"]), (r for r in ["a", "b"])) == scorer.score(["q", "q"], ["a", "b"])
    with pytest.raises(TypeError, match=r"candidates\[1\]\[1\] must be a string"):
        scorer.best_of_n(["q", "q"], [["5", "4"], ["x", 3]])


def test_batch_size_dtype_and_fp16_on_cpu(model, tokenizer, caplog):
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        RewardScorer(model, tokenizer=tokenizer, device="cpu", batch_size=2.5)
    with pytest.raises(ValueError, match="dtype must be one of"):
        RewardScorer(model, tokenizer=tokenizer, device="cpu", dtype=torch.int8)
    copy = helpers.tiny_reward_model()
    with caplog.at_level("WARNING", logger="rewardkit.scoring"):
        RewardScorer(copy, tokenizer=tokenizer, device="cpu", dtype="fp16")
    assert "fp16 on a CPU is emulated" in caplog.text


def test_default_device_of_a_launched_rank_is_its_own_gpu(monkeypatch):
    """Under torchrun / accelerate launch (e.g. `reward_function(path)` given to a multi-GPU GRPO run,
    created before the Trainer sets each rank's device), device=None must mean this rank's GPU,
    not cuda:0 for every rank. Simulated: nothing runs on a GPU."""
    from rewardkit.scoring import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert pick_device(None) == torch.device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pick_device(None).type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert pick_device(None) == torch.device("cpu")
