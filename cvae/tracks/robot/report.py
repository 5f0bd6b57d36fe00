"""The robot track's report: training curves, the per-frame PSNR plot, a GIF per saved test
sequence (ground truth beside every predictor), the grid of one sequence, and the summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cvae.figures import (CONDITIONING, PREDICTED, ReportInputs, Sheet, draw_sheet,
                          empty_gif_folder, figures_markdown, framed_tile, kl_sentence,
                          per_frame_plot, training_curves, training_sentence)

BEST_BY = {"ssim": "SSIM", "ssim_svg": "SVG's SSIM"}


def _moving(metrics: dict) -> str:
    return (f"where the truth differs from the last given frame by more than "
            f"{metrics['moving_threshold']:g}")


def _views(saved: dict, sequence: int, metrics: dict) -> list[tuple[str, np.ndarray | None]]:
    """(column header, predicted frames (n_future, C, H, W)) of what evaluate saved, in display
    order; None is the ground truth."""
    n, best_by = metrics["num_samples"], BEST_BY[metrics.get("best_by", "ssim")]
    views = [("ground\ntruth", None)]
    if "posterior" in saved:
        views.append(("posterior\n(sees the future)", saved["posterior"][sequence]))
    views.append((f"best of {n}\n(by {best_by})", saved["best"][sequence]))
    for k, frames in enumerate(saved["samples"][sequence]):
        views.append((f"sample {k + 1}\nof {n}", frames))
    return views


def _sheet(views, sequence: int, metrics: dict) -> Sheet:
    n_past, n = metrics["n_past"], metrics["num_samples"]
    shown = sum(header.startswith("sample") for header, _ in views)
    return Sheet(
        title=f"Test sequence {sequence}: {metrics['model']}",
        key=[(CONDITIONING, f"true frame: the ground truth, and t < {n_past}, given to the "
                            "model"),
             (PREDICTED, "predicted")],
        notes=[f"{shown} of {n} prior samples shown.",
               "The posterior infers z from the true future: an upper reference, not a "
               "prediction."],
        headers=[header for header, _ in views])


def _tiles_at(t: int, truth: np.ndarray, views, n_past: int) -> list[Image.Image]:
    """One tile per view at time t; before `n_past` every view shows the conditioning frame."""
    if t < n_past:
        return [framed_tile(truth[t], CONDITIONING) for _ in views]
    return [framed_tile(truth[t] if frames is None else frames[t - n_past],
                        CONDITIONING if frames is None else PREDICTED) for _, frames in views]


def prediction_gif(truth: np.ndarray, views, sheet: Sheet, n_past: int, fps: int,
                   out: Path) -> None:
    """Ground truth and every predictor side by side, one GIF frame per time step."""
    frames = []
    for t in range(len(truth)):
        status = f"t = {t} (frame {t + 1} of {len(truth)}): " + (
            "given" if t < n_past else "predicted")
        frame_sheet = Sheet(sheet.title, sheet.key, [*sheet.notes, status], sheet.headers)
        frames.append(draw_sheet(frame_sheet, [("", _tiles_at(t, truth, views, n_past))]))
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


def prediction_grid(truth: np.ndarray, views, sheet: Sheet, n_past: int, out: Path) -> None:
    """A PNG: one row per time step (t down the page), one column per view."""
    rows = [(str(t), _tiles_at(t, truth, views, n_past)) for t in range(len(truth))]
    grid_sheet = Sheet(sheet.title, sheet.key, sheet.notes, sheet.headers, corner="t")
    draw_sheet(grid_sheet, rows).save(out)


def summary_markdown(metrics: dict, train_metrics: dict, sequence: int) -> str:
    n, model_name = metrics["num_samples"], metrics["model"]
    best_by = BEST_BY[metrics.get("best_by", "ssim")]
    rows = [  # predictor, then the metric keys of each column (None: not measured)
        (f"{model_name}, mean of {n} samples", "psnr", "psnr_moving", "psnr_finn", "ssim",
         "ssim_svg"),
        (f"{model_name}, best of {n} (by {best_by})", "psnr_best", "psnr_moving_best",
         "psnr_finn_best", "ssim_best", "ssim_svg_best"),
        (f"{model_name}, posterior (sees the future: upper reference)", "posterior_psnr",
         "posterior_psnr_moving", None, "posterior_ssim", None),
        ("copy last frame", "baseline_psnr", "baseline_psnr_moving", None, "baseline_ssim", None),
    ]
    formats = (".2f", ".2f", ".2f", ".4f", ".4f")

    def cell(key, fmt):
        return format(metrics[key], fmt) if key in metrics else "–"

    lines = [
        "# Test results",
        "",
        f"{metrics['sequences']} test sequences, {metrics['n_past']} conditioning frames, "
        f"{metrics['n_future']} predicted, {n} prior samples each. PSNR per image then averaged "
        f"(dB); moving pixels: the PSNR over the pixels {_moving(metrics)} (in [0, 1], in any "
        "colour channel), where copying that frame is wrong; SVG's PSNR averages it per colour "
        "channel (higher by construction). SSIM: 11x11 Gaussian window, sigma 1.5, data range 1; "
        "SVG's SSIM is the one of its published numbers (old scikit-image defaults: 7x7 uniform "
        "window, data range 2; higher).",
        "",
        "| predictor | PSNR | PSNR, moving pixels | PSNR (SVG, per channel) | SSIM "
        "| SSIM (SVG's) |",
        "|---|---|---|---|---|---|",
        *["| " + " | ".join([name, *(cell(k, f) for k, f in zip(keys, formats))]) + " |"
          for name, *keys in rows if keys[0] in metrics],
        "",
        training_sentence(train_metrics),
        "",
        kl_sentence(train_metrics),
        "",
        *figures_markdown(sequence, _moving(metrics)),
    ]
    return "\n".join(lines)


def write_report(inputs: ReportInputs, sequence: int, fps: int, out: Path) -> None:
    """Everything in `out`: training_curves.png, per_frame_psnr.png, prediction.gif and
    prediction_grid.png (test sequence `sequence`), gifs/sequence-<i>.gif (every saved test
    sequence) and summary.md."""
    gifs = empty_gif_folder(out)
    metrics = inputs.metrics
    training_curves(inputs.steps, inputs.epochs, inputs.train_metrics, out / "training_curves.png")
    per_frame_plot(inputs.per_frame, out / "per_frame_psnr.png", baseline="copy last frame",
                   title=f"Test PSNR per frame, mean over {metrics['sequences']} sequences "
                   f"({metrics['n_past']} given, then predicted)",
                   moving=_moving(metrics))
    saved = dict(inputs.saved)
    n_past, truth = int(saved.pop("n_past")), saved["truth"]
    for k in range(len(truth)):
        views = _views(saved, k, metrics)
        prediction_gif(truth[k], views, _sheet(views, k, metrics), n_past, fps,
                       gifs / f"sequence-{k}.gif")
    shutil.copyfile(gifs / f"sequence-{sequence}.gif", out / "prediction.gif")
    views = _views(saved, sequence, metrics)
    prediction_grid(truth[sequence], views, _sheet(views, sequence, metrics), n_past,
                    out / "prediction_grid.png")
    (out / "summary.md").write_text(summary_markdown(metrics, inputs.train_metrics, sequence))
