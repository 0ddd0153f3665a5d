"""Two half-batches at once on a multi-core CPU (rewardkit/cpu_workers.py, RewardTrainer.training_step):
the same loss, gradient and training metrics as one whole batch, reproducible, and off where it
would change a run."""

from __future__ import annotations

import threading

import pytest
import torch

from rewardkit.cpu_workers import cpu_worker_split, map_in_workers
from rewardkit.features import PairEncoder, encode_rows
from rewardkit.fit import disable_dropout
from rewardkit.training import RewardTrainer, _balanced_cut, halve_batch
from rewardkit.training_args import RewardTrainingArguments
from tests import helpers

WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "paper", "window", "a", "very", "long", "answer"]


def _rows(objective: str, n: int) -> list[dict]:
    words = lambda i, k: " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k))  # noqa: E731
    if objective == "pairwise":
        return [{"prompt": words(i, 2 + i % 5), "chosen": words(i, 1 + i % 7), "rejected": words(i + 3, 1 + i % 4),
                 "margin": 0.1 * i} for i in range(n)]
    if objective == "mse":
        return [{"prompt": words(i, 2 + i % 5), "response": words(i, 1 + i % 9), "reward": float(i % 3)} for i in range(n)]
    return [{"prompt": words(i, 3), "responses": [words(i + j, 1 + (i * j) % 6) for j in range(2 + i % 3)]}
            for i in range(n)]


def _trainer(tmp_path, tokenizer, objective: str, **overrides) -> RewardTrainer:
    torch.manual_seed(0)
    model = helpers.tiny_reward_model()
    disable_dropout(model)
    args = RewardTrainingArguments(output_dir=str(tmp_path), precision="fp32", per_device_train_batch_size=8,
                                   report_to="none", disable_tqdm=True, **overrides)
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, objective=objective)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; here we call training_step alone
    return trainer


def _batch(trainer, tokenizer, objective: str, n: int) -> dict[str, torch.Tensor]:
    return trainer.data_collator(encode_rows(_rows(objective, n), objective, PairEncoder(tokenizer, 32)))


@pytest.mark.parametrize("objective", ["pairwise", "mse", "ranking"])
def test_weighted_halves_give_the_whole_batch_loss(tmp_path, tokenizer, objective):
    trainer = _trainer(tmp_path, tokenizer, objective)
    batch = _batch(trainer, tokenizer, objective, 7)  # odd: halves of 3 and 4 examples
    trainer.model.eval()
    with torch.no_grad():
        whole = trainer.compute_loss(trainer.model, batch)
        halves = halve_batch(batch, objective)
        split = sum(weight * trainer.compute_loss(trainer.model, half) for half, weight in halves)
    assert len(halves) == 2 and sum(weight for _, weight in halves) == pytest.approx(1.0)
    assert float(split) == pytest.approx(float(whole), abs=1e-6)
    rows = sum(half["input_ids"].shape[0] for half, _ in halves)
    assert rows == batch["input_ids"].shape[0]
    for half, _ in halves:  # padding columns no row of the half uses are gone
        assert bool(half["attention_mask"][:, -1].any()) and half["input_ids"].shape == half["attention_mask"].shape


def test_the_cut_balances_padded_tokens_not_example_counts():
    assert _balanced_cut([[100, 90]] + [[10, 12]] * 7) == 1  # one long pair vs seven short ones
    assert _balanced_cut([[50, 50]] * 8) == 4
    assert _balanced_cut([[5], [5]]) == 1
    assert _balanced_cut([[60, 60], [50, 50], [40, 40], [30, 30]]) == 2  # 4 x 60 | 4 x 40 beats 2 x 60 | 6 x 50


def test_batches_that_cannot_be_halved_stay_whole(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, "pairwise")
    one_pair = _batch(trainer, tokenizer, "pairwise", 1)
    assert halve_batch(one_pair, "pairwise") == [(one_pair, 1.0)]
    unknown = dict(_batch(trainer, tokenizer, "pairwise", 4), extra=torch.ones(4))
    assert len(halve_batch(unknown, "pairwise")) == 1


@pytest.mark.parametrize("objective", ["pairwise", "ranking"])
def test_threaded_step_has_the_whole_batch_gradient_and_metrics(tmp_path, tokenizer, two_threads, objective):
    split = _trainer(tmp_path / "a", tokenizer, objective)
    whole = _trainer(tmp_path / "b", tokenizer, objective, cpu_split_batches=False)
    batch = _batch(split, tokenizer, objective, 9)
    threads_seen = []
    split.model.register_forward_pre_hook(lambda *_: threads_seen.append(threading.get_ident()))
    for trainer in (split, whole):
        trainer.current_gradient_accumulation_steps = 2  # the loss is divided by it either way
        trainer.model.zero_grad(set_to_none=True)
        trainer._train_metrics.clear()
    loss_split = split.training_step(split.model, batch)
    loss_whole = whole.training_step(whole.model, batch)
    assert len(threads_seen) == 2 and threading.get_ident() not in threads_seen  # two halves, off the main thread
    assert float(loss_split) == pytest.approx(float(loss_whole), abs=1e-6)
    for (name, a), b in zip(split.model.named_parameters(), whole.model.parameters()):
        assert (a.grad is None) == (b.grad is None), name  # unused weights (the pooler) get none
        assert a.grad is None or torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4), name
    for name, (weighted_sum, count) in whole._train_metrics.items():
        assert split._train_metrics[name][1] == count
        assert float(split._train_metrics[name][0]) / count == pytest.approx(float(weighted_sum) / count, abs=1e-6)
    assert torch.get_num_threads() == 2


