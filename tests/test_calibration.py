"""Calibration: the Bradley-Terry sigmoid, ECE, reliability bins and temperature scaling."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardkit.calibration import (
    T_MAX,
    T_MIN,
    CalibrationWarning,
    at_search_bound,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    pairwise_ece,
    preference_probability,
    reliability_bins,
    symmetrize_pairwise,
    temperature_evidence,
)

T_TRUE = 2.5


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """Latent margins m ~ N(0, 2) and outcomes ~ Bernoulli(σ(m / 2.5)), n = 20000, fixed seed.

    Taken as model logits at T = 1, these are over-confident by a factor 2.5.
    """
    rng = np.random.default_rng(20240611)
    m = rng.normal(0.0, 2.0, size=20_000)
    y = (rng.random(m.size) < preference_probability(m, T_TRUE)).astype(float)
    return m, y


# ---------------------------------------------------------------- sigmoid


def test_preference_probability_values_and_types() -> None:
    assert preference_probability(0.0) == 0.5
    assert isinstance(preference_probability(1.0), float)
    assert preference_probability(1.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference_probability(2.0, temperature=2.0) == pytest.approx(
        preference_probability(1.0)
    )
    arr = preference_probability(np.array([[-1.0, 0.0], [1.0, 2.0]]))
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2)
    np.testing.assert_allclose(arr[0, 0] + arr[1, 0], 1.0)


def test_preference_probability_is_stable() -> None:
    with np.errstate(all="raise"):  # no overflow / invalid warnings
        p = preference_probability(np.array([-1e6, -800.0, 800.0, 1e6]))
    assert np.all(np.isfinite(p))
    assert p[0] == 0.0 and p[-1] == 1.0
    with pytest.raises(ValueError):
        preference_probability(1.0, temperature=0.0)
    with pytest.raises(ValueError):
        preference_probability(1.0, temperature=float("nan"))


# ---------------------------------------------------------------- ECE and reliability


def test_ece_hand_computed() -> None:
    # one bin (0.9–1.0) with confidence 0.9 and half the outcomes 1: gap 0.4
    assert expected_calibration_error([0.9] * 4, [1, 0, 1, 0]) == pytest.approx(0.4)
    # calibrated: 0.7 with 7 of 10 outcomes 1
    assert expected_calibration_error([0.7] * 10, [1] * 7 + [0] * 3) == pytest.approx(0.0)
    # two bins, weighted by count: 3 × |1 − 0.15| (bin 1) + 1 × |0 − 0.95| (bin 9), over 4
    ece = expected_calibration_error([0.15, 0.15, 0.15, 0.95], [1, 1, 1, 0])
    assert ece == pytest.approx((3 * 0.85 + 0.95) / 4)


def test_reliability_bins_structure() -> None:
    bins = reliability_bins([0.0, 0.05, 0.55, 1.0], [0, 1, 1, 1], n_bins=10)
    assert len(bins) == 10
    assert [b["count"] for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]  # 1.0 in the last bin
    assert bins[0]["mean_confidence"] == pytest.approx(0.025)
    assert bins[0]["accuracy"] == 0.5
    assert bins[1]["mean_confidence"] is None and bins[1]["accuracy"] is None
    assert bins[9]["bin_lo"] == pytest.approx(0.9) and bins[9]["bin_hi"] == 1.0
    with pytest.raises(ValueError):
        reliability_bins([1.2], [1])
    with pytest.raises(ValueError):
        reliability_bins([0.5, 0.5], [1])
    with pytest.raises(ValueError):
        reliability_bins([0.5], [1], n_bins=0)


def test_pairwise_ece_symmetric_is_meaningful() -> None:
    # A model that cannot tell any pair apart (p = 0.5) is perfectly calibrated: it is right
    # half the time. The naive one-sided ECE with all outcomes 1 calls it 0.5 off.
    margins = np.zeros(100)
    assert pairwise_ece(margins) == pytest.approx(0.0)
    assert expected_calibration_error(np.full(100, 0.5), np.ones(100)) == pytest.approx(0.5)
    probs, outcomes = symmetrize_pairwise([1.0, -2.0])
    assert probs.shape == outcomes.shape == (4,)
    np.testing.assert_allclose(outcomes, [1, 1, 0, 0])
    np.testing.assert_allclose(probs[:2] + probs[2:], 1.0)


def test_pairwise_ece_equals_confidence_ece() -> None:
    """With an even number of bins, symmetric ECE = Guo et al.'s ECE on max(p, 1 − p)."""
    rng = np.random.default_rng(0)
    m = rng.normal(0.0, 2.0, size=5000)
    p = preference_probability(m)
    conf = np.maximum(p, 1 - p)
    correct = (m > 0).astype(float)
    assert pairwise_ece(m) == pytest.approx(expected_calibration_error(conf, correct), abs=1e-9)


