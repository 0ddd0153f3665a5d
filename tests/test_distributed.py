"""Several processes: `torchrun --nproc_per_node 2` (gloo, CPU) through the CLI for train and score,
data prepared once per node, a failure on one rank stops all of them, parts merged in input order."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from safetensors.torch import load_file

from rewardkit.distributed import merge_parts, once_per_node
from rewardkit.score_files import score_file
from rewardkit.scoring import RewardScorer
from tests import helpers

TORCHRUN_TIMEOUT_S = 240
WORDS = ["apple", "river", "stone", "cloud", "music", "garden", "paper", "window"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(cli_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --nproc_per_node 2 -m rewardkit.cli ...`, killed as a whole
    process group (launcher and ranks) if it runs past the timeout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "rewardkit.cli", *cli_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "REWARDKIT_CACHE_DIR": str(tmp_path / "cache"), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun ran past {TORCHRUN_TIMEOUT_S} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return helpers.save_tiny_backbone(tmp_path_factory.mktemp("dist_base"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("dist_model")
    helpers.tiny_reward_model().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_torchrun_two_processes_train_one_model(tiny_base, tmp_path):
    rows = [{"prompt": f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]}?", "chosen": "yes, gladly: " + WORDS[i % 8],
             "rejected": "no. " + WORDS[(i + 1) % 8]} for i in range(48)]
    data = helpers.write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    run = _torchrun(["train", "--data", str(data), "--base-model", str(tiny_base), "--output-dir", str(out),
                     "--max-steps", "3", "--per-device-train-batch-size", "4", "--max-length", "32",
                     "--save-strategy", "no", "--reward-stats-samples", "16", "--disable-tqdm", "true"], tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert run.stdout.count("Trained a pairwise reward model") == 1  # rank 0 reports, rank 1 does not
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps"] == 3 and summary["hyperparameters"]["processes"] == 2  # real DDP, not 2 copies
    assert not list((tmp_path / "cache").glob("*"))  # the per-node feature cache is cleaned up

    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(helpers.tiny_reward_model().state_dict())  # no DDP "module." prefixes
    scorer = RewardScorer(str(out))
    assert scorer.model.config.reward_std is not None
    assert len(scorer.score(["q"], ["a"])) == 1


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_every_trainable_parameter_gets_a_gradient_as_ddp_with_gradient_checkpointing_needs(
        tiny_base, tokenizer, tmp_path, pooling):
    """With --gradient_checkpointing the Trainer wraps the model in DDP with
    find_unused_parameters=False, and DDP then fails at the second step ("Expected to have finished
    reduction in the prior iteration") if a trainable parameter gets no gradient: BERT's pooler,
    which our pooling never reads. Checked here in one process: every trainable parameter must
    get a gradient from one backward pass."""

    from rewardkit.fit import load_model
    from rewardkit.training_args import RewardTrainingArguments

    args = RewardTrainingArguments(output_dir=str(tmp_path), use_cpu=True, precision="fp32", pooling=pooling,
                                   gradient_checkpointing=True)
    model = load_model(str(tiny_base), args, tokenizer)
    model.gradient_checkpointing_enable()
    model.train()
    batch = tokenizer(["a question", "another, longer question"], ["yes", "no"], padding=True, return_tensors="pt")
    model(**batch).rewards.sum().backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert any(p.requires_grad for p in model.backbone.parameters())  # the backbone itself still trains


def test_torchrun_two_processes_score_every_row_once_in_order(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"question {i}?", "response": "answer " * (1 + i % 7)} for i in range(23)]
    rows.insert(9, {"prompt": "broken row", "response": ""})  # skipped the same way by every rank
    data = helpers.write_jsonl(tmp_path / "rows.jsonl", rows)
    output = tmp_path / "scored" / "out.jsonl"
    run = _torchrun(["score", "--model", str(tiny_model_dir), "--data", str(data), "--output", str(output),
                     "--skip-invalid"], tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.stdout.count('"rows"') == 1
    assert counts["rows"] == 23 and counts["skipped"] == 1 and counts["processes"] == 2

    single = score_file(RewardScorer(str(tiny_model_dir)), data, tmp_path / "single.jsonl", skip_invalid=True)
    assert single["rows"] == 23
    assert counts["truncation"] == single["truncation"] and single["truncation"]["texts"] == 23  # summed over ranks
    merged = [json.loads(line) for line in output.read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    assert [line["row"] for line in merged] == [line["row"] for line in expected] == [r for r in range(1, 25) if r != 10]
    assert [line["response"] for line in merged] == [line["response"] for line in expected]
    assert [line["score"] for line in merged] == pytest.approx([line["score"] for line in expected], abs=1e-6)
    assert sorted(p.name for p in output.parent.iterdir()) == ["out.jsonl"]  # part files removed


def test_torchrun_evaluate_runs_once_on_rank_zero(tiny_model_dir, tmp_path):
    """evaluate is not sharded: under torchrun every rank evaluated the whole file, stdout held one
    metrics JSON per rank (not parseable as one) and every rank wrote the same --report-dir."""
    rows = [{"prompt": f"question {i}?", "chosen": "answer " * (1 + i % 5), "rejected": "no"} for i in range(12)]
    data = helpers.write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = _torchrun(["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--report-dir",
                     str(tmp_path / "report")], tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert json.loads(run.stdout)["n"] == 12  # one JSON document: rank 0's
    assert "evaluate runs in one process" in run.stderr
    assert (tmp_path / "report").is_dir()


def test_merge_parts_orders_a_folders_lines_by_file_then_row(tmp_path):
    """Scoring a folder: row numbers restart per file, so the merge keys on (file, row)."""
    lines = [("a.jsonl", 1), ("a.jsonl", 2), ("a.jsonl", 3), ("b.jsonl", 1), ("b.jsonl", 2)]
    records = [{"file": f, "row": r, "score": i} for i, (f, r) in enumerate(lines)]
    even = helpers.write_jsonl(tmp_path / "p0", records[0::2])
    odd = helpers.write_jsonl(tmp_path / "p1", records[1::2])
    assert merge_parts([even, odd], tmp_path / "out.jsonl") == 5
    merged = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(m["file"], m["row"]) for m in merged] == lines
    with pytest.raises(RuntimeError, match="b.jsonl row 1 appears twice"):
        merge_parts([odd, helpers.write_jsonl(tmp_path / "p2", [records[3]])], tmp_path / "bad.jsonl")


def test_merge_parts_orders_by_row_and_refuses_duplicates(tmp_path):
    even = helpers.write_jsonl(tmp_path / "p0", [{"row": r, "score": r} for r in (1, 3, 6)])
    odd = helpers.write_jsonl(tmp_path / "p1", [{"row": r, "score": r} for r in (2, 4, 5)])
    assert merge_parts([even, odd], tmp_path / "out.jsonl") == 6
    assert [json.loads(line)["row"] for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(RuntimeError, match="twice"):
        merge_parts([even, even], tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()


def _once_per_node_worker(rank: int, root: str) -> None:
    """One rank of a 2-process gloo group on this machine (one node): two once_per_node calls, the
    second failing on the local main process."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", REWARDKIT_CACHE_DIR=f"{root}/cache")
    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    outcome = {}

    def build(fail: bool):
        with open(f"{root}/builds", "a") as handle:
            handle.write(f"{rank}\n")
        if fail:
            raise ValueError("row 3: column 'chosen' is empty")
        return {"features": [[101, 7, 102]], "objective": "pairwise"}

    outcome["value"] = once_per_node(lambda: build(False), key="ok", encode=dict, decode=dict)
    try:
        once_per_node(lambda: build(True), key="fail", encode=dict, decode=dict)
    except Exception as error:  # noqa: BLE001 - recorded for the test to inspect
        outcome["error"] = [type(error).__name__, str(error)]
    Path(f"{root}/rank{rank}.json").write_text(json.dumps(outcome))
    dist.destroy_process_group()