def test_accumulated_gradients_are_reproducible(tmp_path, tokenizer, two_threads):
    """(earlier + a) + b != (earlier + b) + a in floats: earlier steps' gradients are added after
    the two halves, in a fixed order, so repeated runs give bit-identical gradients."""
    results = []
    for attempt in range(3):
        trainer = _trainer(tmp_path / str(attempt), tokenizer, "pairwise")
        trainer.current_gradient_accumulation_steps = 3
        for n in (8, 7, 9):
            trainer.training_step(trainer.model, _batch(trainer, tokenizer, "pairwise", n))
        results.append([p.grad.clone() for p in trainer.model.parameters() if p.grad is not None])
    for other in results[1:]:
        assert len(other) == len(results[0]) and all(torch.equal(a, b) for a, b in zip(results[0], other))


def test_no_halving_with_dropout_or_when_turned_off(tmp_path, tokenizer):
    trainer = _trainer(tmp_path, tokenizer, "pairwise")
    assert trainer._can_halve(trainer.model)
    trainer.model.backbone.embeddings.dropout.p = 0.1  # random numbers drawn in two threads: order varies
    assert not trainer._can_halve(trainer.model)
    off = _trainer(tmp_path / "off", tokenizer, "pairwise", cpu_split_batches=False)
    assert not off._can_halve(off.model)


def test_worker_split_and_map(two_threads):
    assert cpu_worker_split(torch.device("cpu"), 2) == (2, 1)
    assert cpu_worker_split(torch.device("cpu"), 1) == (1, 2)
    assert cpu_worker_split(torch.device("cuda"), 8) == (1, 2)
    seen = set()

    def work(x):
        seen.add((threading.get_ident(), torch.get_num_threads()))
        return x * x

    assert list(map_in_workers(work, range(20), 2, 1)) == [x * x for x in range(20)]
    assert {threads for _, threads in seen} == {1} and threading.get_ident() not in {t for t, _ in seen}

    def fail(x):
        if x == 3:
            raise ValueError("piece 3")
        return x

    with pytest.raises(ValueError, match="piece 3"):
        list(map_in_workers(fail, range(10), 2, 1))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("split", [True, False])
def test_mse_loss_is_divided_for_gradient_accumulation(tmp_path, tokenizer, two_threads, split):
    """An mse batch has `labels`; Trainer counts them as items and, for a model whose forward takes
    **kwargs, stops dividing the loss by the accumulation steps. Ours is a mean: it must be divided."""
    trainer = _trainer(tmp_path, tokenizer, "mse", cpu_split_batches=split)
    batch = _batch(trainer, tokenizer, "mse", 8)
    with torch.no_grad():
        whole = float(trainer.compute_loss(trainer.model, batch))
    trainer.current_gradient_accumulation_steps = 2
    step_loss = trainer.training_step(trainer.model, batch, num_items_in_batch=torch.tensor(8))
    assert float(step_loss) == pytest.approx(whole / 2, abs=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_ranking_gradient_accumulation_weighs_micro_batches_by_their_pairs(tmp_path, tokenizer, threads):
    """Two micro-batches, one of two K=2 groups (2 pairs) and one of K=5 and K=4 groups (16 pairs),
    accumulated: the gradient of the mean over all 18 pairs, as the one batch of four groups gives.
    Before, each micro-batch's mean counted half (its 2 pairs weighed as much as the other 16), on
    Trainer's step (1 thread) and on the two-halves step (2 threads) alike."""
    words = lambda i, k: " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k))  # noqa: E731
    rows = [{"prompt": words(i, 3), "responses": [words(i + j, 1 + (i * j) % 6) for j in range(k)]}
            for i, k in enumerate((2, 2, 5, 4))]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gradients = []
        for chunks in ([rows], [rows[:2], rows[2:]]):
            trainer = _trainer(tmp_path, tokenizer, "ranking", gradient_accumulation_steps=len(chunks))
            batches = [trainer.data_collator(encode_rows(chunk, "ranking", PairEncoder(tokenizer, 32))) for chunk in chunks]
            num_items = trainer._get_num_items_in_batch(batches, torch.device("cpu"))
            assert num_items == 1 + 1 + 10 + 6
            trainer.current_gradient_accumulation_steps = len(chunks)
            trainer.model.zero_grad()
            total = sum(float(trainer.training_step(trainer.model, batch, num_items)) for batch in batches)
            gradients.append((total, torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])))
    finally:
        torch.set_num_threads(previous)
    (whole_loss, whole), (accumulated_loss, accumulated) = gradients
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)  # the logged loss: the mean over the 18 pairs
    torch.testing.assert_close(accumulated, whole, rtol=1e-4, atol=1e-6)
