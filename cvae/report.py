"""Figures and a summary from the logs and the evaluation outputs; no model is run here."""
from __future__ import annotations

import json
import shutil
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


def _tile(frame: np.ndarray, border, scale: int = SCALE) -> Image.Image:
    """(C, H, W) uint8 -> an upscaled RGB tile with a coloured border."""
    image = Image.fromarray(frame.transpose(1, 2, 0)).resize(
        (frame.shape[2] * scale, frame.shape[1] * scale), Image.NEAREST)
    framed = Image.new("RGB", (image.width + 4, image.height + 4), border)
    framed.paste(image, (2, 2))
    return framed


def _views(saved: dict, sequence: int) -> list[tuple[str, np.ndarray | None]]:
    """(label, predicted frames (n_future, C, H, W)) of what evaluate saved, in display order."""
    views = [("truth", None)]
    if "posterior" in saved:
        views.append(("posterior", saved["posterior"][sequence]))
    views.append(("best sample", saved["best"][sequence]))
    for k, frames in enumerate(saved["samples"][sequence]):
        views.append((f"sample {k + 1}", frames))
    return views


def _tiles_at(t: int, truth: np.ndarray, views, n_past: int) -> list[Image.Image]:
    """One tile per view at time t; before `n_past` every view shows the conditioning frame."""
    if t < n_past:
        return [_tile(truth[t], CONDITIONING) for _ in views]
    return [_tile(truth[t] if frames is None else frames[t - n_past],
                  CONDITIONING if frames is None else PREDICTED) for _, frames in views]


def prediction_gif(truth: np.ndarray, views, n_past: int, fps: int, out: Path) -> None:
    """Ground truth and every predictor side by side, one GIF frame per time step."""
    frames = []
    for t in range(len(truth)):
        tiles = _tiles_at(t, truth, views, n_past)
        w, h = tiles[0].size
        canvas = Image.new("RGB", (len(tiles) * (w + 6), h + 28), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 2), f"t={t} " + ("conditioning" if t < n_past else "predicted"), fill="black")
        for k, ((label, _), tile) in enumerate(zip(views, tiles)):
            draw.text((k * (w + 6) + 2, 14), label, fill="black")
            canvas.paste(tile, (k * (w + 6), 28))
        frames.append(canvas)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def prediction_grid(truth: np.ndarray, views, n_past: int, out: Path) -> None:
    """A PNG: one row per view (ground truth on top), one column per time step."""
    columns = [_tiles_at(t, truth, views, n_past) for t in range(len(truth))]
    w, h = columns[0][0].size
    label_w = 80
    grid = Image.new("RGB", (label_w + len(columns) * w, len(views) * h + 14), "white")
    draw = ImageDraw.Draw(grid)
    for row, (label, _) in enumerate(views):
        draw.text((2, 14 + row * h + h // 2), label, fill="black")
    for t, tiles in enumerate(columns):
        draw.text((label_w + t * w + 2, 1), f"t={t}", fill="black")
        for row, tile in enumerate(tiles):
            grid.paste(tile, (label_w + t * w, 14 + row * h))
    grid.save(out)


def summary_markdown(metrics: dict, train_metrics: dict) -> str:
    n, model_name = metrics["num_samples"], metrics["model"]
    rows = [
        (f"{model_name}, mean of {n} samples", "psnr", "psnr_finn", "ssim"),
        (f"{model_name}, best of {n} (by SSIM)", "psnr_best", "psnr_finn_best", "ssim_best"),
        (f"{model_name}, posterior (upper reference)", "posterior_psnr", None, "posterior_ssim"),
        ("copy last frame", "baseline_psnr", None, "baseline_ssim"),
    ]
    cell = lambda key, fmt: format(metrics[key], fmt) if key in metrics else "–"  # noqa: E731
    lines = [
        "# Test results",
        "",
        f"{metrics['sequences']} test sequences, {metrics['n_past']} conditioning frames, "
        f"{metrics['n_future']} predicted, {n} prior samples each. PSNR per image then averaged "
        "(dB); SVG's PSNR averages it per colour channel (higher by construction); SSIM 11x11 "
        "Gaussian window, sigma 1.5.",
        "",
        "| predictor | PSNR | PSNR (SVG, per channel) | SSIM |",
        "|---|---|---|---|",
        *[f"| {name} | {cell(p, '.2f')} | {cell(f, '.2f') if f else '–'} | {cell(s, '.4f')} |"
          for name, p, f, s in rows if p in metrics],
        "",
        f"Training: {train_metrics['epochs']} epochs, {train_metrics['steps']} steps on "
        f"{train_metrics['device']}; best validation PSNR {train_metrics['best_val_psnr']:.2f} dB "
        f"at epoch {train_metrics['best_epoch']} (from 0; the checkpoint evaluated).",
        "",
    ]
    return "\n".join(lines)


def write_report(train_logs: Path, eval_logs: Path, samples_path: Path, metrics_dir: Path,
                 sequence: int, fps: int, out: Path) -> None:
    """Everything in `out`: training_curves.png, per_frame_psnr.png, prediction.gif and
    prediction_grid.png (test sequence `sequence`), gifs/sequence-<i>.gif (every saved test
    sequence) and summary.md, for the track the evaluate stage ran."""
    out.mkdir(parents=True, exist_ok=True)
    with np.load(samples_path) as npz:
        saved = dict(npz)
    if sequence >= len(saved["truth"]):
        raise ValueError(f"report.sequence: {sequence} is not among the {len(saved['truth'])} "
                         "test sequences the evaluate stage saved (eval.keep)")
    steps = pd.read_csv(train_logs / "steps.tsv", sep="\t")
    epochs = pd.read_csv(train_logs / "epochs.tsv", sep="\t")
    per_frame = pd.read_csv(eval_logs / "per_frame.tsv", sep="\t")
    metrics = json.loads((metrics_dir / "eval.json").read_text())
    train_metrics = json.loads((metrics_dir / "train.json").read_text())
    gifs = out / "gifs"
    if gifs.exists():
        shutil.rmtree(gifs)  # no GIF of a sequence from an earlier run stays behind
    gifs.mkdir()
    if "labels" in saved:
        from cvae.dance_report import write_dance_report

        write_dance_report(steps, epochs, per_frame, saved, metrics, train_metrics, sequence,
                           fps, out)
        return
    training_curves(steps, epochs, out / "training_curves.png")
    per_frame_plot(per_frame, out / "per_frame_psnr.png")
    n_past, truth = int(saved.pop("n_past")), saved["truth"]
    for k in range(len(truth)):
        prediction_gif(truth[k], _views(saved, k), n_past, fps, gifs / f"sequence-{k}.gif")
    shutil.copyfile(gifs / f"sequence-{sequence}.gif", out / "prediction.gif")
    prediction_grid(truth[sequence], _views(saved, sequence), n_past, out / "prediction_grid.png")
    (out / "summary.md").write_text(summary_markdown(metrics, train_metrics))
