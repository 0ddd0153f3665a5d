"""`rewardkit COMMAND --help` read as a user: every default a help text states is the parsed one,
and what a help text promises is what the command does."""

import argparse
import json
import re

import pytest

from rewardkit.cli import main, make_parser, make_train_parser
from tests import helpers


def _parsers() -> dict[str, argparse.ArgumentParser]:
    commands = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {**{name: parser for name, parser in commands.items() if name != "train"}, "train": make_train_parser()}


def _helps(parser: argparse.ArgumentParser):
    """(action, its help as --help prints it, "(default: ...)" included, before wrapping)."""
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            yield action, formatter._expand_help(action)


def _help_of(command: str, option: str) -> str:
    parser = _parsers()[command]
    return next(text for action, text in _helps(parser) if option in action.option_strings)


def _stated_defaults(text: str) -> list[str]:
    """Literal defaults a help states: "(default 128)", "(default: 0.0)", "auto (default)", "(default on; ...)"."""
    return re.findall(r"\(default:? ([\w.'-]+)[;,)]", text) + re.findall(r"(\w+) \(default[;)]", text)


def _same(stated: str, default) -> bool:
    stated = stated.strip("'")
    if stated in ("on", "off"):
        return default is (stated == "on")
    try:
        return float(stated) == float(default)
    except (TypeError, ValueError):
        return stated == str(getattr(default, "value", default))


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "score", "publish"])
def test_every_default_a_help_states_is_the_parsed_default(command):
    """`--no-disable-dropout`'s help (HfArgumentParser copies --disable-dropout's) read "(default on, as in
    TRL) ... (default: False)": two defaults, both of the other flag. A None default stands for a
    default the help describes in words (resolved later), so only literal ones are compared."""
    wrong = [(action.option_strings[0], stated, action.default) for action, text in _helps(_parsers()[command])
             if action.default is not None for stated in _stated_defaults(text) if not _same(stated, action.default)]
    assert wrong == []


def test_each_no_switch_says_it_turns_its_flag_off_and_does(monkeypatch, tmp_path):
    """`--no-use-margin` was described as "Use a per-pair `margin` column when the data has one
    (default: False)", the opposite of what it does."""
    switches = [action for action in make_train_parser()._actions if action.option_strings[0].startswith("--no_")]
    assert {"--no_use_margin", "--no_disable_dropout", "--no_freeze_embeddings", "--no_cpu_split_batches"} <= {
        action.option_strings[0] for action in switches}
    for action in switches:
        flag = "--" + action.option_strings[0].removeprefix("--no_").replace("_", "-")
        assert _help_of("train", action.option_strings[0]) == f"Turn {flag} off (the same as {flag} false)."
    data = helpers.write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    given = ["--data", str(data), "--output-dir", str(tmp_path / "o")]
    _, train_args = helpers.train_cli_arguments(monkeypatch, [*given, "--no-use-margin", "--no-cpu-split-batches"])
    assert (train_args.use_margin, train_args.cpu_split_batches, train_args.freeze_embeddings) == (False, False, True)


def test_train_help_names_the_bare_debug_every_error_suggests(tmp_path):
    """Errors end "(Run again with --debug ...)", but `train --help` listed only TrainingArguments'
    `--debug DEBUG [DEBUG ...]` (underflow_overflow, tpu_metrics_debug)."""
    assert "A bare --debug (no value) is rewardkit's own instead: it shows the full traceback" in _help_of("train", "--debug")
    with pytest.raises(Exception, match="no such file or folder"):  # --debug: the error itself, not a paragraph
        main(["train", "--data", str(tmp_path / "missing.jsonl"), "--output-dir", str(tmp_path / "o"), "--debug"])


def test_label_smoothing_help_says_it_is_refused():
    """TrainingArguments' help offered "Label smoothing factor to prevent overconfidence", which
    `train` refuses: rewardkit's losses have no labels to smooth."""
    from rewardkit.training_args import RewardTrainingArguments

    assert "a value other than 0 is refused" in _help_of("train", "--label_smoothing_factor")
    with pytest.raises(ValueError, match="label_smoothing_factor 0.1 would be ignored"):
        RewardTrainingArguments(output_dir="x", label_smoothing_factor=0.1)


def test_score_output_help_says_one_line_per_valid_row(tmp_path, tokenizer, capsys):
    """The help promised "one line per input row"; a row skipped by --skip-invalid gets none."""
    assert "one line per valid row" in _help_of("score", "--output")
    folder = tmp_path / "rm"
    helpers.tiny_reward_model().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = helpers.write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "response": "r1"}, {"prompt": "p", "response": " "},
                                                        {"prompt": "p", "response": "r3"}])
    out = tmp_path / "o.jsonl"
    assert main(["score", "--model", str(folder), "--data", str(data), "--output", str(out), "--skip-invalid",
                 "--device", "cpu"]) == 0
    assert [json.loads(line)["row"] for line in out.read_text().splitlines()] == [1, 3]


def test_batch_size_help_counts_texts_and_names_the_token_budgets(tmp_path, tokenizer, monkeypatch):
    """"Max rows per batch" read as rows of data, but a pair of `evaluate` data is two texts; the
    default (a token budget) went unsaid. The budgets the help names are scoring's own."""
    import rewardkit.scoring as scoring

    for command in ("evaluate", "score"):
        text = _help_of(command, "--batch-size")
        assert "texts per forward pass: a pair is two texts" in text
        assert f"{scoring.GPU_TOKEN_BUDGET} padded tokens on CUDA, {scoring.CPU_TOKEN_BUDGET} elsewhere" in text
    folder = tmp_path / "rm"
    helpers.tiny_reward_model().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    data = helpers.write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": f"good {i}", "rejected": f"bad {i}"}
                                                         for i in range(3)])
    sizes, pad_batch = [], scoring.pad_batch
    monkeypatch.setattr(scoring, "pad_batch", lambda items, *a, **k: sizes.append(len(items)) or pad_batch(items, *a, **k))
    assert main(["evaluate", "--model", str(folder), "--data", str(data), "--batch-size", "2", "--device", "cpu"]) == 0
    assert sum(sizes) == 6 and max(sizes) == 2  # 3 pairs = 6 texts, at most 2 texts (one pair) at a time


def test_every_flag_a_help_names_exists_in_its_command():
    """`publish --help` sent readers to a bare `--calibrate` and `--data`, flags `publish` does not
    have (they are `evaluate`'s and `train`'s). A flag of another command is named with it."""
    parsers = _parsers()
    options = {name: {option for action in parser._actions for option in action.option_strings}
               for name, parser in parsers.items()}
    missing = []
    for name, parser in parsers.items():
        texts = [text for _, text in _helps(parser)] + [parser.description or "", parser.epilog or ""]
        for text in texts:
            for command, flag in re.findall(r"(?:\b(\w+) )?(--[a-zA-Z][\w-]*)", text):
                if flag not in options.get(command, options[name]):
                    missing.append(f"{name}: {command} {flag}".replace("  ", " "))
    assert missing == []
