"""The benchmark scripts' bookkeeping (benchmarks/): what they keep and refuse, without timing anything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import helpers

sys.path.insert(0, str(helpers.REPO_ROOT / "benchmarks"))

import scaling  # noqa: E402
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
