"""Reliability and safety (issue 8): errors a user can act on, work that survives a crash,
no pickle ever unpickled, identical runs from identical inputs, bounded memory on big files,
and inputs longer than the model never reaching past its position embeddings.

Tiny random models throughout (hidden 32, 2 layers; tests/helpers.py). The matrix in README.md
("What is tested") names, for each promise, the test that proves it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rewardkit.cli import main
from tests import helpers

PAIRS = [{"prompt": f"question {i}?", "chosen": f"a careful answer {i}", "rejected": f"no {i}"} for i in range(8)]
DEBUG_HINT = "(Run again with --debug for the full traceback.)"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A random BERT backbone + the MiniLM tokenizer: what `--base-model` gets in these tests."""
    return helpers.save_tiny_backbone(tmp_path_factory.mktemp("base") / "tiny-base")


@pytest.fixture(scope="module")
def model_dir(tiny_base, tmp_path_factory) -> Path:
    """A saved rewardkit model (safetensors, config, code files, tokenizer), as `train` leaves it."""
    from transformers import AutoTokenizer

    from modeling_reward import RewardModel

    folder = tmp_path_factory.mktemp("model") / "tiny-reward-model"
    torch.manual_seed(0)
    RewardModel.from_backbone(str(tiny_base)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    return helpers.write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", PAIRS)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run `rewardkit ARGV` in this process; (exit code, stderr)."""
    code = main(argv)
    return code, capsys.readouterr().err


def _paragraph(stderr: str, command: str) -> str:
    """The error as the user sees it: no traceback anywhere, and one paragraph (no blank line)
    from "rewardkit COMMAND: error:" to the end of stderr, the --debug hint last when it has one
    (usage and data errors do not: they say all there is). Returned on one line."""
    assert "Traceback" not in stderr, stderr[-2000:]
    text = stderr[stderr.index(f"rewardkit {command}: error:"):].strip()
    line = " ".join(text.split())
    assert "\n\n" not in text and DEBUG_HINT not in line.removesuffix(DEBUG_HINT), text
    return line


# ---- 2. CLI error paths ------------------------------------------------------------------------

def _missing_model_cases(tmp: Path, data: Path) -> dict[str, list[str]]:
    missing = str(tmp / "no-such-model-folder")
    return {
        "score": ["score", "--model", missing, "--prompt", "p", "--response", "r"],
        "score --data": ["score", "--model", missing, "--data", str(data), "--output", str(tmp / "s.jsonl")],
        "evaluate": ["evaluate", "--model", missing, "--data", str(data)],
        "publish": ["publish", "--model", missing, "--repo-id", "you/rm", "--dry-run", "--out", str(tmp / "pub")],
        "train --base-model": ["train", "--data", str(data), "--base-model", missing, "--output-dir", str(tmp / "o")],
    }


@pytest.mark.parametrize("case", ["score", "score --data", "evaluate", "publish", "train --base-model"])
def test_missing_model_folder_is_one_clear_paragraph(case, tmp_path, pairs_file, capsys):
    argv = _missing_model_cases(tmp_path, pairs_file)[case]
    code, err = _cli(argv, capsys)
    assert code == 1
    message = _paragraph(err, argv[0])
    assert str(tmp_path / "no-such-model-folder") in message
    assert "does not exist" in message or "no such folder" in message
    assert not (tmp_path / "pub").exists() and not (tmp_path / "o").exists()


def test_folder_that_is_not_a_reward_model_every_command(tiny_base, tmp_path, pairs_file, capsys):
    """A plain BERT folder (model_type 'bert') for evaluate and publish; an empty folder for train
    (test_cli covers score)."""
    for argv in (["evaluate", "--model", str(tiny_base), "--data", str(pairs_file)],
                 ["publish", "--model", str(tiny_base), "--repo-id", "you/rm", "--dry-run", "--out", str(tmp_path / "p")]):
        code, err = _cli(argv, capsys)
        assert code == 1 and "not a rewardkit reward model" in _paragraph(err, argv[0])
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    code, err = _cli(["train", "--data", str(pairs_file), "--base-model", str(empty), "--output-dir",
                      str(tmp_path / "o")], capsys)
    assert code == 1 and "no config.json" in _paragraph(err, "train")


def test_layout_contradicting_the_command(model_dir, pairs_file, tmp_path, capsys):
    """evaluate --objective mse on pairs; score on pairs (scoring takes prompt + response)."""
    code, err = _cli(["evaluate", "--model", str(model_dir), "--data", str(pairs_file), "--objective", "mse"], capsys)
    message = _paragraph(err, "evaluate")
    assert code == 1 and "'mse'" in message and "pairwise" in message and "pairs.jsonl" in message
    code, err = _cli(["score", "--model", str(model_dir), "--data", str(pairs_file), "--output",
                      str(tmp_path / "scores.jsonl")], capsys)
    assert code == 1 and "rewardkit evaluate" in _paragraph(err, "score")
    assert not (tmp_path / "scores.jsonl").exists()


@pytest.mark.parametrize("argv", [
    ["score", "--model", "m", "--prompt", "p", "--response", "r", "--batch-size", "0"],
    ["score", "--model", "m", "--prompt", "p", "--response", "r", "--max-length", "ten"],
    ["evaluate", "--model", "m", "--data", "d", "--limit", "-5"],
    ["demo", "--max-length", "0"],
    ["demo", "--epochs", "nan"],
    ["demo", "--epochs", "inf"],
], ids=lambda argv: " ".join(argv[-2:]))
def test_invalid_numeric_flags_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert f"argument {argv[-2]}" in err


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--max-length", "3"], "--max-length"),
    (["--eval-fraction", "1.5"], "--eval-fraction"),
    (["--reward-stats-samples", "-4"], "--reward-stats-samples"),
    pytest.param(["--num_train_epochs", "-1"], "num_train_epochs"),
    pytest.param(["--learning_rate", "inf"], "learning_rate"),
    pytest.param(["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_invalid_training_numbers_are_refused_by_name(flags, fragment, tiny_base, pairs_file, tmp_path, capsys):
    argv = ["train", "--data", str(pairs_file), "--base-model", str(tiny_base), "--output-dir", str(tmp_path / "o"),
            "--save_strategy", "no", "--disable_tqdm", "true", "--quiet", *flags]
    code, err = _cli(argv, capsys)
    assert code == 2 and fragment in _paragraph(err, "train")  # a usage error, as `score --max-length 3` is


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to, root included. chmod stops ordinary users only, and these
    tests often run as root: then the immutable attribute (chattr +i) is used, and the test is
    skipped where neither works (no chattr, or no CAP_LINUX_IMMUTABLE in the container)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = [lambda: folder.chmod(0o755)]
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = [lambda: subprocess.run(["chattr", "-i", str(folder)], check=False)]
    else:
        pytest.skip("running as root without `chattr +i`: no way to make a folder read-only for root here")
    try:
        try:
            (folder / "probe").write_text("x")
        except OSError:
            yield folder
        else:
            pytest.skip(f"{folder} stayed writable after chmod/chattr")
    finally:
        undo[0]()


@pytest.mark.parametrize("command", ["train", "score", "evaluate", "publish"])
def test_read_only_output_folder_is_refused_before_any_work(command, read_only_dir, pairs_file, capsys):
    target = read_only_dir / "out"
    argv = {
        "train": ["train", "--data", str(pairs_file), "--output-dir", str(target)],
        "score": ["score", "--model", "unused", "--data", str(pairs_file), "--output", str(target / "s.jsonl")],
        "evaluate": ["evaluate", "--model", "unused", "--data", str(pairs_file), "--report-dir", str(target)],
        "publish": ["publish", "--model", "unused", "--repo-id", "you/rm", "--dry-run", "--out", str(target)],
    }[command]
    code, err = _cli(argv, capsys)
    assert code == 1 and "not writable" in _paragraph(err, command)
    assert list(read_only_dir.iterdir()) == []


def _cli_process(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rewardkit.cli", *argv], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


def test_debug_shows_the_traceback_and_only_then(tmp_path):
    """In a real process: one paragraph by default; the full traceback with --debug or
    REWARDKIT_DEBUG=1 (exit code 1 every time)."""
    argv = ["publish", "--model", str(tmp_path / "missing"), "--repo-id", "you/rm", "--dry-run", "--out", "o"]
    plain = _cli_process(argv, tmp_path)
    assert plain.returncode == 1 and "does not exist" in _paragraph(plain.stderr, "publish")
    for run in (_cli_process([*argv, "--debug"], tmp_path), _cli_process(argv, tmp_path, REWARDKIT_DEBUG="1")):
        assert run.returncode == 1
        assert "Traceback (most recent call last)" in run.stderr and "FileNotFoundError" in run.stderr


def test_error_paragraph_keeps_long_and_hyphenated_paths_whole(tmp_path, capsys):
    """Wrapping to 100 columns once broke "site-packages" into "site-" / "packages"."""
    folder = tmp_path / ("a-very-long-hyphenated-folder-name-" * 4) / "my-reward-model"
    code, err = _cli(["publish", "--model", str(folder), "--repo-id", "you/rm", "--dry-run", "--out",
                      str(tmp_path / "pub")], capsys)
    assert code == 1 and str(folder) in _paragraph(err, "publish")


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    from rewardkit import cli

    monkeypatch.setitem(cli.COMMANDS, "publish", interrupted)
    assert main(["publish", "--model", "m", "--repo-id", "you/rm"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


# ---- 3. interrupted work loses nothing ---------------------------------------------------------

def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir())


def test_publish_dry_run_crash_while_copying_leaves_no_folder(model_dir, tmp_path, monkeypatch, capsys):
    """Through the CLI (tests/test_publishing.py::test_crash_while_building_leaves_no_folder
    does it through the Python API)."""
    from rewardkit import publishing

    real_copy = publishing.shutil.copyfile
    calls = []

    def copy_then_fail(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(publishing.shutil, "copyfile", copy_then_fail)
    out = tmp_path / "hub-folder"
    code, err = _cli(["publish", "--model", str(model_dir), "--repo-id", "you/rm", "--dry-run", "--out", str(out)], capsys)
    assert code == 1 and "No space left" in _paragraph(err, "publish")
    assert _siblings(out) == [], "neither the folder nor its staging copy is left"


def test_publish_dry_run_crash_while_verifying_leaves_no_complete_folder(model_dir, tmp_path, monkeypatch):
    from rewardkit import publishing

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(publishing, "_score_reference", crash)
    out = tmp_path / "hub-folder"
    with pytest.raises(KeyboardInterrupt):
        publishing.publish(model_dir, "you/rm", dry_run=True, out=out)
    assert not out.exists()


def test_evaluate_report_dir_crash_mid_write_leaves_no_report(model_dir, pairs_file, tmp_path, monkeypatch, capsys):
    """metrics.json and the plots are already written when the crash comes (report.md is last):
    they must stay in the hidden temporary sibling, which is removed."""
    from rewardkit import report

    def crash(ctx):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.report_text, "render_markdown", crash)
    target = tmp_path / "report"
    code, err = _cli(["evaluate", "--model", str(model_dir), "--data", str(pairs_file), "--report-dir", str(target)],
                     capsys)
    assert code == 1 and "No space left" in _paragraph(err, "evaluate")
    assert _siblings(target) == []


def test_score_output_crash_mid_file_leaves_no_output(model_dir, tmp_path, monkeypatch):
    """The first chunks are written when the crash comes; the output file must not appear
    (tests/test_scoring.py covers bad data, this a crash of the scorer itself)."""
    from rewardkit.score_files import score_file
    from rewardkit.scoring import RewardScorer

    rows = [{"prompt": f"q{i}", "response": f"r{i}"} for i in range(10)]
    data = helpers.write_jsonl(tmp_path / "rows.jsonl", rows)
    scorer = RewardScorer(model_dir, device="cpu")
    real_run, calls = scorer._run, []

    def run_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed mid-file")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(scorer, "_run", run_then_crash)
    output = tmp_path / "out" / "scores.jsonl"
    with pytest.raises(RuntimeError, match="killed mid-file"):
        score_file(scorer, data, output, chunk_rows=2)
    assert list(output.parent.iterdir()) == []


def test_calibration_crash_keeps_the_old_config(model_dir, tmp_path, monkeypatch):
    """`evaluate --calibrate` rewrites the model's config.json: a crash must leave the old one."""
    from rewardkit.evaluation import store_temperature

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    before = (folder / "config.json").read_bytes()

    def crash(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="Input/output"):
        store_temperature(folder, 2.0)
    assert (folder / "config.json").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in model_dir.iterdir())


# ---- 4. safe loading ---------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a folder: proof, if it ever appears, that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def pickle_only_model(model_dir, tmp_path) -> tuple[Path, Path]:
    """A rewardkit model folder whose only weights are a booby-trapped pytorch_model.bin."""
    import pickle

    folder = tmp_path / "pickle-only-model"
    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PICKLE-WAS-LOADED"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    return folder, marker


def _pickle_entry_points(folder: Path, data: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "rewardkit score": ["score", "--model", str(folder), "--prompt", "p", "--response", "r"],
        "rewardkit score --data": ["score", "--model", str(folder), "--data", str(data), "--output", str(tmp / "s.jsonl")],
        "rewardkit evaluate": ["evaluate", "--model", str(folder), "--data", str(data)],
        "rewardkit publish": ["publish", "--model", str(folder), "--repo-id", "you/rm", "--dry-run", "--out", str(tmp / "p")],
        "rewardkit train --base-model": ["train", "--data", str(data), "--base-model", str(folder), "--output-dir",
                                         str(tmp / "o"), "--quiet"],
    }


@pytest.mark.parametrize("entry", ["RewardScorer", "run_training", "rewardkit score", "rewardkit score --data",
                                   "rewardkit evaluate", "rewardkit publish", "rewardkit train --base-model"])
def test_pickle_only_weights_are_refused_and_never_unpickled(entry, pickle_only_model, pairs_file, tmp_path,
                                                             monkeypatch, capsys):
    folder, marker = pickle_only_model
    loads = []
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args) or {})
    if entry == "RewardScorer":
        from rewardkit.scoring import RewardScorer

        with pytest.raises(ValueError, match=r"(?s)safetensors.*pickle") as info:
            RewardScorer(folder)
        message = str(info.value)
    elif entry == "run_training":  # the Python API: refused (in transformers' words, for now)
        from rewardkit.fit import run_training
        from rewardkit.training_args import DataArguments, RewardTrainingArguments

        with pytest.raises((OSError, ValueError), match="safetensors") as info:
            run_training(DataArguments(data=str(pairs_file)), RewardTrainingArguments(
                output_dir=str(tmp_path / "o"), base_model=str(folder), save_strategy="no", disable_tqdm=True))
        message = str(info.value) + " (pickle)"
    else:
        argv = _pickle_entry_points(folder, pairs_file, tmp_path)[entry]
        code, err = _cli(argv, capsys)
        assert code == 1
        message = _paragraph(err, argv[0])
    assert "safetensors" in message and "pickle" in message, message
    assert not marker.exists() and loads == [], "the pickle was loaded"


_UNSAFE_LOADING = [re.compile(pattern) for pattern in (
    r"\btorch\s*\.\s*load\s*\(", r"from\s+torch\s+import\s+[^\n]*\bload\b", r"\bpickle\s*\.\s*(load|loads|Unpickler)\b",
    r"from\s+pickle\s+import", r"^\s*(import|from)\s+(dill|cloudpickle|joblib)\b", r"allow_pickle\s*=\s*True",
    r"weights_only\s*=\s*False", r"\bnp\s*\.\s*load\s*\(")]
# Round-tripping an object the test itself just pickled (tests/test_data.py: a RewardDataError
# keeps its attributes through DataLoader workers) reads no file: nothing untrusted is loaded.
_JUSTIFIED = re.compile(r"pickle\.loads\(pickle\.dumps\(")


def _project_code() -> dict[str, str]:
    """Every Python source of the project, the notebook's code cells included."""
    skip = {".git", ".hypothesis", ".pytest_cache", ".ruff_cache", "build", "dist", "__pycache__"}
    sources = {}
    for path in sorted(helpers.REPO_ROOT.rglob("*")):
        parts = set(path.relative_to(helpers.REPO_ROOT).parts)
        if parts & skip or any(part.endswith(".egg-info") for part in parts) or not path.is_file():
            continue
        if path.suffix == ".py":
            sources[str(path)] = path.read_text(encoding="utf-8")
        elif path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources[str(path)] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return sources


def test_no_project_code_unpickles_anything():
    sources = _project_code()
    assert len(sources) > 20 and any(name.endswith("fit.py") for name in sources)
    found = [f"{name}: {line.strip()}" for name, text in sources.items() for line in text.splitlines()
             if any(p.search(line) for p in _UNSAFE_LOADING) and not _JUSTIFIED.search(line)]
    assert found == []


_HUB_IMPORTS = {"__future__", "inspect", "dataclasses", "math", "typing", "torch", "transformers", "configuration_reward"}
_FORBIDDEN_CALLS = {"eval", "exec", "compile", "open", "__import__", "input", "breakpoint", "setattr", "delattr", "globals"}


@pytest.mark.parametrize("filename", ["configuration_reward.py", "modeling_reward.py"])
def test_hub_files_import_and_call_nothing_dangerous(filename):
    """What `trust_remote_code` runs on every user's machine, read as a syntax tree: imports
    only from an allow-list (no os, sys, subprocess, socket, urllib, pathlib, pickle, importlib),
    and no eval/exec/open/setattr calls (getattr, which only reads, is fine). (tests/test_publishing.py greps the same files
    for forbidden words; tests/test_roundtrip.py checks transformers' own requirement scan.)"""
    tree = ast.parse((helpers.REPO_ROOT / filename).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= _HUB_IMPORTS, imported - _HUB_IMPORTS
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & _FORBIDDEN_CALLS, calls & _FORBIDDEN_CALLS


# ---- 5. determinism ----------------------------------------------------------------------------

def _train(output_dir: Path, base: Path, data: Path, seed: int = 0, **overrides):
    from rewardkit.fit import run_training
    from rewardkit.training_args import DataArguments, RewardTrainingArguments

    values = dict(output_dir=str(output_dir), base_model=str(base), max_length=32, learning_rate=2e-3,
                  per_device_train_batch_size=4, num_train_epochs=1, save_strategy="no", logging_steps=1,
                  disable_tqdm=True, seed=seed, reward_stats_samples=16)
    values.update(overrides)
    return run_training(DataArguments(data=str(data), eval_fraction=0.25), RewardTrainingArguments(**values))


def test_same_seed_data_and_flags_give_identical_weights(tiny_base, tmp_path):
    """Bit for bit on CPU (dropout, shuffling, the eval split and the head's init all seeded);
    a different seed gives different weights, so the comparison can fail."""
    data = helpers.write_jsonl(tmp_path / "train.jsonl", [{**row, "prompt": f"{row['prompt']} {k}"}
                                                            for k in range(3) for row in PAIRS])
    runs = [_train(tmp_path / name, tiny_base, data, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    a, b, c = (load_file(str(tmp_path / name / "model.safetensors")) for name in "abc")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert runs[0].train_loss == runs[1].train_loss and runs[0].reward_mean == runs[1].reward_mean
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in "ab"]
    assert configs[0] == configs[1]


# ---- 6. bounded resources ----------------------------------------------------------------------

_PEAK_RSS = """
import json, resource, sys
from rewardkit.cli import main
peaks = []
for argv in json.loads(sys.argv[1]):
    assert main(argv) == 0, argv
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux -> MiB
print(json.dumps(peaks))
"""
# Measured on 2 CPU cores: growth from the small run to the large one is about 2 MB for score and
# 11 MB for evaluate (its float arrays and metric temporaries, O(n) by design). A loader holding
# every normal-form row instead would add 40 MB (score) and 27 MB (evaluate); token ids more.
GROWTH_LIMIT_MB = 25


def _peak_rss_mb(runs: list[list[str]], cwd: Path) -> tuple[list[float], str]:
    """Peak RSS of one fresh process after each `rewardkit ARGV` in turn, and its stdout. The
    peak only rises, so the increase from the small run to the large one is what the large one
    needed beyond it. One torch thread: this measures memory, and a shared 2-core machine
    thrashes with two."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_PEAK_RSS), json.dumps(runs)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


def _rows_file(path: Path, n: int, pairs: bool) -> Path:
    """`n` short rows (about 20 tokens a pair), row i's prompt starting "question i:"."""
    words = ["the", "cat", "sat", "on", "a", "mat", "why", "is", "sky", "blue", "rome", "yes", "no"]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            prompt, response = f"question {i}: {words[i % 13]} {words[i * 7 % 13]} ?", f"{words[i * 3 % 13]} {words[i % 5]} ."
            row = {"prompt": prompt, "chosen": response, "rejected": "no " + response} if pairs else \
                {"prompt": prompt, "response": response}
            handle.write(json.dumps(row) + "\n")
    return path


def test_score_streams_100000_rows_in_bounded_memory(model_dir, tmp_path):
    """`rewardkit score --data` on 100,000 rows needs hardly more memory than on 10,000, and
    writes every row once, in input order."""
    small, large = _rows_file(tmp_path / "small.jsonl", 10_000, False), _rows_file(tmp_path / "large.jsonl", 100_000, False)
    runs = [["score", "--model", str(model_dir), "--data", str(path), "--output", str(tmp_path / f"{path.stem}.out"),
             "--quiet"] for path in (small, large)]
    peaks, _ = _peak_rss_mb(runs, tmp_path)
    assert peaks[1] - peaks[0] < GROWTH_LIMIT_MB, peaks
    with open(tmp_path / "large.out", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            row = json.loads(line)
            assert row["row"] == i + 1 and row["prompt"].startswith(f"question {i}:"), (i, row)
    assert i + 1 == 100_000


def test_evaluate_streams_100000_texts_in_bounded_memory(model_dir, tmp_path):
    """`rewardkit evaluate` on 50,000 pairs (100,000 texts) against 5,000 pairs. (Without
    --report-dir: drawing a scatter plot of every pair is O(n) by nature.)"""
    small, large = _rows_file(tmp_path / "small.jsonl", 5_000, True), _rows_file(tmp_path / "large.jsonl", 50_000, True)
    runs = [["evaluate", "--model", str(model_dir), "--data", str(path), "--quiet"] for path in (small, large)]
    peaks, stdout = _peak_rss_mb(runs, tmp_path)
    assert peaks[1] - peaks[0] < GROWTH_LIMIT_MB, peaks
    assert '"n": 5000,' in stdout and '"n": 50000,' in stdout


def _short_backbone(folder: Path, kind: str) -> Path:
    """A tiny random backbone with only 64 positions, saved with the MiniLM tokenizer, whose own
    limit (512) is far above the model's: the classic route to an index error in the embeddings."""
    from transformers import AutoModel, AutoTokenizer

    config = helpers.tiny_backbone_config(kind)
    setattr(config, "n_positions" if kind == "gpt2" else "max_position_embeddings", 64)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(helpers.minilm_path()).save_pretrained(folder)
    return folder


LONG_PROMPT = "Human: " + " ".join(f"turn {i} says something" for i in range(250))  # > 5,000 characters
LONG_RESPONSE = "because " * 700


@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_texts_longer_than_the_model_are_truncated_when_scoring(kind, tmp_path):
    """RoBERTa is the sharp case: positions start at padding_idx + 1, so 64 embeddings hold 62
    tokens."""
    from transformers import AutoTokenizer

    from modeling_reward import RewardModel
    from rewardkit.scoring import RewardScorer

    folder = _short_backbone(tmp_path / kind, kind)
    model, tokenizer = RewardModel.from_backbone(str(folder)), AutoTokenizer.from_pretrained(folder)
    assert len(LONG_PROMPT) > 5000 and len(LONG_RESPONSE) > 5000
    limit = 62 if kind == "roberta" else 64
    for asked in (None, 512):
        scorer = RewardScorer(model, tokenizer=tokenizer, device="cpu", max_length=asked)
        assert scorer.max_length == limit
        prompts, responses = [LONG_PROMPT, "short", LONG_PROMPT], ["short", LONG_RESPONSE, LONG_RESPONSE]
        assert max(len(item["input_ids"]) for item in scorer.encoder.encode(prompts, responses)) == limit
        assert all(value == value for value in scorer.score(prompts, responses))  # finite, no IndexError


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_texts_longer_than_the_model_are_truncated_when_training(kind, tmp_path):
    folder = _short_backbone(tmp_path / kind, kind)
    # The responses differ at their start: their ends are cut, and pairs that differ only after
    # the cut would be skipped as identical (fit.prepare_data).
    rows = [{"prompt": LONG_PROMPT + f" {i}", "chosen": "yes " + LONG_RESPONSE, "rejected": "no " + LONG_RESPONSE}
            for i in range(8)]
    data = helpers.write_jsonl(tmp_path / "long.jsonl", rows)
    result = _train(tmp_path / "out", folder, data, max_length=512, logging_steps=50)
    assert result.max_length == (62 if kind == "roberta" else 64) and result.steps == 2
    assert "had the end of the response cut" in result.truncation


def test_readme_names_only_existing_tests_and_their_true_counts():
    """The README's "What is tested" matrix said `test_distributed.py` (all 5 tests) of a file that
    holds 8: each `file::name` it names must be a test of that file, and each "(all N tests)" the
    number pytest collects there."""
    readme = (helpers.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    matrix = readme[readme.index("## What is tested"):]
    missing, counted = [], {}
    for line in matrix.splitlines():
        current = None
        for match in re.finditer(r"`(test_\w+\.py)?(?:::(\w+))?[^`]*`(?: \(all (\d+) tests\))?", line):
            current = match.group(1) or current
            if current and match.group(2):
                source = (helpers.REPO_ROOT / "tests" / current).read_text(encoding="utf-8")
                if not re.search(rf"^def {match.group(2)}\(", source, re.M):
                    missing.append(f"{current}::{match.group(2)}")
            if match.group(3):
                counted[current] = int(match.group(3))
    assert not missing
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                                *(f"tests/{name}" for name in counted)], cwd=helpers.REPO_ROOT,
                               capture_output=True, text=True, timeout=120).stdout
    assert counted and counted == {name: collected.count(f"tests/{name}::") for name in counted}
