"""evaluate_model on small fixture files with a tiny saved model: metrics equal the hand-computed
ones, the report is written, calibration round-trips through config.json, large files stream."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from modeling_reward import RewardModel
from rewardkit import evaluation
from rewardkit.calibration import T_MAX, CalibrationWarning, fit_temperature, temperature_evidence
from rewardkit.data import RewardDataError
from rewardkit.evaluation import evaluate_model
from rewardkit.metrics import (
    pairwise_metrics,
    ranking_metrics,
    reward_stats,
    scalar_metrics,
    within_group_margins,
)
from rewardkit.scoring import RewardScorer
from tests import helpers

WORDS = "the a cat dog sat ran on under mat tree why how is blue green sky sea rome paris yes no".split()


@pytest.fixture(scope="module", autouse=True)
def _one_thread_here(one_thread):
    """Tiny models run faster on one thread (see conftest.one_thread)."""


@pytest.fixture(autouse=True)
def _no_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)  # the report redacts texts when CI is set


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny random reward model (alpha 2) saved with its tokenizer."""
    torch.manual_seed(11)
    model = helpers.tiny_reward_model(alpha=2.0)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scorer(model_dir) -> RewardScorer:
    return RewardScorer(model_dir, device="cpu")


def _sentence(rng: np.random.Generator, low: int = 1, high: int = 25) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(low, high))))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, scorer) -> Path:
    """Fixture files. The pairwise pairs are oriented with the model's own rewards (chosen wins
    3 times in 4), so a calibration fit is well defined whatever the random weights are."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("data")
    prompts = [_sentence(rng) + "?" for _ in range(48)]
    first = [_sentence(rng) for _ in prompts]
    second = [_sentence(rng) for _ in prompts]
    r1 = scorer.raw_rewards(prompts, first)
    r2 = scorer.raw_rewards(prompts, second)
    pairs = []
    for i, prompt in enumerate(prompts):
        better, worse = (first[i], second[i]) if r1[i] >= r2[i] else (second[i], first[i])
        if i % 4 == 3:
            better, worse = worse, better
        pairs.append({"prompt": prompt, "chosen": better, "rejected": worse})
    _write_jsonl(folder / "pairwise.jsonl", pairs)
    scalar = [{"prompt": p, "response": r, "reward": float(rng.normal())} for p, r in zip(prompts, first)]
    _write_jsonl(folder / "scalar.jsonl", scalar)
    ranked = [{"prompt": p, "responses": [_sentence(rng) for _ in range(int(rng.integers(2, 5)))]}
              for p in prompts[:20]]
    _write_jsonl(folder / "ranked.jsonl", ranked)
    return folder


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _lengths(texts: list[str]) -> np.ndarray:
    return np.array([len(t) for t in texts], dtype=float)


def _assert_same(actual: dict, expected: dict) -> None:
    for key, value in expected.items():
        if isinstance(value, dict):
            _assert_same(actual[key], value)
        elif value is None:
            assert actual[key] is None, key
        else:
            assert actual[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


# ---------------------------------------------------------------- metrics by hand


def test_pairwise_metrics_equal_hand_computed(model_dir, data_dir, scorer):
    rows = _rows(data_dir / "pairwise.jsonl")
    metrics = evaluate_model(model_dir, data_dir / "pairwise.jsonl", device="cpu")
    prompts = [r["prompt"] for r in rows]
    chosen, rejected = [r["chosen"] for r in rows], [r["rejected"] for r in rows]
    raw = np.array(scorer.raw_rewards(prompts + prompts, chosen + rejected))
    c, r = raw[: len(rows)], raw[len(rows):]
    expected = pairwise_metrics(c, r, temperature=1.0, chosen_lengths=_lengths(chosen),
                                rejected_lengths=_lengths(rejected))
    _assert_same(metrics, expected)
    _assert_same(metrics["rewards"], reward_stats(raw))
    assert metrics["accuracy"] == pytest.approx(0.75)  # by construction of the fixture
    assert metrics["n"] == len(rows) and metrics["objective"] == "pairwise"
    assert metrics["alpha"] == 2.0 and metrics["temperature"] == 1.0
    assert metrics["model"] == str(model_dir) and metrics["data"] == str(data_dir / "pairwise.jsonl")
    assert metrics["skipped"] == 0
    json.dumps(metrics, allow_nan=False)


def test_mse_metrics_compare_the_raw_reward_training_fitted(model_dir, data_dir, scorer):
    """mse training fits the raw reward to the targets; alpha (2 here) only rescales score()."""
    rows = _rows(data_dir / "scalar.jsonl")
    metrics = evaluate_model(model_dir, data_dir / "scalar.jsonl", objective="mse")
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    raw = scorer.raw_rewards(prompts, responses)
    expected = scalar_metrics(raw, [r["reward"] for r in rows], lengths=_lengths(responses))
    _assert_same(metrics, expected)
    scaled = scalar_metrics(scorer.score(prompts, responses), [r["reward"] for r in rows])
    assert metrics["rmse"] != pytest.approx(scaled["rmse"])  # alpha 2 would have changed it
    _assert_same(metrics["rewards"], reward_stats(scorer.raw_rewards(prompts, responses)))
    assert metrics["objective"] == "mse" and metrics["n"] == len(rows)


def test_ranking_metrics_equal_hand_computed(model_dir, data_dir, scorer):
    rows = _rows(data_dir / "ranked.jsonl")
    metrics = evaluate_model(scorer, data_dir / "ranked.jsonl")
    groups = [scorer.raw_rewards(r["prompt"], r["responses"]) for r in rows]
    _assert_same(metrics, ranking_metrics(groups))
    assert metrics["n"] == len(rows) and metrics["n_responses"] == sum(len(g) for g in groups)
    assert metrics["objective"] == "ranking" and "spearman_reward_length" in metrics["length_bias"]


def test_skipped_rows_and_limit_are_counted(model_dir, tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    rows[2]["rejected"] = rows[2]["chosen"]  # invalid: identical responses
    data = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    metrics = evaluate_model(model_dir, data, skip_invalid=True)
    assert metrics["n"] == 5 and metrics["skipped"] == 1 and sum(metrics["skipped_reasons"].values()) == 1
    assert evaluate_model(model_dir, data, skip_invalid=True, limit=3)["n"] == 3


def test_limit_checks_columns_and_reports_skips_of_the_rows_read(model_dir, tmp_path, caplog):
    """`--limit` stopped reading before the end of the data, where `--columns` is checked and the
    skips are logged: a typo in `--columns ranks=...` left the ranks unread and the responses
    were evaluated as best first without a word, and the skip warning was never printed."""
    rows = [{"prompt": f"q{i}", "responses": [f"a {i}", f"b {i}", f"c {i}"], "order": [3, 1, 2]} for i in range(4)]
    rows[1]["responses"] = ["only one"]  # invalid: fewer than 2 responses
    data = _write_jsonl(tmp_path / "ranked.jsonl", rows)
    with pytest.raises(RewardDataError, match="no row has a column 'ordr'"):
        evaluate_model(model_dir, data, columns="ranks=ordr", skip_invalid=True, limit=2)
    with caplog.at_level("WARNING", logger="rewardkit.data"):
        metrics = evaluate_model(model_dir, data, columns="ranks=order", skip_invalid=True, limit=2)
    assert (metrics["n"], metrics["skipped"]) == (2, 1)
    assert "skipped 1 invalid row(s); too few responses: 1" in caplog.text


# ---------------------------------------------------------------- report


def test_report_dir_gets_metrics_plots_and_markdown(model_dir, data_dir, tmp_path):
    report = tmp_path / "report"
    metrics = evaluate_model(model_dir, data_dir / "pairwise.jsonl", report_dir=report, data_name="fixture pairs")
    names = {p.name for p in report.iterdir()}
    assert {"metrics.json", "report.md", "reward_hist.png", "margin_hist.png", "reliability.png",
            "reward_vs_length.png"} <= names
    assert json.loads((report / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["data_name"] == "fixture pairs"
    markdown = (report / "report.md").read_text()
    assert "Where it fails" in markdown
    # the worst pair (most negative margin) is among the examples shown
    rows = _rows(data_dir / "pairwise.jsonl")
    assert any(r["prompt"][:40] in markdown for r in rows)


def test_the_backbone_precision_reaches_metrics_json_and_the_report(model_dir, data_dir, tmp_path):
    """`evaluate --dtype bf16` (and a --calibrate fit run so) moves the numbers, but neither the
    metrics nor report.md said which precision they were measured in."""
    data = data_dir / "pairwise.jsonl"
    assert evaluate_model(model_dir, data, device="cpu", limit=4)["dtype"] == "fp32"
    metrics = evaluate_model(model_dir, data, device="cpu", limit=4, dtype="bf16", report_dir=tmp_path / "report")
    assert metrics["dtype"] == "bf16"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert re.search(r"Backbone precision.*\bbf16\b", markdown), markdown


def test_a_normalized_models_scale_reaches_metrics_json_and_the_report(model_dir, data_dir, tmp_path):
    """The report said score() is α × r ("divide by 2") for a model whose config normalizes:
    evaluate now records normalize_rewards, reward_mean and reward_std, and the report uses them."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "normalize_rewards": True, "reward_mean": 0.5,
                                                    "reward_std": 4.0}))
    metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", report_dir=tmp_path / "report")
    assert (metrics["normalize_rewards"], metrics["reward_mean"], metrics["reward_std"]) == (True, 0.5, 4.0)
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["reward_std"] == 4.0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "α × (r − μ) / s with α = 2, μ = 0.5 and s = 4" in markdown and "by α / s = 0.5 " in markdown
    plain = evaluate_model(model_dir, data_dir / "pairwise.jsonl")
    assert (plain["normalize_rewards"], plain["reward_mean"], plain["reward_std"]) == (False, None, None)


