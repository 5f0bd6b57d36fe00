"""Training: the step, the epoch loop, logs, checkpoints and resume, in one process or many.

Outputs in `models_dir`: `last.pt` (written every epoch, resumed from) and `best.pt` (a copy of
the checkpoint with the highest validation PSNR). Logs in `log_dir`: `steps.tsv` (one row per
optimiser step), `epochs.tsv` (one row per epoch, with validation scores) and `collapse.tsv`
(the collapse threshold, for the plots page). Every checkpoint
carries the log rows of the epochs it covers, and the TSVs are rewritten from them when a run
starts or resumes: a kill at any moment loses no row of a saved epoch, and rows of another
setting's run never mix in. A rerun with the same settings continues from `last.pt`; changing
anything but `train.epochs` starts over, and a lower `train.epochs` goes on from `best.pt` when
that epoch is early enough (else starts over), so the run is always the one its settings make.
A checkpoint that cannot be read is set aside (`last.pt.corrupt`). A loss or gradient that stops
being finite stops training before the update, with the last good checkpoint intact.

Under `torchrun` every process trains a replica with DistributedDataParallel on its own batches
(`train.batch_size` each); rank 0 alone validates and writes logs and checkpoints.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from cvae import tracks
from cvae.checkpoints import (CheckpointError, copy_checkpoint, fingerprint, load_checkpoint,
                              save_checkpoint, set_aside)
from cvae.config import EvalConfig, Params
from cvae.data.batches import TrainBatches, seeded_generator
from cvae.data.shards import Split, read_meta, verify_shards
from cvae.errors import UserError
from cvae.losses import COLLAPSED_BELOW, sequence_loss
from cvae.metrics import moving_pixels
from cvae.runtime import (autocast, init_distributed, precision, prepare_model,
                          reuse_freed_memory, runs_in_bf16, set_seed)
from cvae.samples import to_model_conditions, to_model_frames
from cvae.schedules import kl_beta, learning_rate, teacher_forcing_ratio

STEP_COLUMNS = ["step", "epoch", "loss", "mse", "kl", "beta", "tfr", "teacher_forced", "sec_per_step"]
EPOCH_COLUMNS = ["epoch", "step", "loss", "mse", "kl", "beta", "tfr", "val_psnr", "val_ssim",
                 "val_baseline_psnr"]
INTEGER_COLUMNS = {"step", "epoch", "teacher_forced"}
# `train.moving_weight`'s pixels: the moving region's default threshold, fixed so that training
# does not depend on an evaluation setting
MOVING_THRESHOLD = EvalConfig.moving_threshold


class TrainingDiverged(UserError):
    """A loss term, the gradient or the validation PSNR stopped being finite."""


class NonFiniteStep(ArithmeticError):
    """Raised by `train_step` before the update: `terms` holds the loss terms and grad_norm."""

    def __init__(self, terms: dict):
        super().__init__(terms)
        self.terms = terms


class Objective(nn.Module):
    """The training loss of a batch as a module: (frames, conds) -> (loss, mse, kl).

    A module, so that DistributedDataParallel can wrap the whole step. `rollout_fn` is the
    track's training rollout (`Track.training_rollout`), or the robot track's per-frame reference to
    measure against. The rollout runs in the precision that `cvae.runtime.precision` sets.
    With `moving_weight` w > 0, the squared error of a pixel that differs from the last given
    frame (`moving_pixels`, as the moving-region PSNR scores it) counts 1 + w times: where the
    dancer went and where it was, a few percent of the pixels, which the plain MSE lets a
    faded copy of the given frame get nearly right."""

    def __init__(self, model: nn.Module, rollout_fn, moving_weight: float = 0.0):
        super().__init__()
        self.model, self.rollout_fn, self.moving_weight = model, rollout_fn, moving_weight

    def forward(self, frames, conds, n_past: int, teacher_forcing: bool, beta: float):
        with autocast(frames.device):
            out = self.rollout_fn(self.model, frames, conds, n_past,
                                  teacher_forcing=teacher_forcing)
        target = frames[1:]
        weight = None
        if self.moving_weight:
            moving = moving_pixels(target, frames[n_past - 1], MOVING_THRESHOLD)
            weight = 1 + self.moving_weight * moving.float()
        # The rollout's prior is N(0, I) (zeros) for SVG-FP, the learned one for SVG-LP.
        return sequence_loss(out.frames.float(), target, out.mu.float(), out.logvar.float(),
                             beta, out.prior_mu.float(), out.prior_logvar.float(), weight)


def train_step(objective: nn.Module, optimizer, frames, conds, *, n_past, beta, teacher_forcing,
               grad_clip) -> dict:
    """One optimiser step on a batch: frames (T, B, C, H, W) in [0, 1], conds (T, B, c).
    Returns the loss terms (averaged over processes when distributed). Raises `NonFiniteStep`
    instead of updating the weights if a term or the gradient is not finite."""
    loss, mse, kl = objective(frames, conds, n_past, teacher_forcing, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # The gradient's norm, also without clipping (an infinite bound scales by exactly 1).
    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip or math.inf)
    terms = torch.stack([loss.detach(), mse.detach(), kl.detach(), grad_norm.to(loss.device)])
    if dist.is_initialized():
        # A sum (gloo has no average): a NaN on any rank reaches every rank, so all stop alike.
        dist.all_reduce(terms)
        terms /= dist.get_world_size()
    values = dict(zip(("loss", "mse", "kl", "grad_norm"), terms.tolist()))
    if not all(map(math.isfinite, values.values())):
        raise NonFiniteStep(values)
    optimizer.step()
    return {name: values[name] for name in ("loss", "mse", "kl")}


def train(params: Params, shards_dir: Path, models_dir: Path, log_dir: Path,
          progress: Callable[[dict], None] | None = None) -> dict:
    """Train (or resume training) the model of `params` on the shards; returns a summary.
    `progress` receives the summary so far after every epoch (in the process that writes)."""
    with precision(params.train.precision):
        return _train(params, shards_dir, models_dir, log_dir, progress or (lambda _: None))


def _train(params: Params, shards_dir: Path, models_dir: Path, log_dir: Path,
           progress: Callable[[dict], None]) -> dict:
    cfg = params.train
    rank, world, device = init_distributed()
    lead = rank == 0  # the process that validates and writes
    reuse_freed_memory()
    set_seed(cfg.seed)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    meta = read_meta(shards_dir)
    if lead:  # (a failure here ends the other processes too: torchrun stops them all)
        verify_shards(shards_dir, meta, ("train", "val"))
    track = tracks.for_meta(meta)
    model = prepare_model(track.build_model(params, meta), device,
                          track.compiled_modules if cfg.compile else None)
    objective = Objective(model, track.training_rollout, cfg.moving_weight)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    window = cfg.n_past + cfg.n_future
    batches = TrainBatches(shards_dir, cfg.batch_size, window, cfg.steps_per_epoch, cfg.seed,
                           device, rank, cfg.loader_workers, first_gap=cfg.first_gap)
    val_split = Split(shards_dir, "val")
    state = {"epoch": 0, "step": 0, "best_psnr": float("-inf"), "best_epoch": -1}

    models_dir, log_dir = Path(models_dir), Path(log_dir)
    say = tqdm.write if lead else (lambda *_: None)
    say(f"training on {device} ({world} process{'es' if world > 1 else ''}, "
        f"{'bf16 autocast' if runs_in_bf16(device) else 'fp32'}), windows cut {batches.where}")
    key = fingerprint(params, meta)
    ckpt = _resume_point(models_dir, key, cfg.epochs, device, say) if lead else None
    if world > 1:  # every process resumes from what the first one chose (now in last.pt)
        chosen = [ckpt is not None]
        dist.broadcast_object_list(chosen)
        if not lead and chosen[0]:
            ckpt = load_checkpoint(models_dir / "last.pt", device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        _set_rng_states(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)], device)
    else:
        set_seed(cfg.seed, rank)  # from here on, each rank draws its own noise
    logs = _Logs(log_dir, ckpt["logs"] if ckpt is not None else None) if lead else None
    if lead:
        _write_collapse_line(log_dir, window - 1, cfg.epochs * cfg.steps_per_epoch)

    started, first_epoch = time.perf_counter(), state["epoch"]
    for epoch in range(state["epoch"], cfg.epochs):
        tfr = teacher_forcing_ratio(cfg.tfr, epoch)
        coins = seeded_generator(cfg.seed, epoch)  # the same on every rank: one path per step
        totals = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        bar = tqdm(batches.epoch(epoch), total=cfg.steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if lead else True)  # no bar when output is not a terminal
        tick = time.perf_counter()
        for frames_u8, conds in bar:
            beta = kl_beta(cfg.kl, epoch if cfg.kl.unit == "epoch" else state["step"])
            teacher_forced = bool(torch.rand(1, generator=coins) < tfr)  # one coin per batch
            for group in optimizer.param_groups:  # a function of the step, so resuming needs no state
                group["lr"] = learning_rate(cfg, state["step"])
            try:
                result = train_step(
                    objective, optimizer, to_model_frames(frames_u8, device),
                    to_model_conditions(conds, device),
                    n_past=cfg.n_past, beta=beta, teacher_forcing=teacher_forced,
                    grad_clip=cfg.grad_clip,
                )
            except NonFiniteStep as error:
                raise TrainingDiverged(_diverged(error.terms, state["step"] + 1, epoch, cfg, beta,
                                                 models_dir)) from None
            seconds, tick = time.perf_counter() - tick, time.perf_counter()
            state["step"] += 1
            for name in totals:
                totals[name] += result[name] / cfg.steps_per_epoch
            if lead:
                logs.step({"step": state["step"], "epoch": epoch, **result, "beta": beta,
                           "tfr": tfr, "teacher_forced": int(teacher_forced),
                           "sec_per_step": seconds})
                bar.set_postfix(loss=f"{result['loss']:.4f}")
            if state["step"] % cfg.log_every == 0:
                say(f"step {state['step']} epoch {epoch} loss {result['loss']:.5f} "
                    f"mse {result['mse']:.5f} kl {result['kl']:.3f} beta {beta:.2e} "
                    f"tfr {tfr:.2f} {seconds:.2f} s/step")
        state["epoch"] = epoch + 1
        if world > 1:
            _average_buffers(model, world)
        rng = _gather_rng_states(device, world)
        if lead:
            timing = _timing(time.perf_counter() - started, epoch + 1 - first_epoch,
                             cfg.epochs - epoch - 1)
            _end_epoch(track, model, optimizer, params, key, state, rng, val_split, cfg, device,
                       models_dir, logs, {**totals, "beta": beta, "tfr": tfr}, say, timing)
            progress(_summary(state, device, world, logs, window))
        if world > 1:
            dist.barrier()  # the others wait for the checkpoint
    if logs is not None:
        logs.close()
    if world > 1:
        dist.destroy_process_group()
    return _summary(state, device, world, logs, window)


def _summary(state: dict, device: torch.device, world: int, logs: "_Logs | None",
             window: int) -> dict:
    """What metrics/train.json says of the run so far."""
    summary = {"epochs": state["epoch"], "steps": state["step"],
               "best_val_psnr": state["best_psnr"], "best_epoch": state["best_epoch"],
               "device": device.type, "processes": world}
    if logs is not None and logs.rows["epochs"]:
        summary.update(_final_kl(logs, steps_per_sequence=window - 1))
    return summary


def _write_collapse_line(log_dir: Path, steps_per_sequence: int, last_step: int) -> None:
    """`collapse.tsv`: the KL below which the posterior counts as collapsed (COLLAPSED_BELOW
    nats a step) in the unit of the KL logged, nats per sequence, at the first and the last
    step: the line the plots page draws across the KL chart."""
    threshold = COLLAPSED_BELOW * steps_per_sequence
    tmp = log_dir / "collapse.tsv.tmp"
    tmp.write_text(f"step\tcollapsed_below\n0\t{threshold:g}\n{last_step}\t{threshold:g}\n")
    os.replace(tmp, log_dir / "collapse.tsv")


def _final_kl(logs: "_Logs", steps_per_sequence: int) -> dict:
    """The last epoch's mean KL (nats, summed over the latent dimensions and the steps of a
    sequence), and per step: whether the latent carries anything at the end of training."""
    kl = logs.rows["epochs"][-1][EPOCH_COLUMNS.index("kl")]
    return {"final_kl": kl, "final_kl_per_step": kl / steps_per_sequence}


def _timing(elapsed: float, done: int, left: int) -> str:
    """`1m40s elapsed, ETA 3m20s`: the epochs left at this run's pace so far."""
    return f"{_duration(elapsed)} elapsed, ETA {_duration(elapsed / done * left)}"


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes \
        else f"{seconds}s"


