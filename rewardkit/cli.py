"""The `rewardkit` command: demo, train, evaluate, score, publish.

Heavy imports (torch, transformers) happen inside the command functions so `rewardkit --help`
answers at once. Errors end in one paragraph on stderr and a non-zero exit code; `--debug` shows
the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rewardkit.cli_config import peek_option, read_yaml_config, yaml_defaults
from rewardkit.errors import CliError, UsageError
from rewardkit.file_names import ADAPTER_DIR, REWARD_CONFIG_FILE, SUMMARY_FILE

logger = logging.getLogger("rewardkit")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM killed


# ---------------------------------------------------------------------- parsers


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardkit",
        description="Train, score, explain and publish reward models for RLHF.",
        epilog="Run `rewardkit COMMAND --help` for a command's options. `rewardkit demo` trains a small "
               "model offline in a few minutes.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="Offline end-to-end run on the embedded data set (the main job).")
    demo.add_argument("--output-dir", default="reward-model-demo", help="Where the trained model goes (default %(default)s); its report and Hub folder go "
                      "beside it as NAME-report and NAME-hub. Folders of an earlier run are replaced, and the log says so.")
    demo.add_argument("--epochs", type=_positive_float, default=2.0, help="Training epochs (default %(default)s).")
    demo.add_argument("--max-length", type=_max_length, default=128, help="Tokens per pair (default %(default)s).")
    demo.add_argument("--base-model", default=None, help="Backbone (default: the packaged MiniLM-L6).")
    _add_common(demo)

    commands.add_parser("train", help="Train a reward model (every TrainingArguments flag works; see `rewardkit train --help`).",
                        add_help=False)

    evaluate = commands.add_parser("evaluate", help="Metrics (JSON on stdout), calibration, plots and a report.")
    evaluate.add_argument("--model", required=True, help="Model folder or Hub repo id.")
    evaluate.add_argument("--data", required=True, help="File, folder or Hub dataset id.")
    evaluate.add_argument("--report-dir", default=None, help="Write metrics.json, PNG plots and report.md here.")
    evaluate.add_argument("--calibrate", action="store_true",
                          help="Fit the temperature T of P(a>b)=sigmoid((r_a-r_b)/T) on these pairs (pairwise data) or on every "
                               "within-group pair (ranked data) and store it in the model's config.json.")
    _add_data_options(evaluate)
    _add_scoring_options(evaluate)
    _add_common(evaluate)

    score = commands.add_parser("score", help="Score (prompt, response) pairs.")
    score.add_argument("--model", required=True, help="Model folder or Hub repo id.")
    score.add_argument("--prompt", action="append", default=None, help="A prompt (repeat, or give one for all responses).")
    score.add_argument("--response", action="append", default=None, help="A response (repeat).")
    score.add_argument("--data", default=None, help="File, folder or Hub dataset id of prompt + response (or completion) rows "
                       "to score (streamed).")
    score.add_argument("--output", default=None, help="JSONL output for --data: one line per valid row, in input order, with its row "
                       "number (rows skipped by --skip-invalid get none); a name such as .csv or .gz is refused; - for stdout.")
    _add_data_options(score, objective=False)
    _add_scoring_options(score)
    _add_common(score)

    publish = commands.add_parser("publish", help="Build the Hub folder, verify it loads, upload it.")
    publish.add_argument("--model", required=True, help="Trained model folder (the output dir of `train`).")
    publish.add_argument("--repo-id", required=True, help="Hub repo id, e.g. your-name/my-reward-model.")
    publish.add_argument("--private", action="store_true", help="Create a new repo as private, and refuse to upload into an existing "
                         "public one. Without it a new repo gets its owner's default visibility.")
    publish.add_argument("--revision", default=None, help="Branch to push to (created if needed).")
    publish.add_argument("--commit-message", default=None, help="Commit message.")
    publish.add_argument("--metrics", default=None, help="metrics.json from `rewardkit evaluate --report-dir` for the card: this "
                         "model's, at its stored T (another model's, or one measured before `evaluate --calibrate` stored T, "
                         "is refused).")
    publish.add_argument("--dataset", action="append", default=None, help="Hub id of a training data set (card metadata; repeat). Default: the "
                         "`train --data` that training_summary.json records (a local file is named in the card, not "
                         "in its metadata).")
    publish.add_argument("--license", default=None,
                         help="Hub license id for the card, e.g. mit, llama3.2, other (default: the base model's "
                              "when known, apache-2.0 for the packaged MiniLM; else the card states none).")
    publish.add_argument("--language", action="append", default=None,
                         help="Language code of the data the model judges, for the card (repeat), e.g. en, de "
                              "(default: the base model's when known, en for the packaged MiniLM; else the card states none).")
    publish.add_argument("--dry-run", action="store_true", help="Build and verify the folder, upload nothing.")
    publish.add_argument("--out", default=None, help="Where --dry-run writes the folder.")
    _add_common(publish)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    parser.add_argument("--quiet", action="store_true", help="Only warnings and errors in the log.")


def _add_data_options(parser: argparse.ArgumentParser, objective: bool = True) -> None:
    parser.add_argument("--split", default=None, help="Split of a Hub dataset or of a save_to_disk DatasetDict (default train), "
                        "the array of a JSON document {\"train\": [...], \"test\": [...]}, or the files of a folder "
                        "named by split (train-00000-of-00001.parquet, test.jsonl).")
    parser.add_argument("--columns", default=None, help="Rename columns: new=old,...")
    parser.add_argument("--skip-invalid", action="store_true", help="Skip invalid rows (counted, reported).")
    parser.add_argument("--limit", type=_positive_int, default=None, help="Use only the first N valid rows.")
    if objective:
        parser.add_argument("--objective", choices=["pairwise", "mse", "ranking"], default=None,
                            help="Data layout expected (default: detected).")


def _add_scoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="Max (prompt, response) texts per forward pass: a pair is two texts, a ranked group one per "
                             "response (default: no cap; a batch is filled up to 65536 padded tokens on CUDA, 2048 elsewhere).")
    parser.add_argument("--max-length", type=_max_length, default=None, help="Max tokens per pair (default: the length the model was trained with, else its limit, at most 512).")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available).")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None,
                        help="Backbone precision (default fp32; the reward head stays fp32). bf16 measured ~1.5x "
                             "faster on CPUs with AVX512-BF16 or AMX (not measured on GPUs; slower on other CPUs); "
                             "rewards then moved by at most 1.5%% (demo model) and 2.5%% (a 40-step HH-RLHF model) of their "
                             "standard deviation: measured bounds of two models, not a guarantee.")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


_MIN_MAX_LENGTH = 8  # = features.MIN_MAX_LENGTH, not imported here: it would load torch for --help


def _max_length(text: str) -> int:
    """A token count that leaves room for the special tokens and some text: refused here, as a usage
    error, like --max-length 0 (1-7 used to pass the parser and fail after the model had loaded,
    with a "run again with --debug" hint)."""
    value = _positive_int(text)
    if value < _MIN_MAX_LENGTH:
        raise argparse.ArgumentTypeError(f"expected a number >= {_MIN_MAX_LENGTH} (tokens for the special tokens "
                                         f"and some text), got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _version() -> str:
    from rewardkit import __version__

    return f"rewardkit {__version__}"


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # keep transformers' own notices out of the way of our summary
        if quiet:  # no progress bars either: "Loading weights", training steps, scoring
            hf_logging.disable_progress_bar()
        else:
            hf_logging.enable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _emit(text: str) -> None:
    """Results go to stdout (so `rewardkit evaluate ... > metrics.json` works); logs to stderr."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------- commands


