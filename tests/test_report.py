"""write_report: files, PNG sanity, JSON round-trip, markdown content, redaction, atomicity."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest

import rewardkit.report_plots as report_plots
from rewardkit.calibration import T_MAX, T_MIN
from rewardkit.metrics import pairwise_metrics, ranking_metrics, scalar_metrics
from rewardkit.report import REPORT_FILES, write_report
from rewardkit.report_format import num

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECRET = "UNIQUE-OFFENSIVE-TOKEN"
LONG_TEXT = SECRET + " | *bold* <script>x</script>\nsecond line " + "x" * 300


@pytest.fixture
def pairwise_data() -> dict:
    rng = np.random.default_rng(7)
    n = 300
    lc = rng.integers(20, 600, size=n).astype(float)
    lr = rng.integers(20, 600, size=n).astype(float)
    chosen = rng.normal(1.0, 1.5, size=n) + 0.002 * lc
    rejected = rng.normal(0.0, 1.5, size=n) + 0.002 * lr
    metrics = pairwise_metrics(chosen, rejected, chosen_lengths=lc, rejected_lengths=lr)
    worst = [
        {"prompt": LONG_TEXT, "chosen": LONG_TEXT, "rejected": "a\nb", "margin": -3.25},
        {"prompt": "short prompt", "chosen": "c" * 50, "rejected": "r", "margin": -2.0},
    ]
    return {
        "metrics": metrics,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_lengths": lc,
        "rejected_lengths": lr,
        "worst_examples": worst,
    }


@pytest.fixture
def text_only(pairwise_data: dict) -> dict:
    """Metrics and worst examples without reward arrays: no plots, so the test is fast."""
    return {k: pairwise_data[k] for k in ("metrics", "worst_examples")}


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests decide redaction themselves; the real CI variable must not leak in."""
    monkeypatch.delenv("CI", raising=False)


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert float(np.var(img[..., :3])) > 0  # not blank


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if re.search(r"\.(tmp|old)-\d+$", p.name)]


# ---------------------------------------------------------------- pairwise


def test_pairwise_report_files(tmp_path: Path, pairwise_data: dict) -> None:
    out = tmp_path / "report"
    paths = write_report(out, kind="pairwise", model_name="tiny-rm", redact=False, **pairwise_data)
    expected = {
        "metrics.json",
        "report.md",
        "reward_hist.png",
        "reliability.png",
        "margin_hist.png",
        "reward_vs_length.png",
    }
    assert set(paths) == expected
    assert {p.name for p in out.iterdir()} == expected
    for name, path in paths.items():
        assert path == out.resolve() / name and path.is_file()
        if name.endswith(".png"):
            _check_png(path)
    assert _leftovers(tmp_path) == []


def test_metrics_json_round_trips(tmp_path: Path, pairwise_data: dict) -> None:
    paths = write_report(tmp_path / "r", kind="pairwise", **pairwise_data)
    text = paths["metrics.json"].read_text(encoding="utf-8")
    assert json.loads(text) == pairwise_data["metrics"]
    assert text == json.dumps(pairwise_data["metrics"], indent=2, sort_keys=True) + "\n"


def test_metrics_json_sanitises_numpy_and_nan(tmp_path: Path) -> None:
    metrics = {"n": np.int64(3), "x": np.float32(0.5), "bad": float("nan"), "arr": np.arange(2)}
    paths = write_report(tmp_path / "r", kind="ranking", metrics=metrics)
    assert json.loads(paths["metrics.json"].read_text()) == {
        "n": 3,
        "x": 0.5,
        "bad": None,
        "arr": [0, 1],
    }


def test_report_md_key_sentences(tmp_path: Path, pairwise_data: dict) -> None:
    paths = write_report(
        tmp_path / "r", kind="pairwise", model_name="tiny-rm", redact=False, **pairwise_data
    )
    md = paths["report.md"].read_text(encoding="utf-8")
    m = pairwise_data["metrics"]
    lb = m["length_bias"]
    for needle in [
        "# Reward model report: tiny-rm",
        "relative score",
        "only the *difference*",
        "P(a ≻ b) = σ((r_a − r_b) / T)",
        "**T = 1**",
        "## Headline metrics",
        f"| Accuracy | {m['accuracy']:.3f} |",
        "## How sure it is",
        f"Calibration error (ECE, Guo et al. 2017) is **{m['ece']:.3f}**",
        "## What it prefers",
        f"gives the longer answer the higher reward in **{100 * lb['longer_preferred_rate']:.0f}%**",
        f"Accuracy when the chosen answer is shorter: **{lb['chosen_shorter_accuracy']:.2f}**",
        "## Where it fails",
        "![Reliability diagram](reliability.png)",
        "![Reward histogram](reward_hist.png)",
        "![Margin histogram](margin_hist.png)",
        "![Reward vs length](reward_vs_length.png)",
        "[metrics.json](metrics.json)",
    ]:
        assert needle in md, needle
    # every embedded image link is relative and exists
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert not Path(link).is_absolute() and (paths["report.md"].parent / link).is_file()


def test_margin_probability_table_uses_temperature(tmp_path: Path, pairwise_data: dict) -> None:
    metrics = pairwise_metrics(pairwise_data["chosen"], pairwise_data["rejected"], temperature=2.0)
    md = write_report(tmp_path / "r", kind="pairwise", temperature=2.0, metrics=metrics)
    text = md["report.md"].read_text(encoding="utf-8")
    assert "**T = 2**" in text and "stored with the model" in text
    assert "fitted on these same pairs" not in text  # no --calibrate in this run
    assert "| P(a preferred over b) | 0.50 | 0.56 | 0.62 | 0.73 | 0.88 |" in text  # σ(m / 2)


def test_worst_examples_truncated_and_escaped(tmp_path: Path, text_only: dict) -> None:
    worst = [{"prompt": "\n\nHuman: " + "y" * 200 + " the question at the end?", "chosen": LONG_TEXT,
              "rejected": "a\nb", "margin": -3.25}]
    md = write_report(tmp_path / "r", kind="pairwise", redact=False, **{**text_only, "worst_examples": worst})["report.md"]
    text = md.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1  # the newline inside the text did not break the row
    row = rows[0]
    assert SECRET in row  # a response keeps its start
    assert "x" * 200 not in row and "…" in row  # cut to 120 characters
    # a prompt keeps its end (what the model reads of a long prompt), without its leading blank lines
    assert "| …" + "y" * 94 + " the question at the end? |" in row and "Human" not in row
    assert "<script>" not in row and r"\<script\>" in row
    assert r"\*bold\*" in row
    assert "⏎" in row
    # unescaped pipes: 1 leading + one per column (#, prompt, chosen, rejected, margin)
    assert len(re.findall(r"(?<!\\)\|", row)) == 6
    assert "-3.250" in row


def test_redaction_explicit(tmp_path: Path, text_only: dict) -> None:
    md = write_report(tmp_path / "r", kind="pairwise", redact=True, **text_only)["report.md"]
    text = md.read_text(encoding="utf-8")
    assert SECRET not in text and "short prompt" not in text
    assert f"({len(LONG_TEXT):,} chars)" in text
    assert "-3.250" in text and "-2.000" in text  # margins stay
    assert "redacted" in text


