"""Turning reward margins into probabilities, and checking that those probabilities are honest.

A reward model outputs one number per (prompt, response). On its own that number means nothing:
only *differences* between two responses to the same prompt matter. The Bradley-Terry model
(Bradley & Terry, 1952), which is also the loss reward models are trained with, reads a margin
as a probability::

    P(a ≻ b) = σ((r_a − r_b) / T)

``T`` is a temperature. ``T = 1`` is the raw, uncalibrated model. Neural classifiers tend to be
over-confident, and a single scalar ``T`` fitted on held-out data fixes most of it without
changing any ranking ("temperature scaling", Guo et al., 2017, *On Calibration of Modern
Neural Networks*). This module:

* :func:`preference_probability`: the numerically stable sigmoid above;
* :func:`expected_calibration_error` and :func:`reliability_bins`: ECE and the data for a
  reliability diagram (Guo et al., 2017, section 2);
* :func:`pairwise_ece` / :func:`symmetrize_pairwise`: the same for preference pairs, where the
  recorded outcome is always "chosen wins" (see :func:`symmetrize_pairwise` for why both
  orientations are used);
* :func:`fit_temperature`: the maximum-likelihood ``T``, by a bounded golden-section search
  over ``log T`` (numpy only, no torch).

All public functions return plain Python floats / lists / dicts so the results can be written
straight to JSON.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "T_MAX",
    "T_MIN",
    "CalibrationWarning",
    "at_search_bound",
    "search_bound_reason",
    "expected_calibration_error",
    "fit_temperature",
    "negative_log_likelihood",
    "pairwise_ece",
    "preference_probability",
    "reliability_bins",
    "symmetrize_pairwise",
    "temperature_evidence",
    "temperature_fitted_on_these_pairs",
    "temperature_interval_text",
]

logger = logging.getLogger(__name__)

#: Search interval for :func:`fit_temperature`. The likelihood depends on margin / T only, so the
#: range must span the margins' own scale: a model a few steps into training has margins near 1e-4,
#: and a range starting at 1e-3 ended its fit on the bound, called "perfectly separated" at 66%
#: accuracy. Over 1e-6 to 1e6 only margins below ~1e-7 (no signal) or above ~1e7 are out of reach.
T_MIN: float = 1e-6
T_MAX: float = 1e6

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...
_LOG_T_TOL = 1e-10
#: How near a search bound (in log T) a fitted T counts as that bound: the search returns the bound
#: itself only to rounding (exp(log(1e6)) is 999999.9999999995), so `T < T_MAX` is no test.
_BOUND_LOG_TOL = 1e-6


class CalibrationWarning(UserWarning):
    """The temperature fit hit a degenerate case (no information, or separable data)."""


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_finite_1d(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``values`` as a 1-D float64 array; raise ``ValueError`` on NaN/inf or emptiness.

    Silently propagating a NaN into an ECE or a temperature gives numbers that look fine and
    are wrong, so bad input is rejected loudly here.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr


def _check_probs_outcomes(
    probs: ArrayLike, outcomes: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = _as_finite_1d(probs, "probs")
    y = _as_finite_1d(outcomes, "outcomes")
    if p.shape != y.shape:
        raise ValueError(f"probs and outcomes differ in length: {p.size} vs {y.size}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1]")
    if np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1]")
    return p, y


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _check_n_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


# --------------------------------------------------------------------------------------------
# Bradley-Terry probability
# --------------------------------------------------------------------------------------------


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """σ(z) without overflow: ``exp`` is only ever taken of a non-positive number."""
    with np.errstate(under="ignore"):  # exp(-1e6) underflowing to 0 is the right answer
        e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(1 + e^z), stable for large |z|; −log σ(z) = softplus(−z)."""
    with np.errstate(under="ignore"):
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


@overload
def preference_probability(margin: float, temperature: float = 1.0) -> float: ...
@overload
def preference_probability(
    margin: NDArray[Any], temperature: float = 1.0
) -> NDArray[np.float64]: ...
def preference_probability(
    margin: float | ArrayLike, temperature: float = 1.0
) -> float | NDArray[np.float64]:
    """Bradley-Terry probability that the first response is preferred: σ(margin / T).

    ``margin`` is ``r_a − r_b``. A scalar in gives a Python ``float`` out; an array in gives a
    float64 array of the same shape. Stable for any finite margin (``σ(±1e6)`` is exactly 1/0,
    never a NaN or an overflow warning).
    """
    t = _check_temperature(temperature)
    arr = np.asarray(margin, dtype=np.float64)
    p = _sigmoid(arr / t)
    if arr.ndim == 0:
        return float(p)
    return p