def _end_epoch(track, model, optimizer, params, key, state, rng, val_split, cfg, device,
               models_dir, logs, train_terms, say, timing: str):
    """Validate (the track's protocol, the same prior samples every epoch), log, checkpoint."""
    epoch = state["epoch"] - 1
    val = track.validate(model, val_split, cfg, device)
    if not math.isfinite(val["psnr"]):
        raise TrainingDiverged(
            f"validation PSNR is {val['psnr']} after epoch {epoch}: the model's predictions are "
            f"not finite in evaluation mode (batch-norm statistics?). {_kept(models_dir)} "
            "Try a lower train.lr or train.grad_clip above 0.")
    logs.epoch({"epoch": epoch, "step": state["step"], **train_terms, "val_psnr": val["psnr"],
                "val_ssim": val["ssim"], "val_baseline_psnr": val["baseline_psnr"]})
    say(f"epoch {epoch} ({epoch + 1}/{cfg.epochs}) val psnr {val['psnr']:.2f} dB (baseline "
        f"{val['baseline_psnr']:.2f}) ssim {val['ssim']:.3f}; {timing}")
    if val["psnr"] > state["best_psnr"]:
        state.update(best_psnr=val["psnr"], best_epoch=epoch)
    logs.flush()  # before the checkpoint that covers these rows
    save_checkpoint(models_dir / "last.pt", model=model.state_dict(),
                    optimizer=optimizer.state_dict(), params=asdict(params), fingerprint=key,
                    state=state, rng=rng, logs=logs.tensors())
    if state["best_epoch"] == epoch:
        copy_checkpoint(models_dir / "last.pt", models_dir / "best.pt")