def test_redaction_default_follows_ci(
    tmp_path: Path, text_only: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    text = write_report(tmp_path / "a", kind="pairwise", **text_only)["report.md"].read_text()
    assert SECRET not in text
    monkeypatch.setenv("CI", "false")
    text = write_report(tmp_path / "b", kind="pairwise", **text_only)["report.md"].read_text()
    assert SECRET in text
    monkeypatch.delenv("CI")
    text = write_report(tmp_path / "c", kind="pairwise", **text_only)["report.md"].read_text()
    assert SECRET in text


def test_pairwise_without_arrays_writes_text_only(tmp_path: Path) -> None:
    metrics = pairwise_metrics([1.0, 2.0], [0.0, 3.0])
    paths = write_report(tmp_path / "r", kind="pairwise", metrics=metrics)
    assert set(paths) == {"metrics.json", "report.md"}
    text = paths["report.md"].read_text()
    assert "No response lengths were given" in text
    assert "No worst examples were given" in text
    assert "Not drawn, for lack of data: reward_hist.png, margin_hist.png" in text


def test_bad_input_fails_before_writing(tmp_path: Path, pairwise_data: dict) -> None:
    bad = {**pairwise_data, "rejected": pairwise_data["rejected"][:-1]}
    with pytest.raises(ValueError, match="differ in length"):
        write_report(tmp_path / "r", kind="pairwise", **bad)
    with pytest.raises(ValueError, match="non-finite"):
        write_report(tmp_path / "r", kind="mse", metrics={}, rewards=[1.0, float("nan")])
    with pytest.raises(ValueError, match="temperature"):
        write_report(tmp_path / "r", kind="pairwise", metrics={}, temperature=-1.0)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- verdicts follow the numbers


def _length_pairs(*groups: tuple[int, str, int]) -> dict:
    """Pairs built group by group: (count, which answer the human chose, how many of them the
    model gets right). ``"shorter"``/``"longer"``: the chosen answer is 50 / 100 characters
    against 100 / 50 for the rejected one; ``"equal"``: both 80."""
    chosen, rejected, lc, lr = [], [], [], []
    sizes = {"shorter": (50.0, 100.0), "longer": (100.0, 50.0), "equal": (80.0, 80.0)}
    for count, side, right in groups:
        chosen += [1.0] * right + [-1.0] * (count - right)
        rejected += [0.0] * count
        lc += [sizes[side][0]] * count
        lr += [sizes[side][1]] * count
    return {
        "chosen": np.array(chosen),
        "rejected": np.array(rejected),
        "chosen_lengths": np.array(lc),
        "rejected_lengths": np.array(lr),
    }


def _md_for(tmp_path: Path, metrics: dict, **kwargs) -> str:
    out = tmp_path / f"r{len(list(tmp_path.iterdir()))}"
    paths = write_report(out, kind="pairwise", metrics=metrics, redact=True, **kwargs)
    return paths["report.md"].read_text(encoding="utf-8")


def _preferences(md: str) -> str:
    return md.split("## What it prefers", 1)[1].split("## Where it fails", 1)[0]


def test_length_verdict_hh_rm_review_case(tmp_path: Path) -> None:
    """The user review: the model picks the longer answer in 35% of pairs, the labels in 44%,
    accuracy 0.69 (chosen shorter) vs 0.39 (chosen longer). That is a bias toward *shorter*
    answers, not "in line with the human labels"."""
    pairs = _length_pairs((175, "shorter", 120), (136, "longer", 53), (1, "equal", 1))
    metrics = pairwise_metrics(**pairs)
    lb = metrics["length_bias"]
    assert lb["longer_preferred_rate"] == pytest.approx(0.347, abs=1e-3)
    assert lb["chosen_longer_rate"] == pytest.approx(0.437, abs=1e-3)
    text = _preferences(_md_for(tmp_path, metrics))
    assert "in line with" not in text and "No length bias" not in text
    assert "**35%**" in text and "**44%**" in text
    # accuracy 173/311 = 56%: a model as accurate, its mistakes independent of length, picks the longer
    # answer in 0.437·0.556 + 0.563·0.444 = 49%; the difference is −2·175·136/311² times the 29.6-point
    # accuracy gap, and so is its standard error (that of the gap with the pooled accuracy, 5.68 points)
    assert "would give the longer answer the higher reward in 49%: the difference, −14.6 points" in text
    assert "is larger than twice its standard error (5.6 points on these 311 pairs)" in text
    assert "**Length bias toward shorter answers**" in text
    assert "It is right 29.6 points more often when the chosen answer is the shorter one" in text
    assert "higher reward 14.6 points less often than a model as accurate" in text
    assert "under-rewards length relative to the labels" in text


def test_length_verdict_model_prefers_longer_than_labels(tmp_path: Path) -> None:
    # labels chose the longer answer in 30 of 100 pairs; the model always rewards the longer one
    pairs = _length_pairs((70, "shorter", 0), (30, "longer", 30))
    metrics = pairwise_metrics(**pairs)
    assert metrics["length_bias"]["longer_preferred_rate"] == 1.0
    text = _preferences(_md_for(tmp_path, metrics))
    assert "**100%**" in text and "**30%**" in text
    assert "**Length bias toward longer answers**" in text
    assert "42.0 points more often than a model as accurate whose mistakes do not depend on length" in text
    assert "over-rewards length relative to the labels" in text
    assert "It is right 100.0 points more often when the chosen answer is the longer one" in text
    assert "in line with" not in text


def test_length_verdict_agrees_with_labels(tmp_path: Path) -> None:
    # 80% right on both kinds of pair: model and labels pick the longer answer equally often
    pairs = _length_pairs((500, "shorter", 400), (500, "longer", 400))
    metrics = pairwise_metrics(**pairs)
    lb = metrics["length_bias"]
    assert lb["longer_preferred_rate"] == lb["chosen_longer_rate"] == 0.5
    text = _preferences(_md_for(tmp_path, metrics))
    assert "the difference, +0.0 points, is within twice its standard error (2.5 points" in text
    assert "**No length bias detected**: its preference for length is what its accuracy predicts" in text
    assert "Length bias toward" not in text and "more often when the chosen answer" not in text


def test_no_length_bias_for_mistakes_that_do_not_depend_on_length(tmp_path: Path) -> None:
    """The labels chose the longer answer in 90% of pairs; the model is right on 70% of pairs of
    either kind, so its picks lean on length no more than its accuracy makes them. It picks the longer
    answer in 66%, and set against the labels' 90% that read as "**Length bias toward shorter
    answers**", as did a model that gives every response the same reward (50% picks, all ties)."""
    pairs = _length_pairs((100, "shorter", 70), (900, "longer", 630))
    metrics = pairwise_metrics(**pairs)
    assert metrics["length_bias"]["longer_preferred_rate"] == pytest.approx(0.66)
    text = _preferences(_md_for(tmp_path, metrics))
    assert "Length bias toward" not in text
    assert "would give the longer answer the higher reward in 66%: the difference, +0.0 points, is within" in text
    assert "**No length bias detected**" in text
    constant = {**pairs, "chosen": np.zeros(1000), "rejected": np.zeros(1000)}
    text = _preferences(_md_for(tmp_path, pairwise_metrics(**constant)))
    assert "Length bias toward" not in text and "**No length bias detected**" in text


def test_undefined_target_length_correlation_does_not_claim_equal_targets(tmp_path: Path) -> None:
    """Targets 1..4 on responses of one length: the target-length correlation is undefined because
    the lengths are equal, yet the report said "the target scores are all equal"."""
    predicted, targets, lengths = [0.1, 0.5, 0.2, 0.9], [1.0, 2.0, 3.0, 4.0], [10.0] * 4
    metrics = scalar_metrics(predicted, targets, lengths=lengths)
    assert metrics["length_bias"]["spearman_target_length"] is None
    paths = write_report(tmp_path / "r", kind="mse", metrics=metrics, rewards=predicted, targets=targets,
                         lengths=lengths, redact=True)
    text = _preferences(paths["report.md"].read_text(encoding="utf-8"))
    assert "the target scores are all equal" not in text
    assert "undefined: the target scores, or the response lengths, are all equal" in text


def test_length_verdict_too_few_pairs_to_tell(tmp_path: Path) -> None:
    # 12 points apart and an accuracy gap of 20 points, but on 20 pairs both are within chance
    pairs = _length_pairs((10, "shorter", 6), (10, "longer", 4))
    metrics = pairwise_metrics(**pairs)
    text = _preferences(_md_for(tmp_path, metrics))
    assert "is within twice its standard error" in text
    assert "chance alone could explain it" in text
    assert "**No length bias detected**, but with 20 pairs only a difference larger than" in text
    assert "The accuracy gap of 20.0 points is within twice its standard error" in text
    assert "Length bias toward" not in text and "in line with" not in text


def test_length_verdict_when_the_share_equals_the_labels(tmp_path: Path) -> None:
    """Same share of longer-answer picks as the labels, but given the label it leans shorter:
    0.9 right when the chosen answer is shorter, 0.5 when it is longer. A model that accurate
    with no lean would pick the longer answer in 28%, not the labels' 17%."""
    pairs = _length_pairs((300, "shorter", 270), (60, "longer", 30))
    metrics = pairwise_metrics(**pairs)
    lb = metrics["length_bias"]
    assert lb["longer_preferred_rate"] == pytest.approx(lb["chosen_longer_rate"])
    text = _preferences(_md_for(tmp_path, metrics))
    assert "in 28%: the difference, −11.1 points, is larger than twice its standard error" in text
    assert "**Length bias toward shorter answers**: it is right 40.0 points more often when the human" in text
    assert "under-rewards length" in text


def test_every_headline_row_is_explained(tmp_path: Path) -> None:
    pairs = _length_pairs((30, "shorter", 20), (30, "longer", 20))
    metrics = {
        **pairwise_metrics(**pairs, temperature=0.5),
        "alpha": 1.0,
        "max_length": 128,
        "skipped": 0,
        "ece_before": 0.08,
        "ece_after": 0.03,
        "temperature_before": 1.0,
        "temperature_fitted": 0.5,
        "temperature_written": True,
        "my_extra": 2.5,
    }
    md = _md_for(tmp_path, metrics, temperature=0.5)
    table = md.split("## Headline metrics", 1)[1].split("\n\n")[1].splitlines()[2:]
    assert len(table) == 18  # 9 pairwise metrics, 8 from evaluate_model, 1 unknown
    for row in table:
        label, value, meaning = (cell.strip() for cell in row.strip("|").split(" | "))
        assert label and value and meaning, row
        assert "_" not in label, row  # no raw metric keys
    for needle in [
        "| ECE after calibration | 0.030 | calibration error at the fitted T, measured on the "
        "same pairs T was fitted on: no independent check",
        "| Temperature written | yes | whether the fitted T was written to the model's config",
        "| Fitted temperature | 0.500 |",
        "| Temperature before calibration | 1.000 |",
        "| Max length (tokens) | 128 |",
        "| My extra | 2.500 | no description",
    ]:
        assert needle in md, needle
    # 40 of 60 right: the accuracy on these pairs is exact; the interval is for other pairs like them
    assert "95% interval for its accuracy on other pairs like these: 0.541 to 0.773 (Wilson) |" in md


def test_calibrated_report_says_its_figures_are_no_independent_check(tmp_path: Path) -> None:
    pairs = _length_pairs((30, "shorter", 20), (30, "longer", 20))
    metrics = {
        **pairwise_metrics(**pairs, temperature=0.5),
        "ece_before": 0.08,
        "ece_after": 0.03,
        "temperature_before": 1.0,
        "temperature_fitted": 0.5,
        "temperature_written": True,
    }
    md = _md_for(tmp_path, metrics, temperature=0.5)
    assert "(fitted on these same pairs by `--calibrate`" in md
    assert "`--calibrate` fitted T = 0.5 on these same 60 pairs and wrote it" in md
    assert "ECE before calibration: 0.080; after: 0.030." in md
    assert "**Caveat: these figures are no independent check.**" in md
    assert "The log loss after calibration is optimistic (T minimises it on these very pairs)" in md
    assert "evaluate the calibrated model on other held-out pairs" in md
    assert "| ECE | " in md and "measured on the pairs T was fitted on: no independent check |" in md
    assert "| Log loss | " in md and "minimise it on these same pairs: optimistic |" in md
    assert "can rise, as it did here" not in md

    # ECE is not what the fit minimises: when it rose, the report says so
    rose = {**metrics, "ece_before": 0.009, "ece_after": 0.069, "ece": 0.069}
    assert "so the ECE can rise, as it did here." in _md_for(tmp_path, rose, temperature=0.5)

    # the fit hit a search bound: nothing was written, no caveat about a T not in use
    unused = {**metrics, "temperature": 1.0, "temperature_fitted": T_MIN, "temperature_written": False}
    unused.update(pairwise_metrics(**pairs))
    md = _md_for(tmp_path, unused)
    assert "so it was **not** written" in md and "Caveat" not in md
    assert "the lower bound of the search range" in md and "rejected responses on balance" not in md
    assert "optimistic |" not in md and "no independent check |" not in md
    assert "(T = 1: the raw, uncalibrated model)" in md


def test_temperature_interval_ending_at_a_search_bound_is_open(tmp_path: Path) -> None:
    """temperature_evidence returns the search bound T_MAX (999.9999999999998) where the pairs set no
    upper limit; the report printed it as "0.0166 to 1e+03", a limit the pairs never gave."""
    pairs = _length_pairs((30, "shorter", 16), (30, "longer", 15))
    fitted = {**pairwise_metrics(**pairs, temperature=0.0768), "ece_before": 0.005, "ece_after": 0.035,
              "temperature_before": 1.0, "temperature_fitted": 0.0768, "temperature_written": True,
              "temperature_lr_vs_1": 0.29, "temperature_differs_from_1": False,
              "temperature_interval": [0.0166, T_MAX * (1 - 1e-15)]}
    md = _md_for(tmp_path, fitted, temperature=0.0768)
    assert "(profile likelihood): 0.0166 or more (no upper limit within the search range, which ends at 1e+06)" in md
    assert "0.0166 to 1e+06" not in md
    closed = {**fitted, "temperature_interval": [0.0166, 0.52]}
    assert "(profile likelihood): 0.0166 to 0.52;" in _md_for(tmp_path, closed, temperature=0.0768)


def test_confidence_verdict_accounts_for_sample_size(tmp_path: Path) -> None:
    # confidence 0.95 (margins ±1 at T = 0.34), accuracy 0.75
    few = pairwise_metrics([1.0] * 3 + [-1.0], [0.0] * 4, temperature=0.34)
    text = _md_for(tmp_path, few, temperature=0.34)
    assert "over-confident" not in text
    # the noise is that of a calibrated model's accuracy: 2·sqrt(0.95·0.05/4) = 21.8 points
    assert ("gap is within ±21.8 points (twice the standard error of the accuracy on 4 pairs, were the "
            "model calibrated)") in text
    many = pairwise_metrics([1.0] * 300 + [-1.0] * 100, [0.0] * 400, temperature=0.34)
    text = _md_for(tmp_path, many, temperature=0.34)
    assert "It is **over-confident** by 20.0 percentage points, beyond ±2.2 points" in text


def test_one_lucky_or_unlucky_pair_gives_no_verdict(tmp_path: Path) -> None:
    """At an observed 0% or 100% the usual sqrt(p(1 − p)/n) is 0, so a single pair used to read as
    "under-confident by 49.6 points", a "±0.000" accuracy and a length bias "more than chance"."""
    right = {"chosen": [1.0], "rejected": [0.99], "chosen_lengths": [10.0], "rejected_lengths": [5.0]}
    text = _md_for(tmp_path, pairwise_metrics(**right))
    assert "confident**" not in text and "±0.000" not in text
    assert "95% interval for its accuracy on other pairs like these: 0.207 to 1.000 (Wilson); it reaches 0.5: " \
           "these pairs cannot tell the model from one that guesses |" in text
    assert "gap is within ±100.0 points" in text
    # wrong on its only pair, which had the shorter answer chosen: the model "prefers longer" 100% vs 0%
    wrong = {"chosen": [0.0], "rejected": [0.01], "chosen_lengths": [5.0], "rejected_lengths": [10.0]}
    text = _preferences(_md_for(tmp_path, pairwise_metrics(**wrong)))
    assert "Length bias toward" not in text
    assert "**Length bias not measurable on these pairs**: the human labels chose the shorter answer" in text
    # 1 of 1 right with the shorter answer chosen, 0 of 1 with the longer: a 100-point accuracy gap
    two = {"chosen": [1.0, 0.0], "rejected": [0.0, 1.0], "chosen_lengths": [5.0, 10.0],
           "rejected_lengths": [10.0, 5.0]}
    text = _preferences(_md_for(tmp_path, pairwise_metrics(**two)))
    assert "The accuracy gap of 100.0 points is within twice its standard error" in text
    assert "Length bias toward" not in text


def test_ece_compared_with_chance(tmp_path: Path, pairwise_data: dict) -> None:
    text = _md_for(tmp_path, **{k: v for k, v in pairwise_data.items() if k != "worst_examples"})
    assert "would show an ECE of up to" in text and "by chance alone" in text
    # a model that is far too sure: margins of ±5 at T = 1 (P = 0.993) but right only 75%
    sure = {"chosen": [5.0] * 150 + [-5.0] * 50, "rejected": [0.0] * 200}
    text = _md_for(tmp_path, pairwise_metrics(**sure), **sure)
    assert "the miscalibration is larger than chance explains" in text
    assert "To calibrate, fit a temperature on held-out pairs" in text


def test_reliability_counts_pairs_not_orientations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pair enters the diagram in both orientations; a tie (P = 0.5 both ways) showed as 2 in
    the bar's "n = pairs in each bin" (40 tied pairs: n=80)."""
    texts: list[str] = []
    draw = report_plots._draw_reliability

    def spy(fig, ctx) -> None:
        draw(fig, ctx)
        texts.extend(t.get_text() for t in fig.axes[0].texts)

    monkeypatch.setattr(report_plots, "_draw_reliability", spy)
    pairs = {"chosen": [0.0] * 40 + [3.0] * 5, "rejected": [0.0] * 45}  # 40 ties, 5 sure wins
    _md_for(tmp_path, pairwise_metrics(**pairs), **pairs)
    assert sorted(t for t in texts if t) == ["n=40", "n=5"]
    texts.clear()
    _md_for(tmp_path, pairwise_metrics(**pairs), n_bins=5, **pairs)  # odd: a middle bin around 0.5
    assert sorted(t for t in texts if t) == ["n=40", "n=5"]


def test_reward_histogram_legend_tells_close_means_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small-scale model's means 0.0162 and 0.0137 printed as "0.02" and "0.01" (two decimals)."""
    legend: list[str] = []
    draw = report_plots._draw_pair_hist

    def spy(fig, ctx) -> None:
        draw(fig, ctx)
        legend.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts())

    monkeypatch.setattr(report_plots, "_draw_pair_hist", spy)
    pairs = {"chosen": [0.0162, 0.0162], "rejected": [0.0137, 0.0137]}
    _md_for(tmp_path, pairwise_metrics(**pairs), **pairs)
    assert "mean chosen = 0.0162" in legend and "mean rejected = 0.0137" in legend