# --------------------------------------------------------------------------------------------
# ECE and reliability diagram
# --------------------------------------------------------------------------------------------


def _bin_index(p: NDArray[np.float64], n_bins: int) -> NDArray[np.intp]:
    """Equal-width bins over [0, 1]; bin i is [i/n, (i+1)/n), the last one closed at 1."""
    return np.minimum((p * n_bins).astype(np.intp), n_bins - 1)


def reliability_bins(
    probs: ArrayLike, outcomes: ArrayLike, n_bins: int = 10
) -> list[dict[str, Any]]:
    """Per-bin data for a reliability diagram (Guo et al., 2017, fig. 1).

    ``probs`` are predicted probabilities that the outcome is 1; ``outcomes`` are the observed
    outcomes (0/1, or soft labels in [0, 1]). Returns one dict per equal-width bin, in order,
    including empty ones, so the list always has ``n_bins`` entries::

        {"bin_lo": 0.7, "bin_hi": 0.8, "count": 42,
         "mean_confidence": 0.74,   # mean predicted probability in the bin (None if empty)
         "accuracy": 0.69}          # observed frequency of outcome 1 in the bin (None if empty)

    A calibrated model has ``accuracy ≈ mean_confidence`` in every bin.
    """
    p, y = _check_probs_outcomes(probs, outcomes)
    n_bins = _check_n_bins(n_bins)
    idx = _bin_index(p, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    bins: list[dict[str, Any]] = []
    for i in range(n_bins):
        c = int(counts[i])
        bins.append(
            {
                "bin_lo": i / n_bins,
                "bin_hi": (i + 1) / n_bins,
                "count": c,
                "mean_confidence": float(sum_p[i] / c) if c else None,
                "accuracy": float(sum_y[i] / c) if c else None,
            }
        )
    return bins


def expected_calibration_error(probs: ArrayLike, outcomes: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error: Σ_b (n_b / N) · |accuracy_b − confidence_b|.

    Equal-width bins over [0, 1], each weighted by how many predictions fall in it (Guo et al.,
    2017, eq. 3, in its "probability of outcome 1" form). 0 means perfectly calibrated; it is
    bounded by 1. Read it as "on average, the stated probability is this far from the observed
    frequency".
    """
    bins = reliability_bins(probs, outcomes, n_bins)
    total = sum(b["count"] for b in bins)
    ece = 0.0
    for b in bins:
        if b["count"]:
            ece += b["count"] / total * abs(b["accuracy"] - b["mean_confidence"])
    return float(ece)


def symmetrize_pairwise(
    margins: ArrayLike, temperature: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Both orientations of each preference pair, as (probs, outcomes) for ECE / reliability.

    Why: in a preference data set the label is always "chosen wins", so the naive
    ``(p, outcome=1)`` has every outcome equal to 1, and its ECE just measures how far the
    probabilities are from 1: it rewards over-confidence and cannot tell a calibrated model
    from a lucky one. A pair is equally the statement "rejected loses", so we add
    ``(1 − p, outcome=0)``. In the resulting reliability diagram, the bin around 0.7 holds the
    pairs the model gave 70% *and* the mirror images of those it gave 30%; its observed
    frequency is "how often was the model right when it was 70% sure", which is what
    calibration means. The construction is symmetric around 0.5 and, with an even number of
    bins, equals the confidence-based ECE of Guo et al. (2017) on max(p, 1 − p).

    ``margins`` are ``r_chosen − r_rejected``. Returns arrays of length ``2 * len(margins)``.
    """
    m = _as_finite_1d(margins, "margins")
    p = np.asarray(preference_probability(m, temperature), dtype=np.float64)
    probs = np.concatenate([p, 1.0 - p])
    outcomes = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    return probs, outcomes


def pairwise_ece(margins: ArrayLike, temperature: float = 1.0, n_bins: int = 10) -> float:
    """ECE of the Bradley-Terry probabilities σ(margin / T) on preference pairs.

    ``margins`` are ``r_chosen − r_rejected``. Evaluated on both orientations of each pair
    (see :func:`symmetrize_pairwise` for why the one-sided version is meaningless).
    """
    probs, outcomes = symmetrize_pairwise(margins, temperature)
    return expected_calibration_error(probs, outcomes, n_bins)


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------


def negative_log_likelihood(margins: ArrayLike, outcomes: ArrayLike, temperature: float) -> float:
    """Mean −[y log σ(m/T) + (1 − y) log(1 − σ(m/T))], computed without under/overflow."""
    m = _as_finite_1d(margins, "margins")
    y = _as_finite_1d(outcomes, "outcomes")
    if m.shape != y.shape:
        raise ValueError(f"margins and outcomes differ in length: {m.size} vs {y.size}")
    t = _check_temperature(temperature)
    return _nll(m, y, t)


def _nll(m: NDArray[np.float64], y: NDArray[np.float64], t: float) -> float:
    z = m / t
    # −log σ(z) = softplus(−z); −log(1 − σ(z)) = softplus(z)
    return float(np.mean(y * _softplus(-z) + (1.0 - y) * _softplus(z)))


def _golden_section_min(f: Any, lo: float, hi: float, tol: float = _LOG_T_TOL) -> float:
    """Minimise a unimodal f on [lo, hi] by golden-section search; returns the arg-min."""
    a, b = lo, hi
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    # the end points are candidates too: the optimum may sit on a bound
    candidates = [(f(lo), lo), (fc, c), (fd, d), (f(hi), hi)]
    return min(candidates)[1]


def fit_temperature(margins: ArrayLike, *, outcomes: ArrayLike | None = None) -> float:
    """Maximum-likelihood temperature: the T > 0 minimising the NLL of ``outcomes`` under σ(m/T).

    ``margins`` are reward differences. With ``outcomes=None`` they are ``r_chosen − r_rejected``
    and every outcome is 1 (chosen wins), which is how preference data comes. ``outcomes`` may
    also be 0/1 (or soft labels in [0, 1]) for margins of arbitrarily oriented pairs. Fit on
    held-out pairs, not on the training set (Guo et al., 2017).

    How: the NLL is convex in 1/T (logistic regression with one weight and no bias), hence
    unimodal in log T, so a golden-section search over log T ∈ [log T_MIN, log T_MAX] finds the
    global optimum without derivatives or torch.

    Edge cases (each emits a :class:`CalibrationWarning`):

    * all margins zero: the likelihood does not depend on T; returns 1.0.
    * perfectly separated data (every margin points the right way): the NLL keeps decreasing as
      T → 0, i.e. maximum likelihood says "infinitely sure". Returns the lower bound
      :data:`T_MIN`; this is a symptom of too little (or training-set) data, not a usable T.
    * every margin points the wrong way: NLL decreases as T → ∞; returns :data:`T_MAX`.
    * margins wrong on balance (mean chosen − rejected margin <= 0, hard labels): the NLL, convex
      in 1/T, is smallest at 1/T = 0, so the search ends at :data:`T_MAX` (to rounding) with a
      warning; :func:`at_search_bound` tells such a T from an estimate.

    Raises ``ValueError`` on empty input, non-finite values, or mismatched lengths.
    """
    m = _as_finite_1d(margins, "margins")
    if outcomes is None:
        y = np.ones_like(m)
    else:
        y = _as_finite_1d(outcomes, "outcomes")
        if y.shape != m.shape:
            raise ValueError(f"margins and outcomes differ in length: {m.size} vs {y.size}")
        if np.any((y < 0) | (y > 1)):
            raise ValueError("outcomes must lie in [0, 1]")

    if np.all(m == 0):
        _warn("all margins are zero: the likelihood does not depend on T; returning T = 1.0")
        return 1.0

    # signed agreement of each margin with its outcome; only decisive for hard 0/1 labels
    hard = np.all((y == 0) | (y == 1))
    if hard:
        agree = (2.0 * y - 1.0) * m
        if np.all(agree >= 0):
            _warn(
                "perfectly separated data (every non-zero margin points to the observed "
                f"outcome): the NLL decreases as T -> 0; returning the lower bound T = {T_MIN:g}"
            )
            return T_MIN
        if np.all(agree <= 0):
            _warn(
                "every non-zero margin points against the observed outcome: the NLL decreases "
                f"as T -> inf; returning the upper bound T = {T_MAX:g}"
            )
            return T_MAX

    def objective(log_t: float) -> float:
        return _nll(m, y, math.exp(log_t))

    log_t = _golden_section_min(objective, math.log(T_MIN), math.log(T_MAX))
    t = float(math.exp(log_t))
    if at_search_bound(t):
        _warn(f"temperature fit hit the search bound: T = {t:g}")
    logger.debug("fit_temperature: T = %.6g, NLL = %.6g (n = %d)", t, objective(log_t), m.size)
    return t


def at_search_bound(temperature: float) -> bool:
    """True when a fitted T is one of the search bounds :data:`T_MIN` / :data:`T_MAX`, to rounding.

    Such a T is no estimate: the likelihood kept improving towards the edge (perfectly separated
    pairs, or pairs the model mostly gets wrong), and at T_MAX every probability is about 0.5. The
    one definition that :func:`fit_temperature` warns by and ``rewardkit evaluate --calibrate``
    refuses to store by; compared in log T, because the search lands on a bound only to rounding."""
    log_t = math.log(_check_temperature(temperature))
    return log_t <= math.log(T_MIN) + _BOUND_LOG_TOL or log_t >= math.log(T_MAX) - _BOUND_LOG_TOL


def search_bound_reason(temperature: float) -> str:
    """Why a fit ended on this bound of the search range, in words (for a T :func:`at_search_bound`):
    at the lower bound the likelihood still rose as T fell (every pair, or nearly every one, goes the
    labels' way: "infinitely sure"); at the upper one as T rose (the model prefers the rejected
    responses on balance, so the best it can do is P = 0.5 everywhere). One message for both read as
    if either could be the case."""
    if math.log(_check_temperature(temperature)) <= math.log(T_MIN) + _BOUND_LOG_TOL:
        return ("the lower bound of the search range: the likelihood still rose as T fell, as it does when the "
                "pairs are perfectly separated (every margin points the labels' way)")
    return ("the upper bound of the search range: the likelihood still rose as T grew, as it does when the model "
            "prefers the rejected responses on balance (the best T then makes every probability 0.5)")


def temperature_interval_text(low: float, high: float) -> str:
    """The 95% interval of :func:`temperature_evidence` in words. An end at a search bound (T_MIN,
    T_MAX) is where the search stopped, not where the pairs close the interval: "0.0166 to 1e+03"
    would read as a real upper limit."""
    low_open, high_open = at_search_bound(low), at_search_bound(high)
    if low_open and high_open:
        return f"any T in the search range {T_MIN:g} to {T_MAX:g} (the pairs set no limit)"
    if high_open:
        return f"{low:.3g} or more (no upper limit within the search range, which ends at {T_MAX:g})"
    if low_open:
        return f"{high:.3g} or less (no lower limit within the search range, which starts at {T_MIN:g})"
    return f"{low:.3g} to {high:.3g}"


def _warn(message: str) -> None:
    """A warning for callers of this module's functions, not also a log line: `rewardkit evaluate
    --calibrate` words each case once for its command, and both together printed every message twice."""
    warnings.warn(message, CalibrationWarning, stacklevel=3)


#: Likelihood-ratio threshold of a 95% test / interval for one parameter (chi-square, 1 df).
CHI2_95 = 3.841


def temperature_evidence(margins: ArrayLike, fitted: float, *, groups: ArrayLike | None = None) -> dict[str, Any]:
    """How firmly the pairs behind ``margins`` (chosen − rejected) pin down the fitted T.

    A fitted T is a point estimate; on a few hundred pairs of a weak model it can be far from 1
    and still be no better supported than T = 1. Returns::

        temperature_lr_vs_1         likelihood-ratio statistic 2n·(NLL(1) − NLL(T̂)); chi-square
                                    with 1 df if T = 1 were right
        temperature_differs_from_1  that statistic > 3.84: T differs from 1 at the 5% level
        temperature_interval        [low, high]: the 95% profile-likelihood interval, the Ts whose
                                    statistic against T̂ stays below 3.84 (a search bound,
                                    T_MIN or T_MAX, where the pairs cannot close it)
        temperature_interval_by_group  only with ``groups``: True (see below)

    ``groups``: one group id per margin, for pairs that are not independent draws (the K-choose-2
    pairs of a ranked group share responses, so they carry less than that many independent
    pairs' worth of evidence, and an interval that counts each as independent is too narrow).
    Both statistics are then divided by the design effect of the fit (the cluster-robust over the
    model-based variance of 1/T̂ at T̂, with the usual G / (G − 1) small-sample factor; Rotnitzky
    & Jewell, 1990): a profile-likelihood interval that holds for pairs correlated within a group.
    It is never made narrower than the independent-pairs one: a design effect below 1 from a few
    groups is noise, not pairs more informative than independent ones.

    The NLL is convex in 1/T, so the statistic falls then rises in log T and each end of the
    interval is found by bisection on one side of T̂.
    """
    m = _as_finite_1d(margins, "margins")
    y = np.ones_like(m)
    t_hat = float(np.clip(_check_temperature(fitted), T_MIN, T_MAX))
    best = _nll(m, y, t_hat)
    scale = 1.0 if groups is None else 1.0 / _design_effect(m, t_hat, groups)

    def excess(log_t: float) -> float:
        return scale * 2.0 * m.size * (_nll(m, y, math.exp(log_t)) - best)

    def crossing(inside: float, outside: float) -> float:
        if excess(outside) <= CHI2_95:
            return math.exp(outside)
        for _ in range(60):
            middle = (inside + outside) / 2.0
            inside, outside = (middle, outside) if excess(middle) <= CHI2_95 else (inside, middle)
        return math.exp((inside + outside) / 2.0)

    statistic = max(excess(0.0), 0.0)
    log_hat = math.log(t_hat)
    evidence = {
        "temperature_lr_vs_1": statistic,
        "temperature_differs_from_1": statistic > CHI2_95,
        "temperature_interval": [crossing(log_hat, math.log(T_MIN)), crossing(log_hat, math.log(T_MAX))],
    }
    return evidence if groups is None else {**evidence, "temperature_interval_by_group": True}


def _design_effect(m: NDArray[np.float64], t_hat: float, groups: ArrayLike) -> float:
    """Cluster-robust over model-based variance of θ̂ = 1/T̂ (at least 1; see temperature_evidence).

    For θ, pair i's score is m_i·(1 − σ(θ m_i)) and its information m_i²·σ(1 − σ); the model-based
    variance is 1 / Σ information, the robust one Σ_g (Σ_{i∈g} score_i)² / (Σ information)². Their
    ratio does not depend on how T is parametrised."""
    ids = np.asarray(groups).reshape(-1)
    if ids.shape != m.shape:
        raise ValueError(f"margins and groups differ in length: {m.size} vs {ids.size}")
    p = _sigmoid(m / t_hat)
    information = float(np.sum(m * m * p * (1.0 - p)))
    meat, _ = cluster_robust_sum(m * (1.0 - p), ids)
    if information <= 0.0 or meat <= 0.0:
        return 1.0
    return max(meat / information, 1.0)


def cluster_robust_sum(contributions: NDArray[np.float64], groups: ArrayLike) -> tuple[float, int]:
    """(Σ_g (Σ_{i∈g} c_i)² · G / (G − 1), G): the cluster-robust sum of squares of per-item
    contributions ``c`` (scores, or residuals times weights) over the G groups in ``groups``, with
    the usual small-sample factor (none for one group, 0 for none). Shared by every design effect
    in the package (T's interval here, the ranked length-bias verdict in metrics), so they agree."""
    _, index = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    n_groups = int(index.max()) + 1 if index.size else 0
    per_group = np.bincount(index, weights=contributions, minlength=n_groups)
    return float(np.sum(per_group**2)) * (n_groups / (n_groups - 1) if n_groups > 1 else 1.0), n_groups


def temperature_fitted_on_these_pairs(metrics: dict[str, Any] | None, temperature: float | None = None) -> bool:
    """True when `metrics` come from `rewardkit evaluate --calibrate`, which fitted T on the very
    pairs it then measured and stored it (and, when `temperature` is given, the figures use that
    T): the T-dependent figures (ECE, Brier, log loss, confidence) are then no independent check
    (the log loss is optimistic: T minimises it there), and the report and the model card say so."""
    if not metrics:
        return False
    fitted = metrics.get("temperature_fitted")
    if isinstance(fitted, bool) or not isinstance(fitted, (int, float)) or metrics.get("temperature_written") is False:
        return False
    return temperature is None or math.isclose(float(fitted), float(temperature))
