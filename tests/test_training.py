import csv
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import cvae.training as training
from cvae.config import Params, parse
from cvae.data.prepare import prepare
from cvae import checkpoints, errors
from cvae.checkpoints import fingerprint, load_checkpoint
from cvae.errors import UserError
from cvae.runtime import init_distributed
from cvae.schedules import learning_rate
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


def test_moving_weight_counts_the_pixels_that_differ_from_the_last_given_frame():
    """The loss with `moving_weight` w: pixels where the truth differs from frame n_past-1 by
    more than the moving threshold count 1 + w times; the MSE logged stays the plain one."""
    frames = torch.zeros(3, 1, 3, 2, 2)  # T=3, n_past=2: frame 1 is the reference
    frames[2, 0, 1, 0, 0] = 0.5  # the last frame moved at one pixel (one channel)
    frames[2, 0, :, 1, 1] = 0.05  # below the threshold: not moving
    prediction = torch.full_like(frames[1:], 0.2)
    zeros = torch.zeros(2, 1, 4)

    def rollout(model, frames, conds, n_past, teacher_forcing):
        return types.SimpleNamespace(frames=prediction, mu=zeros, logvar=zeros,
                                     prior_mu=zeros, prior_logvar=zeros)

    def loss_and_mse(weight):
        loss, mse, _ = training.Objective(torch.nn.Identity(), rollout, weight)(
            frames, None, 2, True, 0.1)
        return loss.item(), mse.item()

    squared = (prediction - frames[1:]) ** 2
    plain = squared.mean(dim=(1, 2, 3, 4)).sum().item()
    moving = squared[1, 0, :, 0, 0].sum().item() / squared[0].numel()  # the moved pixel's share
    assert loss_and_mse(0.0) == pytest.approx((plain, plain))
    assert loss_and_mse(4.0) == pytest.approx((plain + 4 * moving, plain))


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
    # The last epoch's KL, per sequence (summed over its 2 + 3 - 1 steps) and per step.
    assert summary["final_kl"] == pytest.approx(float(epochs[-1]["kl"]), rel=1e-5)
    assert summary["final_kl_per_step"] == pytest.approx(summary["final_kl"] / 4)


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


def test_the_cosine_learning_rate_reaches_the_optimiser_and_binds_the_epochs(shards, tmp_path,
                                                                             capsys):
    params = parse(Params, {**TINY, "train": {**TINY["train"], "lr_schedule": "cosine"}})
    train(params, shards, tmp_path / "models", tmp_path / "logs")
    optimiser = load_checkpoint(tmp_path / "models" / "last.pt")["optimizer"]
    last_step = params.train.epochs * params.train.steps_per_epoch - 1
    assert optimiser["param_groups"][0]["lr"] == pytest.approx(
        learning_rate(params.train, last_step))
    assert optimiser["param_groups"][0]["lr"] < params.train.lr / 2
    # More epochs stretch the cosine: the run so far followed another curve, so it starts over.
    longer = dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=4))
    summary = train(longer, shards, tmp_path / "models", tmp_path / "logs")
    assert "starting over" in capsys.readouterr().out
    assert summary["steps"] == 4 * params.train.steps_per_epoch


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


# --- faults: divergence, kills, another setting's run, a full disk ----------------------------

def test_a_diverging_run_stops_before_the_update_and_keeps_the_last_good_checkpoint(
        shards, tmp_path, monkeypatch):
    params = parse(Params, TINY)
    train(dataclasses.replace(params, train=dataclasses.replace(params.train, epochs=1)),
          shards, tmp_path / "models", tmp_path / "logs")
    saved = (tmp_path / "models" / "last.pt").read_bytes()
    real_loss, calls = training.sequence_loss, []

    def nan_kl_at_the_second_step(*args):  # the 2nd step of the resumed epoch 1
        loss, mse, kl = real_loss(*args)
        calls.append(1)
        return (loss * float("nan"), mse, kl * float("nan")) if len(calls) == 2 else (loss, mse, kl)

    monkeypatch.setattr(training, "sequence_loss", nan_kl_at_the_second_step)
    with pytest.raises(training.TrainingDiverged) as stopped:
        train(params, shards, tmp_path / "models", tmp_path / "logs")
    message = str(stopped.value)
    assert "diverged at step 4 (epoch 1): the KL term is nan" in message
    assert "train.lr 0.002" in message and "still holds the last good epoch" in message
    assert (tmp_path / "models" / "last.pt").read_bytes() == saved
    assert not (tmp_path / "models" / "last.pt.tmp").exists()