def test_header_names_data_and_truncation(tmp_path: Path) -> None:
    metrics = {
        **pairwise_metrics([1.0, 2.0], [0.0, 3.0]),
        "data_name": "dev_set.jsonl",
        "max_length": 128,
        "truncation": {"texts": 4, "prompt_cut": 3, "response_cut": 1},
    }
    md = _md_for(tmp_path, metrics)
    assert "from dev\\_set.jsonl: 2 pairs" in md
    assert "the start of the prompt was cut in 3 of 4 scored texts and the end of the response in 1" in md
    metrics["truncation"] = {"texts": 4, "prompt_cut": 0, "response_cut": 0}
    assert "No text was cut" in _md_for(tmp_path, metrics)


def test_worst_examples_explain_the_margin(tmp_path: Path, text_only: dict) -> None:
    examples = [{**ex, "row": i} for i, ex in enumerate(text_only["worst_examples"], 1)]
    md = _md_for(tmp_path, text_only["metrics"], worst_examples=examples)
    assert "The 2 pairs with the smallest margins, most negative first" in md
    assert "P(chosen ≻ rejected) = 0.04 at T = 1: the model is 96% sure of the wrong answer" in md
    assert "`row` is the row's number in the data file" in md
    right = [{**ex, "margin": abs(ex["margin"]) + 0.5} for ex in examples]  # every pair the right way round
    md = _md_for(tmp_path, text_only["metrics"], worst_examples=right)
    assert "**No pair is misordered**" in md and "closest calls" in md and "sure of the wrong answer" not in md


# ---------------------------------------------------------------- other kinds


def test_mse_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    target = rng.normal(size=200)
    pred = target + rng.normal(0, 0.3, size=200)
    lengths = rng.integers(10, 500, size=200)
    metrics = scalar_metrics(pred, target, lengths=lengths)
    paths = write_report(
        tmp_path / "r",
        kind="mse",
        metrics=metrics,
        rewards=pred,
        targets=target,
        lengths=lengths,
        length_unit="tokens",
    )
    assert set(paths) == {
        "metrics.json",
        "report.md",
        "reward_hist.png",
        "pred_vs_target.png",
        "reward_vs_length.png",
    }
    for name in ("reward_hist.png", "pred_vs_target.png", "reward_vs_length.png"):
        _check_png(paths[name])
    text = paths["report.md"].read_text()
    assert "| RMSE |" in text and "Spearman" in text and "![Predicted vs target]" in text
    assert "length in tokens" in text


def test_undefined_correlations_say_why(tmp_path: Path) -> None:
    """Constant rewards or targets leave Pearson / Spearman undefined (null in metrics.json): the
    report says why instead of a bare "n/a", and never "correlate with length at undefined"."""
    rewards, lengths = np.array([0.5, 0.5, 0.5, 0.5]), np.array([3.0, 10.0, 7.0, 1.0])
    metrics = scalar_metrics(rewards, [1.0, 2.0, 3.0, 4.0], lengths=lengths)
    md = write_report(tmp_path / "a", kind="mse", metrics=metrics)["report.md"].read_text(encoding="utf-8")
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["pearson"] is None
    assert "| Pearson r | n/a | linear agreement with the targets (1 = perfect); undefined here (n/a): the " in md
    assert "**undefined** (0 = no relation" in md and "It is undefined here: the rewards, or the" in md
    constant_targets = scalar_metrics([1.0, 2.0, 3.0, 4.0], [2.0] * 4, lengths=lengths)
    md = write_report(tmp_path / "b", kind="mse", metrics=constant_targets)["report.md"].read_text(encoding="utf-8")
    assert "at undefined" not in md
    assert "correlation with length is undefined: the target scores, or the response lengths, are all equal" in md


def test_ranking_report(tmp_path: Path) -> None:
    groups = [[3.0, 2.0, 1.0], [1.0, 2.0, 0.5]]
    metrics = ranking_metrics(groups)
    flat = [r for g in groups for r in g]
    paths = write_report(
        tmp_path / "r",
        kind="ranking",
        metrics=metrics,
        rewards=flat,
        lengths=[10, 20, 30, 5, 50, 7],
    )
    assert set(paths) == {"metrics.json", "report.md", "reward_hist.png", "reward_vs_length.png"}
    text = paths["report.md"].read_text()
    assert "| Kendall τ |" in text and "| Top-1 accuracy |" in text