def make_train_parser():
    """`rewardkit train`'s parser: HfArgumentParser over the two argument dataclasses, plus --config
    and --quiet, with the help texts HfArgumentParser gets wrong put right (see `_fix_train_help`)."""
    from transformers import HfArgumentParser

    from rewardkit.training_args import DataArguments, RewardTrainingArguments

    parser = HfArgumentParser((DataArguments, RewardTrainingArguments), prog="rewardkit train",
                              description="Train a reward model. Every transformers TrainingArguments flag works too.")
    parser.add_argument("--config", default=None, help="YAML file of arguments (field names as keys); flags override it.")
    parser.add_argument("--quiet", action="store_true", help="Only warnings and errors in the log.")
    _fix_train_help(parser)
    return parser


def _fix_train_help(parser: argparse.ArgumentParser) -> None:
    """HfArgumentParser gives each `--no_X` switch the help of `--X` followed by "(default: False)",
    so `--no-use-margin` read "Use a per-pair `margin` column ... (default: False)", the opposite of
    what it does; and its `--debug` help named only TrainingArguments' debug features, not the bare
    `--debug` (full tracebacks) that every error message suggests."""
    for action in parser._actions:
        option = action.option_strings[0] if action.option_strings else ""
        if option.startswith("--no_") and isinstance(action, argparse._StoreFalseAction):
            flag = "--" + option.removeprefix("--no_").replace("_", "-")
            action.help = f"Turn {flag} off (the same as {flag} false)."
            action.default = argparse.SUPPRESS  # the value comes from --X's own default: not "(default: False)"
        elif option == "--debug":
            action.help = (f"{action.help} A bare --debug (no value) is rewardkit's own instead: it shows the full "
                           "traceback of an error.")


