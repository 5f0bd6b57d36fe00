"""`python -m pipeline.compare` on experiments it makes: a tiny DVC project whose one stage
writes the metrics and training logs of a real run (arithmetic of the seed and the setting, no
training), swept over two KL types x two seeds with `dvc exp run --queue` as the README says;
and the grouping and the rule on `dvc exp show --json` rows written by hand."""
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from cvae import compare
from cvae.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# The stage: test PSNR and final KL set the two KL types clearly apart, SSIM differs by less
# than the seed spread; seed 9 fails, as a real run can.
STAGE = r'''
import json, math, os, yaml
params = yaml.safe_load(open("params.yaml"))
seed, kind = params["train"]["seed"], params["train"]["kl"]["type"]
assert seed != 9, "seed 9 fails"
shift = {"Monotonic": 0.0, "None": 1.0}[kind]
os.makedirs("metrics", exist_ok=True)
os.makedirs("logs/train", exist_ok=True)
psnr = 25 + shift + 0.01 * seed
json.dump({"psnr": psnr, "psnr_best": psnr + 0.05 * seed,
           "ssim": 0.8 + 0.01 * seed + 0.004 * shift, "baseline_psnr": 21.0,
           "num_samples": 3}, open("metrics/eval.json", "w"))
json.dump({"epochs": 4, "steps": 12, "final_kl": shift + 0.1 * seed},
          open("metrics/train.json", "w"))
with open("logs/train/epochs.tsv", "w") as f:
    f.write("epoch\tstep\tloss\tmse\tkl\tbeta\ttfr\tval_psnr\tval_ssim\tval_baseline_psnr\n")
    for e in range(4):
        f.write(f"{e}\t{3 * e + 3}\t1\t1\t1\t0\t1\t{20 + e + shift + 0.2 * seed}\t0.7\t21\n")
with open("logs/train/steps.tsv", "w") as f:
    f.write("step\tepoch\tloss\tmse\tkl\tbeta\ttfr\tteacher_forced\tsec_per_step\n")
    for step in range(1, 13):
        e = (step - 1) // 3
        beta = 1e-4 if kind == "None" else 1e-4 * min(1, e / 2)
        kl = (1 + seed + shift) * math.exp(-step / 4) + 0.01
        f.write(f"{step}\t{e}\t{kl}\t1\t{kl}\t{beta}\t{max(0, 1 - 0.25 * e)}\t1\t0.1\n")
'''


# `dvc exp run` commits; its queue worker inherits the identity from `dvc queue start`.
IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def _dvc(root: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                            text=True, env={**os.environ, **IDENTITY})
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait_for_queue(root: Path, timeout: float = 240) -> None:
    start = time.monotonic()
    while any(word in _dvc(root, "queue", "status") for word in ("Queued", "Running")):
        assert time.monotonic() - start < timeout, _dvc(root, "queue", "status")
        time.sleep(2)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The project after the README's sweep (2 KL types x seeds 1, 2) and a failing run."""
    root = tmp_path_factory.mktemp("project")
    (root / "stage.py").write_text(STAGE)
    (root / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"seed": 0, "kl": {"type": "Monotonic", "beta_max": 1e-4}},
         "eval": {"num_samples": 3}}))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["train", "eval"],
        "outs": [{"logs/train/epochs.tsv": {"cache": False}},
                 {"logs/train/steps.tsv": {"cache": False}}],
        "metrics": [{"metrics/eval.json": {"cache": False}},
                    {"metrics/train.json": {"cache": False}}]}}}))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for key, value in (("user.name", "test"), ("user.email", "test@example.com")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    _dvc(root, "init", "-q")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "tiny project"], cwd=root, check=True)
    _dvc(root, "exp", "run", "--queue", "-S", "train.kl.type=Monotonic,None",
         "-S", "train.seed=1,2")
    _dvc(root, "exp", "run", "--queue", "-S", "train.seed=9")
    _dvc(root, "queue", "start", "-j", "1")
    _wait_for_queue(root)
    return root


