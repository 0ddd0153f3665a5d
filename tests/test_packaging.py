"""pyproject.toml: the dependency floors are versions rewardkit runs on, not older ones that pip
would keep when they are already installed (and that then crash at the first training step); the
wheel holds what the installed code reads, the sdist what its tests read."""

import inspect
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
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


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[list[str], Path]:
    """The tracked files, and a folder with the sdist and wheel built from a copy of just them (no
    caches, no egg-info left in the checkout)."""
    root = PYPROJECT.parent
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = listed.stdout.splitlines()
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for name in files:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, source / name)  # follows the model_card.md link, as git archive would not
    build = f"from setuptools import build_meta as b; b.build_sdist({str(dist)!r}); b.build_wheel({str(dist)!r})"
    result = subprocess.run([sys.executable, "-c", build], cwd=source, check=True, capture_output=True, text=True)
    (dist / "build.log").write_text(result.stdout + result.stderr)
    return files, dist


def test_the_build_uses_nothing_setuptools_has_deprecated(built):
    """`license = { text = ... }` warned "By 2027-Feb-18, you need to update your project ... or your
    builds will no longer be supported"; the SPDX string it asks for is in the wheel's metadata."""
    _, dist = built
    assert "SetuptoolsDeprecationWarning" not in (dist / "build.log").read_text()
    with zipfile.ZipFile(next(dist.glob("*.whl"))) as wheel:
        metadata = wheel.read(next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")))
    assert "License-Expression: Apache-2.0" in metadata.decode().splitlines()


def test_sdist_carries_everything_its_tests_read(built):
    """setuptools alone put tests/test_*.py in the sdist but not tests/helpers.py, conftest.py or
    tests/data/ (nor benchmarks/ and the notebook they check): the sdist's tests stopped at
    `from tests import helpers`. MANIFEST.in grafts them."""
    files, dist = built
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {name for name in files if name.startswith(("tests/", "benchmarks/", "train_notebook/"))}
    assert wanted - names == set()
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_holds_what_the_installed_code_reads_and_no_tests(built):
    """The Hub files (copied beside every saved model), the card template, the demo data and the
    license; nothing of tests/, benchmarks/ or the notebook."""
    _, dist = built
    with zipfile.ZipFile(next(dist.glob("*.whl"))) as wheel:
        names = set(wheel.namelist())
    needed = {"configuration_reward.py", "modeling_reward.py", "rewardkit/templates/model_card.md",
              "rewardkit/demo_data/qa.jsonl", "rewardkit/py.typed"}
    assert needed - names == set()
    assert [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "train_notebook/"))]