def test_ranking_report_counts_the_models_ties_beside_the_accuracies(tmp_path: Path) -> None:
    """Tied rewards count ½ (pairs) and 1/k (top-1); pairwise data showed how many ties there were,
    ranked data did not: a model scoring every response alike read as a plain coin flip."""
    rows = _headline_rows(_kind_md(tmp_path, "ranking", ranking_metrics([[2.0, 2.0, 1.0], [1.0, 1.0]])))
    assert rows["Ties"] == ("2", "within-group pairs with exactly equal rewards")
    assert rows["Top-1 ties"] == ("2", "groups whose best response shares the highest reward with others")


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _headline_rows(md: str) -> dict[str, tuple[str, str]]:
    """label -> (value, meaning) of the headline table."""
    table = _section(md, "Headline metrics").strip().split("\n\n")[0].splitlines()[2:]
    rows = {}
    for row in table:
        label, value, meaning = (cell.strip() for cell in row.strip("|").split(" | "))
        rows[label] = (value, meaning)
    return rows


def _kind_md(tmp_path: Path, kind: str, metrics: dict, **kwargs) -> str:
    out = tmp_path / f"{kind}{len(list(tmp_path.iterdir()))}"
    paths = write_report(out, kind=kind, metrics=metrics, redact=False, **kwargs)
    return paths["report.md"].read_text(encoding="utf-8")


def _mse_metrics(**extra) -> dict:
    target = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 2.5])
    pred = target + np.array([0.1, -0.2, 0.3, 0.0, -0.1, 0.2])
    lengths = np.array([10, 40, 20, 80, 60, 90])
    return {**scalar_metrics(pred, target, lengths=lengths), "objective": "mse", **extra}


def test_mse_meaning_is_a_prediction_not_a_relative_score(tmp_path: Path) -> None:
    """Review: the mse report said a constant shift "changes nothing" and showed the
    Bradley-Terry table, though a shift changes RMSE and σ(difference) is uncalibrated."""
    md = _kind_md(tmp_path, "mse", _mse_metrics(alpha=1.0))
    meaning = _section(md, "What the numbers mean")
    assert "adding the same constant to every reward changes nothing" not in md
    assert "relative score" not in meaning and "P(a preferred over b)" not in meaning
    assert "**prediction of that score**" in meaning
    assert "a constant added to every reward changes them" in meaning
    assert "RMSE" in meaning and "MAE" in meaning and "Pearson" in meaning
    assert "Spearman" in meaning
    assert "can still be read as a preference" in meaning
    assert "**not a calibrated probability** here: no temperature was fitted" in meaning
    # with a stored temperature the difference is a stated probability, untested by these data
    md = _kind_md(tmp_path, "mse", _mse_metrics(), temperature=0.5)
    meaning = _section(md, "What the numbers mean")
    assert "not a calibrated probability" not in meaning
    assert "temperature T = 0.5" in meaning and "do not test that probability" in meaning
    # the pairwise and ranking reports keep the Bradley-Terry reading
    for kind, metrics in (
        ("pairwise", pairwise_metrics([1.0, 2.0], [0.0, 3.0])),
        ("ranking", ranking_metrics([[3.0, 2.0, 1.0]])),
    ):
        meaning = _section(_kind_md(tmp_path, kind, metrics), "What the numbers mean")
        assert "adding the same constant to every reward changes nothing" in meaning, kind
        assert "| P(a preferred over b) | 0.50 |" in meaning, kind


def test_small_values_are_not_printed_as_zero(tmp_path: Path) -> None:
    """Targets in small units: an RMSE of 0.0002 was printed 0.000, a perfect fit."""
    target = np.array([0.001, 0.003, 0.002, 0.004])
    md = _kind_md(tmp_path, "mse", scalar_metrics(target + [2e-4, -2e-4, 2e-4, -2e-4], target))
    assert _headline_rows(md)["RMSE"][0] == "0.0002" and _headline_rows(md)["MAE"][0] == "0.0002"
    assert num(0.0) == "0.000" and num(-1.234e-5) == "-1.23e-05" and num(0.25) == "0.250"


def test_mse_text_makes_no_claim_about_the_training_objective(tmp_path: Path) -> None:
    """A ranking model evaluated on scalar data: the report knows the data kind only
    (``objective`` is the data's kind), so it must not say how the model was trained."""
    md = _kind_md(
        tmp_path,
        "mse",
        _mse_metrics(alpha=1.0),
        rewards=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        targets=[-2.0, -1.0, 0.0, 1.0, 2.0, 2.5],
    )
    lowered = md.lower()
    for claim in ("was trained to", "were trained to", "trained to predict", "training targets"):
        assert claim not in lowered, claim
    assert "These scalar targets give each response an annotated score" in md
    assert "A model trained on preferences rather than on scores like these" in md  # conditional
    assert "target scores they are compared with" in md


def test_alpha_row_says_what_each_kind_uses(tmp_path: Path) -> None:
    reports = {
        "pairwise": _kind_md(tmp_path, "pairwise", {**pairwise_metrics([1.0], [0.0]), "alpha": 2.0}),
        "mse": _kind_md(tmp_path, "mse", _mse_metrics(alpha=2.0)),
        "ranking": _kind_md(tmp_path, "ranking", {**ranking_metrics([[2.0, 1.0]]), "alpha": 2.0}),
    }
    meanings = {kind: _headline_rows(md)["Score scale α"][1] for kind, md in reports.items()}
    for meaning in meanings.values():
        assert meaning.startswith("factor applied to the raw reward in the model's `score()` output")
    assert "accuracy, margins and probabilities use the raw reward (before α)" in meanings["pairwise"]
    assert meanings["mse"].endswith(
        "metrics (RMSE, MAE, correlations) compare the raw reward (before α) with the targets"
    )
    assert "pairwise accuracy" not in meanings["mse"] and "probabilities" not in meanings["mse"]
    assert "top-1 and pairwise accuracy, margins and probabilities use the raw reward (before α)" in meanings["ranking"]
    assert "α × reward with α = 2; the metrics below compare the raw reward" in _section(
        reports["mse"], "What the numbers mean"
    )  # α ≠ 1 named in the text


def _ranking_metrics_as_evaluated(groups: list[list[float]]) -> dict:
    """What evaluate_model returns for ranking data: n = n_groups, n_responses, alpha, ..."""
    m = ranking_metrics(groups)
    return {
        **m,
        "n": m["n_groups"],
        "n_responses": sum(len(g) for g in groups),
        "objective": "ranking",
        "alpha": 1.0,
        "max_length": 64,
        "skipped": 0,
        "temperature": 1.0,
        "length_bias": {"spearman_reward_length": 0.5},
    }


def _ranking_worst(groups: list[list[float]]) -> list[dict]:
    """Worst examples as evaluation._RankingCollector builds them: best vs strongest rival."""
    worst = [
        {"prompt": f"p{i}", "response": f"best {i}", "reward": g[0], "margin": g[0] - max(g[1:]),
         "row": i + 1}
        for i, g in enumerate(groups)
    ]
    return sorted(worst, key=lambda ex: ex["margin"])


def test_ranking_top1_row_says_how_a_tie_at_the_top_counts(tmp_path: Path) -> None:
    """top1_accuracy counts a best response tied with k − 1 others as 1/k: 0.5 here, which the row's
    'the best response gets the highest reward' alone cannot explain."""
    metrics = ranking_metrics([[1.0, 1.0, 0.0]])
    assert metrics["top1_accuracy"] == 0.5
    md = write_report(tmp_path / "r", kind="ranking", metrics=metrics)["report.md"].read_text(encoding="utf-8")
    assert "| Top-1 accuracy | 0.500 | fraction of groups where the best response gets the highest reward " \
           "(shared with k − 1 others: counts 1/k) |" in md


def test_ranking_headline_has_no_undescribed_n_row(tmp_path: Path) -> None:
    groups = [[3.0, 2.0, 1.0], [2.0, 1.5, 0.0], [1.0, 0.0, -1.0]]
    md = _kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups))
    assert "no description" not in md
    rows = _headline_rows(md)
    assert "N" not in rows
    assert rows["Groups"] == ("3", "number of ranked groups evaluated")
    for label, (value, meaning) in rows.items():
        assert label and value and meaning, label
    # n without n_groups (a caller's own dict) still gets a label
    md = _kind_md(tmp_path, "ranking", {"n": 4})
    assert "| Groups evaluated | 4 | number of ranked groups evaluated (`n`) |" in md


def test_ranking_failures_when_nothing_is_misordered(tmp_path: Path) -> None:
    """Review: with τ = 1 the section listed 10 perfectly ordered groups as failures, with an
    unexplained margin column."""
    groups = [[3.0, 2.0, 1.0], [2.0, 1.5, 0.0], [1.0, 0.0, -1.0]]
    md = _kind_md(
        tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups)
    )
    fails = _section(md, "Where it fails")
    assert fails.index("**No group is misordered**") < fails.index("| # |")
    assert "pairwise accuracy 1.000" in fails and "no failure to show" in fails
    assert "closest calls" in fails
    assert "`margin` = that reward − the highest reward among the other responses" in fails
    assert "`response` is the response labelled best" in fails
    assert "top-1 misses" not in fails


def test_ranking_failures_count_top1_misses(tmp_path: Path) -> None:
    groups = [[1.0, 2.0, 0.0], [2.0, 2.0, 0.0], [3.0, 2.0, 1.0], [2.0, 0.0, 1.0]]
    md = _kind_md(
        tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups)
    )
    fails = _section(md, "Where it fails")
    assert "No group is misordered" not in fails
    assert "The 4 groups with the smallest margins; 1 of them is a top-1 miss" in fails
    assert "and 1 a tie at the top (margin 0)." in fails
    # the best response always on top, but lower responses out of order
    groups = [[3.0, 1.0, 2.0], [3.0, 2.0, 1.0]]
    md = _kind_md(
        tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups)
    )
    fails = _section(md, "Where it fails")
    assert "None of them is a top-1 miss" in fails and "top-1 accuracy 1.000" in fails
    assert "the misordering is among the lower responses" in fails


