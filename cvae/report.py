"""Figures and a summary from the logs and the evaluation outputs; no model is run here."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

CONDITIONING = (40, 170, 60)  # frame border: a true conditioning frame
PREDICTED = (210, 50, 50)  # frame border: a frame the model predicted
SCALE = 3  # GIF and grid pixels per frame pixel


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> None:
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
    axes[4].plot(epochs["epoch"], epochs["val_baseline_psnr"], ls="--", label="copy last frame")
    axes[4].set(title="validation PSNR (dB)", xlabel="epoch (from 0)")
    axes[4].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def per_frame_plot(per_frame: pd.DataFrame, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(per_frame["frame"], per_frame["psnr"], marker="o", label="model")
    ax.plot(per_frame["frame"], per_frame["baseline_psnr"], marker="s", ls="--",
            label="copy last frame")
    ax.set(xlabel="frame index", ylabel="PSNR (dB), mean over test sequences",
           title="Test PSNR per predicted frame")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _tile(frame: np.ndarray, border) -> Image.Image:
    """(C, H, W) uint8 -> an upscaled RGB tile with a coloured border."""
    image = Image.fromarray(frame.transpose(1, 2, 0)).resize(
        (frame.shape[2] * SCALE, frame.shape[1] * SCALE), Image.NEAREST)
    framed = Image.new("RGB", (image.width + 4, image.height + 4), border)
    framed.paste(image, (2, 2))
    return framed


def _sequence_tiles(truth: np.ndarray, prediction: np.ndarray, n_past: int):
    """Per time step: (ground-truth tile, prediction tile); conditioning frames are shown as is."""
    tiles = []
    for t in range(len(truth)):
        shown = truth[t] if t < n_past else prediction[t - n_past]
        border = CONDITIONING if t < n_past else PREDICTED
        tiles.append((_tile(truth[t], CONDITIONING), _tile(shown, border)))
    return tiles


def prediction_gif(truth: np.ndarray, prediction: np.ndarray, n_past: int, fps: int,
                   out: Path) -> None:
    """Ground truth | prediction, side by side, one GIF frame per time step."""
    frames = []
    for t, (left, right) in enumerate(_sequence_tiles(truth, prediction, n_past)):
        canvas = Image.new("RGB", (left.width * 2 + 6, left.height + 16), "white")
        canvas.paste(left, (0, 16))
        canvas.paste(right, (left.width + 6, 16))
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 2), f"truth  t={t}", fill="black")
        draw.text((left.width + 8, 2), "conditioning" if t < n_past else "predicted", fill="black")
        frames.append(canvas)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def prediction_grid(truth: np.ndarray, prediction: np.ndarray, n_past: int, out: Path) -> None:
    """A PNG: ground truth on the top row, the prediction at every time step under it."""
    tiles = _sequence_tiles(truth, prediction, n_past)
    w, h = tiles[0][0].size
    grid = Image.new("RGB", (len(tiles) * w, 2 * h + 14), "white")
    draw = ImageDraw.Draw(grid)
    for t, (top, bottom) in enumerate(tiles):
        draw.text((t * w + 2, 1), f"t={t}", fill="black")
        grid.paste(top, (t * w, 14))
        grid.paste(bottom, (t * w, 14 + h))
    grid.save(out)


def summary_markdown(metrics: dict, train_metrics: dict) -> str:
    rows = [
        ("model (SVG, fixed prior)", metrics["psnr"], metrics["ssim"]),
        ("copy last frame", metrics["baseline_psnr"], metrics["baseline_ssim"]),
    ]
    lines = [
        "# Test results",
        "",
        f"{metrics['sequences']} test sequences, {metrics['n_past']} conditioning frames, "
        f"{metrics['n_future']} predicted; PSNR per image then averaged (dB); SSIM 11x11 "
        "Gaussian window, sigma 1.5.",
        "",
        "| predictor | PSNR | SSIM |",
        "|---|---|---|",
        *[f"| {name} | {p:.2f} | {s:.4f} |" for name, p, s in rows],
        "",
        f"Training: {train_metrics['epochs']} epochs, {train_metrics['steps']} steps on "
        f"{train_metrics['device']}; best validation PSNR {train_metrics['best_val_psnr']:.2f} dB "
        f"at epoch {train_metrics['best_epoch']} (from 0; the checkpoint evaluated).",
        "",
    ]
    return "\n".join(lines)


def write_report(train_logs: Path, eval_logs: Path, samples_path: Path, metrics_dir: Path,
                 sequence: int, fps: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    steps = pd.read_csv(train_logs / "steps.tsv", sep="\t")
    epochs = pd.read_csv(train_logs / "epochs.tsv", sep="\t")
    training_curves(steps, epochs, out / "training_curves.png")
    per_frame_plot(pd.read_csv(eval_logs / "per_frame.tsv", sep="\t"), out / "per_frame_psnr.png")

    with np.load(samples_path) as samples:
        truth, prediction, n_past = samples["truth"], samples["prediction"], int(samples["n_past"])
    if sequence >= len(truth):
        raise ValueError(f"report.sequence: {sequence} is not among the {len(truth)} test "
                         "sequences the evaluate stage saved (eval.samples)")
    prediction_gif(truth[sequence], prediction[sequence], n_past, fps, out / "prediction.gif")
    prediction_grid(truth[sequence], prediction[sequence], n_past, out / "prediction_grid.png")

    metrics = json.loads((metrics_dir / "eval.json").read_text())
    train_metrics = json.loads((metrics_dir / "train.json").read_text())
    (out / "summary.md").write_text(summary_markdown(metrics, train_metrics))