def cmd_train(argv: Sequence[str]) -> int:
    from rewardkit.fit import run_training

    parser = make_train_parser()
    # A bare --debug is ours (tracebacks, handled in main); `--debug VALUE` is TrainingArguments'.
    argv = [token for i, token in enumerate(argv)
            if not (token == "--debug" and (i + 1 == len(argv) or argv[i + 1].startswith("--")))]
    config_path = peek_option(argv, "--config")
    if config_path:
        parser.set_defaults(**yaml_defaults(read_yaml_config(config_path), parser, config_path))
    # On a bad flag value argparse prints its usage first: ~150 flags here. One line says more.
    parser.print_usage = lambda file=None: (file or sys.stderr).write(
        "usage: rewardkit train --data DATA --output-dir DIR [flags]   (all flags: rewardkit train --help)\n")
    try:
        data_args, train_args, extra = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # unknown flags, or the dataclasses' own validation
        raise UsageError(_with_flag_suggestions(str(error), parser)) from error
    _setup_logging(extra.quiet or not _is_main_process())  # N ranks: one log, not N copies
    if extra.quiet:
        train_args.disable_tqdm = True  # the per-step metrics still reach the log, at INFO: hidden
    if not data_args.data:  # a usage error (exit 2), as every missing flag; the library's check says the same
        raise UsageError("No training data: pass --data (a file, a folder or a Hub dataset id).")
    _check_writable(train_args.output_dir)
    _check_base_model(train_args.base_model)
    from rewardkit.training_args import has_accelerator

    result = run_training(data_args, train_args)
    if _is_main_process():
        _emit(result.describe())
        # After the run, not before: a tip printed ahead of an unrelated error only confuses.
        hint = allocator_hint(os.environ, sys.platform, on_cpu=train_args.use_cpu or not has_accelerator())
        if hint:
            logger.info(hint)
    return 0


def _with_flag_suggestions(message: str, parser: argparse.ArgumentParser) -> str:
    """HfArgumentParser's "Some specified arguments are not used" plus, for each unknown flag, the
    known flags it is probably a misspelling of (`--max-lenght` -> `--max-length`)."""
    if "not used by the HfArgumentParser" not in message:
        return message
    import difflib

    known = [option for action in parser._actions for option in action.option_strings]
    unknown = [token.split("=")[0] for token in re.findall(r"'(--?[^']+)'", message)]
    hints = []
    for flag in unknown:
        close = difflib.get_close_matches(flag, known, n=2, cutoff=0.75)
        hints.append(f"{flag}: did you mean {' or '.join(close)}?" if close else f"{flag}: no such flag")
    return ("Unknown flags. " + " ".join(hints) + " (all flags: rewardkit train --help)") if hints else message


def allocator_hint(environ: dict, platform: str, *, on_cpu: bool) -> str | None:
    """A one-line tip for CPU training on Linux without tcmalloc preloaded, else None.

    glibc's allocator fragments as batch shapes change, so a training process's memory grows
    through an epoch; `--malloc-trim-steps` holds most of that back, tcmalloc keeps it flat. It has
    to be preloaded before Python starts, so rewardkit can only say so (measured in
    benchmarks/RESULTS.md)."""
    preloaded = environ.get("LD_PRELOAD", "")
    if not on_cpu or not platform.startswith("linux") or "tcmalloc" in preloaded or "jemalloc" in preloaded:
        return None
    return ("Tip: this ran on CPU with glibc's allocator, whose memory grows through an epoch (rewardkit trims it "
            "every --malloc-trim-steps). LD_PRELOAD=libtcmalloc_minimal.so.4 (apt install libtcmalloc-minimal4) "
            "keeps it flat: measured ~2.1 GiB peak against ~2.6 GiB trimmed and 2.8-3.0 GiB untrimmed over one HH-RLHF "
            "epoch, and 3-6% faster; see the README.")


def _is_main_process() -> bool:
    """Rank 0 of a torchrun / `accelerate launch` run (or the only process): the one that reports."""
    from rewardkit.distributed import is_main_process  # environment only: keeps --help light

    return is_main_process()


def _check_writable(path: str) -> None:
    """Fail before hours of training, not after: the output folder must be creatable and writable."""
    from pathlib import Path

    target = Path(path).resolve()
    existing = target
    while not existing.exists():
        existing = existing.parent
    if existing == target and not target.is_dir():
        raise CliError(f"Output path {path} exists and is not a folder.")
    if existing.is_file():  # `out.txt/report`: the path does not exist, and it was said to
        raise CliError(f"Output path {path} cannot be a folder: {existing} is a file.")
    if not os.access(existing, os.W_OK):
        raise CliError(f"Cannot write to {path}: {existing} is not writable.")