def test_an_mse_model_evaluated_on_pairs_is_not_said_to_give_probabilities_without_a_temperature(
        model_dir, data_dir, tmp_path):
    """report.md of an mse-trained model on preference pairs said its reward "means nothing on its
    own" and that T = 1 differences (in the annotations' units) are probabilities: evaluate records
    the model's trained_objective, and the report reads the reward as a predicted annotation and says
    its probabilities need a fitted T (and, once one is stored, reads them as probabilities again)."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "trained_objective": "mse"}))
    metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", report_dir=tmp_path / "report")
    assert metrics["trained_objective"] == "mse"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "**predicted annotation**" in markdown and "not preference probabilities" in markdown
    assert "means nothing" not in markdown and "These are probabilities" not in markdown
    (folder / "config.json").write_text(json.dumps({**config, "trained_objective": "mse",
                                                    "calibration_temperature": 2.0}))
    evaluate_model(folder, data_dir / "pairwise.jsonl", report_dir=tmp_path / "calibrated")
    calibrated = (tmp_path / "calibrated" / "report.md").read_text()
    assert "**predicted annotation**" in calibrated and "not preference probabilities" not in calibrated
    assert "These are probabilities" in calibrated
    evaluate_model(model_dir, data_dir / "pairwise.jsonl", report_dir=tmp_path / "plain")  # no trained_objective
    assert "relative score" in (tmp_path / "plain" / "report.md").read_text()


@pytest.mark.parametrize(("name", "plots"), [("scalar.jsonl", {"pred_vs_target.png", "reward_hist.png"}),
                                             ("ranked.jsonl", {"reward_hist.png", "reliability.png",
                                                               "reward_vs_length.png"})])
def test_report_for_scalar_and_ranked_data(scorer, data_dir, tmp_path, name, plots):
    evaluate_model(scorer, data_dir / name, report_dir=tmp_path / "r")
    assert plots | {"metrics.json", "report.md"} <= {p.name for p in (tmp_path / "r").iterdir()}


def test_worst_examples_keep_the_lowest_keys_in_order():
    worst = evaluation._Worst(k=3)
    made = []
    for i, key in enumerate([5.0, -1.0, 3.0, -1.0, -7.0, 0.0, 2.0]):
        worst.offer(key, lambda i=i, key=key: made.append(i) or {"i": i, "key": key})
    assert [(e["i"], e["key"]) for e in worst.examples()] == [(4, -7.0), (1, -1.0), (3, -1.0)]
    assert len(made) < 7  # texts are copied only for rows that enter the heap


# ---------------------------------------------------------------- calibration


def test_a_report_dir_that_is_a_file_is_refused_before_calibrating(model_dir, data_dir, tmp_path):
    """The report was written last: a report_dir that is a file failed with NotADirectoryError after
    every row was scored and after `calibrate` had written T into config.json."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = (folder / "config.json").read_bytes()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    for report_dir in (blocker, blocker / "report"):
        with pytest.raises(ValueError, match=f"report_dir {report_dir} cannot be a folder: {blocker} is a file"):
            evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True, report_dir=report_dir)
    assert (folder / "config.json").read_bytes() == before