def _resume_point(models_dir: Path, key: str, epochs: int, device: torch.device,
                  say) -> dict | None:
    """The checkpoint to go on from, left in `last.pt`; None to start over.

    That is `last.pt` if these settings trained it and it has not gone past `epochs`; else
    `best.pt`, an earlier epoch of the same run, on the same terms (so a lowered train.epochs
    resumes from the best epoch when that is early enough, and a damaged last.pt from the last
    good checkpoint). A file that cannot be read or fails its checksum is renamed
    `<name>.corrupt`, so no later run trips on it. The run's best.pt must hold its best epoch:
    if that cannot be restored, the run starts over."""
    last, best = models_dir / "last.pt", models_dir / "best.pt"
    for path in (last, best):
        ckpt = _load_or_set_aside(path, device, say)
        if ckpt is None:
            continue
        if ckpt["fingerprint"] != key:
            say(f"{path} was trained with other settings: starting over")
            return None
        done = ckpt["state"]["epoch"]
        if done > epochs:
            say(f"{path} has trained {done} epochs, more than train.epochs ({epochs})")
            continue
        if path == best:
            copy_checkpoint(best, last)
        if not _best_matches(models_dir, ckpt["state"], key, device, say):
            break
        say(f"resuming from {path} at epoch {done} (step {ckpt['state']['step']})")
        return ckpt
    if last.exists() or best.exists() or any(models_dir.glob("*.corrupt")):
        say("starting over")
    return None