def _check_base_model(name: str | None) -> None:
    """Refuse at once what `from_pretrained` would refuse late or in confusing words: a local
    path that does not exist ("Repo id must be in the form ..."), a folder with no config.json,
    and a rewardkit model folder without safetensors weights (its pickle weights are never
    loaded: unpickling can run arbitrary code)."""
    from pathlib import Path

    if not name:
        return
    path = Path(name).expanduser()
    if not path.exists():
        if name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name:
            raise CliError(f"--base-model {name}: no such folder. Give a model folder or a Hub "
                           "model id such as bert-base-uncased.")
        _check_hub_base_model_offline(name)
        return  # a Hub id
    config = path / "config.json"
    if not path.is_dir():  # transformers read the file as a config: "the config file ... is not a valid JSON file"
        raise CliError(f"--base-model {name} is a file; give the folder `save_pretrained` wrote (it holds "
                       "config.json and the weights), or a Hub model id.")
    if not config.is_file():
        raise CliError(f"--base-model {name}: the folder holds no config.json, so it is not a saved "
                       "model. Give the folder `save_pretrained` wrote, or a Hub model id.")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # transformers will say what is wrong with the config
    if model_type == "reward_model":
        from rewardkit.scoring import check_reward_model_source

        try:
            check_reward_model_source(str(path))
        except ValueError as error:
            raise CliError(f"--base-model: {error}") from error


def _check_hub_base_model_offline(name: str) -> None:
    """Offline (HF_HUB_OFFLINE), a Hub id that is not in the local cache cannot load: say so by
    flag before the data is read, instead of transformers' "We couldn't connect to
    'https://huggingface.co'", which names neither the flag nor the offline setting."""
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        if not constants.HF_HUB_OFFLINE:
            return
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # an odd id or cache layout: let transformers say what is wrong  # noqa: BLE001
        return
    if not isinstance(cached, str):
        raise CliError(f"--base-model {name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set, "
                       "so it cannot be downloaded. Unset HF_HUB_OFFLINE, give a local model folder, or leave "
                       "--base-model out to train on the packaged MiniLM.")


def cmd_demo(args: argparse.Namespace) -> int:
    from rewardkit.demo import run_demo

    _check_writable(args.output_dir)
    _check_base_model(args.base_model)  # as train does: a wrong path failed late, as a bad Hub repo id
    report = run_demo(output_dir=args.output_dir, epochs=args.epochs, max_length=args.max_length,
                      base_model=args.base_model)
    _emit(report)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rewardkit import distributed
    from rewardkit.evaluation import evaluate_model

    if distributed.is_distributed():  # not sharded: every rank evaluated the whole file, printed the
        if not distributed.is_main_process():  # metrics once each and wrote the same report (and T)
            return 0
        logger.warning("evaluate runs in one process: rank 0 evaluates every row, the other %d processes do "
                       "nothing. Run it without torchrun.", distributed.world_size() - 1)
    if args.report_dir:
        _check_writable(args.report_dir)
    written = [args.report_dir] if args.report_dir else []
    if args.calibrate:  # the files calibration rewrites in the model folder
        written += [path for name in _CALIBRATION_WRITES
                    if os.path.isfile(path := os.path.join(args.model, name)) or REWARD_CONFIG_FILE not in name]
    with _says_what_an_interrupt_left(written):
        metrics = evaluate_model(args.model, args.data, split=args.split, columns=args.columns,
                                 objective=args.objective, skip_invalid=args.skip_invalid, report_dir=args.report_dir,
                                 calibrate=args.calibrate, batch_size=args.batch_size, max_length=args.max_length,
                                 device=args.device, limit=args.limit, dtype=args.dtype)
    _emit(json.dumps(metrics, indent=2, sort_keys=True))
    _explain_metrics(metrics, args.report_dir)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rewardkit import distributed

    if distributed.is_distributed():  # torchrun / accelerate launch: the rows are shared out over the ranks
        with distributed.process_group():
            return _score(args)
    return _score(args)