def _experiments(root: Path) -> pd.DataFrame:
    """What each experiment's commit holds, read with git alone (not with the code tested)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.split()
    rows = []
    for ref in refs:
        def show(path):
            return subprocess.run(["git", "show", f"{ref}:{path}"], cwd=root, capture_output=True,
                                  text=True).stdout
        params = yaml.safe_load(show("params.yaml"))["train"]
        if show("metrics/eval.json"):
            rows.append({"type": params["kl"]["type"], "seed": params["seed"],
                         **json.loads(show("metrics/eval.json")),
                         **json.loads(show("metrics/train.json"))})
    return pd.DataFrame(rows)


def test_compare_command_on_a_swept_project(swept, tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline.compare", "--out", str(tmp_path)],
                            cwd=swept, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    summary = pd.read_csv(tmp_path / "compare.tsv", sep="\t", index_col="#",
                          keep_default_na=False)  # "None" is a KL type here
    table = (tmp_path / "compare.md").read_text()
    assert table in result.stdout

    # One row per setting: the sweep's two KL types, each with both seeds; the failed run
    # (seed 9, the committed KL type) is named, not counted.
    assert list(summary["train.kl.type"]) == ["Monotonic", "None"]
    assert list(summary["n"]) == [2, 2] and list(summary["seeds"]) == ["1, 2", "1, 2"]
    assert "1 failed" in table and "train.seed" not in table.splitlines()[0]
    runs = _experiments(swept)
    assert len(runs) == 4
    for k, kind in zip(summary.index, summary["train.kl.type"]):
        mine = runs[runs["type"] == kind]
        for key in ("psnr", "psnr_best", "ssim", "final_kl", "baseline_psnr"):
            assert summary.at[k, f"{key}_mean"] == pytest.approx(statistics.mean(mine[key]))
            assert summary.at[k, f"{key}_sd"] == pytest.approx(statistics.stdev(mine[key]),
                                                               abs=1e-12)
    row = next(line for line in table.splitlines() if line.split("|")[1:2] == ["   1 "])
    assert "25.015 ± 0.007" in row and "0.8150 ± 0.0071" in row and "21.000 ± 0.000" in row

    # The rule: PSNR and KL apart by far more than the spread, SSIM by less (0.004 < 2 x 0.0071).
    assert "- test PSNR: #2 − #1 = +1.000 dB" in table
    assert "- final KL: #2 − #1 = +1.00 nats" in table
    assert "- SSIM: none" in table
    assert compare.RULE in table

    with Image.open(tmp_path / "compare.png") as figure:
        assert figure.width == 900 and 600 <= figure.height <= 800

    narrow = subprocess.run([sys.executable, "-m", "pipeline.compare", "--terminal", "--out",
                             str(tmp_path)], cwd=swept, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert narrow.returncode == 0, narrow.stderr
    *table, wrote = narrow.stdout.splitlines()  # the last line names the files written
    assert max(map(len, table)) <= 100 and wrote.startswith("wrote ")
    assert narrow.stdout.splitlines()[1].split()[:4] == ["1", "Monotonic", "2", "25.02"]


def test_readme_sweep_crosses_both_lists(swept):
    runs = _experiments(swept)
    assert sorted(zip(runs["type"], runs["seed"])) == [
        ("Monotonic", 1), ("Monotonic", 2), ("None", 1), ("None", 2)]


# --- the grouping and the rule, on `dvc exp show --json` rows written by hand ---------------------

def _exp(name, params, psnr=None, state=None, time="2025-01-01T00:00:00"):
    metrics = ({"metrics/eval.json": {"data": {"psnr": psnr, "ssim": 0.8}},
                "metrics/train.json": {"data": {"final_kl": 0.1}}} if psnr is not None else
               {"metrics/eval.json": {"error": {"type": "FileNotFoundError", "msg": "missing"}}})
    rev = {"rev": hashlib.sha1(name.encode()).hexdigest(), "name": name, "error": None,
           "data": {"timestamp": time, "params": {"params.yaml": {"data": params}},
                    "metrics": metrics}}
    return {"name": name, "revs": [rev],
            "executor": {"state": state, "name": "dvc-task"} if state else None}


def _shown(*experiments):
    return [{"rev": "workspace", "name": None, "experiments": None,
             "data": {"params": {}, "metrics": {}}},
            {"rev": "a" * 40, "name": "main", "experiments": list(experiments)}]


def _params(seed, prior="fixed", kl="Monotonic", epochs=2):
    return {"model": {"prior": prior, "levels": 1},
            "train": {"seed": seed, "epochs": epochs, "kl": {"type": kl}}}


def test_settings_are_the_params_that_differ_for_any_param():
    runs = compare.read_runs(_shown(
        _exp("a", _params(1, "fixed", "None"), 26.0), _exp("b", _params(2, "fixed", "None"), 26.2),
        _exp("c", _params(1, "learned", "None"), 27.0),
        _exp("d", _params(1, "learned", "Cyclical"), 27.5),
        _exp("q", _params(3, "learned", "Cyclical"), state="queued"),
        _exp("r", _params(4, "learned", "Cyclical"), state="running"),
        _exp("f", _params(5, "learned", "Cyclical"), state="failed"),
        _exp("old", _params(2, "fixed", "None"), 20.0, time="2024-01-01T00:00:00")))
    assert runs.params == ["model.prior", "train.kl.type"]  # not the seed, not the constant ones
    summary = compare.summarise(runs)
    assert list(summary[["model.prior", "train.kl.type", "n"]].itertuples(index=False)) == [
        ("fixed", "None", 2), ("learned", "Cyclical", 1), ("learned", "None", 1)]
    # "old" repeats setting 1's seed 2: the newer run counts.
    assert summary.at[1, "psnr_mean"] == pytest.approx(26.1)
    notes = " ".join(runs.notes)
    for note in ("1 queued", ": q", "1 still running: r", "1 failed", ": f",
                 "newer experiment: old"):
        assert note in notes
    text = compare.markdown(summary, runs)
    assert "seed spread (#2, #3: one seed, not judged):" in text and "- test PSNR: none" in text


def test_one_seed_each_cannot_be_judged():
    runs = compare.read_runs(_shown(_exp("a", _params(1, kl="None"), 26.0),
                                    _exp("b", _params(1, kl="Cyclical"), 29.0)))
    assert "- test PSNR: none can be judged (one seed per setting)" in compare.markdown(
        compare.summarise(runs), runs)


def test_the_rule_is_mean_difference_beyond_the_sum_of_the_sds():
    # Binary fractions, so that "exactly the spread" is exact: #2 - #1 = 0.5 = 0.25 + 0.25.
    summary = pd.DataFrame({"psnr_mean": [26.0, 26.5, 26.625, 28.0, 40.0],
                            "psnr_sd": [0.25, 0.25, 0.25, 0.5, float("nan")],
                            "n": [3, 3, 3, 3, 1]}, index=[1, 2, 3, 4, 5])
    assert compare.beyond_spread(summary, "psnr") == [
        (3, 1, 0.625), (4, 1, 2.0), (4, 2, 1.5), (4, 3, 1.375)]  # #5: one seed, never judged


def test_selection_by_name_and_unknown_names():
    shown = _shown(_exp("a", _params(1), 26.0), _exp("b", _params(2, kl="None"), 27.0),
                   _exp("c", _params(3, kl="None"), 27.0))
    assert list(compare.read_runs(shown, ["b", "c"]).table["experiment"]) == ["b", "c"]
    with pytest.raises(UserError, match="no experiment 'zz'.*known: a, b, c"):
        compare.read_runs(shown, ["zz"])
    with pytest.raises(UserError, match="no finished experiment.*1 queued"):
        compare.read_runs(_shown(_exp("q", _params(1), state="queued")))


def test_the_terminal_table_fits_100_columns():
    """`python -m pipeline.compare --terminal`: beside the numbers while the settings fit, in a
    key below the table when they do not (here: five params set apart)."""
    few = compare.read_runs(_shown(*(_exp(f"{kl}{seed}", _params(seed, kl=kl), 26.0 + seed / 10)
                                     for kl in ("Monotonic", "Cyclical", "None")
                                     for seed in (1, 2))))
    text = compare.terminal(compare.summarise(few), few)
    assert max(map(len, text.splitlines())) <= 100
    header = text.splitlines()[0].split()
    assert header[:4] == ["#", "kl.type", "n", "PSNR"]  # train.kl.type, by its short name
    assert "26.15 ± 0.07" in text and "- test PSNR: none" in text

    def wide(seed, prior, conditioning, levels, sequences):
        return {"model": {"prior": prior, "conditioning": conditioning, "levels": levels},
                "train": {"seed": seed}, "data": {"num_train_sequences_of_a_long_name": sequences}}

    many = compare.read_runs(_shown(
        *(_exp(f"a{seed}", wide(seed, "fixed", "concat", 1, 8), 26.0) for seed in (1, 2)),
        *(_exp(f"b{seed}", wide(seed, "learned", "condconv", 3, 7), 27.0) for seed in (1, 2))))
    text = compare.terminal(compare.summarise(many), many)
    assert max(map(len, text.splitlines())) <= 100
    assert "#2: prior=learned, conditioning=condconv, levels=3, " \
           "num_train_sequences_of_a_long_name=7" in text