def test_a_report_dir_that_is_the_data_folder_is_refused_before_any_work(model_dir, data_dir, tmp_path):
    """`--data rows --report-dir rows` wrote metrics.json among the data files, all of which a folder's
    reading takes for data: the next evaluation (or training) of the folder failed on the report's
    metrics.json as "a JSON object of an unsupported shape". A folder inside it is not read."""
    rows = tmp_path / "rows"
    rows.mkdir()
    shutil.copy(data_dir / "pairwise.jsonl", rows / "pairs.jsonl")
    for report_dir in (rows, tmp_path / "." / "rows"):
        with pytest.raises(ValueError, match="is the data folder"):
            evaluate_model(model_dir, rows, report_dir=report_dir)
    assert sorted(path.name for path in rows.iterdir()) == ["pairs.jsonl"]
    evaluate_model(model_dir, rows, report_dir=rows / "report")  # subfolders are not read as data
    assert evaluate_model(model_dir, rows)["n"] == len(_rows(rows / "pairs.jsonl"))


def test_calibrate_writes_temperature_that_a_fresh_scorer_uses(model_dir, data_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = json.loads((folder / "config.json").read_text())
    metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)
    fitted = metrics["temperature_fitted"]
    assert metrics["temperature_written"] is True and metrics["temperature"] == fitted != 1.0
    assert metrics["temperature_before"] == 1.0
    assert metrics["ece_after"] == metrics["ece"] and metrics["ece_before"] >= 0
    low, high = metrics["temperature_interval"]  # how firmly the pairs pin T down
    assert low < fitted < high and metrics["temperature_differs_from_1"] == (metrics["temperature_lr_vs_1"] > 3.841)
    assert metrics["log_loss"] <= metrics["log_loss_before"] + 1e-12  # what the fit minimises
    after = json.loads((folder / "config.json").read_text())
    assert after.pop("calibration_temperature") == pytest.approx(fitted)
    before.pop("calibration_temperature", None)
    assert after == before  # nothing else changed
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temp file left

    fresh = RewardScorer(folder, device="cpu")
    assert fresh.temperature == pytest.approx(fitted)
    prompt, a, b = "why is the sky blue?", "because of scattering", "no"
    r_a, r_b = fresh.raw_rewards(prompt, [a, b])
    assert fresh.compare(prompt, a, b) == pytest.approx(1 / (1 + math.exp(-(r_a - r_b) / fitted)), abs=1e-6)
    uncalibrated = RewardScorer(model_dir, device="cpu").compare(prompt, a, b)
    assert fresh.compare(prompt, a, b) != pytest.approx(uncalibrated, abs=1e-9)


