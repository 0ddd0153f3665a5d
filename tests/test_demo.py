"""`rewardkit demo`, the main job, end to end in a fresh process (offline, packaged MiniLM)."""

import json
import os
import subprocess
import sys

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