def _score(args: argparse.Namespace) -> int:
    from rewardkit import distributed
    from rewardkit.errors import UserInputError
    from rewardkit.score_files import check_output_name, is_stream, score_file
    from rewardkit.scoring import RewardScorer, truncation_marks

    if args.data and (args.prompt or args.response):
        raise UsageError("Give either --data or --prompt/--response, not both.")
    if not args.data and not args.response:
        raise UsageError("Nothing to score: give --prompt P --response R (repeatable) or --data FILE --output OUT.jsonl.")
    if args.data and not args.output:
        raise UsageError("--data needs --output OUT.jsonl (one scored line per valid row).")
    if args.output and not args.data:  # the --response lines go to stdout: the file was never written
        raise UsageError(f"--output {args.output} is for --data; the scores of --prompt/--response are printed on "
                       "stdout (redirect them: > scores.jsonl).")
    data_only = [flag for flag, value in (("--split", args.split), ("--columns", args.columns),
                                          ("--skip-invalid", args.skip_invalid), ("--limit", args.limit)) if value]
    if data_only and not args.data:  # they shape how --data is read: beside --response they did nothing
        raise UsageError(f"{', '.join(data_only)} {'is' if len(data_only) == 1 else 'are'} for --data; the "
                         "--prompt/--response texts are scored as given.")
    if args.output and not is_stream(args.output) and Path(args.output).expanduser().is_dir():
        raise CliError(f"--output {args.output} is a folder; give a file name such as scores.jsonl.")
    if args.output:
        try:
            check_output_name(args.output)
        except UserInputError as error:  # a flag value out of range: a usage error, before the model loads
            raise UsageError(str(error)) from None
    _refuse_undecodable_arguments(args)
    to_stdout = bool(args.output) and _is_our_stdout(args.output)
    if args.output and is_stream(args.output):
        if distributed.is_distributed():
            raise UsageError(f"--output {args.output} is not a file: under torchrun the ranks' parts are merged "
                           "into a file. Give a file path.")
    elif args.output:
        _check_writable(os.path.dirname(os.path.abspath(args.output)))
        if args.data:
            _check_output_is_not_input(args.data, args.output)
    prompts = None if args.data else _prompts_for(args)  # a count mismatch, before the model loads
    if not args.data and not distributed.is_main_process():
        return 0  # a handful of --response texts: rank 0 alone scores them
    device = args.device or (distributed.default_device() if distributed.is_distributed() else None)
    scorer = RewardScorer(args.model, device=device, batch_size=args.batch_size, max_length=args.max_length,
                          dtype=args.dtype)
    if args.data:
        options = {"split": args.split, "columns": args.columns, "skip_invalid": args.skip_invalid,
                   "limit": args.limit}
        with _says_what_an_interrupt_left([] if is_stream(args.output) else [args.output]):
            if distributed.is_distributed():
                counts = distributed.score_file_distributed(scorer, args.data, args.output, **options)
            else:
                counts = score_file(scorer, args.data, args.output, **options)
        if distributed.is_main_process():
            if to_stdout:  # the scored lines fill stdout: the counts go with the logs
                sys.stderr.write(json.dumps(counts) + "\n")
            else:
                _emit(json.dumps(counts))
            _explain_scores(scorer)
            _suggest_bf16(args, scorer)  # after the run: ahead of a data error it was noise
        return 0
    cuts: list[tuple[bool, bool]] = []
    raw = scorer.raw_rewards(prompts, args.response, cuts=cuts)  # one run: the scores are computed from it
    scores = scorer.rewards_to_scores(raw).tolist()
    for prompt, response, score, reward, cut in zip(prompts, args.response, scores, raw, cuts, strict=True):
        # full precision, as `score --data` writes: rounding to 6 decimals left a score of alpha=1e-5
        # times a reward of 0.1 as 1e-06 (one digit), and turned close rewards into ties
        _emit(json.dumps({"prompt": prompt, "response": response, "score": float(score), "raw_reward": float(reward),
                          **truncation_marks(*cut)}, ensure_ascii=False))
    _explain_scores(scorer)
    return 0


def _refuse_undecodable_arguments(args: argparse.Namespace) -> None:
    """A --prompt or --response that is not UTF-8 (a Latin-1 terminal, a script's bytes) reaches
    Python with each bad byte kept as a lone surrogate (\\udce9 for 0xe9), on which the tokenizer
    failed with "TypeError: TextEncodeInput must be Union[...]", naming no flag."""
    for flag, values in (("--prompt", args.prompt), ("--response", args.response)):
        for number, text in enumerate(values or (), 1):
            bad = next((i for i, char in enumerate(text) if "\udc80" <= char <= "\udcff"), None)
            if bad is not None:
                raise CliError(f"{flag} number {number} is not UTF-8 text: byte 0x{ord(text[bad]) - 0xdc00:02x} at "
                               f"character {bad + 1}. Pass the text in UTF-8 (e.g. iconv -f latin1 -t utf-8).")


def _prompts_for(args: argparse.Namespace) -> list[str]:
    """One prompt per --response. Without --prompt every response is scored with an empty prompt:
    legitimate (a model trained on prompt-less pairs), but easy to do by mistake, so it is said."""
    if not args.prompt:
        logger.info("No --prompt given: each response is scored with an empty prompt.")
    prompts = args.prompt or [""]
    if len(prompts) == 1:
        prompts = prompts * len(args.response)
    if len(prompts) != len(args.response):
        raise UsageError(f"{len(prompts)} --prompt but {len(args.response)} --response: give one prompt, or one per response.")
    return prompts