def test_calibrate_renders_the_model_folders_card_again_with_the_new_temperature(model_dir, data_dir, tmp_path):
    """The card `rewardkit train` writes states T and what reward differences mean at it ("a
    difference of 1 means P = 0.73" at T = 1); after `--calibrate` it still said T = 1 while
    `compare` used the fitted T. Now it is rendered again with the T and this evaluation; a README
    that rewardkit did not write is left alone."""
    from rewardkit.model_card import write_model_card

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    training = {"objective": "pairwise", "base_model": "base", "train_rows": 40, "steps": 5, "hardware": "CPU (test)"}
    (folder / "training_summary.json").write_text(json.dumps(training))  # as `rewardkit train` leaves it
    write_model_card(folder, training=training)
    assert "A reward difference of 1 means P = 0.73;" in (folder / "README.md").read_text()
    metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)
    fitted = metrics["temperature_fitted"]
    card = (folder / "README.md").read_text()
    assert f"**T = {fitted:.4g}**" in card and f"/ {fitted:.4g})" in card  # the text and the usage code
    assert f"A reward difference of 1 means P = {1 / (1 + math.exp(-1 / fitted)):.2f};" in card
    assert "pairwise.jsonl (local data, n=" in card  # the evaluation that fitted it

    other = tmp_path / "own-readme"
    shutil.copytree(model_dir, other)
    (other / "README.md").write_text("# my notes\n")
    evaluate_model(other, data_dir / "pairwise.jsonl", calibrate=True)
    assert (other / "README.md").read_text() == "# my notes\n"


def _model_trained_on_a_copy(model_dir: Path, data_dir: Path, tmp_path: Path, *,
                             card: bool = True) -> tuple[Path, Path, dict]:
    """(model folder, training file, summary): a copy of the model whose training_summary.json says
    it was trained on train.jsonl, a copy of the pairwise fixture; with the card `train` writes."""
    from rewardkit.model_card import write_model_card

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    train_file = tmp_path / "train.jsonl"
    shutil.copy(data_dir / "pairwise.jsonl", train_file)
    training = {"objective": "pairwise", "base_model": "base", "train_rows": 40, "steps": 5, "hardware": "CPU (test)",
                "data": str(train_file), "data_split": None}
    (folder / "training_summary.json").write_text(json.dumps(training))
    if card:
        write_model_card(folder, training=training)
    return folder, train_file, training


def test_calibrate_on_the_training_file_is_said_in_the_log_and_the_card(model_dir, data_dir, tmp_path, caplog):
    """The card said T was "fitted on held-out preference pairs" even when `evaluate --calibrate` read
    the very file the model was trained on (training_summary.json did not record it). The summary
    now records `data`, so that run warns, records it, and the card says which pairs; another file
    is told apart, the same file through another path spelling or with an ignored --split is not."""

    folder, train_file, training = _model_trained_on_a_copy(model_dir, data_dir, tmp_path)
    with caplog.at_level("WARNING", logger="rewardkit.evaluation"):
        metrics = evaluate_model(folder, tmp_path / "." / "train.jsonl", calibrate=True, report_dir=tmp_path / "r")
    assert metrics["temperature_written"] and metrics["calibrated_on_training_data"] is True
    report = (tmp_path / "r" / "report.md").read_text()  # said there too, its row described
    assert "**These pairs are the model's training data**" in report and "no description" not in report
    assert "the data this model was trained on" in caplog.text
    card = " ".join((folder / "README.md").read_text().split())
    assert f"**T = {metrics['temperature_fitted']:.4g}** fitted on the model's own **training pairs** (not held out" in card

    caplog.clear()
    with caplog.at_level("WARNING", logger="rewardkit.evaluation"):
        metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)
    assert metrics["calibrated_on_training_data"] is False and "trained on" not in caplog.text
    assert "fitted on held-out preference pairs" in (folder / "README.md").read_text()
    # trained with `--split train` on a JSONL file, which ignores it: the same rows as no --split
    training["data_split"] = "train"
    (folder / "training_summary.json").write_text(json.dumps(training))
    assert evaluate_model(folder, train_file, calibrate=True)["calibrated_on_training_data"] is True


