"""Running `rewardkit train` and `rewardkit score` as several processes (torchrun, `accelerate launch`).

Two jobs need care when N processes run the same command:

* Data preparation (reading, validating, tokenizing) should happen once per node, not N times: N
  ranks tokenizing at once fight for the same cores and hold N copies in memory while they do it.
  The local main process of each node prepares the features and writes them to a node-local cache
  file (JSON); the other ranks wait at a barrier and read that file. Chosen over "rank 0 prepares
  and broadcasts" because it needs no shared filesystem and no collective big enough to hold the
  data set, and over `datasets.map` caching because our features are plain lists, not Arrow tables.
  A failure on the main process is passed to every rank, so all of them stop with the error instead
  of waiting at the barrier until the distributed timeout.
* Scoring a file: each rank scores every N-th row (interleaved, so long and short rows spread
  evenly) into a part file beside the output; after a barrier rank 0 merges the parts by row number
  into the one output file, in input order, and removes them. With several nodes the output folder
  must be on a filesystem every node sees.

Everything here is a no-op in a single process: `world_size()` is 1 and nothing is launched.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

CACHE_ENV = "REWARDKIT_CACHE_DIR"
DEFAULT_TIMEOUT = timedelta(minutes=30)


# --------------------------------------------------------------------------------------------------
# Where am I? (read from the launcher's environment, valid before any process group exists)
# --------------------------------------------------------------------------------------------------


def world_size() -> int:
    """Number of processes the launcher started (1 when not launched by torchrun/accelerate)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes final outputs and prints results."""
    return rank() == 0


def default_device() -> str:
    """This rank's device: its own GPU (cuda:LOCAL_RANK) when there are GPUs, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{local_rank() % torch.cuda.device_count()}"
    return "cpu"


# --------------------------------------------------------------------------------------------------
# Process group and synchronisation
# --------------------------------------------------------------------------------------------------


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[None]:
    """A process group for the launched ranks (gloo on CPU, nccl with GPUs), destroyed on exit;
    does nothing in a single process or when one already exists (e.g. made by the Trainer)."""
    import torch
    import torch.distributed as dist

    if not is_distributed() or _group_ready():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timeout)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _group_ready():
        import torch.distributed as dist

        dist.barrier()


def _all_reduce(value: float, dtype: Any, op: str) -> float:
    """`value` reduced over every rank with `op` ("MIN", "SUM"), through a one-element tensor of
    `dtype` (on the GPU for NCCL, which reduces only CUDA tensors). Needs a process group."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=dtype)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.item()


def all_succeeded(ok: bool) -> bool:
    """True when `ok` holds on every rank. A collective that every rank reaches even after a local
    failure, so a failure on one rank stops all of them instead of leaving them at a barrier."""
    if not _group_ready():
        return ok
    import torch

    return bool(_all_reduce(1 if ok else 0, torch.int64, "MIN"))


def all_sum(value: int) -> int:
    """Sum of `value` over every rank."""
    if not _group_ready():
        return value
    import torch

    return int(_all_reduce(value, torch.int64, "SUM"))


def all_mean(value: float) -> float:
    """Mean of `value` over every rank (float64)."""
    if not _group_ready():
        return value
    import torch
    import torch.distributed as dist

    return float(_all_reduce(value, torch.float64, "SUM")) / dist.get_world_size()


class RankFailedError(RuntimeError):
    """Another rank failed; its own message is in that rank's log (rank 0's is shown first)."""


# --------------------------------------------------------------------------------------------------
# Once per node: prepare on the local main process, share through a node-local cache file
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Node-local folder for prepared features: $REWARDKIT_CACHE_DIR, else the system temp folder."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "rewardkit-cache")


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of everything the prepared value depends on."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def file_fingerprint(source: str | os.PathLike | None) -> Any:
    """What identifies the content of a data source cheaply: (path, size, mtime) of each file of a
    file or folder; the text itself for anything else (a Hub dataset id)."""
    if source is None:
        return None
    path = Path(source).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        return str(source)
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def once_per_node(build: Callable[[], _T], *, key: str, encode: Callable[[_T], Any],
                  decode: Callable[[Any], _T], what: str = "data") -> _T:
    """`build()` on the local main process of each node; the other ranks load its result.

    Args:
        build: makes the value (e.g. reads and tokenizes the data set).
        key: `cache_key(...)` of everything the value depends on (names the cache file).
        encode / decode: value <-> JSON-serialisable form.

    In a single process `build()` simply runs. The cache file is removed once every rank has read it.

    Raises:
        Whatever `build()` raised, on the process that ran it; `RankFailedError` on the others.
    """
    if not is_distributed():
        return build()
    if not _group_ready():  # launched, but nobody made a process group: no way to wait for each other
        logger.warning("No process group yet: every rank prepares the %s itself.", what)
        return build()
    path = cache_dir() / f"{what}-{key}.json"
    is_local_main = local_rank() == 0
    value: _T | None = None
    error: BaseException | None = None
    if is_local_main:
        try:
            value = build()
            _write_atomic(path, json.dumps(encode(value), separators=(",", ":")))
            logger.info("Prepared %s once for this node; shared with the other ranks through %s.", what, path)
        except Exception as caught:  # every rank must reach the collective below
            error = caught
    if not all_succeeded(error is None):
        if error is not None:
            raise error
        raise RankFailedError(f"Preparing the {what} failed on another process (see rank 0's message).")
    if not is_local_main:
        value = decode(json.loads(path.read_text(encoding="utf-8")))
    barrier()  # every rank has read the file
    if is_local_main:
        path.unlink(missing_ok=True)
    return value


# --------------------------------------------------------------------------------------------------
# Sharded scoring of a file
# --------------------------------------------------------------------------------------------------


def part_path(output: str | os.PathLike, index: int, count: int) -> Path:
    """Part file of rank `index` of `count`, hidden beside the final output."""
    final = Path(output).expanduser()
    return final.with_name(f".{final.name}.part-{index:05d}-of-{count:05d}")


def _part_lines(path: Path) -> Iterator[tuple[tuple[str, int], str]]:
    """(position key, line): (file name, row) orders lines as the input was read, since a folder's
    files are read in name order and rows counted per file; single-file lines have no "file"."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            yield (record.get("file", ""), record["row"]), line