def _explain_scores(scorer) -> None:
    """How to read the printed numbers, with this model's alpha, normalization and T: a score is
    a rescaled raw reward, and preferences come from raw rewards; where the training responses'
    raw rewards lay (reward_mean, reward_std), for a reader of one lone score. An mse model's raw
    reward is a predicted annotation; a probability is offered for it only once a T has been calibrated."""
    config = getattr(scorer.model, "config", None)
    probability = f"P(a preferred to b) = sigmoid((raw_a - raw_b) / T), T = {scorer.temperature:g}"
    calibrated = getattr(config, "calibration_temperature", None) is not None
    mean, std = getattr(config, "reward_mean", None), getattr(config, "reward_std", None)
    # where a single reward lies: a lone score (the usual first question) was given with no scale at all
    scale = (f" Raw rewards of training responses: mean {mean:.4g}, std {std:.4g}."
             if mean is not None and std is not None and not scorer.normalize else "")  # a normalized score says it
    if getattr(config, "trained_objective", None) != "mse":
        origin = "(calibrated)" if calibrated else "(none calibrated yet: `rewardkit evaluate --calibrate` fits it)"
        logger.info("%s. A raw reward means nothing on its own, only beside another response to the same prompt: "
                    "%s %s.%s", scorer.score_formula(), probability, origin, scale)
        return
    logger.info("%s. This model was trained to predict annotated rewards (mse): a raw reward is a predicted "
                "annotation on its own scale%s.%s", scorer.score_formula(),
                f"; {probability} (calibrated)" if calibrated else "", scale)


def _explain_metrics(metrics: dict, report_dir: str | None) -> None:
    """How to read evaluate's JSON, in the log as `score`'s explanation is (stdout stays JSON): what
    the headline figures compare, that they use raw rewards (before alpha), the T of the
    probabilities, and whose rewards the top-level reward_mean / reward_std and `rewards` are. The
    JSON came with no word on it; only --report-dir's report.md explained it."""
    kind, n = metrics.get("objective"), metrics.get("n")
    raw = (f"raw reward r (before alpha = {metrics.get('alpha', 1):g}"
           f"{' and normalization' if metrics.get('normalize_rewards') else ''})")
    if kind == "mse":
        figures = (f"rmse and mae compare the {raw} of the {n} responses with their targets, in the targets' units "
                   "(target_std is the rmse of always predicting their mean); pearson and spearman are its "
                   "agreement with the targets (1 = perfect)")
    else:
        written, temperature = metrics.get("temperature_written"), metrics.get("temperature", 1.0)
        calibrated = bool(written) or temperature != 1  # T = 1 is the uncalibrated default
        state = ("fitted here, on these same pairs" if written else "calibrated" if calibrated
                 else "uncalibrated: `evaluate --calibrate` fits it")
        if kind == "pairwise":
            figures = (f"accuracy is the share of the {n} pairs whose chosen response got the higher {raw}; "
                       "mean_margin and median_margin are r_chosen - r_rejected, read as P(chosen preferred) = "
                       f"sigmoid(margin / T) with T = {temperature:.4g} ({state})")
        else:
            figures = (f"kendall_tau, top1_accuracy and pairwise_accuracy say how the order of the {raw.replace('reward r', 'rewards r')} agrees with the "
                       f"given ranking of the {n} groups; for a pair within a group, P(better preferred) = "
                       f"sigmoid((r_better - r_worse) / T) with T = {temperature:.4g} ({state})")
        figures += ", the probability that mean_confidence, log_loss, brier and ece score"
        if metrics.get("trained_objective") == "mse" and not calibrated:
            figures += " (this mse model's r is an annotation: at T = 1 they are no probability)"
    stats = ("reward_mean / reward_std are the training responses' (config.json), rewards the evaluated responses'"
             if metrics.get("reward_std") is not None else "rewards are the evaluated responses'")
    where = (f"{os.path.join(report_dir, 'report.md')} explains every figure" if report_dir
             else "--report-dir R writes report.md, which explains every figure")
    logger.info("Reading the JSON: %s; %s. %s.", figures, stats, where)