def test_an_evaluation_records_its_split_and_whether_it_read_the_training_data(model_dir, data_dir, tmp_path):
    """metrics.json recorded neither the --split it read nor, without --calibrate, whether the rows were
    the model's training data, so `publish --metrics` called a training-file evaluation "held-out" and
    put it in model-index, and could not tell a data set's test split from its train split."""
    folder, train_file, _ = _model_trained_on_a_copy(model_dir, data_dir, tmp_path, card=False)
    metrics = evaluate_model(folder, train_file, split="train")  # a JSONL file ignores --split: not recorded
    assert metrics["on_training_data"] is True and metrics["split"] is None
    metrics = evaluate_model(folder, data_dir / "pairwise.jsonl")
    assert metrics["on_training_data"] is False and metrics["split"] is None
    assert evaluate_model(model_dir, train_file)["on_training_data"] is None  # no summary: not known


def test_a_split_that_picks_no_rows_is_not_recorded_and_hides_no_training_data(model_dir, data_dir, tmp_path):
    """`evaluate --split test` on a JSONL file, or on a folder of files not named by split, reads
    every row (and warns that --split is ignored), but metrics.json recorded "split": "test" and the
    card called the rows "split test"; and the folder the model was trained on, read with --split
    test, was called held-out data ("on_training_data": false). A folder of split files records it."""
    folder, train_file, training = _model_trained_on_a_copy(model_dir, data_dir, tmp_path, card=False)
    metrics = evaluate_model(folder, train_file, split="test")
    assert metrics["split"] is None and metrics["on_training_data"] is True
    rows = tmp_path / "rows"
    rows.mkdir()
    shutil.copy(train_file, rows / "part1.jsonl")
    training["data"] = str(rows)
    (folder / "training_summary.json").write_text(json.dumps(training))
    metrics = evaluate_model(folder, rows, split="test")
    assert metrics["split"] is None and metrics["on_training_data"] is True
    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(train_file, splits / "train.jsonl")
    shutil.copy(data_dir / "pairwise.jsonl", splits / "test.jsonl")
    training["data"] = str(splits)
    (folder / "training_summary.json").write_text(json.dumps(training))
    metrics = evaluate_model(folder, splits, split="test")
    assert metrics["split"] == "test" and metrics["on_training_data"] is False
    from rewardkit.data_sources import ignores_split

    (tmp_path / "doc.json").write_text("{}")  # a JSON document reads its split's key
    assert not ignores_split(tmp_path / "doc.json") and not ignores_split("owner/name")


