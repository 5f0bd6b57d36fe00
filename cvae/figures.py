"""Figures and tables both tracks' reports are made of, and the report's inputs: the training
logs, the evaluate stage's outputs and metrics. No model is run here."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

CONDITIONING = (40, 170, 60)  # frame border: a true conditioning frame
PREDICTED = (210, 50, 50)  # frame border: a frame the model predicted
SCALE = 3  # GIF and grid pixels per frame pixel


@dataclass
class ReportInputs:
    steps: pd.DataFrame  # logs/train/steps.tsv
    epochs: pd.DataFrame  # logs/train/epochs.tsv
    per_frame: pd.DataFrame  # logs/eval/per_frame.tsv
    saved: dict[str, np.ndarray]  # eval/samples.npz: the frames evaluate kept
    metrics: dict  # metrics/eval.json
    train_metrics: dict  # metrics/train.json


def read_inputs(train_logs: Path, eval_logs: Path, samples_path: Path, metrics_dir: Path,
                sequence: int) -> ReportInputs:
    """What a report is made from; `sequence` (the one shown in the GIF and grid) must be
    among the saved ones."""
    with np.load(samples_path) as npz:
        saved = dict(npz)
    if sequence >= len(saved["truth"]):
        raise ValueError(f"report.sequence: {sequence} is not among the {len(saved['truth'])} "
                         "test sequences the evaluate stage saved (eval.keep)")
    return ReportInputs(
        steps=pd.read_csv(train_logs / "steps.tsv", sep="\t"),
        epochs=pd.read_csv(train_logs / "epochs.tsv", sep="\t"),
        per_frame=pd.read_csv(eval_logs / "per_frame.tsv", sep="\t"),
        saved=saved,
        metrics=json.loads((metrics_dir / "eval.json").read_text()),
        train_metrics=json.loads((metrics_dir / "train.json").read_text()))


def empty_gif_folder(out: Path) -> Path:
    """`out/gifs`, emptied: no GIF of a sequence from an earlier run stays behind."""
    gifs = out / "gifs"
    if gifs.exists():
        shutil.rmtree(gifs)
    gifs.mkdir(parents=True)
    return gifs


def training_sentence(train_metrics: dict) -> str:
    """The summary's line on training, and which checkpoint was evaluated."""
    return (f"Training: {train_metrics['epochs']} epochs, {train_metrics['steps']} steps on "
            f"{train_metrics['device']}; best validation PSNR "
            f"{train_metrics['best_val_psnr']:.2f} dB at epoch {train_metrics['best_epoch']} "
            "(from 0; the checkpoint evaluated).")


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, out: Path,
                    baseline: str = "copy last frame") -> None:
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    smooth = max(1, len(steps) // 50)
    for ax, column, title in zip(axes[:3], ["loss", "mse", "kl"],
                                 ["loss (MSE + beta KL)", "MSE, summed over steps", "KL"]):
        ax.plot(steps["step"], steps[column], alpha=0.3, color="tab:blue")
        ax.plot(steps["step"], steps[column].rolling(smooth, min_periods=1).mean(), color="tab:blue")
        ax.set(title=title, xlabel="step", yscale="log" if column != "kl" else "linear")
    # beta (~1e-4) and tfr (0..1) differ by orders of magnitude: one axis each.
    axes[3].plot(steps["step"], steps["beta"], color="tab:purple")
    axes[3].set(title="schedules", xlabel="step")
    axes[3].set_ylabel("KL weight beta", color="tab:purple")
    tfr_axis = axes[3].twinx()
    tfr_axis.plot(steps["step"], steps["tfr"], color="tab:orange")
    tfr_axis.set_ylabel("teacher forcing ratio", color="tab:orange")
    tfr_axis.set_ylim(-0.05, 1.05)
    axes[4].plot(epochs["epoch"], epochs["val_psnr"], marker="o", label="model")
    axes[4].plot(epochs["epoch"], epochs["val_baseline_psnr"], ls="--", label=baseline)
    axes[4].set(title="validation PSNR (dB)", xlabel="epoch (from 0)")
    axes[4].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def per_frame_plot(per_frame: pd.DataFrame, out: Path, baseline: str = "copy last frame",
                   title: str = "Test PSNR per predicted frame", long: bool = False) -> None:
    """PSNR of every predicted frame; `long` rollouts (hundreds of frames) get lines, no markers."""
    fig, ax = plt.subplots(figsize=(9, 4) if long else (6, 4))
    lines = [("psnr", "model, mean of samples", "o", "-"),
             ("psnr_best", "model, best sample (by SSIM)", "^", "-"),
             ("posterior_psnr", "posterior (upper reference)", "v", ":"),
             ("baseline_psnr", baseline, "s", "--")]
    for column, label, marker, style in lines:
        if column in per_frame:
            ax.plot(per_frame["frame"], per_frame[column], marker=None if long else marker,
                    ls=style, lw=1 if long else 1.5, label=label)
    ax.set(xlabel="frame index", ylabel="PSNR per image (dB), mean over sequences", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def framed_tile(frame: np.ndarray, border, scale: int = SCALE) -> Image.Image:
    """(C, H, W) uint8 -> an upscaled RGB tile with a coloured border."""
    image = Image.fromarray(frame.transpose(1, 2, 0)).resize(
        (frame.shape[2] * scale, frame.shape[1] * scale), Image.NEAREST)
    framed = Image.new("RGB", (image.width + 4, image.height + 4), border)
    framed.paste(image, (2, 2))
    return framed
