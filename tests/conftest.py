"""Test-wide settings: offline always, deterministic, no plotting window."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests import helpers  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def minilm_path():
    return helpers.minilm_path()


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged MiniLM tokenizer (BERT uncased WordPiece); tiny models use its vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(helpers.minilm_path())


def _torch_threads(count: int):
    """torch with `count` intra-op threads for the fixture's scope, then the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second OpenMP thread costs more in synchronisation than it saves, and a
    lot more when other processes share the CPU. Restores the thread count afterwards."""
    yield from _torch_threads(1)


@pytest.fixture
def two_threads():
    """torch with 2 intra-op threads, so scoring and training take their two-worker paths
    (rewardkit/cpu_workers.py) whatever the machine or the module's `one_thread`."""
    yield from _torch_threads(2)