# ---------------------------------------------------------------- temperature scaling


def test_fit_temperature_recovers_true_t(synthetic) -> None:
    m, y = synthetic
    t = fit_temperature(m, outcomes=y)
    assert isinstance(t, float)
    assert t == pytest.approx(T_TRUE, rel=0.05)


def test_fit_temperature_default_outcomes_match_oriented_margins(synthetic) -> None:
    """Margins oriented as chosen − rejected (outcome 1) give the same fit as 0/1 outcomes."""
    m, y = synthetic
    oriented = np.where(y == 1, m, -m)
    assert fit_temperature(oriented) == pytest.approx(fit_temperature(m, outcomes=y), rel=1e-6)


def test_fit_temperature_is_scale_equivariant(synthetic) -> None:
    m, y = synthetic
    assert fit_temperature(3 * m, outcomes=y) == pytest.approx(
        3 * fit_temperature(m, outcomes=y), rel=1e-5
    )


def test_fit_temperature_is_nll_minimum(synthetic) -> None:
    m, y = synthetic
    t = fit_temperature(m, outcomes=y)
    best = negative_log_likelihood(m, y, t)
    for other in (1.0, t * 0.95, t * 1.05, 10.0):
        assert best <= negative_log_likelihood(m, y, other) + 1e-12


def test_calibration_reduces_ece(synthetic) -> None:
    m, y = synthetic
    oriented = np.where(y == 1, m, -m)  # chosen − rejected
    before = pairwise_ece(oriented, 1.0)
    after = pairwise_ece(oriented, fit_temperature(oriented))
    assert after <= before
    assert before > 0.05  # over-confident logits really are miscalibrated
    assert after < 0.02


def test_fit_temperature_all_zero_margins() -> None:
    with pytest.warns(CalibrationWarning, match="zero"):
        assert fit_temperature(np.zeros(10)) == 1.0


def test_fit_temperature_perfectly_separated_clamps_low() -> None:
    with pytest.warns(CalibrationWarning, match="separated"):
        assert fit_temperature([0.5, 1.0, 2.0, 0.0]) == T_MIN
    with pytest.warns(CalibrationWarning, match="separated"):
        assert fit_temperature([1.0, -1.0], outcomes=[1, 0]) == T_MIN


def test_fit_temperature_all_wrong_clamps_high() -> None:
    with pytest.warns(CalibrationWarning, match="against"):
        assert fit_temperature([-0.5, -1.0]) == T_MAX


def test_a_fit_that_ends_on_a_bound_by_search_is_at_the_bound() -> None:
    """Wrong on balance but not all wrong: the golden-section search runs into T_MAX and returns
    it only to rounding (999.9999999999998), which `T < T_MAX` took for an estimate."""
    with pytest.warns(CalibrationWarning, match="search bound"):
        fitted = fit_temperature(np.array([-1.0, 0.2, -0.5]))
    assert fitted != T_MAX and at_search_bound(fitted)
    assert at_search_bound(T_MIN) and at_search_bound(T_MAX) and at_search_bound(T_MIN * (1 + 1e-9))
    assert not at_search_bound(1.0) and not at_search_bound(T_MAX * 0.99) and not at_search_bound(T_MIN * 1.01)
    with pytest.raises(ValueError, match="finite number > 0"):
        at_search_bound(0.0)


