"""`rewardkit demo`: the whole product in a few minutes, offline.

Trains a pairwise reward model on the embedded demo data (everyday questions; a helpful answer
preferred to wrong, rude, evasive and off-topic ones) with the packaged MiniLM, evaluates it on
held-out questions, calibrates P(a > b), scores a few examples and builds the folder `publish`
would upload. Returns a plain-text report; prints nothing itself.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from rewardkit.demo_set import write_demo_files
from rewardkit.errors import UserInputError

logger = logging.getLogger(__name__)

EXAMPLES = [
    ("What is the capital of France?", "The capital of France is Paris.", "Google it pal."),
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("How many legs does a spider have?", "Spiders have eight legs.", "I'd rather not talk about spiders."),
    ("How do I keep bread fresh longer?",
     "Store it in a bread box or paper bag at room temperature, or freeze slices you won't eat within a few days.",
     "The Pacific is the largest ocean on Earth."),
]


def run_demo(output_dir: str = "reward-model-demo", epochs: float = 2.0, max_length: int = 128,
             base_model: str | None = None, seed: int = 42) -> str:
    """Train, evaluate, calibrate, score examples, build the Hub folder. Returns the report text."""
    from rewardkit.evaluation import evaluate_model
    from rewardkit.fit import run_training
    from rewardkit.publishing import publish
    from rewardkit.scoring import RewardScorer
    from rewardkit.training_args import DataArguments, RewardTrainingArguments

    output = Path(output_dir)
    _, report_dir, hub_dir = demo_folders(output)
    check_hub_folder(hub_dir)
    replaced = previous_outputs(output)
    if replaced:
        logger.warning("Replacing the previous run's %s.", ", ".join(map(str, replaced)))
    with tempfile.TemporaryDirectory(prefix="rewardkit-demo-") as data_dir:
        train_file, heldout_file = write_demo_files(data_dir)
        args = RewardTrainingArguments(
            output_dir=str(output), base_model=base_model, objective="pairwise", max_length=max_length,
            num_train_epochs=epochs, learning_rate=5e-5, per_device_train_batch_size=16, warmup_steps=0.1,
            save_strategy="no", eval_strategy="no", logging_steps=20, seed=seed,
        )
        logger.info("Training on the embedded demo data (%s) ...", train_file)
        result = run_training(DataArguments(data=train_file), args)
        logger.info("Evaluating on held-out questions and fitting the calibration temperature ...")
        metrics = evaluate_model(str(output), heldout_file, report_dir=str(report_dir), calibrate=True,
                                 data_name="rewardkit demo held-out questions")
    scorer = RewardScorer(str(output))
    examples = _score_examples(scorer)
    published = publish(str(output), "your-name/reward-model-demo", dry_run=True, out=str(hub_dir), evaluation=metrics)
    return _report(result, metrics, examples, scorer, report_dir, published.folder, replaced)


def demo_folders(output: Path) -> tuple[Path, Path, Path]:
    """The demo's folders: the model (`output`), its report and its Hub folder beside it."""
    return output, output.parent / f"{output.name}-report", output.parent / f"{output.name}-hub"


def previous_outputs(output: Path) -> list[Path]:
    """The demo's folders that already hold files: a rerun replaces them, and says so, rather than
    silently overwriting an earlier run."""
    return [f for f in demo_folders(output) if f.is_dir() and any(f.iterdir())]


def check_hub_folder(hub_dir: Path) -> None:
    """Refuse before training what `publish` refuses after it: a NAME-hub folder holding other files
    than a publish folder (it is never merged into). The demo trained for minutes, overwrote the
    model, and only then failed."""
    from rewardkit.publishing import is_previous_build

    if hub_dir.exists() and (not hub_dir.is_dir() or not is_previous_build(hub_dir)):
        raise UserInputError(f"{hub_dir} exists and holds other files than a publish folder, so the demo could not "
                             "build its Hub folder there; choose another --output-dir or delete it first.")