def test_ranking_failures_count_the_misordered_within_group_pairs(tmp_path: Path) -> None:
    """The pairwise report opens "Where it fails" with how many pairs are misordered; the ranked one
    said only how many of the 10 groups listed were top-1 misses, nothing of the pairs among the lower
    responses. Group 1 misorders (1, 2), group 3 (0, 1): 2 of 9 pairs; group 1 is the one top-1 miss."""
    groups = [[1.0, 2.0, 0.0], [3.0, 2.0, 1.0], [2.0, 0.0, 1.0]]
    md = _kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups))
    fails = _section(md, "Where it fails")
    assert ("The model puts a worse-ranked response above a better-ranked one in **2 of 9 within-group pairs** "
            "(22%), and another response above the labelled best one in **1 of 3 groups** (top-1 miss).") in fails
    # a tie at the top counts 1/k in top-1 accuracy, so the misses are not read back from it; the tie is said
    groups = [[1.0, 2.0, 0.0], [2.0, 2.0, 0.0], [3.0, 2.0, 1.0], [2.0, 0.0, 1.0]]
    fails = _section(_kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups),
                              worst_examples=_ranking_worst(groups)), "Where it fails")
    assert "in **2 of 12 within-group pairs** (17%; 1 more is an exact tie)." in fails and "(top-1 miss" not in fails


def test_ranking_length_correlation_states_there_is_no_label_baseline(tmp_path: Path) -> None:
    groups = [[3.0, 2.0, 1.0], [2.0, 1.5, 0.0]]
    prefs = _section(_kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups)),
                     "What it prefers")
    assert "**+0.50**" in prefs
    assert "There is no label baseline for this comparison" in prefs
    mse_prefs = _section(_kind_md(tmp_path, "mse", _mse_metrics()), "What it prefers")
    assert "the target scores themselves correlate with length" in mse_prefs
    assert "no label baseline" not in mse_prefs


def test_ranking_length_bias_is_set_against_the_labelled_order(tmp_path: Path) -> None:
    """evaluate now measures, over within-group pairs, how often the labelled order itself puts the
    longer response first: the baseline the pairwise report has always had."""
    from rewardkit.metrics import ranking_length_bias

    groups = [[3.0, 2.0, 1.0], [2.0, 1.5, 0.0]] * 20
    lengths = [[10, 30, 20], [50, 40, 60]] * 20
    metrics = {**_ranking_metrics_as_evaluated(groups), "length_bias": ranking_length_bias(groups, lengths)}
    prefs = _section(_kind_md(tmp_path, "ranking", metrics), "What it prefers")
    assert "the labelled order put the longer response first in **33%** of them" in prefs  # 1 of 3 pairs per group
    assert "of within-group pairs" in prefs and "are not independent" in prefs
    assert "Accuracy when the better-ranked response is shorter" in prefs
    assert "no label baseline" not in prefs and "human" not in prefs


def test_ranked_length_verdict_allows_for_the_pairs_of_a_group_being_correlated(tmp_path: Path) -> None:
    """4 misordered pairs of 66, all in 2 groups (each puts its longest, best response last): counted as
    66 independent pairs the report (and card) said "Length bias toward shorter responses"; the 2
    groups' pairs move together, and with the groups' design effect the gap is within chance."""
    from rewardkit.metrics import ranking_length_bias
    from rewardkit.report_lengths import length_verdict

    groups = [[3.0, 2.0, 1.0]] * 20 + [[1.0, 3.0, 2.0]] * 2
    lengths = [[10, 20, 30]] * 12 + [[30, 20, 10]] * 10
    lb = ranking_length_bias(groups, lengths)
    metrics = {**_ranking_metrics_as_evaluated(groups), "length_bias": lb}
    prefs = _section(_kind_md(tmp_path, "ranking", metrics), "What it prefers")
    assert "**No length bias detected**" in prefs and "Length bias toward" not in prefs
    assert f"widened by the square root of the groups' design effect, {lb['design_effect']:.2f}" in prefs
    assert "somewhat too small" not in prefs
    card = length_verdict(lb, "ranking")
    assert card.startswith("**No length bias detected**") and "design effect" in card
    independent = {k: v for k, v in lb.items() if k != "design_effect"}  # metrics.json of an older version
    assert length_verdict(independent, "ranking").startswith("**Length bias toward shorter responses**")
    assert "somewhat too small" in length_verdict(independent, "ranking")


def test_mse_failures_say_what_is_listed(tmp_path: Path) -> None:
    worst = [{"prompt": "p", "response": "r", "predicted": 0.1, "target": 2.0}]
    fails = _section(_kind_md(tmp_path, "mse", _mse_metrics(), worst_examples=worst), "Where it fails")
    assert "lies furthest from the target score (`target`), largest |predicted − target| first" in fails


def test_invalid_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        write_report(tmp_path / "r", kind="listwise", metrics={})
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- atomicity


def test_rewrite_swaps_whole_report_dir(tmp_path: Path, pairwise_data: dict) -> None:
    out = tmp_path / "r"
    write_report(out, kind="pairwise", **pairwise_data)
    assert (out / "reliability.png").exists()
    write_report(out, kind="mse", metrics={"n": 2}, rewards=[1.0, 2.0], targets=[1.0, 2.5])
    names = {p.name for p in out.iterdir()}
    assert names == {"metrics.json", "report.md", "reward_hist.png", "pred_vs_target.png"}
    assert json.loads((out / "metrics.json").read_text()) == {"n": 2}
    assert _leftovers(tmp_path) == []


def test_rewrite_keeps_foreign_files(tmp_path: Path, pairwise_data: dict) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "reliability.png").write_bytes(b"stale")
    write_report(out, kind="mse", metrics={"n": 1}, rewards=[1.0], targets=[1.0])
    names = {p.name for p in out.iterdir()}
    assert "notes.txt" in names and (out / "notes.txt").read_text() == "mine"
    assert "reliability.png" not in names  # stale report file from an earlier run removed
    assert {"metrics.json", "report.md"} <= names
    assert _leftovers(tmp_path) == []


def test_crash_leaves_nothing_behind(
    tmp_path: Path, pairwise_data: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(fig, ctx):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report_plots, "_draw_reliability", boom)
    out = tmp_path / "new"
    with pytest.raises(RuntimeError, match="plot failed"):
        write_report(out, kind="pairwise", **pairwise_data)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_crash_keeps_previous_report(
    tmp_path: Path, pairwise_data: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    write_report(out, kind="pairwise", **pairwise_data)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(fig, ctx):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report_plots, "_draw_margin_hist", boom)
    with pytest.raises(RuntimeError):
        write_report(out, kind="pairwise", **{**pairwise_data, "metrics": {"n": 0}})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_report_files_constant_covers_outputs() -> None:
    assert {"metrics.json", "report.md", "pred_vs_target.png"} <= REPORT_FILES


def test_meaning_section_explains_normalized_scores_whatever_alpha(tmp_path: Path) -> None:
    """A normalized model's score is α × (r − μ) / s: the note said "divide by α" (wrong by s),
    and with α = 1 it said nothing at all. The scalar note and the headline rows name it too."""
    chosen, rejected = [0.1, 0.3, -0.2, 0.05], [0.0, 0.0, 0.0, 0.0]
    normalized = {"normalize_rewards": True, "reward_mean": 0.25, "reward_std": 1.5}
    for alpha, divisor in ((2.0, "1.33"), (1.0, "0.667")):
        metrics = {**pairwise_metrics(chosen, rejected), "alpha": alpha, **normalized}
        md = _md_for(tmp_path, metrics, chosen=chosen, rejected=rejected)
        meaning = md.split("## Headline metrics")[0]
        assert f"α × (r − μ) / s with α = {alpha:g}, μ = 0.25 and s = 1.5" in meaning
        assert f"divide a difference of scores by α / s = {divisor} before reading it here" in meaning
        assert f"divide a difference of scores by {alpha:g} " not in meaning
        rows = _headline_rows(md)
        assert rows["Normalized scores"][0] == "yes" and rows["Reward mean μ"][0] == "0.250"
        # the alpha row said "(before α)" alone, as if the score were α × r
        assert "margins and probabilities use the raw reward (before α and normalization)" in rows["Score scale α"][1]
    off = {**pairwise_metrics(chosen, rejected), "alpha": 1.0, "normalize_rewards": False,
           "reward_mean": 0.25, "reward_std": 1.5}  # statistics stored, normalization off: score = r
    assert "divide a difference of scores" not in _md_for(tmp_path, off, chosen=chosen, rejected=rejected)
    scalar = _section(_kind_md(tmp_path, "mse", _mse_metrics(alpha=1.0, **normalized)), "What the numbers mean")
    assert ("`score()` output is α × (reward − μ) / s with α = 1, μ = 0.25 and s = 1.5; the metrics below "
            "compare the raw reward (before α and normalization)") in scalar


def test_meaning_section_places_this_models_differences_and_explains_alpha(tmp_path: Path) -> None:
    """A weak model's margins can all lie left of the table's fixed columns; and with alpha != 1
    a user reading score() differences through σ(Δ/T) must divide by alpha first."""
    chosen, rejected = [0.1, 0.3, -0.2, 0.05], [0.0, 0.0, 0.0, 0.0]  # |margins| 0.1, 0.3, 0.2, 0.05
    metrics = {**pairwise_metrics(chosen, rejected), "alpha": 2.0}
    meaning = _md_for(tmp_path, metrics, chosen=chosen, rejected=rejected).split("## Headline metrics")[0]
    assert "typical reward difference |r_a − r_b| is 0.15 (median; P = 0.54 for the higher one)" in meaning
    assert "α × r with α = 2: divide a difference of scores by 2" in meaning
    plain = _md_for(tmp_path, {**metrics, "alpha": 1.0}, chosen=chosen, rejected=rejected)
    assert "divide a difference of scores" not in plain


def test_one_sure_wrong_pair_is_no_evidence_of_overconfidence(tmp_path: Path) -> None:
    """One wrong pair at P = 0.88 was "over-confident by 88.1 points, beyond ±64.8" (a normal bound
    at n = 1) while the ECE sentence below it said the pairs cannot tell it from perfect calibration:
    a calibrated model gets such a pair wrong 12% of the time."""
    one = {"chosen": [0.0], "rejected": [2.0]}
    text = _section(_md_for(tmp_path, pairwise_metrics(**one), **one), "How sure it is")
    assert "confident**" not in text
    assert "The 88.1-point gap could be chance: a perfectly calibrated model with these probabilities is right " \
           "on 0% to 100% of this pair" in text
    assert "cannot be told apart from perfect calibration" in text
    four = {"chosen": [0.0] * 4, "rejected": [3.0, 4.0, 5.0, 6.0]}  # P(all 4 wrong) < 0.003: a verdict
    text = _md_for(tmp_path, pairwise_metrics(**four), **four)
    assert "It is **over-confident** by 98.1 percentage points" in text


