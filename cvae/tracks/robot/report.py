"""The robot track's report: training curves, the per-frame PSNR plot, a GIF per saved test
sequence (ground truth beside every predictor), the grid of one sequence, and the summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cvae.figures import (CONDITIONING, PREDICTED, ReportInputs, empty_gif_folder,
                          per_frame_plot, framed_tile, training_curves, training_sentence)


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
        return [framed_tile(truth[t], CONDITIONING) for _ in views]
    return [framed_tile(truth[t] if frames is None else frames[t - n_past],
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
    best_by = {"ssim": "SSIM", "ssim_svg": "SVG's SSIM"}[metrics.get("best_by", "ssim")]
    rows = [  # predictor, then the metric keys of each column (None: not measured)
        (f"{model_name}, mean of {n} samples", "psnr", "psnr_finn", "ssim", "ssim_svg"),
        (f"{model_name}, best of {n} (by {best_by})", "psnr_best", "psnr_finn_best", "ssim_best",
         "ssim_svg_best"),
        (f"{model_name}, posterior (upper reference)", "posterior_psnr", None, "posterior_ssim",
         None),
        ("copy last frame", "baseline_psnr", None, "baseline_ssim", None),
    ]
    formats = (".2f", ".2f", ".4f", ".4f")

    def cell(key, fmt):
        return format(metrics[key], fmt) if key in metrics else "–"

    lines = [
        "# Test results",
        "",
        f"{metrics['sequences']} test sequences, {metrics['n_past']} conditioning frames, "
        f"{metrics['n_future']} predicted, {n} prior samples each. PSNR per image then averaged "
        "(dB); SVG's PSNR averages it per colour channel (higher by construction). SSIM: 11x11 "
        "Gaussian window, sigma 1.5, data range 1; SVG's SSIM is the one of its published "
        "numbers (old scikit-image defaults: 7x7 uniform window, data range 2; higher).",
        "",
        "| predictor | PSNR | PSNR (SVG, per channel) | SSIM | SSIM (SVG's) |",
        "|---|---|---|---|---|",
        *["| " + " | ".join([name, *(cell(k, f) for k, f in zip(keys, formats))]) + " |"
          for name, *keys in rows if keys[0] in metrics],
        "",
        training_sentence(train_metrics),
        "",
    ]
    return "\n".join(lines)


def write_report(inputs: ReportInputs, sequence: int, fps: int, out: Path) -> None:
    """Everything in `out`: training_curves.png, per_frame_psnr.png, prediction.gif and
    prediction_grid.png (test sequence `sequence`), gifs/sequence-<i>.gif (every saved test
    sequence) and summary.md."""
    gifs = empty_gif_folder(out)
    training_curves(inputs.steps, inputs.epochs, out / "training_curves.png")
    per_frame_plot(inputs.per_frame, out / "per_frame_psnr.png")
    saved = dict(inputs.saved)
    n_past, truth = int(saved.pop("n_past")), saved["truth"]
    for k in range(len(truth)):
        prediction_gif(truth[k], _views(saved, k), n_past, fps, gifs / f"sequence-{k}.gif")
    shutil.copyfile(gifs / f"sequence-{sequence}.gif", out / "prediction.gif")
    prediction_grid(truth[sequence], _views(saved, sequence), n_past, out / "prediction_grid.png")
    (out / "summary.md").write_text(summary_markdown(inputs.metrics, inputs.train_metrics))
