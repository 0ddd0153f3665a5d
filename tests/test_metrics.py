"""Metrics against hand-computed values, degenerate inputs and a few properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardkit.metrics import (
    kendall_tau_b,
    pairwise_metrics,
    pearson,
    rank_average,
    ranking_length_bias,
    ranking_metrics,
    reward_stats,
    scalar_metrics,
    spearman,
    within_group_margins,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def assert_json_clean(d: dict) -> None:
    """Plain Python values only, and no NaN anywhere (allow_nan=False raises on NaN)."""
    json.dumps(d, allow_nan=False)


# ---------------------------------------------------------------- pairwise, hand-computed

CHOSEN = [2.0, 1.0, 0.5, 3.0]
REJECTED = [1.0, 2.0, 0.5, 0.0]  # margins 1, -1, 0 (tie), 3


def test_pairwise_hand_computed() -> None:
    m = pairwise_metrics(CHOSEN, REJECTED)
    assert m["n"] == 4
    assert m["ties"] == 1
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)  # the tie counts half
    assert m["mean_margin"] == pytest.approx(0.75)
    assert m["median_margin"] == pytest.approx(0.5)
    assert m["temperature"] == 1.0
    p = [sigmoid(x) for x in (1, -1, 0, 3)]
    assert m["brier"] == pytest.approx(np.mean([(1 - q) ** 2 for q in p]))
    assert m["log_loss"] == pytest.approx(np.mean([-math.log(q) for q in p]))
    assert m["mean_confidence"] == pytest.approx(np.mean([max(q, 1 - q) for q in p]))
    # symmetric ECE by hand (10 bins): (p, 1) and (1 - p, 0) for every pair.
    # bins 7 and 2 each hold σ(1) with outcomes {1, 0}: gap σ(1) − 0.5, weight 2/8 each;
    # bin 5 holds 0.5 twice with outcomes {1, 0}: gap 0;
    # bins 9 and 0 hold σ(3) with outcome 1 and 1 − σ(3) with 0: gap 1 − σ(3), weight 1/8 each.
    expected_ece = 0.5 * (sigmoid(1) - 0.5) + 0.25 * (1 - sigmoid(3))
    assert m["ece"] == pytest.approx(expected_ece)
    assert_json_clean(m)


def test_pairwise_temperature_changes_probabilities_not_accuracy() -> None:
    m1 = pairwise_metrics(CHOSEN, REJECTED)
    m2 = pairwise_metrics(CHOSEN, REJECTED, temperature=2.0)
    assert m2["temperature"] == 2.0
    assert m2["accuracy"] == m1["accuracy"]
    assert m2["log_loss"] == pytest.approx(
        np.mean([-math.log(sigmoid(x / 2)) for x in (1, -1, 0, 3)])
    )
    assert m2["mean_confidence"] < m1["mean_confidence"]


def test_pairwise_log_loss_finite_for_huge_wrong_margin() -> None:
    m = pairwise_metrics([0.0], [1e4])
    assert m["log_loss"] == pytest.approx(1e4)
    assert m["accuracy"] == 0.0
    assert_json_clean(m)


def test_pairwise_length_bias_hand_computed() -> None:
    m = pairwise_metrics(
        CHOSEN, REJECTED, chosen_lengths=[10, 20, 5, 7], rejected_lengths=[5, 10, 5, 9]
    )
    lb = m["length_bias"]
    # pair 0: chosen longer, right; pair 1: chosen longer, wrong; pair 2: equal; pair 3: shorter, right
    assert lb["chosen_shorter_n"] == 1
    assert lb["chosen_shorter_accuracy"] == 1.0
    assert lb["chosen_longer_n"] == 2
    assert lb["chosen_longer_accuracy"] == 0.5
    assert lb["unequal_length_n"] == 3
    # longer gets the higher reward in pair 0 only
    assert lb["longer_preferred_rate"] == pytest.approx(1 / 3)
    assert lb["chosen_longer_rate"] == pytest.approx(2 / 3)
    expected_rho = spearman(CHOSEN + REJECTED, [10, 20, 5, 7, 5, 10, 5, 9])
    assert lb["spearman_reward_length"] == pytest.approx(expected_rho)
    assert_json_clean(m)


def test_pairwise_length_bias_none_when_no_shorter_or_all_equal() -> None:
    lb = pairwise_metrics([1, 2], [0, 0], chosen_lengths=[5, 5], rejected_lengths=[5, 5])[
        "length_bias"
    ]
    assert lb["chosen_shorter_accuracy"] is None
    assert lb["chosen_longer_accuracy"] is None
    assert lb["longer_preferred_rate"] is None
    assert lb["spearman_reward_length"] is None  # constant lengths
    assert_json_clean(lb)


def test_pairwise_longer_always_preferred() -> None:
    chosen, rejected = [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]
    lb = pairwise_metrics(chosen, rejected, chosen_lengths=[9, 1, 9], rejected_lengths=[1, 9, 1])[
        "length_bias"
    ]
    assert lb["longer_preferred_rate"] == 1.0
    assert lb["chosen_shorter_accuracy"] == 0.0


def test_pairwise_length_one_and_validation() -> None:
    m = pairwise_metrics([1.0], [0.0])
    assert m["n"] == 1 and m["accuracy"] == 1.0 and m["median_margin"] == 1.0
    with pytest.raises(ValueError, match="empty"):
        pairwise_metrics([], [])
    with pytest.raises(ValueError, match="length"):
        pairwise_metrics([1, 2], [1])
    with pytest.raises(ValueError, match="non-finite"):
        pairwise_metrics([1, float("nan")], [0, 0])
    with pytest.raises(ValueError, match="both"):
        pairwise_metrics([1], [0], chosen_lengths=[3])
    with pytest.raises(ValueError, match="temperature"):
        pairwise_metrics([1], [0], temperature=0.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 50), st.integers(-50, 50)), min_size=1, max_size=40))
def test_pairwise_properties(pairs: list[tuple[int, int]]) -> None:
    c = [float(a) for a, _ in pairs]
    r = [float(b) for _, b in pairs]
    m = pairwise_metrics(c, r)
    flipped = pairwise_metrics(r, c)
    assert 0.0 <= m["accuracy"] <= 1.0
    assert m["accuracy"] + flipped["accuracy"] == pytest.approx(1.0)
    assert m["ties"] == flipped["ties"]
    assert 0.0 <= m["ece"] <= 1.0
    assert 0.5 <= m["mean_confidence"] <= 1.0
    assert_json_clean(m)


# ---------------------------------------------------------------- correlations


def test_rank_average_ties() -> None:
    np.testing.assert_allclose(rank_average([10, 20, 20, 5]), [2, 3.5, 3.5, 1])


def test_spearman_known_permutation() -> None:
    # d = [-1, 1, -1, 1, 0], Σd² = 4, ρ = 1 − 6·4 / (5·24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_pearson_known_value() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_kendall_reversed_and_ties() -> None:
    assert kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x = [1, 2, 2], y = [1, 2, 3]: concordant 2, discordant 0, tie in x 1 pair
    # tau-b = 2 / sqrt((3 − 1)·3)
    assert kendall_tau_b([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


@pytest.mark.parametrize("func", [pearson, spearman, kendall_tau_b])
def test_correlations_undefined_are_none(func) -> None:
    assert func([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert func([1.0, 2.0, 3.0], [0.1, 0.1, 0.1]) is None  # 0.1 sums with rounding
    assert func([1.0], [2.0]) is None


def test_correlations_match_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, size=60).astype(float)
    y = x + rng.integers(-3, 4, size=60)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y)[0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-100, 100), st.integers(-100, 100)), min_size=2, max_size=30))
def test_spearman_invariant_under_monotone_map(pairs: list[tuple[int, int]]) -> None:
    x = np.array([a for a, _ in pairs], dtype=float)
    y = np.array([b for _, b in pairs], dtype=float)
    rho = spearman(x, y)
    assert rho == spearman(3 * x + 7, y) or rho == pytest.approx(spearman(3 * x + 7, y))
    if rho is not None:
        assert -1.0 <= rho <= 1.0


# ---------------------------------------------------------------- scalar


def test_scalar_hand_computed() -> None:
    m = scalar_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert m["n"] == 3
    assert m["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(pearson([1, 2, 3], [1, 2, 5]))
    assert "length_bias" not in m


def test_scalar_lengths_and_degenerate() -> None:
    m = scalar_metrics([3.0, 2.0, 1.0], [1.0, 1.0, 1.0], lengths=[1, 2, 3])
    assert m["pearson"] is None and m["spearman"] is None  # constant target
    assert m["length_bias"]["spearman_reward_length"] == pytest.approx(-1.0)
    assert m["length_bias"]["spearman_target_length"] is None
    assert_json_clean(m)
    one = scalar_metrics([1.0], [2.0])
    assert one["rmse"] == 1.0 and one["pearson"] is None and one["spearman"] is None
    assert_json_clean(one)
    with pytest.raises(ValueError):
        scalar_metrics([1.0, 2.0], [1.0, 2.0], lengths=[1])


# ---------------------------------------------------------------- ranking


def test_ranking_perfect_and_reversed() -> None:
    m = ranking_metrics([[3, 2, 1]])
    order = {key: m.pop(key) for key in ("temperature", "mean_confidence", "ece", "brier", "log_loss")}
    assert m == {
        "n_groups": 1,
        "n_pairs": 3,
        "kendall_tau": 1.0,
        "kendall_tau_groups": 1,
        "top1_accuracy": 1.0,
        "top1_ties": 0,
        "pairwise_accuracy": 1.0,
        "ties": 0,
        "confidence_design_effect": None,  # one group
    }
    # within-group margins (better - worse): 3-2, 3-1, 2-1 = 1, 2, 1; σ(1) = 0.731059, σ(2) = 0.880797
    s1, s2 = sigmoid(1), sigmoid(2)
    assert order["temperature"] == 1.0
    assert order["mean_confidence"] == pytest.approx((2 * s1 + s2) / 3)
    assert order["brier"] == pytest.approx((2 * (1 - s1) ** 2 + (1 - s2) ** 2) / 3)
    assert order["log_loss"] == pytest.approx((-2 * math.log(s1) - math.log(s2)) / 3)
    # both orientations of each pair, 10 bins: |1 - p| in the upper bins, |0 - (1 - p)| in the lower
    assert order["ece"] == pytest.approx((4 * (1 - s1) + 2 * (1 - s2)) / 6)
    rev = ranking_metrics([[1, 2, 3, 4]])
    assert rev["kendall_tau"] == pytest.approx(-1.0)
    assert rev["top1_accuracy"] == 0.0
    assert rev["pairwise_accuracy"] == 0.0


def test_ranking_mixed_groups_with_ties() -> None:
    m = ranking_metrics([[3, 2, 1], [1, 2, 3], [1, 1, 1], [2, 2, 1]])
    assert m["n_groups"] == 4
    assert m["n_pairs"] == 12
    # top-1: 1, 0, 1/3 (three-way tie), 1/2 (two-way tie at the top)
    assert m["top1_accuracy"] == pytest.approx((1 + 0 + 1 / 3 + 1 / 2) / 4)
    # pairs right: 3, 0, 1.5 (all ties), 0.5 + 1 + 1
    assert m["pairwise_accuracy"] == pytest.approx((3 + 0 + 1.5 + 2.5) / 12)
    # the model's ties are counted beside both accuracies, as pairwise_metrics counts its ties
    assert (m["top1_ties"], m["ties"]) == (2, 3 + 1)
    # the all-equal group has no tau; [2, 2, 1] vs true [3, 2, 1]: 2 / sqrt(2·3)
    assert m["kendall_tau_groups"] == 3
    assert m["kendall_tau"] == pytest.approx((1 - 1 + 2 / math.sqrt(6)) / 3)
    assert_json_clean(m)


def test_ranking_kendall_tau_that_averages_to_zero_is_zero() -> None:
    """Groups with tau 0.2, 0.4 and -0.6 averaged to 3.7e-17 (float noise), which report.md showed
    as "Kendall τ | 3.7e-17"; the mean is 0."""
    groups = [[0, 4, 3, 2, 1], [1, 4, 3, 2, 0], [0, 1, 3, 4, 2]]
    assert [kendall_tau_b(g, [5, 4, 3, 2, 1]) for g in groups] == pytest.approx([0.2, 0.4, -0.6])
    assert ranking_metrics(groups)["kendall_tau"] == 0.0
    assert ranking_metrics([[2, 1, 0], [0, 2, 1]])["kendall_tau"] == pytest.approx(1 / 3)


def test_ranking_probabilities_are_those_of_the_within_group_pairs() -> None:
    groups = [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [0.5, 0.5, -1.0], [2.0, -1.0]]
    margins = within_group_margins(groups)
    assert margins.tolist() == [1, 2, 1, -1, -2, -1, 0, 1.5, 1.5, 3]
    m = ranking_metrics(groups, temperature=2.0, n_bins=5)
    pairs = pairwise_metrics(margins, np.zeros_like(margins), temperature=2.0, n_bins=5)
    for key in ("temperature", "mean_confidence", "ece", "brier", "log_loss"):
        assert m[key] == pytest.approx(pairs[key]), key
    assert m["pairwise_accuracy"] == pytest.approx(pairs["accuracy"])
    assert_json_clean(m)


def test_ranking_length_bias_compares_the_model_with_the_labelled_order() -> None:
    """Within-group pairs, better-ranked first: group A lengths [10, 30, 20] -> pairs (10,30),
    (10,20), (30,20); group B [50, 40] -> (50,40). The labelled order puts the longer response
    first in 2 of 4 pairs; the model (rewards rising with length) rewards the longer one in all 4."""
    rewards = [[1.0, 3.0, 2.0], [5.0, 4.0]]
    lengths = [[10, 30, 20], [50, 40]]
    lb = ranking_length_bias(rewards, lengths)
    assert lb["unequal_length_n"] == 4 and lb["chosen_longer_rate"] == 0.5
    assert lb["longer_preferred_rate"] == 1.0
    assert (lb["chosen_shorter_n"], lb["chosen_shorter_accuracy"]) == (2, 0.0)
    assert (lb["chosen_longer_n"], lb["chosen_longer_accuracy"]) == (2, 1.0)
    assert lb["spearman_reward_length"] == pytest.approx(1.0)  # each response once: 5 points, same order


def test_ranking_length_bias_design_effect_counts_a_groups_pairs_together() -> None:
    """12 groups whose better responses are shorter, all right (36 pairs); 10 whose better ones are
    longer (30 pairs), 2 of them with the best response put last (2 wrong pairs each). By hand: pooled
    accuracy p = 62/66; independent variance of the gap p(1 − p)(1/36 + 1/30); cluster-robust: each
    group's Σ w_i (win_i − p), w = 1/36 for shorter and −1/30 for longer pairs, squared and summed,
    times 22/21."""
    short, good_long, bad_long = [3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 3.0, 2.0]
    rewards = [short] * 12 + [good_long] * 8 + [bad_long] * 2
    lengths = [[10, 20, 30]] * 12 + [[30, 20, 10]] * 10
    p = 62 / 66
    independent = p * (1 - p) * (1 / 36 + 1 / 30)
    per_group = [3 * (1 - p) / 36] * 12 + [-3 * (1 - p) / 30] * 8 + [-(2 * (0 - p) + (1 - p)) / 30] * 2
    robust = sum(x * x for x in per_group) * 22 / 21
    lb = ranking_length_bias(rewards, lengths)
    assert lb["design_effect"] == pytest.approx(robust / independent) and lb["design_effect"] > 2
    # no pair misordered: no variance to compare
    assert ranking_length_bias([short] * 3 + [good_long] * 3, [[10, 20, 30]] * 3 + [[30, 20, 10]] * 3)[
        "design_effect"] is None
    # groups of 2 hold one pair each, independent: only the small-sample factor G/(G − 1) is left
    one_pair_each = ranking_length_bias([[2.0, 1.0], [1.0, 2.0]] * 10, [[10, 20], [20, 10]] * 10)
    assert one_pair_each["design_effect"] == pytest.approx(20 / 19)


def test_ranking_confidence_design_effect_counts_a_groups_pairs_together() -> None:
    """One group in the model's order, one reversed (margins 1, 2, 1 and their negatives). By hand:
    under "calibrated" pair i is right with probability s_i = σ(|margin_i|); independent variance
    Σ s(1 − s); cluster-robust: each group's Σ (right_i − s_i), squared and summed, times G/(G − 1) = 2."""
    s1, s2 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(-2))
    independent = 2 * (2 * s1 * (1 - s1) + s2 * (1 - s2))
    robust = 2 * ((2 * (1 - s1) + (1 - s2)) ** 2 + (2 * s1 + s2) ** 2)
    m = ranking_metrics([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])
    assert m["confidence_design_effect"] == pytest.approx(robust / independent) and robust / independent > 2
    assert ranking_metrics([[1.0, 0.0, -1.0]])["confidence_design_effect"] is None  # one group: no spread to see


def test_ranking_degenerate() -> None:
    m = ranking_metrics([[1.0, 1.0]])
    assert m["kendall_tau"] is None and m["pairwise_accuracy"] == 0.5
    assert_json_clean(m)
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics([])
    with pytest.raises(ValueError, match="2"):
        ranking_metrics([[1.0, 2.0], [1.0]])


# ---------------------------------------------------------------- reward stats


def test_reward_stats() -> None:
    s = reward_stats([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4
    assert s["mean"] == 2.5
    assert s["std"] == pytest.approx(math.sqrt(1.25))  # population std, ddof=0
    assert (s["min"], s["max"]) == (1.0, 4.0)
    assert s["q50"] == 2.5
    assert s["q05"] == pytest.approx(1.15)
    assert s["q95"] == pytest.approx(3.85)
    assert list(s) == ["n", "mean", "std", "min", "max", "q05", "q25", "q50", "q75", "q95"]
    assert all(type(v) in (int, float) for v in s.values())
    one = reward_stats([7.0])
    assert one["std"] == 0.0 and one["q05"] == 7.0
    with pytest.raises(ValueError):
        reward_stats([])
    with pytest.raises(ValueError):
        reward_stats([1.0, float("inf")])
