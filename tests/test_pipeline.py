"""Every stage as DVC runs it (`python -m pipeline.<stage>`), on the committed sample."""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from cvae.presets import merge

REPO = Path(__file__).resolve().parents[1]
SMOKE = {
    "data": {"source": "sample"},
    "model": {"width": 0.125, "g_dim": 16, "z_dim": 4, "rnn_size": 32},
    "train": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "log_every": 1},
    "eval": {"batch_size": 4, "keep": 2, "num_samples": 2},
}


# `python -m pipeline.<stage>`, recording which modules the stage imported (in the run folder's
# `.imports/<stage>.json`), so that tests can hold dvc.yaml's deps to the code each stage runs.
RUN_AND_RECORD = """
import json, runpy, sys
stage, record = sys.argv[1], sys.argv[2]
sys.argv = [stage, *sys.argv[3:]]
try:
    runpy.run_module(stage, run_name="__main__", alter_sys=True)
finally:
    files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
    open(record, "w").write(json.dumps(sorted(f for f in files if f)))
"""


def _run(stage, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    record = Path(cwd) / ".imports" / f"{stage}.json"
    record.parent.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", RUN_AND_RECORD, f"pipeline.{stage}", str(record),
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def stage_code(cwd, stage) -> set[str]:
    """The repository's Python files (of cvae/ and pipeline/, empty ones aside) that the last
    `_run` of `stage` in `cwd` imported, relative to the repository."""
    files = [Path(f) for f in json.loads((Path(cwd) / ".imports" / f"{stage}.json").read_text())]
    ours = [f.relative_to(REPO) for f in files if f.is_absolute() and f.is_relative_to(REPO)]
    return {f.as_posix() for f in ours if f.parts[0] in ("cvae", "pipeline") and _has_code(REPO / f)}


def _has_code(path: Path) -> bool:
    """False for a module that is at most a docstring (an empty package `__init__`)."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
               for node in body)


# Imported by the download stage's generator processes alone, which the record does not see.
GENERATORS = {"cvae/data/sim_push.py", "cvae/data/sim_dance.py"}


def assert_deps_are_the_code_run(cwd, stages, other_tracks):
    """Each stage's Python deps in dvc.yaml are exactly the files it imported, leaving aside the
    other tracks' folders (a stage lists every track's code: which one runs depends on the data)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    elsewhere = tuple(f"cvae/tracks/{track}/" for track in other_tracks)
    for stage in stages:
        listed = {d for d in dvc[stage]["deps"] if d.endswith(".py") and not d.startswith(elsewhere)}
        assert stage_code(cwd, stage) == listed - GENERATORS, stage


def _write_params(tmp_path, override):
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_all_five_stages_on_the_committed_sample(tmp_path):
    _write_params(tmp_path, SMOKE)
    stages = [("download", "--sample", str(REPO / "data" / "bair-sample.tar")),
              ("prepare",), ("train",), ("evaluate",), ("report",)]
    for stage, *args in stages:
        result = _run(stage, tmp_path, *args)
        assert result.returncode == 0, f"{stage} failed:\n{result.stderr[-3000:]}"

    meta = json.loads((tmp_path / "shards" / "meta.json").read_text())
    assert meta["counts"] == {"train": 8, "val": 4, "test": 4}
    metrics = json.loads((tmp_path / "metrics" / "eval.json").read_text())
    assert metrics["sequences"] == 4 and 0 < metrics["psnr"] < 100
    assert 0 < metrics["baseline_psnr"] < 100
    rows = (tmp_path / "logs" / "eval" / "per_frame.tsv").read_text().splitlines()
    assert len(rows) == 1 + 10
    gif = Image.open(tmp_path / "reports" / "prediction.gif")
    assert gif.n_frames == 12
    grid = Image.open(tmp_path / "reports" / "prediction_grid.png")
    assert grid.height > 12 * 64 and grid.width <= 680  # one row per time step
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert f"{metrics['psnr']:.2f}" in summary and f"{metrics['baseline_psnr']:.2f}" in summary
    assert_deps_are_the_code_run(tmp_path, [s for s, *_ in stages], other_tracks=["dance"])

    # Another setting that diverges: training stops with one line, the first run's numbers
    # leave metrics/ (they are not this setting's), and evaluation refuses the checkpoint the
    # first run left (it would report that run's scores as this one's).
    _write_params(tmp_path, merge(SMOKE, {"train": {"lr": 1e6}}))
    result = _run("train", tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: training diverged at step" in result.stderr and "train.lr 1e+06" in result.stderr
    assert not list((tmp_path / "metrics").iterdir())
    result = _run("evaluate", tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "models/last.pt was trained with other settings" in result.stderr


@pytest.mark.parametrize("override, message", [
    ({"train": {"kl": {"type": "Sideways"}}}, "train.kl.type: 'Sideways' is not one of"),
    ({"model": {"depth": 3}}, "unknown key model.depth"),
])
def test_a_bad_params_file_stops_a_stage_at_once(tmp_path, override, message):
    _write_params(tmp_path, override)
    result = _run("train", tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_lab_preset_prints_checked_dvc_overrides(tmp_path):
    _write_params(tmp_path, {})
    result = _run("preset", tmp_path, "bair-lab")
    assert result.returncode == 0, result.stderr
    overrides = result.stdout.split()
    assert overrides[::2] == ["-S"] * (len(overrides) // 2)
    assert {"data.source=bair", "model.width=1.0", "train.n_future=10"} <= set(overrides[1::2])

    _write_params(tmp_path, {"data": {"seq_len": 8}})  # too short for 2 + 10 frames
    result = _run("preset", tmp_path, "bair-lab")
    assert result.returncode != 0 and "train.n_future" in result.stderr


def test_dvc_repro_fails_on_a_typo_in_a_key_no_stage_lists(tmp_path):
    """The `check-params` stage depends on the whole params.yaml: `dvc repro` fails on a typo
    even where no other stage would re-run."""
    for folder in ("cvae", "pipeline"):
        shutil.copytree(REPO / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "check-params": stages["check-params"]}}))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    first = subprocess.run([*dvc, "repro"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr

    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("  num_train:", "  num_trian:"))
    typo = subprocess.run([*dvc, "repro"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert typo.returncode != 0
    assert "unknown key data.num_trian" in typo.stdout + typo.stderr