def _load_or_set_aside(path: Path, device: torch.device, say) -> dict | None:
    if not path.exists():
        return None
    try:
        return load_checkpoint(path, device)
    except CheckpointError as error:
        say(f"{error}: moved to {set_aside(path)}")
        return None


def _best_matches(models_dir: Path, state: dict, key: str, device: torch.device, say) -> bool:
    """Whether best.pt holds the best epoch of the run whose `state` is in last.pt (made so
    when that epoch is the last one: a kill may have come between the two writes)."""
    best = models_dir / "best.pt"
    if state["best_epoch"] == state["epoch"] - 1:
        copy_checkpoint(models_dir / "last.pt", best)
        return True
    saved = _load_or_set_aside(best, "cpu", say)
    if saved is not None and saved["fingerprint"] == key \
            and saved["state"]["epoch"] == state["best_epoch"] + 1:
        return True
    say(f"{best} does not hold epoch {state['best_epoch']}, the best of the run in "
        f"{models_dir / 'last.pt'}, and it cannot be rebuilt")
    return False


def _kept(models_dir: Path) -> str:
    last = models_dir / "last.pt"
    if not last.exists():
        return "No epoch had ended: no checkpoint was written."
    return f"{last} still holds the last good epoch's weights."


def _diverged(terms: dict, step: int, epoch: int, cfg, beta: float, models_dir: Path) -> str:
    """What stopped, where, under which settings, and what to try."""
    names = {"mse": "the MSE term", "kl": "the KL term", "grad_norm": "the gradient"}
    bad = [f"{names[k]} is {v}" for k, v in terms.items() if k in names and not math.isfinite(v)]
    return (f"training diverged at step {step} (epoch {epoch}): {', '.join(bad)} "
            f"(train.lr {cfg.lr:g}, beta {beta:g}, train.grad_clip {cfg.grad_clip:g}); stopped "
            f"before the update. {_kept(models_dir)} Try a lower train.lr, train.grad_clip above "
            "0, or a smaller train.kl.beta_max.")


