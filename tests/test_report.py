"""write_report: files, PNG sanity, JSON round-trip, markdown content, redaction, atomicity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

import rewardkit.report as report_mod
from rewardkit.metrics import pairwise_metrics, ranking_metrics, scalar_metrics
from rewardkit.report import REPORT_FILES, write_report

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
        {"prompt": LONG_TEXT, "chosen": "ok", "rejected": "a\nb", "margin": -3.25},
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
    assert "**T = 2**" in text and "fitted temperature" in text
    assert "| P(a preferred over b) | 0.50 | 0.56 | 0.62 | 0.73 | 0.88 |" in text  # σ(m / 2)


def test_worst_examples_truncated_and_escaped(tmp_path: Path, text_only: dict) -> None:
    md = write_report(tmp_path / "r", kind="pairwise", redact=False, **text_only)["report.md"]
    text = md.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1  # the newline inside the text did not break the row
    row = rows[0]
    assert SECRET in row
    assert "x" * 200 not in row and "…" in row  # cut to 120 characters
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

    monkeypatch.setattr(report_mod, "_draw_reliability", boom)
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

    monkeypatch.setattr(report_mod, "_draw_margin_hist", boom)
    with pytest.raises(RuntimeError):
        write_report(out, kind="pairwise", **{**pairwise_data, "metrics": {"n": 0}})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _leftovers(tmp_path) == []


def test_report_files_constant_covers_outputs() -> None:
    assert {"metrics.json", "report.md", "pred_vs_target.png"} <= REPORT_FILES
