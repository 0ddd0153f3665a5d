"""`rewardkit demo`, the main job, end to end in a fresh process (offline, packaged MiniLM)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(workdir / "modules"), "CI": "true"}
    result = subprocess.run([sys.executable, "-m", "rewardkit.cli", "demo", "--output-dir", "reward-model-demo"],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


def test_demo_prints_heldout_metrics_and_examples(demo_run):
    _, result = demo_run
    assert "Held-out questions" in result.stdout
    assert "P(first preferred)" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_model_prefers_a_polite_correct_answer(demo_run):
    from rewardkit.scoring import RewardScorer

    workdir, _ = demo_run
    scorer = RewardScorer(str(workdir / "reward-model-demo"))
    polite, rude = scorer.score(["What is the capital of France?"] * 2,
                                ["The capital of France is Paris.", "Google it pal."])
    assert polite > rude
    assert scorer.compare("What is the capital of France?", "The capital of France is Paris.", "Google it pal.") > 0.5


def test_demo_heldout_accuracy_and_outputs(demo_run):
    workdir, _ = demo_run
    metrics = json.loads((workdir / "reward-model-demo-report" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85  # held-out questions, never seen in training
    config = json.loads((workdir / "reward-model-demo" / "config.json").read_text())
    assert config["calibration_temperature"] > 0 and config["reward_std"] > 0
    hub = sorted(p.name for p in (workdir / "reward-model-demo-hub").iterdir())
    assert {"README.md", "config.json", "model.safetensors", "modeling_reward.py", "configuration_reward.py"} <= set(hub)


def test_demo_rerun_names_the_folders_it_replaces(tmp_path):
    """A rerun in the same folder overwrote the previous model, report and Hub folder without a word."""
    from pathlib import Path

    from rewardkit.demo import previous_outputs

    output = tmp_path / "reward-model-demo"
    assert previous_outputs(output) == []
    (tmp_path / "reward-model-demo-report").mkdir()  # empty: nothing is lost
    output.mkdir()
    (output / "config.json").write_text("{}")
    assert previous_outputs(Path(output)) == [output]


def test_demo_length_line_puts_the_pairwise_check_beside_the_pooled_correlation():
    """The demo printed only "length bias: Spearman = 0.63", while report.md said "No length bias
    detected": the better demo answers are also the longer ones, so the pooled correlation alone misleads."""
    from rewardkit.demo import length_line

    bias = {"spearman_reward_length": 0.46, "longer_preferred_rate": 0.826, "chosen_longer_rate": 0.852}
    text = length_line(bias)
    assert "83% of pairs" in text and "labels in 85%" in text and "0.46 over all answers" in text
    assert "length bias:" not in text
    assert length_line({}) is None


def test_demo_split_is_disjoint_by_question_with_the_counts_its_docstring_states():
    """is_heldout's docstring said "the same 20%" while 80 of the 347 questions (23%) are held out."""
    import re

    from rewardkit.demo_set import demo_pairs, is_heldout, load_questions

    questions = load_questions()
    heldout = [q for q in questions if is_heldout(q["prompt"])]
    train, test = demo_pairs()
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    stated = re.search(r"of the (\d+)\s+embedded questions that draws (\d+) \((\d+)%\), so (\d+) questions \((\d+) "
                       r"pairs\) train and (\d+) pairs test", " ".join(is_heldout.__doc__.split()))
    assert stated, is_heldout.__doc__
    assert [int(x) for x in stated.groups()] == [len(questions), len(heldout), round(100 * len(heldout) / len(questions)),
                                                 len(questions) - len(heldout), len(train), len(test)]


def test_demo_calibration_line_says_when_no_temperature_was_fitted():
    """With a T at a search bound (not written) the demo printed "T = 1; ECE 0.109 before, 0.109
    after (T fitted on these same pairs)": a T never fitted."""
    from rewardkit.demo import calibration_line

    fitted = calibration_line({"temperature_written": True, "ece_before": 0.031, "ece_after": 0.012}, 0.4538)
    assert fitted == ("  calibration: T = 0.454; ECE 0.031 before, 0.012 after (T fitted on these same pairs: "
                      "not an independent check)")
    at_bound = calibration_line({"temperature_written": False, "temperature_fitted": 1e-06, "ece_before": 0.109,
                                 "ece_after": 0.109}, 1.0)
    assert "no T fitted" in at_bound and "search bound T = 1e-06" in at_bound and "fitted on these" not in at_bound
    assert "every reward margin is 0" in calibration_line({"temperature_written": False, "temperature_fitted": None,
                                                           "ece_before": 0.5}, 1.0)