def _average_buffers(model: nn.Module, world: int):
    """Batch norm's running statistics, averaged over ranks. DDP keeps parameters in step, but
    each rank updates these on its own batches; averaging them makes every replica the same
    model, validated and saved as such."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world


def _gather_rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's generator states (behind the posterior's noise), for an exact resume."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return [mine]
    everyone = [None] * world
    dist.all_gather_object(everyone, {k: v.cpu() for k, v in mine.items()})
    return everyone


def _set_rng_states(states: dict, device: torch.device):
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


class _Logs:
    """The two TSV logs. The rows live in memory and travel in every checkpoint (`tensors`);
    the files are rewritten from a checkpoint's rows when a run starts or resumes, atomically,
    then appended to. So the files never hold rows of another run, and a kill loses only rows
    of the epoch no checkpoint covers yet."""

    def __init__(self, log_dir: Path, saved: dict | None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.columns = {"steps": STEP_COLUMNS, "epochs": EPOCH_COLUMNS}
        self.rows = {name: saved[name].tolist() if saved else [] for name in self.columns}
        self.files = {}
        for name, columns in self.columns.items():
            path = log_dir / f"{name}.tsv"
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f, delimiter="\t")
                writer.writerow(columns)
                writer.writerows(_formatted(row, columns) for row in self.rows[name])
            os.replace(tmp, path)
            handle = open(path, "a", newline="")
            self.files[name] = (handle, csv.writer(handle, delimiter="\t"))

    def step(self, row: dict):
        self._add("steps", row)

    def epoch(self, row: dict):
        self._add("epochs", row)

    def _add(self, name: str, row: dict):
        values = [float(row[c]) for c in self.columns[name]]
        self.rows[name].append(values)
        self.files[name][1].writerow(_formatted(values, self.columns[name]))

    def tensors(self) -> dict:
        """Every row so far, one float64 tensor per log, as the checkpoint stores them."""
        return {name: torch.tensor(rows, dtype=torch.float64).reshape(-1, len(self.columns[name]))
                for name, rows in self.rows.items()}

    def flush(self):
        for handle, _ in self.files.values():
            handle.flush()
            os.fsync(handle.fileno())

    def close(self):
        for handle, _ in self.files.values():
            handle.close()


def _formatted(values: list[float], columns: list[str]) -> list[str]:
    """A row as the TSV shows it: counters as integers, the rest to 6 significant digits."""
    return [str(int(v)) if c in INTEGER_COLUMNS else f"{v:.6g}" for v, c in zip(values, columns)]