def merge_parts(parts: list[Path], output: str | os.PathLike) -> int:
    """Merge part files (each in input order) into `output` by (file, row number); returns the
    number of lines. Written to a temporary sibling and renamed, so `output` is never half-written."""
    final = Path(output).expanduser()
    tmp = final.with_name(f".{final.name}.tmp-merge-{os.getpid()}")
    written, previous = 0, None
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row, line in heapq.merge(*(_part_lines(p) for p in parts), key=lambda item: item[0]):
                if previous is not None and row <= previous:
                    where = f"{row[0]} row {row[1]}" if row[0] else f"Row {row[1]}"
                    raise RuntimeError(f"{where} appears twice or out of order in the part files {parts}.")
                handle.write(line)
                previous, written = row, written + 1
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def score_file_distributed(scorer: Any, data: str | os.PathLike, output: str | os.PathLike,
                           **score_kwargs: Any) -> dict[str, Any]:
    """`rewardkit.score_files.score_file` split over the launched ranks; one output file in input order.

    Every rank reads the whole input (reading is cheap next to scoring; it keeps the row numbering
    and invalid-row decisions identical everywhere) and scores rows i with i % world_size == rank.
    Call it on every rank, inside `process_group()`.

    Returns:
        {"rows", "skipped", "output", "processes", "truncation"}: totals over all ranks (the same on
        every rank); rank 0 logs the truncation once, for the whole file.
    """
    from rewardkit.features import TruncationStats
    from rewardkit.score_files import check_output_name, score_file
    from rewardkit.scoring import log_truncation

    check_output_name(output)  # the same on every rank: all stop before any collective
    count, index = world_size(), rank()
    parts = [part_path(output, i, count) for i in range(count)]
    error: BaseException | None = None
    mine: dict[str, Any] = {"rows": 0, "skipped": 0, "truncation": asdict(TruncationStats())}
    try:
        mine = score_file(scorer, data, parts[index], shard=(index, count), **score_kwargs)
    except Exception as caught:  # every rank must reach the collective below
        error = caught
    try:
        if not all_succeeded(error is None):
            if error is not None:
                raise error
            raise RankFailedError("Scoring failed on another process (see its message); no output was written.")
        total = all_sum(int(mine["rows"]))
        cut = TruncationStats(**{key: all_sum(int(value)) for key, value in mine["truncation"].items()})
        _merge_on_main(parts, output, total)
    finally:
        _remove_part(parts[index])
    if is_main_process():
        log_truncation(cut, scorer.max_length)
    logger.info("Scored %d rows with %d processes into %s.", total, count, output)
    return {"rows": total, "skipped": int(mine["skipped"]), "output": str(Path(output).expanduser()),
            "processes": count, "truncation": asdict(cut)}


def _merge_on_main(parts: list[Path], output: str | os.PathLike, total: int) -> None:
    """Rank 0 merges; the others wait for its verdict (a collective, not a barrier, so a failed
    merge stops every rank at once)."""
    error: BaseException | None = None
    if is_main_process():
        try:
            merged = merge_parts(parts, output)
            if merged != total:
                raise RuntimeError(f"Merged {merged} rows but the ranks scored {total}.")
        except Exception as caught:
            error = caught
    if not all_succeeded(error is None):
        if error is not None:
            raise error
        raise RankFailedError("Merging the scored parts failed on rank 0 (see its message).")


def _remove_part(path: Path) -> None:
    path.unlink(missing_ok=True)