def test_once_per_node_builds_on_one_rank_and_shares_failures(tmp_path):
    mp.start_processes(_once_per_node_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="spawn")
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert outcomes[0]["value"] == outcomes[1]["value"] == {"features": [[101, 7, 102]], "objective": "pairwise"}
    assert (tmp_path / "builds").read_text().split() == ["0", "0"]  # once per call, on the local main only
    assert outcomes[0]["error"] == ["ValueError", "row 3: column 'chosen' is empty"]
    assert outcomes[1]["error"][0] == "RankFailedError"  # rank 1 stops too instead of waiting at a barrier
    assert not list((tmp_path / "cache").glob("*"))


def _all_mean_worker(rank: int, root: str) -> None:
    import torch.distributed as dist

    from rewardkit.distributed import all_mean

    dist.init_process_group("gloo", init_method=f"file://{root}/store", rank=rank, world_size=2)
    Path(f"{root}/rank{rank}.json").write_text(json.dumps(all_mean([0.25, 0.75][rank])))
    dist.destroy_process_group()


def test_all_mean_averages_a_value_over_ranks_and_is_a_no_op_alone(tmp_path):
    """transformers adds the loss of the steps after the last log rank by rank: the summary's final
    training loss was rank 0's alone. run_training averages it with `all_mean` (here: each rank's own)."""
    from transformers.trainer_utils import TrainOutput

    from rewardkit.fit import _with_loss_over_ranks

    mp.start_processes(_all_mean_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="spawn")
    assert [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)] == [0.5, 0.5]
    assert _with_loss_over_ranks(TrainOutput(3, 0.25, {})).training_loss == 0.25  # one process: unchanged
