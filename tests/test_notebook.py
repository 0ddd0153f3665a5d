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
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "Smoke run" in text  # NOTEBOOK_SMOKE reached the kernel: a full run here would take minutes


def test_committed_notebook_shows_a_full_run():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # plots visible on GitHub and the Hub
    text = "".join(o.get("text", "") for o in outputs)
    assert "Full run." in text and "Smoke run" not in text
    # Run top to bottom in one kernel: a cell edited and run again alone has a later count than its neighbours,
    # and its stored output no longer follows from the cells above it.
    counts = [cell.execution_count for cell in notebook.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts


def test_notebook_calls_the_library_not_its_own_model():
    source = "\n".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    for forbidden in ("nn.Module", "class ", "torch.optim", "loss.backward", "logsigmoid"):
        assert forbidden not in source, forbidden
    assert Path(NOTEBOOK).stat().st_size < 3_000_000


def _code_cell(marker: str) -> str:
    """The source of the one code cell that contains `marker`."""
    cells = [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, marker
    return cells[0]


@pytest.mark.parametrize("fitted", [0.001, None], ids=["search-bound", "all-margins-0"])
def test_notebook_calibration_cell_says_when_no_temperature_was_written(fitted, tmp_path, capsys, monkeypatch):
    """`evaluate_model(calibrate=True)` writes no T when the fit hits a search bound (perfectly separated
    calibration pairs: a longer run can get there) or every margin is 0; the cell printed "fitted T = 0.001"
    for a T the model never got, or failed formatting None."""
    monkeypatch.setenv("NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    namespace: dict = {}
    exec(_code_cell("SMOKE = "), namespace)  # the imports and WORK

    def fake_evaluate_model(model, data, calibrate=False, **kwargs):
        if calibrate:
            return {"temperature_written": False, "temperature_fitted": fitted, "ece_before": 0.012,
                    "ece_after": 0.012}
        return {"n": 160, "accuracy": 1.0, "mean_margin": 9.0, "ece": 0.012, "brier": 0.001, "temperature": 1.0}

    namespace.update(evaluate_model=fake_evaluate_model, display=lambda _: None,
                     files={"pairs_calibration": "c.jsonl", "pairs_test": "t.jsonl"})
    capsys.readouterr()
    exec(_code_cell("calibrate=True"), namespace)
    printed = capsys.readouterr().out
    assert "no T fitted" in printed and "T = 1" in printed, printed
    assert "fitted T =" not in printed
