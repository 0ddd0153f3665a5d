"""Losses against hand-computed values."""

import math

import pytest
import torch

from modeling_reward import mse_loss, pairwise_loss, ranking_loss


def _neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


def test_pairwise_loss_matches_hand_computed():
    chosen = torch.tensor([2.0, 0.5, -1.0])
    rejected = torch.tensor([1.0, 1.5, -1.0])
    expected = (_neg_log_sigmoid(1.0) + _neg_log_sigmoid(-1.0) + _neg_log_sigmoid(0.0)) / 3
    assert pairwise_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_loss_with_margin_and_column_shapes():
    chosen = torch.tensor([[2.0], [0.5]])  # (B, 1), as the model returns
    rejected = torch.tensor([[1.0], [1.5]])
    margin = torch.tensor([0.5, 2.0])  # (B,): must not broadcast to (B, B)
    expected = (_neg_log_sigmoid(1.0 - 0.5) + _neg_log_sigmoid(-1.0 - 2.0)) / 2
    assert pairwise_loss(chosen, rejected, margin).item() == pytest.approx(expected, rel=1e-6)
    assert pairwise_loss(chosen, rejected, margin.unsqueeze(1)).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="margin"):
        pairwise_loss(torch.zeros(3), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        pairwise_loss(torch.zeros(3, 2), torch.zeros(3, 2))


def test_ranking_loss_k4_is_mean_of_six_pairwise_losses():
    rewards = torch.tensor([[1.5, 2.0, -0.3, 0.7]])  # best first in the annotation
    pair_values = []
    for i in range(4):
        for j in range(i + 1, 4):
            pair_values.append(_neg_log_sigmoid(rewards[0, i].item() - rewards[0, j].item()))
    assert len(pair_values) == 6
    assert ranking_loss(rewards).item() == pytest.approx(sum(pair_values) / 6, rel=1e-6)
    pairs_i = torch.tensor([0, 0, 0, 1, 1, 2])
    pairs_j = torch.tensor([1, 2, 3, 2, 3, 3])
    via_pairwise = pairwise_loss(rewards[0, pairs_i], rewards[0, pairs_j])
    assert ranking_loss(rewards).item() == pytest.approx(via_pairwise.item(), rel=1e-6)


def test_ranking_loss_ignores_padded_responses():
    rewards = torch.tensor([[1.0, 0.0, 99.0, -99.0], [0.3, 0.1, -0.2, 0.5]])
    sizes = torch.tensor([2, 4])
    pair_values = [_neg_log_sigmoid(1.0)]
    row = rewards[1].tolist()
    pair_values += [_neg_log_sigmoid(row[i] - row[j]) for i in range(4) for j in range(i + 1, 4)]
    assert ranking_loss(rewards, sizes).item() == pytest.approx(sum(pair_values) / 7, rel=1e-6)


def test_ranking_loss_gradient_pushes_best_up():
    rewards = torch.zeros(1, 3, requires_grad=True)
    ranking_loss(rewards).backward()
    assert rewards.grad[0, 0] < 0 < rewards.grad[0, 2]  # descent raises the best, lowers the worst


def test_mse_loss():
    assert mse_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="labels"):
        mse_loss(torch.zeros(2, 1), torch.zeros(3))
