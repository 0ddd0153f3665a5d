"""The training notebook: runs end to end (smoke mode, as CI does), and the committed copy shows a full run."""

import os
from pathlib import Path

import nbformat
import pytest

from tests import helpers

NOTEBOOK = helpers.REPO_ROOT / "train_notebook" / "train_reward_model.ipynb"
pytestmark = pytest.mark.integration


def test_notebook_runs_in_smoke_mode(tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env_before = dict(os.environ)
    os.environ.update({"NOTEBOOK_SMOKE": "1", "NOTEBOOK_WORKDIR": str(tmp_path / "run"), "HF_HUB_OFFLINE": "1",
                       "HF_MODULES_CACHE": str(tmp_path / "modules"), "MPLBACKEND": "Agg"})
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    images = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5
    assert (tmp_path / "run" / "hub-folder" / "model.safetensors").exists()


def test_committed_notebook_shows_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # plots visible on GitHub and the Hub
    text = "".join(o.get("text", "") for o in outputs)
    assert "Full run." in text and "Smoke run" not in text
    assert all(cell.execution_count is not None for cell in notebook.cells if cell.cell_type == "code")


def test_notebook_calls_the_library_not_its_own_model():
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    for forbidden in ("nn.Module", "class ", "torch.optim", "loss.backward", "logsigmoid"):
        assert forbidden not in source, forbidden
    assert Path(NOTEBOOK).stat().st_size < 3_000_000