def test_calibrating_a_model_whose_training_data_is_not_recorded_says_so_by_null(model_dir, data_dir, tmp_path):
    """A model without training_summary.json (downloaded from the Hub), or with one from before
    `data` was recorded, was reported `"calibrated_on_training_data": false`: held-out pairs that
    nothing had checked, for a model calibrated on its own training file."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    assert evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)["calibrated_on_training_data"] is None
    (folder / "training_summary.json").write_text(json.dumps({"objective": "pairwise", "train_rows": 40}))
    assert evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)["calibrated_on_training_data"] is None


def test_a_card_rendered_later_still_says_t_was_fitted_on_the_training_pairs(model_dir, data_dir, tmp_path):
    """`publish` renders the card from config.json and training_summary.json, with no --metrics or
    a later evaluation's: a T fitted on the training file was then "fitted on held-out preference
    pairs". The calibration run records where its T came from; a later fit on held-out pairs
    replaces the record."""
    from rewardkit.model_card import render_model_card

    folder, train_file, _ = _model_trained_on_a_copy(model_dir, data_dir, tmp_path, card=False)
    assert evaluate_model(folder, train_file, calibrate=True)["calibrated_on_training_data"] is True
    later = evaluate_model(folder, data_dir / "pairwise.jsonl")

    def published_card(metrics):
        config = json.loads((folder / "config.json").read_text())
        summary = json.loads((folder / "training_summary.json").read_text())
        return " ".join(render_model_card(config, summary, metrics, repo_id="me/rm").split())

    for metrics in (None, later):
        assert "fitted on the model's own **training pairs**" in published_card(metrics)
    evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True)
    assert "fitted on held-out preference pairs" in published_card(None)


def test_the_training_data_is_told_by_its_rows_not_by_how_it_was_named(tmp_path):
    """The training data is the same file (any spelling of its path, a link to it), folder or Hub
    dataset read with the same split; a split counts only where it picks rows. A JSONL file given
    `--split train` at training and none at calibration was taken for other data, and so were a
    folder and a Hub dataset (HH-RLHF's train split calibrated on as held-out pairs)."""
    from rewardkit.data import same_data_source

    (tmp_path / "splits").mkdir()
    train = helpers.write_jsonl(tmp_path / "splits" / "train.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    (tmp_path / "link.jsonl").symlink_to(train)
    assert same_data_source(str(train), "train", tmp_path / "link.jsonl", None)
    assert same_data_source(str(tmp_path / "splits"), None, tmp_path / "." / "splits", "train")
    assert not same_data_source(str(tmp_path / "splits"), None, tmp_path / "splits", "test")
    assert not same_data_source(str(tmp_path / "splits"), None, train, None)
    assert same_data_source("Anthropic/hh-rlhf", None, "Anthropic/hh-rlhf", "train")
    assert not same_data_source("Anthropic/hh-rlhf", None, "Anthropic/hh-rlhf", "test")
    assert not same_data_source("Anthropic/hh-rlhf", None, "other/hh-rlhf", None)
    assert not same_data_source(None, None, train, None)


def test_the_published_card_keeps_what_calibration_said_of_t(model_dir, data_dir, tmp_path):
    """`evaluate --calibrate` on the training file, then `publish` (no --metrics, or the metrics of a
    later evaluation on other pairs): the folder's card said T was fitted on the training pairs, with
    its interval, and the published card said "fitted on held-out preference pairs", without it. The
    facts of the fit are kept in training_summary.json, from which publish renders the card."""
    from rewardkit.publishing import build_publish_folder

    folder, train_file, _ = _model_trained_on_a_copy(model_dir, data_dir, tmp_path)
    fitted = evaluate_model(folder, train_file, calibrate=True)
    assert fitted["temperature_written"] and fitted["calibrated_on_training_data"] is True
    said = f"**T = {fitted['temperature_fitted']:.4g}** fitted on the model's own **training pairs** (not held out"
    interval = f"on {fitted['n']} pairs"
    later = evaluate_model(folder, data_dir / "pairwise.jsonl")  # at the stored T, nothing fitted
    for name, metrics in (("plain", None), ("later", later)):
        out = build_publish_folder(folder, tmp_path / name, repo_id="someone/rm", evaluation=metrics)
        card = " ".join((out / "README.md").read_text().split())
        assert said in card and interval in card and "fitted on held-out" not in card, name
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["calibration_temperature"] == pytest.approx(
        fitted["temperature_fitted"])


def test_calibrate_leaves_a_published_card_as_it_is(model_dir, data_dir, tmp_path, caplog):
    """A model downloaded from the Hub (what the refusal of a repo id tells users to calibrate) holds
    the card `publish` rendered, and no training_summary.json: it was rendered again as
    "your-name/reward-model", without its license, its data or its training record (said to come
    from outside `rewardkit train`). It is left as it is, and the log says it still states the old T."""
    from rewardkit.publishing import build_publish_folder

    build_publish_folder(model_dir, tmp_path / "hub", repo_id="alice/rm", license="mit", datasets=["Anthropic/hh-rlhf"])
    published = (tmp_path / "hub" / "README.md").read_text()
    assert "alice/rm" in published and "license: mit" in published
    with caplog.at_level("WARNING", logger="rewardkit.evaluation"):
        metrics = evaluate_model(tmp_path / "hub", data_dir / "pairwise.jsonl", calibrate=True)
    assert metrics["temperature_written"]
    assert (tmp_path / "hub" / "README.md").read_text() == published
    assert "was not rendered again (no training_summary.json" in caplog.text


def test_calibrate_writes_nothing_when_the_fit_ends_on_a_search_bound(model_dir, data_dir, tmp_path, caplog):
    """Pairs the model gets wrong on balance (the fixture's pairs reversed: right 1 time in 4)
    drive T to the upper bound, which the search returns only to rounding (999.99...): that T is
    not written, the metrics say so, and the report does not claim it was."""
    rows = [{**row, "chosen": row["rejected"], "rejected": row["chosen"]} for row in _rows(data_dir / "pairwise.jsonl")]
    data = _write_jsonl(tmp_path / "reversed.jsonl", rows)
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = (folder / "config.json").read_text()
    with caplog.at_level("WARNING"):
        metrics = evaluate_model(folder, data, calibrate=True, report_dir=tmp_path / "report")
    assert metrics["temperature_fitted"] == pytest.approx(T_MAX) and metrics["temperature_written"] is False
    assert metrics["temperature"] == 1.0 and (folder / "config.json").read_text() == before
    assert "not written" in caplog.text
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "**not** written" in markdown and "and wrote it" not in markdown


def test_calibrate_writes_nothing_when_every_margin_is_zero(model_dir, data_dir, tmp_path, caplog, capfd):
    """A model that gives every response the same reward (its head's weights all 0) leaves the
    likelihood flat in T: fit_temperature answers 1.0, which was written as if fitted, and its
    warning printed twice (as a Python warning and as a log line). Now nothing is written, one
    warning says why, and the report says no T was fitted."""
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    model = RewardModel.from_pretrained(folder)
    with torch.no_grad():
        model.score.weight.zero_()
    model.save_pretrained(folder)
    before = (folder / "config.json").read_text()
    with caplog.at_level("WARNING"), warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)  # none escapes to print a second time
        metrics = evaluate_model(folder, data_dir / "pairwise.jsonl", calibrate=True, report_dir=tmp_path / "report")
    assert metrics["temperature_fitted"] is None and metrics["temperature_written"] is False
    assert (folder / "config.json").read_text() == before
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("margin is 0" in m for m in messages) == 1, messages
    report = (tmp_path / "report" / "report.md").read_text()
    assert "fitted no temperature: every pair's reward margin is 0" in report
    # its ECE after calibration is the ECE at the old T: it was said to be "at the fitted T"
    assert "| ECE after calibration | 0.000 | the ECE above: no T was written, so calibration changed nothing |" in report


def test_calibrate_on_ranked_groups_fits_their_within_group_pairs(model_dir, data_dir, scorer, tmp_path):
    """Ranked data implies K-choose-2 preference pairs per group: T is fitted on all of them (the
    same T as fitting those margins directly), written, and the report says on what."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(30):  # groups of 3 in the model's own order, one group in three shuffled
        prompt, responses = _sentence(rng) + "?", [_sentence(rng) for _ in range(3)]
        rewards = scorer.raw_rewards(prompt, responses)
        ordered = [responses[j] for j in np.argsort(rewards)[::-1]]
        rows.append({"prompt": prompt, "responses": ordered[::-1] if i % 3 == 2 else ordered})
    data = _write_jsonl(tmp_path / "ranked.jsonl", rows)
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    report = tmp_path / "report"
    metrics = evaluate_model(folder, data, calibrate=True, report_dir=report)

    groups = [scorer.raw_rewards(r["prompt"], r["responses"]) for r in rows]
    expected_t = fit_temperature(within_group_margins(groups))
    assert metrics["objective"] == "ranking" and metrics["temperature_written"] is True
    # rewards scored group by group here differ from the evaluation's batches by float rounding,
    # which the small T of this random model (~0.03) magnifies
    assert metrics["temperature_fitted"] == pytest.approx(expected_t, rel=1e-4)
    assert json.loads((folder / "config.json").read_text())["calibration_temperature"] == metrics["temperature_fitted"]
    for key, value in ranking_metrics(groups, temperature=expected_t).items():
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert metrics["ece_after"] == metrics["ece"] and metrics["ece_after"] <= metrics["ece_before"] + 1e-12
    # T's interval allows for the 3 pairs of a group sharing responses (it counted 90 independent pairs)
    by_group = temperature_evidence(within_group_margins(groups), metrics["temperature_fitted"],
                                    groups=np.repeat(np.arange(30), 3))
    assert metrics["temperature_interval"] == pytest.approx(by_group["temperature_interval"], rel=1e-3)
    assert metrics["temperature_interval_by_group"] is True
    markdown = (report / "report.md").read_text()
    assert f"on these same {metrics['n_pairs']} within-group pairs" in markdown
    assert "(profile likelihood, widened for the pairs of one group being correlated" in markdown
    # evaluate passes the groups, so the chance ranges draw whole rankings: nothing in the section is too narrow
    assert "and so do the chance ranges in this section" in markdown and "so does the 95% interval for T below" in markdown
    assert "too narrow" not in markdown
    assert "reliability.png" in markdown and "Calibration is measured on preference pairs only" not in markdown


def test_calibrate_refuses_what_it_cannot_do(model_dir, data_dir, tokenizer):
    with pytest.raises(ValueError, match="'mse' data has target scores, not preferences"):
        evaluate_model(model_dir, data_dir / "scalar.jsonl", calibrate=True)
    with pytest.raises(ValueError, match="'mse' data has target scores"):
        evaluate_model(model_dir, data_dir / "pairwise.jsonl", calibrate=True, objective="mse")
    in_memory = RewardScorer(helpers.tiny_reward_model(), tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match="model object"):
        evaluate_model(in_memory, data_dir / "pairwise.jsonl", calibrate=True)
    with pytest.raises(ValueError, match="ready RewardScorer"):
        evaluate_model(in_memory, data_dir / "pairwise.jsonl", batch_size=4)


def test_calibrate_needs_a_local_folder_not_a_hub_id():
    with pytest.raises(ValueError, match="not a local folder"):
        evaluation._calibration_folder(SimpleNamespace(source="someone/reward-model"))


def test_store_temperature_is_atomic_and_validated(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "reward_model", "alpha": 1.0}))
    evaluation.store_temperature(tmp_path, 0.5)
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "reward_model", "alpha": 1.0,
                                                                  "calibration_temperature": 0.5}
    # an old config's `temperature` (a generation setting to transformers) gives way to the new key
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "reward_model", "temperature": 2.0}))
    evaluation.store_temperature(tmp_path, 0.75)
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "reward_model",
                                                                  "calibration_temperature": 0.75}
    # a LoRA run's adapter/reward_config.json (what load_adapter rebuilds from) is calibrated too
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "reward_config.json").write_text(json.dumps({"pooling": "cls", "calibration_temperature": None}))
    evaluation.store_temperature(tmp_path, 0.6)
    assert json.loads((tmp_path / "adapter" / "reward_config.json").read_text()) == {"pooling": "cls",
                                                                                     "calibration_temperature": 0.6}
    assert json.loads((tmp_path / "config.json").read_text())["calibration_temperature"] == 0.6
    (tmp_path / "adapter" / "reward_config.json").unlink()
    (tmp_path / "adapter").rmdir()
    with pytest.raises(ValueError):
        evaluation.store_temperature(tmp_path, float("nan"))
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


# ---------------------------------------------------------------- streaming


def test_three_thousand_rows_stream_through_chunks(model_dir, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = [{"prompt": f"q{i} " + _sentence(rng, 1, 4), "chosen": _sentence(rng, 1, 5) + " yes",
             "rejected": _sentence(rng, 1, 5) + " no"} for i in range(3000)]
    data = _write_jsonl(tmp_path / "big.jsonl", rows)
    calls = []
    original = RewardScorer._run

    def counting(self, prompts, responses, *args, **kwargs):
        calls.append(len(prompts))
        return original(self, prompts, responses, *args, **kwargs)

    monkeypatch.setattr(RewardScorer, "_run", counting)
    metrics = evaluate_model(model_dir, data, report_dir=tmp_path / "report")
    assert metrics["n"] == 3000 and metrics["rewards"]["n"] == 6000
    assert calls == [2 * evaluation.CHUNK_ROWS, 2 * (3000 - evaluation.CHUNK_ROWS)]  # chunked, not whole
    assert (tmp_path / "report" / "report.md").exists()


def _poisoned_model_dir(folder: Path, tokenizer) -> Path:
    """A tiny model whose embedding of the word "poison" is NaN: texts with it score NaN, the
    others normally (each text attends only to its own tokens)."""
    model = helpers.tiny_reward_model()
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("poison")] = float("nan")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_non_finite_rewards_are_an_error_naming_the_rows(tokenizer, tmp_path):
    # A NaN reward (weights of a diverged run, a half-precision overflow) used to surface as
    # "chosen contains non-finite values" with no row, and `score --data` wrote the invalid JSON token NaN.
    from rewardkit.score_files import score_file
    from rewardkit.scoring import NonFiniteRewardError

    scorer = RewardScorer(_poisoned_model_dir(tmp_path / "model", tokenizer), device="cpu")
    assert np.isfinite(scorer.score("a prompt", ["a fine answer", "another one"])).all()
    with pytest.raises(NonFiniteRewardError, match=r"1 of 2 texts \(text 1\).*weights hold NaN or inf"):
        scorer.score("a prompt", ["a fine answer", "a poison answer"])
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "p", "chosen": "fine", "rejected": "also fine"},
        {"prompt": "p", "chosen": "good", "rejected": "poison here"},
    ])
    with pytest.raises(NonFiniteRewardError, match=r"1 of 4 texts \(row 2 \(rejected\)\)"):
        evaluate_model(scorer, pairs)
    ranked = _write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "p", "responses": ["best", "poison", "worst"]}])
    with pytest.raises(NonFiniteRewardError, match=r"row 1 \(response ranked 2\)"):
        evaluate_model(scorer, ranked)
    rows = _write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "ok"}, {"prompt": "p", "response": "poison"}])
    with pytest.raises(NonFiniteRewardError, match=r"1 of 2 texts \(row 2\)"):
        score_file(scorer, rows, tmp_path / "scores.jsonl")
    assert not (tmp_path / "scores.jsonl").exists()  # nothing half-written, no NaN token in a JSONL file


def test_cli_says_which_row_scored_nan_in_one_paragraph(tokenizer, tmp_path, capsys):
    from rewardkit.cli import main

    folder = _poisoned_model_dir(tmp_path / "model", tokenizer)
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "poison", "rejected": "fine"}])
    assert main(["evaluate", "--model", str(folder), "--data", str(pairs)]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "row 1 (chosen)" in err and "Traceback" not in err and "--debug" not in err, err


def test_evaluate_counts_the_truncation_of_its_own_texts_only(scorer, tmp_path, monkeypatch):
    # Another thread scoring with the same scorer during an evaluation (run here inside evaluate's
    # encode, deterministically) had its cut texts counted in the metrics' truncation.
    other = helpers.interleave_a_scoring_call(monkeypatch, scorer, ["z " * 600] * 3)  # 3 cut, not the evaluation's
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "good", "rejected": "bad"}])
    metrics = evaluate_model(scorer, pairs)
    assert other and metrics["truncation"] == {"texts": 2, "prompt_cut": 0, "response_cut": 0}