def _suggest_bf16(args: argparse.Namespace, scorer) -> None:
    """Say once, when a file was scored in fp32 on a CPU that computes bf16 natively, that --dtype bf16
    is there (measured ~1.5x faster on such a CPU; scores move in the third significant digit). Said
    after the scores are written, as train's allocator tip is: printed first, it came ahead of a data
    error that stopped the run before any row was scored."""
    from rewardkit.training_args import cpu_bf16_feature

    feature = cpu_bf16_feature() if args.dtype is None and scorer.device.type == "cpu" else None
    if feature:
        logger.info("This CPU computes bf16 natively (%s): --dtype bf16 scores about 1.5x faster, with scores "
                    "that differ from fp32 in the third significant digit.", feature)


def _upload_command(args: argparse.Namespace) -> str:
    """The command that uploads what this dry run built: every flag that shapes the folder or the
    repo (--metrics, --dataset, --license and --language change the card), shell-quoted, so running it as printed
    uploads the folder that was checked, not one with a bare card."""
    words = ["rewardkit", "publish", "--model", args.model, "--repo-id", args.repo_id]
    for flag, value in (("--revision", args.revision), ("--commit-message", args.commit_message),
                        ("--metrics", args.metrics), ("--license", args.license)):
        if value is not None:
            words += [flag, value]
    for dataset in args.dataset or ():
        words += ["--dataset", dataset]
    for language in args.language or ():
        words += ["--language", language]
    if args.private:
        words.append("--private")
    return shlex.join(words)


def cmd_publish(args: argparse.Namespace) -> int:
    from rewardkit.publishing import publish

    if args.out and not args.dry_run:
        raise UsageError("--out is for --dry-run (a real publish uploads from a temporary folder).")
    if args.dry_run and not args.out:
        raise UsageError("--dry-run needs --out DIR (where the Hub folder is written).")
    if args.out:
        _check_writable(args.out)
    evaluation = None
    if args.metrics:
        try:
            with open(args.metrics, encoding="utf-8") as handle:
                evaluation = json.load(handle)
        except (OSError, ValueError) as error:
            raise CliError(f"Cannot read --metrics {args.metrics}: {error}.") from error
    with _says_what_an_interrupt_left([args.out] if args.out else []):
        result = publish(args.model, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, dry_run=args.dry_run, out=args.out,
                         evaluation=evaluation, datasets=args.dataset, license=args.license, language=args.language)
    if args.dry_run:
        _emit(f"Dry run: built and verified {result.folder} ({len(result.files)} files: {', '.join(sorted(result.files))}). "
              f"Nothing was uploaded; `{_upload_command(args)}` uploads it.")
    else:
        _emit(f"Published {args.repo_id}: {result.url}")
    return 0


def _is_our_stdout(output: str) -> bool:
    """`-`, or a path that is this process's stdout (/dev/stdout, /proc/self/fd/1)."""
    if output == "-":
        return True
    try:
        mine, theirs = os.fstat(sys.stdout.fileno()), os.stat(output)
    except (OSError, ValueError, AttributeError):  # no such path, or a stdout without a descriptor
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _check_output_is_not_input(data: str, output: str) -> None:
    """`--output` must not replace the file being read, nor land in the folder being read (a
    second run would take the scores for data)."""
    data_path, output_path = Path(data).resolve(), Path(output).resolve()
    if data_path.is_file() and output_path == data_path:
        raise CliError(f"--output {output} is the --data file itself: scoring would overwrite its input. "
                       "Choose another output path.")
    if data_path.is_dir() and data_path in output_path.parents:
        raise CliError(f"--output {output} is inside the --data folder {data}, whose files are all read as data. "
                       "Choose a path outside it.")


# What `evaluate --calibrate` rewrites in the model folder (rewardkit.evaluation: the temperature, in a
# LoRA checkpoint's reward_config.json and a LoRA run's adapter/ where they are; its record in the
# training summary; the card rendered again).
_CALIBRATION_WRITES = ("config.json", REWARD_CONFIG_FILE, os.path.join(ADAPTER_DIR, REWARD_CONFIG_FILE),
                       SUMMARY_FILE, "README.md")


def _identity(path: str) -> tuple[int, int, int] | None:
    """What changes when a file or folder is written, replaced or removed (atomic writes rename a
    new file over the old one: a new inode; a file renamed into a folder changes its mtime)."""
    try:
        info = os.stat(os.path.expanduser(path))
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


