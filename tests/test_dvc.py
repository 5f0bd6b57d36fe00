"""What DVC sees of the download stage: a change to any `data.bair` value, or to any file in the
course's folders, re-runs it; and what `dvc exp show` shows of a queued run whose worker is
killed.

Each test builds a tiny DVC project (git + dvc) whose one stage has the real download stage's
params and data deps, copied from dvc.yaml with params.yaml and the placeholder folders, and a
trivial command that counts its runs and copies params.yaml into its output."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from cvae.compare import _experiments, exp_show

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


# --- a queued experiment whose worker is killed --------------------------------------------------

PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".dvc", "pipeline", "cvae", "data", "data.dvc",
                 "bair_png", "lab4_dance")
BASELINE = {"metrics/train.json": {"epochs": 999, "best_val_psnr": 99.9},
            "metrics/eval.json": {"psnr": 99.9, "ssim": 0.999}}  # numbers no run here makes


def _queue_project(root: Path) -> Path:
    """The project's pipeline in a new git repository, with tiny settings on the committed
    sample, and metrics committed that no run of it can produce (the baseline's)."""
    root.mkdir()
    for name in PROJECT_FILES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = "sample"
    params["model"].update(g_dim=16, z_dim=4, rnn_size=16)
    params["train"].update(epochs=500, steps_per_epoch=1, batch_size=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for path, metrics in BASELINE.items():
        (root / path).parent.mkdir(exist_ok=True)
        (root / path).write_text(json.dumps(metrics))
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base"]):
        subprocess.run(command, cwd=root, check=True)
    return root


def _dvc(root: Path, *args) -> tuple[int, str]:
    """(exit status, output) of `dvc args` in `root`. The output goes through a file: the
    workers that `dvc queue start` leaves running would hold a pipe open."""
    with open(root.parent / "dvc.out", "w+") as out:
        code = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, stdout=out,
                              stderr=subprocess.STDOUT, timeout=120).returncode
        out.seek(0)
        return code, out.read()


def _experiment(root: Path, name: str) -> dict | None:
    """The experiment `name` in `dvc exp show --json`: state and metrics (per file)."""
    for exp in _experiments(exp_show([], root)):
        if exp["experiment"] == name:
            return exp
    return None


def _kill_processes_under(root: Path) -> int:
    """kill -9 every process whose working folder is in `root`: the queue's worker and what it
    started (the experiment runs in a folder under .dvc/tmp/exps)."""
    killed = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(root):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):
            continue  # gone, or not ours to read
    return killed


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds processes in /proc")
def test_a_killed_queued_experiment_shows_only_its_own_numbers(tmp_path):
    """`dvc exp run --queue`, `dvc queue start`, kill -9 the worker mid-training: the running
    experiment's row holds its own partial numbers, never the baseline commit's, and the
    commands the README gives clear it."""
    root = _queue_project(tmp_path / "project")
    assert _dvc(root, "exp", "run", "--queue", "-n", "killed", "-S", "train.lr=0.001")[0] == 0
    assert _dvc(root, "queue", "start", "-j", "1")[0] == 0
    try:
        deadline, exp = time.monotonic() + 240, None
        while time.monotonic() < deadline:
            exp = _experiment(root, "killed")
            # (Until its train stage starts, the row shows the files the run started from.)
            if exp and 2 <= (exp["metrics"].get("metrics/train.json") or {}).get("epochs", 0) < 999:
                break
            time.sleep(1)
        else:
            pytest.fail(f"the queued experiment did not train 2 epochs: {exp}")
    finally:
        assert _kill_processes_under(root) >= 1

    exp = _experiment(root, "killed")
    train = exp["metrics"]["metrics/train.json"]
    assert exp["state"] == "running" and 2 <= train["epochs"] < 500
    assert train["best_val_psnr"] != 99.9 and not exp["metrics"].get("metrics/eval.json")

    assert _dvc(root, "queue", "kill", "killed")[0] == 0
    status = _dvc(root, "queue", "status")[1]
    assert "Worker status: 0 active" in status
    assert [line.split()[-1] for line in status.splitlines() if " killed " in line] == ["Failed"]
    assert _dvc(root, "queue", "remove", "--failed")[0] == 0
    assert _experiment(root, "killed") is None