def calibration_line(metrics: dict, temperature: float) -> str:
    """The calibration result in words. When no T was written (every margin 0, or the fit hit a
    search bound, as with an untrained --base-model) the demo said "T = 1; ECE x before, x after
    (T fitted on these same pairs)": a T that was never fitted."""
    ece_before = metrics.get("ece_before", float("nan"))
    if metrics.get("temperature_written"):
        return (f"  calibration: T = {temperature:.3g}; ECE {ece_before:.3f} before, "
                f"{metrics.get('ece_after', float('nan')):.3f} after (T fitted on these same pairs: not an "
                "independent check)")
    fitted = metrics.get("temperature_fitted")
    why = ("every reward margin is 0" if fitted is None
           else f"the fit hit its search bound T = {fitted:g}")
    return (f"  calibration: no T fitted ({why}; see the log), so P(a > b) uses T = 1; "
            f"ECE {ece_before:.3f} at T = 1")


def length_line(bias: dict) -> str | None:
    """The length check in words: the pair-by-pair comparison with the labels first, since the
    correlation over all answers pools different questions (here the better answers are also the
    longer ones, so a positive correlation alone is no sign of bias)."""
    rho = bias.get("spearman_reward_length")
    if rho is None:
        return None
    spearman = f"Spearman(reward, length) = {rho:.2f} over all answers (pools different questions)"
    if bias.get("longer_preferred_rate") is None or bias.get("chosen_longer_rate") is None:
        return f"  length: {spearman}"
    return (f"  length: prefers the longer answer in {bias['longer_preferred_rate']:.0%} of pairs, the labels in "
            f"{bias['chosen_longer_rate']:.0%} (report.md says whether that is a bias);\n  {spearman}")


def probability_text(p: float) -> str:
    """`= 0.971`, or `> 0.999` / `< 0.001` where three decimals would round to a certainty the
    model does not claim (a sigmoid never reaches 0 or 1)."""
    if p > 0.9995:
        return "> 0.999"
    if p < 0.0005:
        return "< 0.001"
    return f"= {p:.3f}"


def upload_command(output_dir, report_dir) -> str:
    """The command that uploads what the Hub-ready folder holds. The folder was built with the held-out
    metrics; `rewardkit publish --model M --repo-id NAME` alone built a card that says "No held-out
    evaluation was recorded for this model", so the report's metrics.json goes with it."""
    import shlex

    return shlex.join(["rewardkit", "publish", "--model", str(output_dir), "--repo-id", "NAME",
                       "--metrics", str(Path(report_dir) / "metrics.json")])


def _score_examples(scorer) -> list[dict]:
    rows = []
    for prompt, better, worse in EXAMPLES:
        score_better, score_worse = scorer.score([prompt, prompt], [better, worse])
        rows.append({"prompt": prompt, "better": better, "worse": worse, "score_better": score_better,
                     "score_worse": score_worse, "p_better": scorer.compare(prompt, better, worse)})
    return rows


def _report(result, metrics: dict, examples: list[dict], scorer, report_dir: Path, hub_dir,
            replaced: list[Path] = ()) -> str:
    from rewardkit.report_format import count

    bias = metrics.get("length_bias") or {}
    lines = [
        "",
        "=" * 78,
        "rewardkit demo: done",
        "=" * 78,
        result.describe(),
        "",
        f"Held-out questions ({count(metrics['n'], 'pairs')}, never seen in training):",
        f"  accuracy {metrics['accuracy']:.3f} (how often the better answer gets the higher reward)",
        f"  mean reward margin {metrics['mean_margin']:.3g}",
        calibration_line(metrics, scorer.temperature),
    ]
    if line := length_line(bias):
        lines.append(line)
    # what a reward and P(a > b) mean is the summary's "Reading them" line: here only the T the
    # calibration above left and the formula of the scores below (the demo used to say it all again)
    lines += [
        "",
        f"Examples ({scorer.score_formula()}; P(first preferred) at T = {scorer.temperature:.3g}):",
    ]
    for row in examples:
        lines.append(f"  Q: {row['prompt']}")
        lines.append(f"     {row['score_better']:+7.2f}  {row['better'][:70]}")
        lines.append(f"     {row['score_worse']:+7.2f}  {row['worse'][:70]}")
        lines.append(f"     P(first preferred) {probability_text(row['p_better'])}")
    lines += [
        "",
        f"Model:           {result.output_dir}   (AutoModel.from_pretrained(path, trust_remote_code=True))",
        f"Report & plots:  {report_dir}/report.md",
        f"Hub-ready folder: {hub_dir}   (upload: {upload_command(result.output_dir, report_dir)})",
    ]
    if replaced:
        lines.append(f"(Replaced the previous run's {', '.join(map(str, replaced))}.)")
    return "\n".join(lines)