@contextmanager
def _says_what_an_interrupt_left(paths: list[str]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, add to the interrupt a note of which output paths were written:
    "rewardkit: interrupted." alone left users to guess whether a half-written file was there."""
    before = {path: _identity(path) for path in paths}
    try:
        yield
    except KeyboardInterrupt as stop:
        changed = [path for path in paths if _identity(path) != before[path]]
        if changed:
            _add_note(stop, f"Changed before the stop: {', '.join(changed)}.")
        elif paths:
            _add_note(stop, f"Nothing was written to {', '.join(paths)}.")
        raise


def _add_note(error: BaseException, note: str) -> None:
    """`error.add_note(note)` on every Python rewardkit supports: add_note is 3.11's, and on 3.10 the
    AttributeError it raised replaced the interrupt ("rewardkit score: error: AttributeError: ...",
    exit 1 instead of 130). `__notes__` is the list add_note appends to; `_run` prints it."""
    error.__notes__ = [*getattr(error, "__notes__", ()), note]


COMMANDS = {"demo": cmd_demo, "evaluate": cmd_evaluate, "score": cmd_score, "publish": cmd_publish}


# ---------------------------------------------------------------------- entry point


class Terminated(KeyboardInterrupt):
    """SIGTERM (job schedulers, `timeout`, torchrun stopping its workers), raised in the main thread
    like Ctrl-C so that cleanup runs: without it Python dies at once and `score --output` leaves its
    hidden temporary file behind."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("REWARDKIT_DEBUG") == "1"
    # signal.signal works only in the main thread. Under torchrun the handler is left out: a worker
    # blocked in a collective would run it only when the collective returns, and torchrun's SIGTERM to
    # its workers must stop them at once (its SIGKILL follows only ~30 s later).
    from rewardkit.distributed import is_distributed  # environment only: keeps --help light

    handle_sigterm = threading.current_thread() is threading.main_thread() and not is_distributed()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if handle_sigterm else None
    try:
        return _run(argv, debug)
    finally:
        if handle_sigterm and previous is not None:  # None: a handler installed outside Python, left as is
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str], debug: bool) -> int:
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        args = make_parser().parse_args(argv)
        if args.command is None:
            make_parser().print_help()
            return EXIT_USAGE
        _setup_logging(args.quiet or not _is_main_process())
        return COMMANDS[args.command](args)
    except Terminated as stop:
        sys.stderr.write(" ".join(["rewardkit: terminated (SIGTERM).", *getattr(stop, "__notes__", ())]) + "\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt as stop:
        sys.stderr.write(" ".join(["rewardkit: interrupted.", *getattr(stop, "__notes__", ())]) + "\n")
        return EXIT_INTERRUPTED
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the one place that turns errors into messages
        if debug:
            raise
        command = argv[0] if argv else ""
        sys.stderr.write(_error_paragraph(command, error) + "\n")
        return EXIT_USAGE if isinstance(error, UsageError) else EXIT_ERROR


def _error_paragraph(command: str, error: BaseException) -> str:
    explained = isinstance(error, (CliError, FileNotFoundError)) or _explains_itself(error)
    kind = "" if explained or isinstance(error, ValueError) else f"{type(error).__name__}: "
    message = " ".join(str(error).split()) or type(error).__name__
    text = f"rewardkit {command}: error: {kind}{message}".replace("  ", " ")
    # A usage mistake or a data error already says all there is; a traceback helps only otherwise.
    hint = "" if explained else " (Run again with --debug for the full traceback.)"
    # Never break inside a word: paths and ids must survive copy and paste ("site-packages"); nor
    # inside a location ("line 12", "row 3", "column 'chosen'"), which people search for whole.
    glued = _LOCATION.sub(lambda match: match.group(0).replace(" ", _NO_BREAK), text + hint)
    wrapped = textwrap.fill(glued, width=100, break_on_hyphens=False, break_long_words=False)
    return wrapped.replace(_NO_BREAK, " ")


_NO_BREAK = "\u00a0"  # textwrap splits on ASCII whitespace only
_LOCATION = re.compile(r"\b(?:line|row|column|item|record|field) (?:'[^']*'|\S+)")


# Errors whose message already says what went wrong and what to do: no class-name prefix, no
# --debug hint (a traceback of rewardkit's own code would not help the reader). A check of what the
# user gave raises UserInputError (rewardkit/errors.py); a plain ValueError keeps the hint.
_SELF_EXPLAINING = (("rewardkit.errors", "UserInputError"), ("rewardkit.data_errors", "RewardDataError"),
                    ("rewardkit.publishing", "PublishError"),
                    ("rewardkit.fit", "TrainingDivergedError"), ("rewardkit.scoring", "NonFiniteRewardError"),
                    ("rewardkit.distributed", "RankFailedError"))  # the failing rank prints the real error


def _explains_itself(error: BaseException) -> bool:
    # Looked up in sys.modules, not imported: an error of a class exists only once its module was
    # imported, and importing rewardkit.fit (transformers' Trainer) on an error path costs seconds.
    return any(isinstance(error, cls) for module, name in _SELF_EXPLAINING
               if (cls := getattr(sys.modules.get(module), name, None)) is not None)


if __name__ == "__main__":
    sys.exit(main())