def test_tiny_worst_margin_and_ece_are_not_printed_as_zero(tmp_path: Path) -> None:
    """An untrained model's margins of 1e-4: the worst one read "-0.000" and an ECE of 2.5e-05 "**0.000**"."""
    pairs = {"chosen": [0.0, 2.39e-4], "rejected": [2.39e-4, 0.0]}  # right once, wrong once, P ≈ 0.5
    examples = [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": -2.39e-4}]
    md = _md_for(tmp_path, pairwise_metrics(**pairs), worst_examples=examples, **pairs)
    assert "The most negative margin shown, -0.000239, means" in md
    ece = pairwise_metrics(**pairs)["ece"]
    assert 0 < ece < 5e-4 and f"is **{num(ece)}**: on average" in md and "**0.000**" not in md


def test_plot_axes_say_raw_reward_when_alpha_scales_the_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With α = 10 the model's score() and logits are 10·r, but the plots, which show r, said
    "Reward (raw model output)": a user comparing them with the model's output found a factor 10."""
    labels: dict[str, str] = {}

    def spying(name: str, draw):
        def spy(fig, ctx) -> None:
            draw(fig, ctx)
            labels[name] = fig.axes[0].get_xlabel() + " | " + fig.axes[0].get_ylabel()
        return spy

    for name in ("_draw_pair_hist", "_draw_margin_hist", "_draw_pair_vs_length", "_draw_pred_vs_target"):
        monkeypatch.setattr(report_plots, name, spying(name, getattr(report_plots, name)))
    pairs = {"chosen": [1.0, 2.0], "rejected": [0.0, 3.0], "chosen_lengths": [5.0, 6.0], "rejected_lengths": [7.0, 4.0]}
    _md_for(tmp_path, {**pairwise_metrics(**pairs), "alpha": 10.0, "normalize_rewards": False}, **pairs)
    assert "raw model output" not in str(labels)
    assert labels["_draw_pair_hist"].startswith("Raw reward r (before α = 10; not the model's score) |")
    assert labels["_draw_margin_hist"].startswith("Margin = reward(chosen) − reward(rejected) (raw rewards, before α = 10)")
    assert labels["_draw_pair_vs_length"].endswith("| Raw reward r (before α = 10; not the model's score)")
    target = [0.1, 0.5, 0.9]
    write_report(tmp_path / "mse", kind="mse", rewards=[0.2, 0.4, 0.7], targets=target,
                 metrics={**scalar_metrics([0.2, 0.4, 0.7], target), "alpha": 2.0, "normalize_rewards": True,
                          "reward_mean": 0.1, "reward_std": 0.5})
    assert labels["_draw_pred_vs_target"].endswith(
        "| Raw predicted reward r (before α and normalization; not the model's score)")
    _md_for(tmp_path, {**pairwise_metrics(**pairs), "alpha": 1.0, "normalize_rewards": False}, **pairs)
    assert labels["_draw_pair_hist"].startswith("Reward |")


@pytest.mark.parametrize("kind", ["pairwise", "ranking"])
def test_uncalibrated_mse_model_is_not_said_to_be_sure_of_its_picks(tmp_path: Path, kind: str) -> None:
    """An mse model on preferences without a fitted T: "What the numbers mean" said its T = 1
    differences are no probabilities, yet "How sure it is" went on "On average the model is 84% sure
    ... its confidence matches how often it is right" and read the ECE as its stated probabilities' error."""
    if kind == "pairwise":
        chosen, rejected = [3.0, 2.5, 4.0, 1.0, 2.0, 3.5], [1.0, 0.5, 1.5, 2.0, 0.0, 1.0]
        metrics, data = pairwise_metrics(chosen, rejected), {"chosen": chosen, "rejected": rejected}
    else:
        metrics, data = _ranking_metrics_as_evaluated([[3.0, 1.0, 0.5], [2.0, 2.5, 0.0]]), {}
    md = _kind_md(tmp_path, kind, {**metrics, "trained_objective": "mse"}, **data)
    sure = _section(md, "How sure it is")
    assert "this report cannot say how sure it is" in sure and "depend on the annotations' scale" in sure
    assert "sure which of two responses" not in sure and "confidence matches" not in sure and "-confident" not in sure
    assert "stated probability is" not in sure and "cannot be told apart from perfect calibration" not in sure
    rows = _headline_rows(md)
    assert "how sure the model is" not in rows["Mean confidence"][1]
    assert rows["ECE"][1].endswith("at T = 1 of an mse model: depends on the annotations' scale, no probability (see above)")
    calibrated = _section(_kind_md(tmp_path, kind, {**metrics, "trained_objective": "mse"}, temperature=2.0, **data),
                          "How sure it is")
    assert "sure which of two responses" in calibrated and "cannot say how sure" not in calibrated
    assert "sure which of two responses" in _section(_kind_md(tmp_path, kind, metrics, **data), "How sure it is")


def test_reward_std_is_not_written_as_the_sigmoids_sigma(tmp_path: Path) -> None:
    """With normalize_rewards on, the meaning section defined σ(x) = 1 / (1 + e^(−x)) and two lines later
    wrote the score as α × (r − μ) / σ with σ = 1.5, the reward std: one symbol for two things."""
    chosen, rejected = [0.1, 0.3, -0.2, 0.05], [0.0, 0.0, 0.0, 0.0]
    metrics = {**pairwise_metrics(chosen, rejected), "alpha": 1.0, "normalize_rewards": True,
               "reward_mean": 0.25, "reward_std": 1.5}
    md = _md_for(tmp_path, metrics, chosen=chosen, rejected=rejected)
    meaning = _section(md, "What the numbers mean")
    assert "σ(x) = 1 / (1 + e^(−x))" in meaning
    assert "σ = 1.5" not in md and "/ σ" not in md and "α / σ" not in md
    assert "α × (r − μ) / s with α = 1, μ = 0.25 and s = 1.5" in meaning and "μ and s are the mean" in meaning
    assert _headline_rows(md)["Reward std s"][0] == "1.500"


def test_failures_count_the_misordered_pairs_and_say_when_that_is_expected(tmp_path: Path) -> None:
    """Review ("chosen is sometimes lower than rejected: is that wrong?"): the report listed the 10
    smallest margins and never said how many of the pairs were misordered, how many the model's own
    probabilities expect, or that an accuracy whose interval reaches 0.5 makes its failures no evidence."""
    rng = np.random.default_rng(3)
    margins = rng.normal(0.0, 1.5, size=400)
    won = rng.random(400) < 1 / (1 + np.exp(-margins))  # labels drawn from the model's own P: calibrated
    pairs = {"chosen": np.where(won, margins, 0.0), "rejected": np.where(won, 0.0, margins)}
    m = pairwise_metrics(**pairs)
    wrong = int(np.sum(pairs["chosen"] < pairs["rejected"]))
    text = _section(_md_for(tmp_path, m, **pairs), "Where it fails")
    assert f"the higher reward in **{wrong} of 400 pairs** ({100 * wrong / 400:.0f}%)" in text
    assert f"A calibrated model gets some wrong: with these probabilities (at T = 1) about " \
           f"{round(400 * (1 - m['mean_confidence']))} (" in text
    assert "as far as these pairs can tell" in text and "guesses" not in text

    sure = {"chosen": [2.0] * 30 + [0.0] * 10, "rejected": [0.0] * 30 + [2.0] * 10}  # P = 0.88, right 75%
    md = _md_for(tmp_path, pairwise_metrics(**sure), **sure)
    assert "**10 of 40 pairs** (25%)" in _section(md, "Where it fails")
    assert "it is over-confident" in _section(md, "Where it fails")
    assert "**over-confident**" in _section(md, "How sure it is")  # the same test in both sections

    coin = {"chosen": [0.1, -0.1] * 20, "rejected": [0.0] * 40}
    text = _section(_md_for(tmp_path, pairwise_metrics(**coin), **coin), "Where it fails")
    assert "**20 of 40 pairs** (50%)" in text and "cannot tell it from a model that guesses" in text


def test_failures_say_which_listed_pairs_are_misordered(tmp_path: Path, text_only: dict) -> None:
    """Three misordered pairs among ten listed read as "the 10 pairs ... most negative first"."""
    margins = [-1.0, -0.5, -0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    examples = [{"prompt": "p", "chosen": "c", "rejected": "r", "margin": x} for x in margins]
    md = _md_for(tmp_path, text_only["metrics"], worst_examples=examples)
    assert "most negative first: the first 3 misordered, the rest the closest calls the model got right." in md


def test_readme_example_gives_the_probability_of_the_side_it_names() -> None:
    """The README's "What the numbers mean" said "chosen 2.1, rejected 3.4" means "the model prefers the
    rejected answer with P = σ(−1.3) = 0.21": 0.21 is the chosen answer's probability, the rejected one's 0.79."""
    from tests import helpers

    readme = " ".join((helpers.REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    found = re.search(r'"chosen ([\d.]+), rejected ([\d.]+)" means the model prefers the rejected answer: '
                      r"P\(chosen ≻ rejected\) = σ\([\d.]+ − [\d.]+\) = σ\(−[\d.]+\) = ([\d.]+) \(at T = 1\), so "
                      r"P\(rejected ≻ chosen\) = ([\d.]+)\.", readme)
    assert found, "the README's example of a reward difference is gone or reworded"
    chosen, rejected, p_chosen, p_rejected = (float(x) for x in found.groups())
    assert f"{1 / (1 + np.exp(rejected - chosen)):.2f}" == f"{p_chosen:.2f}"
    assert f"{1 / (1 + np.exp(chosen - rejected)):.2f}" == f"{p_rejected:.2f}"


def test_mse_rmse_stands_beside_the_target_std_it_is_read_against(tmp_path: Path) -> None:
    """Review: an mse report gave "RMSE 0.931" and nothing to read it against. The row below it gives
    the targets' standard deviation on the evaluated responses: the RMSE of always predicting their mean."""
    target = np.array([1.0, 2.0, 3.0, 6.0])
    metrics = scalar_metrics(target + 0.5, target)
    assert metrics["target_std"] == pytest.approx(np.sqrt(np.mean((target - target.mean()) ** 2)))
    assert metrics["target_std"] == pytest.approx(scalar_metrics(np.full(4, target.mean()), target)["rmse"])
    rows = _headline_rows(_kind_md(tmp_path, "mse", metrics))
    assert list(rows)[1:3] == ["RMSE", "Target std"]
    assert rows["RMSE"][1].endswith("read it against the target std")
    assert rows["Target std"] == (num(metrics["target_std"]), "standard deviation of the targets on these responses: "
                                  "the RMSE of always predicting their mean, so an RMSE near it is no better than that")


def test_counts_of_one_take_the_singular(tmp_path: Path) -> None:
    """Review: a report on one pair said "on 1 pairs", and a single tie "1 more are exact ties"."""
    one = _md_for(tmp_path, pairwise_metrics([0.2], [0.5]), chosen=[0.2], rejected=[0.5])
    assert "preference pairs (chosen vs rejected): 1 pair;" in one
    assert "standard error of the accuracy on 1 pair, were" in one and "ECE of up to 0.574 on 1 pair by" in one
    assert "in **1 of 1 pair** (100%)" in one and "1 pairs" not in one
    tie = _md_for(tmp_path, pairwise_metrics([0.5, 0.3, 0.1], [0.5, 0.4, 0.0]), chosen=[0.5, 0.3, 0.1],
                  rejected=[0.5, 0.4, 0.0])
    assert "in **1 of 3 pairs** (33%; 1 more is an exact tie)." in tie
    groups = [[1.0, 2.0]]
    md = _kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups))
    assert "ranked groups of responses: 1 group;" in md
    assert "in **1 of 1 within-group pair** (100%), and another response above the labelled best one in " \
           "**1 of 1 group** (top-1 miss)." in md
    assert "The 1 group with the smallest margins; 1 of them is a top-1 miss" in md
    mse = _kind_md(tmp_path, "mse", scalar_metrics([1.0], [2.0]),
                   worst_examples=[{"response": "r", "predicted": 1.0, "target": 2.0}])
    assert "scalar scores (regression): 1 response." in mse and "The 1 response whose prediction" in mse
    assert not re.search(r"\b1 (pairs|groups|responses|within-group pairs)\b", one + tie + md + mse)


def _calibrated_ranked_groups(seed: int, n_groups: int, k: int) -> list[list[float]]:
    """Groups labelled by the model's own probabilities: each group's order is a Plackett-Luce draw
    from its rewards (Gumbel trick), whose every pair then goes the model's way with probability
    σ(r_a − r_b) exactly, so the model is calibrated (T = 1) by construction. Best first."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        rewards = rng.normal(0.0, 0.5, k)
        groups.append(rewards[np.argsort(-(rewards + rng.gumbel(size=k)))].tolist())
    return groups


def test_ranked_confidence_verdict_allows_for_the_pairs_of_a_group_being_correlated(tmp_path: Path) -> None:
    """8 groups of 10 labelled by a calibrated model's own probabilities: counting their 360 pairs as
    independent, the report called the model "over-confident by 7.5 percentage points"; the pairs of
    one group share responses, and with the groups' design effect the gap is within chance."""
    from rewardkit.metrics import within_group_margins

    groups = _calibrated_ranked_groups(17, 8, 10)
    metrics = _ranking_metrics_as_evaluated(groups)
    deff = metrics["confidence_design_effect"]
    text = _section(_kind_md(tmp_path, "ranking", metrics, pair_margins=within_group_margins(groups)), "How sure it is")
    assert "confident**" not in text
    assert f"were the model calibrated, widened by the square root of the groups' design effect, {deff:.2f})" in text
    assert "the verdict's bound above allows for it" in text
    older = {k: v for k, v in metrics.items() if k != "confidence_design_effect"}  # metrics.json of an older version
    text = _section(_kind_md(tmp_path, "ranking", older, pair_margins=within_group_margins(groups)), "How sure it is")
    assert "It is **over-confident** by 7.5 percentage points" in text and "somewhat too narrow" in text


def test_ranked_confidence_verdict_false_alarms_on_calibrated_groups_about_one_time_in_twenty() -> None:
    """The false-alarm rate the previous test shows once: on 300 sets of 20 calibrated groups of 10
    (see _calibrated_ranked_groups), the verdict counting pairs as independent called about one in
    five over- or under-confident; with the groups' design effect, about the 5% a 2-SE test should."""
    from types import SimpleNamespace

    from rewardkit.metrics import within_group_margins
    from rewardkit.report_confidence import accuracy_by_chance, confidence_call

    calls = {"independent": 0, "by group": 0}
    for seed in range(300):
        groups = _calibrated_ranked_groups(seed, 20, 10)
        m = ranking_metrics(groups)
        chance = accuracy_by_chance(SimpleNamespace(preference_margins=within_group_margins(groups), temperature=1.0,
                                                    group_sizes=None, n_bins=10))  # each pair drawn on its own
        args = (m["mean_confidence"], m["pairwise_accuracy"], m["n_pairs"], chance)
        calls["independent"] += confidence_call(*args) is not None
        calls["by group"] += confidence_call(*args, m["confidence_design_effect"]) is not None
    assert calls["independent"] > 45 and calls["by group"] <= 21, calls


def _ranked_context(groups: list[list[float]], *, by_group: bool) -> Any:
    """The report's context for these groups, as write_report builds it (with or without group_sizes)."""
    from rewardkit.metrics import within_group_margins
    from rewardkit.report import _Context

    ctx = _Context(kind="ranking", metrics={}, chosen=None, rejected=None, chosen_lengths=None, rejected_lengths=None,
                   rewards=np.concatenate(groups), targets=None, lengths=None, pair_margins=within_group_margins(groups),
                   group_sizes=np.array([len(g) for g in groups]) if by_group else None, worst_examples=[],
                   model_name="", temperature=1.0, redact=False, length_unit="characters", n_bins=10)
    ctx.validate()
    return ctx


def test_ranked_chance_ranges_draw_whole_rankings_of_a_group(tmp_path: Path) -> None:
    """The groups of the test above, calibrated by construction: drawing each of their 360 pairs on its
    own, the ECE's chance bound was 0.064 and the report said "the miscalibration is larger than chance
    explains" of its ECE of 0.076, and told the reader to calibrate. Given the groups, each simulation
    draws every group's whole ranking (Plackett-Luce from the rewards), and the ECE is within chance."""
    from rewardkit.metrics import within_group_margins

    groups = _calibrated_ranked_groups(17, 8, 10)
    metrics = _ranking_metrics_as_evaluated(groups)
    data = {"rewards": np.concatenate(groups), "pair_margins": within_group_margins(groups)}
    by_pair = _section(_kind_md(tmp_path, "ranking", metrics, **data), "How sure it is")
    assert "ECE of up to 0.064" in by_pair and "the miscalibration is larger than chance explains" in by_pair
    assert "To calibrate" in by_pair and "simulated as if they were independent, are somewhat too narrow" in by_pair
    text = _section(_kind_md(tmp_path, "ranking", metrics, group_sizes=[10] * 8, **data), "How sure it is")
    assert "**0.076**" in text and "ECE of up to 0.086" in text
    assert "this ECE cannot be told apart from perfect calibration" in text and "To calibrate" not in text
    assert "confident**" not in text and "too narrow" not in text
    assert ("and so do the chance ranges in this section (each simulation draws every group's whole ranking "
            "from the model's own rewards") in text
    older = {k: v for k, v in metrics.items() if k != "confidence_design_effect"}  # metrics.json of an older version
    text = _section(_kind_md(tmp_path, "ranking", older, group_sizes=[10] * 8, **data), "How sure it is")
    assert "The 7.5-point gap could be chance" in text and "confident**" not in text
    assert ("own probability) allow for it; the verdict's twice-standard-error bound, computed as if they were "
            "independent, is somewhat too narrow.") in text


def test_ranked_chance_ranges_false_alarm_on_calibrated_groups_about_one_time_in_twenty() -> None:
    """The false-alarm rate the previous test shows once: on 300 sets of 20 calibrated groups of 10,
    the chance ranges drawn pair by pair called the ECE "larger than chance explains" about one time in
    five and put the accuracy outside its central 95% as often; drawn by whole rankings, about the 5%
    (two-sided accuracy range: ~6% on 200 simulations' quantiles) a 95% range should."""
    from rewardkit.report_confidence import _ece_by_chance, accuracy_by_chance

    alarms = {(by_group, what): 0 for by_group in (False, True) for what in ("ece", "accuracy")}
    for seed in range(300):
        groups = _calibrated_ranked_groups(seed, 20, 10)
        m = ranking_metrics(groups)
        for by_group in (False, True):
            ctx = _ranked_context(groups, by_group=by_group)
            low, high = accuracy_by_chance(ctx)
            alarms[by_group, "ece"] += m["ece"] > _ece_by_chance(ctx)
            alarms[by_group, "accuracy"] += not low <= m["pairwise_accuracy"] <= high
    assert alarms[False, "ece"] > 45 and alarms[False, "accuracy"] > 45, alarms
    assert alarms[True, "ece"] <= 24 and alarms[True, "accuracy"] <= 27, alarms


def test_group_sizes_that_do_not_fit_the_rewards_and_margins_are_refused(tmp_path: Path) -> None:
    """The chance ranges draw rankings from the rewards split by group_sizes and score them with the
    pair_margins' probabilities: sizes of other data would give the ranges of other data, silently."""
    from rewardkit.metrics import within_group_margins

    groups = [[1.0, 0.2, -0.5], [0.3, 0.9]]
    data = {"rewards": np.concatenate(groups), "pair_margins": within_group_margins(groups)}
    metrics = _ranking_metrics_as_evaluated(groups)
    for sizes, message in [([2, 3], "not the within-group margins"), ([3, 3], "add up to 6 responses but 5"),
                           ([3, 1, 1], "at least 2"), ([2.5, 2.5], "whole numbers")]:
        with pytest.raises(ValueError, match=message):
            write_report(tmp_path / "r", kind="ranking", metrics=metrics, group_sizes=sizes, **data)
    with pytest.raises(ValueError, match="need the rewards"):
        write_report(tmp_path / "r", kind="ranking", metrics=metrics, group_sizes=[3, 2],
                     pair_margins=data["pair_margins"])
    with pytest.raises(ValueError, match="for ranked data"):
        write_report(tmp_path / "r", kind="pairwise", metrics={}, chosen=[1.0], rejected=[0.0], group_sizes=[2])
    assert not (tmp_path / "r").exists()


def _ranked_fails(tmp_path: Path, groups: list[list[float]]) -> str:
    """The "Where it fails" section of these groups' report, written as evaluate writes it."""
    from rewardkit.metrics import within_group_margins

    data = {"rewards": np.concatenate(groups), "pair_margins": within_group_margins(groups),
            "group_sizes": [len(g) for g in groups]}
    md = _kind_md(tmp_path, "ranking", _ranking_metrics_as_evaluated(groups), worst_examples=_ranking_worst(groups),
                  **data)
    return _section(md, "Where it fails")


def test_ranked_failures_set_the_counts_beside_a_calibrated_models(tmp_path: Path) -> None:
    """Ranked "Where it fails" gave the misordered within-group pairs and top-1 misses and said nothing
    of how many a calibrated model gets wrong (pairwise data had that comparison). Now: the expected
    misordered pairs (Σ min(P, 1 − P)) and top-1 misses (Plackett-Luce: the labelled best is on top
    with probability softmax(rewards) of the top), with ranges from the group-aware simulations and
    the verdict of "How sure it is". 30 groups of 5 labelled by the model's own probabilities, then the
    same labels with rewards ×3 (over-confident) and with rewards from a sharper model (under-confident)."""
    from rewardkit.metrics import within_group_margins

    def expected(groups: list[list[float]]) -> tuple[int, int]:
        p = 1 / (1 + np.exp(-within_group_margins(groups)))
        top = [np.exp(max(g)) / np.sum(np.exp(g)) for g in groups]
        return round(float(np.sum(np.minimum(p, 1 - p)))), round(float(np.sum(1 - np.array(top))))

    calibrated = _calibrated_ranked_groups(3, 30, 5)
    fails = _ranked_fails(tmp_path, calibrated)
    pairs, misses = expected(calibrated)
    assert ("**112 of 300 within-group pairs** (37%), and another response above the labelled best one in **21 of 30 "
            "groups** (top-1 misses). A calibrated model misorders some: with these probabilities (at T = 1) about "
            f"{pairs} within-group pairs (92 to 130 by chance) and about {misses} top-1 misses (15 to 25)") in fails
    assert (pairs, misses) == (111, 20) and "drawing each group's whole ranking" in fails
    assert "Its count of misordered pairs is what its confidence predicts, as far as these groups can tell." in fails
    assert "Its top-1 misses lie" not in fails

    over = [[3 * r for r in g] for g in calibrated]
    fails = _ranked_fails(tmp_path, over)
    assert f"about {expected(over)[0]} within-group pairs (51 to 80 by chance) and about {expected(over)[1]} " in fails
    assert "It gets more wrong than that: it is over-confident" in fails
    assert "Its top-1 misses lie above their range: the labelled best is on top less often" in fails

    rng, under = np.random.default_rng(1), []
    for _ in range(30):  # labels from a model 3x as sure as this one
        rewards = rng.normal(0.0, 0.5, 5)
        under.append(rewards[np.argsort(-(3 * rewards + rng.gumbel(size=5)))].tolist())
    fails = _ranked_fails(tmp_path, under)
    assert "**60 of 300 within-group pairs**" in fails and f"about {expected(under)[0]} within-group pairs" in fails
    assert "It gets fewer wrong than that: it is under-confident" in fails
    assert "Its top-1 misses lie below their range: the labelled best is on top more often" in fails


def test_ranked_failures_compare_when_no_group_is_misordered(tmp_path: Path) -> None:
    """Every group in order, but by margins a calibrated model would often get wrong: the section said
    "No group is misordered" and nothing of how few errors that is for such a model."""
    groups = [[0.3, 0.2, 0.1, 0.0]] * 30
    fails = _ranked_fails(tmp_path, groups)
    assert fails.index("**No group is misordered**") < fails.index("A calibrated model misorders some")
    assert "It gets fewer wrong than that: it is under-confident" in fails
    assert "Its top-1 misses lie below their range" in fails


def test_expected_top1_misses_are_plackett_luce_and_match_the_simulations() -> None:
    """P(the labelled best is the model's top) under Plackett-Luce is the top's softmax(rewards / T)
    share, a tie at the top counting each tied response; the simulated counts average to it."""
    from rewardkit.report_confidence import calibrated_draws

    groups = [[0.0, 1.0, 0.5], [2.0, 0.0], [1.0, 1.0, 0.0]] * 20
    ctx = _ranked_context(groups, by_group=True)
    ctx.temperature = 0.5
    e = np.exp
    one = (1 - e(2) / (1 + e(2) + e(1))) + (1 - e(4) / (e(4) + 1)) + (1 - 2 * e(2) / (2 * e(2) + 1))
    draws = calibrated_draws(ctx)
    assert draws.expected_top1_misses == pytest.approx(20 * one)
    assert np.mean(draws.top1_misses) == pytest.approx(20 * one, abs=0.5)
    p = 1 / (1 + np.exp(-ctx.pair_margins / 0.5))
    assert draws.expected_misordered == pytest.approx(np.sum(np.minimum(p, 1 - p)[ctx.pair_margins != 0]))
    assert np.mean(draws.misordered) == pytest.approx(draws.expected_misordered, abs=1.0)


def test_ranked_failure_ranges_false_alarm_on_calibrated_groups_about_one_time_in_twenty() -> None:
    """On 200 sets of 20 calibrated groups of 10, how often the misordered pairs and the top-1 misses
    fall outside the ranges "Where it fails" gives them: about the 5% a central 95% range should."""
    from rewardkit.report_confidence import calibrated_draws

    outside = {"pairs": 0, "top1": 0}
    for seed in range(200):
        groups = _calibrated_ranked_groups(seed, 20, 10)
        m = ranking_metrics(groups)
        draws = calibrated_draws(_ranked_context(groups, by_group=True))
        observed = {"pairs": m["n_pairs"] * (1 - m["pairwise_accuracy"]), "top1": 20 * (1 - m["top1_accuracy"])}
        for what, simulated in (("pairs", draws.misordered), ("top1", draws.top1_misses)):
            low, high = np.quantile(simulated, [0.025, 0.975])
            outside[what] += not low <= round(observed[what]) <= high
    assert outside["pairs"] <= 20 and outside["top1"] <= 20, outside


def test_failures_leave_exact_ties_out_of_a_calibrated_models_count(tmp_path: Path) -> None:
    """Pairwise: 20 pairs at P = 0.73 and 20 exact ties. The count leaves ties out ("0 of 40 pairs; 20
    more are exact ties") but the calibrated model's was n(1 − mean confidence), half of every tie in it:
    "about 15 (10 to 22 by chance)", three times the 5 it gets wrong of the 20 pairs it decides."""
    pairs = {"chosen": [1.0] * 20 + [0.0] * 20, "rejected": [0.0] * 40}
    fails = _section(_md_for(tmp_path, pairwise_metrics(**pairs), **pairs), "Where it fails")
    assert "**0 of 40 pairs** (0%; 20 more are exact ties)" in fails
    assert "about 5 (1 to 10 by chance)" in fails and round(20 / (1 + np.e)) == 5
    assert "Its count lies outside that range, but its accuracy is too close to its confidence" in fails
    assert "what its confidence predicts" not in fails


def test_the_report_draws_its_calibrated_simulations_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The accuracy's and the ECE's chance ranges and the counts of "Where it fails" were drawn in
    separate simulations (600 per pairwise report), each time the report is written after evaluate."""
    import rewardkit.report_confidence as report_confidence

    calls = []
    simulate = report_confidence._simulate
    monkeypatch.setattr(report_confidence, "_simulate", lambda *a: calls.append(1) or simulate(*a))
    pairs = {"chosen": [2.0, 0.5, -0.3, 1.0], "rejected": [0.0, 1.0, 0.2, 0.1]}
    assert "A calibrated model gets some wrong" in _md_for(tmp_path, pairwise_metrics(**pairs), **pairs)
    groups = _calibrated_ranked_groups(3, 10, 4)
    fails = _ranked_fails(tmp_path, groups)
    assert "A calibrated model misorders some" in fails and len(calls) == 2


def test_counts_of_one_in_calibration_truncation_and_plot_titles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: at n = 1 the report said "fitted T on these same 1 pairs", "95% interval for T on these
    1 pairs", "in 1 of 1 scored texts", and its plots "(1 pairs)", "(1 responses)"."""
    import rewardkit.report as report

    titles: list[str] = []

    def keeping_titles() -> object:  # report.md is written after the plots: their titles, before clear()
        fig = report_plots.new_figure()
        fig.clear = lambda *args, **kwargs: titles.extend(ax.get_title() for ax in fig.axes)
        return fig

    monkeypatch.setattr(report, "new_figure", keeping_titles)
    one = {"chosen": [0.0], "rejected": [2.0]}
    metrics = {**pairwise_metrics(**one, temperature=0.5), "temperature_before": 1.0, "temperature_fitted": 0.5,
               "temperature_written": True, "temperature_interval": [0.1, 3.0], "temperature_lr_vs_1": 0.2,
               "temperature_differs_from_1": False}
    text = _section(_md_for(tmp_path, metrics, temperature=0.5, **one), "How sure it is")
    assert "`--calibrate` fitted T = 0.5 on this same pair and wrote it" in text
    assert "95% interval for T on this pair (profile likelihood)" in text
    assert "Rewards of chosen vs rejected responses (1 pair)" in titles
    assert "Reward margins: accuracy 0.0% (1 pair)" in titles
    cut = {**scalar_metrics([1.0], [2.0]), "max_length": 8, "truncation": {"texts": 1, "prompt_cut": 1, "response_cut": 0}}
    mse = _kind_md(tmp_path, "mse", cut, rewards=[1.0], targets=[2.0])
    assert "the start of the prompt was cut in 1 of 1 scored text and the end of the response in 0." in mse
    assert "Reward distribution (1 response)" in titles
    assert not re.search(r"\b(these (same )?1|1 (pairs|responses|scored texts))\b", text + mse + " ".join(titles))
