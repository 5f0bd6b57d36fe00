"""What DVC sees of the download stage: a change to any `data.bair` value, or to any file in the
course's folders, re-runs it.

Each test builds a tiny DVC project (git + dvc) whose one stage has the real download stage's
params and data deps, copied from dvc.yaml with params.yaml and the placeholder folders, and a
trivial command that counts its runs and copies params.yaml into its output."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

REPO = Path(__file__).resolve().parents[1]
COMMAND = "echo run >> runs.log && mkdir -p raw && cp params.yaml raw/"


@pytest.fixture
def project(tmp_path, monkeypatch):
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["download"]
    data_deps = [dep for dep in stage["deps"] if not dep.endswith(".py")]
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"download": {
        "cmd": COMMAND, "deps": data_deps, "params": stage["params"], "outs": ["raw"]}}}))
    shutil.copy(REPO / "params.yaml", root)
    params = yaml.safe_load((REPO / "params.yaml").read_text())["data"]
    for folder in (params["bair_png"]["root"], params["dance"]["root"]):  # the placeholders
        shutil.copytree(REPO / folder, root / folder)
    (root / "data").mkdir()
    (root / "data" / "bair-sample.tar").write_bytes(b"a stand-in")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    Repo.init(str(root)).close()
    monkeypatch.chdir(root)  # DVC's API, as its command line, works in the current folder
    return root


def _repro(root: Path) -> None:
    with Repo(str(root)) as repo:
        repo.reproduce()


def _status(root: Path) -> dict:
    with Repo(str(root)) as repo:
        return repo.status()


def _runs(root: Path) -> int:
    return len((root / "runs.log").read_text().splitlines())


def _set(root: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"][section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_changing_any_data_bair_value_reruns_download(project):
    """DVC's run cache leaves keys named `size` out of a stage's key: such a change restored an
    older run's outputs instead of running the stage."""
    _repro(project)
    bair = yaml.safe_load((project / "params.yaml").read_text())["data"]["bair"]
    for runs, (key, value) in enumerate(bair.items(), start=2):
        _set(project, "bair", key, value + 1 if isinstance(value, int) else f"{value}-changed")
        assert "download" in _status(project), key
        _repro(project)
        assert _runs(project) == runs, f"data.bair.{key}: download did not run"
        assert (project / "raw" / "params.yaml").read_text() == \
            (project / "params.yaml").read_text(), f"data.bair.{key}: an older raw/ was restored"


def _modify(folder: Path) -> None:
    (folder / "train" / "0.png").write_bytes(b"another image")


def _add(folder: Path) -> None:
    (folder / "train" / "1.png").write_bytes(b"a new image")


def _delete(folder: Path) -> None:
    (folder / "train" / "0.png").unlink()


@pytest.mark.parametrize("where", ["placeholder", "outside the project"])
@pytest.mark.parametrize("section", ["bair_png", "dance"])
def test_a_changed_file_in_a_course_folder_reruns_download(project, tmp_path, section, where):
    root = yaml.safe_load((project / "params.yaml").read_text())["data"][section]["root"]
    folder = project / root
    if where != "placeholder":
        folder = tmp_path / "elsewhere" / root
        _set(project, section, "root", str(folder))
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "0.png").write_bytes(b"an image")
    _repro(project)
    assert _status(project) == {}
    for runs, change in enumerate([_modify, _add, _delete], start=2):
        change(folder)
        assert "download" in _status(project), change.__name__
        _repro(project)
        assert _runs(project) == runs and _status(project) == {}, change.__name__
