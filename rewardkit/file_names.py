"""Names of the files rewardkit writes into, and reads from, model and checkpoint folders, and the
one lenient way to read such a record (`read_record`).

One module, importing nothing but json, so that light modules (publishing, evaluation, scoring) and
heavy ones (fit, resume, lora: they import the Trainer or PEFT) spell each name once; several of them
used to repeat a name, "not imported, to keep this module light"."""

import json
from pathlib import Path

SUMMARY_FILE = "training_summary.json"  # `rewardkit train`'s record of the run, beside the final model
CHECKPOINT_DATA_FILE = "training_data.json"  # the data a checkpoint-N/ was trained on (no summary there)
TRAINER_STATE_FILE = "trainer_state.json"  # transformers' own, in every checkpoint-N/
ADAPTER_DIR = "adapter"  # a LoRA run's adapter, beside its merged model
ADAPTER_CONFIG_FILE = "adapter_config.json"  # PEFT's
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # PEFT's
REWARD_CONFIG_FILE = "reward_config.json"  # not config.json: transformers would take an adapter folder for a full model

#: Rows read, encoded and scored at a time by `score --data` and `evaluate`: one length-sorted
#: scoring run over them, memory bounded whatever the file's size.
ROWS_PER_CHUNK = 2048


def read_record(path: Path) -> dict:
    """The JSON object in `path`; {} when there is no such file, or it holds no readable object (a
    hand-edited or half-written record is read as no record, not as an error): how a training
    summary, a checkpoint's data record or its Trainer state is read where they only inform."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