def test_demo_refuses_a_foreign_hub_folder_before_training(tmp_path, monkeypatch):
    """A NAME-hub folder holding other files was refused by publish only after minutes of training
    had overwritten the model folder."""
    from rewardkit import fit
    from rewardkit.demo import run_demo

    (tmp_path / "m-hub").mkdir()
    (tmp_path / "m-hub" / "notes.txt").write_text("mine")
    monkeypatch.setattr(fit, "run_training", lambda *a, **k: pytest.fail("trained before refusing"))
    with pytest.raises(ValueError, match="m-hub exists and holds other files"):
        run_demo(output_dir=str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


def test_demo_summary_says_how_many_responses_reward_mean_and_std_are_of():
    """The demo printed "Raw rewards on training responses: mean 0.1227, std 3.166", measured on a
    sample of 512 of its 2136 training responses (the model card said 512; the summary did not)."""
    from rewardkit.fit import TrainResult

    result = TrainResult(output_dir="m", objective="pairwise", base_model="b", detected_layout="pairwise",
                         train_rows=1068, eval_rows=0, epochs=2.0, steps=134, seconds=164.6,
                         examples_per_second=12.98, train_loss=0.2, max_length=128, reward_mean=0.1227,
                         reward_std=3.166, reward_stats_responses=512)
    assert "Raw rewards on 512 training responses: mean 0.1227, std 3.166" in result.describe()


def test_demo_probabilities_never_print_as_a_certainty():
    """A sigmoid never reaches 0 or 1, yet the demo printed `P(first preferred) = 1.000` for its
    clearest pairs: three decimals rounded 0.9998 to a certainty the model does not claim."""
    from rewardkit.demo import probability_text

    assert probability_text(0.9998) == "> 0.999"
    assert probability_text(0.0002) == "< 0.001"
    assert probability_text(0.971) == "= 0.971"
    assert probability_text(0.9994) == "= 0.999"


def test_demo_and_training_summaries_say_1_pair_not_1_pairs():
    """Review: at a count of 1 the demo printed "Held-out questions (1 pairs, ...)" and the training
    summary "on 1 pairs", "Held-out (1 pairs)", "1 of the 1 held-out pairs is ..." and "on 1 training
    responses"."""
    from types import SimpleNamespace

    from rewardkit.demo import _report
    from rewardkit.fit import TrainResult

    result = TrainResult(output_dir="m", objective="pairwise", base_model="b", detected_layout="pairwise",
                         train_rows=1, eval_rows=1, epochs=1.0, steps=1, seconds=1.0, examples_per_second=1.0,
                         train_loss=0.6, max_length=32, eval_metrics={"eval_accuracy": 1.0}, eval_overlap=1,
                         reward_mean=0.1, reward_std=0.0, reward_stats_responses=1)
    summary = result.describe()
    assert "reward model on 1 pair (pairwise)." in summary and "  Held-out (1 pair): accuracy 1.0000." in summary
    assert "Warning: 1 of the 1 held-out pair is also in the training data" in summary
    assert "Raw reward on 1 training response: 0.1, so no spread" in summary
    scorer = SimpleNamespace(temperature=1.0, score_formula=lambda: "score = r")
    metrics = {"n": 1, "accuracy": 1.0, "mean_margin": 0.5, "temperature_written": False, "temperature_fitted": None}
    text = _report(result, metrics, [], scorer, Path("report"), Path("hub"))
    assert "Held-out questions (1 pair, never seen in training):" in text
    assert not re.search(r"\b1 (pairs|training responses)\b", text)


def test_demo_says_what_rewards_mean_once_after_its_summary_does():
    """The training summary now says how to read a reward (P(a > b) at T = 1, this model's alpha);
    the demo said it again after it. It now names only the T calibration left and the scores' formula."""
    from types import SimpleNamespace

    from rewardkit.demo import _report
    from rewardkit.fit import TrainResult

    result = TrainResult(output_dir="m", objective="pairwise", base_model="b", detected_layout="pairwise",
                         train_rows=8, eval_rows=0, epochs=1.0, steps=1, seconds=1.0, examples_per_second=1.0,
                         train_loss=0.6, max_length=32, reward_mean=0.1, reward_std=0.5, reward_stats_responses=16)
    scorer = SimpleNamespace(temperature=0.4538, score_formula=lambda: "score = alpha (1) x raw reward")
    metrics = {"n": 8, "accuracy": 1.0, "mean_margin": 0.5, "temperature_written": True, "ece_before": 0.1,
               "ece_after": 0.05}
    text = _report(result, metrics, [], scorer, Path("report"), Path("hub"))
    assert text.count("sigmoid((r_a - r_b) / T)") == 1 and "Only differences matter" not in text
    assert "Examples (score = alpha (1) x raw reward; P(first preferred) at T = 0.454):" in text


def test_demo_upload_command_sends_the_held_out_metrics_its_hub_folder_was_built_with(tmp_path):
    """The demo built its Hub-ready folder with the held-out metrics, then printed "upload: rewardkit
    publish --model M --repo-id NAME": run as printed, that card said "No held-out evaluation was
    recorded for this model"."""
    import shlex
    from types import SimpleNamespace

    from rewardkit.cli import make_parser
    from rewardkit.demo import _report

    result = SimpleNamespace(output_dir="my demo", describe=lambda: "trained")
    scorer = SimpleNamespace(temperature=1.0, score_formula=lambda: "score = alpha (1) x raw reward")
    metrics = {"n": 320, "accuracy": 0.9, "mean_margin": 2.0, "temperature_written": False,
               "temperature_fitted": None, "ece_before": 0.1}
    text = _report(result, metrics, [], scorer, tmp_path / "my demo-report", tmp_path / "my demo-hub")
    line = next(line for line in text.splitlines() if line.startswith("Hub-ready folder:"))
    command = line.split("(upload: ", 1)[1].removesuffix(")")
    words = shlex.split(command)
    assert words[:2] == ["rewardkit", "publish"]
    args = make_parser().parse_args(words[1:])
    assert args.model == "my demo" and args.repo_id == "NAME"
    assert args.metrics == str(tmp_path / "my demo-report" / "metrics.json")
