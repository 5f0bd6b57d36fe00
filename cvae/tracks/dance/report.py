"""The dance track's report: the long-rollout PSNR curve, one GIF per test sequence (ground truth
| label | prediction), a grid of every `GRID_EVERY`-th frame, and the summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cvae.figures import (CONDITIONING, PREDICTED, ReportInputs, empty_gif_folder,
                          per_frame_plot, framed_tile, training_curves, training_sentence)

SCALE = 2  # 630-frame GIFs: smaller tiles than the robot track's
GIVEN = (90, 90, 90)  # border of a label: an input at every step
GRID_COLUMNS = 10


def _columns(saved: dict, k: int) -> list[tuple[str, np.ndarray, tuple]]:
    """(title, frames (T, C, H, W), border) per GIF column of sequence k. The truth column is
    left out when only the first frame is known (the course's test split)."""
    truth, labels, prediction = saved["truth"][k], saved["labels"][k], saved["prediction"][k]
    columns = [("ground truth", truth, CONDITIONING)] if len(truth) == len(labels) else []
    return columns + [("label", labels, GIVEN), ("prediction", prediction, PREDICTED)]


def _frame(columns, t: int, header: str) -> Image.Image:
    tiles = [framed_tile(frames[t], CONDITIONING if t == 0 else border, SCALE)
             for _, frames, border in columns]
    w, h = tiles[0].size
    canvas = Image.new("RGB", (len(tiles) * (w + 6), h + 28), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), header, fill="black")
    for k, ((title, _, _), tile) in enumerate(zip(columns, tiles)):
        draw.text((k * (w + 6) + 2, 14), title, fill="black")
        canvas.paste(tile, (k * (w + 6), 28))
    return canvas


def sequence_gif(columns, fps: int, out: Path) -> None:
    """Every frame of a sequence, the columns side by side; t = 0 is the given first frame."""
    frames = [_frame(columns, t, f"t={t} " + ("given" if t == 0 else "predicted"))
              for t in range(len(columns[-1][1]))]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def sequence_grid(columns, out: Path) -> None:
    """A PNG: one row per column of the GIF, GRID_COLUMNS evenly spaced time steps."""
    length = len(columns[-1][1])
    steps = np.linspace(0, length - 1, GRID_COLUMNS).round().astype(int)
    rows = [[framed_tile(frames[t], border, SCALE) for t in steps] for _, frames, border in columns]
    w, h = rows[0][0].size
    label_w = 90
    grid = Image.new("RGB", (label_w + len(steps) * w, len(rows) * h + 14), "white")
    draw = ImageDraw.Draw(grid)
    for c, t in enumerate(steps):
        draw.text((label_w + c * w + 2, 1), f"t={t}", fill="black")
    for r, ((title, _, _), tiles) in enumerate(zip(columns, rows)):
        draw.text((2, 14 + r * h + h // 2), title, fill="black")
        for c, tile in enumerate(tiles):
            grid.paste(tile, (label_w + c * w, 14 + r * h))
    grid.save(out)


def summary_markdown(metrics: dict, train_metrics: dict) -> str:
    n, split = metrics["num_samples"], metrics["scored_split"]
    rows = [(f"{metrics['model']}, mean of {n} samples", "psnr", "ssim"),
            (f"{metrics['model']}, best of {n} (by SSIM)", "psnr_best", "ssim_best"),
            (f"{metrics['model']}, posterior (upper reference)", "posterior_psnr", "posterior_ssim"),
            ("copy the first frame", "baseline_psnr", "baseline_ssim")]
    return "\n".join([
        f"# Dance rollouts ({split} split)",
        "",
        f"{metrics['sequences']} sequences, each predicted from its first frame and all its "
        f"labels: {metrics['n_future']} frames, the model fed its own predictions, {n} prior "
        "samples each. PSNR per image, then averaged over frames and sequences (dB); SSIM 11x11 "
        "Gaussian window, sigma 1.5.",
        "",
        "| predictor | PSNR | SSIM |",
        "|---|---|---|",
        *[f"| {name} | {metrics[p]:.2f} | {metrics[s]:.4f} |" for name, p, s in rows if p in metrics],
        "",
        f"Submission: eval/submission.csv, {metrics['submission_rows']} rows (the test sequences' "
        "frames, the first given).",
        "",
        training_sentence(train_metrics),
        "",
    ])


def write_report(inputs: ReportInputs, sequence: int, fps: int, out: Path) -> None:
    """Everything in `out`, as the robot track names it: training_curves.png,
    per_frame_psnr.png (over the whole rollout), gifs/sequence-<i>.gif, prediction.gif
    (sequence `sequence`), prediction_grid.png and summary.md."""
    gifs = empty_gif_folder(out)
    saved, metrics = inputs.saved, inputs.metrics
    training_curves(inputs.steps, inputs.epochs, out / "training_curves.png",
                    baseline="copy the first frame")
    per_frame_plot(inputs.per_frame, out / "per_frame_psnr.png", baseline="copy the first frame",
                   title=f"PSNR per frame over the whole rollout ({metrics['scored_split']})",
                   long=True)
    for k in range(len(saved["truth"])):
        sequence_gif(_columns(saved, k), fps, gifs / f"sequence-{k}.gif")
    shutil.copyfile(gifs / f"sequence-{sequence}.gif", out / "prediction.gif")
    sequence_grid(_columns(saved, sequence), out / "prediction_grid.png")
    (out / "summary.md").write_text(summary_markdown(metrics, inputs.train_metrics))
