"""The benchmark scripts' bookkeeping (benchmarks/): what they keep and refuse, without timing anything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import helpers

sys.path.insert(0, str(helpers.REPO_ROOT / "benchmarks"))

import scaling  # noqa: E402
import train_quality  # noqa: E402
import train_throughput  # noqa: E402


def test_train_throughput_keeps_every_run_of_a_repeated_setup(monkeypatch, capsys, tmp_path):
    """An alternating A/B (`--setups rewardkit,trl-defaults,rewardkit,trl-defaults`, as RESULTS.md's
    session 7 ran) printed four rows but its JSON, keyed by setup name, kept only the later run of
    each; every run is now kept, and each rewardkit run is compared with the TRL run of its round."""
    speeds = iter([10.0, 4.0, 12.0, 5.0])

    def fake_child(command, **kwargs):
        setup = command[command.index("--child") + 1]
        figures = {"setup": setup, "pairs_per_s": next(speeds), "real_tokens_per_s": 1000.0,
                   "padded_tokens_per_s": 1200.0, "padding_share": 1 / 6, "gflops_per_s": 100.0, "peak_rss_mib": 2000.0}
        return subprocess.CompletedProcess(command, 0, stdout="RESULT " + json.dumps(figures) + "\n", stderr="")

    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    monkeypatch.setattr(train_throughput, "DATA", data)
    monkeypatch.setattr(train_throughput, "matmul_peak_gflops", lambda dtype="float32": 200.0)
    monkeypatch.setattr(train_throughput.subprocess, "run", fake_child)
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--setups", "rewardkit,trl-defaults,rewardkit,trl-defaults"])
    train_throughput.main()
    out = capsys.readouterr().out
    report = json.loads(out.split("JSON ", 1)[1])
    assert {label: r["pairs_per_s"] for label, r in report["results"].items()} == {
        "rewardkit": 10.0, "trl-defaults": 4.0, "rewardkit#2": 12.0, "trl-defaults#2": 5.0}
    assert "rewardkit / trl-defaults: 2.50x pairs/s" in out
    assert "rewardkit#2 / trl-defaults#2: 2.40x pairs/s" in out


def test_scaling_refuses_an_unknown_part(monkeypatch, capsys):
    """`--parts files` (a typo of `file`) ran no part and printed an empty report with exit status 0."""
    monkeypatch.setattr(sys, "argv", ["scaling.py", "--parts", "files"])
    with pytest.raises(SystemExit) as exit_:
        scaling.main()
    assert exit_.value.code == 2
    assert "unknown part(s) files" in capsys.readouterr().err


def test_train_quality_refuses_an_unknown_setup_to_skip(monkeypatch, capsys):
    """`--skip` was read as a substring test, so a typo (`--skip rewardkt`) skipped nothing and the
    run trained the setup it meant to leave out, for minutes, with exit status 0."""
    monkeypatch.setattr(sys, "argv", ["train_quality.py", "--skip", "rewardkt"])
    with pytest.raises(SystemExit) as exit_:
        train_quality.main()
    assert exit_.value.code == 2
    assert "unknown setup(s) rewardkt in --skip" in capsys.readouterr().err


def test_scaling_training_table_prints_the_executed_gflops(monkeypatch, capsys, tmp_path):
    """RESULTS.md's scaling training table has an executed GFLOP/s column, but `scaling.py` printed
    pairs/s, tokens/s, padding and RSS only: the figure was in its JSON, not in the table it printed."""
    figures = {"pairs_per_s": 8.91, "real_tokens_per_s": 2531.0, "padding_share": 0.28, "gflops_per_s": 210.4,
               "peak_rss_mib": 1853.0}
    dev = tmp_path / "dev.jsonl"
    dev.write_text("{}\n")
    monkeypatch.setattr(scaling, "DEV", dev)
    monkeypatch.setattr(scaling, "save_untrained_model", lambda folder: str(folder))
    monkeypatch.setattr(scaling, "run_child", lambda *args: dict(figures))
    monkeypatch.setattr(sys, "argv", ["scaling.py", "--parts", "train"])
    scaling.main()
    out = capsys.readouterr().out
    assert "| max_length | pairs/s | real tokens/s | padding | executed GFLOP/s | peak RSS MiB |" in out
    assert "| 256 | 8.91 | 2531 | 28% | 210 | 1853 |" in out
