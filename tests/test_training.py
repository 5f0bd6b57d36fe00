import csv
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvae.config import Params, parse
from cvae.data.prepare import prepare
from cvae.runtime import init_distributed, load_checkpoint
from cvae.training import train
from tests.conftest import write_random_raw

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"seq_len": 8},
    "model": {"width": 0.125, "g_dim": 16, "z_dim": 4, "rnn_size": 16},
    "train": {"n_past": 2, "n_future": 3, "batch_size": 2, "epochs": 3, "steps_per_epoch": 2,
              "log_every": 1, "tfr": {"start": 1.0, "start_decay_epoch": 1, "decay_step": 0.5}},
    "eval": {"n_past": 2, "n_future": 3, "batch_size": 2},
}


@pytest.fixture
def shards(tmp_path):
    write_random_raw(tmp_path / "raw", {"train": 4, "val": 2, "test": 2})
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=3, seq_len=8)
    return tmp_path / "shards"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _losses(path):
    return [(r["step"], r["epoch"], r["loss"], r["beta"], r["tfr"]) for r in _rows(path)]


def test_training_writes_logs_checkpoints_and_follows_the_schedules(shards, tmp_path):
    params = parse(Params, TINY)
    summary = train(params, shards, tmp_path / "models", tmp_path / "logs")
    assert summary["epochs"] == 3 and summary["steps"] == 6
    steps = _rows(tmp_path / "logs" / "steps.tsv")
    assert [int(r["step"]) for r in steps] == [1, 2, 3, 4, 5, 6]
    assert [float(r["tfr"]) for r in steps[::2]] == [1.0, 0.5, 0.0]
    assert [r["teacher_forced"] for r in steps[4:]] == ["0", "0"]  # tfr 0: never forced
    epochs = _rows(tmp_path / "logs" / "epochs.tsv")
    assert len(epochs) == 3 and all(float(r["val_psnr"]) > 0 for r in epochs)
    best = load_checkpoint(tmp_path / "models" / "best.pt")
    assert best["state"]["best_psnr"] == pytest.approx(max(float(r["val_psnr"]) for r in epochs),
                                                       rel=1e-5)  # the log keeps 6 digits
    assert load_checkpoint(tmp_path / "models" / "last.pt")["state"]["epoch"] == 3


def test_an_interrupted_run_resumes_to_the_same_result(shards, tmp_path):
    full = parse(Params, TINY)
    train(full, shards, tmp_path / "a" / "models", tmp_path / "a" / "logs")

    # "Interrupted" after one epoch: same settings but one epoch, then the full run again.
    first = dataclasses.replace(full, train=dataclasses.replace(full.train, epochs=1))
    train(first, shards, tmp_path / "b" / "models", tmp_path / "b" / "logs")
    with open(tmp_path / "b" / "logs" / "steps.tsv", "a") as f:
        f.write("3\t1\t0.5")  # a torn row written after the checkpoint, as a kill leaves it
    summary = train(full, shards, tmp_path / "b" / "models", tmp_path / "b" / "logs")

    assert summary["steps"] == 6
    assert _losses(tmp_path / "a" / "logs" / "steps.tsv") == \
        _losses(tmp_path / "b" / "logs" / "steps.tsv")
    a = load_checkpoint(tmp_path / "a" / "models" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "models" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_other_settings_start_over(shards, tmp_path, capsys):
    params = parse(Params, TINY)
    short = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1))
    train(short, shards, tmp_path / "models", tmp_path / "logs")
    changed = dataclasses.replace(short, train=dataclasses.replace(short.train, lr=1e-4))
    summary = train(changed, shards, tmp_path / "models", tmp_path / "logs")
    assert "starting over" in capsys.readouterr().out
    assert summary["steps"] == 2
    assert len(_rows(tmp_path / "logs" / "steps.tsv")) == 2


def test_the_precision_setting_reaches_the_training_step(shards, tmp_path, capsys):
    losses = {}
    for mode in ("fp32", "bf16"):
        params = parse(Params, {**TINY, "train": {**TINY["train"], "precision": mode, "epochs": 1}})
        train(params, shards, tmp_path / mode / "models", tmp_path / mode / "logs")
        assert f"1 process, {'bf16 autocast' if mode == 'bf16' else 'fp32'})" in \
            capsys.readouterr().out
        losses[mode] = [float(r["loss"]) for r in _rows(tmp_path / mode / "logs" / "steps.tsv")]
    assert losses["fp32"] != losses["bf16"]
    assert losses["fp32"] == pytest.approx(losses["bf16"], rel=0.02)


DISTRIBUTED = """
import os, sys, torch
import cvae.training as training
from cvae.config import Params, parse
from tests.test_training import TINY
shards, out = sys.argv[1], sys.argv[2]
models, prepare = [], training.prepare_model  # keep hold of the model this rank trains
training.prepare_model = lambda *args: models.append(prepare(*args)) or models[-1]
training.train(parse(Params, TINY), shards, out + "/models", out + "/logs")
torch.save(models[0].state_dict(), f"{out}/rank{os.environ['RANK']}.pt")
"""


@pytest.mark.parametrize("backend", [
    "gloo", pytest.param("nccl", marks=pytest.mark.skipif(torch.cuda.device_count() < 2,
                                                        reason="needs 2 CUDA devices"))])
def test_two_processes_train_one_model_and_write_one_checkpoint(shards, tmp_path, backend):
    script = tmp_path / "two_ranks.py"
    script.write_text(DISTRIBUTED)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if backend == "gloo":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, also on a machine with GPUs
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(shards), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", map_location="cpu") for r in (0, 1)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    start = load_checkpoint(tmp_path / "models" / "last.pt")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["best.pt", "last.pt"]
    assert start["state"]["step"] == 6
    assert all(torch.equal(start["model"][k], ranks[0][k]) for k in ranks[0])
    assert len(start["rng"]) == 2  # both ranks' generators, for an exact resume
    assert len(_rows(tmp_path / "logs" / "steps.tsv")) == 6  # one writer
    output = result.stdout + result.stderr
    assert "2 processes" in output
    assert ("training on cuda:0" if backend == "nccl" else "training on cpu") in output


def test_more_processes_than_gpus_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="use --nproc_per_node 1"):
        init_distributed()