def test_an_exploding_learning_rate_names_the_step_and_the_lr(shards, tmp_path):
    params = parse(Params, {**TINY, "train": {**TINY["train"], "lr": 1e6}})
    with pytest.raises(training.TrainingDiverged,
                       match=r"diverged at step \d \(epoch 0\).*train\.lr 1e\+06.*No epoch had ended"):
        train(params, shards, tmp_path / "models", tmp_path / "logs")
    assert not (tmp_path / "models" / "best.pt").exists()


KILLED = """
import os, signal, sys
import cvae.training as training
from cvae.config import Params, parse
from tests.test_training import TINY
shards, out, seed, epochs, kill_at = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
real_step, calls = training.train_step, []
def step(*args, **kwargs):
    calls.append(1)
    if len(calls) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9: no clean-up of any kind
    return real_step(*args, **kwargs)
training.train_step = step
params = parse(Params, {**TINY, "train": {**TINY["train"], "seed": seed, "epochs": epochs}})
training.train(params, shards, out + "/models", out + "/logs")
"""


def _killed_run(shards, out, seed, epochs, kill_at):
    """Train in another process; it kills itself with SIGKILL before its `kill_at`-th step."""
    result = subprocess.run([sys.executable, "-c", KILLED, str(shards), str(out), str(seed),
                             str(epochs), str(kill_at)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]


def test_kill_9_in_a_resumed_run_keeps_every_row_of_every_saved_epoch(shards, tmp_path):
    full = parse(Params, TINY)
    train(full, shards, tmp_path / "a" / "models", tmp_path / "a" / "logs")
    uninterrupted = _losses(tmp_path / "a" / "logs" / "steps.tsv")

    out = tmp_path / "b"
    _killed_run(shards, out, seed=1, epochs=3, kill_at=4)  # in epoch 1, after one of its steps
    assert _losses(out / "logs" / "steps.tsv")[:2] == uninterrupted[:2]  # epoch 0, saved
    for kill_at in (1, 2):  # resumed at epoch 1: killed at once, then after a step
        _killed_run(shards, out, seed=1, epochs=3, kill_at=kill_at)
        rows = _losses(out / "logs" / "steps.tsv")
        assert rows[:2] == uninterrupted[:2] and len(rows) <= 3
    train(full, shards, out / "models", out / "logs")
    assert _losses(out / "logs" / "steps.tsv") == uninterrupted
    assert len(_rows(out / "logs" / "epochs.tsv")) == 3


@pytest.mark.parametrize("interruption", ["ctrl-c", "kill -9"])
def test_another_settings_interrupted_run_leaves_no_rows_in_the_first_runs_logs(
        shards, tmp_path, monkeypatch, interruption):
    a = parse(Params, TINY)
    train(a, shards, tmp_path / "models", tmp_path / "logs")
    a_steps, a_epochs = _rows(tmp_path / "logs" / "steps.tsv"), _rows(tmp_path / "logs" / "epochs.tsv")

    if interruption == "kill -9":
        _killed_run(shards, tmp_path, seed=2, epochs=3, kill_at=2)
    else:
        b = parse(Params, {**TINY, "train": {**TINY["train"], "seed": 2}})
        real_step, calls = training.train_step, []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real_step(*args, **kwargs)

        monkeypatch.setattr(training, "train_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(b, shards, tmp_path / "models", tmp_path / "logs")
        monkeypatch.setattr(training, "train_step", real_step)

    train(a, shards, tmp_path / "models", tmp_path / "logs")  # A again: nothing left to train
    assert _rows(tmp_path / "logs" / "steps.tsv") == a_steps
    assert _rows(tmp_path / "logs" / "epochs.tsv") == a_epochs


def _disk_with(free: int):
    return lambda path: shutil._ntuple_diskusage(10**10, 10**10 - free, free)


def _save_checkpoint(folder: Path):
    checkpoints.save_checkpoint(folder / "last.pt", model={"w": torch.zeros(2**21)})  # 8 MiB


def _copy_to_best(folder: Path):
    (folder / "last.pt").write_bytes(bytes(8 * 2**20))
    checkpoints.copy_checkpoint(folder / "last.pt", folder / "best.pt")


def _prepare(folder: Path):
    write_random_raw(folder / "raw", {"train": 24, "val": 1, "test": 1}, seq_len=28)
    prepare(folder / "raw", folder / "shards", shard_size=24, seq_len=28)  # 8 MiB of frames


@pytest.mark.parametrize("write, written", [
    (_save_checkpoint, "last.pt"), (_copy_to_best, "best.pt"),
    (_prepare, "shards.tmp/train/frames-00000.npy")])
def test_a_full_disk_is_named_and_leaves_no_partial_file(tmp_path, monkeypatch, write, written):
    """A write that fails where the disk lacks the space says so, naming the file, and leaves
    nothing partial; a failure with space to spare is not called a full disk."""
    real_open = open

    def failing_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith((".tmp", ".npy")):
            handle.write(b"partial")
            handle.close()
            raise OSError("problem writing element 0")  # numpy's words, with no errno
        return handle

    for free, raised in ((3 * 2**20, UserError), (10**9, OSError)):
        folder = tmp_path / str(free)
        folder.mkdir()
        monkeypatch.setattr(errors.shutil, "disk_usage", _disk_with(free))
        monkeypatch.setattr("builtins.open", failing_open)
        with pytest.raises(raised) as failed:
            write(folder)
        monkeypatch.setattr("builtins.open", real_open)
        if raised is UserError:
            assert str(failed.value).startswith(f"the disk is full: writing {folder / written} "
                                                "needs about 8 MiB, 3 MiB are free")
        else:
            assert "the disk is full" not in str(failed.value)
        assert not list(folder.rglob("*.tmp")) and not (folder / "shards.tmp").exists()
        assert not (folder / "shards").exists() and not (folder / "best.pt").exists()


def test_checkpoints_from_before_a_setting_was_added_or_removed_still_match():
    """A setting added to the model's or training's settings changes every fingerprint unless
    it is left out at the value that behaves as before (`cvae.checkpoints.ADDED_LATER`); one
    removed, unless it is put back at the value the code kept (`REMOVED`): without that,
    upgrading would refuse every saved checkpoint. The robot value was computed at commit
    c2c0476, before `train.first_gap`, `train.moving_weight`, `model.dance.first_lookup_dim`,
    `model.dance.sees_first_label` and `model.dance.plate` existed; the dance value before
    `model.dance.sees_first_label`, `sees_previous` and `prior` were removed."""
    meta = {"shards": {"train": [{"frames": "frames-00000.npy"}]}}
    assert fingerprint(Params(), meta) == "69b541d55e55f7c1", (
        "a new setting changed the fingerprint of unchanged runs: add it to ADDED_LATER")
    dance = {"data": {"source": "sim-dance"}, "train": {"n_past": 1}}
    assert fingerprint(parse(Params, dance), meta) == "fae075288b858820", (
        "a removed setting changed the fingerprint of unchanged runs: add it to REMOVED")
    gapped = {**dance, "train": {"n_past": 1, "first_gap": 1}}
    assert fingerprint(parse(Params, gapped), meta) != fingerprint(parse(Params, dance), meta)
    looking_up = {**dance, "model": {"dance": {"first_lookup_dim": 8}}}
    assert fingerprint(parse(Params, looking_up), meta) != fingerprint(parse(Params, dance), meta)
    plate = {**dance, "model": {"dance": {"plate": True}}}
    assert fingerprint(parse(Params, plate), meta) != fingerprint(parse(Params, dance), meta)
    weighted = {**dance, "train": {"n_past": 1, "moving_weight": 10}}
    assert fingerprint(parse(Params, weighted), meta) != fingerprint(parse(Params, dance), meta)


def test_every_epoch_prints_one_line_with_elapsed_time_and_an_eta(shards, tmp_path, capsys):
    """Also where output is not a terminal (no progress bar there): one line an epoch."""
    train(parse(Params, TINY), shards, tmp_path / "models", tmp_path / "logs")
    lines = [line for line in capsys.readouterr().out.splitlines() if " val psnr " in line]
    assert [line.split(" val psnr")[0] for line in lines] == \
        ["epoch 0 (1/3)", "epoch 1 (2/3)", "epoch 2 (3/3)"]
    assert all(re.search(r"; \d+s elapsed, ETA \d+s$", line) for line in lines)
    assert lines[-1].endswith("ETA 0s")
    assert [training._duration(s) for s in (4.6, 65, 3725)] == ["5s", "1m05s", "1h02m"]
