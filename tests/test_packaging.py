"""pyproject.toml: the dependency floors are versions rewardkit runs on, not older ones that pip
would keep when they are already installed (and that then crash at the first training step)."""

import inspect
import re
from pathlib import Path

import pytest
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _floors() -> dict[str, list[Version]]:
    """Every `name>=X` requirement of the project and its extras, by package name."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    floors: dict[str, list[Version]] = {}
    for requirement in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
        if match:
            floors.setdefault(match[1].lower(), []).append(Version(match[2]))
    return floors


def test_dependency_floors_are_versions_the_code_runs_on():
    """transformers>=4.48 let 4.57 (and 5.0-5.2) stay installed: `rewardkit train` then stopped at the
    first step with "Trainer.create_optimizer() takes 1 positional argument but 2 were given" (the
    `model` argument came in 5.3). peft>=0.13 let 0.13 stay: `--use-lora` stopped with "LoraConfig got
    an unexpected keyword argument 'exclude_modules'" (0.14). The features are checked here too, so the
    floor's reason is the code's."""
    from peft import LoraConfig
    from transformers import Trainer

    assert "model" in inspect.signature(Trainer.create_optimizer).parameters
    assert "exclude_modules" in inspect.signature(LoraConfig).parameters
    floors = _floors()
    assert min(floors["transformers"]) >= Version("5.3")
    assert min(floors["peft"]) >= Version("0.14")