def test_fit_temperature_invalid_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        fit_temperature([])
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature([1.0, float("inf")])
    with pytest.raises(ValueError, match="length"):
        fit_temperature([1.0, -1.0], outcomes=[1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_temperature([1.0, -1.0], outcomes=[1.0, 2.0])


def test_fit_temperature_soft_labels() -> None:
    # soft outcome σ(m / 2) exactly: the NLL (cross-entropy) is minimal at T = 2
    m = np.linspace(-3, 3, 13)
    y = preference_probability(m, 2.0)
    assert fit_temperature(m, outcomes=y) == pytest.approx(2.0, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=30))
def test_fit_temperature_always_in_bounds(margins: list[float]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        t = fit_temperature(margins)
    assert T_MIN <= t <= T_MAX
    assert math.isfinite(negative_log_likelihood(margins, np.ones(len(margins)), t))


def _bt_margins(n: int, true_t: float, seed: int, spread: float = 1.0) -> np.ndarray:
    """chosen − rejected margins of pairs whose labels follow Bradley-Terry at temperature true_t."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(0.0, spread, n)
    won = rng.random(n) < 1.0 / (1.0 + np.exp(-raw / true_t))
    return np.where(won, raw, -raw)


def test_temperature_evidence_interval_covers_the_truth_and_separates_it_from_1() -> None:
    margins = _bt_margins(4000, 0.5, seed=3)
    fitted = fit_temperature(margins)
    evidence = temperature_evidence(margins, fitted)
    low, high = evidence["temperature_interval"]
    assert low < 0.5 < high and low < fitted < high and high < 1.0
    assert evidence["temperature_differs_from_1"] and evidence["temperature_lr_vs_1"] > 3.841
    # each end is where the likelihood-ratio statistic against the fitted T reaches 3.84
    n, best = margins.size, negative_log_likelihood(margins, np.ones(margins.size), fitted)
    for end in (low, high):
        statistic = 2 * n * (negative_log_likelihood(margins, np.ones(n), end) - best)
        assert statistic == pytest.approx(3.841, abs=1e-3)


def test_temperature_evidence_counts_the_pairs_of_one_group_as_correlated() -> None:
    """The K-choose-2 pairs of a ranked group share responses, but the interval for T counted them
    as independent pairs, so it was too narrow. In the extreme, six copies of each of 300 pairs in
    one group carry the evidence of 300 pairs: given the groups, the interval is theirs."""
    margins = _bt_margins(300, 0.5, seed=5)
    alone = temperature_evidence(margins, fit_temperature(margins))
    copies = np.repeat(margins, 6)
    fitted = fit_temperature(copies)
    naive = temperature_evidence(copies, fitted)
    grouped = temperature_evidence(copies, fitted, groups=np.repeat(np.arange(margins.size), 6))
    assert naive["temperature_interval"][0] > 1.1 * alone["temperature_interval"][0]  # far too narrow
    assert grouped["temperature_interval"] == pytest.approx(alone["temperature_interval"], rel=0.02)
    assert grouped["temperature_lr_vs_1"] == pytest.approx(alone["temperature_lr_vs_1"], rel=0.1)
    assert grouped["temperature_interval_by_group"] is True and "temperature_interval_by_group" not in naive
    with pytest.raises(ValueError, match="differ in length"):
        temperature_evidence(copies, fitted, groups=np.arange(3))


def test_temperature_evidence_says_when_a_few_pairs_cannot_tell_t_from_1() -> None:
    """A weak model on 150 pairs: the interval for T is wide and holds 1 (its top is the search
    bound): the fitted T is a guess these pairs cannot back."""
    margins = _bt_margins(150, 1.0, seed=0, spread=0.3)  # small margins, as a weak model gives
    fitted = fit_temperature(margins)
    evidence = temperature_evidence(margins, fitted)
    low, high = evidence["temperature_interval"]
    assert low < 1.0 < high and not evidence["temperature_differs_from_1"]
    assert evidence["temperature_lr_vs_1"] < 3.841



def test_margins_far_below_1e_3_get_a_fitted_t_not_a_search_bound():
    """A model a few steps into training has reward margins near 1e-4. The search started at
    T = 1e-3, so on pairs it got right 2 times in 3 the fit ended on that bound and evaluate said
    "the pairs are perfectly separated, or the model prefers the rejected responses on balance":
    neither was true. The likelihood depends on margin / T only, so the fit at scale 1e-4 is the
    fit at scale 1 divided by 1e4."""
    rng = np.random.default_rng(0)
    margins = rng.normal(0.4, 1.0, 300)
    at_one = fit_temperature(margins)
    small = fit_temperature(margins * 1e-4)
    assert not at_search_bound(small) and small == pytest.approx(at_one * 1e-4, rel=1e-5)


def test_search_bound_reason_names_the_bound_and_its_cause():
    """One message named both causes for either bound ("perfectly separated, or prefers the rejected
    responses"); each bound has one cause."""
    from rewardkit.calibration import search_bound_reason

    assert "lower bound" in search_bound_reason(T_MIN) and "separated" in search_bound_reason(T_MIN)
    assert "upper bound" in search_bound_reason(T_MAX) and "rejected responses" in search_bound_reason(T_MAX)
    assert "rejected" not in search_bound_reason(T_MIN) and "separated" not in search_bound_reason(T_MAX)
