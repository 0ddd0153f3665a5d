"""The embedded demo data set: 347 everyday questions written for this project (Apache-2.0),
each with a helpful correct answer and four worse ones (factually wrong, rude, evasive, off-topic).

`demo_pairs()` turns them into pairwise rows (good vs each worse answer) and splits by question, so
no held-out question is seen in training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

WORSE_KINDS = ("wrong", "rude", "evasive", "off_topic")
# Illustrative annotated rewards for the MSE walk-through: how good each kind of answer is, on a
# -1..1 scale we chose (a correct helpful answer is best; rude or off-topic is worst).
REWARD_BY_KIND = {"good": 1.0, "wrong": -0.4, "evasive": -0.6, "off_topic": -0.8, "rude": -1.0}
HELDOUT_PERCENT = 20


def load_questions() -> list[dict]:
    """The raw rows: topic, prompt, good, wrong, rude, evasive, off_topic."""
    text = (Path(__file__).parent / "demo_data" / "qa.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def is_heldout(prompt: str) -> bool:
    """Stable split by a hash of the question: the same questions in every run and on every machine.
    Each question is held out with probability 52/256 (about 20%, HELDOUT_PERCENT); of the 347
    embedded questions that draws 80 (23%), so 267 questions (1068 pairs) train and 320 pairs test."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return digest[0] * 100 // 256 < HELDOUT_PERCENT


def demo_pairs() -> tuple[list[dict], list[dict]]:
    """(train, heldout) pairwise rows {prompt, chosen, rejected, kind, topic}."""
    train, heldout = [], []
    for row in load_questions():
        target = heldout if is_heldout(row["prompt"]) else train
        for kind in WORSE_KINDS:
            target.append({"prompt": row["prompt"], "chosen": row["good"], "rejected": row[kind],
                           "kind": kind, "topic": row["topic"]})
    return train, heldout


def write_demo_files(folder) -> tuple[str, str]:
    """Write train.jsonl / heldout.jsonl (the formats `rewardkit train --data` reads) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rows in zip(("train.jsonl", "heldout.jsonl"), demo_pairs()):
        path = folder / name
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        paths.append(str(path))
    return paths[0], paths[1]


def demo_scalar_rows() -> tuple[list[dict], list[dict]]:
    """(train, heldout) rows {prompt, completion, reward, kind} for MSE training, with the
    illustrative rewards of REWARD_BY_KIND; same question split as `demo_pairs`."""
    train, heldout = [], []
    for row in load_questions():
        target = heldout if is_heldout(row["prompt"]) else train
        for kind, reward in REWARD_BY_KIND.items():
            target.append({"prompt": row["prompt"], "completion": row[kind], "reward": reward, "kind": kind})
    return train, heldout
